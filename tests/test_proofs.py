"""Inclusion proof documents against certified checkpoints (PROTOCOL.md 4, 6, 8)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from factory import Consortium

from ledger.errors import CertificateError, InputError, LedgerError, ProofError
from ledger.genesis import parse_genesis
from ledger.proofs import checkpoint_doc, proof_doc, verify_checkpoint, verify_proof_doc
from ledger.store import Store


@pytest.fixture(scope="module")
def docs(chain4: Any) -> dict[str, Any]:
    """A proof of every record against the head and against the block that holds it."""
    out: dict[str, Any] = {"head": {}, "own": {}}
    with Store(chain4.path) as store:
        for rid in chain4.all_ids:
            out["head"][rid] = proof_doc(store, rid)
            out["own"][rid] = proof_doc(store, rid, height=chain4.where(rid)[0])
        out["cp"] = checkpoint_doc(store.head().header, store.head().certificate)  # type: ignore[union-attr]
    return out


def test_every_record_proves_against_head_and_its_own_block(chain4: Any, docs: dict[str, Any]) -> None:
    g = chain4.cons.genesis
    for n, rid in enumerate(chain4.all_ids):
        head = docs["head"][rid]
        assert (head["record"], head["index"], head["tree_size"]) == (rid, n, 20)
        assert verify_proof_doc(head, g, rid).height == 6
        height = chain4.where(rid)[0]
        own = docs["own"][rid]
        assert verify_proof_doc(own, g).height == height
        assert own["checkpoint"]["hash"] == chain4.hashes[height - 1]


def test_checkpoint_doc_verifies(chain4: Any, docs: dict[str, Any]) -> None:
    header = verify_checkpoint(docs["cp"], chain4.cons.genesis)
    assert header.hash == chain4.hashes[-1] and header.log_size == 20


def _first(docs: dict[str, Any], chain4: Any) -> dict[str, Any]:
    return copy.deepcopy(docs["head"][chain4.ids[1][2]])


@pytest.mark.parametrize("how", ["flip-path", "drop-path", "extra-path", "index", "tree-size", "root", "record"])
def test_tampered_proof_fails(chain4: Any, docs: dict[str, Any], how: str) -> None:
    doc = _first(docs, chain4)
    if how == "flip-path":
        p = doc["path"][1]
        doc["path"][1] = ("0" if p[0] != "0" else "1") + p[1:]
    elif how == "drop-path":
        doc["path"].pop()
    elif how == "extra-path":
        doc["path"].append("00" * 32)
    elif how == "index":
        doc["index"] += 1
    elif how == "tree-size":
        doc["tree_size"] -= 1
    elif how == "root":
        doc["checkpoint"]["header"]["log_root"] = "00" * 32
    else:
        doc["record"] = chain4.ids[1][3]
    with pytest.raises(LedgerError) as ei:
        verify_proof_doc(doc, chain4.cons.genesis)
    assert isinstance(ei.value, (ProofError, CertificateError))


def test_proof_for_another_record_is_refused(chain4: Any, docs: dict[str, Any]) -> None:
    doc = _first(docs, chain4)
    with pytest.raises(ProofError):
        verify_proof_doc(doc, chain4.cons.genesis, chain4.ids[0][0])


def test_wrong_genesis(chain4: Any, docs: dict[str, Any]) -> None:
    other = copy.deepcopy(chain4.cons.doc)
    other["name"] = "impostor"
    with pytest.raises(ProofError):
        verify_proof_doc(_first(docs, chain4), parse_genesis(other))
    # Same chain id would need the same genesis; a one-validator genesis of the same people fails too.
    with pytest.raises(LedgerError):
        verify_proof_doc(_first(docs, chain4), Consortium().genesis)


def test_uncertified_checkpoint(chain4: Any, docs: dict[str, Any]) -> None:
    doc = _first(docs, chain4)
    doc["checkpoint"]["certificate"]["votes"] = doc["checkpoint"]["certificate"]["votes"][:2]
    with pytest.raises(CertificateError):
        verify_proof_doc(doc, chain4.cons.genesis)
    doc = _first(docs, chain4)
    doc["checkpoint"]["hash"] = "00" * 32
    with pytest.raises(ProofError):
        verify_proof_doc(doc, chain4.cons.genesis)


@pytest.mark.parametrize("bad", [{}, {"record": "x"}, {"record": "ab" * 32}, {"record": "ab" * 32, "checkpoint": 1}])
def test_malformed_documents_are_input_errors(chain4: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        verify_proof_doc(bad, chain4.cons.genesis)


def test_proof_doc_for_unknown_or_uncovered_record(chain4: Any) -> None:
    with Store(chain4.path) as store:
        with pytest.raises(InputError) as ei:
            proof_doc(store, "00" * 32)
        assert ei.value.code == "not_found"
        with pytest.raises(InputError):
            proof_doc(store, chain4.ids[5][0], height=2)  # block 2 does not cover a block-6 record
