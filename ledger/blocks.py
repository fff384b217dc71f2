"""Block headers, votes, commit certificates and validator-set hashes (PROTOCOL.md 5, 6, 9.1)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .canonical import BLOCK_TAG, VALIDATORS_TAG, VOTE_TAG, jcs, signing_bytes, tagged_hash
from .errors import CertificateError, InputError, SignatureError
from .keys import SigningKey, is_hex, is_key, verify_bytes
from .values import parse_time

__all__ = [
    "Certificate",
    "Header",
    "certify_single",
    "make_header",
    "max_faulty",
    "quorum",
    "validators_hash",
    "verify_certificate",
    "vote_payload",
]

HEADER_VERSION = 2  # PROTOCOL.md 5
HEADER_FIELDS = ("v", "chain", "height", "prev", "time", "proposer", "count", "log_size", "log_root", "next_validators")


def validators_hash(keys: Iterable[str]) -> str:
    """PROTOCOL.md 9.1: ``hex(SHA-256(b"provledger/validators/v1\n" + JCS(K)))``, K the keys
    of the set (lowercase hex) sorted as strings. The set's own order plays no part."""
    return hashlib.sha256(VALIDATORS_TAG + b"\n" + jcs(sorted(keys))).hexdigest()


def quorum(n: int) -> int:
    """PROTOCOL.md 6: more than two thirds of ``n`` validators, by distinct key.

    This is the 2f + 1 of Tendermint's Algorithm 1 for n = 3f + 1, and the one quorum size
    everything uses: certificates, the genesis, the consensus core and the simulator.
    """
    return 2 * n // 3 + 1


def max_faulty(n: int) -> int:
    """f: the faulty validators ``n`` tolerates (any two quorums share at least f + 1, one honest)."""
    return n - quorum(n)


@dataclass(frozen=True, slots=True)
class Header:
    """A PROTOCOL.md 5 block header."""

    chain: str
    height: int
    prev: str
    time: str
    proposer: str
    count: int
    log_size: int
    log_root: str
    next_validators: str  # PROTOCOL.md 9.1: validators_hash of the set certifying height + 1
    v: int = HEADER_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "chain": self.chain,
            "height": self.height,
            "prev": self.prev,
            "time": self.time,
            "proposer": self.proposer,
            "count": self.count,
            "log_size": self.log_size,
            "log_root": self.log_root,
            "next_validators": self.next_validators,
        }

    @property
    def hash(self) -> str:
        """PROTOCOL.md 5: ``hex(SHA-256(b"provledger/block/v1\\n" + JCS(header)))``."""
        return tagged_hash(BLOCK_TAG, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Header:
        if type(d) is not dict or set(d) != set(HEADER_FIELDS):
            raise InputError(f"block header must have exactly the fields {', '.join(HEADER_FIELDS)}", code="bad_header")
        if type(d["v"]) is not int or d["v"] != HEADER_VERSION:
            raise InputError(f"header.v must be {HEADER_VERSION}", code="bad_header", field="header.v")
        for k in ("height", "count", "log_size"):
            if type(d[k]) is not int or d[k] < 0:
                raise InputError(f"header.{k} must be a non-negative integer", code="bad_header", field=f"header.{k}")
        for k in ("chain", "prev", "proposer", "log_root", "next_validators"):
            if not is_hex(d[k], 32):
                raise InputError(f"header.{k} must be 64 lowercase hex characters", code="bad_header", field=f"header.{k}")
        if parse_time(d["time"]) is None:
            raise InputError("header.time must be an RFC 3339 UTC time with a Z suffix", code="bad_header", field="header.time")
        return cls(**d)


def make_header(
    *,
    chain: str,
    height: int,
    prev: str,
    time: str,
    proposer: str,
    count: int,
    log_size: int,
    log_root: str,
    next_validators: str,
) -> Header:
    return Header(chain, height, prev, time, proposer, count, log_size, log_root, next_validators)


def vote_payload(chain: str, height: int, round: int, step: str, block: str) -> dict[str, Any]:
    """PROTOCOL.md 6: what a vote signs; ``block`` is the block hash or "" for nil."""
    return {"chain": chain, "height": height, "round": round, "step": step, "block": block}


@dataclass(frozen=True, slots=True)
class Certificate:
    """PROTOCOL.md 6: precommits for one block in one round from > 2/3 of the validators."""

    height: int
    round: int
    block: str
    votes: tuple[tuple[str, str], ...]  # (validator pubkey, sig hex)

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "round": self.round,
            "block": self.block,
            "votes": [{"validator": v, "sig": s} for v, s in self.votes],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Certificate:
        try:
            if type(d) is not dict or set(d) != {"height", "round", "block", "votes"}:
                raise ValueError("must have exactly height, round, block, votes")
            if type(d["height"]) is not int or type(d["round"]) is not int or d["round"] < 0:
                raise ValueError("height and round must be integers")
            if not is_hex(d["block"], 32):
                raise ValueError("block must be a block hash")
            if type(d["votes"]) is not list:
                raise ValueError("votes must be an array")
            votes = []
            for v in d["votes"]:
                if type(v) is not dict or set(v) != {"validator", "sig"}:
                    raise ValueError("each vote must be {validator, sig}")
                if not is_key(v["validator"]):  # ledger.keys.key_ok
                    raise ValueError(f"vote validator {str(v['validator'])[:16]}… is not an acceptable public key")
                if not is_hex(v["sig"], 64):
                    raise ValueError("each vote sig must be 128 lowercase hex characters")
                votes.append((v["validator"], v["sig"]))
        except (ValueError, KeyError, TypeError) as e:
            raise CertificateError(f"malformed certificate: {e}", code="bad_certificate") from e
        return cls(d["height"], d["round"], d["block"], tuple(votes))


def verify_certificate(
    cert: Certificate, *, chain: str, height: int, block_hash: str, validators: Sequence[str]
) -> None:
    """Check PROTOCOL.md 6: a valid commit certificate for ``block_hash`` at ``height``.

    1. It names this height and this block.
    2. Every vote is by a validator of ``validators`` — the set certifying ``height``
       (PROTOCOL.md 9.1; the caller finds it) — and its signature verifies as a precommit
       for the block in the certificate's round.
    3. More than two thirds of that set, counted by distinct key, signed.
    """
    if cert.height != height:
        raise CertificateError(f"certificate is for height {cert.height}, block is at {height}")
    if cert.block != block_hash:
        raise CertificateError(f"certificate is for block {cert.block[:16]}…, not {block_hash[:16]}…")
    members = set(validators)
    message = signing_bytes(VOTE_TAG, vote_payload(chain, height, cert.round, "precommit", block_hash))
    signed: set[str] = set()
    for key, sig in cert.votes:
        if key not in members:
            raise CertificateError(f"vote by {str(key)[:16]}…, which is not a validator of the set certifying height {height}")
        try:
            verify_bytes(key, message, sig)
        except SignatureError as e:
            raise CertificateError(f"precommit signature of validator {key[:16]}… does not verify") from e
        signed.add(key)
    need = quorum(len(members))
    if len(signed) < need:
        raise CertificateError(f"certificate has {len(signed)} distinct validator votes; {need} of {len(members)} are needed")


def certify_single(key: SigningKey, header: Header, round: int = 0) -> Certificate:
    """The single-validator commit path (PROTOCOL.md 6): one precommit is a certificate."""
    block = header.hash
    sig = key.sign(VOTE_TAG, vote_payload(header.chain, header.height, round, "precommit", block))
    return Certificate(header.height, round, block, ((key.public, sig),))
