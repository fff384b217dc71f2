"""Sending to the other validators over HTTP (docs/protocol.md, "Peers and consensus messages").

One ``Peers`` per node: a keep-alive ``httpx.AsyncClient`` shared by every peer, and per
peer two outgoing queues, each drained by its own task (so a large batch of records in
flight never holds up a vote), so that consensus never waits for a slow or dead peer. What
a peer is sent:

  consensus messages   ``POST /v1/peer/message``: one message, or ``{"messages": [...]}``
                       when several queued up while the last request was in flight;
  records              ``POST /v1/peer/records`` ``{"records": [...]}``: the records this
                       node accepted; whatever queued up while the last request was in
                       flight goes as one batch (up to ``FORWARD_CHUNK``).

A peer that does not answer is marked down; what was queued for it is dropped, and so is
anything queued for it during ``BACKOFF_S`` (growing while it stays down): consensus re-sends
what matters (``gossip_messages``), and records reach it through the proposals' blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

__all__ = ["Peer", "Peers"]

log = logging.getLogger("provledger.peers")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

FORWARD_CHUNK = 5000  # records per forwarded batch (the peer route takes up to 10,000)
MAX_BATCH_BYTES = 4 * 1024 * 1024  # a request body stays well under the peer's 16 MiB limit
MAX_QUEUED = 10_000  # messages waiting for one peer; the oldest are dropped beyond this
MAX_QUEUED_RECORDS = 200_000  # records waiting for one peer; newer ones are dropped beyond this
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
_JSON = {"content-type": "application/json"}


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
    def __init__(self, urls: Mapping[str, str], *, names: Mapping[str, str] | None = None) -> None:
        names = names or {}
        self.peers = [Peer(k, u, names.get(k, "")) for k, u in urls.items()]
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, connect=1.0),
            limits=httpx.Limits(max_connections=4 * max(1, len(self.peers)), max_keepalive_connections=4 * max(1, len(self.peers))),
        )
        for p in self.peers:
            self._tasks.append(asyncio.create_task(self._send_messages(p), name=f"peer-{p.name}"))
            self._tasks.append(asyncio.create_task(self._send_records(p), name=f"peer-{p.name}-records"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def status(self) -> list[dict[str, Any]]:
        return [p.status() for p in self.peers]

    # -- what consensus and admission call (never blocking) --------------------------------
    def broadcast(self, message: Any) -> None:
        """Queue a consensus message (Proposal or Vote) for every peer."""
        body = orjson.dumps(message.to_dict())
        for p in self.peers:
            p.push_message(body)

    def gossip(self, messages: list[Any]) -> int:
        """Re-send ``messages`` to the peers that are up and have nothing waiting (a busy
        peer will get newer messages soon; a re-send must never pile up behind them).
        Returns how many peers were sent to."""
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
        while True:
            await p.ready.wait()
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
                ok = await self._post(p, "/v1/peer/message", body, len(bodies))
                p.busy = False
                if not ok:
                    p.dropped += len(p.messages)
                    p.messages.clear()
                    break

    async def _send_records(self, p: Peer) -> None:
        while True:
            await p.records_ready.wait()
            p.records_ready.clear()
            while p.records:
                recs = [p.records.popleft() for _ in range(min(FORWARD_CHUNK, len(p.records)))]
                body = b'{"records":[' + b",".join(recs) + b"]}"
                if not await self._post(p, "/v1/peer/records", body, len(recs)):
                    p.dropped += len(p.records)
                    p.records.clear()
                    break

    async def _post(self, p: Peer, path: str, body: bytes, count: int) -> bool:
        assert self._client is not None
        try:
            r = await self._client.post(p.url + path, content=body, headers=_JSON)
        except httpx.HTTPError as e:
            self._down(p, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
            return False
        if r.status_code >= 500:
            self._down(p, f"HTTP {r.status_code}")
            return False
        if r.status_code >= 400:
            # The peer refused what we sent (it is behind or ahead, or disagrees): not a
            # transport failure; say so once in a while.
            p.last_error = f"{path} HTTP {r.status_code}: {r.text[:200]}"
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
