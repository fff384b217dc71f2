"""The consortium as the node's committed state has it (PROTOCOL.md 9; docs/protocol.md 8):

    GET /v1/validators[?height=H]          {"height", "hash", "validators": [{"name", "key", "url"}]}
                                           the set certifying H (default: the next height)
    GET /v1/proposals[?status=S]           {"proposals": [{"id", "action", "proposer", "org", "height",
                                           "expires", "reason", "approvals", "status", "adopted_at"}]},
                                           in log order
    GET /v1/organisations                  {"organisations": [{"name", "admins"}]}: those in force

Every answer is read from one committed state (``ledger.state.ChainState`` after the last
final block): it keeps the set of each height, and a proposal's status is the one a record
of the next height would meet. Errors: 400 ``bad_request`` for
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
    height: int = Field(description="The proposal's own height")
    expires: int = Field(description="The last height at which approvals count")
    reason: str
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


def validator_set(state: Any, height: int | None) -> dict[str, Any]:
    """The answer of ``GET /v1/validators`` from one committed state: the sets of every
    height up to the next one (PROTOCOL.md 9.1)."""
    nxt = state.height + 1  # the state is after the records of block ``state.height``
    if height is None:
        height = nxt
    elif height > nxt:
        raise NotFoundError(f"the set certifying height {height} is not known yet: the next height is {nxt}")
    entries = [v.to_dict() for v in state.validators_at(height)]
    return {"height": height, "hash": validators_hash(v["key"] for v in entries), "validators": entries}


def proposals(state: Any, status: str | None) -> list[dict[str, Any]]:
    """Every proposal in log order, its status as a record of the next height would see
    it (``open`` while an approval there would still count)."""
    views = [p.to_dict(state.height + 1) for p in state.proposals.values()]
    return [v for v in views if status is None or v["status"] == status]


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
        return _json(validator_set(node.ledger.state, height))

    @app.get("/v1/proposals", tags=["consortium"],
             responses={200: {"model": Proposals, "description": "The proposals"}, **errors(400)})
    async def get_proposals(status: str | None = Query(
            None, description="Only proposals in this state.", json_schema_extra={"enum": list(STATUSES)},
            pattern="^(open|adopted|expired)$")) -> Response:
        """Every network.propose on the chain, with its approvals and state."""
        return _json({"proposals": proposals(node.ledger.state, status)})

    @app.get("/v1/organisations", tags=["consortium"],
             responses={200: {"model": Organisations, "description": "The organisations in force"}})
    async def get_organisations() -> Response:
        """The organisations in force and their admins."""
        return _json({"organisations": organisations(node.ledger.state)})
