"""The explorer in real Chromium (Debian's /usr/bin/chromium, driven by Playwright), against
a real node on the worked example's chain.

Every page in light and dark mode: no console error or warning, no request to another
host, every browser check passing on real records, an axe-core scan with no serious or
critical violation, and a screenshot under the test's output folder. Then what a reader
relies on: a check fails when the proof, the envelope or the checkpoint is tampered with
in flight; the noble fallback gives the same results where WebCrypto is missing; the
browser's JCS is byte-identical to the node's; small-order keys never verify; the lineage
graph's depth control and path; the dark-mode toggle; the live notice; a phone's width.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.canonical import jcs
from ledger.keys import SigningKey
from ledger.records import make_record, record_id

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
AXE = (HERE / "vendor" / "axe-core" / "axe.min.js").read_text()
# shared/vectors beside the checkout or beside a folder above it (as tests/test_canonical.py).
VECTORS = next((up / "shared" / "vectors" / "rfc8785" for up in HERE.parents
                if (up / "shared" / "vectors" / "rfc8785").is_dir()), None)
RECORD_CHECKS = ["chain_id", "record_id", "signature", "inclusion", "block_hash", "membership", "certificate"]
BLOCK_CHECKS = ["chain_id", "block_hash", "membership", "certificate"]


class Watch:
    """What a page did that it must not: console errors and warnings, uncaught errors,
    requests to any host but the node (those are aborted, never sent)."""

    def __init__(self, context: Any, base: str) -> None:
        self.base = urlsplit(base).netloc
        self.problems: list[str] = []
        self.foreign: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc == self.base or url.startswith("data:"):
            route.fallback()
        else:
            self.foreign.append(url)
            route.abort()

    def page(self, context: Any) -> Any:
        page = context.new_page()
        page.on("console", lambda m: self.problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        return page

    def clean(self, where: str) -> None:
        assert not self.problems, f"{where}: {self.problems}"
        assert not self.foreign, f"{where}: requests to another host: {self.foreign}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@contextlib.contextmanager
def opened(browser: Any, base: str, **options: Any) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(base_url=base, **options)
    watch = Watch(context, base)
    try:
        yield context, watch
    finally:
        context.close()


def checks_of(page: Any) -> dict[str, tuple[str, str]]:
    page.wait_for_selector('#checks[data-done="true"]', timeout=60_000)
    return dict(page.eval_on_selector_all("[data-check]", """els => els.map(e =>
        [e.dataset.check, [e.dataset.result, e.querySelector('.detail').textContent]])"""))


def assert_all_pass(page: Any, names: list[str]) -> None:
    got = checks_of(page)
    assert list(got) == names
    assert {k: r for k, (r, _) in got.items()} == dict.fromkeys(names, "pass"), got


def axe_violations(page: Any) -> list[str]:
    page.evaluate(AXE)  # evaluated over the DevTools protocol: the page's CSP is not loosened for it
    found = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))""")
    return list(found)


def all_pages(x: SimpleNamespace) -> list[str]:
    return ["/explorer", "/explorer/blocks", "/explorer/blocks/2", f"/explorer/records/{x.final}",
            "/explorer/datasets/northside-cxr-crops", f"/explorer/lineage/{x.final}", f"/explorer/attribution/{x.final}",
            "/explorer/network", "/explorer/search?q=nadia", "/docs", "/redoc"]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page(browser: Any, explorer: SimpleNamespace, shots: Path, scheme: str) -> None:
    with opened(browser, explorer.url, color_scheme=scheme) as (context, watch):
        for path in all_pages(explorer):
            page = watch.page(context)
            page.goto(path, wait_until="load")
            if path.startswith("/explorer/records/"):
                assert_all_pass(page, RECORD_CHECKS)
            elif path.startswith("/explorer/blocks/"):
                assert_all_pass(page, BLOCK_CHECKS)
            elif path.startswith("/explorer/lineage/"):
                page.wait_for_selector('#graph[data-ready="true"]', timeout=60_000)
            elif path == "/docs":
                page.wait_for_selector(".opblock", timeout=60_000)
            elif path == "/redoc":
                page.wait_for_selector("h1", timeout=60_000)
            if path.startswith("/explorer"):
                # Swagger UI and ReDoc are the upstream projects' pages: scanned by them.
                assert axe_violations(page) == [], f"{path} ({scheme})"
                dark = page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(255, 255, 255)"
                assert dark == (scheme == "dark"), path
            page.screenshot(path=str(shots / f"{scheme}-{path.strip('/').replace('/', '_').replace('?', '_')[:60]}.png"),
                            full_page=True)
            watch.clean(f"{path} ({scheme})")
            page.close()


def test_checks_pass_on_every_record_type(browser: Any, explorer: SimpleNamespace) -> None:
    labels = ["identity:hana", "dataset:northside-cxr", "dataset:northside-cxr-crops", "annotation:semi-automatic",
              "update:r2:luis", "aggregate:r1", "evaluation:r2", "evaluation:harbor-cxr+lakeview-cxr+northside-cxr-crops"]
    with opened(browser, explorer.url) as (context, watch):
        page = watch.page(context)
        for label in labels:
            page.goto(f"/explorer/records/{explorer.records[label]}")
            assert_all_pass(page, RECORD_CHECKS)
        page.goto("/explorer/blocks/1")
        assert_all_pass(page, BLOCK_CHECKS)
        watch.clean("record pages")


def _tampered(page: Any, pattern: str, change: Any) -> None:
    def handle(route: Any) -> None:
        response = route.fetch()
        doc = response.json()
        change(doc)
        route.fulfill(response=response, body=json.dumps(doc))

    page.route(pattern, handle)


def test_a_tampered_proof_fails_inclusion(browser: Any, explorer: SimpleNamespace) -> None:
    rid = explorer.records["update:r3:hana"]
    with opened(browser, explorer.url) as (context, _):
        page = context.new_page()

        def change(doc: dict[str, Any]) -> None:
            doc["path"][0] = doc["path"][0][:-1] + ("0" if doc["path"][0][-1] != "0" else "1")

        _tampered(page, f"**/v1/records/{rid}/proof", change)
        page.goto(f"/explorer/records/{rid}")
        got = checks_of(page)
        assert got["inclusion"][0] == "fail" and "not the log root" in got["inclusion"][1]
        assert [got[k][0] for k in ("chain_id", "record_id", "signature", "block_hash", "membership", "certificate")] == [
            "pass"] * 6

        page.unroute(f"**/v1/records/{rid}/proof")
        _tampered(page, f"**/v1/records/{rid}/proof", lambda d: d.update(index=d["index"] + 1))
        page.reload()
        assert checks_of(page)["inclusion"][0] == "fail"


def test_a_tampered_envelope_fails_its_id_and_signature(browser: Any, explorer: SimpleNamespace) -> None:
    rid = explorer.records["dataset:harbor-cxr"]
    with opened(browser, explorer.url) as (context, _):
        page = context.new_page()
        _tampered(page, f"**/v1/records/{rid}", lambda d: d["record"]["body"].update(items=d["record"]["body"]["items"] + 1))
        page.goto(f"/explorer/records/{rid}")
        got = checks_of(page)
        assert got["record_id"][0] == "fail" and "not the record's id" in got["record_id"][1]
        assert got["signature"][0] == "fail" and got["inclusion"][0] == "fail"
        assert got["certificate"][0] == "pass"  # the checkpoint was left alone


def test_a_tampered_checkpoint_fails_its_hash_and_certificate(browser: Any, explorer: SimpleNamespace) -> None:
    with opened(browser, explorer.url) as (context, _):
        page = context.new_page()
        _tampered(page, "**/v1/checkpoint/3", lambda d: d["header"].update(count=d["header"]["count"] + 1))
        page.goto("/explorer/blocks/3")
        got = checks_of(page)
        assert got["block_hash"][0] == "fail" and got["certificate"][0] == "fail" and got["chain_id"][0] == "pass"

        def forge(d: dict[str, Any]) -> None:
            sig = d["certificate"]["votes"][0]["sig"]
            d["certificate"]["votes"][0]["sig"] = ("1" if sig[0] != "1" else "2") + sig[1:]

        page.unroute("**/v1/checkpoint/3")
        _tampered(page, "**/v1/checkpoint/3", forge)
        page.reload()
        got = checks_of(page)
        assert got["block_hash"][0] == "pass"
        assert got["certificate"][0] == "fail" and "does not verify" in got["certificate"][1]


def test_the_membership_check_runs_on_a_chain_without_changes(browser: Any, explorer: SimpleNamespace) -> None:
    with opened(browser, explorer.url) as (context, watch):
        page = watch.page(context)
        page.goto("/explorer/blocks/3")
        got = checks_of(page)
        assert got["membership"][0] == "pass"
        assert got["membership"][1].startswith("no change since the genesis") and "header 2 names that set" in got[
            "membership"][1]
        assert page.locator('.fetched a[href="/v1/membership?to=3"]').count() == 1  # the document it checked
        watch.clean("membership")


def _is_membership(url: str) -> bool:
    return urlsplit(url).path == "/v1/membership"


def test_a_tampered_membership_history_fails(browser: Any, explorer: SimpleNamespace) -> None:
    """The history is fetched from /v1/membership; changed in flight, the membership check
    fails with the reason, and the certificate is not checked against an unknown set."""
    rid = explorer.records["update:r3:hana"]
    with opened(browser, explorer.url) as (context, _):
        page = context.new_page()

        def other_set(doc: dict[str, Any]) -> None:  # header h-1 names another set: a change left out
            nv = doc["previous"]["header"]["next_validators"]
            doc["previous"]["header"]["next_validators"] = ("1" if nv[0] != "1" else "2") + nv[1:]

        _tampered(page, _is_membership, other_set)
        page.goto(f"/explorer/records/{rid}")
        got = checks_of(page)
        assert got["membership"][0] == "fail" and "not the one the checkpoint's prev names" in got["membership"][1]
        assert got["certificate"][0] == "fail" and "unknown" in got["certificate"][1]
        assert [got[k][0] for k in ("chain_id", "record_id", "signature", "inclusion", "block_hash")] == ["pass"] * 5

        def forged_change(doc: dict[str, Any]) -> None:  # a change to a set of one key nobody certified
            doc["changes"].append({**doc["previous"], "certificate": {"height": doc["previous"]["header"]["height"],
                                   "round": 0, "block": doc["previous"]["hash"], "votes": []},
                                   "validators": [SigningKey.generate().public]})

        page.unroute(_is_membership)
        _tampered(page, _is_membership, forged_change)
        page.goto("/explorer/blocks/3")
        got = checks_of(page)
        assert got["membership"][0] == "fail" and "change 1 (height 2)" in got["membership"][1]
        assert got["certificate"][0] == "fail" and got["block_hash"][0] == "pass"


def test_block_page_checks_across_changes(browser: Any, explorer: SimpleNamespace) -> None:
    """The block page's checks on a chain with two membership changes (tests/light_chain.py,
    real certificates): its genesis, checkpoint and history are served in place of the
    node's, and the page passes them, then fails a history with the last change left out."""
    from light_chain import build, vkey

    a, b, c, d, e, f = (vkey(i) for i in range(6))
    chain = build([a, b, c, d], {1: [a, b, c, d, e], 2: [f, c, d, e]}, 3, extra=0)  # the node has a block 3 too
    cp = chain.checkpoint()
    hist = chain.history()
    served = {"/v1/genesis": chain.genesis.doc, f"/v1/checkpoint/{chain.t}": cp, "/v1/membership": hist}

    def serve(route: Any) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(served[urlsplit(route.request.url).path]))

    with opened(browser, explorer.url) as (context, watch):
        page = watch.page(context)
        page.route(lambda url: urlsplit(url).path in served, serve)
        page.goto(f"/explorer/blocks/{chain.t}")
        assert_all_pass(page, BLOCK_CHECKS)
        assert checks_of(page)["membership"][1].startswith("2 changes followed from the genesis set")
        served["/v1/membership"] = {**hist, "changes": hist["changes"][:-1]}
        page.reload()
        got = checks_of(page)
        assert got["membership"][0] == "fail" and "a change is left out" in got["membership"][1]
        assert got["certificate"][0] == "fail" and got["block_hash"][0] == "pass" and got["chain_id"][0] == "pass"
        watch.clean("changes")


def test_the_browser_follows_changes_as_the_light_verifier_does(js: Any) -> None:
    """verify.js's followMembership on a chain with real changes (tests/light_chain.py):
    the same keys as ledger.light, and the same refusals."""
    from light_chain import build, vkey

    from ledger.light import verify_checkpoint

    a, b, c, d, e, f = (vkey(i) for i in range(6))
    chain = build([a, b, c, d], {2: [a, b, c, d, e], 4: [b, c, d, e], 6: [f, c, d, e]}, 8, extra=0)
    hist, cp = chain.history(), chain.checkpoint()
    follow = "async ([g, cp, h]) => { try { return await v.followMembership(g, cp, h); } catch (e) { return e.message; } }"
    genesis = chain.genesis.doc
    assert js.evaluate(follow, [genesis, cp, hist]) == verify_checkpoint(chain.genesis, cp, hist) == chain.keys_at(8)
    last_left_out = {**hist, "changes": hist["changes"][:-1]}
    assert "a change is left out" in js.evaluate(follow, [genesis, cp, last_left_out])
    swapped = json.loads(json.dumps(hist))
    swapped["changes"][1]["validators"][0] = vkey(99).public
    swapped["changes"][1]["validators"].sort()
    assert "do not hash to the header's next_validators" in js.evaluate(follow, [genesis, cp, swapped])
    reordered = {**hist, "changes": [hist["changes"][1], hist["changes"][0], hist["changes"][2]]}
    assert "change 2 (height 2)" in js.evaluate(follow, [genesis, cp, reordered])
    # Without a leaving at 4, the three votes certifying 6 are too few for the five of 2.
    middle_left_out = {**hist, "changes": [hist["changes"][0], hist["changes"][2]]}
    got = js.evaluate(follow, [genesis, cp, middle_left_out])
    assert "change 2 (height 6)" in got and "4 of 5 are needed" in got


def test_the_noble_fallback_where_webcrypto_is_missing(browser: Any, explorer: SimpleNamespace) -> None:
    rid = explorer.records["annotation:automatic"]
    with opened(browser, explorer.url) as (context, watch):
        context.add_init_script("Object.defineProperty(Crypto.prototype, 'subtle', {get: () => undefined});")
        page = watch.page(context)
        page.goto(f"/explorer/records/{rid}")
        assert_all_pass(page, RECORD_CHECKS)
        assert page.get_attribute("#checks", "data-backend") == "noble"
        page.goto("/explorer/blocks/2")
        assert_all_pass(page, BLOCK_CHECKS)
        _tampered(page, f"**/v1/records/{rid}", lambda d: d["record"].update(ts="2020-01-01T00:00:00Z"))
        page.goto(f"/explorer/records/{rid}")
        got = checks_of(page)
        assert got["signature"][0] == "fail" and got["record_id"][0] == "fail"
        watch.clean("noble fallback")


@pytest.fixture(scope="module")
def js(browser: Any, explorer: SimpleNamespace) -> Iterator[Any]:
    """A page with verify.js imported as window.v."""
    context = browser.new_context(base_url=explorer.url)
    page = context.new_page()
    page.goto("/explorer/search")
    page.evaluate("async () => { window.v = await import('/explorer/static/js/verify.js'); }")
    yield page
    context.close()


_SAFE = 2**53 - 1
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-_SAFE, _SAFE) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_json)
@example(value={"__proto__": None, "a": [{"__proto__": "x"}]})  # an own key, as JSON.parse makes it
def test_browser_jcs_is_the_nodes(js: Any, value: Any) -> None:
    # The page gets JSON text and parses it, as the explorer does with the node's answers:
    # Playwright's own argument transfer would turn a "__proto__" key into the prototype.
    assert js.evaluate("t => v.jcs(JSON.parse(t))", json.dumps(value)).encode() == jcs(value)


def test_browser_jcs_on_the_published_vectors(js: Any) -> None:
    """RFC 8785's vectors hold numbers with fractions and exponents, which signed content
    never holds (PROTOCOL.md 1): those are refused; the rest match byte for byte."""
    if VECTORS is None:
        pytest.skip("shared/vectors not found")
    matched = 0
    for path in sorted((VECTORS / "input").glob("*.json")):
        expect = (VECTORS / "output" / path.name).read_bytes()
        got = js.evaluate("t => { try { return v.jcs(JSON.parse(t)); } catch (e) { return null; } }", path.read_text())
        if got is None:
            assert any(c in path.read_text() for c in ".eE"), f"{path.name} refused without a fraction in it"
        else:
            assert got.encode() == expect, path.name
            matched += 1
    assert matched >= 3  # the key sorting (weird.json), unicode and structures


def test_hashes_and_signatures_match_the_node(js: Any, explorer: SimpleNamespace) -> None:
    key = SigningKey.generate()
    env = make_record(key, explorer.out["chain_id"], "dataset.contribute", {"dataset": "x"}, nonce="n-1")
    got = js.evaluate("""async e => [await v.recordId(e),
        await v.verifyEd25519(e.signer, v.recordSigningBytes(e), e.sig),
        await v.verifyEd25519(e.signer, v.recordSigningBytes({...e, nonce: 'n-2'}), e.sig)]""", env)
    assert got == [record_id(env), True, False]


def test_small_order_keys_never_verify(browser: Any, explorer: SimpleNamespace, js: Any) -> None:
    """The identity point as key with R = identity and S = 0 satisfies the verification
    equation for every message: a permissive verifier (noble's ZIP-215 mode) accepts it;
    the node and this page refuse it, with WebCrypto and with the noble fallback alike
    (PROTOCOL.md 1, strict verification)."""
    identity = "01" + "00" * 31
    sig = identity + "00" * 32
    script = """async ([k, s]) => {
        const ed = await import('/explorer/static/vendor/noble-ed25519/index.js');
        const msg = new TextEncoder().encode('any message');
        return [v.backend, ed.verify(v.unhex(s), msg, v.unhex(k), {zip215: true}), await v.verifyEd25519(k, msg, s)];
    }"""
    assert js.evaluate(script, [identity, sig]) == ["webcrypto", True, False]
    with opened(browser, explorer.url) as (context, _):
        context.add_init_script("Object.defineProperty(Crypto.prototype, 'subtle', {get: () => undefined});")
        page = context.new_page()
        page.goto("/explorer/search")
        page.evaluate("async () => { window.v = await import('/explorer/static/js/verify.js'); }")
        assert page.evaluate(script, [identity, sig]) == ["noble", True, False]


def test_lineage_graph_depth_and_path(browser: Any, explorer: SimpleNamespace) -> None:
    with opened(browser, explorer.url) as (context, watch):
        page = watch.page(context)
        page.goto(f"/explorer/lineage/{explorer.final}")
        page.wait_for_selector('#graph[data-ready="true"]')
        visible = "() => provledgerLineage.nodes().filter(n => n.style('display') !== 'none').length"
        everything = page.evaluate(visible)
        assert everything == page.evaluate("() => provledgerLineage.nodes().length") > 20
        page.fill("#depth", "1")
        one = page.evaluate(visible)
        assert 1 < one < everything
        table = page.locator("#lineage-table tbody tr").count()
        assert table == everything  # the table lists the graph
        page.fill("#depth", "4")
        dataset = "dataset:northside-cxr"
        page.evaluate(f"() => {{ provledgerLineage.getElementById('{dataset}').emit('tap'); }}")
        path = page.evaluate("() => provledgerLineage.nodes('.path').map(n => n.id())")
        edges = page.evaluate("() => provledgerLineage.edges('.path').map(e => e.data('relation'))")
        # Provenance: the final model, its parents, an update that used the crops, derived from northside-cxr.
        assert {explorer.final, dataset} <= set(path) and len(edges) == len(path) - 1 >= 2
        assert "derived_from" in edges and "signed_by" not in edges
        assert page.get_attribute("#selected-link", "href") == "/explorer/datasets/northside-cxr"
        # Permalink of a depth: the server renders that depth's table.
        page.goto(f"/explorer/lineage/{explorer.final}?depth=1")
        page.wait_for_selector('#graph[data-ready="true"]')
        assert page.locator("#lineage-table tbody tr").count() == one == page.evaluate(visible)
        watch.clean("lineage")


def test_dark_mode_toggle_is_kept(browser: Any, explorer: SimpleNamespace) -> None:
    with opened(browser, explorer.url, color_scheme="light") as (context, watch):
        page = watch.page(context)
        page.goto("/explorer/network")
        light = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.click("#theme-toggle")
        assert page.get_attribute("html", "data-theme") == "dark"
        assert page.get_attribute("#theme-toggle", "aria-pressed") == "true"
        page.goto("/explorer/blocks")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
        assert axe_violations(page) == []
        watch.clean("toggle")


def test_readable_on_a_phone(browser: Any, explorer: SimpleNamespace, shots: Path) -> None:
    with opened(browser, explorer.url, viewport={"width": 390, "height": 844}, is_mobile=True) as (context, watch):
        page = watch.page(context)
        for path in ("/explorer", f"/explorer/records/{explorer.final}", f"/explorer/lineage/{explorer.final}",
                     "/explorer/blocks/2", f"/explorer/attribution/{explorer.final}"):
            page.goto(path)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
            page.screenshot(path=str(shots / f"phone-{path.strip('/').replace('/', '_')[:50]}.png"))
        watch.clean("phone")


def test_home_says_when_new_blocks_arrive(browser: Any, explorer: SimpleNamespace) -> None:
    with opened(browser, explorer.url) as (context, watch):
        page = watch.page(context)
        page.goto("/explorer")
        rows = page.locator("tbody tr").count()
        assert page.text_content("#live").strip() == ""
        key = SigningKey.load(explorer.home / "demo-keys" / "nadia.key")
        env = make_record(key, explorer.out["chain_id"], "dataset.contribute", {
            "dataset": f"live-{time.time_ns()}", "version": "1", "content_hash": "ab" * 32, "size_bytes": 1, "items": 1,
            "license": "CC0-1.0", "modality": "text", "derived_from": [], "privacy_budget": None})
        r = httpx.post(explorer.url + "/v1/records?wait=true&timeout=60", json=env, timeout=90)
        assert r.status_code in (200, 202), r.text
        page.wait_for_selector("#live a.live-notice", timeout=60_000)
        assert "new block" in page.text_content("#live")
        assert page.locator("tbody tr").count() == rows  # the rows stay put until the reader asks
        page.click("#live a.live-notice")
        page.wait_for_load_state()
        assert env_in_page(page, explorer)
        watch.clean("live")


def env_in_page(page: Any, explorer: SimpleNamespace) -> bool:
    height = httpx.get(explorer.url + "/v1/status").json()["height"]
    return page.locator(f'a[href="/explorer/blocks/{height}"]').count() == 1
