"""What the node's OpenAPI document (``/openapi.json``) says about its answers: the one
error body, the bodies of the main endpoints, the statuses of each route, and the
patterns and ranges of ids and integers (docs/protocol.md section 8).

The models only document: the routes answer orjson bytes they build themselves. FastAPI's
own validation answer (422 ``{"detail": [...]}``) is never sent (``node.app`` turns a bad
parameter into 400 ``bad_request``), so ``openapi`` takes it out of the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import BaseRoute

__all__ = [
    "HEX64", "MAX_INT", "Batch", "BatchResults", "Block", "Blocks", "Checkpoint", "Consistency", "Dataset", "ErrorBody",
    "Health", "RecordView", "Submitted", "body", "errors", "openapi",
]

HEX64 = "^[0-9a-f]{64}$"  # a record id, hash or key: 64 lowercase hex characters
MAX_INT = 2**63 - 1  # the largest height or log size SQLite can hold (INTEGER is 64-bit signed)

_WHAT = {
    400: "Malformed request or record, or a signature that does not verify",
    404: "No such record, block or dataset",
    413: "Record, request body or batch over its limit",
    422: "Well-formed, but the chain's state refuses it",
    503: "The node cannot take it now (mempool full, shutting down, storage unavailable): retry",
    504: "Not committed within `timeout` (`?wait=true`); still pending",
}


class ErrorBody(BaseModel):
    """Every error: a stable ``code`` and a message for people; some name a ``field`` or
    the ``index`` of a batch item."""

    model_config = ConfigDict(extra="allow")
    code: str = Field(examples=["bad_signature"])
    message: str
    field: str | None = None
    index: int | None = None


def body(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``openapi_extra=`` of a route whose JSON body it reads itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that may answer these error statuses."""
    return {s: {"model": ErrorBody, "description": _WHAT[s]} for s in statuses}


class Submitted(BaseModel):
    id: str = Field(pattern=HEX64)
    status: Literal["pending", "committed"]


class ItemError(ErrorBody):
    index: int


class BatchResults(BaseModel):
    results: list[Submitted | ItemError]


class Batch(BaseModel):
    records: list[dict[str, Any]] = Field(max_length=10_000)


class RecordView(BaseModel):
    record: dict[str, Any]
    status: Literal["pending", "committed"]
    height: int | None
    index: int | None


class Checkpoint(BaseModel):
    header: dict[str, Any]
    hash: str = Field(pattern=HEX64)
    certificate: dict[str, Any]


class Block(Checkpoint):
    records: list[dict[str, Any]]


class Blocks(BaseModel):
    height: int
    blocks: list[Block]


class Consistency(BaseModel):
    first: int
    second: int
    path: list[str]


class Dataset(BaseModel):
    model_config = ConfigDict(extra="allow")
    annotations: list[dict[str, Any]]


class Health(BaseModel):
    ok: bool
    height: int


def openapi(app: FastAPI, declared: Sequence[BaseRoute] = ()) -> dict[str, Any]:
    """``app``'s OpenAPI document, with the operations ``declared`` for its bare ASGI
    routes, without FastAPI's validation answer, which the node never sends."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=[*declared, *app.routes])
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                answer = op.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(answer):
                    del op["responses"]["422"]
        schemas = doc.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = doc
    return app.openapi_schema
