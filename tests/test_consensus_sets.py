"""The consensus core across validator set changes (PROTOCOL.md 9.1): each height runs with
the set the driver gives for it, asked only once the block below is stored."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InputError
from ledger.keys import SigningKey
from node.consensus import (
    NIL,
    Broadcast,
    Commit,
    Consensus,
    PersistSigned,
    Proposal,
    Vote,
    sign_proposal,
    sign_vote,
    verify_certificate,
)
from tests.test_consensus import CHAIN, KEYS, App, T, block, broadcasts, my_votes

MORE = [SigningKey.from_seed(hashlib.sha256(b"consensus-sets-%d" % i).digest()) for i in range(80)]


def pub(keys: list[SigningKey]) -> list[str]:
    return [k.public for k in keys]


class Driver:
    """The sets of each height, and what the core asked of it when."""

    def __init__(self, sets: dict[int, list[str]]) -> None:
        self.sets = sets
        self.stored = 0  # blocks the driver has stored
        self.asked: list[tuple[int, int]] = []  # (height asked, blocks stored then)

    def validators_for(self, height: int) -> list[str]:
        self.asked.append((height, self.stored))
        return self.sets[height]


def core(key: SigningKey, d: Driver, height: int = 1) -> Consensus:
    return Consensus(CHAIN, d.sets[height], key, App("x"), height, timeouts=T, validators_for=d.validators_for)


def decide(c: Consensus, signers: list[SigningKey], d: Driver) -> Commit:
    """Feed the proposal and precommits of round 0 at the core's height; the driver stores the block."""
    h = c.height
    mine = [m for m in c.gossip_messages() if isinstance(m, Proposal) and m.round == 0]
    if mine:  # we proposed it ourselves
        bh, acts = mine[0].block_hash, []
    else:
        proposer = next(k for k in [*KEYS, *MORE] if k.public == c.proposer(h, 0))
        b, bh = block(h, f"b{h}")
        acts = c.on_proposal(sign_proposal(proposer, CHAIN, h, 0, b, bh))
    for k in signers:
        if k.public != c.me:
            acts += c.on_vote(sign_vote(k, CHAIN, h, 0, "precommit", bh))
    commits = [a for a in acts if isinstance(a, Commit)]
    assert len(commits) == 1 and commits[0].height == h
    d.stored = h
    return commits[0]


A = pub(KEYS[:4])
B = [KEYS[1].public, KEYS[2].public, KEYS[3].public, MORE[0].public]  # KEYS[0] out, MORE[0] in


def test_the_next_height_runs_with_its_own_set_asked_after_the_block_is_stored() -> None:
    d = Driver({1: A, 2: B})
    c = core(KEYS[1], d)
    c.start()
    decide(c, KEYS[:4], d)
    assert d.asked == []  # not inside the event that decided: block 1 was not stored yet
    c.on_timeout(2, 0, "commit")
    assert d.asked == [(2, 1)]
    assert c.validators == tuple(B) and c.quorum == 3
    assert c.proposer(2, 0) == B[2 % 4] and c.proposer(2, 1) == B[3]
    with pytest.raises(InputError) as e:  # removed at block 1: not a validator of height 2
        c.on_vote(sign_vote(KEYS[0], CHAIN, 2, 0, "prevote", NIL))
    assert e.value.code == "not_validator"
    c.on_vote(sign_vote(MORE[0], CHAIN, 2, 0, "prevote", NIL))  # added at block 1: counts
    assert MORE[0].public in {v.validator for v in c.gossip_messages() if isinstance(v, Vote)}


def test_a_certificate_of_the_new_height_holds_the_new_sets_votes() -> None:
    d = Driver({1: A, 2: B})
    c = core(KEYS[1], d)
    c.start()
    decide(c, KEYS[:4], d)
    c.on_timeout(2, 0, "commit")
    commit = decide(c, [KEYS[2], KEYS[3], MORE[0]], d)
    verify_certificate(CHAIN, B, 2, commit.block_hash, commit.certificate)
    assert {v["validator"] for v in commit.certificate["votes"]} <= set(B)


def test_messages_of_the_next_height_are_held_whoever_signed_them_and_checked_on_entering_it() -> None:
    # KEYS[0] leaves, MORE[0] comes in and proposes (2, 0)
    after = [KEYS[1].public, KEYS[3].public, MORE[0].public, KEYS[2].public]
    d = Driver({1: A, 2: after})
    me = KEYS[3]
    c = core(me, d)
    c.start()
    b2, h2 = block(2, "next")
    outsider = MORE[5]  # in neither set
    held = [
        sign_proposal(MORE[0], CHAIN, 2, 0, b2, h2),  # not a validator of height 1
        sign_vote(MORE[0], CHAIN, 2, 0, "prevote", h2),  # not in the set of height 1: held anyway
        sign_vote(outsider, CHAIN, 2, 0, "prevote", h2),
        sign_vote(KEYS[0], CHAIN, 2, 0, "prevote", h2),  # in the set of 1, not of 2
    ]
    for m in held:
        assert (c.on_vote(m) if isinstance(m, Vote) else c.on_proposal(m)) == []
        c.check(m)  # the driver's screen lets them through too
    decide(c, KEYS[:4], d)
    acts = c.on_timeout(2, 0, "commit")
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [h2]  # the held proposal counted
    prevoters = {v.validator for v in c.gossip_messages() if isinstance(v, Vote) and v.step == "prevote"}
    assert prevoters == {MORE[0].public, me.public}  # the outsider's and the removed key's dropped


def test_a_held_proposal_from_the_wrong_proposer_of_its_set_is_dropped() -> None:
    d = Driver({1: A, 2: B})
    c = core(KEYS[3], d)
    c.start()
    b2, h2 = block(2, "wrong")
    wrong = sign_proposal(KEYS[0], CHAIN, 2, 0, b2, h2)  # the proposer of (2, 0) in A, not in B
    assert A[2 % 4] == KEYS[2].public and B[2 % 4] == KEYS[3].public
    c.on_proposal(sign_proposal(KEYS[2], CHAIN, 2, 0, b2, h2))  # proposer by A, but B decides
    c.on_proposal(wrong)
    decide(c, KEYS[:4], d)
    c.on_timeout(2, 0, "commit")  # we are the proposer of (2, 0) in B, and propose our own
    assert [m.proposer for m in c.gossip_messages() if isinstance(m, Proposal)] == [KEYS[3].public]


def test_a_removed_validator_signs_nothing_but_still_decides() -> None:
    d = Driver({1: A, 2: B, 3: B})
    c = core(KEYS[0], d)  # removed by block 1
    c.start()
    decide(c, KEYS[:4], d)
    acts = c.on_timeout(2, 0, "commit")
    assert c.me is None
    for r in range(3):  # whatever happens, as proposer of the old rotation or on timeouts
        acts += c.on_timeout(2, r, "propose") + c.on_timeout(2, r, "prevote") + c.on_timeout(2, r, "precommit")
    assert not any(isinstance(a, (Broadcast, PersistSigned)) for a in acts)
    commit = decide(c, [KEYS[1], KEYS[2], MORE[0]], d)
    verify_certificate(CHAIN, B, 2, commit.block_hash, commit.certificate)


def test_an_added_validator_follows_then_takes_part_from_its_first_height() -> None:
    d = Driver({1: A, 2: B})
    c = core(MORE[0], d)
    assert c.me is None
    acts = c.start()
    acts += c.on_timeout(1, 0, "propose")
    assert broadcasts(acts) == []
    decide(c, KEYS[:4], d)  # a follower decides from the others' messages
    acts = c.on_timeout(2, 0, "commit")
    assert c.me == MORE[0].public
    acts += c.on_timeout(2, 0, "propose")
    assert [v.validator for v in my_votes(acts, "prevote")] == [MORE[0].public]


def test_a_catch_up_advance_takes_the_set_of_the_height_it_lands_on() -> None:
    d = Driver({1: A, 2: A, 3: A, 4: B})
    c = core(KEYS[1], d)
    c.start()
    d.stored = 3
    c.advance(3)
    assert c.height == 4 and d.asked == [(4, 3)] and c.validators == tuple(B)


def test_what_is_held_for_the_next_height_is_bounded() -> None:
    d = Driver({1: A, 2: A})
    c = core(KEYS[3], d)
    c.start()
    for k in MORE[:70]:  # a flood from keys outside the set: 70 keys, 64 rounds each
        for r in range(64):
            c.on_vote(sign_vote(k, CHAIN, 2, r, "prevote", NIL))
    for r in range(100):  # and from one validator, many rounds
        c.on_vote(sign_vote(KEYS[0], CHAIN, 2, r, "prevote", NIL))
    b2, h2 = block(2, "after the flood")
    c.on_proposal(sign_proposal(KEYS[2], CHAIN, 2, 0, b2, h2))  # the proposer of (2, 0): still held
    c.on_vote(sign_vote(KEYS[1], CHAIN, 2, 0, "prevote", h2))
    decide(c, KEYS[:4], d)
    acts = c.on_timeout(2, 0, "commit")
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [h2]
    rounds = {v.round for v in c.gossip_messages() if isinstance(v, Vote) and v.validator == KEYS[0].public}
    assert 0 < len(rounds) <= 64


def test_check_refuses_what_the_core_refuses_at_its_height_only() -> None:
    d = Driver({1: A})
    c = core(KEYS[1], d)
    outsider = MORE[7]
    with pytest.raises(InputError) as e:
        c.check(sign_vote(outsider, CHAIN, 1, 0, "prevote", NIL))
    assert e.value.code == "not_validator"
    b, h = block(1, "x")
    with pytest.raises(InputError) as e:
        c.check(sign_proposal(KEYS[3], CHAIN, 1, 0, b, h))
    assert e.value.code == "wrong_proposer"
    c.check(sign_vote(outsider, CHAIN, 2, 0, "prevote", NIL))  # the next height: its set may hold it
    assert c.gossip_messages() == []  # nothing was taken in


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 11), min_size=1, max_size=7, unique=True), min_size=2, max_size=6),
       st.integers(0, 5))
def test_proposer_and_quorum_follow_the_set_of_each_height(sets: list[list[int]], rounds: int) -> None:
    keys = [*KEYS, *MORE[:4]]
    d = Driver({h: [keys[i].public for i in s] for h, s in enumerate(sets, 1)})
    c = Consensus(CHAIN, d.sets[1], None, App("o"), 1, timeouts=T, validators_for=d.validators_for)
    for h in range(1, len(sets) + 1):
        if h > 1:
            d.stored = h - 1
            c.advance(h - 1)
        vs = d.sets[h]
        assert c.height == h and c.validators == tuple(vs)
        assert c.quorum == 2 * len(vs) // 3 + 1
        for r in range(rounds + 1):
            assert c.proposer(h, r) == vs[(h + r) % len(vs)]
    assert [a for a, _ in d.asked] == list(range(2, len(sets) + 1))
    assert all(stored == h - 1 for h, stored in d.asked)


def test_without_validators_for_every_height_keeps_the_first_set() -> None:
    c = Consensus(CHAIN, A, KEYS[1], App("s"), 1, timeouts=T)
    c.start()
    d = Driver({1: A})
    decide(c, KEYS[:4], d)
    c.on_timeout(2, 0, "commit")
    assert c.validators == tuple(A)
