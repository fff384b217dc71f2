"""scripts/bench section ``explorer``: the explorer's pages on a large chain.

The chain is the core section's (``bench.build_chain``: datasets, annotation events and
local model updates, 2,000 records a block) with one model of 12 updates at its end (three
rounds of three local updates and an aggregate); a real ``provledger node start`` serves
it. Measured:

- server: the time to answer ``GET`` of the home page, a block page, a record page and the
  lineage page of the 12-update model over HTTP on 127.0.0.1 (median and slowest of
  ``--explorer-requests``; the target is under 300 ms);
- browser: in headless Chromium (Debian's /usr/bin/chromium, as tests/explorer drives it),
  from navigation to the record page's and the block page's checks all done, and to the
  lineage graph drawn (median of ``--explorer-loads``; the target is under 1 s).

``--explorer-records`` sets the chain's size (default 1,000,000, as the issue asks).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_node import _cli, _free_port, _spawn, _stop, _wait_http

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _check(committed: tuple[Any, ...]) -> None:
    if committed[2]:
        raise SystemExit(f"bench model update rejected: {committed[2][0][1]}")


def _model_of_12(store_path: Path) -> str:
    """Append three federated rounds (three local updates and an aggregate each) of model
    ``bench-net`` to the chain; returns the final aggregate's record id."""
    from bench import consortium

    from ledger.chain import Ledger
    from ledger.records import make_record, parse_record
    from ledger.store import Store

    _doc, val, people = consortium()
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    with Store(store_path) as store:
        ledger = Ledger(store)
        parent = None
        for r in range(1, 4):
            locals_ = [make_record(p, ledger.chain_id, "model.update", {
                "model": "bench-net", "round": r, "parent": parent, "weights_hash": h(f"bench-net/{r}/{i}"),
                "inputs": [{"dataset": f"ds-{i}", "samples": 1000, "epsilon": "0.1", "delta": "0.00001"}],
                "aggregates": [], "metrics": {"auc": "0.8"}}, nonce=f"bench-net-{r}-{i}") for i, p in enumerate(people[:3])]
            recs = [parse_record(e, chain=ledger.chain_id) for e in locals_]
            _check(ledger.commit_single(val, recs))
            agg = make_record(people[3], ledger.chain_id, "model.update", {
                "model": "bench-net", "round": r, "parent": parent, "weights_hash": h(f"bench-net/{r}/agg"),
                "inputs": [], "aggregates": [x.id for x in recs], "metrics": {"auc": "0.85"}}, nonce=f"bench-net-{r}-agg")
            rec = parse_record(agg, chain=ledger.chain_id)
            _check(ledger.commit_single(val, [rec]))
            parent = rec.id
    assert parent is not None
    return parent


def _home(dirpath: Path, n: int, port: int) -> tuple[Path, str, dict[str, Any]]:
    """A node home holding the bench chain of ``n`` records plus the 12-update model."""
    from bench import build_chain, consortium

    from node.config import NodeConfig

    home = dirpath / "node"
    home.mkdir()
    doc, val, _people = consortium()
    built = build_chain(home / "ledger.db", n)
    final = _model_of_12(home / "ledger.db")
    val.save(home / "validator.key")
    (home / "genesis.json").write_text(json.dumps(doc, indent=2))
    NodeConfig(home=home, node_name="node-0", port=port).save()
    return home, final, built


def _server_times(base: str, paths: dict[str, str], requests: int) -> dict[str, dict[str, float]]:
    out = {}
    with httpx.Client(base_url=base, timeout=60) as http:
        for name, path in paths.items():
            r = http.get(path)
            if r.status_code != 200:
                raise SystemExit(f"GET {path} answered {r.status_code}: {r.text[:200]}")
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                http.get(path).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = {"p50_ms": statistics.median(times), "max_ms": max(times), "bytes": len(r.content)}
    return out


def _browser_times(base: str, paths: dict[str, tuple[str, str]], loads: int) -> dict[str, Any]:
    if not CHROMIUM.exists():
        return {"skipped": f"{CHROMIUM} is missing"}
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=base)
        for name, (path, done) in paths.items():
            times = []
            for i in range(loads + 1):  # the first load fills the browser's cache: not counted
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(path)
                page.wait_for_selector(done, timeout=60_000)
                dt = (time.perf_counter() - t0) * 1000
                if name.endswith("checks"):
                    results = page.eval_on_selector_all("[data-check]", "els => els.map(e => e.dataset.result)")
                    if set(results) != {"pass"}:
                        raise SystemExit(f"{path}: checks {results}")
                page.close()
                if i:
                    times.append(dt)
            out[name] = {"p50_ms": statistics.median(times), "max_ms": max(times)}
        browser.close()
    return out


def section_explorer(args: argparse.Namespace) -> dict[str, Any]:
    from bench import machine

    n = args.explorer_records
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-explorer-") as d:
        t0 = time.perf_counter()
        home, final, built = _home(Path(d), n, port)
        build_s = time.perf_counter() - t0
        log = Path(d) / "node.log"
        proc = _spawn([*_cli(), "node", "start", "--home", str(home), "--port", str(port), "--log-level", "warning"], log)
        try:
            _wait_http(port, proc, "the node", log, timeout=600)
            base = f"http://127.0.0.1:{port}"
            status = httpx.get(base + "/v1/status", timeout=60).json()
            middle = max(1, status["height"] // 2)
            record = httpx.get(f"{base}/v1/blocks/{middle}", timeout=60).json()["records"][0]
            from ledger.records import record_id

            rid = record_id(record)
            server = _server_times(base, {
                "home": "/explorer", "block": f"/explorer/blocks/{middle}", "record": f"/explorer/records/{rid}",
                "lineage": f"/explorer/lineage/{final}"}, args.explorer_requests)
            browser = _browser_times(base, {
                "record_checks": (f"/explorer/records/{rid}", '#checks[data-done="true"]'),
                "block_checks": (f"/explorer/blocks/{middle}", '#checks[data-done="true"]'),
                "lineage_graph": (f"/explorer/lineage/{final}", '#graph[data-ready="true"]')}, args.explorer_loads)
        finally:
            _stop(proc)
    return {"machine": machine(), "records": status["log_size"], "height": status["height"], "build_s": build_s,
            "build": built, "server": server, "browser": browser,
            "summary": {"records": status["log_size"], **{f"server_{k}_p50_ms": round(v["p50_ms"], 1) for k, v in server.items()},
                        **{f"browser_{k}_p50_ms": round(v["p50_ms"], 1) for k, v in browser.items() if isinstance(v, dict)}}}


def render_explorer(r: dict[str, Any]) -> list[str]:
    s, b = r["server"], r["browser"]
    lines = [
        f"## Explorer: pages on a chain of {r['records']:,} records (issue 13)",
        "",
        "| page | server p50 | server slowest | target |",
        "| --- | ---: | ---: | --- |",
        *(f"| {name} | {v['p50_ms']:,.1f} ms | {v['max_ms']:,.1f} ms | < 300 ms |" for name, v in s.items()),
        "",
    ]
    if "skipped" in b:
        lines += [f"Browser timings skipped: {b['skipped']}.", ""]
    else:
        lines += [
            "| in headless Chromium | p50 | slowest | target |",
            "| --- | ---: | ---: | --- |",
            *(f"| {name.replace('_', ' ')} done | {v['p50_ms']:,.0f} ms | {v['max_ms']:,.0f} ms | < 1 s |" for name, v in b.items()),
            "",
        ]
    lines += [
        "Server: `GET` over HTTP on 127.0.0.1 to a `provledger node start` process; the block page lists its "
        "first 100 of 2,000 records; the lineage page is that of a model of 12 updates at the chain's end. "
        "Browser: from navigation to every check done (record: id, signature, inclusion proof, block hash, "
        "certificate, chain id; block: the last three) or the graph drawn, after one load that fills the cache.",
        "",
    ]
    return lines


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--explorer-records", type=int, default=1_000_000, help="records in the explorer's chain (explorer)")
    ap.add_argument("--explorer-requests", type=int, default=20, help="requests per page for the server timings (explorer)")
    ap.add_argument("--explorer-loads", type=int, default=5, help="page loads per page in Chromium (explorer)")


if __name__ == "__main__":
    sys.exit("run it as a section: scripts/bench explorer")
