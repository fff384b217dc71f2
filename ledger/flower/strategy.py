"""The server side: ``ProvLedger``, a Flower strategy wrapper that records each round on a
provledger node as it runs (docs/flower.md 4).

    strategy = ProvLedger(
        DifferentialPrivacyServerSideFixedClipping(FedAvg(...), ..., accountant=RdpAccountant(cfg)),
        node="http://127.0.0.1:8000", aggregator=SigningKey.load("ari.key"), model="cxr-net",
        datasets=["northside-cxr", "lakeview-cxr", "harbor-cxr"])

It is always the outermost layer. Per round:

1. ``configure_train``: the round's privacy cost is computed from the mechanism
   (``privacy.py``); every dataset's remaining budget is read from the node and a round that
   would exceed one is not started (``BudgetExceeded``, logged). The train config tells the
   clients the chain, model, round, parent and central-DP cost they sign.
2. ``aggregate_train``: each reply's signed local update is checked (signature, chain,
   model, round, parent, dataset, ``weights_hash`` recomputed from the arrays received,
   ``samples`` = the weight the strategy averages by, epsilon and delta). A reply that does
   not match becomes a failed reply (``Error`` code ``REJECTED``) before the wrapped
   strategy sees it, and the mismatch is logged. After aggregation the local updates and the
   aggregate (signed by the aggregator; ``aggregates`` in reply order; ``parent`` the
   previous aggregate) are committed in one batch.
3. ``start(..., evaluate_fn=...)``: each metric of the central evaluation of a round's
   aggregate becomes a ``model.evaluation`` signed by ``evaluator``, with ``coalition`` the
   datasets the model was trained on; they are committed with the next round's records,
   the last ones when ``start`` ends (``flush``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import orjson
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from ..client import Client
from ..errors import InputError, LedgerError, PeerError, RuleError
from ..keys import SigningKey, is_hex
from ..records import make_record, parse_record
from .client import CONFIG, REPLY_RECORD, metrics_body
from .hashing import weights_hash
from .privacy import decimal_string, find_central_dp, local_cost

__all__ = ["REJECTED", "BudgetExceeded", "ProvLedger"]

log = logging.getLogger("ledger.flower")

REJECTED = 7001  # the Error code of a reply whose signed update does not match (docs/flower.md 4)


class BudgetExceeded(RuleError):
    """A round whose privacy cost would exceed a dataset's remaining budget on the node."""

    default_code = "budget_exceeded"


def _weight_key(strategy: Any) -> str:
    s = strategy
    while s is not None:
        if hasattr(s, "weighted_by_key"):
            return str(s.weighted_by_key)
        s = getattr(s, "strategy", None)
    return "num-examples"


def _only(records: Any, what: str) -> Any:
    values = list(records.values())
    if len(values) != 1:
        raise InputError(f"the reply has {len(values)} {what}s, not one", code="bad_reply")
    return values[0]


class ProvLedger(Strategy):
    """Wrap ``strategy`` (module docstring). ``datasets``: the federation's datasets (their
    budgets are checked before every round; an update naming another is refused).
    ``local_dp``: the ``LocalDpMod`` the clients use, so their epsilon can be checked.
    ``parent``: the aggregate record the initial arrays come from, if any."""

    def __init__(self, strategy: Strategy, *, node: str | Client, aggregator: SigningKey, model: str,
                 datasets: Sequence[str], evaluator: SigningKey | None = None, eval_set_hash: str | None = None,
                 local_dp: Any | None = None, parent: str | None = None) -> None:
        super().__init__()
        if isinstance(strategy, ProvLedger):
            raise InputError("ProvLedger wraps a strategy once", code="bad_strategy")
        if evaluator is not None and not is_hex(eval_set_hash, 32):
            raise InputError("an evaluator needs eval_set_hash: the SHA-256 of its evaluation set", code="bad_argument")
        if not datasets:
            raise InputError("datasets: name the federation's datasets", code="bad_argument")
        self.strategy = strategy
        self.central = find_central_dp(strategy)  # refuses a DP wrapper without an accountant
        self.local_dp = local_dp
        self.node = Client(node) if isinstance(node, str) else node
        self.chain = self.node.chain_id
        self.aggregator, self.evaluator, self.eval_set_hash = aggregator, evaluator, eval_set_hash
        self.model, self.datasets = model, list(datasets)
        self.weight_key = _weight_key(strategy)
        self.parent = parent
        self.parent_hash: str | None = None  # weights_hash of the arrays of ``parent`` (once recorded here)
        self.seen: set[str] = set()  # datasets the current model was trained on
        self.rounds: list[dict[str, Any]] = []  # one entry per recorded round
        self.rejected: list[dict[str, Any]] = []  # replies turned into failed replies
        self.evaluations: list[str] = []
        self.overhead_s: dict[int, float] = {}  # time spent here per round, wrapped strategy excluded
        self.commit_s: dict[int, float] = {}  # of which waiting for the node to commit the round's batch
        self._pending: dict[int, dict[str, Any]] = {}
        self._queued: list[dict[str, Any]] = []  # evaluations, committed with the next round's records
        self._trainers: set[str] = set()  # keys the node lists as unrevoked trainers (refreshed on a miss)

    def __repr__(self) -> str:
        return f"ProvLedger({self.strategy!r})"

    def summary(self) -> None:
        log.info("ProvLedger: model %s on chain %s…, datasets %s", self.model, self.chain[:16], ", ".join(self.datasets))
        self.strategy.summary()

    def _spent(self, server_round: int, dt: float) -> None:
        self.overhead_s[server_round] = self.overhead_s.get(server_round, 0.0) + dt

    # -- 1. before a round ------------------------------------------------------------
    def check_budgets(self, server_round: int, cost: tuple[Decimal, Decimal]) -> None:
        """Refuse to start a round that would overspend a dataset (its state read from the node,
        the datasets' states requested concurrently)."""
        if cost == (Decimal(0), Decimal(0)):
            return  # nothing to spend; a remaining budget is never negative
        with ThreadPoolExecutor(max_workers=min(8, len(self.datasets))) as pool:
            states = list(pool.map(self.node.dataset, self.datasets))
        for name, state in zip(self.datasets, states, strict=True):
            rem = state.get("remaining")
            if rem is None:
                continue  # the dataset has no privacy budget
            if cost[0] > Decimal(rem["epsilon"]) or cost[1] > Decimal(rem["delta"]):
                msg = (f"round {server_round} not started: it costs dataset {name!r} epsilon {decimal_string(cost[0])}, "
                       f"delta {decimal_string(cost[1])}; remaining budget is epsilon {rem['epsilon']}, delta {rem['delta']}")
                log.error(msg)
                raise BudgetExceeded(msg, dataset=name)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        t0 = time.perf_counter()
        if not messages:
            return messages
        # docs/flower.md 3: what one local update of this round costs its dataset.
        central, cumulative = (Decimal(0), Decimal(0)), None
        if self.central is not None:
            before, cumulative = self.central.spent(), self.central.spent_after(len(messages))
            central = (cumulative[0] - before[0], cumulative[1] - before[1])
        local = local_cost(self.local_dp)
        cost = (central[0] + local[0], central[1] + local[1])
        self.check_budgets(server_round, cost)
        self._pending[server_round] = {"cost": cost, "cumulative": cumulative}
        keys: dict[str, str | int] = {CONFIG.CHAIN: self.chain, CONFIG.MODEL: self.model, CONFIG.ROUND: server_round,
                CONFIG.PARENT: self.parent or "", CONFIG.EPSILON: decimal_string(central[0]),
                CONFIG.DELTA: decimal_string(central[1]), CONFIG.WEIGHT_KEY: self.weight_key}
        for msg in messages:
            for rec in msg.content.config_records.values():
                rec.update(keys)
        self._spent(server_round, time.perf_counter() - t0)
        return messages

    # -- 2. after a round ---------------------------------------------------------------
    def verify_reply(self, server_round: int, reply: Message) -> dict[str, Any]:
        """The reply's signed local update, if it matches what the server received."""
        rec = reply.content.config_records.get(REPLY_RECORD)
        raw = None if rec is None else rec.get("envelope")
        if not isinstance(raw, bytes):
            raise InputError("no signed provledger update in the reply", code="unsigned_reply")
        try:
            env = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InputError("the signed update is not JSON", code="bad_reply") from e
        record = parse_record(env, chain=self.chain)
        if record.type != "model.update":
            raise InputError(f"the signed record is a {record.type}, not a model.update", code="bad_reply")
        record.verify_signature()
        if record.signer not in self._trainers:
            self._trainers = {i["key"] for i in self.node.identities()
                              if "trainer" in i["roles"] and not i.get("revoked")}
            if record.signer not in self._trainers:
                raise InputError(f"signer {record.signer[:16]}… is not a trainer on the chain", code="unknown_signer")
        body = record.body
        arrays = _only(reply.content.array_records, "ArrayRecord")
        metrics = _only(reply.content.metric_records, "MetricRecord")
        samples = metrics.get(self.weight_key)
        cost = self._pending[server_round]["cost"]
        expect = {"model": self.model, "round": server_round, "parent": self.parent, "aggregates": []}
        for k, v in expect.items():
            if body[k] != v:
                raise InputError(f"{k} is {body[k]!r}, the server expects {v!r}", code="update_mismatch")
        if len(body["inputs"]) != 1:
            raise InputError(f"the update has {len(body['inputs'])} inputs, not one", code="update_mismatch")
        inp = body["inputs"][0]
        if inp["dataset"] not in self.datasets:
            raise InputError(f"dataset {inp['dataset']!r} is not one of this federation's", code="update_mismatch")
        if inp["samples"] != samples:
            raise InputError(f"samples is {inp['samples']}, the reply's {self.weight_key} is {samples!r}",
                             code="update_mismatch")
        if Decimal(inp["epsilon"]) != cost[0] or Decimal(inp["delta"]) != cost[1]:
            raise InputError(f"epsilon {inp['epsilon']}, delta {inp['delta']}; the round costs epsilon "
                             f"{decimal_string(cost[0])}, delta {decimal_string(cost[1])}", code="update_mismatch")
        received = weights_hash(arrays)
        if body["weights_hash"] != received:
            raise InputError(f"weights_hash {body['weights_hash'][:16]}… is not the hash of the arrays received "
                             f"({received[:16]}…)", code="update_mismatch")
        return {"envelope": env, "id": record.id, "dataset": inp["dataset"], "signer": record.signer}

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        t0 = time.perf_counter()
        checked: list[Message] = []
        updates: list[dict[str, Any]] = []
        for reply in replies:
            if reply.has_error():
                checked.append(reply)
                continue
            try:
                update = self.verify_reply(server_round, reply)
                if any(u["id"] == update["id"] for u in updates):
                    raise InputError(f"update {update['id'][:16]}… came in another reply already", code="duplicate_update")
                updates.append(update)
                checked.append(reply)
            except LedgerError as e:
                reason = f"provledger: round {server_round}: signed update rejected: {e.message} ({e.code})"
                log.warning("%s [node %s]", reason, reply.metadata.src_node_id)
                self.rejected.append({"round": server_round, "node": reply.metadata.src_node_id,
                                      "code": e.code, "message": e.message})
                # The reply's own metadata, an error in place of its content (flwr's Message
                # accepts metadata with an error; its typing overloads do not list it).
                failed = Message(error=Error(code=REJECTED, reason=reason), metadata=reply.metadata)  # type: ignore[call-overload]
                checked.append(failed)
        t1 = time.perf_counter()
        arrays, metrics = self.strategy.aggregate_train(server_round, checked)
        t2 = time.perf_counter()
        pending = self._pending.pop(server_round, None)
        if arrays is None or pending is None:
            log.warning("provledger: round %d produced no aggregate; nothing recorded for it", server_round)
            self._spent(server_round, (t1 - t0) + (time.perf_counter() - t2))
            return arrays, metrics
        if self.central is not None and self.central.spent() != pending["cumulative"]:
            raise LedgerError(f"round {server_round}: the accountant reports {self.central.spent()}, the recorded "
                              f"cost assumed {pending['cumulative']}", code="accountant_mismatch")
        agg_hash = weights_hash(arrays)
        aggregate = make_record(self.aggregator, self.chain, "model.update", {
            "model": self.model, "round": server_round, "parent": self.parent, "weights_hash": agg_hash,
            "inputs": [], "aggregates": [u["id"] for u in updates],
            "metrics": metrics_body(metrics) if metrics is not None else {},
        })
        t3 = time.perf_counter()
        self._commit([*self._queued, *(u["envelope"] for u in updates), aggregate], f"round {server_round}")
        self.commit_s[server_round] = time.perf_counter() - t3
        self._queued = []
        agg_id = parse_record(aggregate).id
        self.parent, self.parent_hash = agg_id, agg_hash
        self.seen.update(u["dataset"] for u in updates)
        self.rounds.append({"round": server_round, "aggregate": agg_id, "weights_hash": agg_hash,
                            "updates": [{k: u[k] for k in ("id", "dataset", "signer")} for u in updates],
                            "epsilon": decimal_string(pending["cost"][0]), "delta": decimal_string(pending["cost"][1])})
        self._spent(server_round, (t1 - t0) + (time.perf_counter() - t2))
        return arrays, metrics

    def _commit(self, envelopes: list[dict[str, Any]], what: str) -> None:
        results = self.node.submit_batch(envelopes, wait=True)
        for res in results:
            if res.get("status") != "committed":
                msg = f"{what}: the node refused a record: {res.get('message')} ({res.get('code')})"
                log.error(msg)
                raise PeerError(msg, code=str(res.get("code")))

    # -- evaluation ------------------------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def record_evaluation(self, server_round: int, arrays: ArrayRecord, result: MetricRecord) -> list[str]:
        """One ``model.evaluation`` per metric of ``result``, the evaluation of ``arrays``
        (which must be the last recorded aggregate's)."""
        if self.evaluator is None or self.parent is None:
            return []
        t0 = time.perf_counter()
        if weights_hash(arrays) != self.parent_hash:
            log.warning("provledger: round %d: the evaluated arrays are not the recorded aggregate's; "
                        "no evaluation recorded", server_round)
            return []
        envs = [make_record(self.evaluator, self.chain, "model.evaluation", {
            "target": self.parent, "metric": name, "value": value, "eval_set_hash": self.eval_set_hash,
            "coalition": sorted(self.seen)}) for name, value in metrics_body(result).items()]
        self._queued += envs
        ids = [parse_record(e).id for e in envs]
        self.evaluations += ids
        self._spent(server_round, time.perf_counter() - t0)
        return ids

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> Result:
        """``Strategy.start``, recording the central evaluations of the aggregates."""
        recording = None
        if evaluate_fn is not None:
            inner = evaluate_fn

            def recording(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
                res = inner(server_round, arrays)
                if res is not None and server_round > 0:
                    self.record_evaluation(server_round, arrays, res)
                return res

        try:
            return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, recording)
        finally:
            self.flush()

    def flush(self) -> None:
        """Commit the evaluations not yet committed (``start`` does it when it ends)."""
        if self._queued:
            self._commit(self._queued, "evaluations")
            self._queued = []
