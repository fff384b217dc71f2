"""Consensus between real validators: the driver (node.replica), the peer routes
(node.api_peer), the persisted signing state and ``Node.apply_final``.

In-process tests use a four-validator consortium whose node runs validator 0 (its peers
are addresses nobody listens on); the end-to-end test runs four ``provledger node start``
processes on 127.0.0.1 made by ``provledger init --validators 4``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from conftest import make_home
from factory import Consortium
from procs import Network, bound_socket, free_port, holds_async, network, until, until_async

from ledger.blocks import Certificate
from ledger.chain import Ledger
from ledger.errors import LedgerError
from ledger.keys import SigningKey
from ledger.records import make_record
from ledger.store import Store
from node.consensus import PersistSigned, sign_proposal, sign_vote

# --- in-process: a node of a four-validator chain ---------------------------------------------


@pytest.fixture
def four() -> Consortium:
    return Consortium(validators=4, url=f"http://127.0.0.1:{free_port()}")


@pytest.fixture
def peer_client(tmp_path: Path, four: Consortium) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from node.app import create_app

    home = make_home(tmp_path / "home", four, extra={"gossip_ms": 10_000})
    with TestClient(create_app(home)) as c:
        yield c


def _vote(c: Consortium, who: int, *, height: int = 1, round: int = 0, step: str = "prevote",
          block: str = "", chain: str | None = None) -> dict[str, Any]:
    return sign_vote(c.validators[who], chain or c.chain_id, height, round, step, block).to_dict()


def test_peer_message_accepts_a_validators_vote(peer_client: Any, four: Consortium) -> None:
    r = peer_client.post("/v1/peer/message", content=orjson.dumps(_vote(four, 1)))
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "refused": []}


@pytest.mark.parametrize(
    ("case", "code"),
    [("unknown_signer", "not_validator"), ("bad_signature", "bad_signature"), ("other_chain", "wrong_chain"),
     ("malformed", "bad_message"), ("wrong_proposer", "wrong_proposer")],
)
def test_peer_message_refusals(peer_client: Any, four: Consortium, case: str, code: str) -> None:
    if case == "unknown_signer":
        msg = sign_vote(SigningKey.from_seed(b"\x07" * 32), four.chain_id, 1, 0, "prevote", "").to_dict()
    elif case == "bad_signature":
        msg = _vote(four, 2)
        msg["sig"] = _vote(four, 2, round=5)["sig"]  # a real signature, over another message
    elif case == "other_chain":
        msg = _vote(four, 1, chain="ab" * 32)
    elif case == "malformed":
        msg = {"type": "vote", "height": 1}
    else:  # proposer(h, r) = validators[(h + r) % n]: validator 2 does not propose height 1 round 0
        block = {"header": {}, "records": []}
        msg = sign_proposal(four.validators[2], four.chain_id, 1, 0, block, "cd" * 32).to_dict()
    r = peer_client.post("/v1/peer/message", content=orjson.dumps(msg))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == code and body["message"]


def test_peer_message_batch_reports_each_refusal(peer_client: Any, four: Consortium) -> None:
    good = _vote(four, 1, step="precommit")
    bad = _vote(four, 3, chain="ab" * 32)
    r = peer_client.post("/v1/peer/message", content=orjson.dumps({"messages": [good, bad]}))
    assert r.status_code == 202
    out = r.json()
    assert out["accepted"] == 1
    assert [(x["index"], x["code"]) for x in out["refused"]] == [(1, "wrong_chain")]
    r = peer_client.post("/v1/peer/message", content=b"not json")
    assert r.status_code == 400 and r.json()["code"] == "bad_json"


def test_equivocation_is_stored_and_listed(peer_client: Any, four: Consortium) -> None:
    """Two prevotes of one validator for one height and round, for different values."""
    assert peer_client.get("/v1/evidence").json() == {"evidence": []}
    a = _vote(four, 3, block="")
    b = _vote(four, 3, block="ee" * 32)
    for m in (a, b):
        assert peer_client.post("/v1/peer/message", content=orjson.dumps(m)).status_code == 202
    ev = until("the evidence listed", lambda: peer_client.get("/v1/evidence").json()["evidence"])
    assert len(ev) == 1
    assert ev[0]["validator"] == four.validators[3].public
    assert {ev[0]["a"]["block"], ev[0]["b"]["block"]} == {"", "ee" * 32}
    assert {ev[0]["a"]["sig"], ev[0]["b"]["sig"]} == {a["sig"], b["sig"]}


def test_peer_records_are_admitted(peer_client: Any, four: Consortium) -> None:
    env = four.envelope(four.alice, "dataset.contribute", Consortium.dataset_body("forwarded"))
    forged = dict(env, nonce="other")  # signature no longer matches
    r = peer_client.post("/v1/peer/records", content=orjson.dumps({"records": [env, forged]}))
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["status"] == "pending"
    assert res[1]["code"] == "bad_signature"
    assert peer_client.get(f"/v1/records/{res[0]['id']}").json()["status"] == "pending"
    st = peer_client.get("/v1/status").json()
    assert st["validators"] == 4 and st["consensus"]["height"] == 1
    assert [p["name"] for p in st["peers"]] == ["node-1", "node-2", "node-3"]


def test_single_validator_node_takes_no_peer_messages(client: Any, consortium: Consortium) -> None:
    r = client.post("/v1/peer/message", content=orjson.dumps(_vote(consortium, 0)))
    assert r.status_code == 400 and r.json()["code"] == "no_consensus"
    assert client.get("/v1/evidence").json() == {"evidence": []}


def test_single_validator_node_commits_records_a_full_node_forwards(client: Any, consortium: Consortium) -> None:
    """A full node following a one-validator chain forwards what it is given to that
    validator: its block loop commits it (it is not dropped as ``no_consensus``)."""
    env = consortium.envelope(consortium.alice, "dataset.contribute", Consortium.dataset_body("via-a-full-node"))
    r = client.post("/v1/peer/records", content=orjson.dumps({"records": [env]}))
    assert r.status_code == 200, r.text
    rid = r.json()["results"][0]["id"]
    until("the forwarded record is committed",
          lambda: client.get(f"/v1/records/{rid}").json()["status"] == "committed")


# --- the peer connection ---------------------------------------------------------------------


def test_peer_connection_keeps_alive_and_reconnects() -> None:
    """Requests share one connection; when the peer closes it (its keep-alive ran out) the
    next request goes on a new one; a refused port or an answer that is not HTTP is a
    PeerError."""
    from node.peers import PeerConnection, PeerError

    async def run() -> None:
        connections = 0
        answers = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections, answers
            connections += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(n)
                    answers += 1
                    out = b'{"echo":' + body + b"}"
                    writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out))
                    await writer.drain()
                    if answers == 2:  # the peer ends the kept-alive connection
                        writer.close()
                        return
            except asyncio.IncompleteReadError:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = PeerConnection(f"http://127.0.0.1:{port}")
        for i in range(4):
            status, body = await conn.post("/v1/peer/message", b"%d" % i)
            assert (status, orjson.loads(body)) == (202, {"echo": i})
        assert connections == 2 and answers == 4
        conn.close()
        server.close()
        await server.wait_closed()

        with bound_socket() as held, pytest.raises(PeerError):  # bound, not listening: refused
            await PeerConnection(f"http://127.0.0.1:{held.getsockname()[1]}").post("/v1/peer/message", b"{}")

        async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"SSH-2.0-nope\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(junk, "127.0.0.1", 0)
        with pytest.raises(PeerError):
            await PeerConnection(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}").post("/x", b"{}")
        server.close()
        await server.wait_closed()

    asyncio.run(run())


# --- apply_final and the persisted signing state ------------------------------------------------


def _certificate(c: Consortium, header_hash: str, height: int, signers: list[int]) -> dict[str, Any]:
    votes = [sign_vote(c.validators[i], c.chain_id, height, 0, "precommit", header_hash) for i in signers]
    return {"height": height, "round": 0, "block": header_hash,
            "votes": [{"validator": v.validator, "sig": v.sig} for v in votes]}


def test_apply_final_checks_and_stores_a_foreign_block(tmp_path: Path, four: Consortium) -> None:
    """A block built elsewhere, in wire form, with a 3-of-4 certificate is stored with its
    follow-up; a 2-of-4 certificate or a tampered record is refused and nothing is stored."""
    from node.daemon import Node

    other = Ledger(Store.create(tmp_path / "other.db", four.doc))
    recs = [four.record(four.alice, "dataset.contribute", Consortium.dataset_body(f"d{i}")) for i in range(3)]
    block, rejected = other.build_block(recs, proposer=four.validators[1].public)
    assert not rejected
    wire = {"header": block.header.to_dict(), "records": [r.envelope for r in recs]}
    home = make_home(tmp_path / "home", four)

    async def run() -> None:
        node = Node.open(home)
        try:
            with pytest.raises(LedgerError) as e:  # the node is not started: no replica, no block loop
                await node.apply_final(wire, _certificate(four, block.hash, 1, [1, 2]))
            assert "2 distinct validator votes" in str(e.value)
            tampered = {"header": wire["header"], "records": [*wire["records"][:2], dict(wire["records"][2], nonce="x")]}
            with pytest.raises(LedgerError) as e:
                await node.apply_final(tampered, _certificate(four, block.hash, 1, [0, 1, 2]))
            assert e.value.code == "bad_signature"
            assert node.store.height() == 0
            stored = await node.apply_final(wire, _certificate(four, block.hash, 1, [0, 2, 3]))
            assert stored is not None and stored.hash == block.hash
            assert node.store.height() == 1 and node.store.log_size() == 3
            assert node.status(recs[1].id) == "committed"
            # The same block again is a no-op.
            assert await node.apply_final(wire, _certificate(four, block.hash, 1, [0, 2, 3])) is None
        finally:
            await node.stop()

    asyncio.run(run())


def test_apply_final_keeps_the_mempool_consistent(tmp_path: Path, four: Consortium) -> None:
    """A block of another proposer holds one record this node has (A), one it never saw (F),
    and F claims the dataset version a waiting record (C) also claims: after the block, A
    and C have left the mempool (C refused, its waiter told why), and new submissions are
    judged against F."""
    from node.daemon import Node

    a = four.record(four.alice, "dataset.contribute", Consortium.dataset_body("a"))
    c = four.record(four.bob, "dataset.contribute", Consortium.dataset_body("dup"))
    f = four.record(four.alice, "dataset.contribute", Consortium.dataset_body("dup"))
    other = Ledger(Store.create(tmp_path / "other.db", four.doc))
    block, _ = other.build_block([f, a], proposer=four.validators[1].public)
    wire = {"header": block.header.to_dict(), "records": [f.envelope, a.envelope]}

    async def run() -> None:
        node = Node.open(tmp_path / "home")  # admission without the consensus task running
        try:
            assert node.admit(a) == "pending" and node.admit(c) == "pending"
            waiting = asyncio.ensure_future(node.wait_committed([a.id, c.id], 5))
            await asyncio.sleep(0)
            await node.apply_final(wire, _certificate(four, block.hash, 1, [1, 2, 3]))
            done = await waiting
            assert done[a.id] == (1, 1)
            assert getattr(done[c.id], "code", None) == "duplicate_dataset"
            assert len(node.mempool) == 0
            again = four.record(four.bob, "dataset.contribute", Consortium.dataset_body("dup"))
            with pytest.raises(LedgerError) as e:
                node.admit(again)
            assert e.value.code == "duplicate_dataset"
            fresh = four.record(four.bob, "dataset.contribute", Consortium.dataset_body("fresh"))
            assert node.admit(fresh) == "pending"
            # A second block with only a record this node never saw: the waiting record
            # stays, and the pending state knows the new one.
            other.commit(block, Certificate.from_dict(_certificate(four, block.hash, 1, [1, 2, 3])))
            g = four.record(four.alice, "dataset.contribute", Consortium.dataset_body("g"))
            block2, _ = other.build_block([g], proposer=four.validators[2].public)
            await node.apply_final({"header": block2.header.to_dict(), "records": [g.envelope]},
                                   _certificate(four, block2.hash, 2, [0, 2, 3]))
            assert node.status(fresh.id) == "pending" and node.status(g.id) == "committed"
            with pytest.raises(LedgerError) as e:
                node.admit(four.record(four.bob, "dataset.contribute", Consortium.dataset_body("g")))
            assert e.value.code == "duplicate_dataset"
            built, rejected = node.ledger.build_block(node.mempool.take(10), proposer=four.validators[0].public)
            assert [r.id for r in built.records] == [fresh.id] and not rejected
        finally:
            await node.stop()

    make_home(tmp_path / "home", four)
    asyncio.run(run())


def test_signed_state_round_trip(tmp_path: Path, four: Consortium) -> None:
    """What the replica persists before sending comes back, blocks included, as the core's
    ``PersistSigned``: a restarted validator keeps its lock."""
    from node.replica import Replica

    store = Store.create(tmp_path / "s.db", four.doc)
    assert store.last_signed_state() is None
    block = {"header": {"height": 1}, "records": [], "ids": []}
    bh = "ab" * 32
    prop = sign_proposal(four.validators[1], four.chain_id, 1, 0, block, bh)
    pv = [sign_vote(four.validators[i], four.chain_id, 1, 0, "prevote", bh) for i in range(3)]
    pc = sign_vote(four.validators[0], four.chain_id, 1, 0, "precommit", bh)
    ps = PersistSigned(1, 0, "precommit", bh, locked_round=0, locked_hash=bh, locked_block=block,
                       lock_proof=tuple(pv), valid_round=0, valid_block=block, valid_proof=tuple(pv),
                       round_proof=(prop,), signed=(pv[0], pc))

    def replica(on: Store) -> Any:
        from node.consensus import Timeouts

        class NoChain:  # persisting and restoring touch only the store
            pass

        return Replica(chain_id=four.chain_id, validators=[v.public for v in four.validators],
                       key=four.validators[0], chain=NoChain(), store=on,  # type: ignore[arg-type]
                       transport=None, timeouts=Timeouts(), gossip_s=1.0)  # type: ignore[arg-type]

    rep = replica(store)
    doc, blocks = rep._persist_doc(ps)
    assert "header" not in orjson.dumps(doc).decode()  # blocks are kept apart
    assert list(blocks) == [bh]
    store.save_signed_state(doc, blocks)
    assert store.last_signed() == (1, 0, "precommit", bh)
    store.close()
    store = Store(tmp_path / "s.db")
    rep = replica(store)
    back = PersistSigned.from_dict(rep._restore())
    assert back == ps  # the signing guard
    assert back.locked_block == block and back.valid_block == block
    assert back.lock_proof == ps.lock_proof and back.signed == ps.signed and back.round_proof == ps.round_proof
    store.close()


# --- four real node processes ----------------------------------------------------------------------


def _datasets(key: SigningKey, chain: str, tag: str, n: int) -> list[dict[str, Any]]:
    return [
        make_record(key, chain, "dataset.contribute", {
            "dataset": f"{tag}-{i}", "version": "1", "content_hash": hashlib.sha256(f"{tag}{i}".encode()).hexdigest(),
            "size_bytes": 1, "items": 1, "license": "MIT", "modality": "text", "derived_from": [],
            "privacy_budget": None})
        for i in range(n)
    ]


def _wait_all(urls: list[str], log_size: int) -> list[dict[str, Any]]:
    def all_there() -> list[dict[str, Any]] | None:
        st = [httpx.get(u + "/v1/status", timeout=30).json() for u in urls]
        return st if all(s["log_size"] >= log_size and s["mempool"] == 0 for s in st) else None

    return until(f"all of {urls} at log size {log_size}", all_there)


def _audit(db: Path) -> None:
    from ledger.cli import cli

    res = CliRunner().invoke(cli, ["audit", str(db)])
    assert res.exit_code == 0, res.output


@pytest.fixture
def network4(tmp_path: Path) -> Iterator[Network]:
    """Four validators of one genesis (``provledger init --validators 4``) running as real
    processes; stopped when the test ends."""
    with network(tmp_path) as net:
        yield net


@pytest.mark.e2e
def test_four_validators_commit_agree_and_survive_one_down(network4: Network) -> None:
    homes, nodes, urls = network4.homes, network4.nodes, network4.urls
    alice = SigningKey.load(network4.key_path)
    chain = httpx.get(urls[0] + "/v1/status").json()["chain_id"]

    # 1. A batch sent to node-2 and single records sent to node-1 and node-4 are committed
    #    on all four, in the same blocks.
    batch = _datasets(alice, chain, "batch", 300)
    r = httpx.post(urls[1] + "/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": batch}), timeout=90)
    assert r.status_code == 200
    assert all(x.get("status") == "committed" for x in r.json()["results"]), r.json()["results"][:3]
    for u, env in zip((urls[0], urls[3]), _datasets(alice, chain, "single", 2), strict=True):
        r = httpx.post(u + "/v1/records?wait=true&timeout=60", content=orjson.dumps(env), timeout=90)
        assert r.status_code == 200 and r.json()["status"] == "committed", r.text
    st = _wait_all(urls, 302)
    heads = {httpx.get(u + f"/v1/checkpoint/{st[0]['height']}").json()["hash"] for u in urls}
    assert len(heads) == 1
    assert all(s["consensus"]["height"] >= s["height"] + 1 for s in st)
    assert all(p["up"] for s in st for p in s["peers"])
    assert all(httpx.get(u + "/v1/evidence").json() == {"evidence": []} for u in urls)

    # 2. node-4 is killed: the other three (2f + 1 = 3) keep finalizing.
    nodes[3].kill()
    live = urls[:3]
    more = _datasets(alice, chain, "three", 100)
    r = httpx.post(live[2] + "/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": more}), timeout=90)
    assert all(x.get("status") == "committed" for x in r.json()["results"]), r.json()["results"][:3]
    st = _wait_all(live, 402)
    h = st[0]["height"]
    assert len({httpx.get(u + f"/v1/checkpoint/{h}").json()["hash"] for u in live}) == 1

    # 3. It restarts from its disk (persisted signing state) and reaches the same head.
    nodes[3] = network4.restart(3)
    assert "consensus resumes at height" in nodes[3].log()  # from the signing state it persisted
    _wait_all(urls, 402)
    assert len({httpx.get(u + f"/v1/checkpoint/{h}").json()["hash"] for u in urls}) == 1

    # 4. Every database audits clean.
    for n in nodes:
        n.terminate()
    for home in homes:
        _audit(home / "ledger.db")


# --- the production driver under simulated faults ---------------------------------------------


class LossyNet:
    """The transport (node.replica.Transport) of several replicas in one process: every
    message goes through the wire form (JSON bytes) with a seeded delay, and may be dropped,
    duplicated or blocked by a partition."""

    def __init__(self, seed: int, drop: float = 0.1, dup: float = 0.1, max_delay: float = 0.03) -> None:
        import random

        self.rng = random.Random(seed)
        self.drop, self.dup, self.max_delay = drop, dup, max_delay
        self.replicas: dict[str, Any] = {}  # validator key -> its running Replica (absent: down)
        self.blocked: set[tuple[str, str]] = set()
        self.sent = self.dropped = 0

    def port(self, me: str) -> Any:
        net = self

        class Port:
            async def start(self) -> None: ...

            async def stop(self) -> None: ...

            def status(self) -> list[dict[str, Any]]:
                return []

            def broadcast(self, message: Any) -> None:
                net.send(me, message)

            def gossip(self, messages: list[Any]) -> int:
                for m in messages:
                    net.send(me, m)
                return len(net.replicas) - 1

            def forward_record(self, canonical: bytes) -> None: ...

        return Port()

    def send(self, src: str, message: Any) -> None:
        body = orjson.dumps(message.to_dict())
        loop = asyncio.get_running_loop()
        for dst in list(self.replicas):
            if dst == src or (src, dst) in self.blocked:
                continue
            self.sent += 1
            if self.rng.random() < self.drop:
                self.dropped += 1
                continue
            for _ in range(2 if self.rng.random() < self.dup else 1):
                loop.call_later(self.rng.uniform(0, self.max_delay), self._deliver, dst, body)

    def _deliver(self, dst: str, body: bytes) -> None:
        r = self.replicas.get(dst)
        if r is not None:
            with contextlib.suppress(LedgerError):  # refused as over HTTP (a 4xx for the peer)
                r.accept(orjson.loads(body))


class InProcessCatchup:
    """``node.catchup`` for LossyNet: a node that is behind takes each final block, with its
    certificate, from a peer's store and hands it to ``Node.apply_final``, which checks it
    as catch-up over HTTP does (certificate, records, signatures, rules, Merkle root)."""

    def __init__(self, me: Any, nodes: list[Any]) -> None:
        self.me, self.nodes = me, nodes
        self.blocks = 0

    async def sync(self, target: int) -> None:
        for peer in self.nodes:
            while peer is not self.me and self.me.store.height() < min(target, peer.store.height()):
                h = self.me.store.height() + 1
                row = peer.store.block(h)
                assert row is not None
                wire = {"header": row.header.to_dict(), "records": peer.store.block_records(h)}
                await self.me.apply_final(wire, row.certificate.to_dict(), how="caught up")
                self.blocks += 1


def test_the_production_driver_agrees_under_a_lossy_network_a_partition_and_a_restart(tmp_path: Path) -> None:
    """Four real nodes (stores, mempools, block checks, persisted signing state) run
    node.replica.Replica, the driver of `provledger node start`, over LossyNet: seeded
    delays, 10% drops, duplicates, a 2/2 partition while records wait (no side has a
    quorum), and one validator stopped and rebuilt from its store mid-run. Every record
    commits and all four hold the same chain."""
    from node.daemon import Node

    net4 = Network(tmp_path).init()
    homes = net4.homes
    alice = SigningKey.load(net4.key_path)

    async def run() -> None:
        net = LossyNet(seed=7)
        nodes = [Node.open(h) for h in homes]
        keys = [n.key.public for n in nodes]

        def attach(n: Any) -> None:
            n.config.override(consensus_timeouts={"propose": 300, "prevote": 100, "precommit": 100,
                                                  "delta": 50, "commit": 20}, gossip_ms=100)
            n.replica = n.make_replica(transport=net.port(n.key.public))
            n.catchup = InProcessCatchup(n, nodes)
            net.replicas[n.key.public] = n.replica

        for n in nodes:
            attach(n)
            await n.start()

        async def submit_and_wait(records: list[dict[str, Any]], timeout: float = 120.0) -> None:
            for rec in records:
                for n in nodes:
                    n.submit(rec)
            want = nodes[0].store.log_size() + len(records)
            await until_async(f"all at log size {want}", lambda: all(n.store.log_size() >= want for n in nodes),
                              timeout)

        try:
            chain = nodes[0].chain_id
            await submit_and_wait(_datasets(alice, chain, "a", 20))
            # A 2/2 partition while records wait: no quorum on either side, nothing commits.
            halves = ({keys[0], keys[1]}, {keys[2], keys[3]})
            net.blocked = {(a, b) for a in keys for b in keys if (a in halves[0]) != (b in halves[0])}
            heights = [n.store.height() for n in nodes]
            for rec in _datasets(alice, chain, "b", 10):
                for n in nodes:
                    n.submit(rec)
            await holds_async("no block during the partition", lambda: [n.store.height() for n in nodes] == heights,
                              1.0)
            assert [n.store.height() for n in nodes] == heights
            net.blocked = set()
            want = nodes[0].store.log_size() + 10
            await until_async(f"all at log size {want}", lambda: all(n.store.log_size() >= want for n in nodes))
            # Validator 3 stops; its driver is rebuilt from what it persisted and rejoins.
            down = nodes[3]
            del net.replicas[down.key.public]
            await down.replica.stop()
            attach(down)
            await down.replica.start()
            await submit_and_wait(_datasets(alice, chain, "c", 20))
            assert len({n.store.height() for n in nodes}) == 1
            h = nodes[0].store.height()
            assert h >= 3
            for height in range(1, h + 1):
                assert len({n.store.block(height).hash for n in nodes}) == 1, height  # type: ignore[union-attr]
            assert net.dropped > 0
        finally:
            for n in nodes:
                net.replicas.pop(n.key.public, None)
                await n.stop()

    asyncio.run(run())
