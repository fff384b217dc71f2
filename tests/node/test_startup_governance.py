"""Node start-up after membership changes (node.startup, PROTOCOL.md 9.1): the head's
certificate is checked against the set certifying the head's height, and edited governance
tables are rebuilt from the log."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from factory import Consortium
from test_audit_governance import NEW, _forge, build

from ledger.errors import VerificationError
from ledger.store import Store
from node.startup import check_store


@pytest.fixture(scope="module")
def cons() -> Consortium:
    return Consortium(validators=4)


def test_a_store_after_changes_starts_and_rebuilds_edited_governance_tables(
        tmp_path: Path, kit: Any, cons: Consortium, caplog: pytest.LogCaptureFixture) -> None:
    build(tmp_path / "n.db", kit, cons).store.close()
    with sqlite3.connect(tmp_path / "n.db") as conn:
        conn.execute("DELETE FROM validators WHERE height = 3")  # as if the removal never happened
    with Store(tmp_path / "n.db") as store, caplog.at_level(logging.WARNING, logger="node.startup"):
        check_store(store)
        assert [v.key for v in store.validators_at(3)][-1] == NEW.public
        assert len(store.validators_at(3)) == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "node.startup"]
    assert len(lines) == 1 and "validators" in lines[0] and "rebuilt from the log" in lines[0]


def test_a_head_certified_by_a_removed_validator_is_refused(tmp_path: Path, kit: Any, cons: Consortium) -> None:
    v0, v1, _v2, v3 = cons.validators
    path = _forge(tmp_path, kit, cons, 4, signers=[v0, v1, v3])  # the head; v3 left in block 2
    with Store(path) as store, pytest.raises(VerificationError) as ei:
        check_store(store)
    assert ei.value.code == "untrusted_database"
    assert "certificate of block 4" in ei.value.message and "set certifying height 4" in ei.value.message
