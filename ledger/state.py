"""Chain state derived from the log: identities, roles, datasets, budgets, policy.

PROTOCOL.md 3.1 rules that depend on what came before a record in the log live here. The
state is a pure function of (genesis, records in log order): ``ChainState.check`` decides
whether a record may come next, ``apply`` moves the state past it.

Small state (identities, datasets, budgets, policies) is held in memory; lookups that grow
with the log (nonces, model updates) go to a ``LogIndex`` — a dict for the auditor, the
SQLite store for a node — plus an overlay for records applied since the index last caught up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Protocol

from .errors import RuleError
from .genesis import Genesis
from .records import ROLE_FOR_TYPE, Record, parse_decimal
from .values import decimal_str

__all__ = ["ChainState", "DatasetState", "Identity", "LogIndex", "MemoryIndex"]


class LogIndex(Protocol):
    """Lookups into records already in the log."""

    def nonce_used(self, signer: str, nonce: str) -> bool: ...

    def nonces_used(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (signer, nonce) pairs among ``pairs`` that records in the log use."""
        ...

    def model_of(self, record_id: str) -> str | None:
        """The ``model`` of a ``model.update`` record in the log, else None."""
        ...


class MemoryIndex:
    """A LogIndex that knows nothing: every lookup is answered by the state's overlay."""

    def nonce_used(self, signer: str, nonce: str) -> bool:
        return False

    def nonces_used(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return set()

    def model_of(self, record_id: str) -> str | None:
        return None


@dataclass(frozen=True)
class Identity:
    key: str
    name: str
    org: str
    roles: frozenset[str]
    revoked: bool = False
    registered_by: str | None = None  # record id, None for the genesis

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "org": self.org,
            "roles": sorted(self.roles),
            "revoked": self.revoked,
            "registered_by": self.registered_by,
        }


@dataclass
class DatasetState:
    name: str
    versions: dict[str, str] = field(default_factory=dict)  # version -> record id
    # Exact values (docs/protocol.md 2): sums against the budget never round.
    budget: tuple[Fraction, Fraction] | None = None  # (epsilon, delta); None = no DP accounting
    spent: tuple[Fraction, Fraction] = (Fraction(0), Fraction(0))

    @property
    def remaining(self) -> tuple[Fraction, Fraction] | None:
        if self.budget is None:
            return None
        return (self.budget[0] - self.spent[0], self.budget[1] - self.spent[1])

    def to_dict(self) -> dict[str, Any]:
        rem = self.remaining
        return {
            "name": self.name,
            "versions": dict(self.versions),
            "budget": _pair(self.budget),
            "spent": _pair(self.spent),
            "remaining": _pair(rem),
        }


def _pair(value: tuple[Fraction, Fraction] | None) -> dict[str, str] | None:
    return None if value is None else {"epsilon": decimal_str(value[0]), "delta": decimal_str(value[1])}


def _rule(code: str, message: str, **details: Any) -> RuleError:
    return RuleError(message, code=code, **details)


class ChainState:
    """What the log so far allows. ``fork`` gives an independent copy for speculation."""

    def __init__(self, genesis: Genesis, index: LogIndex | None = None) -> None:
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.index: LogIndex = index or MemoryIndex()
        self.size = 0  # records applied
        self.orgs: set[str] = {o["name"] for o in genesis.doc["organisations"]}
        self.identities: dict[str, Identity] = {}
        self.datasets: dict[str, DatasetState] = {}
        self.policies: list[tuple[int, dict[str, Fraction]]] = [(0, dict(genesis.policy))]
        # Overlay: what was applied since the index last caught up (see settle()).
        self._nonces: set[tuple[str, str]] = set()
        self._models: dict[str, str] = {}
        # The index's answers for nonces asked ahead (prefetch_nonces), until it changes.
        self._asked: dict[tuple[str, str], bool] = {}
        # Datasets this state may change in place; the others may be shared with forks.
        self._own: set[str] = set()
        # PROTOCOL.md 2: admins hold the admin role of their organisation.
        for org in genesis.doc["organisations"]:
            for key in org["admins"]:
                self.identities[key] = Identity(key, f"{org['name']}-admin", org["name"], frozenset({"admin"}))
        for p in genesis.doc["participants"]:
            prev = self.identities.get(p["key"])
            roles = frozenset(p["roles"]) | (prev.roles if prev and prev.org == p["org"] else frozenset())
            self.identities[p["key"]] = Identity(p["key"], p["name"], p["org"], roles)

    # -- copies -----------------------------------------------------------------------
    def fork(self) -> ChainState:
        """An independent copy sharing the (read-only) index. Dataset entries are shared
        until one side changes them (``_dataset_to_change``), so a fork costs no more for
        a chain with many datasets."""
        c = object.__new__(ChainState)
        c.genesis, c.chain_id, c.index, c.size = self.genesis, self.chain_id, self.index, self.size
        c.orgs = set(self.orgs)
        c.identities = dict(self.identities)
        c.datasets = dict(self.datasets)
        c._own = set()
        self._own = set()  # shared now: copy before changing, here too
        c.policies = list(self.policies)
        c._nonces = set(self._nonces)
        c._models = dict(self._models)
        c._asked = {}
        return c

    def settle(self) -> None:
        """Forget the overlay: the index now answers for every record applied so far."""
        self._nonces.clear()
        self._models.clear()
        self._asked.clear()

    def forget(self, records: Iterable[Record]) -> None:
        """Forget the overlay's entries of ``records`` alone: the index now answers for
        them (they are stored), while what was applied after them stays in the overlay."""
        for rec in records:
            self._nonces.discard((rec.signer, rec.nonce))
            self._models.pop(rec.id, None)

    def prefetch_nonces(self, records: Iterable[Record]) -> None:
        """Ask the index once about the nonces of ``records``, about to be checked: a
        block's worth of lookups in a few queries rather than one query per record."""
        pairs = [(r.signer, r.nonce) for r in records]
        used = self.index.nonces_used(pairs)
        self._asked = {pair: pair in used for pair in pairs}

    # -- lookups ----------------------------------------------------------------------
    def nonce_used(self, signer: str, nonce: str) -> bool:
        pair = (signer, nonce)
        if pair in self._nonces:
            return True
        known = self._asked.get(pair)
        return known if known is not None else self.index.nonce_used(signer, nonce)

    def model_of(self, record_id: str) -> str | None:
        return self._models.get(record_id) or self.index.model_of(record_id)

    def policy_at(self, size: int) -> dict[str, Fraction]:
        """The attribution policy in force for a record at log index ``size``."""
        current = self.policies[0][1]
        for at, pools in self.policies:
            if at <= size:
                current = pools
        return current

    def is_admin_of(self, key: str, org: str) -> bool:
        ident = self.identities.get(key)
        return ident is not None and not ident.revoked and ident.org == org and "admin" in ident.roles

    # -- the rules --------------------------------------------------------------------
    def check(self, rec: Record) -> None:
        """Raise RuleError if ``rec`` may not come next in the log (PROTOCOL.md 3, 3.1)."""
        env = rec.envelope
        if env["chain"] != self.chain_id:
            raise _rule("wrong_chain", f"record is for chain {env['chain'][:16]}…, this is {self.chain_id[:16]}…")
        signer = env["signer"]
        ident = self.identities.get(signer)
        if ident is None:
            raise _rule("unknown_signer", f"signer {signer[:16]}… is not a registered participant", signer=signer)
        if ident.revoked:
            raise _rule("revoked_signer", f"signer {signer[:16]}… ({ident.name}) was revoked", signer=signer)
        if self.nonce_used(signer, env["nonce"]):
            raise _rule("replayed_nonce", f"nonce {env['nonce']!r} was already used by this signer", signer=signer)
        rtype = env["type"]
        body = env["body"]
        need = ROLE_FOR_TYPE[rtype]
        if rtype not in ("identity.register", "identity.revoke", "policy.set") and need not in ident.roles:
            raise _rule(
                "forbidden_role",
                f"{rtype} needs role {need}; signer {ident.name} has {', '.join(sorted(ident.roles)) or 'none'}",
                signer=signer,
            )
        getattr(self, "_check_" + rtype.replace(".", "_"))(rec, ident, body)

    def _check_identity_register(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        if body["org"] not in self.orgs:
            raise _rule("unknown_org", f"body.org: no organisation {body['org']!r} in the genesis", field="body.org")
        if not self.is_admin_of(ident.key, body["org"]):
            raise _rule("forbidden_role", f"identity.register for {body['org']} must be signed by an admin of {body['org']}")
        if body["key"] in self.identities:
            raise _rule("identity_exists", f"body.key: {body['key'][:16]}… is already registered", field="body.key")

    def _check_identity_revoke(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        target = self.identities.get(body["key"])
        if target is None:
            raise _rule("unknown_identity", f"body.key: {body['key'][:16]}… is not registered", field="body.key")
        if target.revoked:
            raise _rule("already_revoked", f"body.key: {target.name} is already revoked", field="body.key")
        if not self.is_admin_of(ident.key, target.org):
            raise _rule("forbidden_role", f"identity.revoke of a member of {target.org} must be signed by an admin of {target.org}")

    def _check_policy_set(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        if "admin" not in ident.roles or ident.org not in self.orgs:
            raise _rule("forbidden_role", "policy.set must be signed by an admin of an organisation of the genesis")

    def _check_dataset_contribute(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        ds = self.datasets.get(body["dataset"])
        if ds is not None and body["version"] in ds.versions:
            raise _rule(
                "duplicate_dataset",
                f"dataset {body['dataset']!r} version {body['version']!r} is already on the chain",
                field="body.version",
            )
        for i, parent in enumerate(body["derived_from"]):
            if parent not in self.datasets:
                raise _rule("missing_reference", f"body.derived_from[{i}]: no dataset {parent!r} on the chain", field=f"body.derived_from[{i}]")
        pb = body["privacy_budget"]
        if ds is not None and pb is not None:
            # docs/protocol.md: the first version fixes a dataset's budget; later versions
            # may repeat it or give null, never change it.
            declared = (parse_decimal(pb["epsilon"]), parse_decimal(pb["delta"]))
            if ds.budget != declared:
                raise _rule("budget_mismatch", f"body.privacy_budget: dataset {body['dataset']!r} already has budget {ds.to_dict()['budget']}", field="body.privacy_budget")

    def _check_annotation_event(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        if body["dataset"] not in self.datasets:
            raise _rule("missing_reference", f"body.dataset: no dataset {body['dataset']!r} on the chain", field="body.dataset")

    def _check_model_update(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        model = body["model"]
        if body["parent"] is not None and self.model_of(body["parent"]) != model:
            raise _rule("missing_reference", f"body.parent: {body['parent'][:16]}… is not an update of model {model!r} on the chain", field="body.parent")
        for i, ref in enumerate(body["aggregates"]):
            if self.model_of(ref) != model:
                raise _rule("missing_reference", f"body.aggregates[{i}]: {ref[:16]}… is not an update of model {model!r} on the chain", field=f"body.aggregates[{i}]")
        cost: dict[str, tuple[Fraction, Fraction]] = {}
        for i, inp in enumerate(body["inputs"]):
            name = inp["dataset"]
            if name not in self.datasets:
                raise _rule("missing_reference", f"body.inputs[{i}].dataset: no dataset {name!r} on the chain", field=f"body.inputs[{i}].dataset")
            e0, d0 = cost.get(name, (Fraction(0), Fraction(0)))
            cost[name] = (e0 + parse_decimal(inp["epsilon"]), d0 + parse_decimal(inp["delta"]))
        for name, (eps, delta) in cost.items():
            # PROTOCOL.md 3.1: basic composition — costs add up and may not exceed the budget.
            rem = self.datasets[name].remaining
            if rem is not None and (eps > rem[0] or delta > rem[1]):
                raise _rule(
                    "budget_exceeded",
                    f"dataset {name!r}: update costs epsilon {decimal_str(eps)}, delta {decimal_str(delta)}; "
                    f"remaining budget is epsilon {decimal_str(rem[0])}, delta {decimal_str(rem[1])}",
                    dataset=name,
                    field="body.inputs",
                )

    def _check_model_evaluation(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        if self.model_of(body["target"]) is None:
            raise _rule("missing_reference", f"body.target: {body['target'][:16]}… is not a model.update on the chain", field="body.target")
        for i, name in enumerate(body["coalition"] or ()):
            if name not in self.datasets:
                raise _rule("missing_reference", f"body.coalition[{i}]: no dataset {name!r} on the chain", field=f"body.coalition[{i}]")

    # -- moving on --------------------------------------------------------------------
    def _dataset_to_change(self, name: str) -> DatasetState:
        ds = self.datasets[name]
        if name not in self._own:
            ds = self.datasets[name] = replace(ds, versions=dict(ds.versions))
            self._own.add(name)
        return ds

    def apply(self, rec: Record) -> None:
        """Move the state past ``rec``; the caller has run ``check``."""
        env = rec.envelope
        body = env["body"]
        rtype = env["type"]
        self._nonces.add((env["signer"], env["nonce"]))
        if rtype == "model.update":
            self._models[rec.id] = body["model"]
            for inp in body["inputs"]:
                if self.datasets[inp["dataset"]].budget is not None:
                    ds = self._dataset_to_change(inp["dataset"])
                    ds.spent = (ds.spent[0] + parse_decimal(inp["epsilon"]), ds.spent[1] + parse_decimal(inp["delta"]))
        elif rtype == "dataset.contribute":
            if body["dataset"] in self.datasets:
                ds = self._dataset_to_change(body["dataset"])
            else:
                ds = self.datasets[body["dataset"]] = DatasetState(body["dataset"])
                self._own.add(body["dataset"])
                pb = body["privacy_budget"]
                if pb is not None:
                    ds.budget = (parse_decimal(pb["epsilon"]), parse_decimal(pb["delta"]))
            ds.versions[body["version"]] = rec.id
        elif rtype == "identity.register":
            self.identities[body["key"]] = Identity(body["key"], body["name"], body["org"], frozenset(body["roles"]), registered_by=rec.id)
        elif rtype == "identity.revoke":
            self.identities[body["key"]] = replace(self.identities[body["key"]], revoked=True)
        elif rtype == "policy.set":
            pools = body["attribution"]
            self.policies.append((self.size, {k: parse_decimal(pools[k]) for k in ("data", "annotation", "training")}))
        self.size += 1

    def check_apply(self, rec: Record) -> None:
        self.check(rec)
        self.apply(rec)

    def replay(self, records: Iterable[Record]) -> None:
        for rec in records:
            self.check_apply(rec)
