"""The mempool: verified records waiting for a block, and the *pending* state.

Every record here has had its form and signature checked once, on arrival; the block
builder only re-runs the state rules. The pending state is the committed state with every
mempool record applied in arrival order, so a submission is judged against everything that
will come before it in the log: a replayed nonce, a missing reference or an exhausted
privacy budget is refused at once, and a record that depends on another pending record
(an identity registered in the same batch) is accepted.

Not thread-safe: the node touches it from the event loop only.
"""

from __future__ import annotations

import time
from itertools import islice

from ledger.errors import UnavailableError
from ledger.records import Record
from ledger.state import ChainState

__all__ = ["Mempool"]


class Mempool:
    def __init__(self, committed: ChainState, *, limit: int = 100_000) -> None:
        self.limit = limit
        self._records: dict[str, Record] = {}  # id -> record, in arrival order
        self._arrived: dict[str, float] = {}  # id -> monotonic arrival time
        self.pending = _pending(committed)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._records

    def get(self, record_id: str) -> Record | None:
        return self._records.get(record_id)

    def admit(self, rec: Record) -> None:
        """Check ``rec`` against the pending state and queue it; raises RuleError (or
        ``mempool_full``). The caller has checked its form and signature and that it is
        not already known."""
        if len(self._records) >= self.limit:
            raise UnavailableError(
                f"the mempool holds {self.limit} records waiting for blocks; retry shortly", code="mempool_full"
            )
        self.pending.check(rec)
        self.pending.apply(rec)
        self._records[rec.id] = rec
        self._arrived[rec.id] = time.monotonic()

    def take(self, limit: int) -> list[Record]:
        """Up to ``limit`` records in arrival order; they stay here until ``settle``."""
        return list(islice(self._records.values(), limit))

    def arrived(self, record_id: str) -> float | None:
        return self._arrived.get(record_id)

    def settle(self, done: list[Record], committed: ChainState, *, rebuild: bool) -> list[tuple[Record, Exception]]:
        """Forget ``done`` (the records of a block: committed or dropped).

        With ``rebuild`` (the block builder dropped something, so the pending state may
        have run ahead of the chain) the pending state is rebuilt from the new committed
        state plus the records still waiting; those that no longer fit are dropped and
        returned with the reason. Without it the pending state is still exact (committed
        + waiting records, in the same order), and only forgets its own memory of the
        committed records, which the store's index now answers for: so it stays as small
        as the mempool, and a backlog costs nothing per block.
        """
        for rec in done:
            self._records.pop(rec.id, None)
            self._arrived.pop(rec.id, None)
        if not rebuild:
            self.pending.begin_block(committed.height + 1)
            # ChainState keeps what was applied since its index caught up in an overlay
            # (ledger.state): the records now in the store leave it.
            self.pending.forget(done)
            return []
        pending = _pending(committed)
        dropped: list[tuple[Record, Exception]] = []
        for rid, rec in list(self._records.items()):
            try:
                pending.check(rec)
            except Exception as e:  # a RuleError: the chain moved past it
                del self._records[rid]
                self._arrived.pop(rid, None)
                dropped.append((rec, e))
            else:
                pending.apply(rec)
        self.pending = pending
        return dropped


def _pending(committed: ChainState) -> ChainState:
    """The state records waiting here are checked against: they go in the next block
    (PROTOCOL.md 9.2: approvals and ``expires`` depend on that height)."""
    pending = committed.fork()
    pending.begin_block(committed.height + 1)
    return pending
