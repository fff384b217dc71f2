"""Records: the signed envelope and the body types (PROTOCOL.md 3, 3.1, 9.2, 9.3).

This module checks *form* only — what can be decided from the record alone: fields, types,
hex, decimals, times, the signature, the id. What depends on the chain so far (roles,
replays, references, budgets) lives in ``ledger.state``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import values
from .canonical import MAX_SAFE_INTEGER, RECORD_TAG, jcs, jcs_checked, jcs_part, key_in_domain
from .errors import RecordFormError, RecordTooLargeError, SignatureError
from .keys import SigningKey, is_hex, is_key, verify_bytes

__all__ = [
    "ACTION_OPS",
    "MAX_RECORD_BYTES",
    "RECORD_TYPES",
    "ROLES",
    "ROLE_FOR_TYPE",
    "Record",
    "make_record",
    "parse_decimal",
    "parse_record",
    "record_id",
    "record_signing_bytes",
    "utc_now",
]

MAX_RECORD_BYTES = 64 * 1024  # docs/protocol.md: a canonical envelope is at most 64 KiB
ROLES = ("contributor", "annotator", "trainer", "evaluator", "admin")  # PROTOCOL.md 3.1
ROLE_FOR_TYPE = {  # PROTOCOL.md 3.1: the role each type needs
    "identity.register": "admin",
    "identity.revoke": "admin",
    "dataset.contribute": "contributor",
    "annotation.event": "annotator",
    "model.update": "trainer",
    "model.evaluation": "evaluator",
    "policy.set": "admin",  # version 1 only: refused by the state (PROTOCOL.md 3.1)
    "network.propose": "admin",  # PROTOCOL.md 9.2
    "network.approve": "admin",
}
RECORD_TYPES = tuple(ROLE_FOR_TYPE)
ENVELOPE_FIELDS = frozenset({"v", "chain", "type", "signer", "nonce", "ts", "body", "sig"})

_SPDX = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+\-]*( (AND|OR|WITH) [A-Za-z0-9][A-Za-z0-9.+\-]*)*")
MAX_STR = 1024  # docs/protocol.md: a string field is at most 1024 characters


def utc_now() -> str:
    """The current time as PROTOCOL.md 1 writes it: RFC 3339, UTC, ``Z`` suffix, seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fail(path: str, rule: str, code: str = "invalid_record") -> RecordFormError:
    return RecordFormError(f"{path}: {rule}", code=code, field=path)


# --- field forms -----------------------------------------------------------------------
Check = Callable[[Any, str], None]


def _str(v: Any, path: str) -> None:
    if type(v) is not str:
        raise _fail(path, "must be a string", "bad_type")
    if not v or len(v) > MAX_STR:
        raise _fail(path, f"must be a non-empty string of at most {MAX_STR} characters", "bad_value")


def _any_str(v: Any, path: str) -> None:
    if type(v) is not str:
        raise _fail(path, "must be a string", "bad_type")
    if len(v) > MAX_STR:
        raise _fail(path, f"must be at most {MAX_STR} characters", "bad_value")


def _count(v: Any, path: str) -> None:
    if type(v) is not int:
        raise _fail(path, "must be an integer", "bad_type")
    if not 0 <= v <= MAX_SAFE_INTEGER:
        raise _fail(path, "must be an integer from 0 to 2^53-1", "bad_value")


def _hex32(v: Any, path: str) -> None:
    if not is_hex(v, 32):
        raise _fail(path, "must be 64 lowercase hex characters (a SHA-256 hash)", "bad_hex")


def _pubkey(v: Any, path: str) -> None:
    if not is_hex(v, 32):
        raise _fail(path, "must be a public key (64 lowercase hex characters)", "bad_hex")
    if not is_key(v):  # docs/protocol.md 1: only prime-order, canonical keys
        raise _fail(path, "is not an acceptable Ed25519 public key (small order, non-canonical or outside the prime-order subgroup)", "bad_key")


def parse_decimal(v: Any, path: str = "value") -> Fraction:
    """A PROTOCOL.md 1 decimal string (e.g. ``"0.75"``) as an exact ``Fraction``
    (``values.parse_decimal``: the one reading of decimals, docs/protocol.md 2)."""
    if type(v) is not str:
        raise _fail(path, 'must be a decimal string such as "0.75"', "bad_type")
    value = values.parse_decimal(v)
    if value is None:
        raise _fail(path, f'must be a decimal string such as "0.75", got {v!r:.40}', "bad_decimal")
    return value


# The bounds are compared on the fraction's integers (the denominator is positive): the
# same test as ``0 <= x <= 1``, without Fraction's generic comparison on every record.
def _dec_nonneg(v: Any, path: str) -> None:
    if parse_decimal(v, path).numerator < 0:
        raise _fail(path, "must not be negative", "bad_value")


def _dec_unit(v: Any, path: str) -> None:
    x = parse_decimal(v, path)
    if not 0 <= x.numerator <= x.denominator:
        raise _fail(path, "must lie in [0, 1]", "bad_value")


def _dec(v: Any, path: str) -> None:
    parse_decimal(v, path)


def _spdx(v: Any, path: str) -> None:
    _str(v, path)
    if not _SPDX.fullmatch(v):
        raise _fail(path, f"must be an SPDX licence identifier or expression, got {v!r:.40}", "bad_value")


def _nullable(check: Check) -> Check:
    def inner(v: Any, path: str) -> None:
        if v is not None:
            check(v, path)

    return inner


def _list(check: Check, *, max_items: int = 1024, unique: bool = False) -> Check:
    def inner(v: Any, path: str) -> None:
        if type(v) is not list:
            raise _fail(path, "must be an array", "bad_type")
        if len(v) > max_items:
            raise _fail(path, f"must have at most {max_items} items", "bad_value")
        for i, item in enumerate(v):
            check(item, f"{path}[{i}]")
        if unique and len(set(map(str, v))) != len(v):
            raise _fail(path, "must not repeat an item", "bad_value")

    return inner


def _enum(*allowed: str) -> Check:
    def inner(v: Any, path: str) -> None:
        if v not in allowed or type(v) is not str:
            raise _fail(path, f"must be one of {', '.join(allowed)}", "bad_value")

    return inner


def _obj(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    optional = optional or {}
    allowed = set(required) | set(optional)

    def inner(v: Any, path: str) -> None:
        if type(v) is not dict:
            raise _fail(path, "must be an object", "bad_type")
        for k in v:
            if k not in allowed:
                raise _fail(f"{path}.{k}", "unknown field", "unknown_field")
        for k, check in required.items():
            if k not in v:
                raise _fail(f"{path}.{k}", "missing required field", "missing_field")
            check(v[k], f"{path}.{k}")
        for k, check in optional.items():
            if k in v:
                check(v[k], f"{path}.{k}")

    return inner


def _action_form(schemas: Mapping[str, Check]) -> Check:
    """PROTOCOL.md 9.3: an action is one of the six forms, chosen by ``op``. Every failure
    of its form has the one code ``bad_action`` (the field names what broke)."""

    def inner(v: Any, path: str) -> None:
        try:
            if type(v) is not dict:
                raise _fail(path, "must be an object", "bad_type")
            op = v.get("op")
            if type(op) is not str or op not in schemas:
                raise _fail(f"{path}.op", f"must be one of {', '.join(schemas)}", "bad_value")
            schemas[op](v, path)
            if op == "policy.set":
                _pools_sum_to_one(v["attribution"], f"{path}.attribution")
            elif op == "org.add" and not v["admins"]:
                raise _fail(f"{path}.admins", "must name at least one admin", "bad_value")
            elif op == "validator.replace" and v["old"] == v["new"]:
                raise _fail(f"{path}.new", "must differ from old", "bad_value")
        except RecordFormError as e:
            raise RecordFormError(e.message, code="bad_action", field=e.details.get("field")) from e

    return inner


def _pools_sum_to_one(pools: dict[str, Any], path: str) -> None:
    total = sum((parse_decimal(pools[k]) for k in ("data", "annotation", "training")), Fraction(0))
    if total != 1:
        raise _fail(path, f"pools must sum to 1, they sum to {values.decimal_str(total)}", "bad_value")


def _sig(v: Any, path: str) -> None:
    if not is_hex(v, 64):
        raise _fail(path, "must be an Ed25519 signature (128 lowercase hex characters)", "bad_hex")


_POOLS = _obj({"data": _dec_unit, "annotation": _dec_unit, "training": _dec_unit})
_op = _enum  # the "op" member: checked by _action_form before the schema runs
# PROTOCOL.md 9.3: the six actions.
ACTION_SCHEMAS: dict[str, Check] = {
    "org.add": _obj({"op": _op("org.add"), "name": _str, "admins": _list(_pubkey, max_items=64, unique=True)}),
    "org.remove": _obj({"op": _op("org.remove"), "name": _str}),
    "validator.add": _obj({"op": _op("validator.add"), "key": _pubkey, "name": _str, "url": _str, "pop": _sig}),
    "validator.remove": _obj({"op": _op("validator.remove"), "key": _pubkey}),
    "validator.replace": _obj(
        {"op": _op("validator.replace"), "old": _pubkey, "new": _pubkey, "name": _str, "url": _str, "pop": _sig}
    ),
    "policy.set": _obj({"op": _op("policy.set"), "attribution": _POOLS}),
}
ACTION_OPS = tuple(ACTION_SCHEMAS)
check_action = _action_form(ACTION_SCHEMAS)


def _metrics(v: Any, path: str) -> None:
    if type(v) is not dict:
        raise _fail(path, "must be an object of metric name to decimal string", "bad_type")
    if len(v) > 256:
        raise _fail(path, "must have at most 256 metrics", "bad_value")
    for k, val in v.items():
        _str(k, f"{path} key")
        _dec(val, f"{path}.{k}")


# PROTOCOL.md 3.1, one schema per type. docs/protocol.md adds only optional fields.
BODY_SCHEMAS: dict[str, Check] = {
    "identity.register": _obj(
        {"key": _pubkey, "name": _str, "org": _str, "roles": _list(_enum(*ROLES), max_items=5, unique=True)}
    ),
    "identity.revoke": _obj({"key": _pubkey, "reason": _any_str}),
    "dataset.contribute": _obj(
        {
            "dataset": _str,
            "version": _str,
            "content_hash": _hex32,
            "size_bytes": _count,
            "items": _count,
            "license": _spdx,
            "modality": _str,
            "derived_from": _list(_str, unique=True),
            "privacy_budget": _nullable(_obj({"epsilon": _dec_nonneg, "delta": _dec_unit})),
        },
        {"uri": _str, "description": _any_str},
    ),
    "annotation.event": _obj(
        {
            "dataset": _str,
            "labels_hash": _hex32,
            "labels": _count,
            "label_schema": _str,
            "method": _enum("manual", "automatic", "semi-automatic"),
            "model": _nullable(_hex32),
            "quality": _dec_unit,
            "quality_method": _str,
        }
    ),
    "model.update": _obj(
        {
            "model": _str,
            "round": _count,
            "parent": _nullable(_hex32),
            "weights_hash": _hex32,
            "inputs": _list(
                _obj({"dataset": _str, "samples": _count, "epsilon": _dec_nonneg, "delta": _dec_unit})
            ),
            "aggregates": _list(_hex32, unique=True),
            "metrics": _metrics,
        }
    ),
    "model.evaluation": _obj(
        {
            "target": _hex32,
            "metric": _str,
            "value": _dec,
            "eval_set_hash": _hex32,
            "coalition": _nullable(_list(_str, max_items=64, unique=True)),
        }
    ),
    "policy.set": _obj({"attribution": _POOLS}),  # version 1 form; the state refuses it
    # PROTOCOL.md 9.2
    "network.propose": _obj({"action": check_action, "expires": _count, "reason": _any_str}),
    "network.approve": _obj({"proposal": _hex32}),
}


def _body_rules(rtype: str, body: dict[str, Any]) -> None:
    """Cross-field rules of PROTOCOL.md 3.1 that need no chain state."""
    if rtype == "annotation.event":
        if body["method"] != "manual" and body["model"] is None:
            raise _fail("body.model", f"is required when method is {body['method']}", "missing_field")
    elif rtype == "model.update":
        if body["aggregates"] and body["inputs"]:
            raise _fail("body", "an update has either inputs (local) or aggregates (aggregate), not both", "bad_value")
        if not body["aggregates"] and not body["inputs"]:
            raise _fail("body", "a local update needs inputs; an aggregate needs aggregates", "bad_value")
        for i, inp in enumerate(body["inputs"]):
            if inp["samples"] == 0:
                raise _fail(f"body.inputs[{i}].samples", "must be at least 1", "bad_value")
    elif rtype == "policy.set":
        _pools_sum_to_one(body["attribution"], "body.attribution")


# --- the envelope ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Record:
    """A record whose form has been checked. ``envelope`` is the signed JSON object."""

    envelope: dict[str, Any]
    id: str
    canonical: bytes  # JCS(envelope), the bytes the id hashes
    fast: bool = False  # JCS came from the orjson path (canonical.jcs_checked)

    @property
    def type(self) -> str:
        return self.envelope["type"]  # type: ignore[no-any-return]

    @property
    def signer(self) -> str:
        return self.envelope["signer"]  # type: ignore[no-any-return]

    @property
    def nonce(self) -> str:
        return self.envelope["nonce"]  # type: ignore[no-any-return]

    @property
    def body(self) -> dict[str, Any]:
        return self.envelope["body"]  # type: ignore[no-any-return]

    def signing_bytes(self) -> bytes:
        """``record_signing_bytes(self.envelope)``, cut from ``canonical``: JCS sorts the
        envelope's members (body, chain, nonce, sig, signer, ts, type, v), so the envelope
        without ``sig`` canonicalizes to the same text less ``,"sig":"<128 hex>"``. That
        text is found from the end: the members after it (a key, a time, a type, 1) cannot
        hold it, and no quote inside a string is unescaped."""
        c = self.canonical
        at = c.rfind(_SIG_MEMBER)
        if at < 0:  # a Record built without its canonical bytes
            return record_signing_bytes(self.envelope, fast=self.fast)
        return RECORD_TAG + b"\n" + c[:at] + c[at + _SIG_MEMBER_LEN:]

    def verify_signature(self) -> None:
        """PROTOCOL.md 3: ``sig`` by ``signer`` over the envelope without ``sig``."""
        try:
            verify_bytes(self.signer, self.signing_bytes(), self.envelope["sig"])
        except SignatureError as e:
            raise SignatureError(
                f"record {self.id[:16]}: signature by {self.signer[:16]} does not verify", code="bad_signature"
            ) from e


_SIG_MEMBER = b',"sig":"'
_SIG_MEMBER_LEN = len(_SIG_MEMBER) + 128 + 1  # the member, 64 signature bytes in hex, the closing quote


def record_signing_bytes(envelope: Mapping[str, Any], *, fast: bool = False) -> bytes:
    """The bytes a record signature covers (PROTOCOL.md 3): the envelope without ``sig``.
    ``fast``: the whole envelope was canonicalized on the fast path (``Record.fast``)."""
    return RECORD_TAG + b"\n" + jcs_part({k: v for k, v in envelope.items() if k != "sig"}, fast=fast)


def record_id(envelope: Mapping[str, Any]) -> str:
    """PROTOCOL.md 3: ``hex(SHA-256(0x00 || JCS(envelope with sig)))`` — an RFC 9162 leaf hash."""
    return hashlib.sha256(b"\x00" + jcs(envelope)).hexdigest()


def parse_record(obj: Any, *, chain: str | None = None) -> Record:
    """Check an envelope's form (PROTOCOL.md 3, 3.1) and compute its id.

    Raises RecordFormError naming the field and the rule. The signature is not checked
    here: call ``Record.verify_signature``.
    """
    if type(obj) is not dict:
        raise _fail("record", "must be a JSON object", "bad_type")
    for k in obj:
        if k not in ENVELOPE_FIELDS:
            raise _fail(str(k), "unknown envelope field", "unknown_field")
    for k in ("v", "chain", "type", "signer", "nonce", "ts", "body", "sig"):
        if k not in obj:
            raise _fail(k, "missing required field", "missing_field")
    if obj["v"] != 1 or type(obj["v"]) is not int:
        raise _fail("v", "must be 1", "bad_version")
    if not is_hex(obj["chain"], 32):
        raise _fail("chain", "must be a chain id (64 lowercase hex characters)", "bad_hex")
    if chain is not None and obj["chain"] != chain:
        raise RecordFormError(
            f"chain: record is for chain {str(obj['chain'])[:16]}…, this is {chain[:16]}…",
            code="wrong_chain",
            field="chain",
        )
    rtype = obj["type"]
    if type(rtype) is not str or rtype not in BODY_SCHEMAS:
        raise _fail("type", f"unknown record type; one of {', '.join(RECORD_TYPES)}", "unknown_type")
    _pubkey(obj["signer"], "signer")
    nonce = obj["nonce"]
    if type(nonce) is not str or not 1 <= len(nonce) <= 128:
        raise _fail("nonce", "must be a string of 1 to 128 characters", "bad_value")
    ts = obj["ts"]
    if values.parse_time(ts) is None:
        raise _fail("ts", "must be an RFC 3339 UTC time with a Z suffix, e.g. 2026-11-21T12:00:00Z", "bad_time")
    if not is_hex(obj["sig"], 64):
        raise _fail("sig", "must be an Ed25519 signature (128 lowercase hex characters)", "bad_hex")
    body = obj["body"]
    BODY_SCHEMAS[rtype](body, "body")
    _body_rules(rtype, body)
    # The schemas above admit only what canonical.py's fast encoder handles exactly
    # (strings, integers within 2^53-1, null, arrays, objects with ASCII keys), except
    # object keys the signer chooses: metric names. So the domain walk is needed only
    # for an update with an unusual metric name.
    in_domain = rtype != "model.update" or all(map(key_in_domain, body["metrics"]))
    canonical, fast = jcs_checked(obj, in_domain=in_domain)
    if len(canonical) > MAX_RECORD_BYTES:
        raise RecordTooLargeError(
            f"record: canonical size {len(canonical)} bytes exceeds {MAX_RECORD_BYTES}"
        )
    return Record(obj, hashlib.sha256(b"\x00" + canonical).hexdigest(), canonical, fast)


def make_record(
    key: SigningKey,
    chain: str,
    rtype: str,
    body: dict[str, Any],
    *,
    nonce: str | None = None,
    ts: str | None = None,
) -> dict[str, Any]:
    """Build and sign an envelope. The nonce defaults to a fresh random string."""
    import secrets

    env: dict[str, Any] = {
        "v": 1,
        "chain": chain,
        "type": rtype,
        "signer": key.public,
        "nonce": nonce if nonce is not None else secrets.token_hex(12),
        "ts": ts or utc_now(),
        "body": body,
    }
    env["sig"] = key.sign_bytes(record_signing_bytes(env))
    return env
