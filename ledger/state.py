"""Chain state derived from the log: identities, roles, datasets, budgets, policy,
organisations, proposals and the validator set.

PROTOCOL.md 3.1 and 9 rules that depend on what came before a record in the log live here.
The state is a pure function of (genesis, blocks of records in log order):
``ChainState.begin_block`` names the height whose records come next (approvals and
``expires`` depend on it), ``check`` decides whether a record may come next, ``apply``
moves the state past it.

Small state (identities, datasets, budgets, policies) is held in memory; lookups that grow
with the log (nonces, model updates) go to a ``LogIndex`` — a dict for the auditor, the
SQLite store for a node — plus an overlay for records applied since the index last caught up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Protocol

from .blocks import validators_hash
from .errors import RuleError
from .genesis import Genesis
from .governance import pop_ok
from .records import ROLE_FOR_TYPE, Record, parse_decimal
from .values import decimal_str

__all__ = [
    "ChainState",
    "DatasetState",
    "Identity",
    "LogIndex",
    "MemoryIndex",
    "Organisation",
    "Proposal",
    "Validator",
]


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


@dataclass(frozen=True, slots=True)
class Validator:
    """A member of a validator set (PROTOCOL.md 2, 9.3)."""

    name: str
    key: str
    url: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "key": self.key, "url": self.url}


@dataclass(frozen=True, slots=True)
class Organisation:
    """An organisation that is or was in force. ``added_by``: the proposal that added it
    (None for the genesis); ``added_at`` / ``removed_at``: the log index of the record that
    adopted the change (None for the genesis / while in force)."""

    name: str
    added_by: str | None = None
    added_at: int | None = None
    removed_by: str | None = None
    removed_at: int | None = None

    @property
    def in_force(self) -> bool:
        return self.removed_at is None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A ``network.propose`` record and the approvals it gathered (PROTOCOL.md 9.2).

    ``approvals`` are the organisations approving it, counted once, in log order, the
    proposer's organisation first. ``adopted_at`` is the log index of the adopting record.
    """

    id: str
    action: dict[str, Any]
    proposer: str
    org: str
    height: int  # the proposal's own height
    index: int  # its log index
    expires: int
    reason: str
    approvals: tuple[str, ...]
    adopted_at: int | None = None
    adopted_by: str | None = None  # record id of the adopting record

    def status(self, height: int) -> str:
        """``adopted``, or for a record at ``height``: ``open`` while approvals still count
        (``expires`` >= ``height``), else ``expired``."""
        if self.adopted_at is not None:
            return "adopted"
        return "open" if self.expires >= height else "expired"

    def to_dict(self, height: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "proposer": self.proposer,
            "org": self.org,
            "height": self.height,
            "expires": self.expires,
            "reason": self.reason,
            "approvals": list(self.approvals),
            "status": self.status(height),
            "adopted_at": self.adopted_at,
        }


def _pair(value: tuple[Fraction, Fraction] | None) -> dict[str, str] | None:
    return None if value is None else {"epsilon": decimal_str(value[0]), "delta": decimal_str(value[1])}


def _rule(code: str, message: str, **details: Any) -> RuleError:
    return RuleError(message, code=code, **details)


# Types whose signer rule is their own, not ROLE_FOR_TYPE's role check.
_OWN_ROLE_RULE = frozenset({"identity.register", "identity.revoke", "network.propose", "network.approve"})


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
        # PROTOCOL.md 9: the height whose records come next (begin_block), organisations
        # ever in force (names are never reused), proposals, and the validator set.
        self.height = 0
        self.organisation_log: dict[str, Organisation] = {o["name"]: Organisation(o["name"]) for o in genesis.doc["organisations"]}
        self.proposals: dict[str, Proposal] = {}
        self.policy_proposals: dict[int, str] = {}  # log index of a policy change -> proposal id
        self.validators: list[Validator] = [
            Validator(genesis.validator_names[k], k, genesis.validator_urls[k]) for k in genesis.validators
        ]
        self.ever_validators: set[str] = set(genesis.validators)
        # (first height, set): the set certifying every height from the first on (9.1).
        self.validator_sets: list[tuple[int, tuple[Validator, ...]]] = [(1, tuple(self.validators))]
        self._validators_hash: str | None = None
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
        c.height = self.height
        c.organisation_log = dict(self.organisation_log)
        c.proposals = dict(self.proposals)
        c.policy_proposals = dict(self.policy_proposals)
        c.validators = list(self.validators)
        c.ever_validators = set(self.ever_validators)
        c.validator_sets = list(self.validator_sets)
        c._validators_hash = self._validators_hash
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

    def begin_block(self, height: int) -> None:
        """The records applied next are those of block ``height`` (PROTOCOL.md 9.2: an
        approval counts while ``expires`` is at least its height)."""
        self.height = height

    # -- the validator set and organisations (PROTOCOL.md 9.1) --------------------------
    def validator_keys(self) -> list[str]:
        """The keys of the current set, in set order."""
        return [v.key for v in self.validators]

    def validators_hash(self) -> str:
        """``validators_hash`` of the current set: after the records applied so far, so
        after a block it is the set certifying the next height (the header's
        ``next_validators``)."""
        if self._validators_hash is None:
            self._validators_hash = validators_hash(v.key for v in self.validators)
        return self._validators_hash

    def validators_at(self, height: int) -> tuple[Validator, ...]:
        """The set certifying ``height`` (height 1: the genesis set)."""
        current = self.validator_sets[0][1]
        for first, vals in self.validator_sets:
            if first <= height:
                current = vals
        return current

    @property
    def organisations(self) -> list[str]:
        """The names of the organisations in force, in the order they joined."""
        return [o.name for o in self.organisation_log.values() if o.in_force]

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
        """PROTOCOL.md 3.1: an unrevoked identity with the admin role in ``org``, an
        organisation in force."""
        ident = self.identities.get(key)
        return (
            ident is not None and not ident.revoked and ident.org == org and "admin" in ident.roles and org in self.orgs
        )

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
        if rtype == "policy.set":
            # PROTOCOL.md 3.1: version 2 changes the policy only by an adopted action (9.3).
            raise _rule("not_adopted", "policy.set records are version 1 only: propose a policy.set action (network.propose) for the organisations to adopt")
        need = ROLE_FOR_TYPE[rtype]
        if rtype not in _OWN_ROLE_RULE and need not in ident.roles:
            raise _rule(
                "forbidden_role",
                f"{rtype} needs role {need}; signer {ident.name} has {', '.join(sorted(ident.roles)) or 'none'}",
                signer=signer,
            )
        getattr(self, "_check_" + rtype.replace(".", "_"))(rec, ident, body)

    def _check_identity_register(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        if body["org"] not in self.orgs:
            raise _rule("unknown_org", f"body.org: no organisation {body['org']!r} in force", field="body.org")
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

    # -- governance (PROTOCOL.md 9.2, 9.3) ------------------------------------------------
    def _governor(self, ident: Identity, rtype: str) -> None:
        if not self.is_admin_of(ident.key, ident.org):
            raise _rule("not_admin", f"{rtype} must be signed by an unrevoked admin of an organisation in force; {ident.name} is not one", signer=ident.key)

    def _check_network_propose(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        self._governor(ident, "network.propose")
        if body["expires"] < self.height:
            raise _rule("proposal_expired", f"body.expires: {body['expires']} is before this proposal's height {self.height}", field="body.expires")
        # PROTOCOL.md 9.2: valid in the state at the proposal (which, with one
        # organisation, is also the point where it adopts itself).
        self.check_action(body["action"], "body.action")

    def _check_network_approve(self, rec: Record, ident: Identity, body: dict[str, Any]) -> None:
        self._governor(ident, "network.approve")
        prop = self.proposals.get(body["proposal"])
        if prop is None:
            raise _rule("unknown_proposal", f"body.proposal: {body['proposal'][:16]}… is not a network.propose record on the chain", field="body.proposal")
        if prop.adopted_at is not None:
            raise _rule("already_adopted", f"body.proposal: {prop.id[:16]}… was already adopted (log index {prop.adopted_at})", field="body.proposal")
        if prop.expires < self.height:
            raise _rule("proposal_expired", f"body.proposal: {prop.id[:16]}… expired at height {prop.expires}; this is height {self.height}", field="body.proposal")
        if ident.org in prop.approvals:
            raise _rule("already_approved", f"body.proposal: organisation {ident.org!r} already approved {prop.id[:16]}…", field="body.proposal")
        if self._adopts((*prop.approvals, ident.org)):
            # PROTOCOL.md 9.2: an action no longer valid makes the adopting record invalid.
            self.check_action(prop.action, "action")

    def _adopts(self, approvals: Iterable[str]) -> bool:
        """PROTOCOL.md 9.2: the approving organisations in force, counted once, are more
        than half of the organisations in force."""
        approving = {o for o in approvals if o in self.orgs}
        return 2 * len(approving) > len(self.orgs)

    def check_action(self, action: dict[str, Any], path: str = "action") -> None:
        """Raise RuleError if ``action`` (of a checked form) is not valid now (PROTOCOL.md 9.3)."""
        op = action["op"]
        if op == "org.add":
            if action["name"] in self.organisation_log:
                raise _rule("org_exists", f"{path}.name: an organisation {action['name']!r} is or was on the chain", field=f"{path}.name")
            for i, key in enumerate(action["admins"]):
                if key in self.identities:
                    raise _rule("admin_registered", f"{path}.admins[{i}]: {key[:16]}… is already a registered identity", field=f"{path}.admins[{i}]")
        elif op == "org.remove":
            if action["name"] not in self.orgs:
                raise _rule("unknown_org", f"{path}.name: no organisation {action['name']!r} in force", field=f"{path}.name")
            if len(self.orgs) == 1:
                raise _rule("last_organisation", f"{path}.name: {action['name']!r} is the last organisation in force", field=f"{path}.name")
        elif op == "validator.add":
            self._new_validator(action["key"], action["pop"], path, "key")
        elif op == "validator.remove":
            if action["key"] not in self.validator_keys():
                raise _rule("not_validator", f"{path}.key: {action['key'][:16]}… is not a current validator", field=f"{path}.key")
            if len(self.validators) == 1:
                raise _rule("last_validator", f"{path}.key: the set would become empty", field=f"{path}.key")
        elif op == "validator.replace":
            if action["old"] not in self.validator_keys():
                raise _rule("not_validator", f"{path}.old: {action['old'][:16]}… is not a current validator", field=f"{path}.old")
            self._new_validator(action["new"], action["pop"], path, "new")
        # policy.set: its form (three pools summing to 1) is all there is to check.

    def _new_validator(self, key: str, pop: str, path: str, name: str) -> None:
        if key in self.ever_validators:
            raise _rule("already_validator", f"{path}.{name}: {key[:16]}… is or was a validator", field=f"{path}.{name}")
        if not pop_ok(self.chain_id, key, pop):
            raise _rule("bad_pop", f"{path}.pop: not a proof of possession by {key[:16]}… for this chain (PROTOCOL.md 9.3)", field=f"{path}.pop")

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
        elif rtype == "network.propose":
            ident = self.identities[env["signer"]]
            prop = Proposal(rec.id, body["action"], env["signer"], ident.org, self.height, self.size,
                            body["expires"], body["reason"], (ident.org,))
            self.proposals[rec.id] = prop
            if self._adopts(prop.approvals):
                self._adopt(prop, rec.id)
        elif rtype == "network.approve":
            prop = self.proposals[body["proposal"]]
            prop = self.proposals[prop.id] = replace(prop, approvals=(*prop.approvals, self.identities[env["signer"]].org))
            if self._adopts(prop.approvals):
                self._adopt(prop, rec.id)
        self.size += 1

    def _adopt(self, prop: Proposal, by: str) -> None:
        """PROTOCOL.md 9.2: the action takes effect at once, before the next record."""
        self.proposals[prop.id] = replace(prop, adopted_at=self.size, adopted_by=by)
        action = prop.action
        op = action["op"]
        if op == "org.add":
            name = action["name"]
            self.orgs.add(name)
            self.organisation_log[name] = Organisation(name, added_by=prop.id, added_at=self.size)
            for key in action["admins"]:
                self.identities[key] = Identity(key, f"{name}-admin", name, frozenset({"admin"}), registered_by=prop.id)
        elif op == "org.remove":
            name = action["name"]
            self.orgs.discard(name)
            self.organisation_log[name] = replace(self.organisation_log[name], removed_by=prop.id, removed_at=self.size)
            for key, ident in list(self.identities.items()):
                if ident.org == name and not ident.revoked:
                    self.identities[key] = replace(ident, revoked=True)
        elif op == "policy.set":
            pools = action["attribution"]
            self.policies.append((self.size, {k: parse_decimal(pools[k]) for k in ("data", "annotation", "training")}))
            self.policy_proposals[self.size] = prop.id
        else:
            vals = self.validators
            if op == "validator.add":
                vals.append(Validator(action["name"], action["key"], action["url"]))
                self.ever_validators.add(action["key"])
            elif op == "validator.remove":
                vals[:] = [v for v in vals if v.key != action["key"]]
            else:  # validator.replace: the new key takes the old one's place in the set
                at = self.validator_keys().index(action["old"])
                vals[at] = Validator(action["name"], action["new"], action["url"])
                self.ever_validators.add(action["new"])
            self._validators_hash = None
            self._record_set()

    def _record_set(self) -> None:
        """Keep the set after this change as the one certifying the next height (9.1)."""
        nxt = max(self.height, 1) + 1  # records outside any begun block count as block 1's
        current = tuple(self.validators)
        while self.validator_sets and self.validator_sets[-1][0] >= nxt:
            self.validator_sets.pop()  # an earlier change of this same block
        if self.validator_sets[-1][1] != current:
            self.validator_sets.append((nxt, current))

    def check_apply(self, rec: Record) -> None:
        self.check(rec)
        self.apply(rec)

    def replay(self, records: Iterable[Record]) -> None:
        for rec in records:
            self.check_apply(rec)
