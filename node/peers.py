"""Sending to the other validators over HTTP (docs/protocol.md, "Peers and consensus messages").

One ``Peers`` per node; per peer two outgoing queues, each drained by its own task over
its own keep-alive HTTP/1.1 connection (so a large batch of records in flight never holds
up a vote), so that consensus never waits for a slow or dead peer. What a peer is sent:

  consensus messages   ``POST /v1/peer/message``: one message, or ``{"messages": [...]}``
                       when several queued up while the last request was in flight;
  records              ``POST /v1/peer/records`` ``{"records": [...]}``: the records this
                       node accepted; whatever queued up while the last request was in
                       flight goes as one batch (up to ``FORWARD_CHUNK``).

A peer that does not answer is marked down; what was queued for it is dropped, and so is
anything queued for it during ``BACKOFF_S`` (growing while it stays down): consensus re-sends
what matters (``gossip_messages``), and records reach it through the proposals' blocks.
A peer sent nothing for ``PROBE_S`` is sent an empty batch of messages, so that whether it
is up is known on a quiet network too.

The connections are ``PeerConnection``: a small HTTP/1.1 client over asyncio streams
(``Content-Length`` bodies, keep-alive, one request at a time). Four validators exchange
dozens of small messages per height; measured on 127.0.0.1, a general-purpose client
(httpx) spends about 1 ms of CPU on each such request, this one about 0.1 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = ["Peer", "PeerConnection", "PeerError", "Peers"]

log = logging.getLogger("provledger.peers")

FORWARD_CHUNK = 5000  # records per forwarded batch (the peer route takes up to 10,000)
MAX_BATCH_BYTES = 4 * 1024 * 1024  # a request body stays well under the peer's 16 MiB limit
MAX_QUEUED = 10_000  # messages waiting for one peer; the oldest are dropped beyond this
MAX_QUEUED_RECORDS = 200_000  # records waiting for one peer; newer ones are dropped beyond this
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
PROBE_S = 2.0  # a peer sent nothing for this long is sent an empty batch of messages
PROBE_BODY = b'{"messages":[]}'
CONNECT_TIMEOUT_S = 1.0
REQUEST_TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class PeerError(Exception):
    """A request to a peer failed in transport (refused, reset, timed out, not HTTP)."""


class PeerConnection:
    """One keep-alive HTTP/1.1 connection to a peer; ``post`` sends one request at a time.

    Responses must carry ``Content-Length`` (the node's always do). A request on a kept-alive
    connection the peer has closed meanwhile is sent once more on a new connection: the peer
    routes are idempotent (a message or record received twice counts once).
    """

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"peer url {url!r} is not an http(s) URL")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if u.scheme == "https" else None
        self.base = (u.path or "").rstrip("/")
        netloc = self.host if u.port is None else f"{self.host}:{u.port}"
        self._host_header = netloc.encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``path``; the status and body of the answer. Raises PeerError."""
        head = (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % ((self.base + path).encode(), self._host_header, len(body)))
        for attempt in (0, 1):
            fresh = self._writer is None
            try:
                if fresh:
                    self._reader, self._writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=1 << 20), CONNECT_TIMEOUT_S)
                assert self._writer is not None
                self._writer.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    self._writer.write(body)
                return await asyncio.wait_for(self._answer(), REQUEST_TIMEOUT_S)
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                    TimeoutError) as e:
                self.close()
                if fresh or attempt or isinstance(e, TimeoutError):
                    raise PeerError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def _answer(self) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x response")
        status = int(lines[0][9:12])
        length, close = None, lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not supported")
        if length is None or not 0 <= length <= MAX_RESPONSE_BYTES:
            raise ValueError("the answer has no usable Content-Length")
        body = await self._reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class Peer:
    """One other validator: its address, its queue and what happened to it."""

    def __init__(self, key: str, url: str, name: str = "") -> None:
        self.key = key
        self.url = url.rstrip("/")
        self.name = name or key[:16]
        self.messages: deque[bytes] = deque()
        self.records: deque[bytes] = deque()  # canonical envelopes
        self.ready = asyncio.Event()  # messages queued
        self.records_ready = asyncio.Event()
        self.up: bool | None = None  # unknown until the first request
        self.failures = 0
        self.retry_at = 0.0
        self.sent = 0
        self.dropped = 0
        self.busy = False  # a request is in flight
        self.last_error = ""

    def _accepting(self) -> bool:
        return self.failures == 0 or time.monotonic() >= self.retry_at

    def push_message(self, body: bytes) -> None:
        if not self._accepting():
            self.dropped += 1
            return
        if len(self.messages) >= MAX_QUEUED:
            self.messages.popleft()
            self.dropped += 1
        self.messages.append(body)
        self.ready.set()

    def push_record(self, canonical: bytes) -> None:
        if not self._accepting() or len(self.records) >= MAX_QUEUED_RECORDS:
            self.dropped += 1
            return
        self.records.append(canonical)
        self.records_ready.set()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight. A peer marked down counts once its back-off
        has passed: a re-send is also how this node learns that a restarted peer is back."""
        return not self.messages and not self.busy and (self.up is True or self._accepting())

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "url": self.url,
            "up": self.up,
            "queued": len(self.messages) + len(self.records),
            "sent": self.sent,
            "dropped": self.dropped,
            "last_error": self.last_error or None,
        }


class Peers:
    """The other validators, by key. ``update`` follows the validator set as it changes
    (PROTOCOL.md 9.3: validator.add and validator.replace carry the new validator's url)."""

    def __init__(self, urls: Mapping[str, str], *, names: Mapping[str, str] | None = None) -> None:
        names = names or {}
        self.peers = [Peer(k, u, names.get(k, "")) for k, u in urls.items()]
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}  # peer key -> its two senders
        self._started = False

    async def start(self) -> None:
        self._started = True
        for p in self.peers:
            self._start_peer(p)

    def _start_peer(self, p: Peer) -> None:
        self._tasks[p.key] = [asyncio.create_task(self._send_messages(p), name=f"peer-{p.name}"),
                              asyncio.create_task(self._send_records(p), name=f"peer-{p.name}-records")]

    async def stop(self) -> None:
        self._started = False
        tasks = [t for ts in self._tasks.values() for t in ts]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    def update(self, urls: Mapping[str, str], *, names: Mapping[str, str] | None = None) -> None:
        """Send to the peers of ``urls`` from now on: a new key (or a new url for a key) gets
        its senders, a key no longer there is dropped with what was queued for it."""
        names = names or {}
        keep = {p.key: p for p in self.peers if urls.get(p.key, "").rstrip("/") == p.url}
        for p in self.peers:
            if p.key not in keep:
                for t in self._tasks.pop(p.key, ()):
                    t.cancel()
        peers: list[Peer] = []
        for k, u in urls.items():
            kept = keep.get(k)
            if kept is None:
                kept = Peer(k, u, names.get(k, ""))
                log.info("peer %s (%s) added: a validator of the current set", kept.name, kept.url)
                if self._started:
                    self._start_peer(kept)
            peers.append(kept)
        self.peers = peers

    def status(self) -> list[dict[str, Any]]:
        return [p.status() for p in self.peers]

    # -- what consensus and admission call (never blocking) --------------------------------
    def broadcast(self, message: Any) -> None:
        """Queue a consensus message (Proposal or Vote) for every peer."""
        body = orjson.dumps(message.to_dict())
        for p in self.peers:
            p.push_message(body)

    def gossip(self, messages: list[Any]) -> int:
        """Re-send ``messages`` to the idle peers (``Peer.idle``; a busy peer will get newer
        messages soon, and a re-send must never pile up behind them). Returns how many
        peers were sent to."""
        idle = [p for p in self.peers if p.idle]
        if idle and messages:
            bodies = [orjson.dumps(m.to_dict()) for m in messages]
            for p in idle:
                for b in bodies:
                    p.push_message(b)
        return len(idle)

    def forward_record(self, canonical: bytes) -> None:
        """Queue a record this node accepted for every peer (sent in batches)."""
        for p in self.peers:
            p.push_record(canonical)

    # -- one sender per peer --------------------------------------------------------------------
    async def _send_messages(self, p: Peer) -> None:
        conn = PeerConnection(p.url)
        try:
            await self._drain_messages(p, conn)
        finally:
            conn.close()

    async def _send_records(self, p: Peer) -> None:
        conn = PeerConnection(p.url)
        try:
            await self._drain_records(p, conn)
        finally:
            conn.close()

    async def _drain_messages(self, p: Peer, conn: PeerConnection) -> None:
        while True:
            try:
                await asyncio.wait_for(p.ready.wait(), PROBE_S)
            except TimeoutError:
                # Nothing to send for a while: an empty batch tells whether the peer is
                # there (``up`` in /v1/status stays true to what it says, and a peer that
                # came back is seen without waiting for the next height).
                if not p.messages and p._accepting():
                    p.busy = True
                    await self._post(p, conn, "/v1/peer/message", PROBE_BODY, 0)
                    p.busy = False
                continue
            p.ready.clear()
            while p.messages:
                p.busy = True
                bodies: list[bytes] = []
                size = 0
                while p.messages and (not bodies or size + len(p.messages[0]) < MAX_BATCH_BYTES):
                    b = p.messages.popleft()
                    bodies.append(b)
                    size += len(b)
                body = bodies[0] if len(bodies) == 1 else b'{"messages":[' + b",".join(bodies) + b"]}"
                ok = await self._post(p, conn, "/v1/peer/message", body, len(bodies))
                p.busy = False
                if not ok:
                    p.dropped += len(p.messages)
                    p.messages.clear()
                    break

    async def _drain_records(self, p: Peer, conn: PeerConnection) -> None:
        while True:
            await p.records_ready.wait()
            p.records_ready.clear()
            while p.records:
                recs = [p.records.popleft() for _ in range(min(FORWARD_CHUNK, len(p.records)))]
                body = b'{"records":[' + b",".join(recs) + b"]}"
                if not await self._post(p, conn, "/v1/peer/records", body, len(recs)):
                    p.dropped += len(p.records)
                    p.records.clear()
                    break

    async def _post(self, p: Peer, conn: PeerConnection, path: str, body: bytes, count: int) -> bool:
        try:
            status, answer = await conn.post(path, body)
        except PeerError as e:
            self._down(p, str(e))
            return False
        if status >= 500:
            self._down(p, f"HTTP {status}")
            return False
        if status >= 400:
            # The peer refused what we sent (it is behind or ahead, or disagrees): not a
            # transport failure; say so once in a while.
            p.last_error = f"{path} HTTP {status}: {answer[:200].decode(errors='replace')}"
            log.debug("peer %s refused %s: %s", p.name, path, p.last_error)
        if p.up is not True:
            log.info("peer %s (%s) is up", p.name, p.url)
        p.up, p.failures = True, 0
        p.sent += count
        return True

    def _down(self, p: Peer, why: str) -> None:
        if p.up is not False:
            log.warning("peer %s (%s) is unreachable: %s; dropping what is queued for it", p.name, p.url, why)
        p.up = False
        p.last_error = why
        p.retry_at = time.monotonic() + BACKOFF_S[min(p.failures, len(BACKOFF_S) - 1)]
        p.failures += 1
