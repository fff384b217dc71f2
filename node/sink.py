"""Where blocks end: the commit thread, the storage health, the ``?wait=true`` waiters and
the one path for final blocks of other proposers.

``BlockSink.apply_final`` stores every final block this node did not build alone (decided
by consensus, ``node.replica``, or fetched by catch-up, ``node.catchup``): it checks the
block against the chain (signatures only of records this node has not verified yet),
verifies its commit certificate, stores it, and does the follow-up the single-validator
block loop (``node.blockloop``) does too through ``BlockSink.committed``: mempool, waiters,
metrics, log line. Listeners (``on_stored``) hear of each block it stored.

``StorageHealth`` is why blocks cannot be stored right now (None: they can): set by the
first failed commit, cleared by the next one that succeeds; ``/healthz`` answers 503 with
it and, for a storage fault, every write is refused with it (``check_writable``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ledger.blocks import Certificate, Header
from ledger.chain import Block, Ledger
from ledger.errors import (
    CommitTimeoutError,
    InputError,
    LedgerError,
    StorageError,
    UnavailableError,
    VerificationError,
)
from ledger.records import Record, parse_record
from ledger.store import Store

from .mempool import Mempool
from .metrics import NodeMetrics
from .signatures import SignatureChecker, bad_signature

__all__ = [
    "COMMIT_RETRY_FIRST_S", "COMMIT_RETRY_MAX_S", "BlockSink", "Committed", "StorageHealth", "Waiters",
]

log = logging.getLogger("provledger.node")

T = TypeVar("T")
Committed = tuple[int, int]  # (height, log index)
# A failed block commit (a full disk, an unwritable database) is retried after a delay that
# doubles from the first to the last value and stays there until a commit succeeds.
COMMIT_RETRY_FIRST_S = 0.1
COMMIT_RETRY_MAX_S = 5.0


class Waiters:
    """``?wait=true``: futures per record id, resolved when the record is committed (its
    height and log index) or dropped at block time (the error)."""

    def __init__(self) -> None:
        self._futures: dict[str, list[asyncio.Future[Committed | LedgerError]]] = {}

    def __bool__(self) -> bool:
        return bool(self._futures)

    async def wait(self, ids: Iterable[str], timeout: float) -> dict[str, Committed | LedgerError]:
        """Wait until each record is committed (or dropped at block time); raises a
        ``commit_timeout`` error after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        futs: dict[str, asyncio.Future[Committed | LedgerError]] = {}
        for rid in ids:
            if rid in futs:
                continue
            f: asyncio.Future[Committed | LedgerError] = loop.create_future()
            self._futures.setdefault(rid, []).append(f)
            futs[rid] = f
        if not futs:
            return {}
        try:
            _, not_done = await asyncio.wait(futs.values(), timeout=timeout)
            if not_done:
                raise CommitTimeoutError(
                    f"{len(not_done)} record(s) not committed within {timeout:g} s; they are still pending")
            return {rid: f.result() for rid, f in futs.items()}
        finally:
            for rid, f in futs.items():
                lst = self._futures.get(rid)
                if lst is not None and f in lst:
                    lst.remove(f)
                    if not lst:
                        del self._futures[rid]

    def resolve(self, record_id: str, value: Committed | LedgerError) -> None:
        for f in self._futures.pop(record_id, ()):
            if not f.done():
                f.set_result(value)

    def close(self) -> None:
        """Answer every waiter ``shutting_down``."""
        for futs in self._futures.values():
            for f in futs:
                if not f.done():
                    f.set_result(UnavailableError("the node is shutting down", code="shutting_down"))
        self._futures.clear()


class StorageHealth:
    """Whether blocks can be stored (see the module docstring)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics
        self.fault: LedgerError | None = None
        self.failures = 0
        self._since = 0.0

    def check_writable(self) -> None:
        """Raise the storage fault (503 ``storage_unavailable``) while blocks cannot be stored:
        a record admitted now could not be committed and would only wait in memory."""
        if self.fault is not None and self.fault.code == "storage_unavailable":
            raise self.fault

    def retry_delay(self) -> float:
        """The wait before the next commit attempt: doubling, bounded."""
        return min(COMMIT_RETRY_MAX_S, COMMIT_RETRY_FIRST_S * 2.0 ** min(self.failures - 1, 16))

    def failed(self, e: BaseException) -> None:
        """A block could not be stored: the first failure logs one line (with the traceback
        if it is not a storage error: a bug) and marks the node unhealthy; the next are
        counted only."""
        self.failures += 1
        self.metrics.commit_failures.inc()
        if self.fault is not None:
            return
        self._since = time.monotonic()
        self.metrics.storage_available.set(0)
        if isinstance(e, StorageError):
            self.fault = StorageError(f"blocks cannot be stored: {e}; writes are refused until they can",
                                      code="storage_unavailable")
            log.error("storage unavailable: %s; refusing writes, retrying with backoff (up to %g s)",
                      e, COMMIT_RETRY_MAX_S)
        else:
            self.fault = LedgerError(f"block commit failing: {type(e).__name__}: {e}", code="commit_failing")
            log.error("block commit failing; retrying with backoff (up to %g s)", COMMIT_RETRY_MAX_S, exc_info=e)

    def ok(self, height: int) -> None:
        """A block was stored (``height`` is the new height)."""
        if self.fault is None:
            return
        log.info("storage available again: block %d stored after %d failed attempts in %.1f s",
                 height, self.failures, time.monotonic() - self._since)
        self.fault = None
        self.failures = 0
        self.metrics.storage_available.set(1)


class BlockSink:
    """Final blocks into the store, and their follow-up (see the module docstring)."""

    def __init__(self, store: Store, ledger: Ledger, mempool: Mempool, checker: SignatureChecker,
                 metrics: NodeMetrics, health: StorageHealth, waiters: Waiters) -> None:
        self.store = store
        self.ledger = ledger
        self.chain_id = ledger.chain_id
        self.mempool = mempool
        self.checker = checker
        self.metrics = metrics
        self.health = health
        self.waiters = waiters
        self.stale_pending = False  # the mempool holds records the rules refuse (rebuild at the next block)
        self.height = store.height()  # of the last block stored (kept here: consensus asks it often)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._lock = asyncio.Lock()
        self._stored: list[Callable[[int], None]] = []

    def on_stored(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(height)`` after each block ``apply_final`` stores."""
        self._stored.append(listener)

    async def in_commit_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the commit thread (which holds its own read connection)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Close the commit thread's connection and stop the thread."""
        await self.in_commit_thread(self.store.close)
        self._executor.shutdown(wait=True)

    def committed(self, block: Block, dt: float, oldest: float | None,
                  dropped: list[tuple[Record, Exception]], how: str = "committed") -> None:
        """Follow-up of a stored block: metrics, log line, waiters, records dropped."""
        m = self.metrics
        h = block.header
        self.height = h.height
        m.commit_seconds.observe(dt)
        if oldest is not None:
            m.wait_seconds.observe(time.monotonic() - oldest)
        m.height.set(h.height)
        m.log_size.set(h.log_size)
        m.blocks.inc()
        m.records.inc(h.count)
        m.mempool.set(len(self.mempool))
        log.info("block %d %s: %d records in %.1f ms (log size %d, mempool %d)",
                 h.height, how, h.count, dt * 1000, h.log_size, len(self.mempool))
        first = h.log_size - h.count
        waiters = self.waiters
        if waiters:
            for i, rec in enumerate(block.records):
                waiters.resolve(rec.id, (h.height, first + i))
        for rec, err in dropped:
            code = getattr(err, "code", "rule_violation")
            m.rejected.labels(code).inc()
            log.info("dropped record %s at block time: %s: %s", rec.id[:16], code, err)
            waiters.resolve(rec.id, err if isinstance(err, LedgerError) else LedgerError(str(err), code=code))

    # -- blocks of other proposers ------------------------------------------------------------
    def parse_block(self, wire: Any) -> tuple[Header, list[Record], list[int]]:
        """A block's wire form ``{"header", "records": [envelope, ...]}`` (``GET
        /v1/blocks/{h}``; a proposal may add ``"ids"``, the record ids in order) parsed:
        header, records, and the positions of records whose signature this node has not
        verified (those it holds in its mempool were verified at admission)."""
        if type(wire) is not dict or type(wire.get("header")) is not dict or type(wire.get("records")) is not list:
            raise InputError('a block must be {"header": {...}, "records": [...]}', code="bad_block")
        header = Header.from_dict(wire["header"])
        envs = wire["records"]
        ids = wire.get("ids")
        if ids is not None and (type(ids) is not list or len(ids) != len(envs)):
            raise InputError("block ids must list one id per record", code="bad_block")
        if len(envs) != header.count:
            raise VerificationError(f"block {header.height}: header count {header.count}, {len(envs)} records",
                                    code="bad_block")
        recs: list[Record] = []
        unverified: list[int] = []
        pool = self.mempool
        for i, env in enumerate(envs):
            rid = ids[i] if ids is not None else None
            held = pool.get(rid) if type(rid) is str else None
            if held is not None:  # the record with this id: the id is the hash of its envelope
                recs.append(held)
                continue
            rec = parse_record(env, chain=self.chain_id)
            if rid is not None and rec.id != rid:
                raise VerificationError(f"block {header.height}: record {i} does not have id {str(rid)[:16]}…",
                                        code="bad_block")
            held = pool.get(rec.id)
            if held is not None:
                recs.append(held)
            else:
                recs.append(rec)
                unverified.append(i)
        return header, recs, unverified

    def check_block_sync(self, wire: Any) -> Block:
        """``parse_block`` + signatures (inline) + ``Ledger.check_block``; raises LedgerError."""
        header, recs, unverified = self.parse_block(wire)
        for i in unverified:
            recs[i].verify_signature()
        return self.ledger.check_block(header, recs, verify_signatures=False)

    async def check_block(self, wire: Any) -> Block:
        """The same, verifying many unknown signatures in the verifier processes."""
        header, recs, unverified = self.parse_block(wire)
        bad = await self.checker.verify_many([recs[i] for i in unverified])
        if bad:
            raise bad_signature(recs[unverified[min(bad)]])
        return self.ledger.check_block(header, recs, verify_signatures=False)

    async def apply_final(self, block: Block | dict[str, Any], certificate: Certificate | dict[str, Any], *,
                          how: str = "finalized", on_loop: bool = False) -> Block | None:
        """Store a final block of height ``height + 1`` and do the follow-up.

        ``block`` is a ``Block`` already checked against this chain (``check_block``) or a
        block's wire form, which is checked here first (links, records and the signatures
        of those not yet verified on this node, state rules, Merkle root). The commit
        certificate (PROTOCOL.md 6) is verified by ``Ledger.commit``, which stores the
        block in the commit thread. Returns the stored block; a block already stored with
        the same hash is a no-op (None). Any other height, or a different block at a stored height, raises LedgerError.
        Consensus (``node.replica``) and catch-up both store blocks only through here.

        ``on_loop`` stores it on the event loop instead of the commit thread. Consensus does
        so: it waits for the block anyway, and in the thread every SQLite call gives up the
        GIL and waits to take it back from a loop busy admitting records, thousands of
        times per block (measured with four validators sharing two cores: 25-40 % more
        records/s, and a lower p99 submit-to-final)."""
        cert = certificate if isinstance(certificate, Certificate) else Certificate.from_dict(certificate)
        async with self._lock:
            header = block.header if isinstance(block, Block) else Header.from_dict(
                block.get("header") if type(block) is dict else None)
            height = self.store.height()
            if header.height <= height:
                stored = self.store.block(header.height)
                if stored is not None and stored.hash == header.hash:
                    return None
                raise VerificationError(f"block {header.height} conflicts with the stored block at that height",
                                        code="conflicting_block")
            if header.height != height + 1:
                raise InputError(f"block {header.height} is not the next block (height is {height})", code="not_next")
            checked = block if isinstance(block, Block) else await self.check_block(block)
            if checked.header != header:
                raise VerificationError(f"block {header.height} was checked against another header", code="bad_block")
            pool = self.mempool
            # The pending state (committed + mempool) stays exact if every record of the
            # block was in the mempool, in whatever order: the same records are applied,
            # now on the committed side. Records it lacked (not forwarded to us yet) are
            # applied to it too if the rules allow them there; if not, or if a proposal of
            # ours left records out (``stale_pending``), it is rebuilt from the new state.
            # (Checked before the commit: afterwards the store answers that they are on the chain.)
            rebuild = self.stale_pending
            if not rebuild:
                try:
                    for r in checked.records:
                        if r.id not in pool:
                            pool.pending.check_apply(r)
                except LedgerError:
                    rebuild = True
            times = [t for r in checked.records if (t := pool.arrived(r.id)) is not None]
            oldest = min(times) if times else None
            t0 = time.perf_counter()
            try:
                if on_loop:
                    self.ledger.commit(checked, cert)
                else:
                    await self.in_commit_thread(self.ledger.commit, checked, cert)
            except BaseException as e:
                self.stale_pending = True  # the pending state may hold records that are not on the chain
                if isinstance(e, StorageError):
                    self.health.failed(e)
                raise
            self.height = header.height
            self.health.ok(header.height)
            dt = time.perf_counter() - t0
            dropped = pool.settle(checked.records, self.ledger.state, rebuild=rebuild)
            self.stale_pending = False
            self.committed(checked, dt, oldest, dropped, how)
        for listener in self._stored:
            listener(header.height)
        return checked
