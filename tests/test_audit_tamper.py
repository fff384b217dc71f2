"""The ten tamper cases of issue 2: each edits the SQLite file directly, behind the dropped
append-only triggers, and the audit must fail and say where (check, height, record, index).

The chain (``conftest.build_varied``) has a 4-validator genesis, six blocks and 20 records;
odd heights carry four precommits, even heights exactly the quorum of three.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from factory import Consortium

from ledger.audit import AuditReport, Checkpoint, DbSource, Finding, audit
from ledger.blocks import vote_payload
from ledger.canonical import VOTE_TAG
from ledger.cli import cli
from ledger.keys import SigningKey
from ledger.records import parse_record
from ledger.store import Store


@pytest.fixture
def base(chain4: Any) -> Any:
    return chain4


@pytest.fixture
def db(base: Any, tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    shutil.copy(base.path, path)
    return path


def edit(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to ``path`` with the append-only triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    assert {"records_no_update", "records_no_delete", "blocks_no_update", "meta_no_update"} <= set(names)
    for name in names:
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def row(conn: sqlite3.Connection, idx: int) -> tuple[str, dict[str, Any]]:
    rid, env = conn.execute("SELECT id, envelope FROM records WHERE idx = ?", (idx,)).fetchone()
    return rid, json.loads(env)


def cert(conn: sqlite3.Connection, height: int) -> dict[str, Any]:
    return json.loads(conn.execute("SELECT certificate FROM blocks WHERE height = ?", (height,)).fetchone()[0])


def set_cert(conn: sqlite3.Connection, height: int, c: dict[str, Any]) -> None:
    conn.execute("UPDATE blocks SET certificate = ? WHERE height = ?", (json.dumps(c), height))


def run(path: Path, checkpoint: Checkpoint | None = None) -> AuditReport:
    return audit(DbSource(path), checkpoint=checkpoint)


def find(report: AuditReport, check: str, height: int | None, *, index: int | None = None,
         record: str | None = None) -> Finding:
    """The finding of ``check`` at ``height`` (and index / record when given)."""
    for f in report.findings:
        if f.check == check and f.height == height and (index is None or f.index == index) \
                and (record is None or f.record == record):
            return f
    raise AssertionError(f"no {check} finding at height {height} index {index} record {record}:\n"
                         + "\n".join(map(str, report.findings)))


def first_height(report: AuditReport) -> int:
    return min(f.height for f in report.findings if f.height is not None)


@dataclass(frozen=True)
class Expect:
    check: str
    height: int | None
    index: int | None = None
    record: str | None = None


# --- the ten tampers, each returning where the audit must point -----------------------
# A tamper takes (connection, chain) and returns the finding that locates it.


def edited_body(conn: sqlite3.Connection, chain: Any) -> Expect:
    rid, env = row(conn, 9)  # height 3: the model.evaluation of the aggregate
    assert env["type"] == "model.evaluation"
    env["body"]["value"] = "0.99"
    conn.execute("UPDATE records SET envelope = ? WHERE idx = 9", (json.dumps(env),))
    return Expect("record_id", 3, 9, rid)


def edited_signature(conn: sqlite3.Connection, chain: Any) -> Expect:
    rid, env = row(conn, 5)  # height 2, bob's signature replaced by another of his signatures
    env["sig"] = chain.cons.bob.sign_bytes(b"some other message")
    conn.execute("UPDATE records SET envelope = ? WHERE idx = 5", (json.dumps(env),))
    return Expect("signature", 2, 5, rid)


def deleted_record(conn: sqlite3.Connection, chain: Any) -> Expect:
    conn.execute("DELETE FROM records WHERE idx = 4")  # height 2, bob's annotation
    return Expect("log_index", 2, 4)


def inserted_record(conn: sqlite3.Connection, chain: Any) -> Expect:
    # A genuinely signed, valid record placed in block 3 at a fresh log index.
    rec = chain.cons.record(chain.cons.alice, "dataset.contribute", chain.cons.dataset_body("extra"), nonce="ins")
    conn.execute("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?)",
                 (20, rec.id, 3, rec.type, rec.signer, rec.nonce, "extra", None, rec.canonical.decode()))
    return Expect("log_index", 3, 20, rec.id)


def swapped_records(conn: sqlite3.Connection, chain: Any) -> Expect:
    # Two independent records of block 2 change places: every rule still holds.
    a, b = row(conn, 6), row(conn, 7)
    conn.execute("UPDATE records SET id = 'x', envelope = '{}' WHERE idx = 6")
    conn.execute("UPDATE records SET id = ?, envelope = ? WHERE idx = 7", (a[0], json.dumps(a[1])))
    conn.execute("UPDATE records SET id = ?, envelope = ? WHERE idx = 6", (b[0], json.dumps(b[1])))
    return Expect("log_leaf", 2, 6, b[0])


def edited_header(conn: sqlite3.Connection, chain: Any) -> Expect:
    header = json.loads(conn.execute("SELECT header FROM blocks WHERE height = 3").fetchone()[0])
    header["time"] = "2026-11-21T13:00:00Z"
    conn.execute("UPDATE blocks SET header = ? WHERE height = 3", (json.dumps(header),))
    return Expect("certificate", 3)


def vote_removed(conn: sqlite3.Connection, chain: Any) -> Expect:
    c = cert(conn, 2)
    assert len(c["votes"]) == 3  # exactly the quorum of 4 validators
    c["votes"].pop(1)
    set_cert(conn, 2, c)
    return Expect("certificate", 2)


def vote_forged(conn: sqlite3.Connection, chain: Any) -> Expect:
    c = cert(conn, 5)
    c["votes"][2]["sig"] = chain.cons.validators[2].sign_bytes(b"not a precommit")
    set_cert(conn, 5, c)
    return Expect("certificate", 5)


def deleted_block(conn: sqlite3.Connection, chain: Any) -> Expect:
    conn.execute("DELETE FROM blocks WHERE height = 3")
    conn.execute("DELETE FROM records WHERE height = 3")
    return Expect("height", 3)


def truncate(conn: sqlite3.Connection, height: int) -> None:
    """Cut the chain after ``height`` as a careful tamperer would: blocks, records, the
    Merkle nodes past the new size, and the derived tables rewritten by a replay."""
    conn.execute("DELETE FROM blocks WHERE height > ?", (height,))
    conn.execute("DELETE FROM records WHERE height > ?", (height,))
    size = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    for level in range(size.bit_length() + 1):
        conn.execute("DELETE FROM merkle WHERE k >= ? AND k < ?", ((level << 40) + (size >> level), (level + 1) << 40))
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    with Store(path) as store:
        store.rebuild_state()


def truncated_tail(conn: sqlite3.Connection, chain: Any) -> Expect:
    truncate(conn, 4)
    return Expect("rollback", 4)


def edited_genesis(conn: sqlite3.Connection, chain: Any) -> Expect:
    doc = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0])
    doc["participants"][1]["roles"].append("evaluator")  # quietly give bob a role
    conn.execute("UPDATE meta SET value = ? WHERE key = 'genesis'", (json.dumps(doc),))
    return Expect("chain_id", None)


TAMPERS: dict[str, Callable[[sqlite3.Connection, Any], Expect]] = {
    f.__name__: f
    for f in (edited_body, edited_signature, deleted_record, inserted_record, swapped_records, edited_header,
              vote_removed, vote_forged, deleted_block, truncated_tail, edited_genesis)
}


def checkpoint_of(path: Path) -> Checkpoint:
    report = run(path)
    assert report.ok and report.head is not None
    return report.head


def tamper(name: str, db: Path, base: Any) -> Expect:
    conn = edit(db)
    try:
        return TAMPERS[name](conn, base)
    finally:
        conn.close()


def test_clean_chain_audits_ok(db: Path, base: Any) -> None:
    report = run(db)
    assert report.ok, report.findings
    assert (report.blocks, report.records) == (6, 20)
    assert report.head is not None and report.head.hash == base.hashes[-1]


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tamper_is_caught_and_located(name: str, db: Path, base: Any) -> None:
    before = checkpoint_of(db)
    want = tamper(name, db, base)
    report = run(db, checkpoint=before)
    assert not report.ok
    f = find(report, want.check, want.height, index=want.index, record=want.record)
    # Nothing is reported before the place of the tamper.
    if want.height is not None and want.check != "rollback":
        assert first_height(report) == want.height, [str(x) for x in report.findings]
    assert f.message


# --- each case in more detail ----------------------------------------------------------
def test_edited_body_names_the_stored_id_for_every_check(db: Path, base: Any) -> None:
    want = tamper("edited_body", db, base)
    report = run(db)
    assert want.record == base.ids[2][1]
    for check in ("record_id", "signature", "log_leaf"):
        find(report, check, 3, index=9, record=want.record)
    find(report, "log_root", 3)
    # Later roots cover the edited leaf too, and are reported; no record after it is blamed.
    assert {f.index for f in report.findings if f.index is not None} == {9}


def test_edited_signature_with_id_column_kept_consistent(db: Path, base: Any) -> None:
    """The tamperer also rewrites the id column: the signature check alone names the record."""
    conn = edit(db)
    _, env = row(conn, 5)
    env["sig"] = base.cons.bob.sign_bytes(b"some other message")
    new_id = parse_record(env).id
    conn.execute("UPDATE records SET envelope = ?, id = ? WHERE idx = 5", (json.dumps(env), new_id))
    conn.close()
    report = run(db)
    find(report, "signature", 2, index=5, record=new_id)
    assert not [f for f in report.findings if f.check == "record_id"]
    # The certified log held the original record at index 5.
    assert find(report, "log_leaf", 2, index=5).message.startswith(f"the certified log holds record {base.ids[1][2][:16]}")


def test_signature_swapped_between_valid_records_is_caught(db: Path, base: Any) -> None:
    """A valid signature of another record is still a wrong signature for this one."""
    conn = edit(db)
    _, other = row(conn, 3)
    rid, env = row(conn, 6)
    assert other["signer"] == env["signer"]  # both alice's
    env["sig"] = other["sig"]
    conn.execute("UPDATE records SET envelope = ? WHERE idx = 6", (json.dumps(env),))
    conn.close()
    find(run(db), "signature", 2, index=6, record=rid)


def test_deleted_record_reported_once_at_its_index(db: Path, base: Any) -> None:
    tamper("deleted_record", db, base)
    report = run(db)
    f = find(report, "log_index", 2, index=4)
    assert "missing" in f.message and "4" in f.message
    find(report, "count", 2)
    # The records after the gap are where they belong: they are not blamed.
    assert [x for x in report.findings if x.check == "log_index"] == [f]


def test_deleted_last_record_of_a_block(db: Path) -> None:
    conn = edit(db)
    conn.execute("DELETE FROM records WHERE idx = 7")  # the last record of block 2
    conn.close()
    report = run(db)
    find(report, "log_index", 2, index=7)
    find(report, "count", 2)
    assert first_height(report) == 2


def test_inserted_record_with_renumbered_log(db: Path, base: Any) -> None:
    """The harder insertion: later records are renumbered so the indexes stay dense, and
    the merkle table is left alone. The certified leaves still say which row is foreign."""
    rec = base.cons.record(base.cons.alice, "dataset.contribute", base.cons.dataset_body("extra"), nonce="ins")
    conn = edit(db)
    conn.execute("UPDATE records SET idx = -idx - 1 WHERE idx >= 9")
    conn.execute("UPDATE records SET idx = -idx WHERE idx < 0")
    conn.execute("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?)",
                 (9, rec.id, 3, rec.type, rec.signer, rec.nonce, "extra", None, rec.canonical.decode()))
    conn.close()
    report = run(db)
    find(report, "log_leaf", 3, index=9, record=rec.id)
    find(report, "count", 3)
    assert first_height(report) == 3


@pytest.mark.parametrize(("i", "j"), [(6, 7), (1, 12), (0, 18)], ids=["same-block", "across-blocks", "first-last"])
def test_swapped_records_are_both_named(db: Path, base: Any, i: int, j: int) -> None:
    conn = edit(db)
    a, b = row(conn, i), row(conn, j)
    conn.execute("UPDATE records SET id = 'x', envelope = '{}' WHERE idx = ?", (i,))
    conn.execute("UPDATE records SET id = ?, envelope = ? WHERE idx = ?", (a[0], json.dumps(a[1]), j))
    conn.execute("UPDATE records SET id = ?, envelope = ? WHERE idx = ?", (b[0], json.dumps(b[1]), i))
    conn.close()
    report = run(db)
    hi, hj = base.where(a[0])[0], base.where(b[0])[0]
    find(report, "log_leaf", hi, index=i, record=b[0])
    find(report, "log_leaf", hj, index=j, record=a[0])
    assert first_height(report) == hi


@pytest.mark.parametrize(("field", "value"), [("time", "2026-11-21T13:00:00Z"), ("count", 3), ("proposer", "ab" * 32)])
def test_edited_header_field(db: Path, field: str, value: Any) -> None:
    conn = edit(db)
    header = json.loads(conn.execute("SELECT header FROM blocks WHERE height = 3").fetchone()[0])
    header[field] = value
    conn.execute("UPDATE blocks SET header = ? WHERE height = 3", (json.dumps(header),))
    conn.close()
    report = run(db)
    assert "certificate" in find(report, "certificate", 3).check
    find(report, "prev", 4)  # the next block still links to the certified hash
    assert first_height(report) == 3


def test_removing_a_vote_above_quorum_is_not_a_finding(db: Path) -> None:
    """Height 1 has all four votes; three still make a certificate."""
    conn = edit(db)
    c = cert(conn, 1)
    assert len(c["votes"]) == 4
    c["votes"].pop()
    set_cert(conn, 1, c)
    conn.close()
    assert run(db).ok


def _forge_wrong_round(c: dict[str, Any], chain: Any, height: int) -> None:
    v = chain.cons.validators[1]
    payload = vote_payload(chain.cons.chain_id, height, c["round"] + 1, "precommit", c["block"])
    c["votes"][1] = {"validator": v.public, "sig": v.sign(VOTE_TAG, payload)}


def _forge_prevote(c: dict[str, Any], chain: Any, height: int) -> None:
    v = chain.cons.validators[1]
    payload = vote_payload(chain.cons.chain_id, height, c["round"], "prevote", c["block"])
    c["votes"][1] = {"validator": v.public, "sig": v.sign(VOTE_TAG, payload)}


def _forge_outsider(c: dict[str, Any], chain: Any, height: int) -> None:
    outsider = SigningKey.from_seed(bytes(32))
    payload = vote_payload(chain.cons.chain_id, height, c["round"], "precommit", c["block"])
    c["votes"][1] = {"validator": outsider.public, "sig": outsider.sign(VOTE_TAG, payload)}


def _forge_duplicate(c: dict[str, Any], chain: Any, height: int) -> None:
    c["votes"][1] = dict(c["votes"][0])  # one key counted twice would make a false quorum


def _forge_garbage(c: dict[str, Any], chain: Any, height: int) -> None:
    c["votes"][1]["sig"] = "00" * 64


@pytest.mark.parametrize("forge", [_forge_wrong_round, _forge_prevote, _forge_outsider, _forge_duplicate, _forge_garbage],
                         ids=["wrong-round", "prevote", "outsider", "duplicate", "garbage"])
def test_forged_vote(db: Path, base: Any, forge: Callable[..., None]) -> None:
    conn = edit(db)
    c = cert(conn, 2)  # exactly a quorum: every forged vote matters
    forge(c, base, 2)
    set_cert(conn, 2, c)
    conn.close()
    report = run(db)
    find(report, "certificate", 2)
    assert first_height(report) == 2


def test_deleted_block_keeping_its_records(db: Path, base: Any) -> None:
    conn = edit(db)
    conn.execute("DELETE FROM blocks WHERE height = 3")
    conn.close()
    report = run(db)
    find(report, "height", 3)
    for k, rid in enumerate(base.ids[2]):
        find(report, "orphan_record", 3, index=8 + k, record=rid)


def test_deleted_last_block_is_a_rollback_for_a_remembering_auditor(db: Path) -> None:
    before = checkpoint_of(db)
    conn = edit(db)
    truncate(conn, 5)
    conn.close()
    assert run(db).ok  # internally consistent
    report = run(db, checkpoint=before)
    assert report.checkpoint == "rollback"
    assert "height 6" in find(report, "rollback", 5).message


def test_truncated_tail_alone_passes_but_not_against_the_checkpoint(db: Path, base: Any, tmp_path: Path) -> None:
    state = tmp_path / "audit.json"
    checkpoint_of(db).save(state)
    tamper("truncated_tail", db, base)
    alone = run(db)
    assert alone.ok and alone.head is not None and alone.head.height == 4
    report = run(db, checkpoint=Checkpoint.load(state))
    assert report.checkpoint == "rollback"
    f = find(report, "rollback", 4)
    assert "20" in f.message and "height 6" in f.message


def test_rewritten_history_is_a_fork(base: Any, tmp_path: Path, kit: Any) -> None:
    """Another history of the same genesis, longer than the one audited before and valid in
    itself: the records up to the old checkpoint no longer give its root."""
    before = checkpoint_of(base.path)
    cons = Consortium(validators=4)
    ledger = cons.ledger(tmp_path / "other.db")
    for height in range(1, 8):  # 7 blocks, 21 records: past the old checkpoint in both
        recs = [cons.record(cons.alice, "dataset.contribute", cons.dataset_body(f"d{height}-{i}")) for i in range(3)]
        kit.commit(ledger, recs, cons.validators, time=kit.T0.format(height))
    ledger.store.close()
    assert run(tmp_path / "other.db").ok
    report = run(tmp_path / "other.db", checkpoint=before)
    assert report.checkpoint == "fork"
    find(report, "fork", 6)


def test_edited_genesis_with_chain_id_rewritten_too(db: Path, base: Any) -> None:
    """The tamperer also rewrites the stored chain id: the blocks no longer belong."""
    conn = edit(db)
    doc = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0])
    doc["participants"][1]["roles"].append("evaluator")
    from ledger.genesis import parse_genesis

    conn.execute("UPDATE meta SET value = ? WHERE key = 'genesis'", (json.dumps(doc),))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'chain_id'", (parse_genesis(doc).chain_id,))
    conn.close()
    report = run(db)
    assert not [f for f in report.findings if f.check == "chain_id"]
    find(report, "prev", 1)
    find(report, "chain", 1)
    find(report, "certificate", 1)


def test_edited_genesis_that_no_longer_parses(db: Path) -> None:
    conn = edit(db)
    conn.execute("UPDATE meta SET value = '{\"v\": 2}' WHERE key = 'genesis'")
    conn.close()
    report = run(db)
    assert [f.check for f in report.findings] == ["genesis"]


# --- the same through the command line -------------------------------------------------
@pytest.mark.parametrize("name", list(TAMPERS))
def test_cli_audit_reports_each_tamper(name: str, db: Path, base: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "audit.json"
    clean = runner.invoke(cli, ["audit", str(db), "--json", "--state", str(state)])
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.output)["ok"] is True and state.exists()
    want = tamper(name, db, base)
    res = runner.invoke(cli, ["audit", str(db), "--json", "--state", str(state)])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.output)
    assert doc["ok"] is False
    hits = [f for f in doc["findings"] if f["check"] == want.check and f.get("height") == want.height
            and (want.index is None or f.get("index") == want.index)
            and (want.record is None or f.get("record") == want.record)]
    assert hits, doc["findings"]
    # A failed audit does not overwrite the remembered checkpoint.
    assert Checkpoint.load(state) == checkpoint_of_clean(base)


def checkpoint_of_clean(base: Any) -> Checkpoint:
    return Checkpoint(base.cons.chain_id, 6, base.hashes[-1], 20, run(base.path).head.log_root)  # type: ignore[union-attr]


def test_cli_audit_human_output_names_check_and_height(db: Path, base: Any) -> None:
    tamper("edited_body", db, base)
    res = CliRunner().invoke(cli, ["audit", str(db)])
    assert res.exit_code == 1
    assert "FAIL [record_id] height 3, index 9" in res.output
    assert "FAILED" in res.output


def test_cli_audit_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["audit", str(tmp_path / "nope.db"), "--json"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error:") or "error:" in res.stderr
