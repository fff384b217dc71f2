"""The node checks its database before it trusts it (node.startup): an edited Merkle
frontier, record or head is refused with one line; edited derived tables are rebuilt from
the log, so an identity the edit made admin cannot register anyone."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import make_home
from factory import Consortium
from procs import provledger_cmd

from ledger.chain import Ledger
from ledger.errors import VerificationError
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.records import make_record, parse_record
from ledger.store import Store, node_key

H = "ab" * 32


def dataset_body(name: str) -> dict[str, Any]:
    return {"dataset": name, "version": "1", "content_hash": H, "size_bytes": 10, "items": 1, "license": "MIT",
            "modality": "text", "derived_from": [], "privacy_budget": None}


def fill(db: Path, validator: SigningKey, signer: SigningKey, blocks: int = 3, per: int = 3) -> None:
    """``blocks`` blocks of ``per`` dataset.contribute records by ``signer``: 9 records, so
    the frontier is the subtrees (3, 0) and (0, 8)."""
    with Store(db) as store:
        ledger = Ledger(store)
        for b in range(blocks):
            recs = [make_record(signer, ledger.chain_id, "dataset.contribute", dataset_body(f"d{b}-{i}"),
                                nonce=f"n{b}-{i}") for i in range(per)]
            _, _, rejected = ledger.commit_single(validator, [parse_record(e) for e in recs],
                                                 time=f"2026-11-21T12:00:0{b}Z")
            assert not rejected


def edit(db: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    for t in ("meta", "blocks", "records", "merkle"):
        for op in ("update", "delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {t}_no_{op}")
    assert conn.execute(sql, args).rowcount == 1
    conn.close()


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, Consortium]:
    c = Consortium()
    home = make_home(tmp_path / "home", c, block_interval_ms=10)
    fill(home / "ledger.db", c.validators[0], c.alice)
    return home, c


def open_node(home: Path) -> Any:
    from node.daemon import Node

    return Node.open(home)


def test_clean_database_starts(filled: tuple[Path, Consortium]) -> None:
    node = open_node(filled[0])
    assert node.store.log_size() == 9
    node.store.close()


@pytest.mark.parametrize(("sql", "args", "said"), [
    ("UPDATE merkle SET h = ? WHERE k = ?", (bytes(32), node_key(3, 0)), "merkle table edited"),
    ("UPDATE merkle SET h = ? WHERE k = ?", (bytes(32), node_key(0, 8)), "merkle table edited"),
    ("DELETE FROM merkle WHERE k = ?", (node_key(3, 0),), "frontier is incomplete"),
    ("UPDATE merkle SET h = 'x' WHERE k = ?", (node_key(3, 0),), "merkle table edited"),
    ("UPDATE merkle SET h = ? WHERE k = ?", (b"\x01" * 31, node_key(0, 8)), "merkle table edited"),
    ("UPDATE records SET envelope = replace(envelope, 'd1-1', 'd1-X') WHERE idx = 4", (), "does not hash"),
    ("UPDATE records SET nonce = 'other' WHERE idx = 4", (), "indexed columns"),
    ("UPDATE records SET id = ? WHERE idx = 4", (H,), "does not hash"),
    ("DELETE FROM records WHERE idx = 8", (), "holds 8 rows"),
    ("UPDATE blocks SET hash = ? WHERE height = 3", (H,), "stored under hash"),
    ("UPDATE blocks SET certificate = replace(certificate, '\"round\":0', '\"round\":1') WHERE height = 3", (),
     "certificate of block 3"),
], ids=["frontier-top", "frontier-leaf", "frontier-missing", "frontier-text", "frontier-short", "envelope", "nonce-column", "id-column",
        "record-deleted", "head-hash", "head-certificate"])
def test_edited_ledger_table_is_refused_with_one_line(
        filled: tuple[Path, Consortium], sql: str, args: tuple[Any, ...], said: str) -> None:
    home, _ = filled
    edit(home / "ledger.db", sql, *args)
    with pytest.raises(VerificationError) as ei:
        open_node(home)
    assert ei.value.code == "untrusted_database"
    assert said in ei.value.message and "\n" not in ei.value.message


def test_edited_identity_is_rebuilt_and_cannot_register(
        filled: tuple[Path, Consortium], caplog: pytest.LogCaptureFixture) -> None:
    """alice (a contributor of org-a) made admin in the identities table: the node rebuilds
    the table from the log and refuses the identity.register only the edit allowed."""
    from fastapi.testclient import TestClient

    from node.app import create_app

    home, c = filled
    edit(home / "ledger.db", "UPDATE identities SET roles = 'admin,contributor' WHERE key = ?", c.alice.public)
    with caplog.at_level(logging.WARNING, logger="node.startup"):
        app = create_app(home)
    lines = [r.getMessage() for r in caplog.records if r.name == "node.startup"]
    assert len(lines) == 1 and "identities" in lines[0] and "rebuilt from the log" in lines[0]
    reg = c.envelope(c.alice, "identity.register",
                     {"key": c.carol.public, "name": "carol", "org": "org-a", "roles": ["admin"]})
    with TestClient(app) as client:
        r = client.post("/v1/records?wait=true&timeout=60", content=orjson.dumps(reg))
        assert r.status_code == 422 and r.json()["code"] == "forbidden_role", r.text
    with sqlite3.connect(home / "ledger.db") as conn:
        roles = conn.execute("SELECT roles FROM identities WHERE key = ?", (c.alice.public,)).fetchone()[0]
    assert roles == "annotator,contributor,evaluator,trainer"


# --- real node processes -----------------------------------------------------------------
@pytest.mark.e2e
def test_node_process_refuses_an_edited_merkle_frontier(node_home: Path) -> None:
    fill(node_home / "ledger.db", SigningKey.load(node_home / "validator.key"), SigningKey.load(node_home / "alice.key"))
    edit(node_home / "ledger.db", "UPDATE merkle SET h = ? WHERE k = ?", bytes(32), node_key(3, 0))
    proc = subprocess.run([*provledger_cmd(), "node", "start", "--home", str(node_home)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "merkle table edited" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.e2e
def test_node_process_rebuilds_an_edited_identity(node_home: Path, start_node: Any) -> None:
    alice = SigningKey.load(node_home / "alice.key")
    fill(node_home / "ledger.db", SigningKey.load(node_home / "validator.key"), alice)
    edit(node_home / "ledger.db", "UPDATE identities SET roles = 'admin,contributor' WHERE key = ?", alice.public)
    node = start_node(node_home)
    with httpx.Client(base_url=node.url, timeout=90) as http:
        me = next(i for i in http.get("/v1/identities").json()["identities"] if i["key"] == alice.public)
        assert "admin" not in me["roles"], me
        env = make_record(alice, parse_genesis(http.get("/v1/genesis").json()).chain_id, "identity.register",
                          {"key": SigningKey.from_seed(b"\x07" * 32).public, "name": "mallory", "org": me["org"], "roles": ["admin"]})
        r = http.post("/v1/records?wait=true&timeout=60", content=orjson.dumps(env))
        assert r.status_code == 422 and r.json()["code"] == "forbidden_role", r.text
    assert node.terminate() == 0
    assert "rebuilt from the log" in node.log()
