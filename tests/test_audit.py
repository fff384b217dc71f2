"""The offline auditor on clean chains: reports, --jobs, checkpoints, consistency.
Tampered chains are in test_audit_tamper.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from factory import Consortium

from ledger.audit import Checkpoint, DbSource, audit, verify_chain
from ledger.chain import Ledger
from ledger.errors import InputError, VerificationError
from ledger.store import Store


@pytest.mark.parametrize("fixture", ["chain1", "chain4"])
def test_clean_varied_chain_audits_ok(fixture: str, request: pytest.FixtureRequest) -> None:
    chain = request.getfixturevalue(fixture)
    report = audit(DbSource(chain.path))
    assert report.ok, [str(f) for f in report.findings]
    assert report.chain_id == chain.cons.chain_id
    assert (report.blocks, report.records) == (6, 20)
    head = report.head
    assert head is not None and (head.height, head.hash, head.log_size) == (6, chain.hashes[-1], 20)
    with Store(chain.path) as store:
        assert head.log_root == store.head().header.log_root  # type: ignore[union-attr]
    assert verify_chain(DbSource(chain.path)).ok


def test_jobs_2_gives_the_same_report(chain1: Any, tmp_path: Path) -> None:
    assert audit(DbSource(chain1.path), jobs=2).to_dict() == audit(DbSource(chain1.path)).to_dict()
    # ... also when something fails.
    db = tmp_path / "t.db"
    shutil.copy(chain1.path, db)
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    env = json.loads(conn.execute("SELECT envelope FROM records WHERE idx = 3").fetchone()[0])
    env["sig"] = "00" * 64
    conn.execute("UPDATE records SET envelope = ? WHERE idx = 3", (json.dumps(env),))
    conn.close()
    one, two = audit(DbSource(db)), audit(DbSource(db), jobs=2)
    assert not one.ok and one.to_dict() == two.to_dict()
    with pytest.raises(VerificationError) as ei:
        verify_chain(DbSource(db), jobs=2)
    assert ei.value.code == "audit_failed"


def test_progress_counts_every_record(chain1: Any) -> None:
    seen: list[int] = []
    audit(DbSource(chain1.path), progress=seen.append)
    assert sum(seen) == 20 and len(seen) == 6


def test_report_to_dict_is_json(chain1: Any) -> None:
    report = audit(DbSource(chain1.path), checkpoint=audit(DbSource(chain1.path)).head)
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["ok"] is True and doc["records"] == 20 and doc["findings"] == []
    assert doc["head"]["hash"] == chain1.hashes[-1]
    assert doc["checkpoint"].startswith("consistent")


def test_checkpoint_save_and_load(tmp_path: Path) -> None:
    cp = Checkpoint("aa" * 32, 3, "bb" * 32, 10, "cc" * 32)
    path = tmp_path / "state.json"
    cp.save(path)
    assert Checkpoint.load(path) == cp
    assert json.loads(path.read_text())["log_size"] == 10
    assert Checkpoint.load(tmp_path / "none.json") is None
    path.write_text("{not json")
    with pytest.raises(InputError) as ei:
        Checkpoint.load(path)
    assert ei.value.code == "bad_state_file"
    path.write_text('{"height": 1}')
    with pytest.raises(InputError):
        Checkpoint.load(path)


def test_consistent_with_a_checkpoint_after_growth(chain1: Any, tmp_path: Path) -> None:
    db = tmp_path / "grow.db"
    shutil.copy(chain1.path, db)
    state = tmp_path / "audit.json"
    first = audit(DbSource(db))
    assert first.head is not None
    first.head.save(state)
    cons = chain1.cons
    ledger = Ledger(Store(db))
    for n in range(3):
        recs = [cons.record(cons.bob, "dataset.contribute", cons.dataset_body(f"g{n}-{i}")) for i in range(n + 1)]
        ledger.commit_single(cons.validators[0], recs, time=f"2026-11-21T12:10:0{n}Z")
    ledger.store.close()
    report = audit(DbSource(db), checkpoint=Checkpoint.load(state))
    assert report.ok, [str(f) for f in report.findings]
    assert report.checkpoint == "consistent with the checkpoint at height 6 (20 records)"
    assert report.head is not None and report.head.log_size == 26
    # The same chain against its own head, and against an empty-log checkpoint.
    assert audit(DbSource(db), checkpoint=report.head).ok
    empty = Checkpoint(cons.chain_id, 0, cons.chain_id, 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert audit(DbSource(db), checkpoint=empty).ok


def test_checkpoint_of_another_chain_is_a_fork(chain1: Any, chain4: Any) -> None:
    other = audit(DbSource(chain4.path)).head
    report = audit(DbSource(chain1.path), checkpoint=other)
    assert report.checkpoint == "fork" and [f.check for f in report.findings] == ["fork"]


def test_empty_chain_audits_ok(tmp_path: Path) -> None:
    cons = Consortium()
    Store.create(tmp_path / "e.db", cons.doc).close()
    report = audit(DbSource(tmp_path / "e.db"))
    assert report.ok and report.blocks == 0 and report.head is None


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        DbSource(tmp_path / "missing.db")
    # A damaged database is a finding (tests/test_audit_db.py), not an error.
    (tmp_path / "x.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    assert [f.check for f in audit(DbSource(tmp_path / "x.db")).findings] == ["database"]
