"""Conformance: every signature of an honest node is one Algorithm 1 allows.

The simulator's other invariants (agreement, validity, certificates, durability, liveness)
look at outcomes; a core may break a rule of Algorithm 1 (Buchman, Kwon, Milosevic 2018,
arXiv 1807.04938) for a long time before an outcome shows it. ``Conformance`` watches each
honest node from outside the core: what was delivered to it and accepted (with the virtual
time and the event), what it signed, and when its timeouts could have expired. At each new
signature it checks that Algorithm 1 allows it, given only those observations:

- prevote id(v) in round r (lines 22-33): a proposal of round r for id(v) was received, a
  block with hash id(v) that is valid(v) was received, and either its valid round is -1 and
  the node is not locked on another value, or 2f+1 prevotes for id(v) in that valid round
  were received and the node's lock is not above it (or is on v);
- prevote nil, other than on timeoutPropose (lines 26, 32): a received proposal of the
  round was enabled (valid round -1, or its polka received) and Algorithm 1 rejects it;
- precommit id(v) (line 36): the node prevoted in the round, 2f+1 prevotes for id(v) of the
  round were received, and a valid block with that hash;
- precommit nil (lines 44, 61): the node prevoted in the round, and 2f+1 nil prevotes of
  the round were received, or timeoutPrevote(r) has run out since both the node's prevote
  and the 2f+1-th prevote of the round (line 34 starts it then, not before);
- anything signed in round r > 0 (lines 47, 55, 65): f+1 validators' messages of round r
  were received, or timeoutPrecommit(r - 1) has run out since the 2f+1-th precommit of
  round r - 1;
- line 55 is an obligation too: a node never signs in round r once messages of a higher
  round from f+1 validators were delivered to it (in this incarnation, in earlier events,
  at its height): it must have moved up first;
- one value per (height, round, step), and a decided block is itself valid(v) (not only
  its hash).

The node's lock is what Algorithm 1 makes it: the round and value of its last precommit for
a value at the height (lines 36-41 lock exactly when they precommit). Observations are kept
across crashes (a restarted node may rely only on less), so every check is a necessary
condition: a correct core never fails one, whatever the scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.blocks import max_faulty, quorum
from ledger.keys import SigningKey

from .consensus import NIL, PRECOMMIT, PREVOTE, PROPOSE, Proposal, Timeouts, Vote


class Node(Protocol):
    """What the checker reads of a simulated node (``node.sim.Node``; named here, not
    imported: ``node.sim`` imports this module)."""

    idx: int
    key: SigningKey

    def valid(self, block: Any, bhash: str, height: int) -> bool: ...


class Simulation(Protocol):
    """What the checker reads of the simulation (``node.sim.Simulation``)."""

    f: int
    quorum: int
    now: float

    def violation(self, kind: str, detail: str) -> Exception: ...

__all__ = ["Conformance"]


@dataclass
class _Height:
    """What one honest node saw and signed at one height (across incarnations)."""

    # (round, step) -> validator -> value -> virtual time first received (own votes too)
    votes: dict[tuple[int, str], dict[str, dict[str, float]]] = field(default_factory=dict)
    proposals: dict[int, list[Proposal]] = field(default_factory=dict)  # round -> received
    blocks: dict[str, list[Any]] = field(default_factory=dict)  # hash -> every block seen with it
    buffered: set[tuple[int, str, str]] = field(default_factory=set)  # proposals held for the height
    senders: dict[int, set[str]] = field(default_factory=dict)  # round -> validators heard from
    own: dict[tuple[int, str], tuple[str, float]] = field(default_factory=dict)  # (round, step) -> (value, time)
    # this incarnation, delivered at this height: round -> validator -> event index
    fresh: dict[int, dict[str, int]] = field(default_factory=dict)


class Conformance:
    def __init__(self, sim: Simulation, timeouts: Timeouts) -> None:
        self.sim = sim
        self.timeouts = timeouts
        self.q = sim.quorum  # of the height being checked (signed())
        self.f = sim.f
        self.views: dict[tuple[int, int], _Height] = {}  # (node, height) -> view
        self.event: tuple[int, Any] = (0, None)  # (index, (height, round, step) of a timer or None)

    def _view(self, nd: Node, height: int) -> _Height:
        v = self.views.get((nd.idx, height))
        if v is None:
            v = self.views[(nd.idx, height)] = _Height()
        return v

    def _fail(self, nd: Node, what: str) -> None:
        raise self.sim.violation("conformance", f"node {nd.idx} {what}")

    # ---------------------------------------------------------------- observations

    def booted(self, nd: Node) -> None:
        """A new incarnation remembers only what it persisted: forget its fresh messages."""
        for (i, _), v in self.views.items():
            if i == nd.idx:
                v.fresh.clear()

    def received(self, nd: Node, msg: Vote | Proposal, core_height: int) -> None:
        """The core accepted ``msg`` (it did not raise)."""
        v = self._view(nd, msg.height)
        now = self.sim.now
        if isinstance(msg, Vote):
            signer = msg.validator
            v.votes.setdefault((msg.round, msg.step), {}).setdefault(signer, {}).setdefault(msg.block_hash, now)
        else:
            signer = msg.proposer
            v.proposals.setdefault(msg.round, []).append(msg)
            key = (msg.round, msg.proposer, msg.block_hash)
            if msg.height == core_height or key not in v.buffered:  # one copy of a buffered message
                v.buffered.add(key)
                v.blocks.setdefault(msg.block_hash, []).append(msg.block)
        v.senders.setdefault(msg.round, set()).add(signer)
        if msg.height == core_height:
            v.fresh.setdefault(msg.round, {}).setdefault(signer, self.event[0])

    def committed(self, nd: Node, height: int, block: Any, bhash: str) -> None:
        if not nd.valid(block, bhash, height):
            self._fail(nd, f"decides a block at height {height} that is not valid(v) for its hash {bhash[:12]}")

    # ---------------------------------------------------------------- helpers

    def _sizes(self, nd: Node, height: int) -> tuple[int, int]:
        """2f+1 and f of the validator set of ``height``, as the node's chain gives it."""
        at = getattr(nd, "validators_at", None)  # a simulator whose blocks change the set
        if at is None:
            return self.sim.quorum, self.sim.f
        n = len(at(height))
        return quorum(n), max_faulty(n)

    def _drop_outsiders(self, nd: Node, v: _Height, height: int) -> None:
        """Forget what the core held for ``height`` before it knew its set and dropped on
        entering it: messages of keys outside the set, proposals of another proposer."""
        at = getattr(nd, "validators_at", None)
        if at is None:
            return
        vs = at(height)
        members = set(vs)
        for by in v.votes.values():
            for key in [k for k in by if k not in members]:
                del by[key]
        for r, ps in v.proposals.items():
            ps[:] = [p for p in ps if p.proposer == vs[(height + r) % len(vs)]]
        for senders in v.senders.values():
            senders &= members
        for fresh in v.fresh.values():
            for key in [k for k in fresh if k not in members]:
                del fresh[key]

    def _count(self, v: _Height, r: int, step: str, value: str) -> int:
        return sum(value in by for by in v.votes.get((r, step), {}).values())

    def _quorum_time(self, v: _Height, r: int, step: str) -> float | None:
        """When the 2f+1-th distinct validator's vote of (round, step) was received."""
        firsts = sorted(min(by.values()) for by in v.votes.get((r, step), {}).values())
        return firsts[self.q - 1] if len(firsts) >= self.q else None

    def _lock(self, v: _Height) -> tuple[int, str]:
        """Algorithm 1's lock: the last precommit for a value at the height."""
        rounds = [r for (r, step), (x, _) in v.own.items() if step == PRECOMMIT and x != NIL]
        if not rounds:
            return -1, NIL
        r = max(rounds)
        return r, v.own[(r, PRECOMMIT)][0]

    def _valid_known(self, nd: Node, v: _Height, height: int, bhash: str) -> bool:
        return any(nd.valid(b, bhash, height) for b in v.blocks.get(bhash, ()))

    def _accepts(self, nd: Node, v: _Height, p: Proposal, lock: tuple[int, str]) -> bool | None:
        """Lines 22-33 for proposal ``p``: True (prevote it), False (prevote nil), None (not enabled)."""
        lr, lv = lock
        if p.valid_round == -1:
            unlocked = lr == -1 or lv == p.block_hash
        elif self._count(v, p.valid_round, PREVOTE, p.block_hash) >= self.q:
            unlocked = lr <= p.valid_round or lv == p.block_hash
        else:
            return None
        return unlocked and self._valid_known(nd, v, p.height, p.block_hash)

    # ---------------------------------------------------------------- the check

    def signed(self, nd: Node, m: Vote | Proposal) -> None:
        """An honest node's new signature (a Broadcast of its core), checked, then recorded."""
        h, r = m.height, m.round
        v = self._view(nd, h)
        self.q, self.f = self._sizes(nd, h)
        self._drop_outsiders(nd, v, h)
        step = m.step if isinstance(m, Vote) else PROPOSE
        before = v.own.get((r, step))
        if before is not None:
            if before[0] != m.block_hash:
                self._fail(nd, f"signs two values for {h}/{r}/{step}")
            return  # the same signature again (after a restart)
        now = self.sim.now
        where = f"{step} {m.block_hash[:8] or 'nil'} at {h}/{r}"
        self._check_round(nd, v, h, r, now, where)
        if isinstance(m, Vote) and step == PREVOTE:
            self._check_prevote(nd, v, m, where)
        elif isinstance(m, Vote):
            self._check_precommit(nd, v, m, now, where)
        v.own[(r, step)] = (m.block_hash, now)
        if isinstance(m, Vote):
            v.votes.setdefault((r, step), {}).setdefault(m.validator, {}).setdefault(m.block_hash, now)
        else:
            v.proposals.setdefault(r, []).append(m)
            v.blocks.setdefault(m.block_hash, []).append(m.block)
        v.senders.setdefault(r, set()).add(nd.key.public)

    def _check_round(self, nd: Node, v: _Height, h: int, r: int, now: float, where: str) -> None:
        event = self.event[0]
        higher = [q for q, s in v.fresh.items() if q > r and sum(e < event for e in s.values()) >= self.f + 1]
        if higher:
            self._fail(nd, f"signs {where} although f+1 validators' messages of round {max(higher)} had "
                           "reached it (line 55: it must start that round first)")
        if r == 0 or len(v.senders.get(r, ())) >= self.f + 1:
            return
        t = self._quorum_time(v, r - 1, PRECOMMIT)
        if t is None or now < t + self.timeouts.duration(PRECOMMIT, r - 1):
            self._fail(nd, f"signs {where} without f+1 messages of the round (line 55) or timeoutPrecommit "
                           f"after 2f+1 precommits of round {r - 1} (lines 47, 65)")

    def _check_prevote(self, nd: Node, v: _Height, m: Vote, where: str) -> None:
        lock = self._lock(v)
        props = v.proposals.get(m.round, ())
        if m.block_hash != NIL:
            if not any(p.block_hash == m.block_hash and self._accepts(nd, v, p, lock) for p in props):
                self._fail(nd, f"signs {where}: no proposal of the round that lines 22-33 accept for it "
                               f"(lock {lock[0]}/{lock[1][:8]})")
            return
        timer = self.event[1]
        if timer == (m.height, m.round, PROPOSE):
            return  # line 59
        if not any(self._accepts(nd, v, p, lock) is False for p in props):
            self._fail(nd, f"signs {where} before timeoutPropose, and no proposal of the round that lines "
                           f"26/32 reject (lock {lock[0]}/{lock[1][:8]})")

    def _check_precommit(self, nd: Node, v: _Height, m: Vote, now: float, where: str) -> None:
        r = m.round
        mine = v.own.get((r, PREVOTE))
        if mine is None:
            self._fail(nd, f"signs {where} without having prevoted in the round (step = prevote)")
            return
        if m.block_hash != NIL:
            if self._count(v, r, PREVOTE, m.block_hash) < self.q or not self._valid_known(nd, v, m.height, m.block_hash):
                self._fail(nd, f"signs {where} without 2f+1 prevotes for a valid value of the round (line 36)")
            return
        if self._count(v, r, PREVOTE, NIL) >= self.q:
            return  # line 44
        t = self._quorum_time(v, r, PREVOTE)
        if t is None or now < max(t, mine[1]) + self.timeouts.duration(PREVOTE, r):
            self._fail(nd, f"signs {where} without 2f+1 nil prevotes (line 44) or timeoutPrevote since its "
                           "prevote and 2f+1 prevotes of the round (lines 34, 61)")
