"""``scripts/fl-demo`` and ``scripts/bench fl`` end to end, as a user runs them (own
processes: the script makes a network, runs a node, trains, stops the node); and
``import ledger`` not loading flwr."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e .[test,flower])")

ROOT = Path(__file__).resolve().parents[2]


def test_fl_demo_json_document(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "fl_demo.py"), "--json", "--rounds", "2"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["home"] is None and len(out["rounds"]) == 2 and out["final_model"] == out["rounds"][-1]["aggregate"]
    m = out["mechanism"]
    assert {"noise_multiplier", "clipping_norm", "target_delta", "rounds", "accountant"} <= set(m)
    assert m["rounds"] == 2 and m["accountant"] == "RdpAccountant"
    assert set(out["datasets"]) == {"northside-vitals", "lakeview-vitals", "harbor-vitals"}
    for ds in out["datasets"].values():
        assert Decimal(ds["ledger_epsilon"]) == Decimal(repr(ds["accountant_epsilon"])) > 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(out["node"] + "/healthz", timeout=1)  # the node was stopped


def test_fl_demo_refuses_a_chain_that_already_holds_it(federation: dict) -> None:  # type: ignore[type-arg]
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "fl_demo.py"), "--node", federation["url"],
                          "--home", str(federation["home"])], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: this chain already holds the demo's dataset 'northside-vitals'; run fl-demo on a fresh network"
        " (demo_exists)")


def test_bench_fl_section_reports_its_figures(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "fl", "--no-docs", "--out", str(tmp_path),
                          "--fl-clients", "3", "--fl-rounds", "2", "--fl-repeats", "1"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    s = json.loads((tmp_path / "fl.json").read_text())["summary"]
    assert s["clients"] == 3 and s["rounds"] == 2
    for figure in ("round_ms_without", "round_ms_with", "wrapper_ms_per_round", "commit_wait_ms_per_round"):
        assert s[figure] > 0, figure


def test_import_ledger_does_not_load_flwr() -> None:
    code = "import sys, ledger, ledger.cli, ledger.client, ledger.records; print('flwr' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
