"""Catch-up with real node processes: a node that is behind fetches final blocks from its
peers (``GET /v1/blocks?from=H``), verifies each before storing it, and avoids a peer that
serves a forged block while it completes from an honest one.

The chain here has one validator; a "follower" home holds the same genesis and validator
key with an empty database and names the other nodes as ``peers`` in its config.json. It
is sent no records, so it only ever stores what catch-up brings it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import until

from ledger.audit import DbSource, audit
from ledger.canonical import BLOCK_TAG, jcs, tagged_hash
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.proofs import verify_proof_doc
from ledger.records import make_record, record_id
from ledger.store import Store
from node.api_sync import blocks_range

H = "cd" * 32


def dataset(key: SigningKey, chain: str, name: str) -> dict[str, Any]:
    body = {"dataset": name, "version": "1", "content_hash": H, "size_bytes": 10, "items": 1, "license": "MIT",
            "modality": "text", "derived_from": [], "privacy_budget": None}
    return make_record(key, chain, "dataset.contribute", body, nonce=f"n-{name}")


def fill(url: str, key: SigningKey, *, batches: int, size: int, tag: str) -> dict[str, Any]:
    """Submit ``batches`` batches (one or more blocks each), waiting for each; the status after."""
    with httpx.Client(base_url=url, timeout=90) as http:
        chain = http.get("/v1/status").json()["chain_id"]
        for b in range(batches):
            recs = [dataset(key, chain, f"{tag}-{b}-{i}") for i in range(size)]
            r = http.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": recs}))
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


def wait_height(url: str, height: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=90) as http:

        def there() -> dict[str, Any] | None:
            status: dict[str, Any] = http.get("/v1/status").json()
            return status if status["height"] >= height else None

        return until(f"{url} at height {height}", there)


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


@pytest.mark.e2e
def test_bulk_route_serves_ranges(node_home: Path, start_node: Any) -> None:
    node = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    status = fill(node.url, key, batches=4, size=30, tag="r")
    top = status["height"]
    assert top >= 4
    with httpx.Client(base_url=node.url, timeout=90) as http:
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


@pytest.mark.e2e
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
    with httpx.Client(base_url=follower.url, timeout=90) as http:
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


@pytest.mark.e2e
@pytest.mark.parametrize(("tamper", "what"), [(_tamper_record, "signature does not verify"),
                                              (_tamper_root, "certificate")])
def test_forging_peer_is_detected_and_avoided(
    node_home: Path, start_node: Any, tmp_path: Path, tamper: Any, what: str
) -> None:
    honest = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    status = fill(honest.url, key, batches=5, size=60, tag="f")
    assert status["height"] >= 5
    # A node over a copy of the honest chain in which block 3 is altered once it runs (a
    # node refuses to start on an altered file: node.startup).
    forged_home = follower_home(node_home, tmp_path / "forger", [], db=snapshot(node_home / "ledger.db", tmp_path / "copy.db"))
    forger = start_node(forged_home)
    tamper(forged_home / "ledger.db", 3)
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


@pytest.mark.e2e
def test_blocks_range_matches_single_block_bodies(node_home: Path, start_node: Any) -> None:
    node = start_node(node_home)
    fill(node.url, SigningKey.load(node_home / "alice.key"), batches=3, size=5, tag="s")
    with Store(node_home / "ledger.db") as store:
        doc = orjson.loads(blocks_range(store, 1, limit=2))
    assert doc["blocks"] == [httpx.get(f"{node.url}/v1/blocks/{h}").json() for h in (1, 2)]


# --- in process: CatchUp against peers made of functions (httpx.MockTransport) ------------------
class Peer:
    """Serves a chain's ``/v1/status`` and ``/v1/blocks`` from a Store, optionally lying."""

    def __init__(self, store: Store, *, claim: int | None = None, edit: Any = None, down: bool = False) -> None:
        self.store, self.claim, self.edit, self.down = store, claim, edit, down
        self.asked: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        height = self.store.height() if self.claim is None else self.claim
        if request.url.path == "/v1/status":
            return httpx.Response(200, json={"chain_id": self.store.genesis.chain_id, "height": height})
        start = int(request.url.params["from"])
        self.asked.append(start)
        doc = orjson.loads(blocks_range(self.store, start, int(request.url.params["limit"]),
                                        int(request.url.params["records"])))
        if self.claim is not None:
            doc["blocks"] = []  # claims blocks it never serves
        if self.edit is not None:
            self.edit(doc)
        return httpx.Response(200, content=orjson.dumps(doc))


def _source_chain(tmp_path: Path, blocks: int = 6, per_block: int = 5) -> tuple[Any, Store]:
    from factory import Consortium

    c = Consortium()
    led = c.ledger(tmp_path / "source.db")
    n = 0
    for _ in range(blocks):
        recs = [c.record(c.alice, "dataset.contribute", c.dataset_body(f"d{n + i}")) for i in range(per_block)]
        n += per_block
        led.commit_single(c.validators[0], recs)
    return c, led.store


def _catchup(c: Any, tmp_path: Path, peers: dict[str, Peer], **kw: Any) -> Any:
    from ledger.chain import Ledger
    from node.catchup import CatchUp

    led = Ledger(Store.create(tmp_path / "fresh.db", c.doc))

    async def commit(block: Any, cert: Any) -> None:
        led.commit(block, cert)

    def route(request: httpx.Request) -> httpx.Response:
        return peers[f"{request.url.scheme}://{request.url.host}"](request)

    return CatchUp(led, commit, list(peers), transport=httpx.MockTransport(route), range_blocks=2, **kw)


@pytest.mark.parametrize("edit", ["record", "header", "certificate", "count", "order"])
def test_catchup_avoids_a_forger_and_completes_from_an_honest_peer(tmp_path: Path, edit: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    c, store = _source_chain(tmp_path)

    def forge(doc: dict[str, Any]) -> None:
        for b in doc["blocks"]:
            if b["header"]["height"] != 3:
                continue
            if edit == "record":
                b["records"][1]["body"]["items"] += 1
            elif edit == "header":  # a consistent hash, but no certificate for it
                b["header"]["log_root"] = "00" * 32
                b["hash"] = tagged_hash(BLOCK_TAG, b["header"])
            elif edit == "certificate":
                b["certificate"]["votes"] = []
            elif edit == "count":
                b["records"].pop()
        if edit == "order" and len(doc["blocks"]) > 1 and doc["blocks"][0]["header"]["height"] == 3:
            doc["blocks"][0]["records"].reverse()

    forger, honest = Peer(store, edit=forge), Peer(store)
    cu = _catchup(c, tmp_path, {"http://forger": forger, "http://honest": honest})

    async def go() -> int:
        try:
            return await cu.sync()  # type: ignore[no-any-return]
        finally:
            await cu.aclose()

    with caplog.at_level("WARNING", logger="provledger.sync"):
        height = asyncio.run(go())
    assert height == store.height() == 6
    assert cu.ledger.store.head().hash == store.head().hash
    assert [(p, h) for p, h, _ in cu.faults] == [("http://forger", 3)]
    assert "http://forger" in cu.avoided and "http://honest" not in cu.avoided
    assert honest.asked and honest.asked[0] == 3  # the honest peer was asked from the height reached
    assert any("http://forger" in r.message and "height 3" in r.message for r in caplog.records)
    report = audit(DbSource(tmp_path / "fresh.db"))
    assert report.ok and report.records == 30


def test_catchup_target_unreachable_and_lying_peers(tmp_path: Path) -> None:
    c, store = _source_chain(tmp_path)
    down, liar, honest = Peer(store, down=True), Peer(store, claim=50), Peer(store)
    cu = _catchup(c, tmp_path, {"http://down": down, "http://liar": liar, "http://honest": honest})

    async def go() -> tuple[dict[str, int], int, int]:
        try:
            heights = await cu.peer_heights()
            first = await cu.sync(target=4)  # stops at the target
            rest = await cu.sync()  # the liar claims 50 but serves nothing: avoided, honest gives 6
            return heights, first, rest
        finally:
            await cu.aclose()

    heights, first, rest = asyncio.run(go())
    assert heights == {"http://liar": 50, "http://honest": 6}
    assert first == 4 and rest == 6
    assert "http://liar" in cu.avoided and not cu.faults


def test_catchup_nothing_to_do(tmp_path: Path) -> None:
    c, store = _source_chain(tmp_path, blocks=1)
    cu = _catchup(c, tmp_path, {"http://down": Peer(store, down=True)})

    async def go() -> int:
        try:
            return await cu.sync()  # type: ignore[no-any-return]
        finally:
            await cu.aclose()

    assert asyncio.run(go()) == 0


def test_blocks_range_limits(tmp_path: Path) -> None:
    _, store = _source_chain(tmp_path, blocks=6, per_block=5)

    def heights(**kw: Any) -> list[int]:
        return [b["header"]["height"] for b in orjson.loads(blocks_range(store, **kw))["blocks"]]

    assert heights(start=2, limit=3) == [2, 3, 4]
    assert heights(start=1, limit=100, records=12) == [1, 2]  # a third block would pass 12 records
    assert heights(start=1, limit=100, records=1) == [1]  # but the first block always goes in
    assert heights(start=1, limit=100, max_bytes=1) == [1]  # the same for the byte cap
    assert heights(start=5, limit=100) == [5, 6]
    assert heights(start=7, limit=100) == []
    doc = orjson.loads(blocks_range(store, 1, limit=100))
    assert doc["height"] == 6 and sum(len(b["records"]) for b in doc["blocks"]) == 30
