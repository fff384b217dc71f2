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

from ledger.records import Record
from ledger.state import ChainState

__all__ = ["Mempool"]


class Mempool:
    def __init__(self, committed: ChainState) -> None:
        self._records: dict[str, Record] = {}  # id -> record, in arrival order
        self._arrived: dict[str, float] = {}  # id -> monotonic arrival time
        self.pending = committed.fork()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._records

    def get(self, record_id: str) -> Record | None:
        return self._records.get(record_id)

    def admit(self, rec: Record) -> None:
        """Check ``rec`` against the pending state and queue it; raises RuleError.
        The caller has checked its form and signature and that it is not already known."""
        self.pending.check(rec)
        self.pending.apply(rec)
        self._records[rec.id] = rec
        self._arrived[rec.id] = time.monotonic()

    def take(self, limit: int) -> list[Record]:
        """Up to ``limit`` records in arrival order; they stay here until ``settle``."""
        return list(islice(self._records.values(), limit))

    def arrived(self, record_id: str) -> float | None:
        return self._arrived.get(record_id)

    def settle(self, done: list[Record], committed: ChainState) -> list[tuple[Record, Exception]]:
        """Forget ``done`` (committed or dropped) and rebuild the pending state from the new
        committed state plus the records still waiting. Returns records that no longer fit
        (dropped here, with the reason)."""
        for rec in done:
            self._records.pop(rec.id, None)
            self._arrived.pop(rec.id, None)
        pending = committed.fork()
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
