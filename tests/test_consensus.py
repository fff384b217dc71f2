"""The consensus core on hand-built scenarios: each test drives one or a few state
machines with explicit events and checks the actions (Tendermint Algorithm 1)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from ledger.canonical import BLOCK_TAG, GENESIS_TAG, tagged_hash
from ledger.errors import CertificateError, InputError, SignatureError
from ledger.keys import SigningKey
from node.consensus import (
    NIL,
    Broadcast,
    Commit,
    Consensus,
    PersistSigned,
    Proposal,
    ReportEvidence,
    ScheduleTimeout,
    Timeouts,
    Vote,
    message_from_dict,
    sign_proposal,
    sign_vote,
    verify_certificate,
)

CHAIN = tagged_hash(GENESIS_TAG, {"test": "consensus"})
KEYS = [SigningKey.from_seed(hashlib.sha256(b"consensus-test-%d" % i).digest()) for i in range(8)]
T = Timeouts(propose=300, prevote=100, precommit=100, delta=50, commit=10)


def block(height: int, tag: str) -> tuple[dict[str, Any], str]:
    b = {"height": height, "payload": tag}
    return b, tagged_hash(BLOCK_TAG, b)


class App:
    """Proposes ``{"height", "payload": "p<i>-<round>"}``; valid when the hash and height match."""

    def __init__(self, name: str = "p") -> None:
        self.name = name

    def propose(self, height: int, round: int) -> tuple[Any, str]:
        return block(height, f"{self.name}-{round}")

    def valid(self, b: Any, h: str, height: int) -> bool:
        return type(b) is dict and b.get("height") == height and tagged_hash(BLOCK_TAG, b) == h


def validators(n: int) -> list[str]:
    return [k.public for k in KEYS[:n]]


def make(n: int, i: int, height: int = 1, **kw: Any) -> Consensus:
    return Consensus(CHAIN, validators(n), KEYS[i], App(f"n{i}"), height, timeouts=T, **kw)


def broadcasts(actions: list[Any]) -> list[Proposal | Vote]:
    return [a.message for a in actions if isinstance(a, Broadcast)]


def my_votes(actions: list[Any], step: str) -> list[Vote]:
    return [m for m in broadcasts(actions) if isinstance(m, Vote) and m.step == step]


def not_proposer(n: int, height: int, rounds: range) -> int:
    """An index that proposes in none of ``rounds`` at ``height``."""
    busy = {(height + r) % n for r in rounds}
    return next(i for i in range(n) if i not in busy)


def prop(n: int, height: int, round: int, tag: str, vr: int = -1) -> Proposal:
    b, h = block(height, tag)
    return sign_proposal(KEYS[(height + round) % n], CHAIN, height, round, b, h, vr)


def run_network(nodes: list[Consensus], until_height: int) -> dict[int, list[Commit]]:
    """Deliver everything in FIFO order; fire commit timeouts at once. Returns commits per node."""
    queue: list[tuple[int, Any]] = []
    commits: dict[int, list[Commit]] = {i: [] for i in range(len(nodes))}

    def handle(i: int, actions: list[Any]) -> None:
        for k, a in enumerate(actions):
            if isinstance(a, Broadcast):
                assert k > 0 and isinstance(actions[k - 1], PersistSigned), "persist before send"
                queue.extend((j, a.message) for j in range(len(nodes)) if j != i)
            elif isinstance(a, Commit):
                commits[i].append(a)
            elif isinstance(a, ScheduleTimeout) and a.step == "commit":
                queue.append((i, a))

    for i, c in enumerate(nodes):
        handle(i, c.start())
    while queue and min(c.height for c in nodes) <= until_height:
        j, m = queue.pop(0)
        if isinstance(m, ScheduleTimeout):
            handle(j, nodes[j].on_timeout(m.height, m.round, m.step))
        elif isinstance(m, Vote):
            handle(j, nodes[j].on_vote(m))
        else:
            handle(j, nodes[j].on_proposal(m))
    return commits


# --------------------------------------------------------------------------- happy paths


def test_happy_path_four_validators_commit_the_same_blocks() -> None:
    nodes = [make(4, i) for i in range(4)]
    commits = run_network(nodes, until_height=3)
    for h in (1, 2, 3):
        hashes = {c[h - 1].block_hash for c in commits.values()}
        assert len(hashes) == 1, f"height {h}: {hashes}"
        for cs in commits.values():
            c = cs[h - 1]
            assert c.height == h and c.certificate["height"] == h and c.certificate["round"] == 0
            assert len(c.certificate["votes"]) >= 3
            verify_certificate(CHAIN, validators(4), h, c.block_hash, c.certificate)
    # Proposer rotation: validators[(height + round) % n] proposed each block.
    assert commits[0][0].block["payload"] == "n1-0" and commits[0][1].block["payload"] == "n2-0"
    assert all(c.evidence == [] for c in nodes)


def test_single_validator_commits_at_once() -> None:
    c = make(1, 0)
    acts = c.start()
    kinds = [type(a).__name__ for a in acts]
    assert kinds == ["PersistSigned", "Broadcast", "PersistSigned", "Broadcast", "PersistSigned", "Broadcast",
                     "Commit", "ScheduleTimeout"]
    commit = next(a for a in acts if isinstance(a, Commit))
    assert commit.height == 1 and [v["validator"] for v in commit.certificate["votes"]] == [KEYS[0].public]
    verify_certificate(CHAIN, validators(1), 1, commit.block_hash, commit.certificate)
    assert (c.height, c.step) == (2, "new_height")
    wait = acts[-1]
    assert (wait.height, wait.round, wait.step, wait.duration_ms) == (2, 0, "commit", T.commit)
    again = c.on_timeout(2, 0, "commit")
    assert [a.height for a in again if isinstance(a, Commit)] == [2]


def test_seven_validators_commit() -> None:
    nodes = [make(7, i) for i in range(7)]
    commits = run_network(nodes, until_height=2)
    assert len({cs[1].block_hash for cs in commits.values()}) == 1


# --------------------------------------------------------------------------- locking


def _lock_on_x(n: int = 4) -> tuple[Consensus, int, Proposal]:
    """A node that prevoted and precommitted X in round 0 (lines 22-24, 36-41)."""
    me = not_proposer(n, 1, range(2))
    c = make(n, me)
    c.start()
    px = prop(n, 1, 0, "X")
    acts = c.on_proposal(px)
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [px.block_hash]
    others = [i for i in range(n) if i != me]
    acts = []
    for i in others[:2]:
        acts += c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "prevote", px.block_hash))
    assert [v.block_hash for v in my_votes(acts, "precommit")] == [px.block_hash]
    assert (c.locked_round, c.locked_hash, c.valid_round) == (0, px.block_hash, 0)
    return c, me, px


def test_lock_keeps_the_node_from_prevoting_another_value_later() -> None:
    c, me, px = _lock_on_x()
    others = [i for i in range(4) if i != me]
    acts = []
    for i in others[:2]:  # 2f+1 precommits of any kind (ours + 2 nil) -> timeout (lines 47-48)
        acts += c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "precommit", NIL))
    assert [(a.round, a.step) for a in acts if isinstance(a, ScheduleTimeout)] == [(0, "precommit")]
    acts = c.on_timeout(1, 0, "precommit")  # lines 65-67
    assert c.round == 1 and c.step == "propose"
    py = prop(4, 1, 1, "Y")
    acts = c.on_proposal(py)  # lines 22-26: locked on X, so nil
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [NIL]
    assert c.locked_hash == px.block_hash


def test_locked_node_prevotes_its_locked_value_again() -> None:
    c, me, _px = _lock_on_x()
    c.on_timeout(1, 0, "prevote")
    for i in [i for i in range(4) if i != me][:2]:
        c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "precommit", NIL))
    c.on_timeout(1, 0, "precommit")
    b, h = block(1, "X")
    again = sign_proposal(KEYS[(1 + 1) % 4], CHAIN, 1, 1, b, h, 0)
    # vr = 0 needs 2f+1 prevotes of round 0 for X (line 28): we hold them.
    acts = c.on_proposal(again)
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [h]


def test_a_later_polka_unlocks_lines_28_to_33() -> None:
    c, me, _px = _lock_on_x()
    others = [i for i in range(4) if i != me]
    for i in others[:2]:
        c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "precommit", NIL))
    c.on_timeout(1, 0, "precommit")  # round 1
    pz = prop(4, 1, 1, "Z")
    c.on_proposal(pz)  # locked on X: prevote nil in round 1
    # Three others prevoted Z in round 1 (a polka we missed while at prevote nil).
    for i in others:
        c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 1, "prevote", pz.block_hash))
    assert (c.valid_round, c.valid_hash) == (1, pz.block_hash)  # lines 42-43, step was precommit? no:
    # Round 2 re-proposes Z with vr = 1 (lines 15-16); lockedRound 0 <= vr = 1: prevote Z.
    for i in others[:2]:
        c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 1, "precommit", NIL))
    c.on_timeout(1, 1, "precommit")
    assert c.round == 2
    b, h = block(1, "Z")
    acts = c.on_proposal(sign_proposal(KEYS[(1 + 2) % 4], CHAIN, 1, 2, b, h, 1))
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [h]


def test_nil_polka_precommits_nil_lines_44_to_46() -> None:
    me = not_proposer(4, 1, range(1))
    c = make(4, me)
    c.start()
    acts = c.on_timeout(1, 0, "propose")  # lines 57-60
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [NIL]
    acts = []
    for i in [i for i in range(4) if i != me][:2]:
        acts += c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "prevote", NIL))
    assert [v.block_hash for v in my_votes(acts, "precommit")] == [NIL]


def test_decides_on_a_quorum_of_precommits_of_an_earlier_round_line_49() -> None:
    me = not_proposer(4, 1, range(2))
    c = make(4, me)
    c.start()
    c.on_timeout(1, 0, "propose")
    px = prop(4, 1, 0, "X")
    c.on_proposal(px)  # too late for round 0's prevote, but the value is now known
    others = [i for i in range(4) if i != me]
    acts = []
    for i in others:
        acts += c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "precommit", px.block_hash))
    commits = [a for a in acts if isinstance(a, Commit)]
    assert [(k.height, k.block_hash) for k in commits] == [(1, px.block_hash)]
    assert c.height == 2


# --------------------------------------------------------------------------- rounds and timeouts


def test_round_skip_on_f_plus_one_messages_of_a_higher_round() -> None:
    me = not_proposer(4, 1, range(1))
    c = make(4, me)
    c.start()
    others = [i for i in range(4) if i != me]
    c.on_vote(sign_vote(KEYS[others[0]], CHAIN, 1, 3, "prevote", NIL))
    assert c.round == 0  # f = 1 message is not enough
    acts = c.on_vote(sign_vote(KEYS[others[1]], CHAIN, 1, 3, "precommit", NIL))
    assert c.round == 3  # lines 55-56
    assert any(isinstance(a, ScheduleTimeout) and a.round == 3 for a in acts) or any(isinstance(a, Broadcast) for a in acts)


def test_timeouts_grow_linearly_with_the_round() -> None:
    assert [T.duration("propose", r) for r in range(3)] == [300, 350, 400]
    assert [T.duration("prevote", r) for r in range(3)] == [100, 150, 200]
    assert T.duration("precommit", 4) == 300
    me = not_proposer(7, 1, range(4))
    c = make(7, me)
    seen = [a.duration_ms for a in c.start() if isinstance(a, ScheduleTimeout)]
    for r in range(3):
        c.on_timeout(1, r, "propose")
        c.on_timeout(1, r, "prevote")  # not yet scheduled by us, but a late call is harmless
        acts = c.on_timeout(1, r, "precommit")
        seen += [a.duration_ms for a in acts if isinstance(a, ScheduleTimeout) and a.step == "propose"]
    assert seen == [300, 350, 400, 450]


def test_stale_timeouts_are_ignored() -> None:
    me = not_proposer(4, 1, range(1))
    c = make(4, me)
    c.start()
    assert c.on_timeout(1, 5, "propose") == [] and c.on_timeout(7, 0, "propose") == []
    assert c.step == "propose"


# --------------------------------------------------------------------------- faults


def test_equivocating_voter_is_recorded_as_evidence() -> None:
    c = make(4, 0)
    c.start()
    a = sign_vote(KEYS[2], CHAIN, 1, 0, "prevote", block(1, "A")[1])
    b = sign_vote(KEYS[2], CHAIN, 1, 0, "prevote", NIL)
    assert c.on_vote(a) == [] or True
    acts = c.on_vote(b)
    reports = [x for x in acts if isinstance(x, ReportEvidence)]
    assert len(reports) == 1 and len(c.evidence) == 1
    ev = c.evidence[0]
    assert (ev.vote_a, ev.vote_b, ev.validator) == (a, b, KEYS[2].public)
    assert ev.to_dict()["a"]["block"] == a.block_hash
    c.on_vote(b)  # the same pair again: no second record
    assert len(c.evidence) == 1


def test_equivocating_proposer_is_recorded_as_evidence() -> None:
    me = not_proposer(4, 1, range(1))
    c = make(4, me)
    c.start()
    c.on_proposal(prop(4, 1, 0, "A"))
    c.on_proposal(prop(4, 1, 0, "B"))
    assert len(c.evidence) == 1 and c.evidence[0].validator == KEYS[1].public


def test_messages_from_non_validators_and_bad_signatures_are_refused() -> None:
    c = make(4, 0)
    c.start()
    outsider = KEYS[6]
    with pytest.raises(InputError) as e:
        c.on_vote(sign_vote(outsider, CHAIN, 1, 0, "prevote", NIL))
    assert e.value.code == "not_validator"
    b, h = block(1, "O")
    with pytest.raises(InputError):
        c.on_proposal(sign_proposal(outsider, CHAIN, 1, 0, b, h))
    good = sign_vote(KEYS[2], CHAIN, 1, 0, "prevote", NIL)
    forged = Vote(good.chain, good.height, good.round, good.step, h, good.validator, good.sig)
    with pytest.raises(SignatureError):
        c.on_vote(forged)
    with pytest.raises(InputError) as e:
        c.on_proposal(sign_proposal(KEYS[3], CHAIN, 1, 0, b, h))  # not the proposer of (1, 0)
    assert e.value.code == "wrong_proposer"
    other_chain = tagged_hash(GENESIS_TAG, {"other": 1})
    with pytest.raises(InputError) as e:
        c.on_vote(sign_vote(KEYS[2], other_chain, 1, 0, "prevote", NIL))
    assert e.value.code == "wrong_chain"
    assert c.evidence == []


def test_future_height_messages_are_buffered_and_replayed() -> None:
    me = not_proposer(4, 2, range(1))
    c = make(4, me)
    c.start()
    p2 = prop(4, 2, 0, "H2")
    assert c.on_proposal(p2) == []  # height 2 while at 1: buffered
    assert c.on_vote(sign_vote(KEYS[0], CHAIN, 9, 0, "prevote", NIL)) == []  # far ahead: ignored
    c.advance(1)  # the driver stored block 1 by catch-up
    assert c.height == 2
    acts = c.on_timeout(2, 0, "commit")
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [p2.block_hash]


# --------------------------------------------------------------------------- restart


def test_restart_never_signs_a_conflicting_or_lower_message() -> None:
    me = not_proposer(4, 1, range(1))
    c = make(4, me)
    c.start()
    px = prop(4, 1, 0, "X")
    acts = c.on_proposal(px)
    last = [a for a in acts if isinstance(a, PersistSigned)][-1]
    assert (last.height, last.round, last.step, last.block_hash) == (1, 0, "prevote", px.block_hash)
    # Restart from the persisted record (through its dict form, as a driver stores it).
    r = make(4, me, last_signed=PersistSigned.from_dict(last.to_dict()).to_dict())
    r.start()
    py = prop(4, 1, 0, "Y")  # an equivocating proposer shows us another value
    assert my_votes(r.on_proposal(py), "prevote") == []
    assert my_votes(r.on_timeout(1, 0, "propose"), "prevote") == []  # nil would conflict too
    # A record further on: nothing at or below (1, 2, prevote) is signed any more.
    later = PersistSigned(1, 2, "prevote", NIL)
    r2 = make(4, me, last_signed=later)
    acts = r2.start()
    assert r2.round == 2
    for i in [i for i in range(4) if i != me][:3]:
        acts += r2.on_vote(sign_vote(KEYS[i], CHAIN, 1, 1, "prevote", NIL))
    assert all(m.round >= 2 for m in broadcasts(acts))


def test_restart_keeps_the_lock_and_its_proof() -> None:
    c, me, px = _lock_on_x()
    last = c.last_signed
    assert last is not None and last.locked_round == 0 and len(last.lock_proof) >= 3
    r = make(4, me, last_signed=last.to_dict())
    assert (r.locked_round, r.locked_hash, r.valid_round) == (0, px.block_hash, 0)
    r.start()
    others = [i for i in range(4) if i != me]
    for i in others[:2]:
        r.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "precommit", NIL))
    r.on_timeout(1, 0, "precommit")
    acts = r.on_proposal(prop(4, 1, 1, "Y"))
    assert [v.block_hash for v in my_votes(acts, "prevote")] == [NIL]
    # It can still prove its polka to others.
    held = {(m.validator, m.block_hash) for m in r.gossip_messages() if isinstance(m, Vote) and m.round == 0}
    assert sum(1 for _, h in held if h == px.block_hash) >= 3


def test_observer_without_a_key_follows_and_commits() -> None:
    obs = Consensus(CHAIN, validators(4), None, App(), 1, timeouts=T)
    assert obs.start() == [ScheduleTimeout(1, 0, "propose", 300)]
    nodes = [make(4, i) for i in range(4)]
    commits = run_network([*nodes, obs], until_height=2)
    assert [c.block_hash for c in commits[4]] == [c.block_hash for c in commits[0]][:len(commits[4])]
    assert obs.height >= 3 and obs.last_signed is None


# --------------------------------------------------------------------------- certificates and wire


def _certificate() -> Commit:
    nodes = [make(4, i) for i in range(4)]
    return run_network(nodes, until_height=1)[0][0]


def test_certificate_verifies_and_fails_when_tampered() -> None:
    c = _certificate()
    cert, vals = c.certificate, validators(4)
    verify_certificate(CHAIN, vals, 1, c.block_hash, cert)
    votes = cert["votes"]
    short = dict(cert, votes=votes[:2])  # one vote removed: 2 < 3
    with pytest.raises(CertificateError):
        verify_certificate(CHAIN, vals, 1, c.block_hash, short)
    bad = dict(votes[0], sig=votes[1]["sig"])
    with pytest.raises(CertificateError):
        verify_certificate(CHAIN, vals, 1, c.block_hash, dict(cert, votes=[bad, *votes[1:]]))
    dup = dict(cert, votes=[votes[0], votes[0], votes[1]])
    with pytest.raises(CertificateError):
        verify_certificate(CHAIN, vals, 1, c.block_hash, dup)
    with pytest.raises(CertificateError):
        verify_certificate(CHAIN, vals, 1, block(1, "other")[1], cert)
    with pytest.raises(CertificateError):
        verify_certificate(CHAIN, vals, 2, c.block_hash, cert)
    outsider = sign_vote(KEYS[6], CHAIN, 1, cert["round"], "precommit", c.block_hash)
    with pytest.raises(CertificateError):
        verify_certificate(CHAIN, vals, 1, c.block_hash,
                           dict(cert, votes=[*votes[:2], {"validator": outsider.validator, "sig": outsider.sig}]))
    with pytest.raises(CertificateError):
        verify_certificate(CHAIN, vals, 1, c.block_hash, {"height": 1})


def test_messages_round_trip_through_dicts() -> None:
    p = prop(4, 1, 2, "W", vr=1)
    v = sign_vote(KEYS[1], CHAIN, 1, 2, "precommit", p.block_hash)
    assert message_from_dict(p.to_dict()) == p and Proposal.from_dict(p.to_dict()) == p
    assert message_from_dict(v.to_dict()) == v and Vote.from_dict(v.to_dict()) == v
    assert v.to_dict()["block"] == p.block_hash
    for broken in ({**v.to_dict(), "step": "commit"}, {**v.to_dict(), "height": "1"}, {**p.to_dict(), "valid_round": 2},
                   {"type": "other"}, []):
        with pytest.raises(InputError):
            message_from_dict(broken)
    ps = PersistSigned(3, 1, "precommit", p.block_hash, 1, p.block_hash, p.block, (v,))
    assert PersistSigned.from_dict(ps.to_dict()).to_dict() == ps.to_dict()


def test_a_decision_ends_the_event_before_the_app_is_asked_about_the_next_height() -> None:
    class Recording(App):
        def __init__(self) -> None:
            super().__init__("rec")
            self.asked: list[int] = []

        def propose(self, height: int, round: int) -> tuple[Any, str]:
            self.asked.append(height)
            return super().propose(height, round)

        def valid(self, b: Any, h: str, height: int) -> bool:
            self.asked.append(height)
            return super().valid(b, h, height)

    me = not_proposer(4, 1, range(1))
    app = Recording()
    c = Consensus(CHAIN, validators(4), KEYS[me], app, 1, timeouts=T)
    c.start()
    others = [i for i in range(4) if i != me]
    # f+1 messages of height 2, round 3 arrive early: buffered.
    for i in others[:2]:
        c.on_vote(sign_vote(KEYS[i], CHAIN, 2, 3, "prevote", NIL))
    px = prop(4, 1, 0, "X")
    c.on_proposal(px)
    acts = []
    for i in others:
        acts += c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "precommit", px.block_hash))
    k = next(i for i, a in enumerate(acts) if isinstance(a, Commit))
    assert all(isinstance(a, ScheduleTimeout | ReportEvidence) for a in acts[k + 1:])
    assert 2 not in app.asked and c.height == 2 and c.round == 0
    c.on_timeout(2, 0, "commit")  # next event: the round skip of line 55 happens now
    assert c.round == 3


def test_restart_resends_what_it_signed_and_why_it_is_in_its_round() -> None:
    me = not_proposer(4, 1, range(2))
    c = make(4, me)
    c.start()
    c.on_timeout(1, 0, "propose")  # prevote nil
    others = [i for i in range(4) if i != me]
    c.on_vote(sign_vote(KEYS[others[0]], CHAIN, 1, 0, "prevote", NIL))
    c.on_vote(sign_vote(KEYS[others[1]], CHAIN, 1, 0, "prevote", NIL))  # precommit nil (line 44)
    pcs = [sign_vote(KEYS[i], CHAIN, 1, 0, "precommit", NIL) for i in others[:2]]
    for v in pcs:
        c.on_vote(v)
    c.on_timeout(1, 0, "precommit")  # round 1 (line 65), justified by 3 precommits
    c.on_timeout(1, 1, "propose")  # prevote nil in round 1: persisted with its justification
    last = c.last_signed
    assert last is not None and (last.round, last.step) == (1, "prevote")
    assert {m.round for m in last.signed} == {0, 1} and len(last.signed) == 3
    assert set(pcs) <= set(last.round_proof)
    r = make(4, me, last_signed=PersistSigned.from_dict(last.to_dict()))
    r.start()
    assert (r.round, r.step) == (1, "prevote")
    held = set(r.gossip_messages())
    assert set(last.signed) <= held and set(pcs) <= held


def test_a_garbled_copy_of_a_proposal_does_not_hide_its_value() -> None:
    """A proposal signs its block's hash, not the block: a faulty peer can relay it with another
    block. The node prevotes nil on the garbled copy (valid(v) fails), and takes the value
    once a true copy arrives, even as a duplicate of the same proposal (lines 22, 36)."""
    me = not_proposer(4, 1, range(2))
    c = make(4, me)
    c.start()
    px = prop(4, 1, 0, "X")
    garbled = dataclasses.replace(px, block={"height": 1, "payload": "garbled"})
    assert [v.block_hash for v in my_votes(c.on_proposal(garbled), "prevote")] == [NIL]
    acts = []
    for i in [i for i in range(4) if i != me]:
        acts += c.on_vote(sign_vote(KEYS[i], CHAIN, 1, 0, "prevote", px.block_hash))
    assert my_votes(acts, "precommit") == [] and c.locked_round == -1  # a polka, but no valid block yet
    acts = c.on_proposal(px)
    assert [v.block_hash for v in my_votes(acts, "precommit")] == [px.block_hash]
    assert (c.locked_round, c.locked_hash) == (0, px.block_hash)
