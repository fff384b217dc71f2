"""The evidence table is bounded: one piece per validator and height, and a global cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from factory import Consortium
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import store as store_module
from ledger.store import Store


def piece(validator: str, height: int, rnd: int, step: str) -> tuple[str, int, str, dict[str, object]]:
    eid = f"{validator}:{height}:{rnd}:{step}"
    return eid, height, validator, {"validator": validator, "a": {"round": rnd, "step": step}, "b": {}}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "ledger.db", Consortium().doc)


def test_one_piece_per_validator_and_height(store: Store) -> None:
    v, w = "aa" * 32, "bb" * 32
    assert store.add_evidence(*piece(v, 5, 0, "prevote"))
    # The same validator at the same height, in any other round or step, adds nothing.
    for rnd in range(50):
        for step in ("propose", "prevote", "precommit"):
            store.add_evidence(*piece(v, 5, rnd, step))
    assert not store.add_evidence(*piece(v, 5, 7, "precommit"))
    assert store.add_evidence(*piece(v, 6, 0, "prevote"))  # another height
    assert store.add_evidence(*piece(w, 5, 0, "prevote"))  # another validator
    got = store.evidence()
    assert len(got) == 3
    assert got[0]["a"] == {"round": 0, "step": "prevote"}  # the first piece is the one kept


@settings(max_examples=20, deadline=None)
@given(limit=st.integers(1, 8), heights=st.lists(st.integers(1, 30), min_size=1, max_size=60))
def test_the_table_never_exceeds_its_cap_and_keeps_the_newest(tmp_path_factory: pytest.TempPathFactory,
                                                              limit: int, heights: list[int]) -> None:
    s = Store.create(tmp_path_factory.mktemp("ev") / "ledger.db", Consortium().doc)
    old = store_module.EVIDENCE_LIMIT
    store_module.EVIDENCE_LIMIT = limit
    try:
        kept: list[int] = []
        for h in heights:
            if s.add_evidence(*piece("aa" * 32, h, 0, "prevote")):
                kept.append(h)
            assert len(s.evidence()) <= limit
        assert sorted(e["height"] for e in _rows(s)) == sorted(kept[-limit:])
    finally:
        store_module.EVIDENCE_LIMIT = old
        s.close()


def _rows(s: Store) -> list[dict[str, int]]:
    return [{"height": r[0]} for r in s.reader.execute("SELECT height FROM evidence")]
