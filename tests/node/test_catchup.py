"""Catch-up with real node processes: a node that is behind fetches final blocks from its
peers (``GET /v1/blocks?from=H``), verifies each before storing it, and avoids a peer that
serves a forged block while it completes from an honest one.

The chain here has one validator; a "follower" home holds the same genesis and validator
key with an empty database and names the other nodes as ``peers`` in its config.json. It
is sent no records, so it only ever stores what catch-up brings it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ledger.audit import DbSource, audit
from ledger.canonical import BLOCK_TAG, jcs, tagged_hash
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.proofs import verify_proof_doc
from ledger.records import make_record, record_id
from ledger.store import Store
from node.api_sync import blocks_range

pytestmark = pytest.mark.e2e

H = "cd" * 32


def dataset(key: SigningKey, chain: str, name: str) -> dict[str, Any]:
    body = {"dataset": name, "version": "1", "content_hash": H, "size_bytes": 10, "items": 1, "license": "MIT",
            "modality": "text", "derived_from": [], "privacy_budget": None}
    return make_record(key, chain, "dataset.contribute", body, nonce=f"n-{name}")


def fill(url: str, key: SigningKey, *, batches: int, size: int, tag: str) -> dict[str, Any]:
    """Submit ``batches`` batches (one or more blocks each), waiting for each; the status after."""
    with httpx.Client(base_url=url, timeout=30) as http:
        chain = http.get("/v1/status").json()["chain_id"]
        for b in range(batches):
            recs = [dataset(key, chain, f"{tag}-{b}-{i}") for i in range(size)]
            r = http.post("/v1/records/batch?wait=true", content=orjson.dumps({"records": recs}))
            assert r.status_code == 200 and all(x.get("status") == "committed" for x in r.json()["results"])
        return http.get("/v1/status").json()  # type: ignore[no-any-return]


def follower_home(src: Path, dest: Path, peers: list[str], db: Path | None = None) -> Path:
    """A home of the same chain: ``src``'s genesis and validator key, an empty database (or a
    copy of ``db``), ``peers`` to catch up from."""
    dest.mkdir(parents=True)
    for name in ("genesis.json", "validator.key"):
        shutil.copy(src / name, dest / name)
    if db is None:
        Store.create(dest / "ledger.db", json.loads((src / "genesis.json").read_text())).close()
    else:
        shutil.copy(db, dest / "ledger.db")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(node_name=dest.name, peers=peers)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def wait_height(url: str, height: int, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    with httpx.Client(base_url=url) as http:
        while time.monotonic() < deadline:
            status = http.get("/v1/status").json()
            if status["height"] >= height:
                return status
            time.sleep(0.05)
    raise AssertionError(f"{url} at height {status.get('height')} after {timeout} s, expected {height}")


def checkpoint(url: str, height: int) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/checkpoint/{height}").json()  # type: ignore[no-any-return]


def audit_clean(db: Path) -> Any:
    report = audit(DbSource(db))
    assert report.ok, [str(f) for f in report.findings]
    return report


def snapshot(db: Path, dest: Path) -> Path:
    """A consistent copy of a database a running node is writing (SQLite backup API)."""
    src, out = sqlite3.connect(db), sqlite3.connect(dest)
    with out:
        src.backup(out)
    src.close()
    out.close()
    return dest


def test_bulk_route_serves_ranges(node_home: Path, start_node: Any) -> None:
    node = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    status = fill(node.url, key, batches=4, size=30, tag="r")
    top = status["height"]
    assert top >= 4
    with httpx.Client(base_url=node.url) as http:
        doc = http.get("/v1/blocks", params={"from": 2, "limit": 2}).json()
        assert doc["height"] == top
        # Each item is exactly the single-block answer (PROTOCOL.md 8).
        assert doc["blocks"] == [http.get(f"/v1/blocks/{h}").json() for h in (2, 3)]
        # The record cap stops at a block boundary but always gives one block.
        capped = http.get("/v1/blocks", params={"from": 1, "limit": 100, "records": 1}).json()["blocks"]
        assert [b["header"]["height"] for b in capped] == [1]
        everything = http.get("/v1/blocks", params={"from": 1, "limit": 1000}).json()["blocks"]
        assert [b["header"]["height"] for b in everything] == list(range(1, top + 1))
        assert sum(len(b["records"]) for b in everything) == status["log_size"]
        assert http.get("/v1/blocks", params={"from": top + 1}).json() == {"height": top, "blocks": []}
        for bad in ({"from": 0}, {"from": "x"}, {}, {"from": 1, "limit": 0}, {"from": 1, "limit": 1001},
                    {"from": 1, "records": 20_001}):
            r = http.get("/v1/blocks", params=bad)
            assert r.status_code == 400 and r.json()["code"] == "bad_request", (bad, r.text)


def test_fresh_node_catches_up_and_follows(node_home: Path, start_node: Any, tmp_path: Path) -> None:
    source = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    status = fill(source.url, key, batches=6, size=250, tag="a")
    follower = start_node(follower_home(node_home, tmp_path / "follower", [source.url]))
    got = wait_height(follower.url, status["height"])
    assert got["log_size"] == status["log_size"]
    assert checkpoint(follower.url, status["height"]) == checkpoint(source.url, status["height"])
    # The source moves on; the follower, polling, catches up again.
    status = fill(source.url, key, batches=2, size=40, tag="b")
    wait_height(follower.url, status["height"])
    assert checkpoint(follower.url, status["height"]) == checkpoint(source.url, status["height"])
    # Fetched records are served like records committed here, with inclusion proofs.
    genesis = parse_genesis(httpx.get(source.url + "/v1/genesis").json())
    with httpx.Client(base_url=follower.url) as http:
        envs = http.get("/v1/blocks/2").json()["records"]
        assert envs == httpx.get(source.url + "/v1/blocks/2").json()["records"]
        rid = record_id(envs[0])
        assert http.get(f"/v1/records/{rid}").json()["status"] == "committed"
        verify_proof_doc(http.get(f"/v1/records/{rid}/proof").json(), genesis, rid)
    assert follower.terminate() == 0
    assert f"blocks from {source.url}" in follower.log()
    report = audit_clean(tmp_path / "follower" / "ledger.db")
    assert report.records == status["log_size"]


def _tamper_record(db: Path, height: int) -> None:
    """Change one record of block ``height`` (its body, keeping the signature)."""
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER records_no_update")
    idx, env = conn.execute("SELECT idx, envelope FROM records WHERE height = ? ORDER BY idx LIMIT 1", (height,)).fetchone()
    doc = json.loads(env)
    doc["body"]["items"] += 1
    conn.execute("UPDATE records SET envelope = ? WHERE idx = ?", (jcs(doc).decode(), idx))
    conn.commit()
    conn.close()


def _tamper_root(db: Path, height: int) -> None:
    """Change block ``height``'s log_root, and its stored hash to match the new header."""
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER blocks_no_update")
    (header,) = conn.execute("SELECT header FROM blocks WHERE height = ?", (height,)).fetchone()
    doc = json.loads(header)
    doc["log_root"] = "00" * 32
    conn.execute("UPDATE blocks SET header = ?, hash = ? WHERE height = ?",
                 (jcs(doc).decode(), tagged_hash(BLOCK_TAG, doc), height))
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("tamper", "what"), [(_tamper_record, "signature does not verify"),
                                              (_tamper_root, "certificate")])
def test_forging_peer_is_detected_and_avoided(
    node_home: Path, start_node: Any, tmp_path: Path, tamper: Any, what: str
) -> None:
    honest = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    status = fill(honest.url, key, batches=5, size=60, tag="f")
    assert status["height"] >= 5
    # A node over a copy of the honest chain in which block 3 was altered.
    forged_home = follower_home(node_home, tmp_path / "forger", [], db=snapshot(node_home / "ledger.db", tmp_path / "copy.db"))
    tamper(forged_home / "ledger.db", 3)
    forger = start_node(forged_home)
    assert httpx.get(forger.url + "/v1/status").json()["height"] == status["height"]
    # The forger is asked first (it is listed first and claims as many blocks).
    follower = start_node(follower_home(node_home, tmp_path / "follower", [forger.url, honest.url]))
    wait_height(follower.url, status["height"])
    assert checkpoint(follower.url, status["height"]) == checkpoint(honest.url, status["height"])
    assert follower.terminate() == 0
    warnings = [line for line in follower.log().splitlines() if "WARNING" in line and forger.url in line]
    assert warnings, follower.log()
    assert "height 3" in warnings[0] and what in warnings[0] and "avoiding it" in warnings[0]
    report = audit_clean(tmp_path / "follower" / "ledger.db")
    assert report.records == status["log_size"]


def test_blocks_range_matches_single_block_bodies(node_home: Path, start_node: Any) -> None:
    node = start_node(node_home)
    fill(node.url, SigningKey.load(node_home / "alice.key"), batches=3, size=5, tag="s")
    with Store(node_home / "ledger.db") as store:
        doc = orjson.loads(blocks_range(store, 1, limit=2))
    assert doc["blocks"] == [httpx.get(f"{node.url}/v1/blocks/{h}").json() for h in (1, 2)]
