"""Catch-up across membership changes (node.catchup, PROTOCOL.md 9.1): each fetched block's
certificate is checked against the set certifying its height, so a fresh node follows a
chain whose validators changed, and a block certified by a removed validator is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from factory import Consortium
from test_audit_governance import build
from test_catchup import Peer, _catchup

from ledger.audit import DbSource, audit
from ledger.blocks import Header


@pytest.fixture(scope="module")
def cons() -> Consortium:
    return Consortium(validators=4)


def _sync(cu: Any) -> int:
    async def go() -> int:
        try:
            return await cu.sync()  # type: ignore[no-any-return]
        finally:
            await cu.aclose()

    return asyncio.run(go())


def test_a_fresh_node_catches_up_across_changes_and_refuses_a_removed_validators_block(
        tmp_path: Path, kit: Any, cons: Consortium) -> None:
    source = build(tmp_path / "source.db", kit, cons).store
    v0, v1, _v2, v3 = cons.validators

    def forge(doc: dict[str, Any]) -> None:
        for b in doc["blocks"]:  # block 3, certified by validator-3 after its removal in block 2
            if b["header"]["height"] == 3:
                b["certificate"] = kit.certify(Header.from_dict(b["header"]), [v0, v1, v3]).to_dict()

    forger, honest = Peer(source, edit=forge), Peer(source)
    cu = _catchup(cons, tmp_path, {"http://forger": forger, "http://honest": honest})
    assert _sync(cu) == source.height() == 4
    assert [(p, h) for p, h, _ in cu.faults] == [("http://forger", 3)]
    assert "set certifying height 3" in cu.faults[0][2]
    assert cu.ledger.store.head().hash == source.head().hash
    assert cu.ledger.state.validators_hash() == source.head().header.next_validators
    assert audit(DbSource(tmp_path / "fresh.db")).ok
