"""The explorer's pages and GET /v1/search over real HTTP, against a real node on the
worked example's chain (no browser here: tests/explorer/test_browser.py opens them)."""

from __future__ import annotations

import csv
import io
import re
from types import SimpleNamespace

import httpx
import pytest

from ledger.attribution import METHODS

pytestmark = pytest.mark.e2e

CSP_SELF = "default-src 'self'"


def pages(x: SimpleNamespace) -> list[str]:
    r = x.records
    return ["/explorer", "/explorer/blocks", "/explorer/blocks/1", "/explorer/network", "/explorer/search",
            f"/explorer/records/{x.final}", f"/explorer/records/{r['identity:nadia']}",
            f"/explorer/records/{r['dataset:northside-cxr-crops']}", f"/explorer/records/{r['annotation:manual']}",
            f"/explorer/records/{r['update:r1:nadia']}", f"/explorer/records/{r['evaluation:r1']}",
            "/explorer/datasets/northside-cxr-crops", f"/explorer/lineage/{x.final}", "/explorer/lineage/dataset:harbor-cxr",
            f"/explorer/attribution/{x.final}", "/docs", "/redoc"]


def test_every_page_is_html_with_a_self_only_policy(explorer: SimpleNamespace) -> None:
    with httpx.Client(base_url=explorer.url, timeout=90) as http:
        for path in pages(explorer):
            r = http.get(path)
            assert r.status_code == 200, (path, r.text[:300])
            assert r.headers["content-type"].startswith("text/html"), path
            assert r.headers["content-security-policy"].startswith(CSP_SELF), path
            assert "script-src 'self';" in r.headers["content-security-policy"], path
            # Every script and stylesheet is a file of this node; no inline script.
            for src in re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', r.text):
                assert src.startswith("/"), (path, src)
                assert http.get(src).status_code == 200, (path, src)
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), f"{path}: an inline script"
            assert " style=" not in r.text, f"{path}: an inline style"


def test_root_redirects_to_the_explorer(explorer: SimpleNamespace) -> None:
    r = httpx.get(explorer.url + "/")
    assert r.status_code == 307 and r.headers["location"] == "/explorer"


def test_home_shows_the_chain(explorer: SimpleNamespace) -> None:
    status = httpx.get(explorer.url + "/v1/status").json()
    html = httpx.get(explorer.url + "/explorer").text
    assert status["chain_id"] in html
    assert f'data-stat="height">{status["height"]:,}<' in html
    assert 'hx-get="/explorer/live?since=' in html
    assert "1 of 1" in html  # validators up
    # The live notice: nothing new since the current height, N new blocks since an earlier one.
    assert httpx.get(explorer.url + f"/explorer/live?since={status['height']}").text.strip() == ""
    assert "2 new blocks" in httpx.get(explorer.url + f"/explorer/live?since={status['height'] - 2}").text


def test_blocks_are_paged_newest_first(explorer: SimpleNamespace) -> None:
    html = httpx.get(explorer.url + "/explorer/blocks?before=3").text
    heights = [int(h) for h in re.findall(r'<td><a href="/explorer/blocks/([0-9]+)">', html)]
    assert heights == [3, 2, 1]
    assert 'href="/explorer/blocks?before=' in html  # newer


def test_record_page_names_the_signer_and_links_the_proof(explorer: SimpleNamespace) -> None:
    rid = explorer.records["update:r1:nadia"]
    html = httpx.get(f"{explorer.url}/explorer/records/{rid}").text
    assert "nadia" in html and "northside-hospital" in html
    assert f'href="/v1/records/{rid}/proof" download=' in html and f'href="/v1/records/{rid}"' in html
    assert 'href="/explorer/datasets/northside-cxr-crops"' in html
    assert 'data-check="inclusion" data-result="pending"' in html  # nothing shown as checked by the server


def test_dataset_page_shows_the_budget(explorer: SimpleNamespace) -> None:
    html = httpx.get(explorer.url + "/explorer/datasets/northside-cxr-crops").text
    assert re.search(r'<meter id="budget-bar"[^>]*max="6.0"[^>]*value="3.0"', html)
    assert "Epsilon spent: 3 of 6 (50%); 3 remaining." in html
    assert html.count("/explorer/lineage/") >= 9  # the nine updates of the model (three rounds, local)


def test_attribution_downloads_match_the_api(explorer: SimpleNamespace) -> None:
    url = f"{explorer.url}/explorer/attribution/{explorer.final}"
    rows = list(csv.DictReader(io.StringIO(httpx.get(url + "/table.csv?total=1000").text)))
    for method in METHODS:
        api = httpx.get(f"{explorer.url}/v1/attribution/{explorer.final}", params={"total": 1000, "method": method}).json()
        assert {row["name"]: int(row[method]) for row in rows} == {line["name"]: line["units"] for line in api["lines"]}
    doc = httpx.get(url + "/table.json?total=1000").json()
    # The same tables as the demo printed (the chain may have grown since: the lines are fixed).
    assert doc["methods"]["shapley"]["lines"] == explorer.out["attribution"]["shapley"]["lines"]
    assert httpx.get(url + "?total=ten").status_code == 400


def test_search_api(explorer: SimpleNamespace) -> None:
    def search(q: str) -> list[dict[str, str]]:
        r = httpx.get(explorer.url + "/v1/search", params={"q": q})
        assert r.status_code == 200, r.text
        return r.json()["results"]  # type: ignore[no-any-return]

    final = explorer.final
    assert [(x["kind"], x["ref"]) for x in search(final)] == [("record", final)]
    assert [x["ref"] for x in search(final[:8].upper())] == [final]  # a prefix of 8, any case
    assert all(x["ref"] != final for x in search(final[:7]))  # 7 characters are not a prefix search
    block = httpx.get(explorer.url + "/v1/checkpoint/2").json()["hash"]
    assert search(block[:10]) == [{"kind": "block", "ref": block, "label": "block 2", "url": "/explorer/blocks/2"}]
    assert search("2")[0]["url"] == "/explorer/blocks/2"
    assert search("dataset:lakeview-cxr")[0]["url"] == "/explorer/datasets/lakeview-cxr"
    people = {p["name"]: p for p in explorer.out["participants"]}
    by_name = search("luis")
    assert by_name[0]["kind"] == "identity" and by_name[0]["ref"] == people["luis"]["key"]
    assert {x["kind"] for x in by_name[1:]} == {"record"}  # the latest records luis signed
    assert search(people["luis"]["key"])[0] == by_name[0]
    assert search("no-such-thing") == []
    for bad in ("", "   ", "x" * 201):
        r = httpx.get(explorer.url + "/v1/search", params={"q": bad})
        assert r.status_code == 400 and r.json()["code"] == "bad_request", bad


def test_search_page_redirects_to_a_single_result(explorer: SimpleNamespace) -> None:
    r = httpx.get(explorer.url + "/explorer/search", params={"q": explorer.final[:12]})
    assert r.status_code == 303 and r.headers["location"] == f"/explorer/records/{explorer.final}"
    r = httpx.get(explorer.url + "/explorer/search", params={"q": "nadia"})
    assert r.status_code == 200 and "identity nadia (northside-hospital)" in r.text


def test_unknown_and_malformed_are_4xx_pages(explorer: SimpleNamespace) -> None:
    with httpx.Client(base_url=explorer.url, timeout=90) as http:
        for path, status in [("/explorer/records/" + "0" * 64, 404), ("/explorer/records/xyz", 400),
                             ("/explorer/blocks/999999", 404), ("/explorer/blocks/-1", 400),
                             ("/explorer/blocks?before=x", 400), ("/explorer/datasets/none-such", 404),
                             ("/explorer/lineage/dataset:none-such", 404),
                             (f"/explorer/attribution/{explorer.records['dataset:harbor-cxr']}", 422)]:
            r = http.get(path)
            assert r.status_code == status, (path, r.status_code)
            assert r.headers["content-type"].startswith("text/html") and "<h1>" in r.text, path
        r = http.get("/explorer/static/../pages.py")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert http.get("/explorer/static/vendor/MANIFEST.json").status_code == 200


def test_docs_need_no_internet(explorer: SimpleNamespace) -> None:
    for path in ("/docs", "/redoc"):
        html = httpx.get(explorer.url + path).text
        assert "http://" not in html and "https://" not in html, path
    assert httpx.get(explorer.url + "/openapi.json").json()["paths"]["/v1/search"]


def test_names_are_escaped_and_linked(explorer: SimpleNamespace) -> None:
    """Dataset names are any string (PROTOCOL.md 3.1): shown escaped, linked quoted."""
    from ledger.keys import SigningKey
    from ledger.records import make_record

    name = 'scans <b>&"x"/y ?z#1'
    env = make_record(SigningKey.load(explorer.home / "demo-keys" / "hana.key"), explorer.out["chain_id"],
                      "dataset.contribute", {"dataset": name, "version": "1", "content_hash": "cd" * 32, "size_bytes": 9,
                                             "items": 3, "license": "CC0-1.0", "modality": "text", "derived_from": [],
                                             "privacy_budget": None})
    r = httpx.post(explorer.url + "/v1/records?wait=true&timeout=60", json=env, timeout=90)
    assert r.status_code in (200, 202), r.text
    html = httpx.get(f"{explorer.url}/explorer/records/{r.json()['id']}").text
    assert "<b>" not in html and "scans &lt;b&gt;&amp;&#34;x&#34;/y ?z#1" in html
    href = re.search(r'<dt>Dataset</dt><dd><a href="([^"]+)"', html)
    assert href is not None
    page = httpx.get(explorer.url + href.group(1).replace("&amp;", "&"))
    assert page.status_code == 200 and "Dataset scans &lt;b&gt;" in page.text
    found = httpx.get(explorer.url + "/explorer/search", params={"q": f"dataset:{name}"})
    assert found.status_code == 303 and httpx.get(explorer.url + found.headers["location"]).status_code == 200
