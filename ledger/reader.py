"""Read-only views of a chain for lineage, attribution and exports.

``ChainReader`` is the small protocol those views need; two implementations:

- ``StoreReader(store)`` answers from a node's SQLite store through its indexed columns
  (``Store.records_where``, ``Store.record``);
- ``MemoryReader(genesis_doc, blocks)`` holds the records of an iterable of blocks in
  memory: an exported bundle (``MemoryReader.from_bundle``) or a node fetched over HTTP
  (``fetch_node``).

A reader does not audit: the chain it reads is trusted as given (``provledger audit``
verifies it). Identities, policies, organisations, proposals and validator sets are
derived by replaying the genesis and the records that change them (``identity.register``,
``identity.revoke``, ``network.propose``, ``network.approve``) on a ``ChainState``.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import orjson

from .bundle import BundleSource
from .errors import InputError, LedgerError, PeerError
from .fetch import node_blocks
from .genesis import Genesis, parse_genesis
from .records import Record, parse_decimal, record_id
from .state import ChainState, DatasetState, Proposal, Validator

__all__ = [
    "ChainReader",
    "MemoryReader",
    "Participant",
    "ReaderBase",
    "StoreReader",
    "fetch_node",
]

Row = tuple[int, str, dict[str, Any]]  # (log index, record id, envelope)
GOVERNANCE_TYPES = ("identity.register", "identity.revoke", "network.propose", "network.approve")


@dataclass(frozen=True)
class Participant:
    """Who a public key is: name and organisation (fixed at registration)."""

    key: str
    name: str
    org: str
    registered_at: int  # log index of its identity.register; -1 for the genesis
    revoked_at: int | None = None  # log index of its identity.revoke

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "org": self.org}


class ChainReader(Protocol):
    """What lineage, attribution and the PROV export read from a chain."""

    @property
    def genesis(self) -> Genesis: ...

    def log_size(self) -> int:
        """Committed records."""
        ...

    def record(self, record_id: str) -> tuple[dict[str, Any], int, int] | None:
        """(envelope, log index, height) of a committed record, else None."""
        ...

    def records_of_type(self, rtype: str) -> list[Row]:
        """Committed records of one type, in log order."""
        ...

    def dataset_records(self, name: str) -> list[Row]:
        """``dataset.contribute`` and ``annotation.event`` records naming dataset ``name``."""
        ...

    def model_records(self, model: str) -> list[Row]:
        """``model.update`` records of model ``model``."""
        ...

    def identity(self, key: str, index: int | None = None) -> Participant | None:
        """Who ``key`` is, if registered before log index ``index`` (any time if None)."""
        ...

    def policy_at(self, index: int) -> dict[str, Fraction]:
        """The attribution pools in force for a record at log index ``index``."""
        ...

    def dataset_state(self, name: str, upto: int | None = None) -> DatasetState | None:
        """Versions, budget and spent budget of a dataset from records before ``upto``."""
        ...

    def policy_change(self, index: int) -> Proposal | None:
        """The adopted ``policy.set`` proposal of the policy in force at log index
        ``index``; None for the genesis policy."""
        ...

    def updates_using(self, name: str) -> list[Row]:
        """Local ``model.update`` records with dataset ``name`` among their inputs."""
        ...


class ReaderBase:
    """Identities, policies, budgets and dataset usage, derived once from the typed
    lookups a subclass provides."""

    _genesis: Genesis
    _identities: dict[str, Participant] | None = None
    _governance: ChainState | None = None
    _usage: dict[str, list[Row]] | None = None

    @property
    def genesis(self) -> Genesis:
        return self._genesis

    def records_of_type(self, rtype: str) -> list[Row]:  # pragma: no cover - abstract
        raise NotImplementedError

    def dataset_records(self, name: str) -> list[Row]:  # pragma: no cover - abstract
        raise NotImplementedError

    def record(self, record_id: str) -> tuple[dict[str, Any], int, int] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- governance: identities, organisations, proposals, policy, validators -----------
    def governance(self) -> ChainState:
        """The state after replaying, in log order, the records that change identities,
        organisations, proposals, the policy and the validator set (PROTOCOL.md 3.1, 9).
        Its datasets and nonces are not kept: the reader does not audit."""
        if self._governance is None:
            self._load_governance()
        assert self._governance is not None
        return self._governance

    def _load_governance(self) -> None:
        state = ChainState(self._genesis)
        ids = {k: Participant(k, i.name, i.org, -1) for k, i in state.identities.items()}
        rows = sorted((r for t in GOVERNANCE_TYPES for r in self.records_of_type(t)), key=lambda r: r[0])
        for idx, rid, env in rows:
            found = self.record(rid)
            state.begin_block(found[2] if found else state.height)
            state.size = idx
            rtype = env["type"]
            if rtype.startswith("network."):  # an adopted org.add / org.remove changes many
                before = dict(state.identities)
                state.apply(Record(env, rid, b""))
                changed = [k for k, i in state.identities.items() if before.get(k) != i]
            else:
                state.apply(Record(env, rid, b""))
                changed = [env["body"]["key"]]
            for key in changed:
                ident = state.identities[key]
                p = ids.get(key)
                if p is None:
                    ids[key] = Participant(key, ident.name, ident.org, idx)
                elif ident.revoked and p.revoked_at is None:
                    ids[key] = Participant(p.key, p.name, p.org, p.registered_at, idx)
            state.settle()
        state.size = self.log_size()
        self._identities = ids
        self._governance = state

    def _load_identities(self) -> dict[str, Participant]:
        if self._identities is None:
            self._load_governance()
        assert self._identities is not None
        return self._identities

    def identity(self, key: str, index: int | None = None) -> Participant | None:
        p = self._load_identities().get(key)
        if p is None or (index is not None and p.registered_at >= index):
            return None
        return p

    # -- policy -------------------------------------------------------------------------
    def _policy_entry(self, index: int) -> tuple[int, dict[str, Fraction]]:
        """(log index of the adopting record, pools) of the policy in force for a record
        at log index ``index``: the last change adopted before it (-1: the genesis)."""
        current: tuple[int, dict[str, Fraction]] = (-1, dict(self._genesis.policy))
        for at, pools in self.governance().policies[1:]:
            if at < index:  # a change applies to the records after its adopting record
                current = (at, pools)
        return current

    def policy_at(self, index: int) -> dict[str, Fraction]:
        return self._policy_entry(index)[1]

    def policy_change(self, index: int) -> Proposal | None:
        at, _pools = self._policy_entry(index)
        gov = self.governance()
        return gov.proposals[gov.policy_proposals[at]] if at >= 0 else None

    # -- validator sets (PROTOCOL.md 9.1) ----------------------------------------------------
    def validators_at(self, height: int) -> list[Validator]:
        """The set certifying ``height``."""
        return list(self.governance().validators_at(height))

    def membership_changes(self, upto: int) -> list[int]:
        """The heights c < ``upto`` whose header's ``next_validators`` differs from the set
        certifying c: the blocks that adopted a change of the validator set."""
        return _changes(self.governance().validator_sets, upto)

    # -- datasets and budgets -----------------------------------------------------------
    def updates_using(self, name: str) -> list[Row]:
        if self._usage is None:
            usage: dict[str, list[Row]] = {}
            for row in self.records_of_type("model.update"):
                for ds in dict.fromkeys(i["dataset"] for i in row[2]["body"]["inputs"]):
                    usage.setdefault(ds, []).append(row)
            self._usage = usage
        return list(self._usage.get(name, ()))

    def dataset_state(self, name: str, upto: int | None = None) -> DatasetState | None:
        ds: DatasetState | None = None
        for idx, rid, env in self.dataset_records(name):
            if env["type"] != "dataset.contribute" or (upto is not None and idx >= upto):
                continue
            b = env["body"]
            if ds is None:
                ds = DatasetState(name)
                if b["privacy_budget"] is not None:
                    pb = b["privacy_budget"]
                    ds.budget = (parse_decimal(pb["epsilon"]), parse_decimal(pb["delta"]))
            ds.versions[b["version"]] = rid
        if ds is None:
            return None
        eps, delta = Fraction(0), Fraction(0)  # exact sums (docs/protocol.md 2)
        for idx, _rid, env in self.updates_using(name):
            if upto is not None and idx >= upto:
                continue
            for inp in env["body"]["inputs"]:
                if inp["dataset"] == name:
                    eps += parse_decimal(inp["epsilon"])
                    delta += parse_decimal(inp["delta"])
        if ds.budget is not None:  # ledger.state charges only datasets with a budget
            ds.spent = (eps, delta)
        return ds


class StoreReader(ReaderBase):
    """A ChainReader over a node's SQLite store (committed records only)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._genesis = store.genesis
        self._size: int = store.log_size()  # a fixed view: records committed later are ignored
        self._usage_idx: dict[str, list[int]] | None = None  # dataset name -> log indexes
        self._using: dict[str, list[Row]] = {}

    def log_size(self) -> int:
        return self._size

    # The validator sets come from the store's derived table (the audit recomputes it).
    def validators_at(self, height: int) -> list[Validator]:
        return self.store.validators_at(height)  # type: ignore[no-any-return]

    def membership_changes(self, upto: int) -> list[int]:
        return _changes(self.store.validator_sets(), upto)

    def _rows(self, column: str, value: str) -> list[Row]:
        return [r for r in self.store.records_where(column, value) if r[0] < self._size]

    def record(self, record_id: str) -> tuple[dict[str, Any], int, int] | None:
        found = self.store.record(record_id)
        if found is None or found[1] >= self._size:
            return None
        return found  # type: ignore[no-any-return]

    def records_of_type(self, rtype: str) -> list[Row]:
        return self._rows("type", rtype)

    def dataset_records(self, name: str) -> list[Row]:
        return [r for r in self._rows("dataset", name) if r[2]["type"] in ("dataset.contribute", "annotation.event")]

    def model_records(self, model: str) -> list[Row]:
        return self._rows("model", model)

    def updates_using(self, name: str) -> list[Row]:
        # The store's index of input dataset names (``Store.inputs_index``, built once with
        # SQLite's JSON functions, kept as the log grows); only the envelopes of the
        # updates asked for are then read and parsed here.
        if self._usage_idx is None:
            try:
                index = self.store.inputs_index(self._size)
            except sqlite3.OperationalError:  # an SQLite built without JSON functions
                return super().updates_using(name)
            self._usage_idx = index
        found = self._using.get(name)
        if found is None:
            found = []
            all_idxs = self._usage_idx.get(name, [])
            idxs = all_idxs[:bisect.bisect_left(all_idxs, self._size)]  # this reader's fixed view
            for i in range(0, len(idxs), 500):
                chunk = idxs[i:i + 500]
                q = f"SELECT idx, id, envelope FROM records WHERE idx IN ({','.join('?' * len(chunk))}) ORDER BY idx"
                found.extend((idx, rid, orjson.loads(text)) for idx, rid, text in self.store.reader.execute(q, chunk))
            self._using[name] = found
        return list(found)


class MemoryReader(ReaderBase):
    """A ChainReader over blocks held in memory.

    ``blocks`` is an iterable of ``{"header": {...}, "records": [envelope, ...]}`` in
    height order (the shape of ``GET /v1/blocks/{h}`` and of a bundle line); a block
    without a header counts as the next height. Record ids are recomputed (PROTOCOL.md 3).
    """

    def __init__(self, genesis_doc: dict[str, Any], blocks: Iterable[dict[str, Any]]) -> None:
        self._genesis = parse_genesis(genesis_doc)
        self._by_id: dict[str, tuple[dict[str, Any], int, int]] = {}
        self._by_type: dict[str, list[Row]] = {}
        self._by_dataset: dict[str, list[Row]] = {}
        self._by_model: dict[str, list[Row]] = {}
        idx = 0
        height = 0
        for blk in blocks:
            header = blk.get("header")
            height = header["height"] if isinstance(header, dict) and type(header.get("height")) is int else height + 1
            for env in blk.get("records", ()):
                if not isinstance(env, dict) or not isinstance(env.get("body"), dict):
                    raise InputError(f"block {height}: a record is not an envelope object", code="bad_record")
                rid = record_id(env)
                row = (idx, rid, env)
                self._by_id[rid] = (env, idx, height)
                rtype = env.get("type")
                self._by_type.setdefault(str(rtype), []).append(row)
                body = env["body"]
                if rtype in ("dataset.contribute", "annotation.event") and isinstance(body.get("dataset"), str):
                    self._by_dataset.setdefault(body["dataset"], []).append(row)
                elif rtype == "model.update" and isinstance(body.get("model"), str):
                    self._by_model.setdefault(body["model"], []).append(row)
                idx += 1
        self._size = idx

    @classmethod
    def from_bundle(cls, path: str | Path) -> MemoryReader:
        """A reader over an exported bundle (``ledger.bundle``)."""
        src = BundleSource(path)
        return cls(src.genesis_doc(), src.block_dicts())

    def log_size(self) -> int:
        return self._size

    def record(self, record_id: str) -> tuple[dict[str, Any], int, int] | None:
        return self._by_id.get(record_id)

    def records_of_type(self, rtype: str) -> list[Row]:
        return list(self._by_type.get(rtype, ()))

    def dataset_records(self, name: str) -> list[Row]:
        return list(self._by_dataset.get(name, ()))

    def model_records(self, model: str) -> list[Row]:
        return list(self._by_model.get(model, ()))


def _changes(sets: Iterable[tuple[int, Iterable[Validator]]], upto: int) -> list[int]:
    out: list[int] = []
    keys: list[str] | None = None
    for first, vals in sets:
        now = sorted(v.key for v in vals)
        if keys is not None and now != keys and first - 1 < upto:
            out.append(first - 1)
        keys = now
    return out


# --- a node over HTTP --------------------------------------------------------------------
def fetch_node(url: str) -> MemoryReader:
    """A MemoryReader over every final block of the node at ``url``."""
    try:
        genesis, blocks, _height, _size = node_blocks(url)
        return MemoryReader(genesis, blocks)
    except LedgerError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise PeerError(f"{url}: unexpected answer: {e}", code="node_error") from e
