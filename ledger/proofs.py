"""Inclusion proofs against signed checkpoints (PROTOCOL.md 4, 6, 8).

A proof document is what ``GET /v1/records/{id}/proof`` returns, plus the record id::

    {"record": id, "index": i, "tree_size": n, "path": [hex, ...],
     "checkpoint": {"header": header, "hash": hex, "certificate": certificate},
     "membership": the membership history of the checkpoint's height (ledger.light)}

``verify_proof_doc`` checks it offline with nothing but a trusted genesis: the checkpoint
by light verification (PROTOCOL.md 9.4), then the inclusion path.
"""

from __future__ import annotations

from typing import Any

from . import merkle
from .blocks import Certificate, Header, verify_certificate
from .errors import InputError, LedgerError, NotFoundError, ProofError
from .genesis import Genesis
from .keys import is_hex
from .light import ValidatorSets, membership_doc
from .light import verify_checkpoint as light_verify
from .reader import StoreReader

__all__ = ["checkpoint_doc", "proof_doc", "store_membership_doc", "verify_checkpoint", "verify_proof_doc"]


def checkpoint_doc(header: Header, certificate: Certificate) -> dict[str, Any]:
    """PROTOCOL.md 8: ``{"header", "hash", "certificate"}``."""
    return {"header": header.to_dict(), "hash": header.hash, "certificate": certificate.to_dict()}


def store_membership_doc(store: Any, to: int | None = None, sets: ValidatorSets | None = None) -> dict[str, Any]:
    """The membership history (``ledger.light.membership_doc``) of a ``ledger.store.Store``
    up to height ``to`` (default: its head), with the validator sets of a ``StoreReader``
    of it unless ``sets`` gives them."""
    head = store.height()
    if to is None and head == 0:
        raise NotFoundError("no block has been committed yet", field="to")
    if to is not None and not 1 <= to <= head:
        raise NotFoundError(f"no final block at height {to}; the latest is {head}", field="to")

    def block_at(h: int) -> tuple[Header, str, Certificate] | None:
        found = store.block(h) if 1 <= h <= head else None
        return None if found is None else (found.header, found.hash, found.certificate)  # the stored hash

    return membership_doc(StoreReader(store) if sets is None else sets, block_at, head if to is None else to)


def proof_doc(store: Any, record_id: str, height: int | None = None, *, sets: ValidatorSets | None = None
              ) -> dict[str, Any]:
    """An inclusion proof of a committed record against the latest (or given) checkpoint,
    with the checkpoint's membership history (``sets``: the chain's validator sets, by
    default a ``StoreReader`` of ``store``; ``store_membership_doc``)."""
    index = store.record_index(record_id)
    if index is None:
        raise NotFoundError(f"no committed record {record_id}")
    block = store.head() if height is None else store.block(height)
    if block is None or block.header.log_size <= index:
        raise NotFoundError(f"record {record_id[:16]}… is not covered by that checkpoint")
    size = block.header.log_size
    return {
        "record": record_id,
        "index": index,
        "tree_size": size,
        "path": [h.hex() for h in store.inclusion_proof(index, size)],
        "checkpoint": checkpoint_doc(block.header, block.certificate),
        "membership": store_membership_doc(store, block.header.height, sets),
    }


def verify_checkpoint(doc: Any, genesis: Genesis) -> Header:
    """Check a checkpoint certified by the genesis validators: header form, its hash, and a
    valid certificate (PROTOCOL.md 6); that holds up to the first membership change.
    ``ledger.light.verify_checkpoint`` checks one of any height. Returns the header."""
    try:
        header = Header.from_dict(doc["header"])
        cert = Certificate.from_dict(doc["certificate"])
    except (KeyError, TypeError) as e:
        raise InputError("checkpoint must have header and certificate", code="bad_checkpoint") from e
    if header.chain != genesis.chain_id:
        raise ProofError(f"checkpoint is for chain {header.chain[:16]}…, the genesis gives {genesis.chain_id[:16]}…")
    if doc.get("hash") not in (None, header.hash):
        raise ProofError("checkpoint hash does not match its header")
    verify_certificate(cert, chain=genesis.chain_id, height=header.height, block_hash=header.hash, validators=genesis.validators)
    return header


def verify_proof_doc(doc: Any, genesis: Genesis, record_id: str | None = None) -> Header:
    """Verify an inclusion proof document offline; raises a LedgerError saying what failed.

    1. The checkpoint is certified by the set its membership history reaches from the
       genesis (PROTOCOL.md 9.4, ``ledger.light.verify_checkpoint``).
    2. The proof's tree size is the checkpoint's ``log_size``.
    3. The RFC 9162 path from the record id reaches the checkpoint's ``log_root``.
    """
    try:
        rid = record_id or doc["record"]
        if not is_hex(rid, 32):
            raise InputError("record id must be 64 lowercase hex characters", code="bad_hex")
        if record_id is not None and doc.get("record") not in (None, record_id):
            raise ProofError(f"proof is for record {doc['record'][:16]}…, not {record_id[:16]}…")
        if "membership" not in doc:
            raise InputError("the proof document has no membership history (PROTOCOL.md 9.4)",
                             code="bad_proof_document", field="membership")
        light_verify(genesis, doc["checkpoint"], doc["membership"])
        header = Header.from_dict(doc["checkpoint"]["header"])
        index, size = doc["index"], doc["tree_size"]
        if size != header.log_size:
            raise ProofError(f"proof is for tree size {size}, the checkpoint has {header.log_size}")
        path = [bytes.fromhex(h) for h in doc["path"]]
    except LedgerError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"malformed proof document: {e}", code="bad_proof_document") from e
    merkle.verify_inclusion(bytes.fromhex(rid), index, size, path, bytes.fromhex(header.log_root))
    return header
