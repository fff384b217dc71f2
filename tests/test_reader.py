"""StoreReader's dataset usage (the store's index of update inputs, ``Store.inputs_index``) agrees
with the in-memory reader's, for names that need JSON escaping, an update naming a dataset
twice, and the reader's fixed view of the log."""

from __future__ import annotations

from pathlib import Path

from factory import TS
from test_lineage import Chain

from ledger.chain import Ledger
from ledger.reader import StoreReader

ODD = 'x-ray "β" \\ set'  # a quote, a backslash and a non-ASCII letter: escaped in JCS


def test_updates_using_matches_the_memory_reader(tmp_path: Path) -> None:
    ch = Chain()
    for name in ("scans", ODD, "notes"):
        ch.dataset("alice", name)
    ch.cut()
    ids = [
        ch.local("alice", "net", 1, [("scans", 10)]),
        ch.local("bob", "net", 1, [(ODD, 5), ("scans", 3), (ODD, 2)]),  # ODD twice: one row
        ch.local("alice", "other", 1, [("notes", 7)]),
    ]
    ch.cut()
    agg = ch.aggregate("alice", "net", 1, ids[:2])
    mem = ch.memory()
    with ch.store(tmp_path / "l.db") as store:
        reader = StoreReader(store)
        for name in ("scans", ODD, "notes", "x-ray", "absent"):
            assert reader.updates_using(name) == mem.updates_using(name), name
            assert reader.dataset_state(name) == mem.dataset_state(name), name
        assert [r[1] for r in reader.updates_using(ODD)] == [ids[1]]
        assert [r[1] for r in reader.updates_using("scans")] == ids[:2]
        assert agg not in {r[1] for r in reader.updates_using("scans")}  # aggregates have no inputs


def test_updates_using_ignores_records_after_the_view(tmp_path: Path) -> None:
    ch = Chain()
    ch.dataset("alice", "scans")
    ch.cut()
    first = ch.local("alice", "net", 1, [("scans", 10)])
    store = ch.store(tmp_path / "l.db")
    try:
        reader = StoreReader(store)  # sees the log as it is now
        early = StoreReader(store)
        assert [r[1] for r in early.updates_using("scans")] == [first]  # the store's index covers this log
        ch.blocks = [[]]
        later = ch.local("alice", "net", 2, [("scans", 4)], parent=first)
        _, _, rejected = Ledger(store).commit_single(ch.c.validators[0], ch.blocks[0], time=TS)
        assert not rejected
        # A reader of the longer log extends the store's index; one opened before the
        # block still sees only its own view of it.
        assert [r[1] for r in StoreReader(store).updates_using("scans")] == [first, later]
        assert [r[1] for r in reader.updates_using("scans")] == [first]
        assert reader.dataset_state("scans") == early.dataset_state("scans")
    finally:
        store.close()
