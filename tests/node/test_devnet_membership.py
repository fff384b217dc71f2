"""The consortium changes under a running devnet (real node processes on 127.0.0.1):
``scripts/devnet add`` votes a fifth organisation and its validator in and starts its node
from an empty database; it catches up and signs certificates. A validator's key is
replaced (its node restarted with the new key), then a validator is voted out and stopped
by ``scripts/devnet remove``. Records become final after every change; every node's
database and a bundle audit clean; a proof of a record committed after the last change
verifies with the genesis alone; one organisation alone cannot change the policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import free_base
from test_devnet_faults import ROOT, datasets

from ledger.keys import SigningKey

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_devnet_add_replace_remove_keeps_records_final(tmp_path: Path) -> None:
    d = tmp_path / "devnet"
    env = {**os.environ, "DEVNET_DIR": str(d), "DEVNET_BASE_PORT": str(free_base(6))}
    cli = [str(Path(sys.executable).parent / "provledger")]

    def run(cmd: list[str], ok: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        assert (res.returncode == 0) == ok, (cmd, res.stdout + res.stderr)
        return res

    def devnet(*args: str) -> str:
        return run([sys.executable, str(ROOT / "scripts" / "devnet.py"), *args]).stdout

    def url_of(name: str) -> str:
        cfg = json.loads((d / name / "config.json").read_text())
        return f"http://{cfg['host']}:{cfg['port']}"

    def until(what: str, check: Callable[[], Any], seconds: float = 60) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            with_value = check()
            if with_value:
                return with_value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {seconds:.0f} s: {what}")
            time.sleep(0.2)

    seen: dict[str, int] = {}
    last_id = ""

    def commit(url: str, tag: str, n: int = 5) -> int:
        """``n`` records submitted to ``url`` become final; the height of the last one."""
        nonlocal last_id
        key = SigningKey.load(d / "alice.key")
        chain = httpx.get(url + "/v1/status", timeout=5).json()["chain_id"]
        seen[tag] = seen.get(tag, 0) + 1
        recs = datasets(key, chain, f"{tag}-{seen[tag]}", n)
        r = httpx.post(url + "/v1/records/batch?wait=true&timeout=30", content=orjson.dumps({"records": recs}),
                       timeout=40)
        res = r.json()["results"]
        assert all(x.get("status") == "committed" for x in res), r.text[:400]
        last_id = res[-1]["id"]
        return max(int(httpx.get(url + f"/v1/records/{x['id']}", timeout=5).json()["height"]) for x in res)

    def signers_from(url: str, height: int) -> set[str]:
        """The keys in the certificates of the blocks from ``height`` on."""
        blocks = httpx.get(url + f"/v1/blocks?from={height}&limit=200", timeout=10).json()["blocks"]
        return {v["validator"] for b in blocks for v in b["certificate"]["votes"]}

    try:
        devnet("up")
        u1 = url_of("node-1")
        commit(u1, "four")

        # 1. A fifth organisation and its validator are voted in; its node starts from an
        #    empty database, catches up and signs certificates.
        out = devnet("add", "clinic-e")
        assert "a validator from height" in out, out
        e_key = SigningKey.load(d / "clinic-e" / "validator.key").public
        ue = url_of("clinic-e")
        vals = httpx.get(u1 + "/v1/validators", timeout=5).json()["validators"]
        assert [v["name"] for v in vals] == ["node-1", "node-2", "node-3", "node-4", "clinic-e"]
        changed = httpx.get(u1 + "/v1/status", timeout=5).json()["height"]
        until("clinic-e's key in a certificate", lambda: commit(ue, "five") and e_key in signers_from(u1, changed))
        assert httpx.get(ue + "/v1/status", timeout=5).json()["consensus"]["validator"] is True

        # 2. node-2's key is replaced (key rotation): voted through, the node restarted with
        #    the new key; the new key signs, the old one no longer does.
        new_key = SigningKey.generate()
        new_key.save(tmp_path / "node-2-new.key")
        old_key = SigningKey.load(d / "node-2" / "validator.key").public
        prop = json.loads(run([*cli, "propose", "validator-replace", "node-2", "--new-key-file",
                               str(tmp_path / "node-2-new.key"), "--key", str(d / "node-2" / "admin.key"),
                               "--node", u1, "--wait", "--json"]).stdout)
        for org in ("node-1", "node-3"):
            state = json.loads(run([*cli, "approve", prop["id"], "--key", str(d / org / "admin.key"), "--node", u1,
                                    "--wait", "--json"]).stdout)["proposal_state"]
        assert state["status"] == "adopted", state
        devnet("stop", "node-2")
        (d / "node-2" / "validator.key").unlink()
        new_key.save(d / "node-2" / "validator.key")
        devnet("start", "node-2")
        replaced = commit(u1, "replaced")
        until("node-2's new key in a certificate",
              lambda: commit(url_of("node-2"), "rotated") and new_key.public in signers_from(u1, replaced + 1))
        assert old_key not in signers_from(u1, replaced + 1)

        # 3. node-4 is voted out (validator, then organisation) and stopped: the other
        #    four go on.
        out = devnet("remove", "node-4")
        assert "validator.remove node-4" in out and "org.remove org-4" in out and "stopped node-4" in out, out
        u4_key = SigningKey.load(d / "node-4" / "validator.key").public
        vals = httpx.get(u1 + "/v1/validators", timeout=5).json()["validators"]
        assert [v["name"] for v in vals] == ["node-1", "node-2", "node-3", "clinic-e"]
        removed = commit(u1, "removed")
        commit(ue, "after-removal")
        rec_id = last_id
        assert u4_key not in signers_from(u1, removed + 1)

        # 4. One organisation alone cannot change the policy: the proposal stays open.
        pol = json.loads(run([*cli, "propose", "policy", "--data", "0.5", "--annotation", "0.25", "--training",
                              "0.25", "--key", str(d / "node-1" / "admin.key"), "--node", u1, "--wait",
                              "--json"]).stdout)
        assert pol["proposal_state"]["status"] == "open", pol
        props = httpx.get(u1 + "/v1/proposals?status=open", timeout=5).json()["proposals"]
        assert [p["id"] for p in props] == [pol["id"]]
        # The removed organisation's admin has no say any more.
        run([*cli, "approve", pol["id"], "--key", str(d / "node-4" / "admin.key"), "--node", u1, "--wait"],
            ok=False)

        # 5. A proof of a record committed after the last change verifies with the genesis alone.
        until("a checkpoint covering the record", lambda: httpx.get(u1 + f"/v1/records/{rec_id}/proof",
                                                                   timeout=5).status_code == 200)
        run([*cli, "prove", rec_id, "--node", u1, "--out", str(tmp_path / "proof.json")])
        proof = json.loads((tmp_path / "proof.json").read_text())
        assert len(proof["membership"]["changes"]) >= 3  # add, replace, remove
        run([*cli, "verify-proof", str(tmp_path / "proof.json"), "--genesis", str(d / "node-1" / "genesis.json")])
    finally:
        devnet("down")

    # 6. Every node's database audits clean (node-4 stopped after its removal), and so does
    #    a bundle exported from the newcomer's.
    for name in ("node-1", "node-2", "node-3", "node-4", "clinic-e"):
        run([*cli, "audit", "--db", str(d / name / "ledger.db")])
    run([*cli, "export", "bundle", "--db", str(d / "clinic-e" / "ledger.db"), "--out", str(tmp_path / "chain.bundle")])
    run([*cli, "audit", "--bundle", str(tmp_path / "chain.bundle")])
