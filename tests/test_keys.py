"""Ed25519 keys: generate, save (0600, no overwrite), load, sign, verify (PROTOCOL.md 1)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.canonical import RECORD_TAG, VOTE_TAG
from ledger.errors import InputError, SignatureError
from ledger.keys import SigningKey, is_hex, public_key, verify, verify_bytes


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
