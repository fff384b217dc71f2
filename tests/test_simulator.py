"""The consensus core under the deterministic network simulator (node/sim.py).

A failing seed is printed with its scenario; replay it with
``python -m node.sim --seed S --scenario X -v``.
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import os
from collections import Counter

import pytest

from node.consensus import NIL, Consensus, Vote, sign_vote
from node.mutants import MUTANTS, Mutant, core_class
from node.sim import SCENARIOS, Result, Simulation, SimViolation, hunt, run, run_seed

CAMPAIGN = 1000  # seeds over the whole scenario mix
CATCH_BUDGET = 60  # seeds per preferred scenario a planted bug may take to be caught


def _pool_map(seeds: range) -> list[Result]:
    jobs = min(2, os.cpu_count() or 1)
    if jobs < 2:
        return [run_seed(s) for s in seeds]
    with mp.get_context("fork").Pool(jobs) as pool:
        return pool.map(run_seed, seeds, chunksize=25)


def test_campaign_of_seeds_keeps_every_invariant() -> None:
    results = _pool_map(range(CAMPAIGN))
    bad = [r for r in results if r.violation]
    assert not bad, "failing seeds:\n" + "\n".join(str(r.violation) for r in bad[:10])
    mix = Counter(r.scenario for r in results)
    assert set(mix) == set(SCENARIOS), mix
    assert {r.n for r in results} >= {1, 4, 7}
    assert all(r.height >= 2 for r in results)
    assert sum(r.evidence for r in results if r.scenario == "byz_voter") > 0
    assert any(r.byzantine for r in results)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_on_its_own(scenario: str) -> None:
    for seed in range(10_000, 10_008):
        try:
            r = run(seed, scenario)
        except SimViolation as e:
            pytest.fail(f"seed {seed}: {e}")
        assert r.scenario == scenario and r.height >= 2


def test_a_seed_replays_exactly() -> None:
    for seed in (3, 17, 1044):
        a, b = run(seed), run(seed)
        assert a == b


def test_restart_scenario_stays_durable_and_catches_up() -> None:
    # crash restarts re-create the core from last_signed and the stored chain.
    results = [run(seed, "crash") for seed in range(20_000, 20_010)]
    assert all(r.height >= 2 for r in results)


def test_the_checker_detects_too_many_byzantine_validators() -> None:
    """f+1 = 2 equivocating ("mirror") validators out of 4 break agreement on some seed."""
    caught: list[SimViolation] = []
    for seed in range(30):
        sim = Simulation(seed, "byz_mirror", n=4, byzantine={0: "mirror", 1: "mirror"}, check_liveness=False)
        try:
            sim.run()
        except SimViolation as e:
            caught.append(e)
    assert caught, "two equivocators out of four should fork the chain on some seed"
    assert {e.kind for e in caught} <= {"agreement", "durability"}
    assert "seed=" in str(caught[0]) and "python -m node.sim --seed" in str(caught[0])


def test_f_mirrors_out_of_four_are_tolerated() -> None:
    for seed in range(30):
        run(seed, "byz_mirror", n=4, byzantine={0: "mirror"})


# --- the mutation check: the simulator must notice planted bugs ------------------------------

PLANTED = [pytest.param(m, id=m.name) for m in MUTANTS]


def test_every_mutant_is_planted_in_the_current_core() -> None:
    """Each mutant's text occurs exactly once in Consensus: a change to the core that moves a
    condition fails here instead of leaving the mutation check testing nothing."""
    source = inspect.getsource(Consensus)
    for m in MUTANTS:
        assert source.count(m.old) == 1, m.name
        cls = core_class(m.name)
        assert cls is not Consensus and cls.__name__ == f"Consensus[{m.name}]"
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    assert all(m.scenarios and set(m.scenarios) <= set(SCENARIOS) for m in MUTANTS)


@pytest.mark.slow
@pytest.mark.parametrize("mutant", PLANTED)
def test_the_simulator_catches_each_planted_bug(mutant: Mutant) -> None:
    caught = hunt(mutant.name, per_scenario=CATCH_BUDGET, mixed=0)
    assert caught.seed is not None, f"mutant {mutant.name} (lines {mutant.lines}: {mutant.what}) survived {caught.runs} runs"
    # The seed that catches the mutant is a real bug, not a false alarm: the real core
    # keeps every invariant on the very same run.
    real = run_seed(caught.seed, caught.scenario)
    assert real.violation is None, real.violation



def test_conformance_flags_signatures_algorithm_1_does_not_allow() -> None:
    """The checker of node/sim_checks.py, fed signatures directly: a nil prevote is allowed on
    timeoutPropose only (no proposal was received), a nil precommit needs the node's prevote and
    2f+1 prevotes of the round, a vote of round 1 needs f+1 messages of round 1 or the end of
    round 0 (lines 47, 55, 59-65)."""
    sim = Simulation(0, "happy", n=4)
    nd = sim.nodes[0]

    def vote(r: int, step: str) -> Vote:
        return sign_vote(nd.key, sim.chain, 1, r, step, NIL)

    def refused(m: Vote, why: str) -> None:
        with pytest.raises(SimViolation, match=why) as e:
            sim.checks.signed(nd, m)
        assert e.value.kind == "conformance"

    refused(vote(1, "prevote"), "line 55")
    refused(vote(0, "prevote"), "before timeoutPropose")
    refused(vote(0, "precommit"), "without having prevoted")
    sim.checks.event = (1, (1, 0, "propose"))
    sim.checks.signed(nd, vote(0, "prevote"))  # line 59
    refused(vote(0, "precommit"), "lines 34, 61")
    for other in sim.nodes[1:3]:
        sim.checks.received(nd, sign_vote(other.key, sim.chain, 1, 0, "prevote", NIL), 1)
    sim.checks.signed(nd, vote(0, "precommit"))  # line 44: 2f+1 nil prevotes
