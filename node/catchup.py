"""Catch-up: a node that is behind fetches final blocks from its peers, verifies every one
and stores it (DESIGN.md, Consensus: "catches up by fetching blocks with their certificates
from peers and verifying them before storing them").

Nothing a peer sends is trusted. Each block is checked as an auditor would (PROTOCOL.md 7):

  1. the header is well formed, at the height we need, and hashes to the hash it came with;
  2. the commit certificate is valid for that hash: precommits from more than two thirds of
     the set certifying its height (PROTOCOL.md 6, 9.1, ``ledger.blocks.verify_certificate``);
  3. every record is well formed, for this chain, and its signature verifies (PROTOCOL.md 3);
  4. ``Ledger.check_block`` replays the records on our state (roles, nonces, budgets) and
     rebuilds the header: ``prev`` links to our head, ``count``, ``log_size`` and the RFC
     9162 ``log_root`` (PROTOCOL.md 4, 5) must come out equal;

and only then is it stored, through the node's one path for final blocks
(``BlockSink.apply_final``, which consensus uses too; ``Node.make_catchup`` wires it).

Pipelining: ranges of blocks are fetched with ``GET /v1/blocks?from=H`` (``node.api_sync``)
and their records parsed and signature-checked (in chunks, in the node's verifier
processes) while the range before is being replayed and stored, so the network, the
signature checks and SQLite work at the same time.

A peer that serves something invalid is logged (a warning naming the peer, the height and
what was wrong) and avoided for ``avoid_s`` seconds; catch-up goes on from the height it
reached with the other peers. A peer that does not answer is avoided for a shorter while.

For the consensus driver (through ``BackgroundSync``): ``await catchup.sync(target)`` when a
message names a height beyond the stored height + 1; it returns the height reached (which may be below
``target`` if no honest peer has the blocks yet). ``peer_heights()`` asks every peer's
``GET /v1/status``. One ``sync`` runs at a time; concurrent calls wait for it and then
return at once if the target is reached. ``follow()`` (started by ``node.api_sync``) syncs
at start-up and then whenever a peer is two or more blocks ahead, or ahead at two polls in
a row (one block ahead for a moment is consensus deciding, not a lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from ledger.blocks import Certificate, Header, verify_certificate
from ledger.chain import Block, Ledger
from ledger.errors import LedgerError, PeerError
from ledger.records import Record, parse_record

__all__ = ["BackgroundSync", "CatchUp", "FetchedBlock", "InvalidBlock", "Syncing"]

log = logging.getLogger("provledger.sync")

# The largest answer to GET /v1/blocks accepted: one block of the largest size a node makes
# (2,000 records of up to 64 KiB) and then some; the serving side stops near 16 MiB.
MAX_RANGE_BYTES = 256 * 1024 * 1024

Verifier = Callable[[list[Record]], Awaitable[set[int]]]
CHECK_CHUNK = 256  # records per signature-check job
CHECKS_AHEAD = 4  # jobs in the verifier at once, per verifier process
Committer = Callable[[Block, Certificate], Awaitable[None]]


class InvalidBlock(PeerError):
    """A peer served a block that does not verify; ``height`` says which."""

    default_code = "invalid_block"


@dataclass
class FetchedBlock:
    header: Header
    certificate: Certificate
    records: list[Record]
    peer: str


@dataclass
class _Chunk:
    records: list[Record]
    start: int  # position of its first record in its range
    job: asyncio.Future[set[int]] | None = None
    bad: set[int] | None = None  # positions (in the chunk) whose signature does not verify


@dataclass
class _Range:
    peer: str
    blocks: list[FetchedBlock]
    peer_height: int
    chunks: list[_Chunk] = field(default_factory=list)
    error: BaseException | None = None  # the fetcher failed here


class _Checks:
    """The signature checks of fetched records, in order and in chunks: up to ``ahead``
    chunks at a time in the verifier (the node's helper processes), the others waiting. The
    storing side asks for each chunk's result when it reaches the chunk's records, so it
    stores the first blocks of a range while the verifier checks the rest."""

    def __init__(self, verify: Verifier, ahead: int = CHECKS_AHEAD) -> None:
        self.verify = verify
        self.ahead = ahead
        self.waiting: deque[_Chunk] = deque()
        self.running = 0

    def add(self, records: list[Record]) -> list[_Chunk]:
        chunks = [_Chunk(records[i:i + CHECK_CHUNK], i) for i in range(0, len(records), CHECK_CHUNK)]
        self.waiting.extend(chunks)
        self._pump()
        return chunks

    def _pump(self) -> None:
        while self.running < self.ahead and self.waiting:
            c = self.waiting.popleft()
            c.job = asyncio.ensure_future(self.verify(c.records))
            self.running += 1
            c.job.add_done_callback(self._finished)

    def _finished(self, _job: asyncio.Future[set[int]]) -> None:
        self.running -= 1
        self._pump()

    async def bad(self, c: _Chunk) -> set[int]:
        """Positions in ``c`` whose signature does not verify."""
        if c.bad is None:
            if c.job is None:  # not started (the verifier is behind): check it here
                self.waiting.remove(c)
                c.bad = await _verify_inline(c.records)
            else:
                c.bad = await c.job
        return c.bad

    def close(self) -> None:
        self.waiting.clear()  # jobs in flight finish on their own; nobody reads them


async def _verify_inline(records: list[Record]) -> set[int]:
    bad: set[int] = set()
    for k, rec in enumerate(records):
        try:
            rec.verify_signature()
        except LedgerError:
            bad.add(k)
    return bad


class CatchUp:
    """Brings ``ledger`` level with its peers. See the module docstring.

    ``commit(block, certificate)`` stores one verified block (the node's commit path);
    ``verify(records)`` returns the positions whose signature does not verify;
    ``run_check(fn)`` runs ``Ledger.check_block`` where the commits run (default: inline).
    ``transport`` replaces the HTTP transport (tests).
    """

    def __init__(
        self,
        ledger: Ledger,
        commit: Committer,
        peers: Sequence[str],
        *,
        verify: Verifier | None = None,
        run_check: Callable[[Callable[[], Block]], Awaitable[Block]] | None = None,
        range_blocks: int = 200,
        range_records: int = 5000,
        avoid_s: float = 60.0,
        unreachable_s: float = 3.0,
        timeout_s: float = 10.0,
        poll_s: float = 1.0,
        range_timeout_s: float = 120.0,
        checks_ahead: int = CHECKS_AHEAD,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.ledger = ledger
        self.genesis = ledger.genesis
        self.chain_id = ledger.chain_id
        self.peers = [p.rstrip("/") for p in dict.fromkeys(peers)]
        self._commit = commit
        self._verify = verify or _verify_inline
        self._run_check = run_check
        self.range_blocks = range_blocks
        self.range_records = range_records
        self.avoid_s = avoid_s
        self.unreachable_s = unreachable_s
        self.poll_s = poll_s
        self.range_timeout_s = range_timeout_s
        self.checks_ahead = checks_ahead
        self.avoided: dict[str, float] = {}  # peer -> monotonic time until which it is avoided
        self.faults: list[tuple[str, int | None, str]] = []  # (peer, height, what was wrong)
        self._client = httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=16), transport=transport)
        self._lock = asyncio.Lock()
        # Seconds spent on each stage (fetching and storing overlap): where a slow catch-up waits.
        self.waited = {"fetching": 0.0, "signatures": 0.0, "storing": 0.0}

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def height(self) -> int:
        return self.ledger.height

    # -- peers --------------------------------------------------------------------------------
    def add_peers(self, urls: Iterable[str]) -> None:
        """Ask these peers too from now on (a validator that joined the set)."""
        for u in urls:
            u = u.rstrip("/")
            if u not in self.peers:
                self.peers.append(u)

    def usable(self) -> list[str]:
        now = time.monotonic()
        return [p for p in self.peers if self.avoided.get(p, 0.0) <= now]

    def avoid(self, peer: str, seconds: float) -> None:
        self.avoided[peer] = time.monotonic() + seconds

    async def _status(self, peer: str) -> int | None:
        try:
            r = await self._client.get(peer + "/v1/status")
            if r.status_code != 200:
                raise PeerError(f"GET /v1/status answered {r.status_code}")
            doc = orjson.loads(r.content)
            if doc.get("chain_id") != self.chain_id:
                raise PeerError(f"peer is on chain {str(doc.get('chain_id'))[:16]}…, not ours")
            height = doc["height"]
            if type(height) is not int or height < 0:
                raise PeerError("status height is not a non-negative integer")
            return height
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, AttributeError, PeerError) as e:
            log.debug("catch-up: peer %s: no status: %s", peer, e)
            return None

    async def peer_heights(self) -> dict[str, int]:
        """``{peer url: height}`` from each usable peer's ``GET /v1/status`` (peers that do
        not answer are left out)."""
        peers = self.usable()
        got = await asyncio.gather(*(self._status(p) for p in peers))
        return {p: h for p, h in zip(peers, got, strict=True) if h is not None}

    # -- the catch-up ------------------------------------------------------------------------
    async def sync(self, target: int | None = None) -> int:
        """Fetch, verify and store blocks until the height is ``target`` (default: the
        highest height a usable peer reports) or no usable peer has the next block.
        Returns the height reached."""
        async with self._lock:
            while True:
                if target is not None and self.height >= target:
                    return self.height
                heights = await self.peer_heights()
                ahead = {p: h for p, h in heights.items() if h > self.height}
                if not ahead:
                    return self.height
                goal = max(ahead.values()) if target is None else min(target, max(ahead.values()))
                # The peer with the most blocks first; ties go to the order of self.peers.
                peer = max(ahead, key=lambda p: ahead[p])
                before = self.height
                t0 = time.perf_counter()
                try:
                    await self._sync_from(peer, goal)
                except InvalidBlock as e:
                    self._fault(peer, e.details.get("height"), e.message)
                except (PeerError, httpx.HTTPError, orjson.JSONDecodeError, TimeoutError) as e:
                    log.warning("catch-up: peer %s did not answer properly (%s); trying others", peer, e)
                    self.avoid(peer, self.unreachable_s)
                done = self.height - before
                if not done and not self.avoided.get(peer, 0.0) > time.monotonic():
                    # It claimed blocks it did not serve: ask the others first for a while.
                    self.avoid(peer, self.unreachable_s)
                if done:
                    dt = time.perf_counter() - t0
                    log.info("catch-up: %d blocks from %s in %.2f s, now at height %d (so far: %s)", done, peer, dt,
                             self.height, ", ".join(f"{k} {v:.2f} s" for k, v in self.waited.items()))
                if target is None and self.height >= goal:
                    return self.height

    def _fault(self, peer: str, height: int | None, what: str) -> None:
        self.faults.append((peer, height, what))
        self.avoid(peer, self.avoid_s)
        at = f" at height {height}" if height is not None else ""
        log.warning("catch-up: peer %s served an invalid block%s: %s; avoiding it for %.0f s",
                    peer, at, what, self.avoid_s)

    async def _sync_from(self, peer: str, goal: int) -> None:
        """The pipeline: fetch+parse -> signature checks -> replay+store, a range or two apart."""
        fetched: asyncio.Queue[_Range | None] = asyncio.Queue(maxsize=2)
        checks = _Checks(self._verify, self.checks_ahead)
        fetcher = asyncio.create_task(self._fetch_ranges(peer, goal, fetched, checks), name="catch-up-fetch")
        try:
            while True:
                rng = await fetched.get()
                if rng is None:
                    break
                if rng.error is not None:
                    raise rng.error
                at = 0
                for fb in rng.blocks:
                    n = len(fb.records)
                    t0 = time.perf_counter()
                    flawed: list[int] = []
                    for c in rng.chunks[at // CHECK_CHUNK:(at + n + CHECK_CHUNK - 1) // CHECK_CHUNK]:
                        flawed += sorted(c.start + k - at for k in await checks.bad(c) if at <= c.start + k < at + n)
                    self.waited["signatures"] += time.perf_counter() - t0
                    at += n
                    if flawed:
                        rec = fb.records[flawed[0]]
                        raise InvalidBlock(
                            f"record {rec.id[:16]}… (log index {fb.header.log_size - fb.header.count + flawed[0]}): "
                            "signature does not verify", height=fb.header.height)
                    t0 = time.perf_counter()
                    await self._store(fb)
                    self.waited["storing"] += time.perf_counter() - t0
        finally:
            # A failure of the fetcher reaches us through the queue, in order; here it only
            # has to stop (it may be waiting to queue a range we will not use).
            if not fetcher.done():
                fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)
            checks.close()

    async def _fetch_ranges(self, peer: str, goal: int, out: asyncio.Queue[_Range | None], checks: _Checks) -> None:
        try:
            start = self.height + 1
            while start <= goal:
                url = f"{peer}/v1/blocks?from={start}&limit={min(self.range_blocks, goal - start + 1)}&records={self.range_records}"
                t0 = time.perf_counter()
                body = await asyncio.wait_for(self._get(url), self.range_timeout_s)
                self.waited["fetching"] += time.perf_counter() - t0
                rng = self._parse_range(peer, start, orjson.loads(body))
                if not rng.blocks:
                    break  # the peer has nothing more (it reported more than it has)
                rng.chunks = checks.add([rec for fb in rng.blocks for rec in fb.records])
                await out.put(rng)
                start = rng.blocks[-1].header.height + 1
        except BaseException as e:
            # Hand the failure to the consumer in order, after the ranges already queued.
            if isinstance(e, asyncio.CancelledError):
                raise
            await out.put(_Range(peer, [], 0, error=e))
            return
        await out.put(None)

    async def _get(self, url: str) -> bytes:
        """The body of a 200 answer, refusing one larger than ``MAX_RANGE_BYTES``."""
        async with self._client.stream("GET", url) as r:
            if r.status_code != 200:
                raise PeerError(f"GET {url.split('/v1/', 1)[-1]} answered {r.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in r.aiter_bytes():
                size += len(chunk)
                if size > MAX_RANGE_BYTES:
                    raise InvalidBlock(f"an answer to GET /v1/blocks exceeds {MAX_RANGE_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

    def _parse_range(self, peer: str, start: int, doc: Any) -> _Range:
        """Steps 1 and 3 (form) of the module docstring, for one answer."""
        if type(doc) is not dict or type(doc.get("blocks")) is not list or type(doc.get("height")) is not int:
            raise InvalidBlock(f"GET /v1/blocks?from={start}: not a range of blocks", height=start)
        blocks: list[FetchedBlock] = []
        expect = start
        for item in doc["blocks"]:
            try:
                if type(item) is not dict or type(item.get("records")) is not list:
                    raise LedgerError("a block must be an object with header, hash, certificate, records", code="bad_block")
                header = Header.from_dict(item.get("header"))
                if header.height != expect:
                    raise LedgerError(f"expected the block at height {expect}, got height {header.height}", code="bad_block")
                if item.get("hash") != header.hash:
                    raise LedgerError("the header does not hash to the hash given with it", code="bad_block")
                if header.chain != self.chain_id:
                    raise LedgerError(f"header names chain {header.chain[:16]}…", code="bad_block")
                if len(item["records"]) != header.count:
                    raise LedgerError(f"{len(item['records'])} records, the header says {header.count}", code="bad_block")
                cert = Certificate.from_dict(item.get("certificate"))
                records = [parse_record(env, chain=self.chain_id) for env in item["records"]]
            except LedgerError as e:
                raise InvalidBlock(f"{e.message} ({e.code})", height=expect) from e
            blocks.append(FetchedBlock(header, cert, records, peer))
            expect += 1
        return _Range(peer, blocks, doc["height"])

    async def _store(self, fb: FetchedBlock) -> None:
        """Steps 2 and 4, then the commit. The height is checked again right before storing:
        the consensus driver may have stored this block meanwhile."""
        h = fb.header
        if h.height != self.height + 1:
            if h.height <= self.height:
                return  # stored meanwhile by consensus; the certificate check there covered it
            raise PeerError(f"block {h.height} does not follow our height {self.height}")
        try:
            # 2. The certificate: > 2/3 of the set certifying this height precommitted this
            # hash; h follows our head, so that is the set of our state (PROTOCOL.md 9.1).
            verify_certificate(fb.certificate, chain=self.chain_id, height=h.height, block_hash=h.hash,
                               validators=self.ledger.state.validator_keys())
            # 4. Replay on our state and rebuild the header (prev, count, log_size, log_root).
            def check() -> Block:
                return self.ledger.check_block(h, fb.records, verify_signatures=False)

            block = await self._run_check(check) if self._run_check else check()
        except LedgerError as e:
            if self.height >= h.height:
                return  # consensus stored this height while we checked: not the peer's fault
            raise InvalidBlock(f"{e.message} ({e.code})", height=h.height) from e
        try:
            await self._commit(block, fb.certificate)
        except LedgerError as e:
            if self.height >= h.height:
                return  # consensus stored it first
            raise InvalidBlock(f"not stored: {e.message} ({e.code})", height=h.height) from e

    # -- background ------------------------------------------------------------------------
    async def follow(self) -> None:
        """Sync at start-up, then whenever a peer is ahead at two polls in a row (or by two
        blocks or more): the first poll may just see consensus a moment ahead of us."""
        behind_at: int | None = None
        first = True
        while True:
            try:
                if first:
                    await self.sync()
                    first = False
                else:
                    heights = await self.peer_heights()
                    top = max(heights.values(), default=0)
                    mine = self.height
                    if top >= mine + 2 or (top > mine and behind_at == mine):
                        await self.sync()
                        behind_at = None
                    else:
                        behind_at = mine if top > mine else None
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("catch-up failed; retrying")
            await asyncio.sleep(self.poll_s)


class Syncing(Protocol):
    def sync(self, target: int) -> Awaitable[int]: ...


class BackgroundSync:
    """Catch-up for the consensus driver (``node.replica.Syncer``): ``start(target)`` runs
    ``sync(target)`` of the catch-up ``current()`` returns, in a task, unless one runs
    already or there is no catch-up (before ``node.api_sync`` has made it)."""

    def __init__(self, current: Callable[[], Syncing | None]) -> None:
        self.current = current
        self._task: asyncio.Task[None] | None = None

    def start(self, target: int) -> None:
        catchup = self.current()
        if catchup is None or (self._task is not None and not self._task.done()):
            return

        async def run() -> None:
            try:
                await catchup.sync(target)
            except Exception:
                log.exception("catch-up failed")

        self._task = asyncio.create_task(run(), name="catch-up")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
