"""Light verification of a checkpoint with the genesis alone (PROTOCOL.md 9.4).

The *membership history* up to height ``t`` is the document ``GET /v1/membership?to=t``
answers and every proof document carries (docs/protocol.md 5)::

    {"to": t,
     "changes": [{"header": header_c, "hash": hash_c, "certificate": cert_c,
                  "validators": [the new keys, sorted]}, ...],
     "previous": {"header": header_(t-1), "hash": hash_(t-1)} | null}

``changes`` lists, in increasing order, each height ``c < t`` whose header's
``next_validators`` differs from the hash of the set certifying ``c``. ``membership_doc``
builds it from a chain's validator sets (``ledger.reader``) and blocks; ``verify_checkpoint`` follows it from the genesis set
(steps 1-3 of 9.4) and returns the keys that certified the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, Protocol

from .blocks import Certificate, Header, validators_hash, verify_certificate
from .errors import (
    CertificateError,
    InputError,
    LedgerError,
    NotFoundError,
    ProofError,
    VerificationError,
)
from .genesis import Genesis
from .keys import is_key

__all__ = ["ValidatorSets", "membership_doc", "verify_checkpoint"]


def _parse_header(doc: Any, where: str) -> tuple[Header, str]:
    """``doc["header"]`` as a Header and its block hash, which ``hash``, when given, is."""
    if type(doc) is not dict or "header" not in doc:
        raise InputError(f"{where}: must be an object with a header", code="bad_membership", field=where)
    try:
        header = Header.from_dict(doc["header"])
    except InputError as e:
        raise InputError(f"{where}: {e.message}", code="bad_membership", field=where) from e
    block_hash = header.hash
    if "hash" in doc and doc["hash"] != block_hash:
        raise ProofError(f"{where}: hash does not match its header (PROTOCOL.md 5)",
                         code="bad_proof" if where == "checkpoint" else "bad_membership", field=where)
    return header, block_hash


def _parse_certificate(doc: Any, where: str) -> Certificate:
    try:
        return Certificate.from_dict(doc.get("certificate") if type(doc) is dict else None)
    except CertificateError as e:
        raise InputError(f"{where}: {e.message}", code="bad_membership", field=where) from e


def _parse_keys(value: Any, where: str) -> list[str]:
    """The new key set of a change: public keys, sorted as strings, each once, at least one."""
    if type(value) is not list or not value or not all(is_key(k) for k in value):
        raise InputError(f"{where}: must be a non-empty array of public keys", code="bad_membership", field=where)
    if any(a >= b for a, b in pairwise(value)):
        raise InputError(f"{where}: keys must be sorted and distinct", code="bad_membership", field=where)
    return list(value)


def _certified(cert: Certificate, header: Header, block_hash: str, keys: Sequence[str], where: str) -> None:
    try:
        verify_certificate(cert, chain=header.chain, height=header.height, block_hash=block_hash, validators=keys)
    except CertificateError as e:
        raise CertificateError(f"{where}: {e.message}", field=where) from e


def verify_checkpoint(genesis: Genesis, checkpoint: Any, membership: Any) -> list[str]:
    """Accept the checkpoint ``{"header", "hash", "certificate"}`` at height ``t`` given its
    membership history, or raise a ``LedgerError`` naming the entry that fails
    (``field``: ``checkpoint``, ``membership.changes[i]``, ``membership.previous``).
    Returns the keys of the set certifying ``t``, sorted.

    1. S = the genesis set; for each change c, in increasing order below t: the
       certificate verifies for header c against S, and ``validators_hash`` of the new
       keys is header c's ``next_validators`` (which differs from S's: it is a change);
       then S = the new keys.
    2. The checkpoint's certificate verifies against S.
    3. For t > 1: header t-1 hashes to header t's ``prev`` and its ``next_validators`` is
       ``validators_hash(S)``: a change left out of the history is caught here.
    """
    header, header_hash = _parse_header(checkpoint, "checkpoint")
    cert = _parse_certificate(checkpoint, "checkpoint")
    chain, t = genesis.chain_id, header.height
    if header.chain != chain:
        raise ProofError(f"checkpoint: for chain {header.chain[:16]}…, the genesis gives {chain[:16]}…",
                         code="wrong_chain", field="checkpoint")
    if type(membership) is not dict or set(membership) != {"to", "changes", "previous"}:
        raise InputError("membership: must be an object with exactly to, changes, previous", code="bad_membership",
                         field="membership")
    if membership["to"] != t or type(membership["to"]) is not int:
        raise VerificationError(f"membership: a history to height {membership['to']!r:.20}, the checkpoint is at {t}",
                                code="bad_membership", field="membership.to")
    changes = membership["changes"]
    if type(changes) is not list:
        raise InputError("membership.changes: must be an array", code="bad_membership", field="membership.changes")

    # Step 1: follow every change from the genesis set.
    keys = sorted(genesis.validators)
    last: Header | None = None
    for i, entry in enumerate(changes):
        where = f"membership.changes[{i}]"
        if type(entry) is not dict or set(entry) != {"header", "hash", "certificate", "validators"}:
            raise InputError(f"{where}: must have exactly header, hash, certificate, validators", code="bad_membership",
                             field=where)
        ch, ch_hash = _parse_header(entry, where)
        if ch.chain != chain:
            raise VerificationError(f"{where}: header of another chain", code="bad_membership", field=where)
        if not (last.height if last else 0) < ch.height < t:
            raise VerificationError(
                f"{where}: height {ch.height} is not above the previous change ({last.height if last else 'none'}) "
                f"and below the checkpoint ({t})", code="bad_membership", field=where)
        _certified(_parse_certificate(entry, where), ch, ch_hash, keys, where)
        new = _parse_keys(entry["validators"], f"{where}.validators")
        if validators_hash(new) != ch.next_validators:
            raise VerificationError(f"{where}: the new keys do not hash to header {ch.height}'s next_validators",
                                    code="bad_membership", field=where)
        if ch.next_validators == validators_hash(keys):
            raise VerificationError(f"{where}: header {ch.height} keeps the set that certified it: not a change",
                                    code="bad_membership", field=where)
        keys, last = new, ch

    # Step 2: the checkpoint, against the set reached.
    _certified(cert, header, header_hash, keys, "checkpoint")

    # Step 3: header t-1 links to the checkpoint and names the set reached.
    prev = membership["previous"]
    if t <= 1:
        if prev is not None:
            raise VerificationError("membership.previous: must be null for a checkpoint at height 1",
                                    code="bad_membership", field="membership.previous")
        if header.prev != chain:
            raise VerificationError("checkpoint: block 1's prev must be the chain id (PROTOCOL.md 5)",
                                    code="bad_membership", field="checkpoint")
        return keys
    if prev is None:
        raise VerificationError(f"membership.previous: header {t - 1} is missing", code="bad_membership",
                                field="membership.previous")
    if type(prev) is not dict or not set(prev) <= {"header", "hash"}:
        raise InputError("membership.previous: must be {header, hash}", code="bad_membership",
                         field="membership.previous")
    ph, ph_hash = _parse_header(prev, "membership.previous")
    if ph.height != t - 1 or ph_hash != header.prev:
        raise VerificationError(f"membership.previous: not the header of block {t - 1} that the checkpoint's prev names",
                                code="bad_membership", field="membership.previous")
    if last is not None and last.height == t - 1 and last != ph:
        raise VerificationError(f"membership.previous: differs from the change at height {t - 1}",
                                code="bad_membership", field="membership.previous")
    if ph.next_validators != validators_hash(keys):
        raise VerificationError(
            f"membership.previous: header {t - 1} names a validator set the history does not reach: "
            "a change is left out", code="bad_membership", field="membership.previous")
    return keys


class ValidatorSets(Protocol):
    """What the history is built from: ``ledger.reader``'s readers answer both."""

    def membership_changes(self, upto: int) -> list[int]:
        """The heights c < ``upto`` whose header changes the validator set."""
        ...

    def validators_at(self, height: int) -> Sequence[Any]:
        """The set certifying ``height``: validators with a ``key``."""
        ...


def membership_doc(sets: ValidatorSets, block_at: Callable[[int], tuple[Header, str, Certificate] | None],
                   to: int) -> dict[str, Any]:
    """The membership history up to height ``to`` (a final height: the caller checks) of
    a chain whose validator sets ``sets`` gives (a ``ledger.reader`` reader).
    ``block_at(h)`` is the final block h's header, hash and certificate, None beyond the head."""
    if to < 1:
        raise NotFoundError(f"no block at height {to}: the first block is 1", field="to")

    def block(h: int) -> tuple[Header, str, Certificate]:
        found = block_at(h)
        if found is None:
            raise LedgerError(f"block {h} is missing", code="storage_error")
        return found

    changes = []
    for c in sets.membership_changes(to):
        header, hash_c, cert = block(c)
        changes.append({"header": header.to_dict(), "hash": hash_c, "certificate": cert.to_dict(),
                        # PROTOCOL.md 9.1: header c names the set certifying c + 1
                        "validators": sorted(v.key for v in sets.validators_at(c + 1))})
    previous = None
    if to > 1:
        header, hash_p, _cert = block(to - 1)
        previous = {"header": header.to_dict(), "hash": hash_p}
    return {"to": to, "changes": changes, "previous": previous}

