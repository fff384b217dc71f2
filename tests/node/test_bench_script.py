"""``scripts/bench`` runs end to end on tiny sizes: every section measures its limits and
reports its figures (speed itself is measured by the script, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_core_node_and_devnet_sections_report_their_figures(tmp_path: Path) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_bytes()
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "core", "node", "devnet", "--no-docs",
         "--out", str(tmp_path), "--records", "2000", "--node-seconds", "0.5", "--node-single-max", "20000",
         "--node-latency-seconds", "1", "--node-server-records", "1000", "--node-clients", "16", "--devnet-records", "2000", "--latency-seconds", "1",
         "--membership-records", "30000", "--membership-settle", "0.5"],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert doc.read_bytes() == before  # --no-docs
    core = json.loads((tmp_path / "core.json").read_text())["summary"]
    node_run = json.loads((tmp_path / "node.json").read_text())
    node = node_run["summary"]
    # Every HTTP server was measured side by side, the node's first.
    assert list(node["servers"]) == ["granian", "uvicorn-httptools", "uvicorn-h11", "hypercorn"]
    assert all(x["single_vs_trivial"] > 0 and x["batched_records_per_s"] > 0 for x in node["servers"].values())
    devnet = json.loads((tmp_path / "devnet.json").read_text())["summary"]
    for figure in (core["audit_j1_vs_raw_verify"], core["proofs_per_s"], node["batched_records_per_s"],
                   node["single_vs_trivial"], node["p50_ms"], devnet["final_records_per_s"], devnet["p50_ms"],
                   devnet["catch_up_vs_audit"], core["light_verify_ms"], core["light_proof_bytes"]):
        assert figure > 0
    # The membership run voted a fifth validator in and node-4 out under load.
    member = json.loads((tmp_path / "devnet.json").read_text())["membership"]
    assert member["validators_after"] == ["node-1", "node-2", "node-3", "newco"]
    assert member["set_changes"] == 2
    assert member["during_per_s"] > 0 and member["stall_add_s"] > 0
    # The devnet section sets itself next to the node section of the same run.
    assert devnet["single_node_batched_per_s"] == node["batched_records_per_s"]
