"""The block loop of a chain with one validator.

It runs while this node's key is the whole validator set certifying the next height
(PROTOCOL.md 9.1, 6: "with a single validator, one precommit is a certificate"). After the
block that adopts a change making that set larger (a ``validator.add``, or a
``validator.replace`` of this key) it signs nothing more, ends, and calls ``on_outgrown``:
the node hands over to consensus (``node.daemon.Node``), which needs a quorum of the new
set for the next height.

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
from collections.abc import Callable

from ledger.chain import Ledger
from ledger.keys import SigningKey

from .mempool import Mempool
from .sink import BlockSink, StorageHealth

__all__ = ["BlockLoop"]

log = logging.getLogger("provledger.node")


class BlockLoop:
    """See the module docstring. ``arrived`` is the admission listener that wakes it."""

    def __init__(self, ledger: Ledger, key: SigningKey, mempool: Mempool, sink: BlockSink, health: StorageHealth,
                 *, interval: float, max_block: int, on_outgrown: Callable[[], None] | None = None) -> None:
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
        self.on_outgrown = on_outgrown

    def alone(self) -> bool:
        """This key is the whole set certifying the next height (the set after the last
        block's records, PROTOCOL.md 9.1): its one precommit is that height's certificate."""
        return self.ledger.state.validator_keys() == [self.key.public]

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
        if self._task is None or self._task.done():
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
            if not self.alone():
                # The last block changed the set: a certificate of the next height needs a
                # quorum of the new set, which this key's one precommit is not (PROTOCOL.md 6, 9.1).
                if not self._stopping:
                    log.info("the validator set of height %d is not this key alone (%d validators): "
                             "the block loop ends", self.ledger.height + 1, len(self.ledger.state.validator_keys()))
                    if self.on_outgrown is not None:
                        try:
                            self.on_outgrown()
                        except Exception:
                            log.exception("the hand-over after the block loop failed")
                return
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
        if not self.alone():
            return  # the set grew while the loop waited: ``_run`` ends, nothing is signed alone
        batch = self.mempool.take(self.max_block)
        oldest = self.mempool.arrived(batch[0].id)
        t0 = time.perf_counter()
        block, _cert, rejected = await self.sink.in_commit_thread(self.ledger.commit_single, self.key, batch)
        dt = time.perf_counter() - t0
        dropped = self.mempool.settle(batch, self.ledger.state, rebuild=bool(rejected))
        self.sink.committed(block, dt, oldest, [*rejected, *dropped])
