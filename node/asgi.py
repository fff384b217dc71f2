"""Request pieces of the node's API (``node.app`` and the routes it installs): the limits
on bodies and waits, reading a body with those limits, JSON parsing, and a JSON answer
from bare ASGI. The HTTP status of an error is its family's (``LedgerError.http_status``,
docs/protocol.md section 8)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.requests import Request

from ledger.errors import InputError, TooLargeError

__all__ = [
    "MAX_BATCH_RECORDS", "MAX_REQUEST_BYTES", "MAX_WAIT_S", "Disconnected", "loads", "read_body", "send_json",
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


def _too_large() -> TooLargeError:
    return TooLargeError(f"request body exceeds {MAX_REQUEST_BYTES} bytes", code="request_too_large")


async def read_body(request: Request) -> bytes:
    """The body of a request, refusing more than MAX_REQUEST_BYTES (by Content-Length
    before reading anything, so ``Expect: 100-continue`` is answered 413 at once, and by
    count) with ``request_too_large``."""
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise InputError("Content-Length is not a number", code="bad_request")
        if int(length) > MAX_REQUEST_BYTES:
            raise _too_large()
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
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
