"""The one exception tree of provledger.

Every error carries a stable machine ``code`` (used verbatim in HTTP error bodies and
``--json`` output), a human message naming the field and the rule that failed, and the
HTTP status a node answers it with (``http_status``, docs/protocol.md section 8)::

    LedgerError                      code: "ledger_error"                        400
    ├── InputError                   malformed input: JSON, fields, hex, sizes   400
    │   ├── RecordFormError          a record's envelope or body breaks PROTOCOL.md 3 / 3.1
    │   ├── NotFoundError            no such record, block, dataset              404
    │   ├── TooLargeError            a record, request or batch over its limit   413
    │   │   └── RecordTooLargeError  (also a RecordFormError)
    │   └── UnprocessableError       the record exists but the chain cannot      422
    │                                answer for it (lineage, attribution)
    ├── VerificationError            cryptographic checks                        400
    │   ├── SignatureError           a signature does not verify
    │   ├── ProofError               an RFC 9162 inclusion/consistency proof does not verify
    │   └── CertificateError         a commit certificate is not valid for its block
    ├── RuleError                    a well-formed record that the chain's state  422
    │                                forbids (role, replay, revoked signer, missing
    │                                reference, budget)
    ├── UnavailableError             the node cannot take it now: retry           503
    │                                (mempool full, shutting down)
    ├── CommitTimeoutError           not committed within the time asked for      504
    ├── StorageError                 the SQLite store is unusable or inconsistent 503
    └── PeerError                    a peer or node answered wrongly or not at all 400

Parsers and verifiers convert ``ValueError``, ``KeyError``, ``binascii.Error`` and
``nacl.exceptions.BadSignatureError`` into these with ``raise ... from e``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CertificateError",
    "CommitTimeoutError",
    "InputError",
    "LedgerError",
    "NotFoundError",
    "PeerError",
    "ProofError",
    "RecordFormError",
    "RecordTooLargeError",
    "RuleError",
    "SignatureError",
    "StorageError",
    "TooLargeError",
    "UnavailableError",
    "UnprocessableError",
    "VerificationError",
]


class LedgerError(Exception):
    """Base of every provledger error: ``code`` is stable, ``message`` is for people."""

    default_code = "ledger_error"
    http_status = 400  # the answer of a node's API (docs/protocol.md section 8)

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


class NotFoundError(InputError):
    default_code = "not_found"
    http_status = 404


class TooLargeError(InputError):
    default_code = "too_large"
    http_status = 413


class RecordTooLargeError(TooLargeError, RecordFormError):
    """A record's canonical envelope over its limit: a form error of the record, answered 413."""

    default_code = "record_too_large"


class UnprocessableError(InputError):
    default_code = "unprocessable"
    http_status = 422


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
    http_status = 422


class UnavailableError(LedgerError):
    default_code = "unavailable"
    http_status = 503


class CommitTimeoutError(LedgerError):
    default_code = "commit_timeout"
    http_status = 504


class StorageError(LedgerError):
    default_code = "storage_error"
    http_status = 503


class PeerError(LedgerError):
    default_code = "peer_error"
