"""The one place that turns payloads into the bytes that are signed or hashed.

PROTOCOL.md 1: canonical form is RFC 8785 (JCS); every signature covers
``TAG + b"\\n" + JCS(payload)``; hashes are SHA-256, shown as lowercase hex.

``jcs`` takes a fast path through ``orjson`` when the value holds only what signed content
may hold (PROTOCOL.md 1: objects, arrays, strings, integers within +-(2**53-1), booleans,
null) and every object key sorts the same by code point as by UTF-16 code unit (RFC 8785
3.2.3). On that domain orjson's compact output with sorted keys is byte-identical to
RFC 8785: strings are escaped as ECMAScript ``JSON.stringify`` does (RFC 8785 3.2.2.2) and
integers print as in 3.2.2.3. Everything else (floats, exotic keys) goes to the reference
encoder ``rfc8785``. ``tests/test_canonical.py`` holds both paths to the published vectors
and to each other with hypothesis.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import rfc8785

from .errors import InputError

__all__ = [
    "BLOCK_TAG",
    "GENESIS_TAG",
    "MAX_SAFE_INTEGER",
    "POP_TAG",
    "RECORD_TAG",
    "VALIDATORS_TAG",
    "VOTE_TAG",
    "jcs",
    "jcs_checked",
    "jcs_part",
    "key_in_domain",
    "sha256_hex",
    "signing_bytes",
    "tagged_hash",
]

# PROTOCOL.md domain tags: a signature or hash made for one purpose never serves another.
RECORD_TAG = b"provledger/record/v1"  # PROTOCOL.md 3
BLOCK_TAG = b"provledger/block/v1"  # PROTOCOL.md 5
VOTE_TAG = b"provledger/vote/v1"  # PROTOCOL.md 6
GENESIS_TAG = b"provledger/genesis/v1"  # PROTOCOL.md 2
VALIDATORS_TAG = b"provledger/validators/v1"  # PROTOCOL.md 9.1
POP_TAG = b"provledger/pop/v1"  # PROTOCOL.md 9.3
# Tags this implementation adds (docs/protocol.md): consensus proposals and peer messages.
PROPOSAL_TAG = b"provledger/proposal/v1"

MAX_SAFE_INTEGER = 2**53 - 1  # PROTOCOL.md 1: integers within +-(2^53 - 1)
_SORT = orjson.OPT_SORT_KEYS


def key_in_domain(key: str) -> bool:
    """True when an object key sorts the same by code point as by UTF-16 code unit in any
    company (RFC 8785 3.2.3). That order differs only between characters above U+FFFF and
    ones in U+E000..U+FFFF, so a key with no character at or above U+E000 is safe; ASCII
    keys (the usual) always are."""
    return key.isascii() or not key or max(key) < "\ue000"


def _fast_ok(value: Any) -> bool:
    """True when ``value`` lies in the domain where orjson's output equals RFC 8785's."""
    stack = [value]
    pop = stack.pop
    push = stack.append
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is dict:
            for k, item in v.items():
                if type(k) is not str or not key_in_domain(k):
                    return False
                t = type(item)
                if t is dict or t is list:
                    push(item)
                elif t is int:
                    if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                        return False
                elif not (t is str or t is bool or item is None):
                    return False
        elif t is list:
            stack.extend(v)
        elif t is int:
            if not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
                return False
        else:
            return False
    return True


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of ``value``."""
    return jcs_checked(value)[0]


def jcs_checked(value: Any, *, in_domain: bool = False) -> tuple[bytes, bool]:
    """``(jcs(value), fast)``: ``fast`` says the bytes came from the orjson path, which then
    also holds for every part of ``value`` (see ``jcs_part``). ``in_domain``: the caller has
    already checked that ``value`` lies in the fast path's domain (a schema that admits
    nothing else, as ``records.parse_record``'s does), so the walk is skipped."""
    if in_domain or _fast_ok(value):
        try:
            return orjson.dumps(value, option=_SORT), True
        except (TypeError, orjson.JSONEncodeError):  # e.g. lone surrogates in a string
            pass
    return _reference(value), False


def jcs_part(value: Any, *, fast: bool) -> bytes:
    """``jcs(value)`` where ``value`` is made of parts of a value that ``jcs_checked`` found
    ``fast``: the domain walk is not repeated (every key and leaf was already checked)."""
    if fast:
        return orjson.dumps(value, option=_SORT)
    return jcs(value)


def _reference(value: Any) -> bytes:
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise InputError(f"value cannot be canonicalized (RFC 8785): {e}", code="not_canonicalizable") from e


def signing_bytes(tag: bytes, payload: Any) -> bytes:
    """The exact bytes a signature covers: ``TAG + b"\\n" + JCS(payload)`` (PROTOCOL.md 1)."""
    return tag + b"\n" + jcs(payload)


def tagged_hash(tag: bytes, payload: Any) -> str:
    """``hex(SHA-256(TAG + b"\\n" + JCS(payload)))``: chain id (PROTOCOL.md 2), block hash (5)."""
    return hashlib.sha256(signing_bytes(tag, payload)).hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
