"""The SQLite store: append-only triggers, atomic blocks, reopening, derived state, proofs."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from factory import Consortium

from ledger import merkle
from ledger.chain import Ledger
from ledger.errors import StorageError
from ledger.records import parse_record
from ledger.state import ChainState
from ledger.store import Store


@pytest.fixture
def db(chain1: Any, tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    shutil.copy(chain1.path, path)
    return path


def counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("records", "blocks", "merkle", "identities", "datasets", "budgets", "policies")}
    finally:
        conn.close()


# --- append-only ---------------------------------------------------------------------------
@pytest.mark.parametrize(("table", "column"), [("records", "envelope"), ("blocks", "header"),
                                               ("merkle", "h"), ("meta", "value")])
@pytest.mark.parametrize("op", ["UPDATE", "DELETE"])
def test_triggers_refuse_update_and_delete(db: Path, table: str, column: str, op: str) -> None:
    before = counts(db)
    conn = sqlite3.connect(db, isolation_level=None)
    sql = f"UPDATE {table} SET {column} = {column} || ''" if op == "UPDATE" else f"DELETE FROM {table}"
    with pytest.raises(sqlite3.DatabaseError) as ei:  # IntegrityError is a DatabaseError
        conn.execute(sql)
    assert f"{table} is append-only" in str(ei.value)
    conn.close()
    assert counts(db) == before


def test_triggers_hold_for_the_store_connection_too(db: Path) -> None:
    with Store(db) as store, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM records WHERE idx = 0")


# --- one block, one transaction -------------------------------------------------------------
def _next_records(cons: Consortium, tag: str) -> list[Any]:
    return [cons.record(cons.alice, "dataset.contribute", cons.dataset_body(f"{tag}-{i}")) for i in range(3)]


def test_failure_after_records_insert_leaves_nothing(db: Path, chain1: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cons = chain1.cons
    ledger = Ledger(Store(db))
    head, before = ledger.store.head(), counts(db)
    block, rejected = ledger.build_block(_next_records(cons, "x"), proposer=cons.validators[0].public,
                                         time="2026-11-21T12:01:00Z")
    assert not rejected

    def boom(*a: Any, **kw: Any) -> None:  # the records and the block rows are in by now
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ledger.store, "_write_state", boom)
    from ledger.blocks import certify_single

    with pytest.raises(RuntimeError, match="disk on fire"):
        ledger.commit(block, certify_single(cons.validators[0], block.header))
    monkeypatch.undo()
    # Nothing of the block is visible, to this store or to another connection.
    assert counts(db) == before
    assert ledger.store.head() == head and ledger.height == head.header.height  # type: ignore[union-attr]
    assert all(ledger.store.record(r.id) is None for r in block.records)
    with Store(db) as other:
        assert other.head() == head and other.log_size() == head.header.log_size  # type: ignore[union-attr]
    # The store still takes the next block — the same records, now committed.
    block2, _cert2, rejected2 = ledger.commit_single(cons.validators[0], block.records, time="2026-11-21T12:01:01Z")
    assert not rejected2 and block2.header.height == head.header.height + 1  # type: ignore[union-attr]
    assert counts(db)["records"] == before["records"] + 3
    ledger.store.close()
    from ledger.audit import DbSource, audit

    assert audit(DbSource(db)).ok


def test_failing_insert_rolls_back_the_whole_block(db: Path, chain1: Any) -> None:
    """A block whose second record reuses a committed (signer, nonce): the INSERT fails on
    the unique index after the first row went in, and the whole block is rolled back."""
    cons = chain1.cons
    store = Store(db)
    ledger = Ledger(store)
    before, head = counts(db), store.head()
    committed = parse_record(store.block_records(1)[1])
    fresh = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("fresh"))
    dup = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("dup"),
                      nonce=committed.nonce)
    assert dup.signer == committed.signer
    state = ledger.state.fork()
    state.apply(fresh)
    state.apply(dup)
    block = ledger._seal([fresh, dup], state, proposer=cons.validators[0].public, time="2026-11-21T12:01:00Z")
    from ledger.blocks import certify_single

    with pytest.raises(StorageError) as ei:
        ledger.commit(block, certify_single(cons.validators[0], block.header))
    assert ei.value.code == "commit_failed"
    assert counts(db) == before and store.head() == head
    assert store.record(fresh.id) is None and not store.nonce_used(fresh.signer, fresh.nonce)
    ledger.commit_single(cons.validators[0], [fresh], time="2026-11-21T12:01:01Z")
    assert store.record(fresh.id) is not None
    store.close()


def test_commit_with_invalid_certificate_stores_nothing(db: Path, chain1: Any) -> None:
    cons = chain1.cons
    ledger = Ledger(Store(db))
    before = counts(db)
    block, _ = ledger.build_block(_next_records(cons, "y"), proposer=cons.validators[0].public)
    from factory import key

    from ledger.blocks import certify_single
    from ledger.errors import CertificateError

    with pytest.raises(CertificateError):
        ledger.commit(block, certify_single(key("not-a-validator"), block.header))
    assert counts(db) == before
    ledger.store.close()


# --- reopening and derived state ----------------------------------------------------------------
def state_view(st: ChainState) -> dict[str, Any]:
    return {
        "identities": {k: v.to_dict() for k, v in st.identities.items()},
        "datasets": {k: v.to_dict() for k, v in st.datasets.items()},
        "policies": st.policies,
        "size": st.size,
    }


def test_reopen_gives_same_head_and_state(db: Path, chain1: Any) -> None:
    with Store(db) as s1:
        head, st1, gen = s1.head(), state_view(s1.load_state()), s1.genesis
    with Store(db) as s2:
        assert s2.head() == head and s2.genesis == gen
        assert head is not None and head.hash == chain1.hashes[-1] and s2.height() == 6
        assert state_view(s2.load_state()) == st1


def test_load_state_equals_rebuild_state(db: Path, chain1: Any) -> None:
    with Store(db) as store:
        loaded = state_view(store.load_state())
        rebuilt = store.rebuild_state()
        assert loaded == state_view(rebuilt)
        assert state_view(store.load_state()) == loaded  # rewriting the tables changes nothing
    # And both equal an independent replay of the log in memory.
    replay = ChainState(chain1.cons.genesis)
    with Store(db) as store:
        replay.replay(parse_record(store.record(i)[0]) for i in chain1.all_ids)  # type: ignore[index]
    assert state_view(replay) == loaded
    # The varied chain exercises every part of the state.
    assert loaded["identities"][chain1.cons.carol.public]["revoked"] is True
    assert loaded["datasets"]["mnist"]["spent"] == {"epsilon": "0.5", "delta": "0.00001"}
    assert set(loaded["datasets"]["cifar"]["versions"]) == {"1", "2"}
    assert len(loaded["policies"]) == 2


def test_loaded_state_enforces_replay_against_the_store(db: Path, chain1: Any) -> None:
    """After a restart, nonces and models come from the store's index, not memory."""
    from ledger.errors import RuleError

    cons = chain1.cons
    with Store(db) as store:
        st = store.load_state()
        first = parse_record(store.block_records(1)[1])
        replay = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("new"), nonce=first.nonce)
        with pytest.raises(RuleError) as ei:
            st.check(replay)
        assert ei.value.code == "replayed_nonce"
        agg = chain1.ids[2][0]
        st.check(cons.record(cons.alice, "model.update", cons.update_body("m", 9, aggregates=[agg])))


def test_blocks_refuse_nonces_the_store_holds_asked_in_one_pass(tmp_path: Path) -> None:
    """``build_block`` asks the store about a block's nonces together (``nonces_used``,
    one query per signer and 500 nonces): its answers equal ``nonce_used``'s, and a
    replayed nonce is refused whether the store or the same block used it first."""
    from ledger.errors import RuleError

    cons = Consortium()
    ledger = cons.ledger(tmp_path / "n.db")
    first = [cons.record(cons.bob, "dataset.contribute", cons.dataset_body(f"d{i}"), nonce=f"n{i}")
             for i in range(1200)]
    ledger.commit_single(cons.validators[0], first, time="2026-11-21T12:00:01Z")
    store = ledger.store
    pairs = [(cons.bob.public, f"n{i}") for i in range(0, 2400, 2)] + [(cons.alice.public, "n1")]
    assert store.nonces_used(pairs) == {p for p in pairs if store.nonce_used(*p)}
    assert len(store.nonces_used(pairs)) == 600

    again = cons.record(cons.bob, "dataset.contribute", cons.dataset_body("again"), nonce="n7")
    fresh = cons.record(cons.bob, "dataset.contribute", cons.dataset_body("fresh"), nonce="n-new")
    twice = cons.record(cons.bob, "dataset.contribute", cons.dataset_body("twice"), nonce="n-new")
    block, rejected = ledger.build_block([again, fresh, twice], proposer=cons.validators[0].public)
    assert [r.id for r in block.records] == [fresh.id]
    assert [(r.id, e.code) for r, e in rejected] == [(again.id, "replayed_nonce"), (twice.id, "replayed_nonce")]
    with pytest.raises(RuleError) as ei:
        ledger.check_block(block.header, [fresh, again], verify_signatures=False)
    assert ei.value.code == "replayed_nonce"
    store.close()


# --- queries and proofs -------------------------------------------------------------------------
def test_records_are_found_by_id_index_and_column(db: Path, chain1: Any) -> None:
    with Store(db) as store:
        for n, rid in enumerate(chain1.all_ids):
            env, idx, height = store.record(rid)  # type: ignore[misc]
            assert idx == n and height == chain1.where(rid)[0] and parse_record(env).id == rid
            assert store.record_index(rid) == n
        assert [r[1] for r in store.records_where("dataset", "cifar")] == \
            [i for i in chain1.all_ids if store.record(i)[0]["body"].get("dataset") == "cifar"]  # type: ignore[index]
        assert len(store.records_where("type", "model.update")) == 5
        assert [r[2] for r in store.records()] == chain1.all_ids
        assert store.block_records(4) == []
        with pytest.raises(StorageError):
            store.records_where("envelope", "x")


def test_inclusion_proofs_verify_against_every_header(db: Path, chain1: Any) -> None:
    with Store(db) as store:
        for blk in store.blocks():
            size, root = blk.header.log_size, bytes.fromhex(blk.header.log_root)
            assert store.root_at(size) == root
            for i in range(size):
                leaf = bytes.fromhex(chain1.all_ids[i])
                merkle.verify_inclusion(leaf, i, size, store.inclusion_proof(i, size), root)
        sizes = [b.header.log_size for b in store.blocks()]
        roots = [bytes.fromhex(b.header.log_root) for b in store.blocks()]
        for a in range(len(sizes)):
            for b in range(a, len(sizes)):
                if sizes[a]:
                    merkle.verify_consistency(sizes[a], sizes[b], roots[a], roots[b],
                                              store.consistency_proof(sizes[a], sizes[b]))
        # The root of every size matches an independent RFC 9162 computation.
        leaves = [bytes.fromhex(i) for i in chain1.all_ids]
        for n in range(1, len(leaves) + 1):
            assert store.root_at(n) == merkle.root(leaves[:n])


def test_many_records_proofs(tmp_path: Path) -> None:
    """Proofs from stored subtrees across uneven block sizes, for every index."""
    cons = Consortium()
    ledger = cons.ledger(tmp_path / "big.db")
    ids: list[bytes] = []
    for height, n in enumerate([1, 7, 0, 16, 33, 5], start=1):
        recs = [cons.record(cons.bob, "dataset.contribute", cons.dataset_body(f"{height}-{i}")) for i in range(n)]
        ledger.commit_single(cons.validators[0], recs, time=f"2026-11-21T12:00:{height:02d}Z")
        ids += [bytes.fromhex(r.id) for r in recs]
    store = ledger.store
    size = store.log_size()
    assert size == len(ids) == 62
    root = bytes.fromhex(store.head().header.log_root)  # type: ignore[union-attr]
    assert root == merkle.root(ids)
    for i in range(size):
        merkle.verify_inclusion(ids[i], i, size, store.inclusion_proof(i, size), root)
    store.close()


# --- files ----------------------------------------------------------------------------------------
def test_create_refuses_an_existing_file(db: Path, chain1: Any, tmp_path: Path) -> None:
    before = db.read_bytes()
    with pytest.raises(StorageError) as ei:
        Store.create(db, chain1.cons.doc)
    assert ei.value.code == "database_exists"
    assert db.read_bytes() == before
    other = tmp_path / "empty.txt"
    other.write_text("")
    with pytest.raises(StorageError):
        Store.create(other, chain1.cons.doc)


def test_open_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as ei:
        Store(tmp_path / "missing.db")
    assert ei.value.code == "no_database"
    assert not (tmp_path / "missing.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError) as ei:
        Store(junk)
    assert ei.value.code == "bad_database"


def test_new_store_is_empty_and_holds_the_genesis(tmp_path: Path) -> None:
    cons = Consortium()
    with Store.create(tmp_path / "new.db", cons.doc) as store:
        assert store.head() is None and store.height() == 0 and store.log_size() == 0
        assert store.genesis.chain_id == cons.chain_id
        assert store.root_at(0) == merkle.EMPTY_ROOT
        st = store.load_state()
        assert set(st.identities) == set(ChainState(cons.genesis).identities)


# --- derived rows -----------------------------------------------------------------------------
def test_derived_rows_are_what_the_tables_hold(db: Path) -> None:
    from ledger.store import compare_derived, derived_rows, read_derived

    with Store(db) as store:
        want = derived_rows(store.rebuild_state())
        assert read_derived(store.reader) == want and set(want) == {
            "identities", "datasets", "budgets", "policies", "organisations", "proposals", "validators"}
        assert all(want.values())  # the varied chain fills every table
        assert list(compare_derived(want, read_derived(store.reader))) == []


@pytest.mark.parametrize("table", ["identities", "datasets", "budgets", "policies"])
def test_compare_derived_names_each_edited_row_and_write_derived_restores_it(db: Path, table: str) -> None:
    from ledger.store import DERIVED_TABLES, compare_derived, derived_rows, read_derived

    with Store(db) as store:
        state = store.rebuild_state()
        want = derived_rows(state)
        key, row = sorted(want[table].items(), key=repr)[-1]
        last = DERIVED_TABLES[table][-1]
        where = " AND ".join(f"{c} = ?" for c in DERIVED_TABLES[table][: len(key)])
        store.conn.execute(f"UPDATE {table} SET {last} = 'edited' WHERE {where}", key)
        store.conn.execute(f"INSERT INTO {table} ({', '.join(DERIVED_TABLES[table])}) VALUES "
                           f"({', '.join('?' * len(row))})", (99999, *row[1:]) if table == "policies"
                           else ("zz", *row[1:]))
        diffs = list(compare_derived(want, read_derived(store.reader)))
        assert sorted(d[:2] for d in diffs) == sorted([(table, key), (table, (99999,) if table == "policies"
                                                                      else ("zz", *key[1:]))])
        assert any(f"{last} is 'edited'" in d[2] for d in diffs)
        store.write_derived(state)
        assert read_derived(store.reader) == want
