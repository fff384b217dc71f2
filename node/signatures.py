"""The node's signature checks: inline, or in the verifier processes (``node.verify``).

``cryptography`` holds the GIL during Ed25519 verification, so threads would not run in
parallel: a batch with ``VERIFY_POOL_MIN`` or more new records is verified in helper
processes, in jobs of ``VERIFY_CHUNK`` records. Records submitted on their own at the same
moment (one turn of the event loop) are verified together (``verify_grouped``). If the
helper processes fail, the node verifies in its own process from then on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ledger.errors import LedgerError, SignatureError
from ledger.records import Record

from .verify import Verifiers

__all__ = ["VERIFY_CHUNK", "VERIFY_POOL_MIN", "SignatureChecker", "bad_signature"]

log = logging.getLogger("provledger.node")

VERIFY_POOL_MIN = 64  # a batch with this many new records is verified in the verifier processes
VERIFY_CHUNK = 128  # records per verifier job


def bad_signature(rec: Record) -> SignatureError:
    """The error ``Record.verify_signature`` raises, for a record found bad in a batch."""
    return SignatureError(f"record {rec.id[:16]}: signature by {rec.signer[:16]} does not verify", code="bad_signature")


def _verify_inline(recs: list[Record]) -> set[int]:
    bad: set[int] = set()
    for k, rec in enumerate(recs):
        try:
            rec.verify_signature()
        except LedgerError:
            bad.add(k)
    return bad


class SignatureChecker:
    """Checks record signatures for admission, proposals and catch-up (see the module
    docstring). ``workers``: verifier processes (0: inline only); started on first use or
    by ``warm``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: Verifiers | None = None
        self._group: list[tuple[Record, asyncio.Future[bool]]] = []  # single submissions awaiting verification
        self._background: set[asyncio.Future[Any]] = set()

    async def verify_many(self, recs: list[Record], *, pool_min: int = VERIFY_POOL_MIN) -> set[int]:
        """Positions in ``recs`` whose signature does not verify."""
        if len(recs) >= pool_min and self.workers > 0:
            try:
                ok = await self._start_pool().verify(
                    [(r.signer, r.signing_bytes(), r.envelope["sig"]) for r in recs], VERIFY_CHUNK)
                return {k for k, good in enumerate(ok) if not good}
            except Exception:
                log.exception("signature verifier processes failed; verifying in the node process")
                self._close_pool()
                self.workers = 0
        return _verify_inline(recs)

    def verify_grouped(self, rec: Record) -> asyncio.Future[bool]:
        """Whether ``rec``'s signature verifies, checked together with the other records
        asked for in the same turn of the event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        if not self._group:
            loop.call_soon(self._verify_group)
        self._group.append((rec, fut))
        return fut

    def _verify_group(self) -> None:
        group, self._group = self._group, []
        if self.workers == 0 or (self.pool is not None and self.pool.broken):
            bad = _verify_inline([rec for rec, _ in group])
            for k, (_, fut) in enumerate(group):
                if not fut.done():
                    fut.set_result(k not in bad)
            return

        def done(task: asyncio.Future[set[int]]) -> None:
            err = task.exception()
            for k, (_, fut) in enumerate(group):
                if fut.done():
                    continue
                if err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(k not in task.result())

        task = self._keep(asyncio.ensure_future(self.verify_many([rec for rec, _ in group], pool_min=1)))
        task.add_done_callback(done)

    def warm(self) -> None:
        """Start the verifier processes now rather than on the first busy moment."""
        if self.workers > 0:
            def started(f: asyncio.Future[Any]) -> None:
                if not f.cancelled() and f.exception() is not None:
                    log.warning("verifier processes: %s", f.exception())

            asyncio.ensure_future(self._start_pool().start()).add_done_callback(started)

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await pool.close()

    def _start_pool(self) -> Verifiers:
        if self.pool is None:
            self.pool = Verifiers(self.workers)
        return self.pool

    def _keep(self, task: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """Hold a reference to a background task until it is done (the loop keeps only weak ones)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _close_pool(self) -> None:
        """Stop the verifier processes (they exit when their input closes)."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            self._keep(asyncio.ensure_future(pool.close()))
