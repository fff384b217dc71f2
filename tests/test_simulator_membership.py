"""The simulator's membership scenarios (node/sim.py): validator sets that change on a seeded
schedule, every height certified by its own set (PROTOCOL.md 9.1)."""

from __future__ import annotations

import pytest

from ledger.errors import CertificateError
from node.consensus import Consensus, verify_certificate
from node.sim import (
    MEMBERSHIP_SCENARIOS,
    SCENARIOS,
    Simulation,
    SimViolation,
    apply_changes,
    main,
    run,
    run_seed,
)

SEEDS = range(40_000, 40_012)


def finished(seed: int, scenario: str) -> Simulation:
    sim = Simulation(seed, scenario)
    try:
        sim.run()
    except SimViolation as e:
        pytest.fail(str(e))
    return sim


def changes_of(sim: Simulation, height: int) -> list[dict[str, str]]:
    node = sim.honest[0]
    block = node.chain[height - 1][0]
    return list(block.get("changes", []))


@pytest.mark.parametrize("scenario", MEMBERSHIP_SCENARIOS)
def test_each_membership_scenario_changes_the_set_and_keeps_every_invariant(scenario: str) -> None:
    changed = 0
    for seed in SEEDS:
        sim = finished(seed, scenario)
        changed += len(sim.changed)
        # every honest node holds the same sets, derived from its own chain, and they match
        # the changes the decided blocks carry
        for nd in sim.honest:
            assert len(nd.chain) >= sim.end_height
            for h in range(1, len(nd.chain) + 1):
                assert nd.sets[h - 1] == sim.set_of[h], (seed, nd.idx, h)
    assert changed >= len(SEEDS), f"{scenario}: {changed} changes in {len(SEEDS)} runs"


def test_certificates_after_a_change_are_by_the_new_set() -> None:
    """Each certificate after a change verifies against the new set, and some would not
    against the old one: the set of each height matters."""
    only_new = 0
    for seed in SEEDS:
        sim = finished(seed, "churn")
        for h in sim.changed:
            if h + 1 > len(sim.honest[0].chain):
                continue
            _, bh, cert = sim.honest[0].chain[h]  # block h + 1
            verify_certificate(sim.chain, sim.set_of[h + 1], h + 1, bh, cert)
            try:
                verify_certificate(sim.chain, sim.set_of[h], h + 1, bh, cert)
            except CertificateError:
                only_new += 1
    assert only_new > 0


def test_a_lagging_node_catches_up_across_a_change_by_sync() -> None:
    crossed = 0
    for seed in SEEDS:
        sim = finished(seed, "churn_lag")
        for nd in sim.honest:
            if any(h in sim.changed and h + 1 in nd.synced for h in nd.synced):
                crossed += 1
    assert crossed >= len(SEEDS) // 2


def test_a_whole_set_swap_leaves_no_genesis_validator() -> None:
    for seed in SEEDS:
        sim = finished(seed, "set_swap")
        last = sim.set_of[max(sim.set_of)]
        assert not set(last) & set(sim.validators), seed
        assert max(sim.changed) < len(sim.honest[0].chain)  # the chain went on with the new set


def test_changes_land_in_rounds_after_the_first() -> None:
    late = 0
    for seed in SEEDS:
        sim = finished(seed, "churn_rounds")
        late += sum(sim.honest[0].chain[h - 1][2]["round"] > 0 for h in sim.changed)
    assert late > 0


def test_rival_changes_decide_one_option_per_height_and_either_can_win() -> None:
    won: set[int] = set()
    for seed in range(40_000, 40_030):
        sim = finished(seed, "rival_changes")
        for h, options in sim.plan.items():
            if h > len(sim.honest[0].chain) or len(options) < 2:
                continue
            got = changes_of(sim, h)
            # one option (what of it was still valid), never a mix of the two
            hits = [i for i, opt in enumerate(options) if got and all(o in opt for o in got)]
            assert not got or hits, (seed, h, got, options)
            won.update(hits)
    assert won == {0, 1}


def test_a_former_validator_signing_after_removal_has_no_effect() -> None:
    refused = 0
    for seed in SEEDS:
        sim = finished(seed, "byz_former")
        (former,) = sim.byzantine
        key = sim.nodes[former].key.public
        refused += sim.rejected
        gone = min(h for h, s in sim.set_of.items() if key not in s)
        for h in range(gone, len(sim.honest[0].chain) + 1):
            block, _, cert = sim.honest[0].chain[h - 1]
            assert block["proposer"] != key and key not in {v["validator"] for v in cert["votes"]}
    assert refused > 0


class StaleSet(Consensus):
    """A core that keeps the set it started with: it must not pass the membership scenarios."""

    def _load_set(self) -> None:
        self._set_height = self.height


def test_the_simulator_catches_a_core_that_ignores_set_changes() -> None:
    kinds = set()
    for seed in range(40_000, 40_010):
        sim = Simulation(seed, "churn")
        sim.core_class = StaleSet
        try:
            sim.run()
        except SimViolation as e:
            kinds.add(e.kind)
    assert kinds and kinds <= {"certificate", "validity", "liveness", "agreement", "conformance"}


def test_a_membership_seed_replays_exactly_and_the_campaign_draws_them() -> None:
    for seed in (5, 6):
        assert run(seed, "rival_changes") == run(seed, "rival_changes")
    drawn = {Simulation(seed).scenario for seed in range(400)}
    assert set(MEMBERSHIP_SCENARIOS) <= drawn and set(MEMBERSHIP_SCENARIOS) <= set(SCENARIOS)
    assert run_seed(7, "set_swap").violation is None


def test_apply_changes_follows_the_rules_of_the_actions() -> None:
    a, b, c, d = "a" * 64, "b" * 64, "c" * 64, "d" * 64
    ever = frozenset({a, b, d})
    start = (a, b)
    add, remove = {"op": "validator.add", "key": c}, {"op": "validator.remove", "key": a}
    assert apply_changes(start, ever, [add]) == ((a, b, c), ever | {c})  # appended
    assert apply_changes(start, ever, [{"op": "validator.replace", "old": a, "new": c}]) == ((c, b), ever | {c})
    assert apply_changes(start, ever, [remove]) == ((b,), ever)
    assert apply_changes(start, ever, [add, {"op": "validator.remove", "key": c}]) == ((a, b), ever | {c})
    for bad in (
        [{"op": "validator.add", "key": d}],  # was a validator once
        [{"op": "validator.add", "key": a}],  # is one
        [{"op": "validator.remove", "key": c}],  # is not one
        [remove, {"op": "validator.remove", "key": b}],  # the set never becomes empty
        [{"op": "validator.replace", "old": c, "new": "e" * 64}],
        [{"op": "validator.replace", "old": a, "new": d}],
        [{"op": "validator.add", "key": c, "pop": "x"}],  # exactly its fields
        [{"op": "org.add", "key": c}],
        ["validator.add"],
    ):
        assert apply_changes(start, ever, bad) is None, bad


def test_a_campaign_of_the_membership_scenarios_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "6", "--jobs", "1", "--scenarios", "membership", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "scenarios: " + ", ".join(f"{s}=1" for s in sorted(MEMBERSHIP_SCENARIOS)) in out
    assert "violations: 0 safety/validity/certificate/durability/conformance, 0 stalls" in out and "events/s" in out
    with pytest.raises(SystemExit) as e:
        main(["--seeds", "1", "--scenarios", "churn,nope"])
    assert e.value.code == 2
