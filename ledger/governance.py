"""Governance actions and proofs of possession (PROTOCOL.md 9.2, 9.3).

An action's *form* is checked here (``parse_action``, the same check a ``network.propose``
record body gets in ``ledger.records``); whether it is valid at a point of the log —
names, keys, the last validator — is ``ledger.state``'s. A ``pop`` proves that whoever
proposes a validator key holds it: a signature by that key over its own payload.
"""

from __future__ import annotations

import copy
from typing import Any

from .canonical import POP_TAG, signing_bytes
from .errors import InputError, RecordFormError
from .keys import SigningKey, is_hex, is_key, signature_ok
from .records import ACTION_OPS, check_action

__all__ = ["ACTION_OPS", "POP_TAG", "make_pop", "parse_action", "pop_ok", "pop_payload"]


def pop_payload(chain_id: str, key: str) -> dict[str, Any]:
    """PROTOCOL.md 9.3: what a proof of possession signs, ``{"chain", "key"}``."""
    return {"chain": chain_id, "key": key}


def make_pop(signing_key: SigningKey, chain_id: str) -> str:
    """The ``pop`` of ``signing_key`` for this chain: its signature over its own payload."""
    return signing_key.sign(POP_TAG, pop_payload(chain_id, signing_key.public))


def pop_ok(chain_id: str, key: str, pop: str) -> bool:
    """True when ``pop`` is a signature by ``key`` with tag ``provledger/pop/v1`` over
    ``{"chain": chain_id, "key": key}`` (PROTOCOL.md 9.3)."""
    if not is_key(key) or not is_hex(pop, 64):
        return False
    return signature_ok(bytes.fromhex(key), signing_bytes(POP_TAG, pop_payload(chain_id, key)), bytes.fromhex(pop))


def parse_action(obj: Any) -> dict[str, Any]:
    """Check that ``obj`` has the strict form of one of the six actions of PROTOCOL.md 9.3
    and return a copy of it. Raises InputError with code ``bad_action`` naming the field."""
    try:
        check_action(obj, "action")
    except RecordFormError as e:
        raise InputError(e.message, code="bad_action", field=e.details.get("field")) from e
    return copy.deepcopy(obj)
