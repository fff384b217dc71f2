"""``provledger init``: the home layout, participants, and refusing to overwrite."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.store import Store


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def test_layout(tmp_path: Path) -> None:
    home = tmp_path / "net"
    code, out = run("init", "--home", str(home), "--json", "--port", "8123", "--name", "lab", "--org", "lab-org")
    assert code == 0, out
    made = json.loads(out)
    assert sorted(p.name for p in home.iterdir()) == ["admin.key", "config.json", "genesis.json", "ledger.db", "validator.key"]
    cfg = json.loads((home / "config.json").read_text())
    assert cfg == {"node_name": "node-0", "host": "127.0.0.1", "port": 8123, "db": "ledger.db",
                   "validator_key": "validator.key", "genesis": "genesis.json",
                   "block_interval_ms": 50, "max_block_records": 2000}
    genesis = parse_genesis(json.loads((home / "genesis.json").read_text()))
    assert made["chain_id"] == genesis.chain_id
    validator = SigningKey.load(home / "validator.key")
    admin = SigningKey.load(home / "admin.key")
    assert genesis.doc["name"] == "lab"
    assert genesis.doc["validators"] == [{"name": "node-0", "key": validator.public, "url": "http://127.0.0.1:8123"}]
    assert genesis.doc["organisations"] == [{"name": "lab-org", "admins": [admin.public]}]
    for key_file in ("validator.key", "admin.key"):
        assert stat.S_IMODE(os.stat(home / key_file).st_mode) == 0o600
    with Store(home / "ledger.db") as store:
        assert store.genesis.chain_id == genesis.chain_id and store.height() == 0


def test_human_output_names_chain_id(tmp_path: Path) -> None:
    code, out = run("init", "--home", str(tmp_path / "n"))
    assert code == 0
    chain_id = parse_genesis(json.loads((tmp_path / "n" / "genesis.json").read_text())).chain_id
    assert chain_id in out and "node start --home" in out


def test_participants(tmp_path: Path) -> None:
    home = tmp_path / "net"
    pub = SigningKey.generate().public
    alice = tmp_path / "keys" / "alice.key"
    code, out = run("init", "--home", str(home), "--participant", f"{pub}=contributor,trainer",
                    "--participant-key", f"{alice}=annotator", "--json")
    assert code == 0, out
    parts = json.loads((home / "genesis.json").read_text())["participants"]
    assert parts == [
        {"key": pub, "name": "participant-1", "org": "org-1", "roles": ["contributor", "trainer"]},
        {"key": SigningKey.load(alice).public, "name": "alice", "org": "org-1", "roles": ["annotator"]},
    ]
    assert stat.S_IMODE(os.stat(alice).st_mode) == 0o600
    assert json.loads(out)["participants"][1]["key_file"] == str(alice)


def test_participant_key_relative_to_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run("init", "--home", "net", "--participant-key", "bob.key=contributor")
    assert code == 0, out
    assert (tmp_path / "bob.key").is_file() and not (tmp_path / "net" / "bob.key").exists()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    home = tmp_path / "net"
    assert run("init", "--home", str(home))[0] == 0
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    code, out = run("init", "--home", str(home), "--participant-key", f"{tmp_path / 'x.key'}=contributor")
    assert code == 2
    assert "refusing to overwrite" in out and len(out.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before
    assert not (tmp_path / "x.key").exists()  # nothing was made


def test_refuses_partial_network(tmp_path: Path) -> None:
    home = tmp_path / "net"
    home.mkdir()
    (home / "ledger.db").write_bytes(b"precious")
    code, out = run("init", "--home", str(home))
    assert code == 2 and "refusing" in out
    assert (home / "ledger.db").read_bytes() == b"precious"


def test_empty_existing_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    assert run("init", "--home", str(tmp_path / "net"))[0] == 0


def test_bad_participant_arguments(tmp_path: Path) -> None:
    pub = SigningKey.generate().public
    cases = [
        ("--participant", f"{pub}=wizard"),  # unknown role
        ("--participant", "nothex=contributor"),
        ("--participant", pub),  # no roles
        ("--participant-key", f"{tmp_path / 'k.key'}="),
    ]
    for flag, value in cases:
        code, out = run("init", "--home", str(tmp_path / "net"), flag, value)
        assert code == 2, (flag, value, out)
        assert out.startswith("error: ")
        assert not (tmp_path / "net" / "config.json").exists()
    existing = tmp_path / "have.key"
    SigningKey.generate().save(existing)
    code, out = run("init", "--home", str(tmp_path / "net"), "--participant-key", f"{existing}=contributor")
    assert code == 2 and "already exists" in out
    code, out = run("init", "--home", str(tmp_path / "net"), "--participant", f"{pub}=contributor",
                    "--participant", f"{pub}=annotator")
    assert code == 2 and "repeats" in out


def test_help_has_example() -> None:
    for args in (["init", "--help"], ["node", "start", "--help"], ["node", "--help"]):
        code, out = run(*args)
        assert code == 0 and "Example" in out


def test_node_start_needs_a_home(tmp_path: Path) -> None:
    code, out = run("node", "start", "--home", str(tmp_path))
    assert code == 2 and "provledger init" in out


# --- several validators (--validators N) -------------------------------------------------
def test_validators_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "net"
    code, out = run("init", "--home", str(home), "--validators", "4", "--base-port", "9200",
                    "--participant-key", "alice.key=contributor,trainer", "--json")
    assert code == 0, out
    made = json.loads(out)
    assert sorted(p.name for p in home.iterdir()) == ["node-1", "node-2", "node-3", "node-4"]
    genesis_text = (home / "node-1" / "genesis.json").read_text()
    genesis = parse_genesis(json.loads(genesis_text))
    assert made["chain_id"] == genesis.chain_id and made["validators"] == 4
    assert [n["name"] for n in made["nodes"]] == ["node-1", "node-2", "node-3", "node-4"]
    for i in range(1, 5):
        node_home = home / f"node-{i}"
        assert sorted(p.name for p in node_home.iterdir()) == [
            "admin.key", "config.json", "genesis.json", "ledger.db", "validator.key"]
        assert (node_home / "genesis.json").read_text() == genesis_text  # one genesis for all
        cfg = json.loads((node_home / "config.json").read_text())
        assert cfg["node_name"] == f"node-{i}" and cfg["port"] == 9200 + i and cfg["host"] == "127.0.0.1"
        validator = SigningKey.load(node_home / "validator.key")
        admin = SigningKey.load(node_home / "admin.key")
        assert genesis.doc["validators"][i - 1] == {
            "name": f"node-{i}", "key": validator.public, "url": f"http://127.0.0.1:{9200 + i}"}
        assert genesis.doc["organisations"][i - 1] == {"name": f"org-{i}", "admins": [admin.public]}
        assert made["nodes"][i - 1]["url"] == f"http://127.0.0.1:{9200 + i}"
        for key_file in ("validator.key", "admin.key"):
            assert stat.S_IMODE(os.stat(node_home / key_file).st_mode) == 0o600
        with Store(node_home / "ledger.db") as store:
            assert store.genesis.chain_id == genesis.chain_id and store.height() == 0
    # Four distinct validator and admin keys; the participant joins org-1.
    assert len({v["key"] for v in genesis.doc["validators"]}) == 4
    assert len({o["admins"][0] for o in genesis.doc["organisations"]}) == 4
    assert genesis.doc["participants"] == [
        {"key": SigningKey.load(tmp_path / "alice.key").public, "name": "alice", "org": "org-1",
         "roles": ["contributor", "trainer"]}]
    assert genesis.quorum == 3


def test_validators_human_output_lists_nodes(tmp_path: Path) -> None:
    code, out = run("init", "--home", str(tmp_path / "net"), "--validators", "3")
    assert code == 0, out
    for i in (1, 2, 3):
        assert f"node-{i}" in out and f"http://127.0.0.1:{8100 + i}" in out
        assert str(tmp_path / "net" / f"node-{i}") in out


def test_validators_node_config_loads_with_its_own_address(tmp_path: Path) -> None:
    from node.config import NodeConfig

    assert run("init", "--home", str(tmp_path / "net"), "--validators", "2", "--base-port", "9300")[0] == 0
    for i in (1, 2):
        cfg = NodeConfig.load(tmp_path / "net" / f"node-{i}")
        url = json.loads(cfg.genesis_path.read_text())["validators"][i - 1]["url"]
        assert cfg.url == url == f"http://127.0.0.1:{9300 + i}"
        assert SigningKey.load(cfg.key_path).public == json.loads(cfg.genesis_path.read_text())["validators"][i - 1]["key"]


def test_validators_refuse_to_overwrite_either_shape(tmp_path: Path) -> None:
    multi, single = tmp_path / "multi", tmp_path / "single"
    assert run("init", "--home", str(multi), "--validators", "4")[0] == 0
    assert run("init", "--home", str(single))[0] == 0
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for args in (["--home", str(multi)], ["--home", str(multi), "--validators", "2"],
                 ["--home", str(single), "--validators", "4"]):
        code, out = run("init", *args)
        assert code == 2 and "refusing to overwrite" in out, (args, out)
        assert len(out.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


def test_validators_partial_node_home_refused(tmp_path: Path) -> None:
    (tmp_path / "net" / "node-3").mkdir(parents=True)
    (tmp_path / "net" / "node-3" / "ledger.db").write_bytes(b"precious")
    code, out = run("init", "--home", str(tmp_path / "net"), "--validators", "4")
    assert code == 2 and "node-3/ledger.db" in out
    assert not (tmp_path / "net" / "node-1").exists()  # nothing was made


def test_validators_bad_arguments(tmp_path: Path) -> None:
    cases = [
        (["--validators", "0"], "--validators"),
        (["--validators", "4", "--port", "9000"], "--base-port"),
        (["--validators", "4", "--org", "lab"], "org-1"),
        (["--validators", "4", "--base-port", "65533"], "65535"),
    ]
    for args, hint in cases:
        code, out = run("init", "--home", str(tmp_path / "net"), *args)
        assert code == 2, (args, out)
        assert hint in out, (args, out)
    assert not (tmp_path / "net").exists() or not any((tmp_path / "net").iterdir())
