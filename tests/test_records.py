"""Records (PROTOCOL.md 3, 3.1): forms, typed errors naming the field, signatures, ids."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from factory import TS, Consortium, h, key
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InputError, RecordFormError, SignatureError
from ledger.records import (
    MAX_RECORD_BYTES,
    RECORD_TYPES,
    Record,
    make_record,
    parse_record,
    record_id,
    record_signing_bytes,
)

C = Consortium()
K = "ab" * 32  # some hash
DAVE = key("dave").public  # a public key

VALID: dict[str, dict[str, Any]] = {
    "identity.register": {"key": DAVE, "name": "dave", "org": "org-a", "roles": ["contributor", "admin"]},
    "identity.revoke": {"key": DAVE, "reason": ""},
    "dataset.contribute": {**C.dataset_body("mnist", budget=("1.5", "0.00001")), "uri": "s3://x/mnist",
                           "description": "digits"},
    "annotation.event": C.annotation_body("mnist", method="automatic"),
    "model.update": C.update_body("m", 0, inputs=[("mnist", 10, "0.1", "0")]),
    "model.evaluation": {"target": h("u"), "metric": "acc", "value": "-1.25", "eval_set_hash": h("e"),
                         "coalition": ["mnist"]},
    "policy.set": {"attribution": {"data": "0.5", "annotation": "0.25", "training": "0.25"}},
    "network.propose": {"action": {"op": "org.add", "name": "org-c", "admins": [DAVE]}, "expires": 10,
                        "reason": "a new hospital"},
    "network.approve": {"proposal": h("proposal")},
}


def env(rtype: str, body: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return C.envelope(C.alice, rtype, copy.deepcopy(VALID[rtype]) if body is None else body, **kw)


def with_(rtype: str, path: str, value: Any) -> dict[str, Any]:
    """An envelope of ``rtype`` whose body has ``value`` at dotted ``path`` (``...`` deletes
    the field), set after signing: as a record arrives from outside, unsigned by us."""
    e = env(rtype)
    body = e["body"]
    *parents, last = path.split(".")
    node: Any = body
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return e


def refused(obj: Any, code: str, field: str | None, **kw: Any) -> RecordFormError:
    with pytest.raises(RecordFormError) as ei:
        parse_record(obj, **kw)
    e = ei.value
    assert isinstance(e, InputError)
    assert e.code == code, (e.code, e.message)
    if field is not None:
        assert e.details.get("field") == field, e.details
        assert e.message.startswith(field + ":"), e.message
    return e


# --- valid records ---------------------------------------------------------------------
def test_valid_bodies_cover_every_type() -> None:
    assert set(VALID) == set(RECORD_TYPES)


@pytest.mark.parametrize("rtype", RECORD_TYPES)
def test_every_type_valid_body_is_accepted(rtype: str) -> None:
    e = env(rtype)
    rec = parse_record(e, chain=C.chain_id)
    rec.verify_signature()
    assert rec.type == rtype and rec.body == VALID[rtype] and rec.signer == C.alice.public


@pytest.mark.parametrize(("rtype", "body"), [
    ("dataset.contribute", C.dataset_body("d")),  # privacy_budget null, no optional fields
    ("dataset.contribute", {**C.dataset_body("d"), "license": "Apache-2.0 OR MIT"}),
    ("annotation.event", C.annotation_body("d")),  # manual, model null
    ("annotation.event", {**C.annotation_body("d", method="semi-automatic"), "quality": "1"}),
    ("annotation.event", {**C.annotation_body("d"), "quality": "0"}),
    ("model.update", C.update_body("m", 3, aggregates=[h("a"), h("b")], parent=h("p"))),
    ("model.evaluation", {"target": h("u"), "metric": "acc", "value": "0.5", "eval_set_hash": h("e"),
                          "coalition": None}),
], ids=["no-budget", "spdx-expression", "manual", "quality-1", "quality-0", "aggregate", "no-coalition"])
def test_more_valid_forms(rtype: str, body: dict[str, Any]) -> None:
    parse_record(env(rtype, body)).verify_signature()


# --- every field of every type, refused with a stable code naming it -------------------
def _required_fields() -> list[tuple[str, str]]:
    optional = {"uri", "description"}
    return [(t, f) for t, body in VALID.items() for f in body if f not in optional]


@pytest.mark.parametrize(("rtype", "field"), _required_fields())
def test_missing_required_field(rtype: str, field: str) -> None:
    refused(with_(rtype, field, ...), "missing_field", f"body.{field}")


@pytest.mark.parametrize("rtype", RECORD_TYPES)
def test_unknown_body_field(rtype: str) -> None:
    refused(with_(rtype, "colour", "blue"), "unknown_field", "body.colour")


# (type, path, value, code): wrong JSON types, bad hex, bad decimals, out-of-range values.
BAD: list[tuple[str, str, Any, str]] = [
    ("identity.register", "key", "AB" * 32, "bad_hex"),
    ("identity.register", "key", "ab" * 31, "bad_hex"),
    ("identity.register", "name", 7, "bad_type"),
    ("identity.register", "name", "", "bad_value"),
    ("identity.register", "org", None, "bad_type"),
    ("identity.register", "roles", "admin", "bad_type"),
    ("identity.register", "roles.0", "root", "bad_value"),
    ("identity.register", "roles.1", "contributor", "bad_value"),  # repeated role
    ("identity.revoke", "key", 5, "bad_hex"),
    ("identity.revoke", "reason", ["x"], "bad_type"),
    ("dataset.contribute", "dataset", 1, "bad_type"),
    ("dataset.contribute", "version", "", "bad_value"),
    ("dataset.contribute", "content_hash", "zz" * 32, "bad_hex"),
    ("dataset.contribute", "size_bytes", "100", "bad_type"),
    ("dataset.contribute", "size_bytes", -1, "bad_value"),
    ("dataset.contribute", "items", True, "bad_type"),
    ("dataset.contribute", "items", 1.0, "bad_type"),
    ("dataset.contribute", "items", 2**53, "bad_value"),
    ("dataset.contribute", "license", "not a licence!", "bad_value"),
    ("dataset.contribute", "modality", 3, "bad_type"),
    ("dataset.contribute", "derived_from", "mnist", "bad_type"),
    ("dataset.contribute", "derived_from", ["a", "a"], "bad_value"),
    ("dataset.contribute", "privacy_budget", "1.0", "bad_type"),
    ("dataset.contribute", "privacy_budget.epsilon", 1.5, "bad_type"),
    ("dataset.contribute", "privacy_budget.epsilon", "1e3", "bad_decimal"),
    ("dataset.contribute", "privacy_budget.epsilon", "-1", "bad_value"),
    ("dataset.contribute", "privacy_budget.delta", "1.5", "bad_value"),
    ("dataset.contribute", "privacy_budget.delta", ".5", "bad_decimal"),
    ("dataset.contribute", "uri", "", "bad_value"),
    ("annotation.event", "labels_hash", h("x")[:-1], "bad_hex"),
    ("annotation.event", "labels", "100", "bad_type"),
    ("annotation.event", "method", "crowd", "bad_value"),
    ("annotation.event", "model", "not-hex", "bad_hex"),
    ("annotation.event", "quality", "1.01", "bad_value"),
    ("annotation.event", "quality", "-0.1", "bad_value"),
    ("annotation.event", "quality", 0.5, "bad_type"),
    ("annotation.event", "quality", "0,5", "bad_decimal"),
    ("annotation.event", "quality", "NaN", "bad_decimal"),
    ("annotation.event", "quality_method", "", "bad_value"),
    ("model.update", "round", -1, "bad_value"),
    ("model.update", "parent", "p", "bad_hex"),
    ("model.update", "weights_hash", None, "bad_hex"),
    ("model.update", "inputs", {}, "bad_type"),
    ("model.update", "inputs.0.samples", 0, "bad_value"),
    ("model.update", "inputs.0.epsilon", "0.1.2", "bad_decimal"),
    ("model.update", "inputs.0.delta", "2", "bad_value"),
    ("model.update", "inputs.0.extra", "x", "unknown_field"),
    ("model.update", "metrics", ["loss"], "bad_type"),
    ("model.update", "metrics.loss", 0.25, "bad_type"),
    ("model.update", "metrics.loss", "+0.25", "bad_decimal"),
    ("model.evaluation", "target", "Z" * 64, "bad_hex"),
    ("model.evaluation", "value", "1/2", "bad_decimal"),
    ("model.evaluation", "coalition", "mnist", "bad_type"),
    ("model.evaluation", "coalition.0", 1, "bad_type"),
    ("policy.set", "attribution.data", "0.5000000000000000000000000000001", "bad_decimal"),
    ("policy.set", "attribution.data", "1.5", "bad_value"),
    ("policy.set", "attribution.training", 0.25, "bad_type"),
    ("policy.set", "attribution.cash", "0", "unknown_field"),
]


def _field(path: str) -> str:
    """The dotted test path as the library writes it: ``body.inputs[0].samples``."""
    out = "body"
    for part in path.split("."):
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


@pytest.mark.parametrize(("rtype", "path", "value", "code"), BAD, ids=[f"{t}:{p}={v!r:.20}" for t, p, v, _ in BAD])
def test_bad_field_value(rtype: str, path: str, value: Any, code: str) -> None:
    field = _field(path)
    if path == "roles.1":  # a repeated role is a fault of the whole list
        field = "body.roles"
    if path == "derived_from" and value == ["a", "a"]:
        field = "body.derived_from"
    refused(with_(rtype, path, value), code, field)


def test_non_manual_annotation_needs_a_model() -> None:
    for method in ("automatic", "semi-automatic"):
        body = {**VALID["annotation.event"], "method": method, "model": None}
        e = refused(env("annotation.event", body), "missing_field", "body.model")
        assert method in e.message


@pytest.mark.parametrize(("inputs", "aggregates"), [
    ([{"dataset": "d", "samples": 1, "epsilon": "0", "delta": "0"}], [h("u")]),
    ([], []),
], ids=["both", "neither"])
def test_update_has_inputs_or_aggregates(inputs: list[Any], aggregates: list[str]) -> None:
    body = {**VALID["model.update"], "inputs": inputs, "aggregates": aggregates}
    e = refused(env("model.update", body), "bad_value", "body")
    assert "inputs" in e.message and "aggregates" in e.message


@pytest.mark.parametrize("pools", [("0.5", "0.3", "0.3"), ("0.3", "0.3", "0.3"), ("0", "0", "0")])
def test_policy_pools_must_sum_to_one(pools: tuple[str, str, str]) -> None:
    body = {"attribution": dict(zip(("data", "annotation", "training"), pools, strict=True))}
    e = refused(env("policy.set", body), "bad_value", "body.attribution")
    assert "sum to 1" in e.message


# --- the envelope ------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value", "code"), [
    ("v", 2, "bad_version"),
    ("v", True, "bad_version"),
    ("chain", "c", "bad_hex"),
    ("type", "dataset.delete", "unknown_type"),
    ("signer", C.alice.public.upper(), "bad_hex"),
    ("nonce", "", "bad_value"),
    ("nonce", "n" * 129, "bad_value"),
    ("nonce", 7, "bad_value"),
    ("ts", "2026-11-21T12:00:00", "bad_time"),
    ("ts", "2026-11-21T12:00:00+00:00", "bad_time"),
    ("ts", "2026-11-21 12:00:00Z", "bad_time"),
    ("ts", 1700000000, "bad_time"),
    ("sig", "00" * 63, "bad_hex"),
    ("body", [], "bad_type"),
], ids=lambda v: repr(v)[:24])
def test_bad_envelope_field(key: str, value: Any, code: str) -> None:
    e = env("dataset.contribute")
    e[key] = value
    refused(e, code, "body" if key == "body" else key)


def test_unknown_and_missing_envelope_fields() -> None:
    e = env("dataset.contribute")
    refused({**e, "extra": 1}, "unknown_field", "extra")
    for k in ("v", "chain", "type", "signer", "nonce", "ts", "body", "sig"):
        refused({x: y for x, y in e.items() if x != k}, "missing_field", k)
    refused([e], "bad_type", None)


def test_ts_with_fraction_is_accepted() -> None:
    parse_record(env("dataset.contribute", ts="2026-11-21T12:00:00.123456Z"))


def test_wrong_chain() -> None:
    other = Consortium()
    other.doc["name"] = "another"
    from ledger.genesis import parse_genesis

    other_chain = parse_genesis(other.doc).chain_id
    e = refused(env("dataset.contribute", chain=other_chain), "wrong_chain", "chain", chain=C.chain_id)
    assert other_chain[:16] in e.message
    parse_record(env("dataset.contribute"), chain=C.chain_id)  # the right chain passes


def _sized(target: int) -> dict[str, Any]:
    """A dataset.contribute envelope whose canonical form is exactly ``target`` bytes."""
    body = {**C.dataset_body("big"), "description": ""}
    remaining = target - len(rfc8785.dumps(env("dataset.contribute", body, nonce="big")))
    while remaining > 1024:  # whole list items, then the description makes up the rest
        overhead = 2 if not body["derived_from"] else 3  # quotes, and a comma after the first
        n = min(1024, remaining - overhead)
        body["derived_from"].append(f"{len(body['derived_from']):05d}".ljust(n, "x"))
        remaining -= n + overhead
    body["description"] = "d" * remaining
    e = env("dataset.contribute", body, nonce="big")
    assert len(rfc8785.dumps(e)) == target
    return e


def test_record_size_limit_is_exact() -> None:
    parse_record(_sized(MAX_RECORD_BYTES))
    e = refused(_sized(MAX_RECORD_BYTES + 1), "record_too_large", None)
    assert str(MAX_RECORD_BYTES + 1) in e.message and str(MAX_RECORD_BYTES) in e.message


# --- signature and id, recomputed independently -------------------------------------------
def test_id_and_signing_bytes_recomputed_with_rfc8785() -> None:
    e = env("model.update")
    rec = parse_record(e)
    assert rec.id == hashlib.sha256(b"\x00" + rfc8785.dumps(e)).hexdigest() == record_id(e)
    assert rec.canonical == rfc8785.dumps(e)
    unsigned = {k: v for k, v in e.items() if k != "sig"}
    msg = b"provledger/record/v1\n" + rfc8785.dumps(unsigned)
    assert record_signing_bytes(e) == msg
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(e["signer"])).verify(bytes.fromhex(e["sig"]), msg)


def test_key_order_does_not_change_the_id() -> None:
    e = env("dataset.contribute")
    shuffled = {k: e[k] for k in reversed(list(e))}
    shuffled["body"] = {k: e["body"][k] for k in reversed(list(e["body"]))}
    assert parse_record(shuffled).id == parse_record(e).id
    parse_record(shuffled).verify_signature()


def test_same_envelope_same_id_and_signatures_are_deterministic() -> None:
    a = make_record(C.alice, C.chain_id, "dataset.contribute", C.dataset_body("d"), nonce="x", ts=TS)
    b = make_record(C.alice, C.chain_id, "dataset.contribute", C.dataset_body("d"), nonce="x", ts=TS)
    assert a == b and parse_record(a).id == parse_record(b).id


def test_make_record_defaults_fresh_nonce_and_utc_time() -> None:
    a = make_record(C.alice, C.chain_id, "dataset.contribute", C.dataset_body("d"))
    b = make_record(C.alice, C.chain_id, "dataset.contribute", C.dataset_body("d"))
    assert a["nonce"] != b["nonce"]
    parse_record(a).verify_signature()
    assert a["ts"].endswith("Z")


@pytest.mark.parametrize(("key", "value"), [
    ("v", 2),
    ("chain", "cd" * 32),
    ("type", "annotation.event"),
    ("signer", C.bob.public),
    ("nonce", "other"),
    ("ts", "2026-11-21T12:00:01Z"),
    ("body", {**C.dataset_body("mnist"), "items": 1001}),
    ("sig", C.alice.sign_bytes(b"other")),
])
def test_tampering_any_envelope_field_breaks_the_signature(key: str, value: Any) -> None:
    e = env("dataset.contribute", C.dataset_body("mnist"))
    parse_record(e).verify_signature()
    e[key] = value
    rec = Record(e, record_id(e), rfc8785.dumps(e))  # bypass the form check: v and type
    with pytest.raises(SignatureError) as ei:
        rec.verify_signature()
    assert ei.value.code == "bad_signature" and rec.id[:16] in ei.value.message


def test_signature_from_another_signer_fails() -> None:
    e = env("dataset.contribute")
    e["sig"] = C.bob.sign_bytes(record_signing_bytes(e))
    with pytest.raises(SignatureError):
        parse_record(e).verify_signature()


def test_signature_is_domain_separated() -> None:
    """The same payload signed under another tag (a vote, a block) is not a record signature."""
    e = env("dataset.contribute")
    unsigned = {k: v for k, v in e.items() if k != "sig"}
    e["sig"] = C.alice.sign_bytes(b"provledger/vote/v1\n" + rfc8785.dumps(unsigned))
    with pytest.raises(SignatureError):
        parse_record(e).verify_signature()


# --- hypothesis: any body mutation changes the id ------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(rtype=st.sampled_from(RECORD_TYPES), data=st.data())
def test_any_body_mutation_changes_the_id(rtype: str, data: st.DataObject) -> None:
    e = env(rtype, nonce="fixed")
    body = e["body"]
    field = data.draw(st.sampled_from([*sorted(body), "new-field"]), label="field")
    value = data.draw(_json, label="value")
    mutated = copy.deepcopy(e)
    mutated["body"][field] = value
    if mutated["body"] == body:
        return  # not a mutation (JSON equality: the id must then stay the same)
    assert record_id(mutated) != record_id(e)
    # Without a new signature the mutated record never verifies, whatever its form.
    rec = Record(mutated, record_id(mutated), b"")
    with pytest.raises(SignatureError):
        rec.verify_signature()


# --- hypothesis: the canonical and signed bytes are RFC 8785's, whatever the strings -------
_any_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
# Keys whose UTF-16 order differs from their code point order (RFC 8785 3.2.3).
_tricky_key = st.text(st.sampled_from("a\u00e9\ue000\uffff\U00010000\U0001f600"), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(nonce=_any_text, name=_any_text, metrics=st.dictionaries(_tricky_key | _any_text, st.sampled_from(["0.5", "-1", "12.25"]),
                                                                 max_size=4),
       description=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_canonical_and_signing_bytes_equal_the_reference(nonce: str, name: str, metrics: dict[str, str],
                                                         description: str) -> None:
    """``parse_record`` skips the canonical domain walk where its schemas allow (metric
    names excepted) and cuts the signing bytes out of the canonical bytes: both must equal
    RFC 8785 of the envelope (with and without ``sig``) for any strings, keys included."""
    update = {**copy.deepcopy(VALID["model.update"]), "model": name, "metrics": metrics}
    dataset = {**copy.deepcopy(VALID["dataset.contribute"]), "dataset": name, "description": description}
    for rtype, body in (("model.update", update), ("dataset.contribute", dataset)):
        e = C.envelope(C.alice, rtype, body, nonce=nonce)
        rec = parse_record(e)
        unsigned = {k: v for k, v in e.items() if k != "sig"}
        assert rec.canonical == rfc8785.dumps(e)
        assert rec.signing_bytes() == b"provledger/record/v1\n" + rfc8785.dumps(unsigned)
        assert rec.signing_bytes() == record_signing_bytes(e)
        rec.verify_signature()


# --- strict keys (docs/protocol.md 1) -----------------------------------------------------------
FORGED_SIGNER = "01" + "00" * 31  # the identity point
FORGED_SIG = "01" + "00" * 63  # R = identity, S = 0: "verifies" for that key over any message


def forged(rtype: str = "dataset.contribute") -> dict[str, Any]:
    e = {k: v for k, v in env(rtype).items() if k != "sig"}
    return {**e, "signer": FORGED_SIGNER, "sig": FORGED_SIG}


def test_small_order_forgery_is_a_form_error() -> None:
    """The envelope is refused by its form (bad_key, an HTTP 400), before any state rule
    could answer unknown_signer."""
    for rtype in RECORD_TYPES:
        with pytest.raises(RecordFormError) as ei:
            parse_record(forged(rtype), chain=C.chain_id)
        assert ei.value.code == "bad_key" and ei.value.details["field"] == "signer"


def test_small_order_forgery_does_not_verify_even_past_the_form_check() -> None:
    good = parse_record(env("dataset.contribute"))
    rec = Record(forged(), good.id, good.canonical)
    with pytest.raises((SignatureError, InputError)):
        rec.verify_signature()


@pytest.mark.parametrize("field", ["identity.register", "identity.revoke"])
def test_body_key_must_be_an_acceptable_key(field: str) -> None:
    for bad in (FORGED_SIGNER, "00" * 32, "ec" + "ff" * 30 + "7f",
                "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d"):  # torsion part
        body = {**VALID[field], "key": bad}
        with pytest.raises(RecordFormError) as ei:
            parse_record(env(field, body))
        assert ei.value.code == "bad_key" and ei.value.details["field"] == "body.key"
