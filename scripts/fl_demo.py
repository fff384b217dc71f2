"""A real federation that records itself: three hospitals train a logistic-regression risk
model with Flower and central differential privacy, and provledger records every round.

``scripts/fl-demo`` runs this file. Through the HTTP API it registers the worked example's
people (``scripts/demo.py``: nadia, luis and hana train, ari aggregates, eve evaluates) and
three datasets whose content hash, size and items are those of the data generated here;
then Flower trains for ``--rounds`` rounds (in process, ``ledger.flower.run_inprocess``)
with ``ProvLedger(DifferentialPrivacyServerSideFixedClipping(FedAvg(...), accountant=
RdpAccountant(...)))`` on the server and ``ProvLedgerMod`` on each client; it prints the
final model's record id, its lineage, its attribution and, per dataset, the epsilon spent
on the ledger next to the accountant's.

The data is generated deterministically (numpy, fixed seeds): 8 features, a binary label,
each hospital's features shifted differently. Every round each hospital trains on 400 of
its records (the accountant needs equal weights), starting from the global model. Keys are
generated at run time, so record ids differ between runs; the model, the metrics and the
epsilons do not, except for the DP noise, which Flower draws at random.

Without ``--node`` it makes a network in a temporary directory (``--home DIR`` keeps it),
runs a node on a free port and stops it at the end; ``--node URL --home DIR`` uses a
running node whose admin keys are in DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from demo import Demo, emit, fail, network_client  # scripts/ is on sys.path

from ledger.client import Client
from ledger.errors import InputError, LedgerError, PeerError

MODEL = "sepsis-risk"
FEATURES = 8
PER_ROUND = 400  # records each hospital trains on per round (equal FedAvg weights)
ROUNDS = 3
LOCAL_EPOCHS = 5
LEARNING_RATE = 0.5
NOISE_MULTIPLIER = 2.0
CLIPPING_NORM = 0.5
TARGET_DELTA = 1e-5
BUDGET = ("6", "0.0001")  # each dataset's privacy budget (epsilon, delta)
# trainer, dataset, records, feature shift
HOSPITALS = (("nadia", "northside-vitals", 1200, 0.0), ("luis", "lakeview-vitals", 800, 0.4),
             ("hana", "harbor-vitals", 1000, -0.3))
AGGREGATOR, EVALUATOR = "ari", "eve"
EVAL_RECORDS = 600
TRUE_W = np.linspace(-1.0, 1.0, FEATURES)


# --- the data and the model --------------------------------------------------------------
def make_data(seed: int, n: int, shift: float) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``n`` records (features, label) drawn with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, size=(n, FEATURES))
    p = 1.0 / (1.0 + np.exp(-(x @ TRUE_W + 0.25)))
    y = (rng.random(n) < p).astype(np.float64)
    return x, y


def site_data(i: int, n: int | None = None, shift: float | None = None) -> tuple[Any, Any]:
    """Hospital ``i``'s data (hospital ``i`` of ``HOSPITALS``, or a generated site beyond)."""
    if i < len(HOSPITALS):
        _, _, n0, s0 = HOSPITALS[i]
        return make_data(1000 + i, n if n is not None else n0, s0 if shift is None else shift)
    return make_data(1000 + i, n or 1000, shift if shift is not None else 0.1 * (i % 5) - 0.2)


def data_hash(x: Any, y: Any) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, "<f8").tobytes() + np.ascontiguousarray(y, "<f8").tobytes()).hexdigest()


def initial_arrays() -> dict[str, np.ndarray[Any, Any]]:
    return {"w": np.zeros(FEATURES), "b": np.zeros(1)}


def local_train(w: Any, b: Any, x: Any, y: Any) -> tuple[Any, Any, float]:
    """Full-batch gradient descent on the logistic loss; returns (w, b, final loss)."""
    w, b = w.copy(), b.copy()
    for _ in range(LOCAL_EPOCHS):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b[0])))
        w -= LEARNING_RATE * (x.T @ (p - y)) / len(y)
        b -= LEARNING_RATE * np.array([np.mean(p - y)])
    p = np.clip(1.0 / (1.0 + np.exp(-(x @ w + b[0]))), 1e-12, 1 - 1e-12)
    return w, b, float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def evaluate(w: Any, b: Any, x: Any, y: Any) -> dict[str, float]:
    """Accuracy and AUC (the rank statistic) on (x, y)."""
    s = x @ w + b[0]
    acc = float(np.mean((s > 0) == (y > 0.5)))
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    auc = float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return {"accuracy": round(acc, 6), "auc": round(auc, 6)}


def eval_set() -> tuple[Any, Any]:
    return make_data(7, EVAL_RECORDS, 0.0)


# --- the Flower apps ---------------------------------------------------------------------------
def client_app(record: bool = True, sites: list[tuple[Any, Any]] | None = None, *,
               examples: Sequence[int] | None = None, mods: Sequence[Any] = (), outer: Sequence[Any] = (),
               identities: Mapping[int, tuple[str, str]] | None = None,
               sent: dict[tuple[int, int], Any] | None = None, local_dp: Any | None = None) -> Any:
    """The hospitals' ClientApp: ``ProvLedgerMod`` first when ``record`` (``identities``:
    its ``by_partition``; ``local_dp``: the ``LocalDpMod`` among ``mods``), then ``mods`` (``outer`` before it). Site ``i`` trains on ``examples[i]`` records a
    round (default ``PER_ROUND``); ``sent[(round, i)]`` gets the arrays it returns."""
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from ledger.flower import ProvLedgerMod

    app = ClientApp()
    cache: dict[int, tuple[Any, Any]] = {}

    first = [ProvLedgerMod(local_dp, by_partition=identities)] if record else []

    @app.train(mods=[*outer, *first, *mods])
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid not in cache:
            cache[pid] = sites[pid] if sites is not None else site_data(pid)
        x, y = cache[pid]
        server_round = int(msg.content["config"]["server-round"])
        n = examples[pid] if examples is not None else PER_ROUND
        pick = np.random.default_rng([pid, server_round]).choice(len(y), size=n, replace=False)
        arrays = msg.content["arrays"]
        w, b, loss = local_train(arrays["w"].numpy(), arrays["b"].numpy(), x[pick], y[pick])
        if sent is not None:
            sent[(server_round, pid)] = {"w": w, "b": b}
        return Message(RecordDict({"arrays": ArrayRecord({"w": Array(w), "b": Array(b)}),
                                   "metrics": MetricRecord({"num-examples": n, "train-loss": round(loss, 6)})}),
                       reply_to=msg)

    return app


def dp_strategy(clients: int) -> Any:
    """FedAvg under central DP with fixed clipping and Flower's RDP accountant."""
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.supercore.privacy_accounting import SamplingMethod

    accountant = RdpAccountant(PrivacyConfig(
        target_delta=TARGET_DELTA, population_size=clients, neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients)
    return DifferentialPrivacyServerSideFixedClipping(fedavg, NOISE_MULTIPLIER, CLIPPING_NORM, clients,
                                                      accountant=accountant)


def server_app(strategy: Any, rounds: int, evaluation: tuple[Any, Any] | None = None) -> Any:
    """The ServerApp: ``strategy.start`` for ``rounds`` rounds, evaluating centrally on
    ``evaluation`` (eve's held-out set). The Result lands in ``app.result``."""
    from flwr.app import Array, ArrayRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()
    ex, ey = evaluation if evaluation is not None else eval_set()

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        return MetricRecord(evaluate(arrays["w"].numpy(), arrays["b"].numpy(), ex, ey))

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        init = ArrayRecord({k: Array(v) for k, v in initial_arrays().items()})
        app.result = strategy.start(grid=grid, initial_arrays=init, num_rounds=rounds,
                                    evaluate_fn=central)

    return app


def quiet_flwr() -> None:
    """Flower's log below errors off; provledger's warnings (rejected replies) on stderr."""
    import flwr.supercore  # noqa: F401 - sets up the "flwr" logger

    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.ERROR)
    flwr_log.propagate = False  # it has its own console handler
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# --- the consortium on the ledger ------------------------------------------------------------
def contribute(d: Demo, sites: list[tuple[Any, Any]]) -> None:
    """The hospitals' datasets: hash, size and items of the data generated here."""
    for _, name, *_ in HOSPITALS:
        with contextlib.suppress(PeerError):
            d.c.dataset(name)
            raise InputError(f"this chain already holds the demo's dataset {name!r}; run fl-demo on a fresh network",
                             code="demo_exists")
    d.commit([(f"dataset:{name}", d.envelope(who, "dataset.contribute", {
        "dataset": name, "version": "1", "content_hash": data_hash(x, y), "size_bytes": x.nbytes + y.nbytes,
        "items": len(y), "license": "CC-BY-4.0", "modality": "tabular", "derived_from": [],
        "privacy_budget": {"epsilon": BUDGET[0], "delta": BUDGET[1]},
        "description": f"{len(y)} patient records, {FEATURES} vital-sign features, generated"}))
        for (who, name, _, _), (x, y) in zip(HOSPITALS, sites, strict=True)])


def run(client: Client, home: Path, rounds: int, sent: dict[tuple[int, int], Any] | None = None) -> dict[str, Any]:
    """Register the consortium, train ``rounds`` rounds, and gather what the ledger says.
    ``sent[(round, site)]`` gets the arrays each site returned."""
    from ledger.flower import ProvLedger, run_inprocess, weights_hash

    d = Demo(client, home)
    sites = [site_data(i) for i in range(len(HOSPITALS))]
    ex, ey = eval_set()
    d.register_people()
    contribute(d, sites)
    inner = dp_strategy(len(HOSPITALS))
    strategy = ProvLedger(inner, node=client, aggregator=d.keys[AGGREGATOR], evaluator=d.keys[EVALUATOR],
                          eval_set_hash=data_hash(ex, ey), model=MODEL, datasets=[h[1] for h in HOSPITALS])
    keys = {i: {"provledger-key": str(home / "demo-keys" / f"{who}.key"), "provledger-dataset": ds}
            for i, (who, ds, _, _) in enumerate(HOSPITALS)}
    app = server_app(strategy, rounds, (ex, ey))
    run_inprocess(app, client_app(sites=sites, sent=sent), len(HOSPITALS), node_configs=keys)
    final = strategy.parent
    if final is None:
        raise LedgerError("the federation recorded no aggregate", code="nothing_recorded")
    spent = inner.accountant.get_privacy_spent()
    datasets = {}
    for _, name, _, _ in HOSPITALS:
        st = client.dataset(name)
        datasets[name] = {"ledger_epsilon": st["spent"]["epsilon"], "ledger_delta": st["spent"]["delta"],
                          "accountant_epsilon": spent.epsilon, "accountant_delta": spent.delta,
                          "budget": st["budget"], "remaining": st["remaining"]}
    last = max(app.result.evaluate_metrics_serverapp)
    return {
        "chain_id": d.chain, "node": client.base_url, "home": str(home), "model": MODEL, "final_model": final,
        "mechanism": {"kind": "central", "wrapper": type(inner).__name__, "noise_multiplier": NOISE_MULTIPLIER,
                      "clipping_norm": CLIPPING_NORM, "target_delta": TARGET_DELTA, "rounds": rounds,
                      "clients": len(HOSPITALS), "accountant": type(inner.accountant).__name__,
                      "accounting_method": spent.accounting_method, "releases": spent.num_releases},
        "datasets": datasets, "rounds": strategy.rounds, "rejected": strategy.rejected,
        "evaluations": strategy.evaluations,
        "final_metrics": dict(app.result.evaluate_metrics_serverapp[last]),
        "final_weights_hash": weights_hash(app.result.arrays),
        "participants": d.people, "records": d.ids,
        "lineage": client.lineage(final), "attribution": client.attribution(final, 1000, "proportional"),
    }


def show(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ledger.cli_lineage import attribution_table
    from ledger.lineage import to_tree

    con = Console()
    m = out["mechanism"]
    con.rule(f"{out['model']}: {m['rounds']} Flower rounds, {m['clients']} hospitals, central DP")
    con.print(f"final model {out['final_model']}  (chain {out['chain_id'][:16]}… at {out['node']})", soft_wrap=True)
    con.print("metrics on eve's held-out set: " + ", ".join(f"{k} {v}" for k, v in out["final_metrics"].items()))
    con.print(f"mechanism: {m['wrapper']}, noise multiplier {m['noise_multiplier']}, clipping norm {m['clipping_norm']}, "
              f"{m['accountant']} at delta {m['target_delta']}")
    con.print(to_tree(out["lineage"]))
    con.print(attribution_table(out["attribution"]))
    t = Table(title=f"privacy spent per dataset (budget epsilon {BUDGET[0]}, delta {BUDGET[1]})")
    for col in ("dataset", "ledger epsilon", "accountant epsilon", "ledger delta"):
        t.add_column(col, justify="left" if col == "dataset" else "right", no_wrap=True)
    for name, ds in out["datasets"].items():
        t.add_row(name, ds["ledger_epsilon"], repr(ds["accountant_epsilon"]), ds["ledger_delta"])
    con.print(t)
    if out["home"]:
        con.print(f"provledger audit {Path(out['home']) / 'ledger.db'}", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/fl-demo", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Example:\n  scripts/fl-demo --home /tmp/fl-demo\n  provledger audit /tmp/fl-demo/ledger.db")
    ap.add_argument("--node", metavar="URL", help="use this running node (its admin keys are in --home)")
    ap.add_argument("--home", metavar="DIR", help="the network's directory (default: a temporary one, removed)")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"federated rounds (default {ROUNDS})")
    ap.add_argument("--json", action="store_true", help="print everything as one JSON document")
    args = ap.parse_args(argv)
    quiet_flwr()
    try:
        if args.rounds < 1:
            raise InputError("--rounds must be at least 1", code="bad_argument")
        with network_client(args.node, args.home, "provledger-fl-demo-") as (client, home, kept):
            out = run(client, home, args.rounds)
            if not kept:
                out["home"] = None  # removed with the temporary directory
    except LedgerError as e:
        return fail(e)
    return emit(out, args.json, show)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
