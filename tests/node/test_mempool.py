"""node.mempool: the pending state, arrival order, the limit, and settling after a block
(with a real Ledger on a real SQLite file)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from factory import Consortium
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.chain import Ledger
from ledger.errors import LedgerError, RuleError
from node.mempool import Mempool


@pytest.fixture
def c() -> Consortium:
    return Consortium()


@pytest.fixture
def ledger(tmp_path: Path, c: Consortium) -> Ledger:
    return c.ledger(tmp_path / "ledger.db")


def test_records_are_judged_against_everything_before_them(c: Consortium, ledger: Ledger) -> None:
    pool = Mempool(ledger.state)
    ds = c.record(c.alice, "dataset.contribute", c.dataset_body("xray"))
    ann = c.record(c.bob, "annotation.event", c.annotation_body("xray"))  # needs the pending dataset
    pool.admit(ds)
    pool.admit(ann)
    assert len(pool) == 2 and ds.id in pool and pool.get(ann.id) is ann
    # A replayed nonce and a second contribution of the same version are refused at once.
    with pytest.raises(RuleError) as e:
        pool.admit(c.record(c.alice, "dataset.contribute", c.dataset_body("other"), nonce=ds.nonce))
    assert e.value.code == "replayed_nonce"
    with pytest.raises(RuleError):
        pool.admit(c.record(c.alice, "dataset.contribute", c.dataset_body("xray")))
    assert len(pool) == 2
    # The committed state is untouched by what is pending.
    assert "xray" not in ledger.state.datasets and "xray" in pool.pending.datasets


def test_an_annotation_without_its_dataset_is_refused(c: Consortium, ledger: Ledger) -> None:
    pool = Mempool(ledger.state)
    with pytest.raises(RuleError):
        pool.admit(c.record(c.bob, "annotation.event", c.annotation_body("nowhere")))
    assert len(pool) == 0


def test_take_is_arrival_order_and_keeps_records(c: Consortium, ledger: Ledger) -> None:
    pool = Mempool(ledger.state)
    recs = [c.record(c.alice, "dataset.contribute", c.dataset_body(f"d{i}")) for i in range(5)]
    for r in recs:
        pool.admit(r)
    assert [r.id for r in pool.take(3)] == [r.id for r in recs[:3]]
    assert [r.id for r in pool.take(100)] == [r.id for r in recs]
    assert len(pool) == 5
    times = [pool.arrived(r.id) for r in recs]
    assert all(t is not None for t in times) and times == sorted(times)  # type: ignore[type-var]
    assert pool.arrived("00" * 32) is None


def test_the_limit_answers_mempool_full(c: Consortium, ledger: Ledger) -> None:
    pool = Mempool(ledger.state, limit=2)
    for i in range(2):
        pool.admit(c.record(c.alice, "dataset.contribute", c.dataset_body(f"d{i}")))
    with pytest.raises(LedgerError) as e:
        pool.admit(c.record(c.alice, "dataset.contribute", c.dataset_body("d2")))
    assert e.value.code == "mempool_full" and len(pool) == 2


def test_settle_after_a_block_forgets_its_records(c: Consortium, ledger: Ledger) -> None:
    pool = Mempool(ledger.state)
    recs = [c.record(c.alice, "dataset.contribute", c.dataset_body(f"d{i}")) for i in range(4)]
    for r in recs:
        pool.admit(r)
    block, _cert, rejected = ledger.commit_single(c.validators[0], pool.take(2))
    assert rejected == []
    assert pool.settle(block.records, ledger.state, rebuild=False) == []
    assert [r.id for r in pool.take(10)] == [r.id for r in recs[2:]]
    assert recs[0].id not in pool and pool.arrived(recs[0].id) is None
    # The pending state still refuses the committed records' nonces (the store answers now).
    with pytest.raises(RuleError):
        pool.admit(c.record(c.alice, "dataset.contribute", c.dataset_body("again"), nonce=recs[0].nonce))
    # ... and still those of the records waiting, which only the pending state knows of
    # (ChainState.forget drops the committed records' entries alone).
    with pytest.raises(RuleError) as e:
        pool.admit(c.record(c.alice, "dataset.contribute", c.dataset_body("again"), nonce=recs[3].nonce))
    assert e.value.code == "replayed_nonce"


def test_settle_with_rebuild_drops_what_no_longer_fits(c: Consortium, ledger: Ledger) -> None:
    # The chain took another record with the same nonce (as a block from another proposer
    # could): the pending one cannot follow it any more, and is dropped with its reason.
    pool = Mempool(ledger.state)
    waiting = c.record(c.alice, "dataset.contribute", c.dataset_body("late"), nonce="same")
    keep = c.record(c.bob, "dataset.contribute", c.dataset_body("kept"))
    pool.admit(waiting)
    pool.admit(keep)
    other = c.record(c.alice, "dataset.contribute", c.dataset_body("first"), nonce="same")
    block, _cert, _ = ledger.commit_single(c.validators[0], [other])
    dropped = pool.settle(block.records, ledger.state, rebuild=True)
    assert [(r.id, getattr(e, "code", None)) for r, e in dropped] == [(waiting.id, "replayed_nonce")]
    assert [r.id for r in pool.take(10)] == [keep.id]
    assert "kept" in pool.pending.datasets and "late" not in pool.pending.datasets


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=20))
def test_pending_state_matches_a_replay_of_the_pool(names: list[int]) -> None:
    # Whatever is admitted or refused, the pending state is the committed state plus the
    # pool's records in arrival order.
    c = Consortium()
    from ledger.state import ChainState

    pool = Mempool(ChainState(c.genesis))
    for n in names:
        with contextlib.suppress(RuleError):  # the same dataset version twice
            pool.admit(c.record(c.alice, "dataset.contribute", c.dataset_body(f"d{n}")))
    replay = ChainState(c.genesis)
    for r in pool.take(len(pool)):
        replay.check_apply(r)
    assert sorted(replay.datasets) == sorted(pool.pending.datasets) == sorted({f"d{n}" for n in names})


def test_approvals_are_judged_at_the_height_of_the_next_block(c: Consortium, ledger: Ledger) -> None:
    """PROTOCOL.md 9.2: an approval counts while ``expires`` is at least its height; the
    records waiting here go into the next block, so that is the height they are judged at,
    also after the pool settles past a block without a rebuild."""
    prop = c.propose(c.admin_a, c.policy_action("1", "0", "0"), expires=2)
    ledger.commit_single(c.validators[0], [prop])  # height 1
    pool = Mempool(ledger.state)
    assert pool.pending.height == 2
    filler = c.record(c.alice, "dataset.contribute", c.dataset_body("x"))
    pool.admit(filler)
    block, _, _ = ledger.commit_single(c.validators[0], [filler])  # height 2
    pool.settle(block.records, ledger.state, rebuild=False)
    assert pool.pending.height == 3
    with pytest.raises(RuleError) as e:
        pool.admit(c.approve(c.admin_b, prop.id))  # it would go into block 3 > expires
    assert e.value.code == "proposal_expired"
