"""Attribution: the worked example of docs/attribution.md to the unit, and the invariants
(hypothesis) on generated chains."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lineage import Chain, demo

from ledger.attribution import attribute, largest_remainder
from ledger.errors import InputError
from ledger.reader import StoreReader

DOC = Path(__file__).resolve().parent.parent / "docs" / "attribution.md"


# --- the worked example --------------------------------------------------------------------
def worked_example() -> tuple[Chain, str]:
    """docs/attribution.md section 9, record for record."""
    ch = Chain()
    ch.dataset("alice", "scans", items=1000)
    ch.dataset("bob", "notes", items=500)
    ch.dataset(ch.member("carol"), "notes", "2", items=1500)
    ch.annotate("dave", "scans", labels=200, quality="0.9")
    ch.annotate("erin", "notes", labels=100, quality="0.6")
    l1 = ch.local("alice", "m", 1, [("scans", 300)])
    l2 = ch.local("bob", "m", 1, [("notes", 100)])
    g = ch.aggregate("frank", "m", 1, [l1, l2])
    p1 = ch.local("alice", "probe", 1, [("scans", 10)])
    p2 = ch.local("alice", "probe", 2, [("notes", 10)])
    ch.evaluate("alice", p1, "0.6", ["scans"])
    ch.evaluate("alice", p2, "0.4", ["notes"])
    ch.evaluate("alice", g, "0.8", ["notes", "scans"])
    return ch, g


def doc_tables() -> list[tuple[str, int, list[list[str]]]]:
    text = DOC.read_text()
    out = []
    for m in re.finditer(r"```text attribution-example method=(\S+) total=(\d+)\n(.*?)```", text, re.S):
        rows = [line.split() for line in m.group(3).strip().splitlines()[1:]]
        out.append((m.group(1), int(m.group(2)), rows))
    return out


def test_docs_worked_example_to_the_unit() -> None:
    ch, g = worked_example()
    reader = ch.memory()
    tables = doc_tables()
    assert {(m, t) for m, t, _ in tables} == {("proportional", 1000), ("proportional", 100), ("shapley", 1000), ("leave-one-out", 1000)}
    for method, total, rows in tables:
        result = attribute(reader, g, total, method)
        got = [[ln["name"], ln["org"], ln["fraction"], str(ln["units"])] for ln in result["lines"]]
        assert got == rows, (method, total)
    # The independent hand computation of section 9.
    alice = Fraction(1, 2) * Fraction(3, 4) + Fraction(1, 5) * Fraction(3, 4)
    assert alice == Fraction(21, 40)
    shap = attribute(reader, g, 1000, "shapley")
    assert shap["coalitions"]["estimator"] == "exact"
    assert shap["coalitions"]["values"] == {"notes": "3/10", "scans": "1/2"}


def test_result_shape_and_justification() -> None:
    ch, ids = demo()
    r = attribute(ch.memory(), ids["g2"], 1000)
    assert r["policy"] == {"source": "genesis", "approved_by": [], "data": "0.5", "annotation": "0.3", "training": "0.2"}
    assert r["pools"]["data"] == {"policy": "1/2", "effective": "1/2", "weight": "700/1", "empty": False}
    by_name = {ln["name"]: ln for ln in r["lines"]}
    carol = by_name["carol"]
    assert carol["records"] == {"data": [ids["scans-clean"], ids["l1a"]]}
    assert by_name["dave"]["records"] == {"annotation": [ids["ann1"]]}  # not the later event
    assert set(by_name["alice"]["records"]) == {"data", "training"}
    assert "frank" not in by_name  # aggregators process no samples
    scans = next(d for d in r["datasets"] if d["name"] == "scans")
    assert scans["budget"]["remaining"] == {"epsilon": "8", "delta": "0.0009"}
    assert sum(ln["units"] for ln in r["lines"]) == 1000


def test_policy_set_before_the_model_applies_and_empty_pools_pass_their_share(tmp_path: Path) -> None:
    ch = Chain()
    ch.dataset("alice", "scans")
    l1 = ch.local("bob", "m", 1, [("scans", 10)])
    first = ch.policy("0.6", "0.4", "0")
    l2 = ch.local("bob", "m", 2, [("scans", 10)], parent=l1)
    ch.policy("0", "0", "1")
    r1 = attribute(ch.memory(), l1, 10)  # genesis policy; no annotations: 0.5 : 0.2
    assert r1["pools"]["annotation"]["empty"] and r1["pools"]["data"]["effective"] == "5/7"
    assert r1["policy"]["source"] == "genesis" and r1["policy"]["approved_by"] == []
    r2 = attribute(ch.memory(), l2, 10)  # the first policy change; annotation empty -> data takes all
    assert r2["policy"]["data"] == "0.6" and r2["pools"]["data"]["effective"] == "1/1"
    assert r2["policy"]["source"] == first and r2["policy"]["approved_by"] == ["org-a", "org-b"]
    assert [(ln["name"], ln["units"]) for ln in r2["lines"]] == [("alice", 10)]
    # The second policy.set came after l2: it does not apply to l2.
    assert attribute(ch.memory(), l2, 10) == r2
    ch.policy("0", "1", "0")
    l3 = ch.local("bob", "m", 3, [("scans", 10)], parent=l2)
    with pytest.raises(InputError, match="nothing to attribute"):
        attribute(ch.memory(), l3, 10)
    with ch.store(tmp_path / "p.db") as store:
        assert attribute(StoreReader(store), l2, 10) == attribute(ch.memory(), l2, 10)


def test_bad_arguments() -> None:
    ch, ids = demo()
    r = ch.memory()
    for total in (-1, 1.5, True):
        with pytest.raises(InputError, match="non-negative integer"):
            attribute(r, ids["g2"], total)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="method must be"):
        attribute(r, ids["g2"], 10, "equal")
    zero = attribute(r, ids["g2"], 0)
    assert all(ln["units"] == 0 for ln in zero["lines"])


def test_largest_remainder_ties_by_key() -> None:
    shares = {"b": Fraction(1, 3), "a": Fraction(1, 3), "c": Fraction(1, 3)}
    assert largest_remainder(shares, 2) == {"a": 1, "b": 1, "c": 0}
    assert largest_remainder(shares, 4) == {"a": 2, "b": 1, "c": 1}
    assert largest_remainder({"x": Fraction(1)}, 7) == {"x": 7}


# --- generated chains ----------------------------------------------------------------------------
NAMES = ["p0", "p1", "p2", "p3", "p4"]
POLICIES = [None, ("0.5", "0.3", "0.2"), ("1", "0", "0"), ("0.2", "0.8", "0"), ("0", "0.5", "0.5")]


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    n_ds = draw(st.integers(1, 3))
    datasets = [[(draw(st.sampled_from(NAMES)), draw(st.integers(0, 50))) for _ in range(draw(st.integers(1, 2)))]
                for _ in range(n_ds)]
    annotations = [(draw(st.sampled_from(NAMES)), draw(st.integers(0, n_ds - 1)), draw(st.integers(0, 50)),
                    draw(st.sampled_from(["0", "0.5", "0.9", "1"]))) for _ in range(draw(st.integers(0, 3)))]
    rounds = []
    for _ in range(draw(st.integers(1, 2))):
        updates = []
        for _ in range(draw(st.integers(1, 3))):
            used = draw(st.lists(st.integers(0, n_ds - 1), min_size=1, max_size=n_ds, unique=True))
            updates.append((draw(st.sampled_from(NAMES)), [(d, draw(st.integers(1, 100))) for d in used]))
        rounds.append((draw(st.sampled_from(NAMES)), updates))
    return {"datasets": datasets, "annotations": annotations, "rounds": rounds,
            "policy": draw(st.sampled_from(POLICIES)), "total": draw(st.integers(0, 10**6))}


def build(spec: dict[str, Any], prefix: str = "", double: int | None = None) -> tuple[Chain, str]:
    """A chain from a spec; ``prefix`` relabels every key, ``double`` doubles one dataset's
    samples. An outsider (``zz``) contributes, annotates and trains outside the lineage."""
    ch = Chain(prefix)
    for i, name in enumerate([*NAMES, "zz"]):
        ch.member(name, "org-a" if i % 2 == 0 else "org-b")
    for d, versions in enumerate(spec["datasets"]):
        for v, (who, items) in enumerate(versions):
            ch.dataset(who, f"d{d}", str(v), items=items)
    ch.dataset("zz", "outside")
    ch.annotate("zz", "outside", labels=50)
    ch.local("zz", "other", 1, [("outside", 50), ("d0", 5)])
    for who, d, labels, quality in spec["annotations"]:
        ch.annotate(who, f"d{d}", labels=labels, quality=quality)
    if spec["policy"]:
        data, ann, tr = spec["policy"]
        ch.policy(data, ann, tr)
    parent = None
    for rnd, (aggregator, updates) in enumerate(spec["rounds"], start=1):
        refs = [ch.local(who, "m", rnd, [(f"d{d}", n * (2 if d == double else 1)) for d, n in used], parent=parent)
                for who, used in updates]
        parent = ch.aggregate(aggregator, "m", rnd, refs, parent=parent)
    assert parent is not None
    return ch, parent


def _table(spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    ch, model = build(spec, **kw)
    return attribute(ch.memory(), model, spec["total"])


PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(specs())
def test_units_sum_to_total_and_outsiders_get_nothing(spec: dict[str, Any]) -> None:
    r = _table(spec)
    assert sum(ln["units"] for ln in r["lines"]) == spec["total"]
    assert sum(Fraction(ln["fraction"]) for ln in r["lines"]) == 1
    assert all(ln["units"] >= 0 and Fraction(ln["fraction"]) > 0 for ln in r["lines"])
    assert "zz" not in {ln["name"] for ln in r["lines"]}
    for ln in r["lines"]:  # every line is justified
        assert ln["record_count"] >= 1 and set(ln["records"]) == set(ln["pools"])


@PROPS
@given(specs(), st.integers(0, 2))
def test_doubling_a_datasets_samples_never_lowers_its_share(spec: dict[str, Any], d: int) -> None:
    before = {x["name"]: Fraction(x["share_of_pool"]) for x in _table(spec)["datasets"]}
    after = {x["name"]: Fraction(x["share_of_pool"]) for x in _table(spec, double=d)["datasets"]}
    if f"d{d}" in before:
        assert after[f"d{d}"] >= before[f"d{d}"]


@PROPS
@given(specs())
def test_relabelling_keys_changes_only_names_and_keys(spec: dict[str, Any]) -> None:
    a, b = _table(spec), _table(spec, prefix="relabelled-")
    la = {ln["name"]: ln for ln in a["lines"]}
    lb = {ln["name"]: ln for ln in b["lines"]}
    assert set(la) == set(lb)
    assert {n: ln["key"] for n, ln in la.items()}.keys() == {n: ln["key"] for n, ln in lb.items()}.keys()
    assert not {ln["key"] for ln in a["lines"]} & {ln["key"] for ln in b["lines"]}
    total = spec["total"]
    extra_a: Counter[Fraction] = Counter()
    extra_b: Counter[Fraction] = Counter()
    for n in la:
        assert la[n]["fraction"] == lb[n]["fraction"] and la[n]["org"] == lb[n]["org"]
        x = Fraction(la[n]["fraction"]) * total
        rem = x - int(x)
        # Units may move only between participants whose remainders tie (ties go by key).
        assert la[n]["units"] - int(x) in (0, 1) and lb[n]["units"] - int(x) in (0, 1)
        extra_a[rem] += la[n]["units"] - int(x)
        extra_b[rem] += lb[n]["units"] - int(x)
    assert extra_a == extra_b
    strip = ("lines", "model", "datasets")
    assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}


@PROPS
@given(specs())
def test_same_chain_same_table(spec: dict[str, Any]) -> None:
    assert _table(spec) == _table(spec)


def test_store_and_memory_give_the_same_table_on_a_generated_chain(tmp_path: Path) -> None:
    spec = {"datasets": [[("p0", 10), ("p1", 30)], [("p2", 0)]], "annotations": [("p3", 1, 7, "0.5")],
            "rounds": [("p4", [("p0", [(0, 5), (1, 7)]), ("p1", [(1, 3)])]), ("p2", [("p3", [(0, 11)])])],
            "policy": None, "total": 997}
    ch, model = build(spec)
    with ch.store(tmp_path / "g.db") as store:
        assert attribute(StoreReader(store), model, 997) == attribute(ch.memory(), model, 997)
