"""The client side: a Flower client mod that signs each local ``model.update`` inside the
client process (docs/flower.md 4).

    from ledger.flower import ProvLedgerMod

    @app.train(mods=[ProvLedgerMod()])        # first: it sees the weights the server receives
    def train(msg, context): ...

After the train function (and every mod listed after this one, e.g. ``fixedclipping_mod``)
has produced its reply, the mod hashes the reply's arrays (``weights_hash``), builds the
local update from what the server sent in the round's config (chain, model, round, parent,
central-DP cost) and what the client did (its dataset, ``num-examples``, its own
``LocalDpMod`` cost), signs it with the organisation's key and adds the signed envelope to
the reply as ``ConfigRecord`` ``"provledger"`` (field ``"envelope"``, JSON bytes). The key
never leaves the process; only the envelope does.

Identity and dataset (never Flower's node id, which is random per run):
``context.node_config["provledger-key"]`` / ``["provledger-dataset"]`` (a SuperNode's
``--node-config``), else ``context.run_config["provledger-key-<partition-id>"]`` /
``["provledger-dataset-<partition-id>"]`` (a simulation's run config).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from flwr.app import ConfigRecord, Context, Message

from ..errors import InputError
from ..keys import SigningKey
from ..records import make_record
from .hashing import weights_hash
from .privacy import decimal_string, local_cost

__all__ = ["CONFIG", "REPLY_RECORD", "ClientIdentity", "ProvLedgerMod", "client_identity", "metrics_body"]

REPLY_RECORD = "provledger"  # the reply's ConfigRecord holding the signed envelope


class CONFIG:
    """Keys of the train ConfigRecord the server wrapper fills in (docs/flower.md 4)."""

    CHAIN = "provledger-chain"
    MODEL = "provledger-model"
    ROUND = "provledger-round"
    PARENT = "provledger-parent"  # "" for none
    EPSILON = "provledger-epsilon"  # the round's central-DP cost, decimal string
    DELTA = "provledger-delta"
    WEIGHT_KEY = "provledger-weight-key"  # the MetricRecord key the strategy weights by


class ClientIdentity:
    """An organisation's participant key and the dataset it trains on."""

    def __init__(self, key: SigningKey, dataset: str) -> None:
        self.key, self.dataset = key, dataset


_keys: dict[str, SigningKey] = {}
_keys_lock = threading.Lock()


def _load_key(path: str) -> SigningKey:
    with _keys_lock:
        key = _keys.get(path)
        if key is None:
            key = _keys[path] = SigningKey.load(Path(path))
        return key


def client_identity(context: Context, by_partition: Mapping[int, tuple[str, str]] | None = None) -> ClientIdentity:
    """The identity of this client process from its node config, else from the run config
    by ``partition-id`` (module docstring), else from ``by_partition[partition-id]``
    (``(key file, dataset)``, given to ``ProvLedgerMod`` in the client app's code)."""
    node, run = context.node_config, context.run_config
    pid = node.get("partition-id")
    if "provledger-key" in node:
        key_path, dataset = node.get("provledger-key"), node.get("provledger-dataset")
        where = "node config"
    elif pid is None:
        raise InputError("no provledger-key in the node config and no partition-id to look one up by",
                         code="no_client_key")
    elif f"provledger-key-{pid}" in run:
        key_path, dataset = run.get(f"provledger-key-{pid}"), run.get(f"provledger-dataset-{pid}")
        where = f"run config (partition {pid})"
    else:
        key_path, dataset = (by_partition or {}).get(int(pid), (None, None))
        where = f"client app's identities (partition {pid})"
    if not isinstance(key_path, str) or not key_path:
        raise InputError(f"no provledger key in the {where}", code="no_client_key")
    if not isinstance(dataset, str) or not dataset:
        raise InputError(f"no provledger dataset in the {where}", code="no_client_dataset")
    return ClientIdentity(_load_key(key_path), dataset)


def metrics_body(metrics: Any, skip: str | None = None) -> dict[str, str]:
    """A MetricRecord's scalar values as decimal strings (docs/flower.md 3.1), without
    ``skip``; lists and non-finite values are left out."""
    out = {}
    for k, v in metrics.items():
        if k == skip or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        try:
            out[k] = decimal_string(v)
        except InputError:
            continue
    return out


def _config(msg: Message) -> Any:
    for rec in msg.content.config_records.values():
        if CONFIG.CHAIN in rec:
            return rec
    raise InputError("the train message carries no provledger config: is the server strategy wrapped in "
                     "ProvLedger?", code="no_provledger_config")


def _only(records: Any, what: str) -> Any:
    values = list(records.values())
    if len(values) != 1:
        raise InputError(f"the reply has {len(values)} {what}s; provledger records exactly one", code="bad_reply")
    return values[0]


class ProvLedgerMod:
    """A client mod ``(msg, context, call_next)``. ``local_dp``: the ``LocalDpMod`` this
    client app also uses (its epsilon and delta are the cost of each update it sends);
    ``by_partition``: the last source of identities (``client_identity``)."""

    def __init__(self, local_dp: Any | None = None, *,
                 by_partition: Mapping[int, tuple[str, str]] | None = None) -> None:
        self.local_dp = local_dp
        self.by_partition = dict(by_partition or {})

    def __call__(self, msg: Message, context: Context, call_next: Any) -> Message:
        reply: Message = call_next(msg, context)
        if reply.has_error() or not msg.metadata.message_type.startswith("train"):
            return reply
        reply.content[REPLY_RECORD] = ConfigRecord({"envelope": orjson.dumps(self.sign(msg, reply, context))})
        return reply

    def sign(self, msg: Message, reply: Message, context: Context) -> dict[str, Any]:
        """The signed local update for ``reply`` (the reply to ``msg``)."""
        cfg = _config(msg)
        who = client_identity(context, self.by_partition)
        arrays = _only(reply.content.array_records, "ArrayRecord")
        metrics = _only(reply.content.metric_records, "MetricRecord")
        weight_key = str(cfg[CONFIG.WEIGHT_KEY])
        samples = metrics.get(weight_key)
        if isinstance(samples, float) and samples.is_integer():
            samples = int(samples)
        if type(samples) is not int or samples < 1:
            raise InputError(f"the reply's {weight_key!r} is {samples!r}; a local update needs a positive number "
                             "of examples", code="bad_reply")
        local_eps, local_delta = local_cost(self.local_dp)
        epsilon = Decimal(str(cfg[CONFIG.EPSILON])) + local_eps
        delta = Decimal(str(cfg[CONFIG.DELTA])) + local_delta
        body = {
            "model": str(cfg[CONFIG.MODEL]), "round": int(cfg[CONFIG.ROUND]),
            "parent": str(cfg[CONFIG.PARENT]) or None, "weights_hash": weights_hash(arrays),
            "inputs": [{"dataset": who.dataset, "samples": samples,
                        "epsilon": decimal_string(epsilon), "delta": decimal_string(delta)}],
            "aggregates": [], "metrics": metrics_body(metrics, skip=weight_key),
        }
        return make_record(who.key, str(cfg[CONFIG.CHAIN]), "model.update", body)
