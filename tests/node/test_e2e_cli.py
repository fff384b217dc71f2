"""A user's session end to end: a real node process driven only through the ``provledger``
CLI, each command a subprocess, as in the README's walkthrough.

init -> node start -> submit dataset / annotation / model-update (--wait) -> an update
over the privacy budget refused in one line -> show record / block / checkpoint / dataset
-> prove --node and verify-proof offline -> audit over HTTP (human and --json) -> SIGTERM
exits 0 -> audit of the database file offline finds the same intact chain.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from procs import PARTICIPANT_ROLES, provledger_cmd, start_node_process

pytestmark = pytest.mark.e2e


class Cli:
    """Runs ``provledger`` in a subprocess with ``$PROVLEDGER_NODE`` set, in ``cwd``."""

    def __init__(self, cwd: Path, node_url: str = "") -> None:
        self.cwd = cwd
        self.env = {**os.environ, "PROVLEDGER_NODE": node_url} if node_url else dict(os.environ)

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*provledger_cmd(), *args], cwd=self.cwd, env=self.env, capture_output=True,
                             text=True, timeout=60)
        if ok:
            assert res.returncode == 0, f"provledger {' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


def test_walkthrough_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "net"
    key = str(home / "alice.key")

    # 1. A one-validator network with a participant key, made as a user makes it.
    made = Cli(tmp_path).json("init", "--home", str(home), "--participant-key", f"{key}={PARTICIPANT_ROLES}")
    chain_id = made["chain_id"]
    assert len(chain_id) == 64
    assert (home / "ledger.db").exists() and Path(key).exists()
    genesis = json.loads((home / "genesis.json").read_text())
    assert [p["name"] for p in genesis["participants"]] == ["alice"]

    # 2. `provledger node start` in its own process, ready once /healthz answers.
    node = start_node_process(home)
    try:
        url = node.url
        cli = Cli(tmp_path, url)
        for name, content in (("xray.bin", b"pretend this is a dataset\n"), ("labels.csv", b"id,label\n1,0\n"),
                              ("update.pt", b"weights\n")):
            (tmp_path / name).write_bytes(content)

        # 3. Records signed and submitted by the CLI; --wait answers once committed and
        #    checks the inclusion proof against the block's certificate.
        ds = cli.json("submit", "dataset", "--key", key, "--dataset", "chest-xray", "--file", "xray.bin",
                      "--items", "1200", "--license", "CC-BY-4.0", "--modality", "image",
                      "--epsilon", "8", "--delta", "0.00001", "--wait")
        assert ds["status"] == "committed" and ds["type"] == "dataset.contribute"
        assert ds["proof"]["index"] == 0 and ds["proof"]["record"] == ds["id"]

        ann = cli.run("submit", "annotation", "--key", key, "--dataset", "chest-xray", "--labels-file", "labels.csv",
                      "--labels", "1200", "--label-schema", "findings-14", "--quality", "0.92",
                      "--quality-method", "double-read", "--wait")
        assert "annotation.event" in ann.stdout and "committed" in ann.stdout
        assert "inclusion proof verified" in ann.stdout
        ann_id = ann.stdout.split()[1]

        upd = cli.json("submit", "model-update", "--key", key, "--model", "xray-net", "--round", "1",
                       "--weights-file", "update.pt", "--input", "chest-xray:1000:1:0.000001", "--metric", "auc=0.81",
                       "--wait")
        assert upd["status"] == "committed" and upd["proof"]["index"] == 2
        model_id = upd["id"]

        # An update over the dataset's remaining budget: one line saying why, non-zero exit.
        over = cli.run("submit", "model-update", "--key", key, "--model", "xray-net", "--round", "2",
                       "--weights-file", "update.pt", "--input", "chest-xray:1000:9:0.000001", "--wait", ok=False)
        assert over.returncode == 1  # refused by the chain
        err = over.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), over.stderr
        assert "budget_exceeded" in err[0] and "chest-xray" in err[0] and "remaining budget is epsilon 7" in err[0]

        # 4. show: the record, its block, the latest checkpoint, the dataset's budget.
        rec = cli.json("show", "record", model_id)
        assert rec["status"] == "committed" and rec["index"] == 2
        assert rec["record"]["type"] == "model.update" and rec["record"]["body"]["model"] == "xray-net"
        assert rec["record"]["body"]["inputs"] == [{"dataset": "chest-xray", "samples": 1000, "epsilon": "1",
                                                   "delta": "0.000001"}]
        human = cli.run("show", "record", model_id).stdout
        assert f"model.update {model_id}" in human and f"height {rec['height']}, index 2" in human

        block = cli.json("show", "block", str(rec["height"]))
        assert block["header"]["height"] == rec["height"] and block["hash"] == block["certificate"]["block"]
        assert rec["record"] in block["records"]
        assert block["header"]["chain"] == chain_id

        cp = cli.json("show", "checkpoint")
        assert cp["header"]["log_size"] == 3
        assert cp["header"]["height"] >= rec["height"]
        assert [v["validator"] for v in cp["certificate"]["votes"]] == [genesis["validators"][0]["key"]]
        assert cli.json("show", "checkpoint", str(rec["height"]))["hash"] == block["hash"]

        dataset = cli.json("show", "dataset", "chest-xray")
        assert dataset["versions"] == {"1": ds["id"]}
        assert dataset["spent"] == {"epsilon": "1", "delta": "0.000001"}
        assert dataset["remaining"] == {"epsilon": "7", "delta": "0.000009"}
        assert [a["id"] for a in dataset["annotations"]] == [ann_id]

        missing = cli.run("show", "record", "00" * 32, ok=False)
        assert missing.returncode == 2 and "not_found" in missing.stderr and missing.stderr.count("\n") == 1

        # 5. prove against the node, then check the written proof offline.
        proved = cli.run("prove", model_id, "--node", url, "--out", "proof.json")
        assert "verified" in proved.stdout
        proof = json.loads((tmp_path / "proof.json").read_text())
        assert proof["record"] == model_id and proof["index"] == 2 and proof["tree_size"] == 3
        assert proof["checkpoint"]["hash"] == cp["hash"]
        verified = cli.run("verify-proof", "proof.json", "--genesis", str(home / "genesis.json"))
        assert model_id in verified.stdout
        # The same proof claimed for another record does not verify.
        proof["record"] = ds["id"]
        (tmp_path / "wrong.json").write_text(json.dumps(proof))
        assert cli.run("verify-proof", "wrong.json", "--genesis", str(home / "genesis.json"), ok=False).returncode == 1

        # $PROVLEDGER_NODE is the node of every command that reads one.
        from_env = cli.json("prove", model_id)
        assert from_env["record"] == model_id and from_env["tree_size"] == 3
        assert cli.json("lineage", model_id)["root"] == model_id
        assert cli.json("lineage", model_id, "--remote")["root"] == model_id
        assert cli.json("attribution", model_id, "--total", "100")["total_units"] == 100
        assert model_id in cli.run("export", "prov", model_id).stdout
        assert "3 records" in cli.run("export", "bundle", "--out", "chain.bundle").stdout
        assert cli.json("audit")["records"] == 3
        # The 12-character ids the CLI prints name a record wherever the chain is local.
        assert cli.json("lineage", model_id[:12], "--bundle", "chain.bundle")["root"] == model_id
        # A node is asked by full id; a URL that is not a node is unreadable input.
        short = cli.run("show", "record", model_id[:12], ok=False)
        assert short.returncode == 2 and "full record id" in short.stderr and short.stderr.count("\n") == 1
        typo = cli.run("audit", url + "/typo", ok=False)
        assert typo.returncode == 2 and "could not read a node at" in typo.stderr and "chain None" not in typo.stdout
        assert typo.stderr.count("\n") == 1

        # 6. audit over HTTP.
        audited = cli.run("audit", url)
        assert "OK: the chain is intact" in audited.stdout and chain_id in audited.stdout
        live = cli.json("audit", url)
        assert live["ok"] is True and live["findings"] == []
        assert live["chain_id"] == chain_id and live["records"] == 3
        assert live["head"]["hash"] == cp["hash"] and live["head"]["log_root"] == cp["header"]["log_root"]
    finally:
        # 7. SIGTERM: a clean shutdown exits 0.
        rc = node.terminate()
    assert rc == 0, node.log()
    assert "stopped at height" in node.log()

    # 8. The database file alone audits clean offline, to the same head.
    offline_cli = Cli(tmp_path)
    offline = offline_cli.run("audit", str(home / "ledger.db"))
    assert "OK: the chain is intact" in offline.stdout
    report = offline_cli.json("audit", str(home / "ledger.db"))
    assert report["ok"] is True and report["records"] == 3 and report["head"] == live["head"]

