"""The node follows the validator set of each height (PROTOCOL.md 9.1) from its committed
state: the consensus driver's set per height, the peer messages it accepts, the validators
it sends to and the peers catch-up asks; a key outside the set runs a full node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from factory import Consortium
from procs import free_port, until_async
from test_audit_governance import NEW, T, build, plan
from test_peers import Msg, Recorder, serve

from ledger.errors import LedgerError
from ledger.keys import SigningKey
from node.config import NodeConfig
from node.consensus import sign_vote
from node.daemon import Node
from node.peers import Peers


@pytest.fixture(scope="module")
def cons() -> Consortium:
    return Consortium(validators=4)


def _home(tmp_path: Path, kit: Any, cons: Consortium, upto: int) -> NodeConfig:
    home = tmp_path / "home"
    home.mkdir()
    (home / "genesis.json").write_text(json.dumps(cons.doc))
    build(home / "ledger.db", kit, cons, upto=upto).store.close()
    cfg = NodeConfig(home=home, port=free_port())
    cfg.save()
    return cfg


def _close(node: Node) -> None:
    asyncio.run(node.stop())


def test_the_driver_takes_each_heights_set_and_a_new_key_runs_as_a_full_node(
        tmp_path: Path, kit: Any, cons: Consortium) -> None:
    """NEW is in no genesis: its node opens (it is the validator added in block 1), and the
    driver's sets are those the chain's records made, height by height."""
    v0, v1, v2, v3 = (v.public for v in cons.validators)
    node = Node(_home(tmp_path, kit, cons, upto=2), key=NEW)
    try:
        rep = node.replica
        assert rep is not None
        assert rep.validators_for(1) == [v0, v1, v2, v3]
        assert rep.validators_for(2) == [v0, v1, v2, v3, NEW.public]
        assert rep.validators_for(3) == [v0, v1, v2, NEW.public]  # validator-3 removed in block 2
        # Sent to: the current set but itself, by the urls the records gave.
        assert node.peers is not None
        assert [p.key for p in node.peers.peers] == [v0, v1, v2]
        # Before the core runs, a message of the next height is screened by that height's set.
        vote = sign_vote(cons.validators[3], cons.chain_id, 3, 0, "prevote", "ab" * 32)
        with pytest.raises(LedgerError) as e:
            rep.accept(vote.to_dict())
        assert e.value.code == "not_validator"
        assert rep.accept(sign_vote(NEW, cons.chain_id, 3, 0, "prevote", "ab" * 32).to_dict()).height == 3
    finally:
        _close(node)


def test_a_removed_validator_follows_without_signing(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    """validator-3, removed in block 2, still opens its node; at height 3 its core is a
    follower: it signs nothing, not even a nil prevote on a propose timeout."""
    node = Node(_home(tmp_path, kit, cons, upto=2), key=cons.validators[3])
    try:
        rep = node.replica
        assert rep is not None
        core = rep.core_class(rep.chain_id, rep.validators_for(3), rep.key, rep, 3,
                              validators_for=rep.validators_for)
        assert core.me is None
        assert not [a for a in core.on_timeout(3, 0, "propose") if type(a).__name__ in ("Broadcast", "PersistSigned")]
        assert node.peers is not None and NEW.public in [p.key for p in node.peers.peers]
    finally:
        _close(node)


def test_peers_and_catch_up_follow_a_change_stored_after_start(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    """A block removing validator-3 is stored: validator-3 is no longer sent to; catch-up
    asks the added validator's url."""
    v1, v2, v3 = (v.public for v in cons.validators[1:])
    node = Node(_home(tmp_path, kit, cons, upto=1), key=cons.validators[0])
    try:
        assert node.peers is not None
        assert [p.key for p in node.peers.peers] == [v1, v2, v3, NEW.public]
        node.catchup = node.make_catchup()
        assert "http://127.0.0.1:8009" in node.catchup.peers  # NEW's url, from the state
        recs, keys = plan(cons)[1]
        kit.commit(node.ledger, recs, keys, time=T.format(2))
        node._stored(2)
        assert [p.key for p in node.peers.peers] == [v1, v2, NEW.public]
        assert node.replica is not None and node.replica.validators_for(3)[-1] == NEW.public
    finally:
        asyncio.run(node.catchup.aclose())  # type: ignore[union-attr]
        _close(node)


def test_peers_update_sends_to_a_new_peer_and_no_longer_to_a_dropped_one() -> None:
    async def main() -> None:
        old, new = Recorder(), Recorder()
        servers = [await serve(old), await serve(new)]
        ports = servers[0][2], servers[1][2]
        peers = Peers({"k1": f"http://127.0.0.1:{ports[0]}"}, names={"k1": "node-1"})
        await peers.start()
        try:
            peers.broadcast(Msg(1))
            await until_async("k1 got the first message", lambda: len(old.got) >= 1)
            peers.update({"k2": f"http://127.0.0.1:{ports[1]}"}, names={"k2": "node-e"})
            assert [s["name"] for s in peers.status()] == ["node-e"]
            peers.broadcast(Msg(2))
            peers.forward_record(b'{"r":1}')
            await until_async("k2 got a message and a record", lambda: len(new.got) >= 2)
            assert old.got == [("/v1/peer/message", {"n": 1})]
            # A url change for a key: the same key is sent to at its new url.
            peers.update({"k2": f"http://127.0.0.1:{ports[0]}"})
            peers.broadcast(Msg(3))
            await until_async("the new url got it", lambda: len(old.got) >= 2)
            assert old.got[-1] == ("/v1/peer/message", {"n": 3})
        finally:
            await peers.stop()
            for server, task, _port in servers:
                server.should_exit = True
                await task

    asyncio.run(main())


def test_key_of_no_set_is_not_refused(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    """A key that never was a validator opens a full node (it was refused before)."""
    node = Node(_home(tmp_path, kit, cons, upto=0), key=SigningKey.generate())
    try:
        assert node.replica is not None and node.peers is not None and len(node.peers.peers) == 4
    finally:
        _close(node)
