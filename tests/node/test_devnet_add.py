"""``scripts/devnet add NAME`` on a running four-validator devnet: the new organisation's home
and keys, the two votes (org.add, validator.add) adopted through the nodes' admins, and the new node
started: it catches up from an empty database and takes part as a validator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from procs import free_base
from test_devnet_faults import ROOT

from ledger.blocks import validators_hash
from ledger.keys import SigningKey
from ledger.store import Store

pytestmark = pytest.mark.e2e


def test_devnet_add_makes_the_home_and_votes_the_organisation_and_its_validator_in(tmp_path: Path) -> None:
    d = tmp_path / "devnet"
    env = {**os.environ, "DEVNET_DIR": str(d), "DEVNET_BASE_PORT": str(free_base(5))}

    def devnet(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, str(ROOT / "scripts" / "devnet.py"), *args], env=env,
                             capture_output=True, text=True, timeout=300)
        assert (res.returncode == 0) == ok, res.stdout + res.stderr
        return res

    try:
        devnet("up")
        url = json.loads(devnet("status", "--json").stdout)[0]["url"]
        out = devnet("add", "clinic-e").stdout
        home = d / "clinic-e"
        validator, admin = SigningKey.load(home / "validator.key"), SigningKey.load(home / "admin.key")
        assert (home / "genesis.json").read_bytes() == (d / "node-1" / "genesis.json").read_bytes()
        cfg = json.loads((home / "config.json").read_text())
        # Started from a database holding the genesis alone, the node caught up (the blocks
        # of the votes) and takes part as a validator.
        new = httpx.get(f"http://127.0.0.1:{cfg['port']}/v1/status").json()
        assert new["consensus"]["validator"] is True and new["height"] >= 2
        assert "caught up" in (home / "node.log").read_text()
        with Store(home / "ledger.db") as store:
            first = store.block(1)
        assert first is not None and first.hash == httpx.get(url + "/v1/checkpoint/1").json()["hash"]
        assert cfg["node_name"] == "clinic-e" and cfg["port"] == int(env["DEVNET_BASE_PORT"]) + 5
        assert len(cfg["peers"]) == 4
        assert "org.add clinic-e" in out and "validator.add clinic-e" in out

        orgs = {o["name"]: o["admins"] for o in httpx.get(url + "/v1/organisations").json()["organisations"]}
        assert orgs["clinic-e"] == [admin.public] and len(orgs) == 5
        after = httpx.get(url + "/v1/validators").json()
        assert [v["name"] for v in after["validators"]] == ["node-1", "node-2", "node-3", "node-4", "clinic-e"]
        assert after["validators"][-1] == {"name": "clinic-e", "key": validator.public,
                                           "url": f"http://127.0.0.1:{cfg['port']}"}
        assert after["hash"] == validators_hash(v["key"] for v in after["validators"])
        props = httpx.get(url + "/v1/proposals?status=adopted").json()["proposals"]
        assert [p["action"]["op"] for p in props] == ["org.add", "validator.add"]
        assert props[1]["org"] == "clinic-e"  # the new organisation proposes its own validator

        # The same name again is refused before anything is made or voted.
        res = devnet("add", "clinic-e", ok=False)
        assert "already exists" in res.stderr
    finally:
        devnet("down")
