"""The ``provledger`` command line: keys, genesis, audit, prove, verify-proof, help."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import rfc8785
from click.testing import CliRunner, Result
from factory import key

from ledger.audit import Checkpoint
from ledger.cli import cli
from ledger.keys import SigningKey

PROVLEDGER = Path(sys.executable).parent / "provledger"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_error_line(res: Result) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


# --- help ------------------------------------------------------------------------------------
def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
    return out


ALL = _commands(cli)


def test_the_core_commands_exist() -> None:
    assert {("keygen",), ("pubkey",), ("genesis",), ("audit",), ("prove",), ("verify-proof",)} <= set(ALL)


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    res = run(*path, "--help")
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"provledger {' '.join(path)} --help has no example"


# --- keys ------------------------------------------------------------------------------------
def test_keygen_writes_0600_and_prints_the_public_key(tmp_path: Path) -> None:
    out = tmp_path / "alice.key"
    res = run("keygen", "--out", str(out), "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert doc["public_key"] == SigningKey.load(out).public
    assert run("pubkey", str(out)).stdout.strip() == doc["public_key"]


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "alice.key"
    assert run("keygen", "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    res = run("keygen", "--out", str(out))
    assert res.exit_code == 2
    assert str(out) in one_error_line(res)
    assert out.read_bytes() == before


def test_pubkey_of_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    res = run("pubkey", str(bad))
    assert res.exit_code == 2
    one_error_line(res)


# --- genesis ---------------------------------------------------------------------------------
def _genesis_args(tmp_path: Path) -> list[str]:
    v, adm, alice = key("validator-0"), key("admin-a"), key("alice")
    vfile = tmp_path / "validator.key"
    if not vfile.exists():
        v.save(vfile)
    return ["genesis", "--name", "consortium-x", "--created", "2026-11-21T12:00:00Z",
            "--validator", f"node-a={vfile}@http://127.0.0.1:8001",
            "--org", f"org-a={adm.public}",
            "--participant", f"{alice.public}=alice@org-a:contributor,annotator",
            "--policy", "data=0.6,annotation=0.2,training=0.2"]


def test_genesis_from_flags_prints_its_chain_id(tmp_path: Path) -> None:
    out = tmp_path / "genesis.json"
    res = run(*_genesis_args(tmp_path), "--out", str(out))
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    chain_id = hashlib.sha256(b"provledger/genesis/v1\n" + rfc8785.dumps(doc)).hexdigest()
    assert f"chain id {chain_id}" in res.stdout
    assert doc["validators"] == [{"name": "node-a", "key": key("validator-0").public, "url": "http://127.0.0.1:8001"}]
    assert doc["organisations"] == [{"name": "org-a", "admins": [key("admin-a").public]}]
    assert doc["participants"][0]["roles"] == ["contributor", "annotator"]
    assert doc["policy"] == {"attribution": {"data": "0.6", "annotation": "0.2", "training": "0.2"}}
    # Without --out the same document goes to stdout.
    assert json.loads(run(*_genesis_args(tmp_path)).stdout) == doc
    # And it refuses to overwrite.
    res = run(*_genesis_args(tmp_path), "--out", str(out))
    assert res.exit_code == 2
    one_error_line(res)


@pytest.mark.parametrize(("flag", "value"), [
    ("--validator", "node-a"),
    ("--participant", "x=alice@org-a:wizard"),
    ("--participant", "x=alice@org-z:contributor"),
    ("--policy", "data=0.5,annotation=0.5,training=0.5"),
    ("--org", "org-b=not-a-key"),
])
def test_genesis_bad_flags(tmp_path: Path, flag: str, value: str) -> None:
    args = _genesis_args(tmp_path)
    if flag == "--participant":
        args = [a for a in args if not a.startswith(key("alice").public)]
        args.remove("--participant")
        value = value.replace("x=", key("bob").public + "=")
    args += [flag, value]
    res = run(*args)
    assert res.exit_code == 2, res.output
    one_error_line(res)


# --- audit -----------------------------------------------------------------------------------
def test_audit_state_saves_a_checkpoint(chain1: Any, tmp_path: Path) -> None:
    state = tmp_path / "audit.json"
    res = run("audit", str(chain1.path), "--state", str(state))
    assert res.exit_code == 0
    assert "OK" in res.stdout and f"chain {chain1.cons.chain_id}" in res.stdout
    cp = Checkpoint.load(state)
    assert cp is not None and (cp.height, cp.hash, cp.log_size) == (6, chain1.hashes[-1], 19)
    # The second run proves consistency with it.
    res = run("audit", str(chain1.path), "--state", str(state), "--json", "--jobs", "2")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["checkpoint"].startswith("consistent")


def test_audit_usage_errors(tmp_path: Path) -> None:
    res = run("audit", str(tmp_path / "missing.db"))
    assert res.exit_code == 2
    one_error_line(res)
    assert run("audit").exit_code == 2
    assert run("audit", "x.db", "--jobs", "0").exit_code == 2


# --- prove and verify-proof ------------------------------------------------------------------
@pytest.fixture
def proof(chain4: Any, tmp_path: Path) -> tuple[Path, Path, str]:
    rid = chain4.ids[2][1]
    out = tmp_path / "proof.json"
    res = run("prove", "--db", str(chain4.path), rid, "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(out.read_text())
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(chain4.cons.doc))
    return out, genesis, rid


def test_prove_prints_a_proof_that_verify_proof_accepts(proof: tuple[Path, Path, str], chain4: Any) -> None:
    out, genesis, rid = proof
    doc = json.loads(out.read_text())
    assert (doc["record"], doc["index"], doc["tree_size"]) == (rid, 9, 19)
    res = run("verify-proof", str(out), "--genesis", str(genesis), "--record", rid, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"ok": True, "record": rid, "height": 6, "log_size": 19}
    human = run("prove", "--db", str(chain4.path), rid)
    assert human.exit_code == 0 and "verified" in human.stdout and rid in human.stdout


def test_verify_proof_rejects_a_tampered_path(proof: tuple[Path, Path, str]) -> None:
    out, genesis, _ = proof
    doc = json.loads(out.read_text())
    doc["path"][0] = "00" * 32
    out.write_text(json.dumps(doc))
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 1
    one_error_line(res)


def test_verify_proof_rejects_a_wrong_genesis(proof: tuple[Path, Path, str], chain4: Any) -> None:
    out, genesis, _ = proof
    doc = dict(chain4.cons.doc, name="impostor")
    genesis.write_text(json.dumps(doc))
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 1
    one_error_line(res)


def test_verify_proof_for_another_record_and_bad_json(proof: tuple[Path, Path, str], chain4: Any) -> None:
    out, genesis, _ = proof
    assert run("verify-proof", str(out), "--genesis", str(genesis), "--record", chain4.ids[0][0]).exit_code == 1
    out.write_text("{")
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 2
    one_error_line(res)


def test_prove_usage_errors(chain4: Any) -> None:
    assert run("prove", "--db", str(chain4.path), "not-an-id").exit_code == 2
    res = run("prove", "--db", str(chain4.path), "00" * 32)
    assert res.exit_code == 2 and "00" * 16 in one_error_line(res)
    assert run("prove", "00" * 32).exit_code == 2  # neither --db nor --node


# --- the installed script ---------------------------------------------------------------------
@pytest.mark.skipif(not PROVLEDGER.exists(), reason="console script not installed")
def test_real_subprocess(chain1: Any, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    shutil.copy(chain1.path, db)
    ok = subprocess.run([str(PROVLEDGER), "audit", str(db), "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["records"] == 19
    k = tmp_path / "k.key"
    first = subprocess.run([str(PROVLEDGER), "keygen", "--out", str(k)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and stat.S_IMODE(os.stat(k).st_mode) == 0o600
    again = subprocess.run([str(PROVLEDGER), "keygen", "--out", str(k)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error:") and len(again.stderr.strip().splitlines()) == 1
    missing = subprocess.run([str(PROVLEDGER), "audit", str(tmp_path / "none.db")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2
