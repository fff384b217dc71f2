"""The consortium as the node's committed state has it (PROTOCOL.md 9; docs/protocol.md 8):

    GET /v1/validators[?height=H]          {"height", "hash", "validators": [{"name", "key", "url"}]}
                                           the set certifying H (default: the next height)
    GET /v1/proposals[?status=S]           {"proposals": [{"id", "action", "proposer", "org", "expires",
                                           "approvals", "status", "adopted_at"}]}, in log order
    GET /v1/organisations                  {"organisations": [{"name", "admins"}]}: those in force

A set of a past height is the store's (``ledger.reader.StoreReader.validators_at``), the
next height's is the state's after the last final block. Errors: 400 ``bad_request`` for
a height that is not an integer 1..2^63-1 or an unknown status; 404 ``not_found`` for a
height past the next one. Governance records themselves go through ``POST /v1/records``,
and a refusal comes back there with its code (``bad_pop``, ``already_approved``, ...).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ledger.blocks import validators_hash
from ledger.errors import NotFoundError
from ledger.reader import StoreReader

from .api_schema import HEX64, MAX_INT, errors

__all__ = ["Organisations", "Proposals", "ValidatorSet", "install"]

STATUSES = ("open", "adopted", "expired")


class ValidatorEntry(BaseModel):
    name: str
    key: str = Field(pattern=HEX64)
    url: str


class ValidatorSet(BaseModel):
    """The set certifying ``height`` (PROTOCOL.md 9.1) in set order, and its validators_hash."""

    height: int = Field(ge=1)
    hash: str = Field(pattern=HEX64)
    validators: list[ValidatorEntry]


class ProposalView(BaseModel):
    """A network.propose record (its id) and what became of it (PROTOCOL.md 9.2)."""

    id: str = Field(pattern=HEX64)
    action: dict[str, Any]
    proposer: str = Field(pattern=HEX64)
    org: str
    expires: int
    approvals: list[str] = Field(description="Approving organisations, the proposer's first")
    status: Literal["open", "adopted", "expired"]
    adopted_at: int | None = Field(description="Log index of the record that adopted it")


class Proposals(BaseModel):
    proposals: list[ProposalView]


class Organisation(BaseModel):
    name: str
    admins: list[str] = Field(description="Unrevoked admin keys")


class Organisations(BaseModel):
    organisations: list[Organisation]


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _entries(validators: Any) -> list[dict[str, str]]:
    return [{"name": v.name, "key": v.key, "url": v.url} for v in validators]


def validator_set(node: Any, height: int | None) -> dict[str, Any]:
    """The answer of ``GET /v1/validators``."""
    state = node.ledger.state  # one committed state: the set after its last block
    head = node.store.height()
    if height is None or height == head + 1:
        entries = _entries(state.validators)
        return {"height": head + 1, "hash": validators_hash(v["key"] for v in entries), "validators": entries}
    if height > head + 1:
        raise NotFoundError(f"no block at height {height - 1} yet: the set certifying height {height} is not "
                            f"known (the next height is {head + 1})")
    entries = _entries(StoreReader(node.store).validators_at(height))
    return {"height": height, "hash": validators_hash(v["key"] for v in entries), "validators": entries}


def proposal_view(pid: str, p: Any) -> dict[str, Any]:
    return {"id": pid, "action": p.action, "proposer": p.proposer, "org": p.org, "expires": p.expires,
            "approvals": list(p.approvals), "status": p.status, "adopted_at": p.adopted_at}


def organisations(state: Any) -> list[dict[str, Any]]:
    """The organisations in force with their unrevoked admins (PROTOCOL.md 3.1)."""
    return [{"name": name, "admins": sorted(k for k, i in state.identities.items() if state.is_admin_of(k, name))}
            for name in state.organisations]


def install(app: FastAPI, node: Any) -> None:
    """Add ``GET /v1/validators``, ``/v1/proposals`` and ``/v1/organisations`` to ``app``."""

    @app.get("/v1/validators", tags=["consortium"],
             responses={200: {"model": ValidatorSet, "description": "The validator set"}, **errors(400, 404)})
    async def get_validators(height: int | None = Query(
            None, ge=1, le=MAX_INT, description="The height the set certifies (default: the next height).")) -> Response:
        """The validator set certifying `height` (PROTOCOL.md 9.1): genesis order, an added
        validator appended, a replaced one in its place."""
        return _json(validator_set(node, height))

    @app.get("/v1/proposals", tags=["consortium"],
             responses={200: {"model": Proposals, "description": "The proposals"}, **errors(400)})
    async def get_proposals(status: str | None = Query(
            None, description="Only proposals in this state.", json_schema_extra={"enum": list(STATUSES)},
            pattern="^(open|adopted|expired)$")) -> Response:
        """Every network.propose on the chain, with its approvals and state."""
        props = [proposal_view(pid, p) for pid, p in node.ledger.state.proposals.items()]
        return _json({"proposals": [p for p in props if status is None or p["status"] == status]})

    @app.get("/v1/organisations", tags=["consortium"],
             responses={200: {"model": Organisations, "description": "The organisations in force"}})
    async def get_organisations() -> Response:
        """The organisations in force and their admins."""
        return _json({"organisations": organisations(node.ledger.state)})
