"""``scripts/bench explorer`` runs end to end on a small chain and reports every figure
(speed itself is measured by the script, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_explorer_section_reports_its_figures(tmp_path: Path) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_bytes() if doc.exists() else None
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "explorer", "--no-docs", "--out", str(tmp_path),
         "--explorer-records", "2000", "--explorer-requests", "2", "--explorer-loads", "1"],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (doc.read_bytes() if doc.exists() else None) == before  # --no-docs
    out = json.loads((tmp_path / "explorer.json").read_text())
    assert out["records"] == 2000 + 12  # the chain and the model of 12 updates
    for page in ("home", "block", "record", "lineage"):
        assert out["server"][page]["p50_ms"] > 0 and out["server"][page]["bytes"] > 1000
    if Path("/usr/bin/chromium").exists():
        assert set(out["browser"]) == {"record_checks", "block_checks", "lineage_graph"}
        assert all(v["p50_ms"] > 0 for v in out["browser"].values())
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_explorer import render_explorer

    text = "\n".join(render_explorer(out))
    assert text.startswith("## Explorer: pages on a chain of 2,012 records") and "record checks done" in text
