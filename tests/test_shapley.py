"""Shapley and leave-one-out: the pure functions (efficiency, symmetry, null player, the
seeded estimate) and the coalition methods of ``attribute`` on chains."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_attribution import worked_example
from test_lineage import Chain

from ledger.attribution import attribute, leave_one_out, shapley_exact, shapley_permutations
from ledger.errors import InputError

PLAYERS = ["a", "b", "c", "d", "e"]


def all_coalitions(players: list[str]) -> list[frozenset[str]]:
    return [frozenset(c) for k in range(1, len(players) + 1) for c in itertools.combinations(players, k)]


@st.composite
def games(draw: st.DrawFn) -> tuple[list[str], dict[frozenset[str], Fraction]]:
    n = draw(st.integers(1, 5))
    players = PLAYERS[:n]
    v = {s: Fraction(draw(st.integers(-100, 100)), draw(st.integers(1, 20))) for s in all_coalitions(players)}
    if draw(st.booleans()):
        v[frozenset()] = Fraction(draw(st.integers(-10, 10)))
    return players, v


@settings(max_examples=60, deadline=None)
@given(games())
def test_efficiency_exact_and_by_permutations(game: tuple[list[str], dict[frozenset[str], Fraction]]) -> None:
    players, v = game
    full = v[frozenset(players)] - v.get(frozenset(), Fraction(0))
    phi = shapley_exact(players, v)
    assert sum(phi.values()) == full
    # Every ordering enumerated (n! <= 1000): the permutation mean is the exact value.
    est, drawn, used, missing = shapley_permutations(players, v, seed=7)
    assert est == phi and drawn == used and not missing
    # Sampled orderings still satisfy efficiency exactly.
    est, drawn, used, _ = shapley_permutations(players, v, seed=7, permutations=3)
    if len(players) >= 3:
        assert drawn == used == 3
    assert sum(est.values()) == full


@settings(max_examples=60, deadline=None)
@given(games(), st.data())
def test_symmetry_and_null_player(game: tuple[list[str], dict[frozenset[str], Fraction]], data: st.DataObject) -> None:
    players, v = game
    if len(players) < 2:
        return
    i, j = players[0], players[1]
    # Make i and j interchangeable: v(S + i) = v(S + j) for every S without both.
    for s in all_coalitions(players):
        if j in s and i not in s:
            v[s] = v[(s - {j}) | {i}]
    phi = shapley_exact(players, v)
    assert phi[i] == phi[j]
    # A null player (adds nothing anywhere) gets 0.
    k = players[-1]
    for s in all_coalitions(players):
        if k in s:
            v[s] = v.get(s - {k}, Fraction(0))
    assert shapley_exact(players, v)[k] == 0


def test_permutation_estimate_is_seeded_and_reports_missing() -> None:
    players = [f"p{i}" for i in range(8)]  # 8! > 1000: sampled
    v = {s: Fraction(len(s)) for s in all_coalitions(players) if len(s) != 3}
    a = shapley_permutations(players, v, seed=42)
    b = shapley_permutations(players, v, seed=42)
    assert a == b
    phi, drawn, used, missing = a
    assert drawn == 1000 and used == 0 and missing and all(len(s) == 3 for s in missing)
    v.update({s: Fraction(3) for s in all_coalitions(players) if len(s) == 3})
    phi, drawn, used, missing = shapley_permutations(players, v, seed=42)
    assert used == 1000 and not missing and all(x == 1 for x in phi.values())


def test_leave_one_out() -> None:
    v = {frozenset("ab"): Fraction(8, 10), frozenset("a"): Fraction(6, 10), frozenset("b"): Fraction(4, 10)}
    assert leave_one_out(["a", "b"], v) == ({"a": Fraction(2, 5), "b": Fraction(1, 5)}, set())
    del v[frozenset("a")]
    assert leave_one_out(["a", "b"], v) == ({}, {frozenset("a")})


# --- on chains ---------------------------------------------------------------------------------
def test_shapley_with_a_missing_coalition_uses_only_complete_orderings() -> None:
    ch = Chain()
    for name in ("x", "y", "z"):
        ch.dataset("alice", name)
    m = ch.local("bob", "m", 1, [("x", 10), ("y", 10), ("z", 10)])
    values = {("x",): "0.3", ("y",): "0.2", ("x", "y"): "0.6", ("x", "y", "z"): "0.9", ("x", "z"): "0.5"}
    for coalition, val in values.items():
        ch.evaluate("alice", m, val, list(coalition))
    ch.evaluate("alice", m, "0.1", ["x"], metric="loss")  # another metric: ignored
    r = attribute(ch.memory(), m, 1000, "shapley")
    c = r["coalitions"]
    assert c["metric"] == "accuracy" and c["estimator"] == "permutations"
    assert c["missing"] == [["z"], ["y", "z"]] and c["missing_count"] == 2
    # Usable orderings: x y z, x z y, y x z (3 of 6).
    assert (c["permutations"], c["used_permutations"]) == (6, 3)
    phi = {k: Fraction(v) for k, v in c["values"].items()}
    assert sum(phi.values()) == Fraction(9, 10)
    assert phi == {"x": (Fraction(3, 10) * 2 + Fraction(4, 10)) / 3,
                   "y": (Fraction(3, 10) + Fraction(4, 10) + Fraction(2, 10)) / 3,
                   "z": (Fraction(3, 10) + Fraction(2, 10) + Fraction(3, 10)) / 3}
    assert sum(ln["units"] for ln in r["lines"]) == 1000
    # Leave-one-out needs {y, z}: refused, naming it.
    with pytest.raises(InputError, match=r"\{y, z\}") as e:
        attribute(ch.memory(), m, 1000, "leave-one-out")
    assert e.value.code == "coalitions_missing" and e.value.details["missing"] == [["y", "z"]]
    # --metric picks another metric.
    with pytest.raises(InputError, match="not recorded"):
        attribute(ch.memory(), m, 10, "shapley", metric="loss")


def test_negative_values_are_clipped() -> None:
    ch = Chain()
    ch.dataset("alice", "good")
    ch.dataset("bob", "noisy")
    m = ch.local("alice", "m", 1, [("good", 10), ("noisy", 90)])
    for coalition, val in {("good",): "0.8", ("noisy",): "0", ("good", "noisy"): "0.7"}.items():
        ch.evaluate("alice", m, val, list(coalition))
    r = attribute(ch.memory(), m, 100, "shapley")
    assert r["coalitions"]["clipped"] == ["noisy"]
    assert Fraction(r["coalitions"]["values"]["noisy"]) < 0
    ds = {d["name"]: d for d in r["datasets"]}
    assert ds["noisy"]["value"] == "0/1" and ds["good"]["share_of_pool"] == "1/1"
    bob = [ln for ln in r["lines"] if ln["name"] == "bob"]
    assert not bob or "data" not in bob[0]["pools"]


def test_latest_evaluation_of_a_coalition_wins() -> None:
    ch, g = worked_example()
    before = attribute(ch.memory(), g, 1000, "shapley")
    ch.evaluate("alice", g, "0.9", ["notes", "scans"])
    after = attribute(ch.memory(), g, 1000, "shapley")
    assert before["coalitions"]["v_full"] == "4/5" and after["coalitions"]["v_full"] == "9/10"
    assert len(after["coalitions"]["evaluations"]) == 3
