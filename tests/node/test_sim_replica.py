"""The production consensus driver (node.replica.Replica) on real nodes and stores, in the
virtual-time simulator (node.sim_replica): drops, duplicates, partitions, an isolated
validator and a restart, with the checks of agreement, validity, certificates, durability
and liveness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node import sim_replica
from node.replica import Replica
from node.sim import SimViolation

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("scenario", sim_replica.SCENARIOS)
def test_the_production_driver_keeps_every_check_under_each_fault(scenario: str) -> None:
    for seed in range(2):
        r = sim_replica.run(seed, scenario)
        assert r.scenario == scenario and r.records > 0
        assert r.height >= 1  # every record committed on every validator, in one chain
        if scenario in ("lossy", "partition", "isolated", "mixed"):
            assert r.dropped > 0
        if scenario in ("restart", "mixed"):
            assert r.restarts == 1
        if scenario == "isolated":
            assert r.caught_up > 0  # the cut-off validator fetched what it missed


def test_a_seed_replays_exactly() -> None:
    a, b = sim_replica.run(5, "mixed"), sim_replica.run(5, "mixed")
    assert (a.height, a.records, a.events, a.dropped, a.virtual_s) == (b.height, b.records, b.events, b.dropped,
                                                                        b.virtual_s)


def test_a_driver_that_ignores_arriving_records_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: records arriving never release an idle height. Nothing commits, and the
    liveness check says so (with the seed to replay)."""
    monkeypatch.setattr(Replica, "work_arrived", lambda self: None)
    with pytest.raises(SimViolation) as e:
        sim_replica.run(0, "happy")
    assert e.value.kind == "liveness"
    assert "python -m node.sim_replica --seed 0 --scenario happy" in str(e.value)


def test_a_driver_that_stores_no_decision_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: carrying out a decision fails. The driver logs the failed event, and the
    simulator stops on that error."""
    async def lost(self: Replica, a: object) -> None:
        raise RuntimeError("decision lost")

    monkeypatch.setattr(Replica, "_commit", lost)
    with pytest.raises(SimViolation) as e:
        sim_replica.run(1, "lossy")
    assert e.value.kind == "error" and "consensus event" in str(e.value)


def test_the_campaign_command(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "node.sim_replica", "--seeds", "3", "--jobs", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "seeds run: 3" in out.stdout and "violations: 0" in out.stdout


def test_a_database_that_does_not_audit_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run ends with the offline audit of every validator's database: one edited
    record (as a store bug would leave it) is a validity violation."""
    import sqlite3

    real = sim_replica.ReplicaSimulation._audit

    def edited(self: sim_replica.ReplicaSimulation) -> None:
        with sqlite3.connect(self.validators[2].db) as conn:  # by hand: past the append-only trigger
            conn.execute("DROP TRIGGER records_no_update")
            conn.execute("UPDATE records SET envelope = replace(envelope, 'MIT', 'GPL') WHERE idx = 0")
        real(self)

    monkeypatch.setattr(sim_replica.ReplicaSimulation, "_audit", edited)
    with pytest.raises(SimViolation) as e:
        sim_replica.run(0, "happy")
    assert e.value.kind == "validity" and "node 2: the audit of its database fails" in str(e.value)
