"""Request pieces shared by the node's app (``node.app``) and its ingress processes
(``node.ingress``), so that both answer a request in exactly the same way: the size limit
on bodies, reading a body from a bare ASGI ``receive``, the plain ``?wait=&timeout=`` query
of ``POST /v1/records``, JSON parsing, and the HTTP status of each error code
(docs/protocol.md section 8)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from ledger.errors import InputError, LedgerError, RuleError, StorageError

__all__ = [
    "MAX_REQUEST_BYTES", "MAX_WAIT_S", "Disconnected", "loads", "plain_submit_query", "receive_body",
    "send_json", "status_for",
]

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a request body over 16 MiB is refused (413)
MAX_WAIT_S = 60.0  # the longest ``?timeout=`` of ``?wait=true``

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CODE_STATUS = {
    "not_found": 404,
    "record_too_large": 413,
    "request_too_large": 413,
    "batch_too_large": 413,
    "commit_timeout": 504,
    "shutting_down": 503,
    "mempool_full": 503,
}


def status_for(e: LedgerError) -> int:
    """The HTTP status of an error (docs/protocol.md section 8): 422 for a rule, 503 for
    storage, 400 for the rest, except the codes with their own status."""
    s = _CODE_STATUS.get(e.code)
    if s is not None:
        return s
    if isinstance(e, RuleError):
        return 422
    if isinstance(e, StorageError):
        return 503
    return 400


class Disconnected(Exception):
    """The client went away before its request body was complete."""


async def receive_body(scope: Scope, receive: Receive) -> bytes:
    """The body of a bare ASGI request, refusing more than MAX_REQUEST_BYTES (by header
    and by count) with ``request_too_large``."""
    too_large = InputError(f"request body exceeds {MAX_REQUEST_BYTES} bytes", code="request_too_large")
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                if int(value) > MAX_REQUEST_BYTES:
                    raise too_large
            except ValueError as e:
                raise InputError("Content-Length is not a number", code="bad_request") from e
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# The strings pydantic reads as booleans, as FastAPI would parse ``?wait=``.
_BOOL_WORDS = {w: True for w in ("true", "1", "yes", "on", "t", "y")} | {
    w: False for w in ("false", "0", "no", "off", "f", "n")}
_PLAIN_NUMBER = re.compile(rb"^(\d+(\.\d*)?|\.\d+)$")


def plain_submit_query(query: bytes) -> tuple[bool, float] | None:
    """``wait`` and ``timeout`` of ``POST /v1/records`` when they are plainly valid; None
    when anything needs FastAPI's validation (which then answers, errors included)."""
    wait, timeout = False, 10.0
    if not query:
        return wait, timeout
    seen: set[bytes] = set()
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name in seen or b"%" in name or b"+" in name:
            return None
        seen.add(name)
        if name == b"wait":
            w = _BOOL_WORDS.get(value.decode("latin-1").lower())
            if w is None:
                return None
            wait = w
        elif name == b"timeout":
            if not _PLAIN_NUMBER.match(value):
                return None
            timeout = float(value)
            if not 0 < timeout <= MAX_WAIT_S:
                return None
    return wait, timeout


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
