"""The one exception tree of provledger.

Every error carries a stable machine ``code`` (used verbatim in HTTP error bodies and
``--json`` output) and a human message naming the field and the rule that failed::

    LedgerError                      code: "ledger_error"
    ├── InputError                   malformed input: JSON, fields, hex, sizes
    │   └── RecordFormError          a record's envelope or body breaks PROTOCOL.md 3 / 3.1
    ├── VerificationError            cryptographic checks
    │   ├── SignatureError           a signature does not verify
    │   ├── ProofError               an RFC 9162 inclusion/consistency proof does not verify
    │   └── CertificateError         a commit certificate is not valid for its block
    ├── RuleError                    a well-formed record that the chain's state forbids
    │                                (role, replay, revoked signer, missing reference, budget)
    ├── StorageError                 the SQLite store is unusable or inconsistent
    └── PeerError                    a peer or node answered wrongly or not at all

Parsers and verifiers convert ``ValueError``, ``KeyError``, ``binascii.Error`` and
``nacl.exceptions.BadSignatureError`` into these with ``raise ... from e``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CertificateError",
    "InputError",
    "LedgerError",
    "PeerError",
    "ProofError",
    "RecordFormError",
    "RuleError",
    "SignatureError",
    "StorageError",
    "VerificationError",
]


class LedgerError(Exception):
    """Base of every provledger error: ``code`` is stable, ``message`` is for people."""

    default_code = "ledger_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        for k, v in self.details.items():
            if v is not None:
                out[k] = v
        return out

    def __str__(self) -> str:
        return self.message


class InputError(LedgerError):
    default_code = "invalid_input"


class RecordFormError(InputError):
    default_code = "invalid_record"


class VerificationError(LedgerError):
    default_code = "verification_failed"


class SignatureError(VerificationError):
    default_code = "bad_signature"


class ProofError(VerificationError):
    default_code = "bad_proof"


class CertificateError(VerificationError):
    default_code = "bad_certificate"


class RuleError(LedgerError):
    default_code = "rule_violation"


class StorageError(LedgerError):
    default_code = "storage_error"


class PeerError(LedgerError):
    default_code = "peer_error"
