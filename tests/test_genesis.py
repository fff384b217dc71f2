"""The genesis document and the chain id (PROTOCOL.md 2)."""

from __future__ import annotations

import copy
import hashlib
from decimal import Decimal
from typing import Any

import pytest
import rfc8785
from factory import Consortium, key

from ledger.errors import InputError
from ledger.genesis import parse_genesis
from ledger.keys import is_key

C = Consortium(validators=3)


def test_chain_id_recomputed_with_rfc8785() -> None:
    g = parse_genesis(C.doc)
    assert g.chain_id == hashlib.sha256(b"provledger/genesis/v1\n" + rfc8785.dumps(C.doc)).hexdigest()
    assert g.validators == tuple(v.public for v in C.validators)
    assert g.validator_names[C.validators[1].public] == "node-1"
    assert g.policy == {"data": Decimal("0.5"), "annotation": Decimal("0.3"), "training": Decimal("0.2")}
    assert g.quorum == 3


def test_any_change_changes_the_chain_id() -> None:
    base = parse_genesis(C.doc).chain_id
    for path, value in [("name", "x"), ("created", "2026-11-21T12:00:01Z")]:
        d = copy.deepcopy(C.doc)
        d[path] = value
        assert parse_genesis(d).chain_id != base
    d = copy.deepcopy(C.doc)
    d["participants"][0]["roles"].remove("evaluator")
    assert parse_genesis(d).chain_id != base
    # Key order is not part of the document.
    assert parse_genesis({k: C.doc[k] for k in reversed(list(C.doc))}).chain_id == base


def mutate(path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(C.doc)
    *parents, last = path.split(".")
    node: Any = d
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return d


BAD = [
    ("v", 1, "v"),  # a version 1 genesis is not read (PROTOCOL.md 2)
    ("v", 3, "v"),
    ("v", True, "v"),
    ("name", "", "name"),
    ("created", "2026-11-21T12:00:00", "created"),
    ("created", "2026-11-21T12:00:00+01:00", "created"),
    ("validators", [], "validators"),
    ("validators.0.key", "AB" * 32, "validators[0].key"),
    ("validators.1.key", C.validators[0].public, "validators[1].key"),
    ("validators.0.key", "01" + "00" * 31, "validators[0].key"),  # small order
    ("validators.0.key", "ec" + "ff" * 31, "validators[0].key"),  # non-canonical
    ("organisations.0.admins", ["01" + "00" * 31], "organisations[0].admins"),
    ("participants.0.key", "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d", "participants[0].key"),
    ("validators.0.url", "", "validators[0].url"),
    ("validators.0.extra", 1, "validators[0].extra"),
    ("validators.0.name", ..., "validators[0].name"),
    ("organisations", {}, "organisations"),
    ("organisations.1.name", "org-a", "organisations[1].name"),
    ("organisations.0.admins", ["nope"], "organisations[0].admins"),
    ("participants.0.key", "x", "participants[0].key"),
    ("participants.1.key", C.alice.public, "participants[1].key"),
    ("participants.0.org", "org-z", "participants[0].org"),
    ("participants.0.roles", ["root"], "participants[0].roles"),
    ("policy.attribution.data", "0.6", "policy.attribution"),
    ("policy.attribution.data", 0.5, "policy.attribution"),
    ("policy.attribution.cash", "0", "policy.attribution.cash"),
    ("policy.attribution.training", ..., "policy.attribution.training"),
    ("extra", 1, ".extra"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD, ids=[f"{p}={v!r:.16}" for p, v, _ in BAD])
def test_invalid_genesis(path: str, value: Any, field: str) -> None:
    with pytest.raises(InputError) as ei:
        parse_genesis(mutate(path, value))
    e = ei.value
    assert e.code == ("bad_key" if field.endswith((".key", ".admins")) and not is_key(value) else "bad_genesis")
    assert e.details["field"] == field and field in e.message


def test_genesis_must_be_an_object() -> None:
    for bad in (None, [], "genesis"):
        with pytest.raises(InputError):
            parse_genesis(bad)


def test_admin_who_is_also_a_participant_keeps_both_roles() -> None:
    from ledger.state import ChainState

    d = copy.deepcopy(C.doc)
    d["participants"].append({"key": C.admin_a.public, "name": "ann", "org": "org-a", "roles": ["trainer"]})
    st = ChainState(parse_genesis(d))
    assert st.identities[C.admin_a.public].roles == {"admin", "trainer"}


def test_validator_may_also_be_a_participant() -> None:
    d = copy.deepcopy(C.doc)
    v = C.validators[0]
    d["participants"].append({"key": v.public, "name": "v", "org": "org-a", "roles": ["contributor"]})
    g = parse_genesis(d)
    assert v.public in g.validators
    assert key("x").public not in g.validators
