"""The membership history a light verifier follows (PROTOCOL.md 9.4, docs/protocol.md 5).

    GET /v1/membership[?to=T]    {"to": T, "changes": [{header, hash, certificate,
                                  validators}, ...], "previous": {header, hash} | null}

``T`` defaults to the latest final height. The document is
``ledger.proofs.store_membership_doc`` of the node's store (whose derived table keeps the
validator set of every height): every height c < T whose header changes the validator
set, with its certificate and the new keys (sorted), and header T-1. With it and the genesis alone,
``ledger.light.verify_checkpoint`` accepts the checkpoint at T (the explorer's browser
check does the same in JavaScript).

Errors: 400 ``bad_request`` (``to`` not an integer of at least 1), 404 ``not_found`` (no
final block at ``to``: beyond the head, or no block yet).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ledger.proofs import store_membership_doc

from .api_schema import HEX64, MAX_INT, Checkpoint, errors

__all__ = ["Membership", "Proof", "install"]


class Previous(BaseModel):
    header: dict[str, Any]
    hash: str = Field(pattern=HEX64)


class Change(Previous):
    certificate: dict[str, Any]
    validators: list[str] = Field(description="The keys of the set certifying the next height, sorted", min_length=1)


class Membership(BaseModel):
    """PROTOCOL.md 9.4: the membership history of the checkpoint at height ``to``."""

    to: int = Field(ge=1)
    changes: list[Change]
    previous: Previous | None


class Proof(BaseModel):
    """``GET /v1/records/{id}/proof``: an RFC 9162 inclusion proof, its checkpoint and the
    checkpoint's membership history (docs/protocol.md 5)."""

    record: str = Field(pattern=HEX64)
    index: int = Field(ge=0)
    tree_size: int = Field(ge=1)
    path: list[str]
    checkpoint: Checkpoint
    membership: Membership


def install(app: FastAPI, node: Any) -> None:
    """Add ``GET /v1/membership`` to ``app``."""

    @app.get("/v1/membership", tags=["proofs"],
             responses={200: {"model": Membership, "description": "The membership history"}, **errors(400, 404)})
    async def get_membership(to: int | None = Query(None, ge=1, le=MAX_INT,
                                                    description="The checkpoint's height (default: the latest final one).")
                             ) -> Response:
        """What a verifier holding only the genesis needs to accept the checkpoint at `to`
        (PROTOCOL.md 9.4): each membership change below it with its certificate and new
        keys, and header `to` - 1."""
        return Response(orjson.dumps(store_membership_doc(node.store, to)), media_type="application/json")
