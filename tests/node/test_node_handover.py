"""The node runs the block loop exactly while its key is the whole validator set certifying
the next height (PROTOCOL.md 9.1), in process with a real store, ledger and consensus
driver: the block loop that stores the block adopting a ``validator.add`` ends and the node
hands over to consensus, whose next certificate needs the new validator's precommit too; a
consensus node whose set shrinks to itself goes on deciding alone (n = 1); a node opened
after such changes chooses by the set in force, not by the genesis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from factory import Consortium, key
from procs import free_port, holds_async, until_async

from ledger.chain import Ledger
from ledger.errors import StorageError
from ledger.governance import make_pop
from ledger.keys import SigningKey
from ledger.store import Store
from node.config import NodeConfig
from node.consensus import Proposal, sign_vote
from node.daemon import Node

NEW = key("validator-joining")


def _home(path: Path, cons: Consortium) -> NodeConfig:
    path.mkdir()
    (path / "genesis.json").write_text(json.dumps(cons.doc))
    cfg = NodeConfig(home=path, port=free_port(), block_interval_ms=10)
    Store.create(cfg.db_path, cons.doc).close()
    cfg.save()
    return cfg


def _contribute(cons: Consortium, name: str) -> dict[str, Any]:
    return cons.envelope(cons.alice, "dataset.contribute", cons.dataset_body(name))


def _adopt(cons: Consortium, action: dict[str, Any]) -> dict[str, Any]:
    """The proposal of ``action`` by org-a's admin: with one organisation it adopts itself."""
    return cons.envelope(cons.admin_a, "network.propose", {"action": action, "expires": 1000, "reason": ""})


async def _final(node: Node, env: dict[str, Any]) -> int:
    """Submit ``env`` and wait until it is final; its height."""
    rid, _ = await node.submit_one(env)
    got = (await node.wait_committed([rid], 60))[rid]
    assert isinstance(got, tuple), got
    return got[0]


async def _cosign(node: Node, signer: SigningKey, height: int) -> None:
    """``signer``'s prevote and precommit for the proposal the node made at ``height``
    (round 0), delivered as a peer's messages."""
    rep = node.replica
    assert rep is not None

    def proposal() -> Proposal | None:
        core = rep.core
        return next((m for m in core.gossip_messages() if isinstance(m, Proposal) and m.height == height), None) \
            if core is not None else None

    p = await until_async(f"the node's proposal for height {height}", proposal)
    for step in ("prevote", "precommit"):
        rep.accept(sign_vote(signer, node.chain_id, height, 0, step, p.block_hash).to_dict())


def _two_validators(tmp_path: Path, kit: Any) -> tuple[Consortium, NodeConfig]:
    """A chain of two validators (one organisation), block 1 certified by both; the home of
    the first, which proposes height 2. The second's url: a port no one listens on."""
    cons = Consortium(validators=2, orgs=1, url=f"http://127.0.0.1:{free_port()}")
    cfg = _home(tmp_path / "a", cons)
    with Store(cfg.db_path) as store:
        kit.commit(Ledger(store), [cons.record(cons.alice, "dataset.contribute", cons.dataset_body("one"))],
                   cons.validators, time="2026-11-21T12:00:01Z")
    return cons, cfg


async def _vote_out(node: Node, cons: Consortium, other: SigningKey) -> None:
    """Block 2 removes ``other``, which co-signs it: the node alone certifies height 3."""
    rid, _ = await node.submit_one(_adopt(cons, {"op": "validator.remove", "key": other.public}))
    await _cosign(node, other, 2)
    assert (await node.wait_committed([rid], 60))[rid] == (2, 1)
    assert node.replica is not None and node.replica.validators_for(3) == [node.key.public]


def _signers(store: Store, height: int) -> set[str]:
    row = store.block(height)
    assert row is not None
    return {v for v, _ in row.certificate.votes}


def test_the_block_loop_hands_over_to_consensus_once_a_validator_is_added(tmp_path: Path) -> None:
    cons = Consortium(validators=1, orgs=1, url=f"http://127.0.0.1:{free_port()}")
    a = cons.validators[0]
    cfg = _home(tmp_path / "a", cons)
    newcomer = _home(tmp_path / "new", cons)
    joining = {"op": "validator.add", "key": NEW.public, "name": "node-new", "url": f"http://127.0.0.1:{free_port()}",
               "pop": make_pop(NEW, cons.chain_id)}

    async def scenario() -> None:
        node = Node(cfg, key=a)
        assert node.block_loop is not None and node.replica is None
        await node.start()
        try:
            assert await _final(node, _adopt(cons, joining)) == 1  # the set of height 2: a and NEW
            await until_async("the hand-over to consensus", lambda: node.replica is not None)
            rep = node.replica
            assert rep is not None and node.block_loop is None
            assert rep.validators_for(2) == [a.public, NEW.public]
            assert node.peers is not None and [p.key for p in node.peers.peers] == [NEW.public]
            # Block 2 needs NEW's precommit too: the node proposes it (it is the proposer of
            # height 2, round 0) and does not store it alone.
            rid, _ = await node.submit_one(_contribute(cons, "after-the-add"))
            await holds_async("no block 2 without the new validator", lambda: node.store.height() == 1, 1.0)
            assert rep.status()["height"] == 2 and rep.status()["validator"] is True
            await _cosign(node, NEW, 2)
            got = (await node.wait_committed([rid], 60))[rid]
            assert got == (2, 1)
            assert _signers(node.store, 1) == {a.public}
            assert _signers(node.store, 2) == {a.public, NEW.public}
        finally:
            await node.stop()

        # Opened again, the node runs consensus: the set of height 3 is two validators.
        again = Node(cfg, key=a)
        try:
            assert again.replica is not None and again.block_loop is None
        finally:
            await again.stop()
        # A key outside a one-validator genesis (a newcomer's node, its database holding the
        # genesis alone) follows the chain as a full node: it never runs the block loop.
        follower = Node(newcomer, key=NEW)
        try:
            assert follower.block_loop is None and follower.replica is not None
            assert follower.replica.validators_for(1) == [a.public]
        finally:
            await follower.stop()

    asyncio.run(scenario())


def test_a_set_voted_down_to_this_node_decides_alone_and_a_restart_takes_the_block_loop(
        tmp_path: Path, kit: Any) -> None:
    cons, cfg = _two_validators(tmp_path, kit)
    a, b = cons.validators

    async def scenario() -> None:
        node = Node(cfg, key=a)
        assert node.replica is not None and node.block_loop is None
        await node.start()
        try:
            await _vote_out(node, cons, b)
            rep = node.replica
            # n = 1: the driver goes on, and one precommit (its own) certifies each height.
            assert await _final(node, _contribute(cons, "alone-1")) == 3
            assert await _final(node, _contribute(cons, "alone-2")) == 4
            assert node.replica is rep and node.block_loop is None
            assert _signers(node.store, 2) == {a.public, b.public}
            assert _signers(node.store, 3) == _signers(node.store, 4) == {a.public}
        finally:
            await node.stop()

        # Opened again, the node chooses by the set of height 5 (itself), not by the
        # genesis (two validators): the block loop.
        again = Node(cfg, key=a)
        assert again.block_loop is not None and again.replica is None
        await again.start()
        try:
            assert await _final(again, _contribute(cons, "after-restart")) == 5
        finally:
            await again.stop()
        # The removed validator's node follows as a full node.
        removed = Node(cfg, key=b)
        try:
            assert removed.block_loop is None and removed.replica is not None
        finally:
            await removed.stop()

    asyncio.run(scenario())


def test_a_node_that_signed_at_the_next_height_resumes_consensus_there(tmp_path: Path, kit: Any) -> None:
    """Alone in its set but with a precommit of consensus at the next height (the block it
    decided was not stored: the disk failed, or the process died), the node resumes the
    driver with its signing state, which decides that same block, rather than the block
    loop, which would sign a different block at that height."""
    cons, cfg = _two_validators(tmp_path, kit)
    a, b = cons.validators

    async def scenario() -> None:
        node = Node(cfg, key=a)
        await node.start()
        try:
            await _vote_out(node, cons, b)
            # Consensus with n = 1 decides block 3, and its store fails.
            async def failing(*_a: Any, **_k: Any) -> None:
                raise StorageError("disk full", code="commit_failed")

            node.chain.apply_final = failing  # type: ignore[method-assign]
            rid, _ = await node.submit_one(_contribute(cons, "decided-not-stored"))
            await until_async("a precommit at height 3", lambda: (s := node.store.last_signed()) is not None
                              and s[0] == 3 and s[2] == "precommit")
            assert node.store.height() == 2
            decided = node.store.last_signed()
        finally:
            await node.stop()

        again = Node(cfg, key=a)
        assert again.block_loop is None and again.replica is not None
        await again.start()
        try:
            await until_async("block 3 stored", lambda: again.store.height() == 3)
            row = again.store.block(3)
            assert decided is not None and row is not None and row.hash == decided[3]
            assert again.store.record_index(rid) == 2
            assert _signers(again.store, 3) == {a.public}
        finally:
            await again.stop()

    asyncio.run(scenario())
