"""Request pieces of the node's API (``node.app`` and the routes it installs): the limits
on bodies and waits, the submission query parameters, reading a body with those limits,
JSON parsing, and a JSON answer from bare ASGI. The HTTP status of an error is its
family's (``LedgerError.http_status``, docs/protocol.md section 8)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from ledger.errors import InputError, TooLargeError

__all__ = [
    "MAX_BATCH_RECORDS", "MAX_REQUEST_BYTES", "MAX_WAIT_S", "Disconnected", "SubmitParams", "loads", "read_body",
    "receive_body", "send_json", "submit_params",
]

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a request body over 16 MiB is refused (413)
MAX_WAIT_S = 60.0  # the longest ``?timeout=`` of ``?wait=true``
MAX_BATCH_RECORDS = 10_000  # records in one POST /v1/records/batch or /v1/peer/records

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Disconnected(Exception):
    """The client went away before its request body was complete."""


class SubmitParams(BaseModel):
    """The query of ``POST /v1/records`` and ``POST /v1/records/batch``."""

    model_config = ConfigDict(frozen=True)
    wait: bool = Field(False, description="Answer only once the record is committed (or 504 after `timeout`).")
    timeout: float = Field(10.0, gt=0, le=MAX_WAIT_S, description="Seconds to wait with `wait=true`.")


_NO_PARAMS = SubmitParams()


def submit_params(scope: Scope) -> SubmitParams:
    """``SubmitParams`` from a bare ASGI request's query string, read as FastAPI reads a
    query model (the last of repeated names; an empty value is a value); a value that does
    not validate is the ``RequestValidationError`` FastAPI raises, so it gets the same 400."""
    query = scope.get("query_string", b"")
    if not query:
        return _NO_PARAMS
    try:
        return SubmitParams.model_validate(dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)))
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("query", *err["loc"])} for err in e.errors()]) from e


def _too_large() -> TooLargeError:
    return TooLargeError(f"request body exceeds {MAX_REQUEST_BYTES} bytes", code="request_too_large")


async def read_body(request: Request) -> bytes:
    """``receive_body`` of a FastAPI route's request."""
    return await receive_body(request.scope, request.receive)


async def receive_body(scope: Scope, receive: Receive) -> bytes:
    """The body of a request, refusing more than MAX_REQUEST_BYTES (by Content-Length
    before reading anything, so ``Expect: 100-continue`` is answered 413 at once, and by
    count) with ``request_too_large``."""
    for name, value in scope["headers"]:
        if name == b"content-length":  # the first, as starlette's Headers.get
            if not (value.isascii() and value.isdigit()):
                raise InputError("Content-Length is not a number", code="bad_request")
            if int(value) > MAX_REQUEST_BYTES:
                raise _too_large()
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def loads(body: bytes) -> Any:
    """A request body as JSON, or ``bad_json``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InputError(f"request body is not JSON: {e}", code="bad_json") from e


async def send_json(send: Send, status: int, body: bytes) -> None:
    """Answer a bare ASGI request with JSON bytes."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
