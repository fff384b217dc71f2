"""The audit of a database file trusts no table: the Merkle nodes and the derived state are
recomputed and compared row by row, and a damaged file is a finding (exit 1), never a
traceback. Each test edits a copy of the varied chain (``conftest.build_varied``: six
blocks, 20 records) behind the dropped append-only triggers, or damages the file itself.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from factory import Consortium

from ledger import merkle
from ledger.audit import AuditReport, Checkpoint, DbSource, Finding, audit
from ledger.cli import cli
from ledger.errors import InputError
from ledger.store import Store, node_key

T = "2026-11-21T12:00:0{}Z"


@pytest.fixture
def db(chain1: Any, tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    shutil.copy(chain1.path, path)
    return path


def edit(path: Path, kit: Any) -> sqlite3.Connection:
    return kit.drop_triggers(path)  # type: ignore[no-any-return]


def run(path: Path, **kw: Any) -> AuditReport:
    return audit(DbSource(path), **kw)


def only(report: AuditReport) -> Finding:
    assert len(report.findings) == 1, [str(f) for f in report.findings]
    return report.findings[0]


def cli_audit(*args: str) -> tuple[int, Any]:
    res = CliRunner().invoke(cli, ["audit", *args, "--json"])
    assert "Traceback" not in res.output, res.output
    return res.exit_code, json.loads(res.output) if res.exit_code in (0, 1) else res.output


# --- the merkle table ----------------------------------------------------------------------
def height_completing(chain: Any, level: int, index: int) -> int:
    """The block in which perfect subtree (level, index) became complete."""
    return int(chain.where(chain.all_ids[((index + 1) << level) - 1])[0])


@pytest.mark.parametrize(("level", "index"), [(0, 5), (0, 18), (1, 2), (2, 3), (3, 1), (4, 0)])
def test_edited_merkle_row_is_one_finding_at_its_level_index_and_height(
        db: Path, chain1: Any, kit: Any, level: int, index: int) -> None:
    conn = edit(db, kit)
    conn.execute("UPDATE merkle SET h = ? WHERE k = ?", (bytes(32), node_key(level, index)))
    conn.close()
    f = only(run(db))
    assert (f.check, f.table, f.key) == ("merkle", "merkle", f"level {level} index {index}")
    assert f.height == height_completing(chain1, level, index)
    if level == 0:
        assert (f.index, f.record) == (index, chain1.all_ids[index])
    assert "0000000000000000" in f.message


def test_merkle_row_missing_or_extra(db: Path, chain1: Any, kit: Any) -> None:
    conn = edit(db, kit)
    conn.execute("DELETE FROM merkle WHERE k = ?", (node_key(2, 2),))
    conn.execute("INSERT INTO merkle VALUES (?, ?)", (node_key(0, 20), bytes(32)))  # past the log
    conn.execute("INSERT INTO merkle VALUES (?, ?)", (node_key(5, 0), bytes(32)))  # a level the tree lacks
    conn.close()
    report = run(db)
    missing = [f for f in report.findings if "missing" in f.message]
    assert [(f.key, f.height) for f in missing] == [("level 2 index 2", height_completing(chain1, 2, 2))]
    extra = sorted(f.key for f in report.findings if "does not give" in f.message)  # type: ignore[type-var]
    assert extra == ["level 0 index 20", "level 5 index 0"]
    assert len(report.findings) == 3


def test_merkle_node_of_the_wrong_type_is_a_finding(db: Path, kit: Any) -> None:
    conn = edit(db, kit)
    conn.execute("UPDATE merkle SET h = 'not a hash' WHERE k = ?", (node_key(1, 0),))
    conn.close()
    f = only(run(db))
    assert f.key == "level 1 index 0" and "str, not a hash" in f.message


def test_edited_record_is_blamed_on_the_record_not_on_the_merkle_table(db: Path, chain1: Any, kit: Any) -> None:
    conn = edit(db, kit)
    env = json.loads(conn.execute("SELECT envelope FROM records WHERE idx = 9").fetchone()[0])
    env["body"]["value"] = "0.99"
    conn.execute("UPDATE records SET envelope = ? WHERE idx = 9", (json.dumps(env),))
    conn.close()
    checks = {f.check for f in run(db).findings}
    assert "record_id" in checks and "merkle" not in checks


# --- the derived tables ----------------------------------------------------------------------
def _admin_bob(conn: sqlite3.Connection, c: Consortium) -> tuple[str, str, str]:
    conn.execute("UPDATE identities SET roles = 'admin,contributor' WHERE key = ?", (c.bob.public,))
    return "identities", c.bob.public, "roles is 'admin,contributor', the log gives 'annotator,contributor,trainer'"


def _unrevoke_carol(conn: sqlite3.Connection, c: Consortium) -> tuple[str, str, str]:
    conn.execute("UPDATE identities SET revoked = 0 WHERE key = ?", (c.carol.public,))
    return "identities", c.carol.public, "revoked is 0, the log gives 1"


def _new_identity(conn: sqlite3.Connection, c: Consortium) -> tuple[str, str, str]:
    conn.execute("INSERT INTO identities VALUES (?, 'mallory', 'org-a', 'admin', 0, NULL)", ("ab" * 32,))
    return "identities", "ab" * 32, "row the log does not give"


def _deleted_version(conn: sqlite3.Connection, c: Consortium) -> tuple[str, str, str]:
    conn.execute("DELETE FROM datasets WHERE name = 'mnist' AND version = '2'")
    return "datasets", "mnist/2", "row missing"


def _budget_refilled(conn: sqlite3.Connection, c: Consortium) -> tuple[str, str, str]:
    conn.execute("UPDATE budgets SET spent_epsilon = '0' WHERE dataset = 'mnist'")
    return "budgets", "mnist", "spent_epsilon is '0', the log gives '0.5'"


def _policy_dropped(conn: sqlite3.Connection, c: Consortium) -> tuple[str, str, str]:
    conn.execute("DELETE FROM policies")
    return "policies", "11", "row missing"


@pytest.mark.parametrize("tamper", [_admin_bob, _unrevoke_carol, _new_identity, _deleted_version,
                                    _budget_refilled, _policy_dropped])
def test_edited_derived_row_is_a_finding_naming_table_and_key(db: Path, chain1: Any, kit: Any, tamper: Any) -> None:
    conn = edit(db, kit)
    table, key, what = tamper(conn, chain1.cons)
    conn.close()
    f = only(run(db))
    assert (f.check, f.table, f.key, f.height) == ("derived_state", table, key, 6)
    assert what in f.message
    assert f"table {table} {key}" in str(f)


def test_tail_cut_without_its_merkle_nodes_and_state_is_caught_alone(db: Path, kit: Any) -> None:
    """Deleting the last blocks and their records leaves Merkle nodes and derived rows the
    shorter log does not give: caught without a remembered checkpoint."""
    conn = edit(db, kit)
    conn.execute("DELETE FROM blocks WHERE height >= 5")
    conn.execute("DELETE FROM records WHERE height >= 5")
    conn.close()
    report = run(db)
    assert {f.check for f in report.findings} == {"merkle", "derived_state"}
    assert {"identities", "datasets", "budgets", "merkle"} <= {f.table for f in report.findings}


# --- a damaged file ----------------------------------------------------------------------------
def test_truncated_file_is_a_finding_with_exit_1(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    report = run(db)
    assert not report.ok and report.findings[0].check in ("database", "integrity_check")
    code, doc = cli_audit(str(db))
    assert code == 1 and doc["ok"] is False
    assert doc["findings"][0]["check"] in ("database", "integrity_check")


@pytest.mark.parametrize("table", ["records", "blocks", "merkle", "identities", "meta"])
def test_flipped_bytes_in_a_page_are_a_finding_with_exit_1(db: Path, table: str) -> None:
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:  # the b-tree page header of the table's root page
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 12)
    report = run(db)
    assert not report.ok
    assert {f.check for f in report.findings} & {"database", "integrity_check"}
    code, doc = cli_audit(str(db))
    assert code == 1 and doc["ok"] is False


def test_only_an_sqlite_header_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    assert [f.check for f in run(path).findings] == ["database"]
    assert cli_audit(str(path))[0] == 1


def test_sqlite_file_without_ledger_tables_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(InputError) as ei:
        DbSource(path)
    assert ei.value.code == "bad_database"
    assert cli_audit(str(path))[0] == 2


def test_missing_ledger_table_is_a_finding(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE budgets")
    conn.close()
    report = run(db)
    assert [(f.check, f.table) for f in report.findings] == [("schema", "budgets")]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE merkle")
    conn.close()
    report = run(db)  # without a ledger table the rows are not read at all
    assert [(f.check, f.table) for f in report.findings] == [("schema", "merkle"), ("schema", "budgets")]


@pytest.mark.parametrize("jobs", [1, 2])
def test_undecodable_envelope_is_a_located_finding(db: Path, chain1: Any, kit: Any, jobs: int) -> None:
    conn = edit(db, kit)
    conn.execute("UPDATE records SET envelope = CAST(X'7B2276223AFF7D' AS TEXT) WHERE idx = 7")
    conn.close()
    report = run(db, jobs=jobs)
    f = next(f for f in report.findings if f.check == "record_form")
    assert (f.height, f.index, f.record) == (2, 7, chain1.all_ids[7])
    assert "not UTF-8 (byte 5 of 7)" in f.message
    code, doc = cli_audit(str(db))
    assert code == 1 and any(x["check"] == "record_form" and x["index"] == 7 for x in doc["findings"])


def test_undecodable_header_and_id(db: Path, kit: Any) -> None:
    conn = edit(db, kit)
    conn.execute("UPDATE blocks SET header = CAST(X'FF' AS TEXT) WHERE height = 2")
    conn.execute("UPDATE records SET id = CAST(X'FFFE' AS TEXT) WHERE idx = 12")
    conn.close()
    report = run(db)
    assert any(f.check == "header" and f.height == 2 for f in report.findings)
    assert cli_audit(str(db))[0] == 1


# --- --state: the block hash at the saved height ---------------------------------------------
def build(path: Path, cons: Consortium, kit: Any, last_time: str, extra: int = 0) -> None:
    """Three blocks of the same records; the third at ``last_time``; then ``extra`` more."""
    ledger = cons.ledger(path)
    for height in range(1, 4):
        recs = [cons.record(cons.alice, "dataset.contribute", cons.dataset_body(f"d{height}"), nonce=f"n{height}")]
        kit.commit(ledger, recs, cons.validators, time=last_time if height == 3 else T.format(height))
    for height in range(4, 4 + extra):
        recs = [cons.record(cons.bob, "dataset.contribute", cons.dataset_body(f"e{height}"), nonce=f"e{height}")]
        kit.commit(ledger, recs, cons.validators, time=T.format(height))
    ledger.store.close()


@pytest.mark.parametrize("extra", [0, 2], ids=["at-the-head", "then-grown"])
def test_another_block_at_the_saved_height_is_a_fork_and_keeps_the_state_file(
        tmp_path: Path, kit: Any, extra: int) -> None:
    """The validator signs a second block at height 3 with the same records (same
    log_size and log_root, another time): a fork, and the state file is left alone."""
    cons = Consortium()
    build(tmp_path / "a.db", cons, kit, T.format(3))
    build(tmp_path / "b.db", cons, kit, T.format(9), extra)
    state = tmp_path / "audit.json"
    assert cli_audit(str(tmp_path / "a.db"), "--state", str(state))[0] == 0
    saved = state.read_text()
    head_a = Checkpoint.load(state)
    assert head_a is not None and run(tmp_path / "b.db").ok
    report = run(tmp_path / "b.db", checkpoint=head_a)
    assert report.checkpoint == "fork"
    f = only(report)
    assert (f.check, f.height) == ("fork", 3) and head_a.hash[:16] in f.message
    code, doc = cli_audit(str(tmp_path / "b.db"), "--state", str(state))
    assert code == 1 and doc["checkpoint"] == "fork"
    assert state.read_text() == saved


def test_same_chain_grown_is_still_consistent(tmp_path: Path, kit: Any) -> None:
    cons = Consortium()
    build(tmp_path / "a.db", cons, kit, T.format(3), 2)
    with Store(tmp_path / "a.db") as store:
        head3 = store.block(3)
        assert head3 is not None
        cp = Checkpoint(cons.chain_id, 3, head3.hash, 3, merkle.root_at(3, store.get_nodes).hex())
    report = run(tmp_path / "a.db", checkpoint=cp)
    assert report.ok and report.checkpoint is not None and report.checkpoint.startswith("consistent")


class FailingReads(DbSource):
    """A file whose pages fail to read part way (as a damaged page does, once SQLite
    reaches it): the merkle table after ``nodes`` rows, or the blocks after ``blocks``."""

    def __init__(self, path: Path, *, nodes: int | None = None, blocks: int | None = None) -> None:
        super().__init__(path)
        self.nodes_left, self.blocks_left = nodes, blocks

    def merkle_level(self, level: int) -> Any:
        for row in super().merkle_level(level):
            if self.nodes_left is not None:
                if self.nodes_left == 0:
                    raise sqlite3.DatabaseError("database disk image is malformed")
                self.nodes_left -= 1
            yield row

    def blocks(self) -> Any:
        for blk in super().blocks():
            if self.blocks_left == 0:
                raise sqlite3.DatabaseError("database disk image is malformed")
            if self.blocks_left is not None:
                self.blocks_left -= 1
            yield blk


@pytest.mark.parametrize(("nodes", "blocks", "height"), [(10, None, 2), (None, 3, 4)], ids=["merkle", "blocks"])
def test_a_read_failing_part_way_is_one_located_finding(
        db: Path, nodes: int | None, blocks: int | None, height: int) -> None:
    report = audit(FailingReads(db, nodes=nodes, blocks=blocks))
    assert [(f.check, f.height) for f in report.findings] == [("database", height)]
    assert "malformed" in report.findings[0].message
