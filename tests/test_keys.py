"""Ed25519 keys: generate, save (0600, no overwrite), load, sign, verify (PROTOCOL.md 1)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import RECORD_TAG, VOTE_TAG
from ledger.errors import InputError, SignatureError
from ledger.keys import (
    SigningKey,
    is_hex,
    is_key,
    key_ok,
    public_key,
    signature_ok,
    verify,
    verify_bytes,
)


def test_save_load_roundtrip_mode_0600(tmp_path: Path) -> None:
    k = SigningKey.generate()
    path = k.save(tmp_path / "sub" / "alice.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert text == k.seed().hex() + "\n" and is_hex(text.strip(), 32)
    loaded = SigningKey.load(path)
    assert loaded.public == k.public and loaded.seed() == k.seed()
    sig = loaded.sign(RECORD_TAG, {"a": 1})
    verify(k.public, RECORD_TAG, {"a": 1}, sig)


def test_mode_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = SigningKey.generate().save(tmp_path / "k.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = SigningKey.generate()
    first.save(path)
    with pytest.raises(InputError) as ei:
        SigningKey.generate().save(path)
    assert ei.value.code == "key_exists"
    assert SigningKey.load(path).public == first.public


@pytest.mark.parametrize("content", ["", "zz" * 32, "ab" * 31, "AB" * 32, "ab" * 33, "-----BEGIN PRIVATE KEY-----"])
def test_bad_key_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(InputError) as ei:
        SigningKey.load(path)
    assert ei.value.code == "bad_key_file" and str(path) in ei.value.message


def test_missing_or_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as ei:
        SigningKey.load(tmp_path / "none.key")
    assert ei.value.code == "bad_key_file"
    with pytest.raises(InputError):
        SigningKey.load(tmp_path)  # a directory


def test_seed_gives_the_rfc8032_public_key() -> None:
    # RFC 8032 7.1, TEST 1.
    k = SigningKey.from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert k.public == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert k.sign_bytes(b"") == ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                                 "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


def test_signature_covers_tag_newline_jcs() -> None:
    k = SigningKey.from_seed(bytes(range(32)))
    payload = {"b": [1, "x"], "a": None}
    sig = k.sign(VOTE_TAG, payload)
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(k.public)).verify(
        bytes.fromhex(sig), b"provledger/vote/v1\n" + rfc8785.dumps(payload))
    with pytest.raises(SignatureError):
        verify(k.public, RECORD_TAG, payload, sig)  # another tag
    with pytest.raises(SignatureError):
        verify(k.public, VOTE_TAG, {**payload, "a": 1}, sig)


def test_verify_rejects_malformed_inputs() -> None:
    k = SigningKey.generate()
    sig = k.sign_bytes(b"m")
    verify_bytes(k.public, b"m", sig)
    for bad_sig in ("", sig.upper(), sig[:-2], 5):
        with pytest.raises(SignatureError):
            verify_bytes(k.public, b"m", bad_sig)  # type: ignore[arg-type]
    for bad_key in ("", k.public.upper(), k.public[:-2], None):
        with pytest.raises(InputError) as ei:
            verify_bytes(bad_key, b"m", sig)  # type: ignore[arg-type]
        assert ei.value.code == "bad_key"
    with pytest.raises(InputError):
        public_key("ab" * 32 + "\n")


def test_is_hex() -> None:
    assert is_hex("ab" * 32, 32) and not is_hex("ab" * 32, 31) and not is_hex(b"ab" * 32, 32)
    assert not is_hex("AB" * 32, 32) and not is_hex(None, 32)


# --- strict verification (PROTOCOL.md 1; docs/protocol.md 1) ------------------------------------
SPECCHECK = Path(__file__).parent / "vectors" / "ed25519-speccheck" / "cases.json"
CASES = json.loads(SPECCHECK.read_text())
# docs/protocol.md 1: of the twelve cases provledger accepts none. Why each is refused:
# the key (not canonical, small order, or with a torsion part) or the signature (libsodium).
REFUSED_BY_KEY = {0, 1, 2, 3, 4, 5, 8, 9, 10, 11}
REFUSED_BY_SIGNATURE = {6, 7}  # a prime-order key, S >= L
SMALL_ORDER = [  # encodings of points of order 1, 2, 4 and 8 (canonical or not)
    "01" + "00" * 31,
    "ec" + "ff" * 30 + "7f",
    "00" * 32,
    "00" * 31 + "80",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "0100000000000000000000000000000000000000000000000000000000000080",
]
FORGED_SIGNER = "01" + "00" * 31  # the identity point: with the signature below, "signs" anything
FORGED_SIG = "01" + "00" * 63


def _case(i: int) -> tuple[bytes, bytes, bytes]:
    c = CASES[i]
    return bytes.fromhex(c["pub_key"]), bytes.fromhex(c["message"]), bytes.fromhex(c["signature"])


def test_speccheck_vectors_are_the_published_twelve() -> None:
    assert len(CASES) == 12 and all(set(c) == {"message", "pub_key", "signature"} for c in CASES)
    assert set(range(12)) == REFUSED_BY_KEY | REFUSED_BY_SIGNATURE


@pytest.mark.parametrize("i", range(12))
def test_speccheck_case_is_refused(i: int) -> None:
    key, msg, sig = _case(i)
    assert signature_ok(key, msg, sig) is False
    with pytest.raises((SignatureError, InputError)) as ei:
        verify_bytes(key.hex(), msg, sig.hex())
    if i in REFUSED_BY_KEY:
        assert not key_ok(key) and ei.value.code == "bad_key"
    else:
        assert key_ok(key) and ei.value.code == "bad_signature"


def test_libsodium_alone_accepts_only_case_3() -> None:
    """The published LibSodium row: ``crypto_sign_open`` accepts case 3 (a mixed-order key)
    and nothing else; provledger's key check is what refuses case 3."""
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    accepted = set()
    for i in range(12):
        key, msg, sig = _case(i)
        try:
            crypto_sign_open(sig + msg, key)
            accepted.add(i)
        except BadSignatureError:
            pass
    assert accepted == {3}


def test_cryptography_would_accept_the_weak_cases() -> None:
    """What strictness protects against: OpenSSL (``cryptography``) accepts cases 0-3 and 11,
    small-order keys among them."""
    accepted = set()
    for i in range(12):
        key, msg, sig = _case(i)
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(sig, msg)
            accepted.add(i)
        except (InvalidSignature, ValueError):
            pass
    assert {0, 1, 2, 3} <= accepted and not accepted & set(range(4, 11))


@pytest.mark.parametrize("hex_key", SMALL_ORDER)
def test_small_order_keys_are_refused(hex_key: str) -> None:
    assert not key_ok(bytes.fromhex(hex_key)) and not is_key(hex_key)
    with pytest.raises(InputError) as ei:
        public_key(hex_key)
    assert ei.value.code == "bad_key"


def test_the_small_order_forgery_does_not_verify() -> None:
    """Signer = identity point, R = identity, S = 0 satisfies [S]B = R + [k]A for every
    message: a lax verifier accepts it; the one verify refuses it."""
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(FORGED_SIGNER)).verify(bytes.fromhex(FORGED_SIG), b"anything")
    for msg in (b"anything", b"", RECORD_TAG + b"\n{}"):
        assert not signature_ok(bytes.fromhex(FORGED_SIGNER), msg, bytes.fromhex(FORGED_SIG))
        with pytest.raises(InputError) as ei:
            verify_bytes(FORGED_SIGNER, msg, FORGED_SIG)
        assert ei.value.code == "bad_key"


def test_non_canonical_encoding_of_a_good_key_is_refused() -> None:
    """For y < 19, y + p (still below 2^255) is a second, non-canonical encoding of the
    point with coordinate y: every such encoding, with either sign bit, is refused."""
    p = 2**255 - 19
    for y in range(19):
        for sign in (0, 1):
            enc = ((y + p) | (sign << 255)).to_bytes(32, "little")
            assert not key_ok(enc)


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=256), flip=st.integers(0, 511))
def test_every_generated_key_is_acceptable_and_its_signatures_verify(seed: bytes, msg: bytes, flip: int) -> None:
    k = SigningKey.from_seed(seed)
    key, sig = bytes.fromhex(k.public), bytes.fromhex(k.sign_bytes(msg))
    assert key_ok(key) and signature_ok(key, msg, sig)
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert not signature_ok(key, msg, bytes(bad))
