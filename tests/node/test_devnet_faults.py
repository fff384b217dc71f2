"""Faults in a network of four validators (f = 1), with real node processes on 127.0.0.1
made by ``provledger init --validators 4``, and the ``scripts/devnet`` tool that runs one.

One node killed: the other three (2f + 1) go on. Two killed: the chain stops growing and
no node finalizes anything that conflicts with another. The killed nodes restart, catch up
and the chain resumes; every database audits clean and all four agree on the head.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import PARTICIPANT_ROLES, NodeProcess, free_port, init_home

from ledger.audit import DbSource, audit
from ledger.keys import SigningKey
from ledger.records import make_record
from ledger.store import Store

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
H = "ef" * 32


def base_port(n: int = 4) -> int:
    """A base port B such that B+1 .. B+n are free now."""
    for _ in range(200):
        base = free_port()
        if base + n > 65000:
            continue
        socks: list[socket.socket] = []
        try:
            for i in range(1, n + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free range of ports")


def datasets(key: SigningKey, chain: str, tag: str, n: int) -> list[dict[str, Any]]:
    body = {"version": "1", "content_hash": H, "size_bytes": 1, "items": 1, "license": "MIT", "modality": "text",
            "derived_from": [], "privacy_budget": None}
    return [make_record(key, chain, "dataset.contribute", {"dataset": f"{tag}-{i}", **body}, nonce=f"{tag}-{i}")
            for i in range(n)]


def status(url: str) -> dict[str, Any]:
    return httpx.get(url + "/v1/status", timeout=5).json()  # type: ignore[no-any-return]


def wait_log_size(urls: list[str], size: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        st = [status(u) for u in urls]
        if all(s["log_size"] >= size for s in st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"not all at log size {size}: {[(s['height'], s['log_size']) for s in st]}")
        time.sleep(0.1)


def hashes(url_or_db: str | Path) -> dict[int, str]:
    """height -> block hash of every stored block, from a live node or a stopped node's database."""
    if isinstance(url_or_db, Path):
        with Store(url_or_db) as store:
            return {b.header.height: b.hash for b in store.blocks()}
    top = status(url_or_db)["height"]
    with httpx.Client(base_url=url_or_db, timeout=5) as http:
        return {h: http.get(f"/v1/checkpoint/{h}").json()["hash"] for h in range(1, top + 1)}


def assert_no_conflict(views: list[dict[int, str]]) -> None:
    """Every height stored on several nodes holds the same block on all of them."""
    for h in set().union(*views):
        held = {v[h] for v in views if h in v}
        assert len(held) == 1, f"conflicting blocks at height {h}: {held}"


def test_one_down_goes_on_two_down_stops_all_rejoin(tmp_path: Path) -> None:
    base = base_port()
    key_path = tmp_path / "alice.key"
    init_home(tmp_path / "net", "--validators", "4", "--base-port", str(base),
              "--participant-key", f"{key_path}={PARTICIPANT_ROLES}")
    homes = [tmp_path / "net" / f"node-{i}" for i in range(1, 5)]
    alice = SigningKey.load(key_path)
    nodes = [NodeProcess(h, base + i) for i, h in enumerate(homes, 1)]
    try:
        urls = [n.wait_ready() for n in nodes]
        chain = status(urls[0])["chain_id"]

        def post(url: str, recs: list[dict[str, Any]], wait: bool) -> httpx.Response:
            return httpx.post(url + f"/v1/records/batch?wait={'true' if wait else 'false'}&timeout=20",
                              content=orjson.dumps({"records": recs}), timeout=30)

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
        time.sleep(0.5)  # a block in flight at the kill settles either way
        before = [status(u) for u in live]
        r = post(urls[0], datasets(alice, chain, "stuck", 20), wait=False)
        assert r.status_code == 200 and all(x.get("status") == "pending" for x in r.json()["results"]), r.text[:300]
        time.sleep(2.5)
        after = [status(u) for u in live]
        assert [s["height"] for s in after] == [s["height"] for s in before], (before, after)
        assert all(s["log_size"] == 100 for s in after)
        views = [hashes(u) for u in live] + [hashes(h / "ledger.db") for h in homes[2:]]
        assert_no_conflict(views)

        # 4. Both restart: they catch up, the quorum is back, the waiting records commit.
        nodes[2] = NodeProcess(homes[2], base + 3)
        nodes[3] = NodeProcess(homes[3], base + 4)
        for n in nodes[2:]:
            n.wait_ready()
        st = wait_log_size(urls, 120, timeout=45)
        # 5. More records commit with all four; then all stop cleanly.
        r = post(urls[3], datasets(alice, chain, "again", 30), wait=True)
        assert all(x.get("status") == "committed" for x in r.json()["results"]), r.text[:300]
        st = wait_log_size(urls, 150)
        top = max(s["height"] for s in st)
        deadline = time.monotonic() + 30
        while min(status(u)["height"] for u in urls) < top and time.monotonic() < deadline:
            time.sleep(0.1)
        views = [hashes(u) for u in urls]
        assert_no_conflict(views)
        assert all(top in v for v in views)
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.terminate()
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


def test_devnet_script(tmp_path: Path) -> None:
    """``scripts/devnet up``, ``status``, ``stop``/``start`` one node, ``down``."""
    env = {**os.environ, "DEVNET_DIR": str(tmp_path / "devnet"), "DEVNET_BASE_PORT": str(base_port())}

    def devnet(*args: str) -> str:
        res = subprocess.run([sys.executable, str(ROOT / "scripts" / "devnet.py"), *args], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    def table() -> dict[str, dict[str, Any]]:
        return {r["node"]: r for r in json.loads(devnet("status", "--json"))}

    try:
        out = devnet("up")
        rows = table()
        assert all(r["up"] for r in rows.values()) and len(rows) == 4
        assert "provledger submit dataset --key" in out and rows["node-1"]["url"] in out
        key = SigningKey.load(tmp_path / "devnet" / "alice.key")  # the key the example names
        chain = status(rows["node-1"]["url"])["chain_id"]
        env_rec = datasets(key, chain, "devnet", 1)[0]
        r = httpx.post(rows["node-1"]["url"] + "/v1/records?wait=true", content=orjson.dumps(env_rec), timeout=20)
        assert r.status_code == 200, r.text
        assert "stopped node-2" in devnet("stop", "node-2")
        rows = table()
        assert not rows["node-2"]["up"] and rows["node-1"]["up"]

        def wait_for(check: Callable[[dict[str, dict[str, Any]]], bool], seconds: float = 45) -> dict[str, dict[str, Any]]:
            deadline = time.monotonic() + seconds
            while not check(rows := table()) and time.monotonic() < deadline:
                time.sleep(0.2)
            return rows

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
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = {line.split("  ")[0]: line for line in res.stdout.splitlines()}
    assert "records/s" in lines["audit --jobs 1"] and "records/s" in lines["catch-up"]
    assert float(lines["catch-up / audit"].split()[3]) > 0
