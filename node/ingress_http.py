"""The HTTP/1.1 server of an ingress process (``node.ingress``), on httptools, the parser
uvicorn uses.

An ingress process answers most of its requests with one short JSON body, and uvicorn's
general-purpose protocol (an ASGI task, events and two writes per answer) costs more CPU
per request than the rest of its work bar the signature check: measured on two cores with
the same app, 183 µs per record under uvicorn against 150 µs here. This server does what a
node's port needs and no more:

* keep-alive, and pipelined requests answered in order (reading pauses while 16 wait);
* request bodies by Content-Length or chunked, refused beyond ``MAX_REQUEST_BYTES`` with
  413 ``request_too_large`` once the request is read (so the client always hears why);
* ``Expect: 100-continue``; ``Connection: close``; HTTP/1.0 (closed after the answer);
* ``HEAD``: the answer's headers without its body;
* an answer is written whole in one write (``Responder.answer``) or streamed
  (``start``/``body``), chunked when it has no Content-Length;
* a client that goes away before its answer is told to the handler (``Responder.on_gone``);
* a malformed request (or one whose request line and headers pass 64 KiB) gets 400
  ``bad_request`` (JSON, as every error of the node) and the connection is closed; an idle keep-alive connection is closed after 5 s;
* ``stop`` closes idle connections at once and the others after their answers.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import http
import logging
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import httptools
import orjson

from .asgi import MAX_REQUEST_BYTES

__all__ = ["HttpServer", "Request", "Responder"]

log = logging.getLogger("provledger.node")

KEEP_ALIVE_S = 5.0
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; more is a malformed request
MAX_PIPELINED = 16  # requests waiting on one connection before it stops reading
_JSON = b"application/json"
_HOP = {b"connection", b"transfer-encoding", b"keep-alive", b"date", b"server"}


class Request:
    """One complete request: its body has been read (``too_large``: it was over the limit
    and has been dropped)."""

    __slots__ = ("body", "client", "headers", "http_version", "keep_alive", "method", "path", "query", "raw_path",
                 "server", "too_large")

    def __init__(self) -> None:
        self.method = ""
        self.raw_path = b""
        self.path = ""
        self.query = b""
        self.http_version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.too_large = False
        self.keep_alive = True
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None


# Answers now (or arranges for the answer without a task), or returns an awaitable to run.
Handler = Callable[[Request, "Responder"], "Awaitable[None] | None"]

_date: list[Any] = [0, b""]


def _date_header() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True).encode()
    return _date[1]  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=64)
def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


class Responder:
    """The answer to one request; ``on_gone`` is called if the client goes away first."""

    def __init__(self, conn: HttpConnection, request: Request) -> None:
        self._conn = conn
        self._head = request.method == "HEAD"
        self._keep = request.keep_alive
        self._chunked = False
        self.started = self.done = False
        self.on_gone: Callable[[], None] | None = None

    def _headers(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> bytes:
        out = [_status_line(status)]
        for name, value in headers:
            if name.lower() not in _HOP:
                out += (name, b": ", value, b"\r\n")
        self._chunked = length is None and status not in (204, 304) and status >= 200
        if self._chunked:
            out.append(b"transfer-encoding: chunked\r\n")
        out += (b"date: ", _date_header(), b"\r\n")
        if not self._keep:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def answer(self, status: int, body: bytes, content_type: bytes = _JSON) -> None:
        """The whole answer in one write."""
        head = self._headers(status, [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
                             len(body))
        self.started = self.done = True
        self._conn.write(head if self._head else head + body)
        self._conn.finished(self)

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A streamed answer: its status and headers (chunked without a Content-Length)."""
        length = next((v for k, v in headers if k.lower() == b"content-length"), None)
        self.started = True
        self._conn.write(self._headers(status, headers, None if length is None else int(length)))

    def body(self, data: bytes, more: bool) -> None:
        """A part of a streamed answer (buffered while the client is slow to read: the node
        caps what it streams)."""
        if self.done:
            return
        if not self._head:
            if self._chunked:
                part = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
                self._conn.write(part if more else part + b"0\r\n\r\n")
            elif data:
                self._conn.write(data)
        if not more:
            self.done = True
            self._conn.finished(self)


class HttpConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[Request] = collections.deque()
        self.current: Responder | None = None
        self._req: Request | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._idle: asyncio.TimerHandle | None = None
        self._closing = False
        self._addr: tuple[Any, Any] = (None, None)

    # -- transport ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self._addr = (tuple(peer[:2]) if isinstance(peer, tuple) else None,
                      tuple(local[:2]) if isinstance(local, tuple) else None)
        self._rest()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        current, self.current = self.current, None
        if current is not None and not current.done and current.on_gone is not None:
            current.on_gone()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrades here: the request is answered, and the connection closed after it.
            if self.waiting:
                self.waiting[-1].keep_alive = False
            elif self.current is not None:
                self.current._keep = False
            else:
                self.close()
        except httptools.HttpParserError as e:
            reason = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) and e.__context__ else e
            log.debug("malformed HTTP request: %s", reason)
            if self.current is None:
                body = orjson.dumps({"code": "bad_request", "message": f"malformed HTTP request: {reason}"})
                self.write(_status_line(400) + b"content-type: application/json\r\ncontent-length: %d\r\n"
                           b"connection: close\r\n\r\n%s" % (len(body), body))
            self.close()

    # -- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._req = Request()
        self._req.client, self._req.server = self._addr
        self._chunks = []
        self._size = 0

    def _head(self, n: int) -> None:
        self._size += n
        if self._size > MAX_HEAD_BYTES:
            raise ValueError(f"request line and headers exceed {MAX_HEAD_BYTES // 1024} KiB")

    def on_url(self, url: bytes) -> None:
        assert self._req is not None
        self._head(len(url))
        self._req.raw_path += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._req is not None
        self._head(len(name) + len(value))
        self._req.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        req = self._req
        assert req is not None
        self._size = 0  # from here on it counts the body
        req.method = self.parser.get_method().decode("ascii")
        req.http_version = self.parser.get_http_version()
        req.keep_alive = self.parser.should_keep_alive()
        parsed = httptools.parse_url(req.raw_path)
        path = (parsed.path or b"/").decode("utf-8", "replace")
        req.path = unquote(path) if "%" in path else path  # the ASGI path is percent-decoded, as uvicorn's
        req.query = parsed.query or b""
        for name, value in req.headers:
            if name == b"content-length" and value.isdigit() and int(value) > MAX_REQUEST_BYTES:
                req.too_large = True
            elif name == b"expect" and value.lower() == b"100-continue" and not req.too_large:
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        req = self._req
        assert req is not None
        self._size += len(body)
        if self._size > MAX_REQUEST_BYTES:
            req.too_large = True
            self._chunks = []
        elif not req.too_large:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        req, self._req = self._req, None
        assert req is not None
        if not req.too_large:
            req.body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        if self._closing:
            return
        self.waiting.append(req)
        if len(self.waiting) >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        if self.current is None:
            self._next()

    # -- answering in order ---------------------------------------------------------------
    def _next(self) -> None:
        req = self.waiting.popleft()
        if self.transport is not None and len(self.waiting) == MAX_PIPELINED - 1:
            self.transport.resume_reading()
        self.current = responder = Responder(self, req)
        try:
            later = self.server.handler(req, responder)
        except Exception:
            self._failed(req, responder)
        else:
            if later is not None:
                self.server.run(self._handle(req, responder, later))

    async def _handle(self, req: Request, responder: Responder, later: Awaitable[None]) -> None:
        try:
            await later
        except Exception:
            self._failed(req, responder)
        if not responder.done:  # the handler gave up on a client that went away
            self.close()

    def _failed(self, req: Request, responder: Responder) -> None:
        log.exception("internal error on %s %s", req.method, req.path)
        if not responder.started:
            responder.answer(500, orjson.dumps({"code": "internal", "message": "internal error; see the node's log"}))

    def finished(self, responder: Responder) -> None:
        """Called by ``responder`` once its answer is complete."""
        if responder is not self.current:
            return
        self.current = None
        if not responder._keep or self._closing or self.server.stopping:
            self.close()
        elif self.waiting:
            self._next()
        else:
            self._rest()

    def _rest(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(KEEP_ALIVE_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.current is None and not self.waiting:
            self.close()


class HttpServer:
    """The connections of an ingress process, all answered by ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[HttpConnection] = set()
        self.stopping = False
        self._tasks: set[asyncio.Future[Any]] = set()

    def run(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def protocol(self) -> HttpConnection:
        return HttpConnection(self)

    async def stop(self, timeout: float = 15.0) -> None:
        """Close idle connections now and the others once answered (within ``timeout``)."""
        self.stopping = True
        for conn in list(self.connections):
            if conn.current is None and not conn.waiting:
                conn.close()
        deadline = time.monotonic() + timeout
        while (self.connections or self._tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
