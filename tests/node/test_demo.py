"""The worked example (scripts/demo) against a real node, and the lineage and attribution
endpoints (node/api_lineage.py).

End to end (real ``provledger node start`` process, real HTTP, the node's SQLite file):
the demo builds its consortium; the attribution of its final model is the same JSON from
``GET /v1/attribution``, from ``provledger attribution --db`` on the node's database, from
an exported bundle and from ``--node``, for every method; the lineage is the same from
``GET /v1/lineage``, ``provledger lineage --db`` and ``--node --remote``; an update over a dataset's privacy
budget is refused in one line naming the dataset and the amounts.

In process: the endpoints' answers for unknown, malformed and unsuitable requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from factory import Consortium
from procs import provledger_cmd, start_node_process

from ledger.attribution import METHODS, attribute
from ledger.lineage import lineage
from ledger.reader import StoreReader
from ledger.store import Store

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"
TRAINING_SETS = ["harbor-cxr", "lakeview-cxr", "northside-cxr-crops"]


def run(*args: str, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)
    if ok:
        assert res.returncode == 0, f"{' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
    return res


def provledger(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run(*provledger_cmd(), *args, ok=ok)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The demo's network in a fresh home, a node process on it, and the demo run
    against that node with ``--json``."""
    home = tmp_path_factory.mktemp("lin-demo") / "net"
    run(sys.executable, str(DEMO), "--home", str(home), "--init-only")
    node = start_node_process(home)
    try:
        url = node.url
        out = json.loads(run(sys.executable, str(DEMO), "--node", url, "--home", str(home), "--json").stdout)
        yield {"home": home, "url": url, "db": home / "ledger.db", "out": out, "final": out["final_model"]}
    finally:
        node.terminate()


@pytest.mark.e2e
def test_demo_builds_the_consortium(demo: dict[str, Any]) -> None:
    out, url = demo["out"], demo["url"]
    assert out["organisations"] == ["northside-hospital", "lakeview-clinic", "harbor-imaging"]
    assert {p["name"]: p["org"] for p in out["participants"]} == {
        "nadia": "northside-hospital", "luis": "lakeview-clinic", "hana": "harbor-imaging",
        "ari": "northside-hospital", "eve": "harbor-imaging"}
    with httpx.Client(base_url=url, timeout=90) as http:
        # Identities registered by the organisations' admins, on the chain.
        names = {i["name"] for i in http.get("/v1/identities").json()["identities"]}
        assert {"nadia", "luis", "hana", "ari", "eve"} <= names
        # Four datasets, one derived from another; one annotation event of each method.
        crops = http.get("/v1/datasets/northside-cxr-crops").json()
        for name in ("northside-cxr", "lakeview-cxr", "harbor-cxr"):
            assert http.get(f"/v1/datasets/{name}").status_code == 200
        base = http.get(f"/v1/records/{out['records']['dataset:northside-cxr-crops']}").json()["record"]
        assert base["body"]["derived_from"] == ["northside-cxr"]
        methods = {http.get(f"/v1/records/{out['records'][f'annotation:{m}']}").json()["record"]["body"]["method"]
                   for m in ("manual", "semi-automatic", "automatic")}
        assert methods == {"manual", "semi-automatic", "automatic"}
        # Three rounds: each aggregate combines the round's three local updates and is the
        # parent of the next round's updates.
        for r in (1, 2, 3):
            agg = http.get(f"/v1/records/{out['records'][f'aggregate:r{r}']}").json()
            assert agg["status"] == "committed"
            b = agg["record"]["body"]
            assert b["round"] == r and len(b["aggregates"]) == 3 and b["inputs"] == []
            assert b["parent"] == (out["records"][f"aggregate:r{r - 1}"] if r > 1 else None)
        assert out["final_model"] == out["records"]["aggregate:r3"]
        # Three rounds at epsilon 1 each were charged to the budget.
        assert crops["budget"] == {"epsilon": "6", "delta": "0.00001"}
        assert crops["spent"]["epsilon"] == "3" and crops["remaining"]["epsilon"] == "3"
    summary = out["lineage"]["summary"]
    assert summary["datasets"] == TRAINING_SETS and summary["ancestors"] == ["northside-cxr"]
    assert summary["local_updates"] == 9 and summary["updates"] == 12 and summary["annotations"] == 3
    shapley = out["attribution"]["shapley"]
    assert shapley["coalitions"]["estimator"] == "exact"
    assert shapley["coalitions"]["metric"] == "auc" and len(shapley["coalitions"]["evaluations"]) == 7
    for method in ("proportional", "shapley"):
        lines = out["attribution"][method]["lines"]
        assert sum(line["units"] for line in lines) == 1000
        assert {line["name"] for line in lines} == {"nadia", "luis", "hana"}


@pytest.mark.e2e
def test_attribution_is_identical_from_api_db_bundle_and_node(demo: dict[str, Any], tmp_path: Path) -> None:
    final, db, url = demo["final"], str(demo["db"]), demo["url"]
    bundle = tmp_path / "chain.bundle"
    provledger("export", "bundle", "--db", db, "--out", str(bundle))
    for method in METHODS:
        api = httpx.get(f"{url}/v1/attribution/{final}", params={"total": 1000, "method": method}).json()
        args = ("attribution", final, "--total", "1000", "--method", method, "--json")
        from_db = json.loads(provledger(*args, "--db", db).stdout)
        from_bundle = json.loads(provledger(*args, "--bundle", str(bundle)).stdout)
        from_node = json.loads(provledger(*args, "--node", url).stdout)
        remote = json.loads(provledger(*args, "--node", url, "--remote").stdout)
        assert api == from_db == from_bundle == from_node == remote, method
        assert api == demo["out"]["attribution"][method], method
        assert api["model"] == final and api["total_units"] == 1000 and api["method"] == method
    # The exact Shapley table differs from the proportional one: the coalitions count.
    units = {m: [(line["name"], line["units"]) for line in demo["out"]["attribution"][m]["lines"]]
             for m in ("proportional", "shapley")}
    assert units["proportional"] != units["shapley"]


@pytest.mark.e2e
def test_lineage_is_identical_from_api_and_db(demo: dict[str, Any]) -> None:
    final, db, url = demo["final"], str(demo["db"]), demo["url"]
    for ref in (final, "dataset:northside-cxr"):
        api = httpx.get(f"{url}/v1/lineage/{ref}").json()
        assert api == json.loads(provledger("lineage", ref, "--db", db, "--json").stdout), ref
        assert api == json.loads(provledger("lineage", ref, "--node", url, "--remote", "--json").stdout), ref
    # --remote takes the node's answer, so it cannot be combined with a local source.
    res = provledger("lineage", final, "--db", db, "--remote", ok=False)
    assert res.returncode == 2 and res.stderr.startswith("error: --remote reads from --node URL only")
    graph = demo["out"]["lineage"]
    assert graph["root"] == final and graph["kind"] == "model"
    relations = {e["relation"] for e in graph["edges"]}
    assert {"parent", "aggregates", "used", "derived_from", "annotates", "signed_by", "member_of"} <= relations


@pytest.mark.e2e
def test_over_budget_update_is_refused(demo: dict[str, Any]) -> None:
    refused = demo["out"]["refused"]
    assert refused["status"] == 422 and refused["code"] == "budget_exceeded"
    assert refused["dataset"] == "northside-cxr-crops"
    assert "update costs epsilon 4" in refused["message"] and "remaining budget is epsilon 3" in refused["message"]
    # The same refusal for a trainer using the CLI: one line, the dataset and the amounts.
    res = provledger(
        "submit", "model-update", "--key", str(demo["home"] / "demo-keys" / "nadia.key"), "--node", demo["url"],
        "--model", "cxr-net", "--round", "4", "--parent", demo["final"], "--weights-hash", "ab" * 32,
        "--input", "northside-cxr-crops:1200:3.5:0.000001", "--wait", ok=False)
    assert res.returncode != 0
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "northside-cxr-crops" in err and "epsilon 3.5" in err and "remaining budget is epsilon 3," in err
    assert "budget_exceeded" in err
    # Nothing was charged: the rounds' three epsilon are all that is spent.
    with Store(demo["db"]) as store:
        st = StoreReader(store).dataset_state("northside-cxr-crops")
        assert st is not None and st.spent is not None and str(st.spent[0]) == "3"


@pytest.mark.e2e
def test_demo_refuses_a_chain_that_already_holds_it(demo: dict[str, Any]) -> None:
    res = run(sys.executable, str(DEMO), "--node", demo["url"], "--home", str(demo["home"]), ok=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: this chain already holds the demo's dataset 'northside-cxr'; run the demo on a fresh network (demo_exists)"]


@pytest.mark.e2e
def test_demo_on_its_own_network_is_deterministic(demo: dict[str, Any]) -> None:
    """Without --node the demo makes a temporary network, runs a node on it, stops it and
    removes the directory; the tables are the same as on any other run (only keys and
    record ids differ)."""
    res = run(sys.executable, str(DEMO), "--json", "--total", "1000")
    out = json.loads(res.stdout)
    assert out["home"] is None and out["node"].startswith("http://127.0.0.1:")
    with pytest.raises(httpx.HTTPError):
        httpx.get(out["node"] + "/healthz", timeout=1)  # the node was stopped

    def table(o: dict[str, Any], method: str) -> list[tuple[str, str, int]]:
        return [(line["name"], line["fraction"], line["units"]) for line in o["attribution"][method]["lines"]]

    for method in METHODS:
        assert table(out, method) == table(demo["out"], method), method
    assert out["final_model"] != demo["final"]  # new keys, new records


# --- the endpoints' errors, in process ------------------------------------------------------
def _commit(client: Any, envs: list[dict[str, Any]]) -> list[str]:
    r = client.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": envs}))
    assert r.status_code == 200
    results = r.json()["results"]
    assert all(x.get("status") == "committed" for x in results), results
    return [x["id"] for x in results]


@pytest.fixture
def chain(client: Any, consortium: Consortium) -> dict[str, str]:
    c = consortium
    (ds,) = _commit(client, [c.envelope(c.alice, "dataset.contribute", c.dataset_body("scans", budget=("5", "0.001")))])
    ann, upd = _commit(client, [
        c.envelope(c.bob, "annotation.event", c.annotation_body("scans", labels=200)),
        c.envelope(c.alice, "model.update", c.update_body("net", 1, inputs=[("scans", 500, "1", "0.0001")])),
    ])
    return {"dataset": ds, "annotation": ann, "update": upd}


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["message"], body
    return body  # type: ignore[no-any-return]


def test_endpoints_answer_as_the_library_over_the_store(client: Any, chain: dict[str, str], home: Path) -> None:
    with Store(home / "ledger.db") as store:
        reader = StoreReader(store)
        expect = attribute(reader, chain["update"], 77, "proportional")
        graph = lineage(reader, chain["update"])
        ds_graph = lineage(reader, "dataset:scans")
    r = client.get(f"/v1/attribution/{chain['update']}", params={"total": "77"})
    assert r.status_code == 200 and r.json() == expect
    assert sum(line["units"] for line in expect["lines"]) == 77
    assert client.get(f"/v1/lineage/{chain['update']}").json() == graph
    assert client.get("/v1/lineage/dataset:scans").json() == ds_graph
    assert client.get(f"/v1/lineage/{chain['dataset']}").json() == ds_graph  # a dataset record: its users


def test_unknown_records_are_404(client: Any, chain: dict[str, str]) -> None:
    missing = "00" * 32
    _error(client.get(f"/v1/lineage/{missing}"), 404, "not_found")
    _error(client.get("/v1/lineage/dataset:no-such-set"), 404, "not_found")
    _error(client.get(f"/v1/attribution/{missing}", params={"total": "10"}), 404, "not_found")


def test_attribution_needs_a_model_update(client: Any, chain: dict[str, str]) -> None:
    for kind in ("dataset", "annotation"):
        body = _error(client.get(f"/v1/attribution/{chain[kind]}", params={"total": "10"}), 422, "not_a_model")
        assert "not a model.update" in body["message"]
    _error(client.get("/v1/attribution/not-a-record-id", params={"total": "10"}), 400, "bad_hex")


@pytest.mark.parametrize("total", [None, "", "-1", "1.5", "ten", "1e3", "10000000000000000001", "9" * 5000])
def test_bad_total_is_400(client: Any, chain: dict[str, str], total: str | None) -> None:
    params = {} if total is None else {"total": total}
    body = _error(client.get(f"/v1/attribution/{chain['update']}", params=params), 400, "bad_total")
    assert body["field"] == "total"


def test_bad_method_is_400_and_missing_coalitions_422(client: Any, chain: dict[str, str]) -> None:
    url = f"/v1/attribution/{chain['update']}"
    body = _error(client.get(url, params={"total": "10", "method": "median"}), 400, "bad_method")
    assert "proportional" in body["message"]
    # No model.evaluation with a coalition is recorded: Shapley cannot be computed.
    body = _error(client.get(url, params={"total": "10", "method": "shapley"}), 422, "coalitions_missing")
    assert "scans" in body["message"]
    _error(client.get(url, params={"total": "10", "method": "leave-one-out"}), 422, "coalitions_missing")


@pytest.mark.e2e
def test_demo_prints_the_readme_commands_and_writes_only_into_its_home(tmp_path: Path) -> None:
    """With --home the demo ends by printing the README's five commands (its model id and
    directory filled in); they run as printed, and nothing lands in the current directory."""
    import shlex

    home, cwd = tmp_path / "cxr-demo", tmp_path / "cwd"
    cwd.mkdir()
    res = run(sys.executable, str(DEMO), "--home", str(home), cwd=cwd)
    tail = res.stdout.split("recompute it yourself", 1)[1]
    printed = [line for line in tail.splitlines() if line.strip()][1:]
    final = json.loads(provledger("lineage", "dataset:harbor-cxr", "--db", str(home / "ledger.db"), "--json").stdout)
    readme = (ROOT / "README.md").read_text()
    block = readme.split("MODEL=...   # the final model's record id", 1)[1].split("```", 1)[0]
    wanted = [line for line in block.splitlines() if line.startswith("provledger ")]
    assert len(wanted) == 5
    model = printed[1].split()[2]
    assert model in json.dumps(final)  # the final aggregate used harbor-cxr
    assert printed == [w.replace("$MODEL", model).replace("/tmp/cxr-demo", str(home)) for w in wanted]
    for line in printed[:4]:
        assert run(*provledger_cmd(), *shlex.split(line)[1:], cwd=cwd).returncode == 0, line
    dot = shlex.split(printed[4].split("|")[0])
    assert run(*provledger_cmd(), *dot[1:], cwd=cwd).stdout.startswith("digraph")
    assert list(cwd.iterdir()) == []
    assert (home / "cxr.bundle").is_file()
