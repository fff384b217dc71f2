"""The block loop of a chain with one validator.

It wakes when records arrive, waits until ``interval`` seconds have passed since the last
block started (or ``max_block`` records are waiting), takes the mempool in arrival order
and calls ``Ledger.commit_single`` (state rules again, block, single precommit as
certificate, one SQLite transaction) on the commit thread. Records the rules refuse at
block time are dropped and logged. A failed commit is retried with backoff
(``StorageHealth``). On ``stop`` the loop finishes the block in flight and commits what is
still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ledger.chain import Ledger
from ledger.keys import SigningKey

from .mempool import Mempool
from .sink import BlockSink, StorageHealth

__all__ = ["BlockLoop"]

log = logging.getLogger("provledger.node")


class BlockLoop:
    """See the module docstring. ``arrived`` is the admission listener that wakes it."""

    def __init__(self, ledger: Ledger, key: SigningKey, mempool: Mempool, sink: BlockSink, health: StorageHealth,
                 *, interval: float, max_block: int) -> None:
        self.ledger = ledger
        self.key = key
        self.mempool = mempool
        self.sink = sink
        self.health = health
        self.interval = interval
        self.max_block = max_block
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def arrived(self, waiting: int) -> None:
        """A record was admitted; ``waiting`` records are in the mempool."""
        self._wake.set()
        if waiting >= self.max_block:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="block-loop")

    async def stop(self) -> None:
        """Finish the block in flight and commit what is waiting."""
        self._stopping = True
        if self._task is None:
            return
        if self.mempool:
            log.info("shutting down: committing %d pending records", len(self.mempool))
        self._wake.set()
        self._full.set()
        try:
            await self._task
        except Exception:  # pragma: no cover - logged by the loop
            log.exception("block loop failed during shutdown")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
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
                self.health.failed(e)
                if self._stopping:
                    log.error("shutting down with %d records not committed", len(self.mempool))
                    return
                self._full.clear()
                with contextlib.suppress(TimeoutError):  # ``stop`` sets it
                    await asyncio.wait_for(self._full.wait(), self.health.retry_delay())
            else:
                self.health.ok(self.ledger.height)

    async def _commit_once(self) -> None:
        batch = self.mempool.take(self.max_block)
        oldest = self.mempool.arrived(batch[0].id)
        t0 = time.perf_counter()
        block, _cert, rejected = await self.sink.in_commit_thread(self.ledger.commit_single, self.key, batch)
        dt = time.perf_counter() - t0
        dropped = self.mempool.settle(batch, self.ledger.state, rebuild=bool(rejected))
        self.sink.committed(block, dt, oldest, [*rejected, *dropped])
