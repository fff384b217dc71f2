"""The node: admission, the block loop or consensus, final blocks, the process entry point.

``Node`` owns the store, the ``Ledger`` (committed state), the mempool (pending state) and
the metrics. Everything except the block commit runs on the event loop; the commit runs in
a one-thread executor so the loop keeps serving while SQLite writes and fsyncs.

Admission (``admit``), once per record per node:
  1. the form and id (``parse_record``, done by the caller),
  2. already known? the same envelope again is answered with its status (idempotent),
  3. the signature (the only time it is checked on this node; a batch with 64 or more
     new records is verified in helper processes, since ``cryptography`` holds the GIL
     during Ed25519 verification and threads would not run in parallel),
  4. the state rules against the pending state (committed + mempool in arrival order).

The block loop wakes when records arrive, waits until ``block_interval_ms`` has passed
since the last block started (or ``max_block_records`` are waiting), takes the mempool in
arrival order and calls ``Ledger.commit_single`` (state rules again, block, single
precommit as certificate, one SQLite transaction). Records the rules refuse at block time
are dropped and logged. On shutdown the loop finishes the block in flight, commits what is
still waiting, and the store is closed.

``serve`` runs the node in a process, its port served by granian.

With more than one validator in the genesis there is no block loop: a ``node.replica.Replica``
runs the Tendermint core between the validators, and records accepted here are forwarded to
the other validators' mempools. Every final block of another proposer (decided by consensus,
or fetched by catch-up) is stored through ``Node.apply_final``, which checks it against the
chain (signatures only of records this node has not verified yet), verifies its commit
certificate, stores it, and does the follow-up the block loop does (mempool, waiters,
metrics, log line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections import Counter as Tally
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ledger.blocks import Certificate, Header
from ledger.chain import Block, Ledger
from ledger.errors import (
    CommitTimeoutError,
    InputError,
    LedgerError,
    SignatureError,
    StorageError,
    UnavailableError,
    VerificationError,
)
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.records import Record, parse_record
from ledger.store import Store

from .config import NodeConfig
from .mempool import Mempool
from .metrics import NodeMetrics
from .startup import check_store
from .verify import Verifiers

__all__ = ["Node", "serve", "setup_logging"]

log = logging.getLogger("provledger.node")

Committed = tuple[int, int]  # (height, log index)
VERIFY_POOL_MIN = 64  # a batch with this many new records is verified in the verifier processes (node.verify)
VERIFY_CHUNK = 128  # records per verifier job
# A failed block commit (a full disk, an unwritable database) is retried after a delay that
# doubles from the first to the last value and stays there until a commit succeeds.
COMMIT_RETRY_FIRST_S = 0.1
COMMIT_RETRY_MAX_S = 5.0


def _bad_signature(rec: Record) -> SignatureError:
    # The same error Record.verify_signature raises.
    return SignatureError(f"record {rec.id[:16]}: signature by {rec.signer[:16]} does not verify", code="bad_signature")



class Node:
    """One running validator node (single-validator commit path)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.key = SigningKey.load(config.key_path)
        self.store = Store(config.db_path)
        try:
            genesis = self.store.genesis
            if config.genesis_path.exists():
                import orjson

                try:
                    on_disk = parse_genesis(orjson.loads(config.genesis_path.read_bytes()))
                except orjson.JSONDecodeError as e:
                    raise InputError(f"{config.genesis_path} is not JSON: {e}", code="bad_genesis") from e
                if on_disk.chain_id != genesis.chain_id:
                    raise InputError(
                        f"{config.genesis_path} is for chain {on_disk.chain_id[:16]}…, the database for {genesis.chain_id[:16]}…",
                        code="genesis_mismatch",
                    )
            if self.key.public not in genesis.validators:
                raise InputError(f"{config.key_path} is not a validator of this chain's genesis", code="not_a_validator")
            self.genesis = genesis
            self.chain_id = genesis.chain_id
            check_store(self.store)  # node.startup: the file must give its certified head
            self.ledger = Ledger(self.store)
        except BaseException:
            self.store.close()
            raise
        self.mempool = Mempool(self.ledger.state, limit=config.max_mempool)
        self._background: set[asyncio.Future[Any]] = set()
        self.metrics = NodeMetrics()
        self.metrics.height.set(self.store.height())
        self.metrics.log_size.set(self.store.log_size())
        self._waiters: dict[str, list[asyncio.Future[Committed | LedgerError]]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._wake: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Why blocks cannot be stored right now (None: they can): set by the first failed
        # commit, cleared by the next one that succeeds; ``/healthz`` answers 503 with it
        # and, for a storage fault, every write is refused with it (``check_writable``).
        self.fault: LedgerError | None = None
        self._fault_since = 0.0
        self._failures = 0
        self.max_block = config.max_block_records
        self.interval = config.block_interval_ms / 1000
        self.verify_workers: int = config.verify_workers
        self._pool: Any = None
        self._group: list[tuple[Record, asyncio.Future[bool]]] = []  # single submissions awaiting verification
        self.warm_verifier = False  # start the verifier process with the block loop (set by ``serve``)
        self._apply_lock = asyncio.Lock()
        self.stale_pending = False  # the mempool holds records the rules refuse (rebuild at the next block)
        # More than one validator: consensus between them (node.replica); None runs the
        # single-validator block loop. Made here so that a bad setting stops the node early.
        self.replica: Any = None
        if self.multi:
            from .replica import Replica

            self.replica = Replica(self)

    @property
    def multi(self) -> bool:
        return len(self.genesis.validators) > 1

    @classmethod
    def open(cls, home: str | Path, **overrides: Any) -> Node:
        cfg = NodeConfig.load(home)
        cfg.override(**{k: v for k, v in overrides.items() if v is not None})
        return cls(cfg)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        if self.replica is not None:
            await self.replica.start()
        else:
            self._task = asyncio.create_task(self._block_loop(), name="block-loop")

    async def stop(self) -> None:
        """Finish the block in flight, commit what is waiting, close the store."""
        self._stopping = True
        if self.replica is not None:
            await self.replica.stop()
        if self._task is not None:
            if self.mempool:
                log.info("shutting down: committing %d pending records", len(self.mempool))
            assert self._wake is not None and self._full is not None
            self._wake.set()
            self._full.set()
            try:
                await self._task
            except Exception:  # pragma: no cover - logged by the loop
                log.exception("block loop failed during shutdown")
        for futs in self._waiters.values():
            for f in futs:
                if not f.done():
                    f.set_result(UnavailableError("the node is shutting down", code="shutting_down"))
        self._waiters.clear()
        height, size = self.store.height(), self.store.log_size()
        # Each thread holds its own read connection: close the commit thread's there.
        await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.store.close()
        log.info("stopped at height %d, log size %d", height, size)

    # -- admission ----------------------------------------------------------------------
    def status(self, record_id: str) -> str | None:
        """``pending``, ``committed`` or None. The mempool is asked first: a record stays
        there until its block is stored *and* the node has moved on, so ``committed`` is
        only said of a record covered by the latest checkpoint."""
        if record_id in self.mempool:
            return "pending"
        if self.store.record_index(record_id) is not None:
            return "committed"
        return None

    def admit(self, rec: Record, *, verified: bool = False, forward: bool = True, uncommitted: bool = False) -> str:
        """Admit a parsed record; returns its status. Raises SignatureError / RuleError.
        ``verified``: the signature was already checked (by the batch verifier).
        ``forward``: pass it on to the other validators (not for records a peer forwarded).
        ``uncommitted``: the caller has just seen that the store does not hold it."""
        self.check_writable()
        known = ("pending" if rec.id in self.mempool else None) if uncommitted else self.status(rec.id)
        if known is not None:
            return known  # PROTOCOL.md 3: the same envelope again is the same record
        if not verified:
            rec.verify_signature()
        self.mempool.admit(rec)
        if forward and self.replica is not None:
            self.replica.forward(rec)
        n = len(self.mempool)
        self.metrics.mempool.set(n)
        assert self._wake is not None and self._full is not None, "node not started"
        self._wake.set()
        if n >= self.max_block:
            self._full.set()
        return "pending"

    def submit(self, obj: Any) -> tuple[str, str]:
        rec = parse_record(obj, chain=self.chain_id)
        return rec.id, self.admit(rec)

    async def submit_one(self, obj: Any) -> tuple[str, str]:
        """``submit`` for a record sent on its own, off the event loop's critical path:
        the signatures of records submitted at the same moment (one turn of the event loop)
        are verified together in a verifier process (queued behind its work when it is busy),
        so the node's own process, the busiest, only parses and applies the rules: measured
        with 16 clients on two cores, 3,800 -> 4,300 records/s against checking a group
        here whenever the verifiers were busy."""
        self.check_writable()
        rec = parse_record(obj, chain=self.chain_id)
        known = self.status(rec.id)
        if known is not None:
            return rec.id, known  # PROTOCOL.md 3: the same envelope again is the same record
        committed = self.ledger.state  # replaced by every block stored
        if not await self._verify_grouped(rec):
            raise _bad_signature(rec)
        # No block stored meanwhile: the store still does not hold it (ask the mempool only).
        return rec.id, self.admit(rec, verified=True, uncommitted=self.ledger.state is committed)

    def _verify_grouped(self, rec: Record) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        if not self._group:
            loop.call_soon(self._verify_group)
        self._group.append((rec, fut))
        return fut

    def _verify_group(self) -> None:
        group, self._group = self._group, []
        if self.verify_workers == 0 or (self._pool is not None and self._pool.broken):
            for rec, fut in group:
                try:
                    rec.verify_signature()
                except LedgerError:
                    ok = False
                else:
                    ok = True
                if not fut.done():
                    fut.set_result(ok)
            return

        def done(task: asyncio.Task[set[int]]) -> None:
            err = task.exception()
            for k, (_, fut) in enumerate(group):
                if fut.done():
                    continue
                if err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(k not in task.result())

        task = self._keep(asyncio.ensure_future(self._verify_many([rec for rec, _ in group], pool_min=1)))
        task.add_done_callback(done)

    async def submit_batch(self, items: list[Any], *, forward: bool = True) -> list[dict[str, Any]]:
        """Per-item results in order: ``{"id", "status"}`` or ``{"index", "code", "message"}``.

        1. Parse every item; answer the ones already known (idempotent).
        2. Verify the new ones' signatures: in the verifier processes for a large batch
           (cryptography holds the GIL during Ed25519 verify, so threads would not help),
           inline otherwise.
        3. Admit them in order against the pending state (so later items may depend on
           earlier ones).
        """
        self.check_writable()
        results: list[dict[str, Any] | None] = [None] * len(items)
        codes: Tally[str] = Tally()

        def fail(i: int, e: LedgerError) -> None:
            results[i] = {"index": i, **e.to_dict()}
            codes[e.code] += 1
            self.metrics.rejected.labels(e.code).inc()

        parsed: list[tuple[int, Record]] = []
        for i, item in enumerate(items):
            try:
                parsed.append((i, parse_record(item, chain=self.chain_id)))
            except LedgerError as e:
                fail(i, e)
        pool = self.mempool
        committed = self._committed_among([rec.id for _, rec in parsed if rec.id not in pool])
        fresh: list[tuple[int, Record]] = []
        for i, rec in parsed:
            if rec.id in pool or rec.id in committed:
                results[i] = {"id": rec.id, "status": "pending" if rec.id in pool else "committed"}
            else:
                fresh.append((i, rec))
        bad = await self._verify_many([rec for _, rec in fresh])
        # Blocks may have been stored while the signatures were checked: ask the store
        # again, once for the whole batch, and not once more per record in ``admit``.
        committed = self._committed_among([rec.id for _, rec in fresh])
        for k, (i, rec) in enumerate(fresh):
            try:
                if k in bad:
                    raise _bad_signature(rec)
                status = "committed" if rec.id in committed else self.admit(
                    rec, verified=True, forward=forward, uncommitted=True)
                results[i] = {"id": rec.id, "status": status}
            except LedgerError as e:
                fail(i, e)
        if codes:
            log.info("rejected %d of %d batch records: %s", sum(codes.values()), len(items),
                     ", ".join(f"{c} x{n}" for c, n in codes.most_common()))
        return results  # type: ignore[return-value]

    def _committed_among(self, ids: list[str]) -> set[str]:
        """The ids among ``ids`` that the store holds: one query per 500 ids."""
        found: set[str] = set()
        reader = self.store.reader
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            found.update(row[0] for row in reader.execute(
                f"SELECT id FROM records WHERE id IN ({','.join('?' * len(part))})", part))
        return found

    async def _verify_many(self, recs: list[Record], *, pool_min: int = VERIFY_POOL_MIN) -> set[int]:
        """Positions in ``recs`` whose signature does not verify."""
        if len(recs) >= pool_min and self.verify_workers > 0:
            try:
                return await self._verify_in_pool(recs)
            except Exception:
                log.exception("signature verifier processes failed; verifying in the node process")
                self._close_pool()
                self.verify_workers = 0
        bad: set[int] = set()
        for k, rec in enumerate(recs):
            try:
                rec.verify_signature()
            except LedgerError:
                bad.add(k)
        return bad

    def _start_pool(self) -> Verifiers:
        if self._pool is None:
            self._pool = Verifiers(self.verify_workers)
        return self._pool

    async def _verify_in_pool(self, recs: list[Record]) -> set[int]:
        ok = await self._start_pool().verify([(r.signer, r.signing_bytes(), r.envelope["sig"]) for r in recs],
                                             VERIFY_CHUNK)
        return {k for k, good in enumerate(ok) if not good}

    def _keep(self, task: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """Hold a reference to a background task until it is done (the loop keeps only weak ones)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _close_pool(self) -> None:
        """Stop the verifier processes (they exit when their input closes)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self._keep(asyncio.ensure_future(pool.close()))

    def rejected(self, code: str, message: str) -> None:
        self.metrics.rejected.labels(code).inc()
        log.info("rejected input: %s: %s", code, message)

    async def wait_committed(self, ids: Iterable[str], timeout: float) -> dict[str, Committed | LedgerError]:
        """Wait until each record is committed (or dropped at block time); raises a
        ``commit_timeout`` error after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        futs: dict[str, asyncio.Future[Committed | LedgerError]] = {}
        for rid in ids:
            if rid in futs:
                continue
            f: asyncio.Future[Committed | LedgerError] = loop.create_future()
            self._waiters.setdefault(rid, []).append(f)
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
                lst = self._waiters.get(rid)
                if lst is not None and f in lst:
                    lst.remove(f)
                    if not lst:
                        del self._waiters[rid]

    def _resolve(self, record_id: str, value: Committed | LedgerError) -> None:
        for f in self._waiters.pop(record_id, ()):
            if not f.done():
                f.set_result(value)

    # -- the block loop -------------------------------------------------------------------
    async def _block_loop(self) -> None:
        assert self._wake is not None and self._full is not None
        loop = asyncio.get_running_loop()
        if self.warm_verifier and self.verify_workers > 0:
            # Start the verifier processes now rather than on the first busy moment.
            asyncio.ensure_future(self._start_pool().start()).add_done_callback(
                lambda f: f.cancelled() or (f.exception() and log.warning("verifier processes: %s", f.exception())))
        last = 0.0
        while True:
            if not self.mempool:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = last + self.interval - loop.time()
            if delay > 0 and len(self.mempool) < self.max_block and not self._stopping:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), delay)
            last = loop.time()
            try:
                await self._commit_once()
            except Exception as e:
                self._commit_failed(e)
                if self._stopping:
                    log.error("shutting down with %d records not committed", len(self.mempool))
                    return
                self._full.clear()
                with contextlib.suppress(TimeoutError):  # ``stop`` sets it
                    await asyncio.wait_for(self._full.wait(), self.retry_delay())
            else:
                self._commit_ok()

    # -- faults: a block that cannot be stored ----------------------------------------------
    def check_writable(self) -> None:
        """Raise the storage fault (503 ``storage_unavailable``) while blocks cannot be stored:
        a record admitted now could not be committed and would only wait in memory."""
        if self.fault is not None and self.fault.code == "storage_unavailable":
            raise self.fault

    def retry_delay(self) -> float:
        """The wait before the next commit attempt: doubling, bounded."""
        return min(COMMIT_RETRY_MAX_S, COMMIT_RETRY_FIRST_S * 2 ** min(self._failures - 1, 16))

    def _commit_failed(self, e: BaseException) -> None:
        """A block could not be stored: the first failure logs one line (with the traceback
        if it is not a storage error: a bug) and marks the node unhealthy; the next are
        counted only."""
        self._failures += 1
        self.metrics.commit_failures.inc()
        if self.fault is not None:
            return
        self._fault_since = time.monotonic()
        self.metrics.storage_available.set(0)
        if isinstance(e, StorageError):
            self.fault = StorageError(f"blocks cannot be stored: {e}; writes are refused until they can",
                                      code="storage_unavailable")
            log.error("storage unavailable: %s; refusing writes, retrying with backoff (up to %g s)",
                      e, COMMIT_RETRY_MAX_S)
        else:
            self.fault = LedgerError(f"block commit failing: {type(e).__name__}: {e}", code="commit_failing")
            log.error("block commit failing; retrying with backoff (up to %g s)", COMMIT_RETRY_MAX_S, exc_info=e)

    def _commit_ok(self) -> None:
        if self.fault is None:
            return
        log.info("storage available again: block %d stored after %d failed attempts in %.1f s",
                 self.store.height(), self._failures, time.monotonic() - self._fault_since)
        self.fault = None
        self._failures = 0
        self.metrics.storage_available.set(1)

    async def _commit_once(self) -> None:
        loop = asyncio.get_running_loop()
        batch = self.mempool.take(self.max_block)
        oldest = self.mempool.arrived(batch[0].id)
        t0 = time.perf_counter()
        block, _cert, rejected = await loop.run_in_executor(
            self._executor, self.ledger.commit_single, self.key, batch
        )
        dt = time.perf_counter() - t0
        dropped = self.mempool.settle(batch, self.ledger.state, rebuild=bool(rejected))
        self._committed(block, dt, oldest, [*rejected, *dropped])

    def _committed(self, block: Block, dt: float, oldest: float | None,
                   dropped: list[tuple[Record, Exception]], how: str = "committed") -> None:
        """Follow-up of a stored block: metrics, log line, waiters, records dropped."""
        m = self.metrics
        h = block.header
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
        if self._waiters:
            for i, rec in enumerate(block.records):
                self._resolve(rec.id, (h.height, first + i))
        for rec, err in dropped:
            code = getattr(err, "code", "rule_violation")
            m.rejected.labels(code).inc()
            log.info("dropped record %s at block time: %s: %s", rec.id[:16], code, err)
            self._resolve(rec.id, err if isinstance(err, LedgerError) else LedgerError(str(err), code=code))

    # -- final blocks (consensus and catch-up) ----------------------------------------------
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
        bad = await self._verify_many([recs[i] for i in unverified])
        if bad:
            raise _bad_signature(recs[unverified[min(bad)]])
        return self.ledger.check_block(header, recs, verify_signatures=False)

    async def apply_final(self, block: Block | dict[str, Any], certificate: Certificate | dict[str, Any], *,
                          how: str = "finalized", on_loop: bool = False) -> Block | None:
        """Store a final block of height ``store.height() + 1`` and do the follow-up.

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
        async with self._apply_lock:
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
                    await asyncio.get_running_loop().run_in_executor(self._executor, self.ledger.commit, checked, cert)
            except BaseException as e:
                self.stale_pending = True  # the pending state may hold records that are not on the chain
                if isinstance(e, StorageError):
                    self._commit_failed(e)
                raise
            self._commit_ok()
            dt = time.perf_counter() - t0
            dropped = pool.settle(checked.records, self.ledger.state, rebuild=rebuild)
            self.stale_pending = False
            self._committed(checked, dt, oldest, dropped, how)
        if self.replica is not None:
            self.replica.stored(header.height)
        return checked


# --- process entry ---------------------------------------------------------------------------
def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on the node's address (to find a busy port before starting)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


def _deprecated_keys(cfg: NodeConfig) -> None:
    """``ingress_workers`` is no longer used (granian parses HTTP on its own thread): a
    config.json that has it is warned about, and it is ignored."""
    if "ingress_workers" in cfg.extra:
        log.warning("config.json: ingress_workers is no longer used and is ignored; remove it")


def serve(home: str | Path, *, host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    """Run the node in this process until SIGTERM / SIGINT, its app served on the node's
    port by granian (HTTP/1.1 parsed by its Rust threads, the app on this process's event
    loop). An incomplete request is closed after ``header_timeout_s``; a malformed one is
    answered ``400 Bad Request`` with an empty body by granian itself (docs/protocol.md 8)."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    from .app import create_app

    setup_logging(log_level)
    node = Node.open(home, host=host, port=port)  # errors surface here, before the server starts
    cfg = node.config
    _deprecated_keys(cfg)
    try:  # the port, before anything starts: a busy port is one line and exit 1
        _listen(cfg.host, cfg.port).close()
    except OSError as e:
        node.store.close()
        log.error("cannot listen on %s:%d: %s", cfg.host, cfg.port, e.strerror or e)
        raise SystemExit(1) from e
    node.warm_verifier = True
    app = create_app(node=node)
    server = Server(
        app, address=cfg.host, port=cfg.port, interface=Interfaces.ASGI, http=HTTPModes.http1,
        websockets=False, backlog=2048, log_enabled=False,
        http1_settings=HTTP1Settings(header_read_timeout=int(cfg.header_timeout_s * 1000)),
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency
        asyncio.run(run())
    else:
        uvloop.run(run())
