"""node.config: one validated model for config.json, its warnings, its errors, its docs."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from procs import provledger_cmd

from ledger.errors import InputError
from node.config import CONFIG_FILE, NodeConfig, config_table

ROOT = Path(__file__).resolve().parents[2]


def write_config(home: Path, doc: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / CONFIG_FILE).write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"port": 70000}, "port"),
        ({"port": 0}, "port"),
        ({"port": "8000"}, "port"),
        ({"port": True}, "port"),
        ({"port": 8000.0}, "port"),
        ({"block_interval_ms": 0}, "block_interval_ms"),
        ({"max_block_records": -1}, "max_block_records"),
        ({"max_mempool": 0}, "max_mempool"),
        ({"header_timeout_s": 61}, "header_timeout_s"),
        ({"verify_workers": "2"}, "verify_workers"),
        ({"gossip_ms": 0}, "gossip_ms"),
        ({"consensus_timeouts": {"propose": -1}}, "consensus_timeouts.propose"),
        ({"consensus_timeouts": {"propse": 100}}, "consensus_timeouts.propse"),
        ({"consensus_timeouts": 5}, "consensus_timeouts"),
        ({"peers": "http://a"}, "peers"),
        ({"peers": ["ftp://a"]}, "peers"),
        ({"host": ""}, "host"),
        ({"node_name": 3}, "node_name"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path: Path, doc: dict[str, Any], key: str) -> None:
    write_config(tmp_path, doc)
    with pytest.raises(InputError) as e:
        NodeConfig.load(tmp_path)
    assert e.value.code == "bad_config"
    assert e.value.details["field"] == key
    assert f": {key}: " in e.value.message and "\n" not in e.value.message


def test_not_an_object_and_not_json(tmp_path: Path) -> None:
    write_config(tmp_path, [])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="must be a JSON object"):
        NodeConfig.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(InputError, match="cannot read"):
        NodeConfig.load(tmp_path)
    with pytest.raises(InputError, match="not a node home") as e:
        NodeConfig.load(tmp_path / "nowhere")
    assert e.value.code == "no_config"


def test_unknown_keys_are_named_in_a_warning_and_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_config(tmp_path, {"prot": 8001, "future_setting": {"a": 1}, "max_mempool": 5})
    with caplog.at_level(logging.WARNING, logger="provledger.node"):
        cfg = NodeConfig.load(tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "config.json: unknown key 'prot' ignored; did you mean 'port'?" in warnings
    assert "config.json: unknown key 'future_setting' ignored" in warnings
    assert cfg.port == 8000 and cfg.max_mempool == 5
    cfg.save()  # written back unchanged, for a later version that knows them
    again = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert again["prot"] == 8001 and again["future_setting"] == {"a": 1} and again["max_mempool"] == 5


def test_defaults_and_round_trip(tmp_path: Path) -> None:
    cfg = NodeConfig(home=tmp_path)
    assert (cfg.port, cfg.block_interval_ms, cfg.max_block_records, cfg.max_mempool, cfg.gossip_ms) == (
        8000, 50, 2000, 100_000, 500)
    assert cfg.timeouts() == {"propose": 500, "prevote": 150, "precommit": 150, "delta": 250, "commit": 10}
    saved = json.loads(cfg.save().read_text())
    # Only the base keys are written; the optional ones keep their defaults out of the file.
    assert set(saved) == {"node_name", "host", "port", "db", "validator_key", "genesis", "block_interval_ms",
                          "max_block_records"}
    cfg.consensus_timeouts = {"propose": 900}  # type: ignore[assignment]
    cfg.peers = ["http://127.0.0.1:9"]
    cfg.save()
    back = NodeConfig.load(tmp_path)
    assert back.settings() == cfg.settings()
    assert back.timeouts()["propose"] == 900 and back.timeouts()["delta"] == 250


def test_assignment_is_validated(tmp_path: Path) -> None:
    cfg = NodeConfig(home=tmp_path)
    with pytest.raises(ValueError, match="port"):
        cfg.port = 0


@given(st.integers())
def test_port_range(port: int) -> None:
    home = Path("/nonexistent-home")
    if 1 <= port <= 65535:
        assert NodeConfig.from_dict(home, {"port": port}).port == port
    else:
        with pytest.raises(InputError, match="port"):
            NodeConfig.from_dict(home, {"port": port})


def test_readme_lists_every_key_from_the_model() -> None:
    table = config_table()
    for name, field in NodeConfig.model_fields.items():
        assert (f"| `{name}` |" in table) is not field.exclude
    assert table in (ROOT / "README.md").read_text()


def test_status_reports_the_settings_in_force(client: Any, home: Path) -> None:
    got = client.get("/v1/status").json()["config"]
    assert got == NodeConfig.load(home).settings()
    assert got["block_interval_ms"] == 10 and got["max_mempool"] == 100_000


@pytest.mark.e2e
def test_node_start_with_a_bad_value_prints_one_line(node_home: Path) -> None:
    doc = json.loads((node_home / CONFIG_FILE).read_text())
    doc["max_block_records"] = 0
    (node_home / CONFIG_FILE).write_text(json.dumps(doc))
    res = subprocess.run([*provledger_cmd(), "node", "start", "--home", str(node_home)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "max_block_records" in lines[0] and "Traceback" not in res.stderr + res.stdout


@pytest.mark.e2e
def test_node_start_with_a_bad_option_prints_one_line(node_home: Path) -> None:
    res = subprocess.run([*provledger_cmd(), "node", "start", "--home", str(node_home), "--host", ""],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: --host: String should have at least 1 character (got \"\")"]


@pytest.mark.e2e
def test_node_start_warns_about_an_unknown_key(node_home: Path, start_node: Any) -> None:
    doc = json.loads((node_home / CONFIG_FILE).read_text())
    doc["prot"] = 8001
    (node_home / CONFIG_FILE).write_text(json.dumps(doc))
    node = start_node(node_home)
    assert "unknown key 'prot' ignored; did you mean 'port'?" in node.log()
