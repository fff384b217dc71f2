"""A Flower federation recording itself on a real node (real HTTP, the node's SQLite file),
through Flower's simulation runtime in process (``ledger.flower.run_inprocess``).

The demo federation (3 hospitals, 3 rounds, central DP with Flower's RDP accountant): one
local update per client per round and one aggregate per round, chained by ``parent``; n_k
the number FedAvg weighted by; every ``weights_hash`` recomputed from the arrays; each
dataset's spent budget equal to the accountant's epsilon; the chain audits clean and
attribution is computed from it. Then: FedAvg without DP recomputed from the ledger's n_k;
tampered replies rejected as failed replies; a round over budget not started; a DP wrapper
without an accountant refused; LocalDpMod's own epsilon recorded.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

flwr = pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e .[test,flower])")

import fl_demo  # noqa: E402 - scripts/, put on sys.path by conftest.py
from flwr.app import ConfigRecord, Context, Message  # noqa: E402
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg  # noqa: E402

from ledger.errors import InputError  # noqa: E402
from ledger.flower import BudgetExceeded, ProvLedger, decimal_string, run_inprocess, weights_hash  # noqa: E402
from ledger.keys import SigningKey  # noqa: E402

DATASETS = [h[1] for h in fl_demo.HOSPITALS]
TRAINERS = {h[1]: h[0] for h in fl_demo.HOSPITALS}


def body(client: Any, rid: str) -> dict[str, Any]:
    rec = client.record(rid)
    assert rec["status"] == "committed"
    return rec["record"]["body"]  # type: ignore[no-any-return]


def provledger(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "provledger"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def key(home: Path, name: str) -> SigningKey:
    return SigningKey.load(home / "demo-keys" / f"{name}.key")


def identities(home: Path) -> dict[int, dict[str, str]]:
    return {i: {"provledger-key": str(home / "demo-keys" / f"{who}.key"), "provledger-dataset": ds}
            for i, (who, ds, _, _) in enumerate(fl_demo.HOSPITALS)}


def people(client: Any) -> dict[str, str]:
    return {i["key"]: i["name"] for i in client.identities()}


# --- the demo federation ------------------------------------------------------------------
def test_each_round_records_one_update_per_client_and_one_aggregate(federation: dict[str, Any]) -> None:
    client, out = federation["client"], federation["out"]
    names = people(client)
    assert [r["round"] for r in out["rounds"]] == [1, 2, 3]
    parent = None
    for r in out["rounds"]:
        agg = body(client, r["aggregate"])
        assert agg["round"] == r["round"] and agg["parent"] == parent and agg["inputs"] == []
        assert agg["aggregates"] == [u["id"] for u in r["updates"]]  # reply order
        assert client.record(r["aggregate"])["record"]["signer"] == key(federation["home"], "ari").public
        seen = []
        for uid in agg["aggregates"]:
            rec = client.record(uid)["record"]
            b = rec["body"]
            assert b["round"] == r["round"] and b["parent"] == parent and b["aggregates"] == []
            (inp,) = b["inputs"]
            seen.append(inp["dataset"])
            # Signed by the organisation's trainer whose dataset it is, not by the server.
            assert names[rec["signer"]] == TRAINERS[inp["dataset"]]
            assert inp["samples"] == fl_demo.PER_ROUND  # the num-examples FedAvg weighted by
            assert "train-loss" in b["metrics"]
        assert sorted(seen) == sorted(DATASETS)
        parent = r["aggregate"]
    assert out["final_model"] == parent
    assert out["rejected"] == []


def test_every_weights_hash_is_the_hash_of_the_arrays(federation: dict[str, Any]) -> None:
    client, out, sent = federation["client"], federation["out"], federation["sent"]
    for r in out["rounds"]:
        for u in r["updates"]:
            site = DATASETS.index(u["dataset"])
            assert body(client, u["id"])["weights_hash"] == weights_hash(sent[(r["round"], site)])
    # The final aggregate's hash is that of the arrays the strategy returned as the model.
    assert body(client, out["final_model"])["weights_hash"] == out["final_weights_hash"]


def test_budget_spent_equals_the_accountant(federation: dict[str, Any]) -> None:
    out = federation["out"]
    spent = {name: Decimal(ds["ledger_epsilon"]) for name, ds in out["datasets"].items()}
    assert set(spent) == set(DATASETS)
    for name, ds in out["datasets"].items():
        assert abs(float(spent[name]) - ds["accountant_epsilon"]) < 1e-9, name
        assert spent[name] == Decimal(repr(ds["accountant_epsilon"]))  # docs/flower.md 3: exactly
        assert Decimal(ds["ledger_delta"]) == Decimal(repr(fl_demo.TARGET_DELTA))
    # Per round: positive, and the rounds' costs add up to the total.
    costs = [Decimal(r["epsilon"]) for r in out["rounds"]]
    assert all(c > 0 for c in costs) and sum(costs) == spent[DATASETS[0]]
    m = out["mechanism"]
    assert (m["noise_multiplier"], m["clipping_norm"], m["target_delta"], m["rounds"], m["accountant"]) == (
        fl_demo.NOISE_MULTIPLIER, fl_demo.CLIPPING_NORM, fl_demo.TARGET_DELTA, 3, "RdpAccountant")
    assert m["releases"] == 3


def test_evaluations_per_metric_with_coalition(federation: dict[str, Any]) -> None:
    client, out = federation["client"], federation["out"]
    assert len(out["evaluations"]) == 2 * 3  # accuracy and auc after each round
    targets = [r["aggregate"] for r in out["rounds"]]
    bodies = [body(client, e) for e in out["evaluations"]]
    assert [b["target"] for b in bodies] == [t for t in targets for _ in range(2)]
    assert {b["metric"] for b in bodies} == {"accuracy", "auc"}
    assert all(b["coalition"] == sorted(DATASETS) for b in bodies)
    final = {b["metric"]: b["value"] for b in bodies[-2:]}
    assert final == {k: decimal_string(v) for k, v in out["final_metrics"].items()}


def test_chain_audits_clean_and_attribution_comes_from_it(federation: dict[str, Any]) -> None:
    out, url, db = federation["out"], federation["url"], str(federation["demo_db"])
    res = provledger("audit", url)
    assert res.returncode == 0, res.stdout + res.stderr
    att = out["attribution"]
    assert att["model"] == out["final_model"] and sum(line["units"] for line in att["lines"]) == 1000
    assert {line["name"] for line in att["lines"]} == {"nadia", "luis", "hana"}
    # Recomputed from the chain as the demo left it: the same answer, its log_size included
    # (the live chain holds whatever the session's other federations recorded since).
    from_db = json.loads(provledger("attribution", out["final_model"], "--total", "1000", "--db", db, "--json").stdout)
    assert from_db == att
    summary = out["lineage"]["summary"]
    assert summary["datasets"] == sorted(DATASETS) and summary["local_updates"] == 9 and summary["updates"] == 12


# --- FedAvg without DP, recomputed from the ledger ------------------------------------------
def _plain(fl_node: dict[str, Any], rounds: int, *, mods: tuple[Any, ...] = (), outer: tuple[Any, ...] = (), examples: list[int] | None = None,
           local_dp: Any | None = None, sent: dict[Any, Any] | None = None) -> tuple[ProvLedger, Any]:
    home = fl_node["home"]
    inner = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)
    strategy = ProvLedger(inner, node=fl_node["client"], aggregator=key(home, "ari"), model="plain-" + str(id(inner)),
                          datasets=DATASETS, local_dp=local_dp)
    app = fl_demo.server_app(strategy, rounds)
    run_inprocess(app, fl_demo.client_app(examples=examples, mods=mods, outer=outer, sent=sent,
                                                    local_dp=local_dp), 3, node_configs=identities(home))
    return strategy, app


def test_fedavg_is_the_average_weighted_by_the_recorded_samples(federation: dict[str, Any]) -> None:
    sent: dict[tuple[int, int], Any] = {}
    strategy, app = _plain(federation, 2, examples=[300, 100, 200], sent=sent)
    client = federation["client"]
    for r in strategy.rounds:
        agg = body(client, r["aggregate"])
        updates = [body(client, uid) for uid in agg["aggregates"]]
        n = [u["inputs"][0]["samples"] for u in updates]
        sites = [DATASETS.index(u["inputs"][0]["dataset"]) for u in updates]
        assert sorted(n) == [100, 200, 300]
        assert n == [[300, 100, 200][s] for s in sites]
        # FedAvg over the arrays received, in reply order, weighted by the ledger's n_k.
        mean = {k: sum(sent[(r["round"], s)][k] * (w / sum(n)) for s, w in zip(sites, n, strict=True))
                for k in ("w", "b")}
        assert agg["weights_hash"] == weights_hash(mean)
        assert all(u["inputs"][0]["epsilon"] == "0" and u["inputs"][0]["delta"] == "0" for u in updates)
    assert body(client, strategy.parent)["weights_hash"] == weights_hash(app.result.arrays)


# --- tampered replies ----------------------------------------------------------------------------
def _tamper(site: int, what: str) -> Any:
    """A mod outside ProvLedgerMod on site ``site``: changes the reply after it was signed.
    (The in-process runtime asks site 0 before site 1: "duplicate" copies site 0's reply.)"""
    first: dict[int, Any] = {}

    def mod(msg: Message, ctx: Context, call_next: Any) -> Message:
        reply = call_next(msg, ctx)
        server_round = int(msg.content["config"]["server-round"])
        if int(ctx.node_config["partition-id"]) == 0:
            first[server_round] = reply.content
        if int(ctx.node_config["partition-id"]) != site:
            return reply
        if what == "duplicate":
            reply.content = first[server_round]
        elif what == "stranger":  # a valid signature by a key the chain does not know
            from ledger.records import make_record

            env = json.loads(reply.content["provledger"]["envelope"])
            fresh = make_record(SigningKey.generate(), env["chain"], "model.update", env["body"])
            reply.content["provledger"] = ConfigRecord({"envelope": json.dumps(fresh).encode()})
        elif what == "unsigned":
            del reply.content["provledger"]
        elif what == "weights":
            arrays = reply.content["arrays"]
            w = arrays["w"].numpy().copy()
            w[0] += 1e-9
            from flwr.app import Array

            arrays["w"] = Array(w)
        else:  # re-sign the update claiming another epsilon: the signature is valid, the cost is not
            from ledger.records import make_record

            env = json.loads(reply.content["provledger"]["envelope"])
            env["body"]["inputs"][0]["epsilon"] = "0.5"
            signer = SigningKey.load(ctx.node_config["provledger-key"])
            fresh = make_record(signer, env["chain"], "model.update", env["body"])
            reply.content["provledger"] = ConfigRecord({"envelope": json.dumps(fresh).encode()})
        return reply

    return mod


@pytest.mark.parametrize("what", ["weights", "epsilon", "unsigned", "stranger", "duplicate"])
def test_tampered_reply_is_a_failed_reply(federation: dict[str, Any], what: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ledger.flower")
    strategy, _ = _plain(federation, 2, outer=(_tamper(1, what),))
    client = federation["client"]
    assert [x["round"] for x in strategy.rejected] == [1, 2]
    code = {"unsigned": "unsigned_reply", "stranger": "unknown_signer", "duplicate": "duplicate_update"}.get(
        what, "update_mismatch")
    assert all(x["code"] == code for x in strategy.rejected)
    word = {"weights": "weights_hash", "epsilon": "epsilon 0.5", "unsigned": "no signed provledger update",
            "stranger": "is not a trainer on the chain", "duplicate": "came in another reply already"}[what]
    assert all(word in x["message"] for x in strategy.rejected)
    assert sum("signed update rejected" in r.getMessage() for r in caplog.records) == 2
    for r in strategy.rounds:
        agg = body(client, r["aggregate"])
        used = [body(client, u)["inputs"][0]["dataset"] for u in agg["aggregates"]]
        assert sorted(used) == sorted(DATASETS[:1] + DATASETS[2:])  # site 1 left out of FedAvg and the ledger


# --- budgets and mechanisms -----------------------------------------------------------------------
def test_round_over_budget_is_not_started(federation: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """After the demo's 3 rounds each dataset has about 1.98 of 6 left (less if other tests
    spent some since); a fresh accountant's first round costs about 2.17: the round is
    refused before any client is asked."""
    client, home = federation["client"], federation["home"]
    caplog.set_level(logging.ERROR, logger="ledger.flower")
    before = client.height()
    rem = client.dataset(DATASETS[0])["remaining"]
    assert Decimal(rem["epsilon"]) <= Decimal(federation["out"]["datasets"][DATASETS[0]]["remaining"]["epsilon"])
    calls: list[int] = []

    def count(msg: Message, ctx: Context, call_next: Any) -> Message:
        calls.append(1)
        return call_next(msg, ctx)

    inner = fl_demo.dp_strategy(3)
    strategy = ProvLedger(inner, node=client, aggregator=key(home, "ari"), model=fl_demo.MODEL, datasets=DATASETS,
                          parent=federation["out"]["final_model"])
    with pytest.raises(BudgetExceeded) as info:
        run_inprocess(fl_demo.server_app(strategy, 1), fl_demo.client_app(mods=(count,)), 3,
                      node_configs=identities(home))
    assert info.value.code == "budget_exceeded"
    said = re.fullmatch(f"round 1 not started: it costs dataset {DATASETS[0]!r} epsilon ([0-9.]+), delta 0.00001; "
                        f"remaining budget is epsilon {re.escape(rem['epsilon'])}, delta {re.escape(rem['delta'])}",
                        info.value.message)
    assert said and Decimal(said[1]) > Decimal(rem["epsilon"]), info.value.message
    assert any("round 1 not started" in r.getMessage() for r in caplog.records)
    assert calls == [] and strategy.rounds == [] and inner.accountant.num_releases == 0
    assert client.height() == before  # nothing recorded


def test_dp_wrapper_without_an_accountant_is_refused() -> None:
    dp = DifferentialPrivacyServerSideFixedClipping(FedAvg(), 1.0, 0.5, 3)
    with pytest.raises(InputError) as info:
        ProvLedger(dp, node="http://127.0.0.1:9", aggregator=SigningKey.generate(), model="m", datasets=["d"])
    assert info.value.code == "no_accountant"


def test_local_dp_records_its_own_epsilon(federation: dict[str, Any]) -> None:
    from flwr.clientapp.mod import LocalDpMod

    ldp = LocalDpMod(clipping_norm=10.0, sensitivity=10.0, epsilon=0.5, delta=1e-6)
    client = federation["client"]
    spent = {d: Decimal(client.dataset(d)["spent"]["epsilon"]) for d in DATASETS}
    strategy, _ = _plain(federation, 1, mods=(ldp,), local_dp=ldp)
    (r,) = strategy.rounds
    for uid in body(client, r["aggregate"])["aggregates"]:
        inp = body(client, uid)["inputs"][0]
        assert (inp["epsilon"], inp["delta"]) == ("0.5", "0.000001")
    for d in DATASETS:
        assert Decimal(client.dataset(d)["spent"]["epsilon"]) == spent[d] + Decimal("0.5")


# --- where a client finds its identity ------------------------------------------------------------
def test_client_identity_sources(tmp_path: Path) -> None:
    from flwr.app import RecordDict

    from ledger.flower import client_identity

    keys = {n: SigningKey.generate() for n in ("node", "run", "code")}
    for n, k in keys.items():
        k.save(tmp_path / f"{n}.key")

    def ctx(node: dict[str, Any], run: dict[str, Any]) -> Context:
        return Context(run_id=1, node_id=99, node_config=node, state=RecordDict(), run_config=run)

    code = {0: (str(tmp_path / "code.key"), "ds-code")}
    run = {"provledger-key-0": str(tmp_path / "run.key"), "provledger-dataset-0": "ds-run"}
    node = {"provledger-key": str(tmp_path / "node.key"), "provledger-dataset": "ds-node", "partition-id": 0}
    # The node config first, then the run config by partition id, then the app's mapping.
    who = client_identity(ctx(node, run), code)
    assert (who.key.public, who.dataset) == (keys["node"].public, "ds-node")
    who = client_identity(ctx({"partition-id": 0}, run), code)
    assert (who.key.public, who.dataset) == (keys["run"].public, "ds-run")
    who = client_identity(ctx({"partition-id": 0}, {}), code)
    assert (who.key.public, who.dataset) == (keys["code"].public, "ds-code")
    for node_cfg, err in (({"partition-id": 1}, "no_client_key"), ({}, "no_client_key"),
                          ({"provledger-key": str(tmp_path / "node.key")}, "no_client_dataset")):
        with pytest.raises(InputError) as info:
            client_identity(ctx(node_cfg, {}), code)
        assert info.value.code == err


def test_tampered_reply_under_accounted_dp_fails_the_round(federation: dict[str, Any]) -> None:
    """Flower's accounted DP wrappers need every sampled reply: a rejected one fails the
    round, which records nothing and spends nothing."""
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant
    from flwr.supercore.privacy_accounting import SamplingMethod

    client, home = federation["client"], federation["home"]
    accountant = RdpAccountant(PrivacyConfig(target_delta=1e-5, population_size=3,
                                             neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                             sampling_method=SamplingMethod.NO_AMPLIFICATION))
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3)
    inner = DifferentialPrivacyServerSideFixedClipping(fedavg, 10.0, 0.5, 3, accountant=accountant)
    strategy = ProvLedger(inner, node=client, aggregator=key(home, "ari"), model="strict-dp", datasets=DATASETS)
    spent = {d: client.dataset(d)["spent"] for d in DATASETS}
    height = client.height()
    run_inprocess(fl_demo.server_app(strategy, 1), fl_demo.client_app(outer=(_tamper(1, "weights"),)), 3,
                  node_configs=identities(home))
    assert [x["code"] for x in strategy.rejected] == ["update_mismatch"]
    assert strategy.rounds == [] and strategy.parent is None and accountant.num_releases == 0
    assert {d: client.dataset(d)["spent"] for d in DATASETS} == spent and client.height() == height
