"""Benefit attribution: who earned what share of a model version, to the last unit.

The rules are in ``docs/attribution.md``; this module follows them step by step (the
numbered comments refer to its sections). Everything is exact: decimal strings become
``fractions.Fraction`` exactly, and integer units are handed out by largest remainder
with ties broken by public key, so the units add up to the total and any auditor holding
the chain gets the same table.

``attribute(reader, model_record_id, total_units, method=...)`` returns a plain dict (see
``docs/attribution.md``, "Result"). ``shapley_exact``, ``shapley_permutations`` and
``leave_one_out`` are the pure coalition-value functions it uses.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from .errors import InputError, UnprocessableError
from .lineage import Trace, trace
from .reader import ChainReader, Row
from .records import parse_decimal
from .values import decimal_str

__all__ = [
    "EXACT_MAX_DATASETS",
    "METHODS",
    "PERMUTATIONS",
    "POOLS",
    "attribute",
    "coalition_values",
    "fraction_str",
    "largest_remainder",
    "leave_one_out",
    "shapley_exact",
    "shapley_permutations",
]

METHODS = ("proportional", "shapley", "leave-one-out")
POOLS = ("data", "annotation", "training")
EXACT_MAX_DATASETS = 12  # exact Shapley enumerates 2^n coalitions
PERMUTATIONS = 1000  # permutations for the sampled estimate; all n! of them when n! <= this
MISSING_REPORTED = 256  # the result lists at most this many missing coalitions

Coalition = frozenset[str]


def fraction_str(f: Fraction) -> str:
    """An exact fraction as ``"p/q"`` (always with a denominator: ``"1/1"``, ``"0/1"``)."""
    return f"{f.numerator}/{f.denominator}"


def _dec(s: str) -> Fraction:
    return parse_decimal(s)  # exact (docs/protocol.md 2); the record's form was checked


# --- integer units -------------------------------------------------------------------------
def largest_remainder(shares: Mapping[str, Fraction], total: int) -> dict[str, int]:
    """Integer units for exact ``shares`` summing to 1 (docs/attribution.md 7): floor each
    ``share * total``, then one more unit each to the largest fractional remainders, ties
    broken by key ascending."""
    exact = {k: s * total for k, s in shares.items()}
    units = {k: math.floor(x) for k, x in exact.items()}
    left = total - sum(units.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - units[k]), k))[:left]:
        units[k] += 1
    return units


# --- coalition values and Shapley ------------------------------------------------------------
def _v(v: Mapping[Coalition, Fraction], s: Coalition) -> Fraction | None:
    if s in v:
        return v[s]
    return Fraction(0) if not s else None  # v(empty) = 0 unless recorded


def _sorted_missing(missing: set[Coalition]) -> list[list[str]]:
    return sorted((sorted(s) for s in missing), key=lambda s: (len(s), s))


def shapley_exact(players: Sequence[str], v: Mapping[Coalition, Fraction]) -> dict[str, Fraction]:
    """Exact Shapley values: phi_i = sum over S not holding i of
    |S|! (n-|S|-1)! / n! * (v(S + i) - v(S)). Every non-empty coalition must be in ``v``."""
    n = len(players)
    fact = [math.factorial(k) for k in range(n + 1)]
    phi = {}
    for p in players:
        others = [q for q in players if q != p]
        total = Fraction(0)
        for size in range(n):
            weight = Fraction(fact[size] * fact[n - size - 1], fact[n])
            for combo in itertools.combinations(others, size):
                s = frozenset(combo)
                with_p, without = _v(v, s | {p}), _v(v, s)
                if with_p is None or without is None:
                    raise UnprocessableError("exact Shapley needs every coalition", code="coalitions_missing")
                total += weight * (with_p - without)
        phi[p] = total
    return phi


def shapley_permutations(
    players: Sequence[str], v: Mapping[Coalition, Fraction], *, seed: int, permutations: int = PERMUTATIONS
) -> tuple[dict[str, Fraction], int, int, set[Coalition]]:
    """Shapley values averaged over permutations (docs/attribution.md 4.3).

    All n! orderings of the sorted players when n! <= ``permutations``, else
    ``permutations`` orderings drawn by ``random.Random(seed).shuffle`` of the sorted list.
    A permutation is used only if every prefix coalition is recorded; the others are
    skipped and their unrecorded prefixes returned. Returns (values, permutations drawn,
    permutations used, missing coalitions); values are 0 when none was usable.
    """
    order = sorted(players)
    n = len(order)
    if math.factorial(n) <= permutations:
        perms: Any = itertools.permutations(order)
    else:
        rng = random.Random(seed)

        def draw() -> Any:
            for _ in range(permutations):
                p = list(order)
                rng.shuffle(p)
                yield p

        perms = draw()
    sums = dict.fromkeys(order, Fraction(0))
    drawn = used = 0
    missing: set[Coalition] = set()
    for perm in perms:
        drawn += 1
        prefix: Coalition = frozenset()
        values = [_v(v, prefix)]
        gaps = []
        for p in perm:
            prefix = prefix | {p}
            val = _v(v, prefix)
            if val is None:
                gaps.append(prefix)
            values.append(val)
        if gaps or values[0] is None:
            missing.update(gaps)
            continue
        used += 1
        for i, p in enumerate(perm):
            sums[p] += values[i + 1] - values[i]  # type: ignore[operator]
    phi = {p: (sums[p] / used if used else Fraction(0)) for p in order}
    return phi, drawn, used, missing


def leave_one_out(players: Sequence[str], v: Mapping[Coalition, Fraction]) -> tuple[dict[str, Fraction], set[Coalition]]:
    """v(N) - v(N minus i) for each player; returns (values, missing coalitions)."""
    full = frozenset(players)
    missing = {s for s in [full, *(full - {p} for p in players)] if _v(v, s) is None}
    if missing:
        return {}, missing
    vn = _v(v, full)
    return {p: vn - _v(v, full - {p}) for p in players}, set()  # type: ignore[operator]


def coalition_values(
    reader: ChainReader, datasets: Sequence[str], metric: str | None = None
) -> tuple[dict[Coalition, Fraction], str | None, list[str]]:
    """Recorded coalition values (docs/attribution.md 4.1): ``model.evaluation`` records
    anywhere in the chain whose ``coalition`` is a subset of ``datasets``, for one metric
    (given, else the most frequent; ties by name). For a coalition evaluated more than
    once the latest record wins. Returns (v, metric, evaluation record ids used)."""
    names = set(datasets)
    evals = [r for r in reader.records_of_type("model.evaluation")
             if r[2]["body"]["coalition"] is not None and set(r[2]["body"]["coalition"]) <= names]
    if metric is None:
        counts = Counter(r[2]["body"]["metric"] for r in evals)
        if not counts:
            return {}, None, []
        metric = min(counts, key=lambda m: (-counts[m], m))
    latest: dict[Coalition, Row] = {}
    for r in sorted(evals, key=lambda r: r[0]):
        if r[2]["body"]["metric"] == metric:
            latest[frozenset(r[2]["body"]["coalition"])] = r
    v = {s: _dec(r[2]["body"]["value"]) for s, r in latest.items()}
    return v, metric, [r[1] for r in sorted(latest.values(), key=lambda r: r[0])]


def _coalition_weights(
    reader: ChainReader, t: Trace, method: str, metric: str | None, permutations: int
) -> tuple[dict[str, Fraction], dict[str, Any]]:
    """Dataset values for the data pool by Shapley or leave-one-out (docs/attribution.md 4)."""
    players = sorted(t.datasets)
    v, metric, used_ids = coalition_values(reader, players, metric)
    if metric is None:
        raise UnprocessableError(
            f"{method}: no model.evaluation with a coalition of this model's datasets "
            f"({', '.join(players)}) is recorded",
            code="coalitions_missing", missing=[[p] for p in players],
        )
    info: dict[str, Any] = {"metric": metric, "evaluations": used_ids, "missing": [], "missing_count": 0}
    if method == "leave-one-out":
        raw, missing = leave_one_out(players, v)
        info["estimator"] = "leave-one-out"
        if missing:
            shown = _sorted_missing(missing)
            raise UnprocessableError(
                f"leave-one-out needs coalition values that are not recorded (metric {metric}): "
                + "; ".join("{" + ", ".join(s) + "}" for s in shown[:5]) + (" …" if len(shown) > 5 else ""),
                code="coalitions_missing", missing=shown,
            )
    else:
        complete = all(_v(v, frozenset(c)) is not None for k in range(1, len(players) + 1)
                       for c in itertools.combinations(players, k)) if len(players) <= EXACT_MAX_DATASETS else False
        if complete:
            raw = shapley_exact(players, v)
            info["estimator"] = "exact"
        else:
            raw, drawn, used, missing = shapley_permutations(players, v, seed=int(t.root, 16), permutations=permutations)
            info.update(estimator="permutations", permutations=drawn, used_permutations=used, seed=t.root)
            shown = _sorted_missing(missing)
            info["missing"], info["missing_count"] = shown[:MISSING_REPORTED], len(shown)
            if used == 0:
                raise UnprocessableError(
                    f"shapley: coalition values are not recorded for any complete ordering of the "
                    f"{len(players)} datasets (metric {metric}); missing: "
                    + "; ".join("{" + ", ".join(s) + "}" for s in shown[:5]) + (" …" if len(shown) > 5 else ""),
                    code="coalitions_missing", missing=shown[:MISSING_REPORTED],
                )
    info["v_empty"] = fraction_str(_v(v, frozenset()) or Fraction(0))
    vn = _v(v, frozenset(players))
    info["v_full"] = None if vn is None else fraction_str(vn)
    info["values"] = {p: fraction_str(raw[p]) for p in players}
    info["clipped"] = sorted(p for p in players if raw[p] < 0)
    return {p: max(raw[p], Fraction(0)) for p in players}, info


# --- the table ---------------------------------------------------------------------------------
def _policy_source(reader: ChainReader, index: int) -> dict[str, Any]:
    """Where the policy in force at log index ``index`` comes from (PROTOCOL.md 9.3): the
    adopted ``policy.set`` proposal and the organisations that approved it, or the genesis."""
    prop = reader.policy_change(index)
    if prop is None:
        return {"source": "genesis", "approved_by": []}
    return {"source": prop.id, "approved_by": list(prop.approvals)}


def attribute(
    reader: ChainReader,
    model_record_id: str,
    total_units: int,
    method: str = "proportional",
    *,
    metric: str | None = None,
    permutations: int = PERMUTATIONS,
) -> dict[str, Any]:
    """The attribution table of a ``model.update`` record (docs/attribution.md)."""
    if type(total_units) is not int or total_units < 0:
        raise InputError(f"total units must be a non-negative integer, got {total_units!r}", code="bad_total")
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}", code="bad_method")
    if type(permutations) is not int or permutations < 1:
        raise InputError("permutations must be a positive integer", code="bad_argument")
    t = trace(reader, model_record_id)
    root_body = t.updates[t.root][2]["body"]
    policy = reader.policy_at(t.index)
    # weights[pool][key] = the participant's weight in the pool; why[pool][key] = record rows.
    weights: dict[str, dict[str, Fraction]] = {p: {} for p in POOLS}
    why: dict[str, dict[str, dict[str, int]]] = {p: {} for p in POOLS}  # record id -> log index

    def credit(pool: str, key: str, w: Fraction, rows: Sequence[Row]) -> None:
        if w <= 0:
            return
        weights[pool][key] = weights[pool].get(key, Fraction(0)) + w
        bucket = why[pool].setdefault(key, {})
        for r in rows:
            bucket[r[1]] = r[0]

    local = t.local_updates
    samples = t.samples()
    # 3. Data pool: each input dataset's value (samples, or its coalition value) ...
    extra: dict[str, Any] = {}
    if method == "proportional":
        ds_value = {name: Fraction(n) for name, n in samples.items()}
    else:
        ds_value, extra = _coalition_weights(reader, t, method, metric, permutations)
    ds_total = sum(ds_value.values(), Fraction(0))
    datasets_out = []
    for name in sorted(t.datasets):
        users = [r for r in local if any(i["dataset"] == name for i in r[2]["body"]["inputs"])]
        versions = t.datasets[name]
        items = sum(v[2]["body"]["items"] for v in versions)
        parts = []
        # ... split among the versions committed before the model, by items (equally if
        # they hold no items), credited to each version's signer.
        for v in versions:
            part = Fraction(v[2]["body"]["items"], items) if items else Fraction(1, len(versions))
            w = ds_value[name] * part
            credit("data", v[2]["signer"], w, [v, *users])
            parts.append({"record": v[1], "version": v[2]["body"]["version"], "items": v[2]["body"]["items"],
                          "contributor": v[2]["signer"], "part": fraction_str(part)})
        st = reader.dataset_state(name, t.index + 1)
        datasets_out.append({
            "name": name, "samples": samples[name], "value": fraction_str(ds_value[name]),
            "share_of_pool": fraction_str(ds_value[name] / ds_total if ds_total else Fraction(0)),
            "versions": parts, "updates": [r[1] for r in users],
            "budget": st.to_dict() if st else None,
        })
    # 5. Annotation pool: labels x quality of each event on an input dataset, before the model.
    for a in t.annotations:
        b = a[2]["body"]
        credit("annotation", a[2]["signer"], b["labels"] * _dec(b["quality"]), [a])
    # 6. Training pool: samples each trainer processed in its local updates.
    for r in local:
        credit("training", r[2]["signer"], Fraction(sum(i["samples"] for i in r[2]["body"]["inputs"])), [r])
    # 2. Pools: the policy at the model's index; empty pools pass their share on.
    totals = {p: sum(weights[p].values(), Fraction(0)) for p in POOLS}
    pol = {p: Fraction(policy[p]) for p in POOLS}
    live = [p for p in POOLS if totals[p] > 0]
    live_weight = sum((pol[p] for p in live), Fraction(0))
    if not live_weight:
        raise UnprocessableError(
            f"nothing to attribute: pools with contributions ({', '.join(live) or 'none'}) have weight 0 in the policy",
            code="nothing_to_attribute",
        )
    eff = {p: (pol[p] / live_weight if p in live else Fraction(0)) for p in POOLS}
    # 7. Shares and units.
    shares: dict[str, Fraction] = {}
    by_pool: dict[str, dict[str, Fraction]] = {}
    for p in live:
        for key, w in weights[p].items():
            s = eff[p] * w / totals[p]
            if not s:  # a live pool with policy weight 0 gives nothing
                continue
            shares[key] = shares.get(key, Fraction(0)) + s
            by_pool.setdefault(key, {})[p] = s
    assert sum(shares.values()) == 1, "shares must sum to 1"
    units = largest_remainder(shares, total_units)
    lines = []
    for key in sorted(shares, key=lambda k: (-shares[k], k)):
        who = reader.identity(key)
        records = {p: [rid for rid, _ in sorted(why[p][key].items(), key=lambda kv: kv[1])]
                   for p in POOLS if p in by_pool[key]}
        lines.append({
            "key": key, "name": who.name if who else None, "org": who.org if who else None,
            "fraction": fraction_str(shares[key]), "units": units[key],
            "pools": {p: fraction_str(s) for p, s in sorted(by_pool[key].items(), key=lambda kv: POOLS.index(kv[0]))},
            "records": records, "record_count": len({r for rs in records.values() for r in rs}),
        })
    out: dict[str, Any] = {
        "model": t.root, "model_name": root_body["model"], "round": root_body["round"],
        "index": t.index, "height": t.height, "log_size": reader.log_size(),
        "method": method, "total_units": total_units,
        "policy": {**_policy_source(reader, t.index), **{p: decimal_str(policy[p]) for p in POOLS}},
        "pools": {p: {"policy": fraction_str(pol[p]), "effective": fraction_str(eff[p]),
                      "weight": fraction_str(totals[p]), "empty": p not in live} for p in POOLS},
        "datasets": datasets_out,
        "lines": lines,
    }
    if method != "proportional":
        out["coalitions"] = extra
    return out
