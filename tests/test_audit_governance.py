"""The audit across membership changes (PROTOCOL.md 7.2, 9.1): every header's
``next_validators`` against the replayed set, every certificate against the set certifying
its height, the governance tables against the replay; each failure located."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from factory import Consortium, key

from ledger.audit import DbSource, Finding, audit
from ledger.blocks import Header
from ledger.canonical import jcs
from ledger.chain import Block, Ledger
from ledger.errors import CertificateError
from ledger.governance import make_pop
from ledger.keys import SigningKey
from ledger.reader import StoreReader
from ledger.store import Store

NEW = key("validator-new")
T = "2026-11-21T12:00:0{}Z"


def add_new(c: Consortium) -> dict[str, Any]:
    return {"op": "validator.add", "key": NEW.public, "name": "node-new", "url": "http://127.0.0.1:8009",
            "pop": make_pop(NEW, c.chain_id)}


def plan(c: Consortium) -> list[tuple[list[Any], list[SigningKey]]]:
    """(records, signers of the block's certificate) per height: NEW joins in block 1 (so
    certifies from 2), validator-3 leaves in block 2 (so signs nothing from 3)."""
    v0, v1, v2, v3 = c.validators
    return [
        (c.adoption(add_new(c)), [v0, v1, v2, v3]),
        (c.adoption({"op": "validator.remove", "key": v3.public}), [v0, v1, v2, v3, NEW]),
        (c.adoption({"op": "org.add", "name": "org-z", "admins": [key("admin-z").public]})
         + c.adoption(c.policy_action("0.2", "0.2", "0.6")), [v0, v1, v2, NEW]),
        ([c.record(c.alice, "dataset.contribute", c.dataset_body("d"))], [v1, v2, NEW]),
    ]


def build(path: Path, kit: Any, c: Consortium, *, upto: int = 4) -> Ledger:
    ledger = c.ledger(path)
    for height, (recs, keys) in enumerate(plan(c)[:upto], start=1):
        kit.commit(ledger, recs, keys, time=T.format(height))
    return ledger


@pytest.fixture(scope="module")
def cons() -> Consortium:
    return Consortium(validators=4)


@pytest.fixture
def clean(tmp_path: Path, kit: Any, cons: Consortium) -> Path:
    build(tmp_path / "clean.db", kit, cons).store.close()
    return tmp_path / "clean.db"


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [str(f) for f in findings]
    return findings[0]


def test_chain_with_changes_audits_clean_and_the_store_keeps_every_set(clean: Path, cons: Consortium) -> None:
    report = audit(DbSource(clean))
    assert report.ok, [str(f) for f in report.findings]
    v0, v1, v2, v3 = (v.public for v in cons.validators)
    with Store(clean) as store:
        reader = StoreReader(store)
        assert [v.key for v in reader.validators_at(1)] == [v0, v1, v2, v3]
        assert [v.key for v in reader.validators_at(2)] == [v0, v1, v2, v3, NEW.public]
        assert [v.key for v in reader.validators_at(3)] == [v.key for v in reader.validators_at(5)] == [
            v0, v1, v2, NEW.public]
        assert reader.membership_changes(5) == [1, 2] and reader.membership_changes(2) == [1]
        assert [first for first, _ in store.validator_sets()] == [1, 2, 3]
        # The reader's own replay agrees with the derived table.
        assert reader.governance().validator_sets == store.validator_sets()
        assert store.load_state().organisations == ["org-a", "org-b", "org-z"]


def test_commit_refuses_a_certificate_of_the_wrong_set(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    ledger = build(tmp_path / "c.db", kit, cons, upto=2)
    recs, _keys = plan(cons)[2]
    block, _ = ledger.build_block(recs, proposer=NEW.public, time=T.format(3))
    v0, v1, _v2, v3 = cons.validators
    with pytest.raises(CertificateError, match="not a validator of the set certifying height 3"):
        ledger.commit(block, kit.certify(block.header, [v0, v1, v3]))  # v3 was removed in block 2
    ledger.commit(block, kit.certify(block.header, [v0, v1, NEW]))
    assert ledger.height == 3


def test_after_an_add_the_old_validators_alone_are_no_quorum(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    ledger = build(tmp_path / "q.db", kit, cons, upto=1)
    recs, _ = plan(cons)[1]
    block, _ = ledger.build_block(recs, proposer=NEW.public, time=T.format(2))
    with pytest.raises(CertificateError, match="3 distinct validator votes; 4 of 5 are needed"):
        ledger.commit(block, kit.certify(block.header, cons.validators[:3]))


def _forge(tmp_path: Path, kit: Any, cons: Consortium, height: int, *, header: Any = None,
           signers: list[SigningKey] | None = None) -> Path:
    """The chain with block ``height`` stored as given (a header edited before it was
    certified, or certified by ``signers``), the blocks after it built on top."""
    path = tmp_path / f"forged-{height}.db"
    ledger = build(path, kit, cons, upto=height - 1)
    steps = plan(cons)
    recs, keys = steps[height - 1]
    block, _ = ledger.build_block(recs, proposer=keys[0].public, time=T.format(height))
    if header is not None:
        block = Block(header(block.header), block.records, block.nodes, block.state)
    cert = kit.certify(block.header, signers or keys)
    ledger.store.append_block(block.header, cert, block.records, block.nodes, block.state)
    block.state.index = ledger.store
    block.state.settle()
    ledger.state = block.state
    for h in range(height + 1, len(steps) + 1):
        recs, keys = steps[h - 1]
        kit.commit(ledger, recs, keys, time=T.format(h))
    ledger.store.close()
    return path


@pytest.mark.parametrize("height", [1, 2, 3, 4])
def test_a_header_whose_next_validators_is_not_the_replayed_set_is_located(
        tmp_path: Path, kit: Any, cons: Consortium, height: int) -> None:
    """The validators certified a header naming another next set: the audit names the height."""
    wrong = "ab" * 32
    path = _forge(tmp_path, kit, cons, height, header=lambda h: replace(h, next_validators=wrong))
    f = only(audit(DbSource(path)).findings)
    assert (f.check, f.height) == ("next_validators", height)
    assert "abababababababab" in f.message


def test_a_block_signed_by_a_removed_validator_is_located(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    v0, v1, _v2, v3 = cons.validators
    path = _forge(tmp_path, kit, cons, 3, signers=[v0, v1, v3])  # v3 left in block 2
    f = only(audit(DbSource(path)).findings)
    assert (f.check, f.height) == ("certificate", 3)
    assert "not a validator of the set certifying height 3" in f.message


def test_a_block_certified_by_the_old_set_after_an_add_is_located(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    path = _forge(tmp_path, kit, cons, 2, signers=cons.validators[:3])  # 3 of 5 after NEW joined
    f = only(audit(DbSource(path)).findings)
    assert (f.check, f.height) == ("certificate", 2)
    assert "4 of 5 are needed" in f.message


def _edit(src: Path, tmp_path: Path, sql: str, *args: Any) -> Path:
    db = tmp_path / "edited.db"
    shutil.copy(src, db)
    conn = sqlite3.connect(db, isolation_level=None)
    for table in ("blocks",):  # the append-only triggers stop mistakes, not an editor
        for op in ("update", "delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op}")
    assert conn.execute(sql, args).rowcount == 1
    conn.close()
    return db


@pytest.mark.parametrize(("sql", "table", "key", "what"), [
    ("UPDATE validators SET url = 'http://evil' WHERE height = 3 AND position = 3", "validators", "3/3",
     "url is 'http://evil'"),
    ("DELETE FROM validators WHERE height = 2 AND position = 4", "validators", "2/4", "row missing"),
    ("INSERT INTO validators VALUES (4, 0, 'ab', 'x', 'y')", "validators", "4/0", "row the log does not give"),
    ("UPDATE organisations SET removed_at = 7 WHERE name = 'org-z'", "organisations", "org-z", "removed_at is 7"),
    ("UPDATE proposals SET approvals = 'org-a' WHERE adopted_at = 1", "proposals", None, "approvals is 'org-a'"),
    ("UPDATE proposals SET adopted_at = NULL WHERE adopted_at = 3", "proposals", None, "adopted_at is None"),
    ("UPDATE policies SET proposal = NULL", "policies", None, "proposal is None"),
], ids=["validator-url", "validator-dropped", "validator-added", "org-removed", "approvals", "unadopted",
        "policy-proposal"])
def test_edited_governance_tables_are_located(clean: Path, tmp_path: Path, sql: str, table: str, key: str | None,
                                              what: str) -> None:
    f = only(audit(DbSource(_edit(clean, tmp_path, sql))).findings)
    assert (f.check, f.table) == ("derived_state", table), str(f)
    assert key is None or f.key == key, f.key
    assert what in f.message, f.message


def test_a_node_store_reopened_after_changes_checks_the_next_block_against_the_new_set(
        clean: Path, kit: Any, cons: Consortium) -> None:
    """The state a store loads (derived tables) carries the set: the next block needs it."""
    ledger = Ledger(Store(clean))
    block, _ = ledger.build_block([cons.record(cons.bob, "dataset.contribute", cons.dataset_body("e"))],
                                  proposer=NEW.public, time=T.format(5))
    assert block.header.next_validators == ledger.state.validators_hash()
    v0, v1, v2, v3 = cons.validators
    with pytest.raises(CertificateError):
        ledger.commit(block, kit.certify(block.header, [v0, v1, v3]))
    ledger.commit(block, kit.certify(block.header, [v0, v2, NEW]))
    ledger.store.close()
    assert audit(DbSource(clean)).ok


def test_header_hash_covers_next_validators(cons: Consortium) -> None:
    h = Header(cons.chain_id, 1, cons.chain_id, T.format(1), cons.validators[0].public, 0, 0, "00" * 32, "11" * 32)
    assert replace(h, next_validators="22" * 32).hash != h.hash


def test_a_stored_header_edited_in_place_is_located(clean: Path, tmp_path: Path) -> None:
    """next_validators rewritten in the stored header of block 2 (the block that removed
    validator-3): its hash changes, so its certificate and the next block's prev no longer
    hold, and the set it names is not the replayed one; every finding names height 2 or 3."""
    conn = sqlite3.connect(clean)
    header = orjson.loads(conn.execute("SELECT header FROM blocks WHERE height = 2").fetchone()[0])
    conn.close()
    header["next_validators"] = "cd" * 32
    db = _edit(clean, tmp_path, "UPDATE blocks SET header = ? WHERE height = 2", jcs(header).decode())
    found = {(f.check, f.height) for f in audit(DbSource(db)).findings}
    assert found == {("certificate", 2), ("next_validators", 2), ("prev", 3)}, found
