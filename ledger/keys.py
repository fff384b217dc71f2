"""Ed25519 keys (RFC 8032): generate, save, load and sign with ``cryptography``; check keys
and verify signatures with libsodium (PyNaCl), strictly (PROTOCOL.md 1, docs/protocol.md 1).

``key_ok`` is the one check of a public key and ``signature_ok`` the one verification;
every other check in provledger (records, certificates, votes, proposals, the verifier
processes, the audit) goes through them. A public key is accepted only if it is the
canonical encoding of a point of the prime-order subgroup other than the identity
(``crypto_core_ed25519_is_valid_point``: no small-order, mixed-order or non-canonical key).
A signature is accepted only if libsodium's ``crypto_sign_open`` accepts it: S < L, R
canonical and not of small order, and the cofactorless equation [S]B = R + [k]A holds.

A key file holds the 32-byte private seed as 64 lowercase hex characters and a newline,
written with mode 0600; saving refuses to overwrite. Public keys travel as hex
(PROTOCOL.md 1). Every signature is over ``canonical.signing_bytes(tag, payload)``.
"""

from __future__ import annotations

import binascii
import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign_open
from nacl.exceptions import BadSignatureError

from .canonical import signing_bytes
from .errors import InputError, SignatureError

__all__ = ["SigningKey", "is_hex", "is_key", "key_ok", "public_key", "signature_ok", "verify", "verify_bytes"]

_HEX = re.compile("[0-9a-f]*").fullmatch


def is_hex(value: object, nbytes: int) -> bool:
    """True if ``value`` is a lowercase hex string of exactly ``nbytes`` bytes."""
    return type(value) is str and len(value) == 2 * nbytes and _HEX(value) is not None


def key_ok(key: bytes) -> bool:
    """True if ``key`` is an acceptable Ed25519 public key: 32 bytes, the canonical encoding
    of a point on the curve, in the prime-order subgroup and not of small order."""
    return type(key) is bytes and len(key) == 32 and _point_ok(key)


@lru_cache(maxsize=8192)  # the subgroup check costs about a verification; keys repeat
def _point_ok(key: bytes) -> bool:
    return crypto_core_ed25519_is_valid_point(key)


def signature_ok(key: bytes, message: bytes, sig: bytes) -> bool:
    """The one Ed25519 verification of provledger: does ``sig`` by ``key`` verify over
    ``message``? False for an unacceptable key (``key_ok``) or signature."""
    if len(sig) != 64 or not key_ok(key):
        return False
    try:
        crypto_sign_open(sig + message, key)
    except BadSignatureError:
        return False
    return True


def is_key(value: object) -> bool:
    """True if ``value`` is a public key in hex (PROTOCOL.md 1) that ``key_ok`` accepts."""
    return is_hex(value, 32) and key_ok(bytes.fromhex(value))  # type: ignore[arg-type]


def public_key(hex_key: str) -> bytes:
    """Parse a public key from hex; raises InputError (code ``bad_key``)."""
    if not is_hex(hex_key, 32):
        raise InputError(f"public key must be 64 lowercase hex characters, got {hex_key!r:.80}", code="bad_key")
    return _public_key(hex_key)


@lru_cache(maxsize=8192)  # a chain has few signers; a failure raises and is not cached
def _public_key(hex_key: str) -> bytes:
    key = bytes.fromhex(hex_key)
    if not key_ok(key):
        raise InputError(
            f"not an acceptable Ed25519 public key (non-canonical, small order or outside the prime-order subgroup): {hex_key}",
            code="bad_key",
        )
    return key


def verify_bytes(hex_key: str, message: bytes, sig_hex: str) -> None:
    """Verify a signature over raw ``message``: raises SignatureError, or InputError (code
    ``bad_key``) when the key itself is unacceptable (``public_key``)."""
    if not is_hex(sig_hex, 64):
        raise SignatureError("signature must be 128 lowercase hex characters", code="bad_signature")
    if not signature_ok(public_key(hex_key), message, bytes.fromhex(sig_hex)):
        raise SignatureError("signature does not verify", code="bad_signature")


def verify(hex_key: str, tag: bytes, payload: Any, sig_hex: str) -> None:
    """Verify ``sig_hex`` by ``hex_key`` over ``signing_bytes(tag, payload)``."""
    verify_bytes(hex_key, signing_bytes(tag, payload), sig_hex)


def _check_private(p: Path, mode: int) -> None:
    """A key file must be readable by its owner alone (mode 0600 or 0400, as ``save``
    writes it): one that the group or others may read or write is refused, as ssh refuses
    such a private key."""
    if mode & 0o077:
        raise InputError(f"key file {p} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
                         f"run `chmod 600 {p}`", code="key_permissions")


@dataclass(frozen=True, eq=False)
class SigningKey:
    """An Ed25519 private key and its public key hex."""

    _key: Ed25519PrivateKey
    public: str

    @classmethod
    def generate(cls) -> SigningKey:
        return cls._from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Deterministic key from a 32-byte seed (test vectors, fixtures)."""
        return cls._from_private(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def _from_private(cls, key: Ed25519PrivateKey) -> SigningKey:
        return cls(key, key.public_key().public_bytes_raw().hex())

    def seed(self) -> bytes:
        return self._key.private_bytes_raw()

    def sign_bytes(self, message: bytes) -> str:
        return self._key.sign(message).hex()

    def sign(self, tag: bytes, payload: Any) -> str:
        """Hex signature over ``signing_bytes(tag, payload)``."""
        return self.sign_bytes(signing_bytes(tag, payload))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the seed to ``path`` with mode 0600; refuses to overwrite an existing file."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as e:
            raise InputError(f"{p} already exists; refusing to overwrite a key", code="key_exists") from e
        with os.fdopen(fd, "w") as f:
            f.write(self.seed().hex() + "\n")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Read a key file; refuses one that others may read (docs/protocol.md section 7)."""
        p = Path(path)
        try:
            with open(p) as f:
                mode = os.fstat(f.fileno()).st_mode
                text = f.read().strip()
        except OSError as e:
            raise InputError(f"cannot read key file {p}: {e.strerror}", code="bad_key_file") from e
        try:
            if not is_hex(text, 32):
                raise ValueError("not 64 hex characters")
            key = cls.from_seed(binascii.unhexlify(text))
        except ValueError as e:
            raise InputError(f"{p} is not a provledger key file (64 hex characters of Ed25519 seed)", code="bad_key_file") from e
        _check_private(p, mode)
        return key
