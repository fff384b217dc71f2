"""The node's parts on their own: ``?wait=true`` waiters, the storage health that refuses
writes and backs off, and the grouped signature checks of single submissions."""

from __future__ import annotations

import asyncio

import pytest
from factory import Consortium

from ledger.errors import LedgerError, StorageError
from ledger.records import parse_record
from node.metrics import NodeMetrics
from node.signatures import SignatureChecker
from node.sink import COMMIT_RETRY_MAX_S, StorageHealth, Waiters


def test_waiters_answer_commit_timeout_and_shutdown() -> None:
    async def run() -> None:
        w = Waiters()
        got = asyncio.ensure_future(w.wait(["a", "b", "a"], 5))
        await asyncio.sleep(0)
        w.resolve("a", (1, 0))
        w.resolve("b", LedgerError("refused", code="duplicate_dataset"))
        out = await got
        assert out["a"] == (1, 0) and getattr(out["b"], "code", None) == "duplicate_dataset"
        assert not w  # nothing left behind
        with pytest.raises(LedgerError) as e:
            await w.wait(["c"], 0.01)
        assert e.value.code == "commit_timeout" and not w
        late = asyncio.ensure_future(w.wait(["d"], 5))
        await asyncio.sleep(0)
        w.close()
        assert getattr((await late)["d"], "code", None) == "shutting_down"

    asyncio.run(run())


def test_storage_health_refuses_writes_backs_off_and_recovers() -> None:
    m = NodeMetrics()
    h = StorageHealth(m)
    h.check_writable()  # healthy: nothing raised
    delays = []
    for _ in range(8):
        h.failed(StorageError("disk full", code="storage_error"))
        delays.append(h.retry_delay())
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, COMMIT_RETRY_MAX_S, COMMIT_RETRY_MAX_S]
    with pytest.raises(LedgerError) as e:
        h.check_writable()
    assert e.value.code == "storage_unavailable" and e.value.http_status == 503
    assert m.registry.get_sample_value("provledger_storage_available") == 0
    assert m.registry.get_sample_value("provledger_commit_failures_total") == 8
    h.ok(3)
    h.check_writable()
    assert h.fault is None and h.failures == 0
    assert m.registry.get_sample_value("provledger_storage_available") == 1
    # A failure that is not the disk's (a bug) marks the node unhealthy but keeps taking writes.
    h.failed(RuntimeError("boom"))
    assert h.fault is not None and h.fault.code == "commit_failing"
    h.check_writable()


def test_single_submissions_are_checked_together_and_each_gets_its_answer() -> None:
    c = Consortium()
    good = [parse_record(c.envelope(c.alice, "dataset.contribute", c.dataset_body(f"g{i}"))) for i in range(2)]
    env = c.envelope(c.alice, "dataset.contribute", c.dataset_body("forged"))
    forged = parse_record(dict(env, sig=good[0].envelope["sig"]))

    async def run() -> list[bool]:
        checker = SignatureChecker(workers=0)
        return list(await asyncio.gather(*(checker.verify_grouped(r) for r in (good[0], forged, good[1]))))

    assert asyncio.run(run()) == [True, False, True]
