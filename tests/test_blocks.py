"""Block headers, votes and commit certificates (PROTOCOL.md 5, 6)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from factory import Consortium, key

from ledger.blocks import (
    Certificate,
    Header,
    certify_single,
    make_header,
    verify_certificate,
    vote_payload,
)
from ledger.canonical import VOTE_TAG
from ledger.errors import CertificateError, InputError

C4 = Consortium(validators=4)


def header(cons: Consortium = C4, height: int = 7) -> Header:
    return make_header(chain=cons.chain_id, height=height, prev="11" * 32, time="2026-11-21T12:00:01Z",
                       proposer=cons.validators[0].public, count=500, log_size=3500, log_root="22" * 32,
                       next_validators="44" * 32)


def sign_precommit(k: Any, hd: Header, round: int = 0, step: str = "precommit", block: str | None = None) -> dict[str, str]:
    payload = {"chain": hd.chain, "height": hd.height, "round": round, "step": step,
               "block": hd.hash if block is None else block}
    msg = b"provledger/vote/v1\n" + rfc8785.dumps(payload)
    return {"validator": k.public, "sig": k.sign_bytes(msg)}


def cert(hd: Header, votes: list[dict[str, str]], round: int = 0) -> Certificate:
    return Certificate.from_dict({"height": hd.height, "round": round, "block": hd.hash, "votes": votes})


def verify(c: Certificate, hd: Header, cons: Consortium = C4) -> None:
    verify_certificate(c, chain=cons.chain_id, height=hd.height, block_hash=hd.hash, validators=cons.genesis.validators)


# --- headers ---------------------------------------------------------------------------
def test_header_hash_recomputed_with_rfc8785() -> None:
    hd = header()
    doc = {"v": 2, "chain": C4.chain_id, "height": 7, "prev": "11" * 32, "time": "2026-11-21T12:00:01Z",
           "proposer": C4.validators[0].public, "count": 500, "log_size": 3500, "log_root": "22" * 32,
           "next_validators": "44" * 32}
    assert hd.to_dict() == doc
    assert hd.hash == hashlib.sha256(b"provledger/block/v1\n" + rfc8785.dumps(doc)).hexdigest()


@pytest.mark.parametrize(
    "field", ["chain", "height", "prev", "time", "proposer", "count", "log_size", "log_root", "next_validators"])
def test_every_header_field_changes_the_hash(field: str) -> None:
    d = header().to_dict()
    d[field] = {"height": 8, "count": 501, "log_size": 3501, "time": "2026-11-21T12:00:02Z"}.get(field, "33" * 32)
    assert Header.from_dict(d).hash != header().hash


def test_header_roundtrip_and_bad_forms() -> None:
    d = header().to_dict()
    assert Header.from_dict(d) == header()
    for bad in ({**d, "extra": 1}, {k: v for k, v in d.items() if k != "time"}, {**d, "height": -1},
                {**d, "count": "5"}, {**d, "prev": "XY" * 32}, {**d, "time": "2026-11-21T12:00:01"}, [d],
                {**d, "v": 1}, {**d, "v": True}, {**d, "next_validators": "AB" * 32},
                {k: v for k, v in d.items() if k != "next_validators"}):
        with pytest.raises(InputError) as ei:
            Header.from_dict(bad)
        assert ei.value.code == "bad_header"


# --- votes -----------------------------------------------------------------------------
def test_vote_payload_bytes() -> None:
    p = vote_payload("aa" * 32, 3, 1, "precommit", "bb" * 32)
    assert p == {"chain": "aa" * 32, "height": 3, "round": 1, "step": "precommit", "block": "bb" * 32}
    expected = (b'provledger/vote/v1\n{"block":"' + b"bb" * 32 + b'","chain":"' + b"aa" * 32
                + b'","height":3,"round":1,"step":"precommit"}')
    assert VOTE_TAG + b"\n" + rfc8785.dumps(p) == expected
    # A nil vote signs the empty string as the block.
    assert vote_payload("aa" * 32, 3, 0, "prevote", "")["block"] == ""


def test_certify_single_verifies_independently() -> None:
    c1 = Consortium()
    hd = header(c1)
    cert1 = certify_single(c1.validators[0], hd)
    assert cert1.height == hd.height and cert1.block == hd.hash and cert1.round == 0
    (v, sig), = cert1.votes
    msg = b"provledger/vote/v1\n" + rfc8785.dumps(vote_payload(c1.chain_id, hd.height, 0, "precommit", hd.hash))
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(v)).verify(bytes.fromhex(sig), msg)
    verify(cert1, hd, c1)  # with one validator, one precommit is a certificate


# --- certificates ------------------------------------------------------------------------
def test_certificate_with_quorum_verifies_and_roundtrips() -> None:
    hd = header()
    for n in (3, 4):
        c = cert(hd, [sign_precommit(k, hd) for k in C4.validators[:n]])
        verify(c, hd)
        assert Certificate.from_dict(c.to_dict()) == c


def test_vote_removed_below_quorum() -> None:
    hd = header()
    with pytest.raises(CertificateError) as ei:
        verify(cert(hd, [sign_precommit(k, hd) for k in C4.validators[:2]]), hd)
    assert "2" in ei.value.message and "3 of 4" in ei.value.message


def test_forged_signature() -> None:
    hd = header()
    votes = [sign_precommit(k, hd) for k in C4.validators[:3]]
    votes[1]["sig"] = votes[0]["sig"]  # a real signature, by someone else
    with pytest.raises(CertificateError) as ei:
        verify(cert(hd, votes), hd)
    assert C4.validators[1].public[:16] in ei.value.message


def test_non_validator_vote() -> None:
    hd = header()
    votes = [sign_precommit(k, hd) for k in (*C4.validators[:3], key("mallory"))]
    with pytest.raises(CertificateError) as ei:
        verify(cert(hd, votes), hd)
    assert "not a validator" in ei.value.message


@pytest.mark.parametrize("how", ["wrong-round", "prevote", "other-block", "other-height", "other-chain"])
def test_vote_for_something_else_fails(how: str) -> None:
    hd = header()
    votes = [sign_precommit(k, hd) for k in C4.validators[:3]]
    k = C4.validators[2]
    if how == "wrong-round":
        votes[2] = sign_precommit(k, hd, round=1)
    elif how == "prevote":
        votes[2] = sign_precommit(k, hd, step="prevote")
    elif how == "other-block":
        votes[2] = sign_precommit(k, hd, block="44" * 32)
    elif how == "other-height":
        votes[2] = sign_precommit(k, header(height=8), block=hd.hash)
    else:
        other = Header.from_dict({**hd.to_dict(), "chain": "55" * 32})
        votes[2] = sign_precommit(k, other, block=hd.hash)
    with pytest.raises(CertificateError):
        verify(cert(hd, votes), hd)


def test_certificate_for_a_later_round_needs_votes_of_that_round() -> None:
    hd = header()
    verify(cert(hd, [sign_precommit(k, hd, round=2) for k in C4.validators[:3]], round=2), hd)
    with pytest.raises(CertificateError):
        verify(cert(hd, [sign_precommit(k, hd, round=2) for k in C4.validators[:3]], round=0), hd)


def test_duplicate_votes_of_one_key_count_once() -> None:
    hd = header()
    a, b = (sign_precommit(k, hd) for k in C4.validators[:2])
    with pytest.raises(CertificateError) as ei:
        verify(cert(hd, [a, b, dict(a), dict(b)]), hd)
    assert "2 distinct" in ei.value.message


def test_certificate_for_another_block_or_height() -> None:
    hd = header()
    c = cert(hd, [sign_precommit(k, hd) for k in C4.validators])
    other = Header.from_dict({**hd.to_dict(), "count": 499})
    with pytest.raises(CertificateError):
        verify(c, other)
    with pytest.raises(CertificateError):
        verify_certificate(c, chain=C4.chain_id, height=8, block_hash=hd.hash, validators=C4.genesis.validators)


@pytest.mark.parametrize(("n", "quorum"), [(1, 1), (3, 3), (4, 3), (7, 5)])
def test_quorum_is_more_than_two_thirds(n: int, quorum: int) -> None:
    # quorum worked out by hand: the least q with 3q > 2n
    assert 3 * quorum > 2 * n and 3 * (quorum - 1) <= 2 * n
    cons = Consortium(validators=n)
    assert cons.genesis.quorum == quorum
    hd = header(cons)
    verify(cert(hd, [sign_precommit(k, hd) for k in cons.validators[:quorum]]), hd, cons)
    if quorum > 1:
        with pytest.raises(CertificateError):
            verify(cert(hd, [sign_precommit(k, hd) for k in cons.validators[: quorum - 1]]), hd, cons)
    with pytest.raises(CertificateError):
        verify(cert(hd, []), hd, cons)


@pytest.mark.parametrize("bad", [
    [], {"height": 1}, {"height": 1, "round": 0, "block": "00" * 32, "votes": {}},
    {"height": 1, "round": -1, "block": "00" * 32, "votes": []},
    {"height": 1, "round": 0, "block": "zz", "votes": []},
    {"height": 1, "round": 0, "block": "00" * 32, "votes": [{"validator": "a"}]},
    {"height": "1", "round": 0, "block": "00" * 32, "votes": []},
])
def test_malformed_certificate(bad: Any) -> None:
    with pytest.raises(CertificateError) as ei:
        Certificate.from_dict(bad)
    assert ei.value.code == "bad_certificate"


def test_malformed_vote_fields_fail_verification_not_crash() -> None:
    hd = header()
    votes = [sign_precommit(k, hd) for k in C4.validators[:3]]
    votes[0]["sig"] = "short"
    with pytest.raises(CertificateError):
        verify(cert(hd, votes), hd)
    votes[0] = {"validator": 5, "sig": "00" * 64}  # type: ignore[dict-item]
    with pytest.raises(CertificateError):
        verify(cert(hd, votes), hd)


def test_certificate_vote_by_a_small_order_key_is_malformed() -> None:
    """docs/protocol.md 1: a vote's validator key is checked where it is read."""
    hd = header()
    votes = [sign_precommit(k, hd) for k in C4.validators[:3]]
    for bad in ("01" + "00" * 31, "ec" + "ff" * 31, "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d"):
        forged = [*votes, {"validator": bad, "sig": "01" + "00" * 63}]
        with pytest.raises(CertificateError) as ei:
            cert(hd, forged)
        assert ei.value.code == "bad_certificate" and "acceptable public key" in ei.value.message
