"""The genesis document and the chain id (PROTOCOL.md 2)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .blocks import quorum
from .canonical import GENESIS_TAG, tagged_hash
from .errors import InputError
from .keys import is_key
from .records import ROLES, parse_decimal
from .values import parse_time

__all__ = ["GENESIS_VERSION", "Genesis", "parse_genesis"]

GENESIS_VERSION = 2  # PROTOCOL.md 2

# ledger.keys.key_ok, docs/protocol.md 1
_KEY_RULE = "must be a public key: 64 lowercase hex characters encoding a point of the prime-order subgroup (not small order, canonical)"


def _bad(path: str, rule: str, code: str = "bad_genesis") -> InputError:
    return InputError(f"genesis {path}: {rule}", code=code, field=path)


def _fields(obj: Any, path: str, required: set[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if type(obj) is not dict:
        raise _bad(path, "must be an object")
    for k in obj:
        if k not in required and k not in optional:
            raise _bad(f"{path}.{k}", "unknown field")
    for k in required:
        if k not in obj:
            raise _bad(f"{path}.{k}", "missing required field")
    return obj


def _name(v: Any, path: str) -> str:
    if type(v) is not str or not v:
        raise _bad(path, "must be a non-empty string")
    return v


@dataclass(frozen=True)
class Genesis:
    """A checked genesis document; ``doc`` is exactly the JSON that the chain id hashes."""

    doc: dict[str, Any]
    chain_id: str
    validators: tuple[str, ...]  # validator public keys, in genesis order
    validator_names: dict[str, str]
    validator_urls: dict[str, str]
    policy: dict[str, Fraction]

    @property
    def quorum(self) -> int:
        """PROTOCOL.md 6: more than two thirds of the validators, by distinct key."""
        return quorum(len(self.validators))


def parse_genesis(doc: Any) -> Genesis:
    """Check a genesis document's form and compute its chain id (PROTOCOL.md 2)."""
    _fields(doc, "", {"v", "name", "created", "validators", "organisations", "participants", "policy"})
    if type(doc["v"]) is not int or doc["v"] != GENESIS_VERSION:  # PROTOCOL.md 2: version 2
        raise _bad("v", f"must be {GENESIS_VERSION} (protocol version {GENESIS_VERSION}; a version 1 genesis is not read)")
    _name(doc["name"], "name")
    if parse_time(doc["created"]) is None:
        raise _bad("created", "must be an RFC 3339 UTC time with a Z suffix and a real date, e.g. 2026-11-21T12:00:00Z")
    vals = doc["validators"]
    if type(vals) is not list or not vals:
        raise _bad("validators", "must be a non-empty array")
    keys: list[str] = []
    names: dict[str, str] = {}
    urls: dict[str, str] = {}
    for i, v in enumerate(vals):
        _fields(v, f"validators[{i}]", {"name", "key", "url"})
        if not is_key(v["key"]):
            raise _bad(f"validators[{i}].key", _KEY_RULE, "bad_key")
        if v["key"] in names:
            raise _bad(f"validators[{i}].key", "repeats another validator's key")
        keys.append(v["key"])
        names[v["key"]] = _name(v["name"], f"validators[{i}].name")
        urls[v["key"]] = _name(v["url"], f"validators[{i}].url")
    orgs = doc["organisations"]
    if type(orgs) is not list:
        raise _bad("organisations", "must be an array")
    org_names: set[str] = set()
    for i, o in enumerate(orgs):
        _fields(o, f"organisations[{i}]", {"name", "admins"})
        n = _name(o["name"], f"organisations[{i}].name")
        if n in org_names:
            raise _bad(f"organisations[{i}].name", "repeats another organisation")
        org_names.add(n)
        if type(o["admins"]) is not list or not all(map(is_key, o["admins"])):
            raise _bad(f"organisations[{i}].admins", f"must be an array of public keys; each {_KEY_RULE}", "bad_key")
    parts = doc["participants"]
    if type(parts) is not list:
        raise _bad("participants", "must be an array")
    seen: set[str] = set()
    for i, p in enumerate(parts):
        _fields(p, f"participants[{i}]", {"key", "name", "org", "roles"})
        if not is_key(p["key"]):
            raise _bad(f"participants[{i}].key", _KEY_RULE, "bad_key")
        if p["key"] in seen:
            raise _bad(f"participants[{i}].key", "repeats another participant")
        seen.add(p["key"])
        _name(p["name"], f"participants[{i}].name")
        if p["org"] not in org_names:
            raise _bad(f"participants[{i}].org", f"names no organisation of the genesis: {p['org']!r}")
        if type(p["roles"]) is not list or not all(r in ROLES for r in p["roles"]):
            raise _bad(f"participants[{i}].roles", f"must be an array of roles from {', '.join(ROLES)}")
    pol = _fields(doc["policy"], "policy", {"attribution"})
    pools = _fields(pol["attribution"], "policy.attribution", {"data", "annotation", "training"})
    try:
        policy = {k: parse_decimal(pools[k], f"policy.attribution.{k}") for k in ("data", "annotation", "training")}
    except InputError as e:
        raise _bad("policy.attribution", e.message) from e
    if any(not 0 <= v <= 1 for v in policy.values()) or sum(policy.values()) != 1:
        raise _bad("policy.attribution", "the three pools must lie in [0, 1] and sum to 1")
    return Genesis(
        doc=doc,
        chain_id=tagged_hash(GENESIS_TAG, doc),  # PROTOCOL.md 2
        validators=tuple(keys),
        validator_names=names,
        validator_urls=urls,
        policy=policy,
    )
