"""Faults in a network of four validators (f = 1), with real node processes on 127.0.0.1
made by ``provledger init --validators 4``, and the ``scripts/devnet`` tool that runs one.

One node killed: the other three (2f + 1) go on. Two killed: the chain stops growing and
no node finalizes anything that conflicts with another. The killed nodes restart, catch up
and the chain resumes; every database audits clean and all four agree on the head.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import Network, free_base, holds, until
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from ledger.audit import DbSource, audit
from ledger.keys import SigningKey
from ledger.records import make_record
from ledger.store import Store

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
H = "ef" * 32


def datasets(key: SigningKey, chain: str, tag: str, n: int) -> list[dict[str, Any]]:
    body = {"version": "1", "content_hash": H, "size_bytes": 1, "items": 1, "license": "MIT", "modality": "text",
            "derived_from": [], "privacy_budget": None}
    return [make_record(key, chain, "dataset.contribute", {"dataset": f"{tag}-{i}", **body}, nonce=f"{tag}-{i}")
            for i in range(n)]


def status(url: str) -> dict[str, Any]:
    return httpx.get(url + "/v1/status", timeout=60).json()  # type: ignore[no-any-return]


def wait_log_size(urls: list[str], size: int) -> list[dict[str, Any]]:
    def all_there() -> list[dict[str, Any]] | None:
        st = [status(u) for u in urls]
        return st if all(s["log_size"] >= size for s in st) else None

    return until(f"all of {urls} at log size {size}", all_there)


def hashes(url_or_db: str | Path) -> dict[int, str]:
    """height -> block hash of every stored block, from a live node or a stopped node's database."""
    if isinstance(url_or_db, Path):
        with Store(url_or_db) as store:
            return {b.header.height: b.hash for b in store.blocks()}
    top = status(url_or_db)["height"]
    with httpx.Client(base_url=url_or_db, timeout=90) as http:
        return {h: http.get(f"/v1/checkpoint/{h}").json()["hash"] for h in range(1, top + 1)}


def assert_no_conflict(views: list[dict[int, str]]) -> None:
    """Every height stored on several nodes holds the same block on all of them."""
    for h in set().union(*views):
        held = {v[h] for v in views if h in v}
        assert len(held) == 1, f"conflicting blocks at height {h}: {held}"


def test_one_down_goes_on_two_down_stops_all_rejoin(tmp_path: Path) -> None:
    net = Network(tmp_path).start()
    homes, urls, nodes = net.homes, net.urls, net.nodes
    alice = SigningKey.load(net.key_path)
    try:
        chain = status(urls[0])["chain_id"]

        def post(url: str, recs: list[dict[str, Any]], wait: bool) -> httpx.Response:
            return httpx.post(url + f"/v1/records/batch?wait={'true' if wait else 'false'}&timeout=60",
                              content=orjson.dumps({"records": recs}), timeout=90)

        # 1. All four up: a batch commits everywhere.
        r = post(urls[0], datasets(alice, chain, "all", 50), wait=True)
        assert all(x.get("status") == "committed" for x in r.json()["results"]), r.text[:300]
        wait_log_size(urls, 50)

        # 2. node-4 killed: three of four are a quorum, the chain goes on.
        nodes[3].kill()
        r = post(urls[1], datasets(alice, chain, "three", 50), wait=True)
        assert all(x.get("status") == "committed" for x in r.json()["results"]), r.text[:300]
        st = wait_log_size(urls[:3], 100)
        assert len({s["height"] for s in st}) == 1

        # 3. node-3 killed too: two of four cannot finalize. Records are taken (pending)
        #    but no block is final while the two are down.
        nodes[2].kill()
        live = urls[:2]

        def one_height() -> list[dict[str, Any]] | None:
            st = [status(u) for u in live]
            return st if len({s["height"] for s in st}) == 1 else None

        before = until("the two live nodes at one height", one_height)
        top = before[0]["height"]
        r = post(urls[0], datasets(alice, chain, "stuck", 20), wait=False)
        assert r.status_code == 200 and all(x.get("status") == "pending" for x in r.json()["results"]), r.text[:300]

        def tried_or_moved() -> list[dict[str, Any]] | None:
            # Both past the proposal of the next height (a value voted on, or nil after the
            # propose timeout): the attempt with the new records has begun.
            st = [status(u) for u in live]
            tried = all(s["consensus"]["height"] == top + 1 and s["consensus"]["step"] in ("prevote", "precommit")
                        for s in st)
            return st if tried or any(s["height"] != top for s in st) else None

        after = until("both voting at the next height, or a block", tried_or_moved)
        assert [s["height"] for s in after] == [top, top], (before, after)
        holds("no block while two are down", lambda: [status(u)["height"] for u in live] == [top, top], 2.5)
        after = [status(u) for u in live]
        assert all(s["log_size"] == 100 for s in after)
        views = [hashes(u) for u in live] + [hashes(h / "ledger.db") for h in homes[2:]]
        assert_no_conflict(views)

        # 4. Both restart: they catch up, the quorum is back, the waiting records commit.
        net.restart(2)
        net.restart(3)
        nodes = net.nodes
        st = wait_log_size(urls, 120)
        # 5. More records commit with all four; then all stop cleanly.
        r = post(urls[3], datasets(alice, chain, "again", 30), wait=True)
        assert all(x.get("status") == "committed" for x in r.json()["results"]), r.text[:300]
        st = wait_log_size(urls, 150)
        top = max(s["height"] for s in st)
        until(f"all at height {top}", lambda: min(status(u)["height"] for u in urls) >= top)
        views = [hashes(u) for u in urls]
        assert_no_conflict(views)
        assert all(top in v for v in views)
    finally:
        net.stop()
    caught_up = [n for n in nodes[2:] if "caught up" in n.log()]
    assert caught_up, "the restarted nodes stored no block through catch-up"
    # 6. Every database audits clean; all four have the same head.
    heads = set()
    for h in homes:
        report = audit(DbSource(h / "ledger.db"))
        assert report.ok, (h.name, [str(f) for f in report.findings][:5])
        assert report.records >= 150
        heads.add((report.head.height, report.head.hash) if report.head else None)
    assert len(heads) == 1, heads


class _Busy(Exception):
    """``devnet up`` stopped: a port of the chosen range was taken meanwhile."""


def test_devnet_script(tmp_path: Path) -> None:
    """``scripts/devnet up``, ``status``, ``stop``/``start`` one node, ``down``."""
    env = {**os.environ, "DEVNET_DIR": str(tmp_path / "devnet")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "devnet.py"), *args], env=env,
                              capture_output=True, text=True, timeout=300)

    def devnet(*args: str) -> str:
        res = run(*args)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    def table() -> dict[str, dict[str, Any]]:
        return {r["node"]: r for r in json.loads(devnet("status", "--json"))}

    def up_on_a_free_range() -> str:
        env["DEVNET_BASE_PORT"] = str(free_base(4))
        res = run("up")
        if res.returncode != 0 and "cannot listen on" in res.stdout + res.stderr:
            devnet("down")
            shutil.rmtree(tmp_path / "devnet")
            raise _Busy(res.stderr)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    try:
        out = Retrying(retry=retry_if_exception_type(_Busy), stop=stop_after_attempt(10), reraise=True)(
            up_on_a_free_range)
        rows = table()
        assert all(r["up"] for r in rows.values()) and len(rows) == 4
        assert "provledger submit dataset --key" in out and rows["node-1"]["url"] in out
        key = SigningKey.load(tmp_path / "devnet" / "alice.key")  # the key the example names
        chain = status(rows["node-1"]["url"])["chain_id"]
        env_rec = datasets(key, chain, "devnet", 1)[0]
        r = httpx.post(rows["node-1"]["url"] + "/v1/records?wait=true&timeout=60", content=orjson.dumps(env_rec), timeout=90)
        assert r.status_code == 200, r.text
        assert "stopped node-2" in devnet("stop", "node-2")
        rows = table()
        assert not rows["node-2"]["up"] and rows["node-1"]["up"]

        def wait_for(check: Callable[[dict[str, dict[str, Any]]], bool]) -> dict[str, dict[str, Any]]:
            def matching() -> dict[str, dict[str, Any]] | None:
                rows = table()
                return rows if check(rows) else None

            return until("the devnet status", matching, interval=0.2)

        # No traffic: the others still learn that node-2 is gone, and then that it is back.
        rows = wait_for(lambda t: t["node-1"]["peers_up"] == 2)
        assert rows["node-1"]["peers_up"] == 2, rows["node-1"]
        assert "started node-2" in devnet("start", "2")
        rows = wait_for(lambda t: t["node-2"].get("height") == 1 and t["node-1"]["peers_up"] == 3
                        and t["node-2"]["peers_up"] == 3)
        assert rows["node-2"]["height"] == 1
        assert rows["node-1"]["peers_up"] == rows["node-2"]["peers_up"] == 3, rows
        assert "already running" in devnet("up")
    finally:
        out = devnet("down")
    assert "stopped node-1, node-2, node-3, node-4" in out
    assert not any(r["up"] or r["pid"] for r in table().values())


def test_devnet_catchup_rate(tmp_path: Path) -> None:
    """``scripts/devnet catchup-rate`` builds a chain, audits it, catches a node up from it."""
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "devnet.py"), "catchup-rate", "--records", "3000"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = {line.split("  ")[0]: line for line in res.stdout.splitlines()}
    assert "records/s" in lines["audit --jobs 1"] and "records/s" in lines["catch-up"]
    assert float(lines["catch-up / audit"].split()[3]) > 0
