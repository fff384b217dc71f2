"""Deterministic simulation of n validators running the real consensus core.

One seed drives everything (``random.Random(seed)``): the scenario, the network (delays,
drops, duplicates, reordering, partitions), crashes and restarts, pauses and Byzantine
validators. Time is virtual (milliseconds) and advances through one event queue, so a run
is exactly reproducible::

    python -m node.sim --seed 1234                 # replay one seed, print what happened
    python -m node.sim --seeds 20000 --jobs 2      # a campaign (scripts/simulate wraps it)

Invariants checked on every run (a breach raises ``SimViolation`` naming seed and scenario):

1. agreement: no two honest nodes finalize different blocks at one height;
2. certificates: every finalized block carries a PROTOCOL.md 6 certificate that verifies
   against the validator set of its height (the set after the block below, PROTOCOL.md 9.1,
   as the node storing it derived it from its own chain);
3. durability: an honest node's finalized chain only ever grows by the next height, across
   crashes and restarts (what it persisted is what it has);
4. liveness: with at most f faulty validators and the network healed, every honest node
   finalizes new heights within a bounded virtual time (``STALL_MS``);
5. conformance: every signature of an honest node is one Algorithm 1 allows, given what was
   delivered to it and when (``node.sim_checks``).

The driver here is the model for the daemon's: it persists ``PersistSigned`` before
sending, stores ``Commit`` blocks, re-creates the core from what it persisted on restart,
re-broadcasts ``gossip_messages()`` when a height makes no progress, and catches up by
fetching blocks with certificates that it verifies before ``advance``.

In the membership scenarios (``MEMBERSHIP_SCENARIOS``) blocks carry validator changes
(``validator.add``, ``validator.remove``, ``validator.replace``, PROTOCOL.md 9.3) on a schedule
drawn from the seed; every node derives the set of each height from its own chain and gives
it to its core (``validators_for``). Nodes that are not in a height's set run as followers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import itertools
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ledger.blocks import max_faulty, quorum
from ledger.canonical import BLOCK_TAG, GENESIS_TAG, tagged_hash
from ledger.errors import LedgerError
from ledger.keys import SigningKey

from .consensus import (
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
    sign_proposal,
    sign_vote,
    verify_certificate,
)
from .mutants import MUTANTS, Livelock
from .sim_checks import Conformance

__all__ = ["MEMBERSHIP_SCENARIOS", "SCENARIOS", "Caught", "Result", "SimViolation", "Simulation", "apply_changes", "hunt",
           "main", "run", "run_seed"]

_FIXED_SET_SCENARIOS = (
    "happy", "lossy", "halves", "isolated", "asymmetric", "ring", "crash", "pause",
    "byz_proposer", "byz_voter", "byz_silent", "byz_mirror", "byz_relock", "byz_skip", "mixed",
    "byz_minority", "byz_late", "byz_poison",
)
# Scenarios whose blocks change the validator set (``_membership_plan``).
MEMBERSHIP_SCENARIOS = ("churn", "churn_rounds", "churn_lag", "set_swap", "byz_former", "rival_changes")
SCENARIOS = _FIXED_SET_SCENARIOS + MEMBERSHIP_SCENARIOS
BYZ_MODES = ("equivocate_proposal", "equivocate_vote", "silent", "mirror", "relock", "skip")
_BYZ_SCENARIOS = {"byz_proposer": "equivocate_proposal", "byz_voter": "equivocate_vote", "byz_silent": "silent",
                  "byz_mirror": "mirror", "byz_relock": "relock", "byz_skip": "skip", "byz_minority": "minority",
                  "byz_late": "late", "byz_poison": "poison"}
TIMEOUTS = Timeouts(propose=150, prevote=60, precommit=60, delta=40, commit=40)
GOSSIP_MS = 300  # a node re-sends its height's messages if it made no progress for this long
SYNC_EVERY_MS = 150  # at most one catch-up request per node per this long
SYNC_BATCH = 32  # blocks per catch-up answer
LATE_MS = 40.0  # byz_late: the delay of the proposal held back, within the bound (max_delay)
STALL_MS = 30_000  # liveness bound after the network heals
_MAX_EVENTS = 2_000_000

# Event kinds in the queue.
_DELIVER, _TIMER, _GOSSIP, _CONTROL = 0, 1, 2, 3


class SimViolation(AssertionError):
    """An invariant failed. ``kind`` is agreement | validity | certificate | durability |
    liveness | conformance (node/sim_checks.py), or ``error``: the core or the simulator raised."""

    def __init__(self, kind: str, seed: int, scenario: str, detail: str, overrides: str = "",
                 mutant: str | None = None) -> None:
        self.kind, self.seed, self.scenario, self.detail = kind, seed, scenario, detail
        extra = f" (with Simulation overrides{overrides})" if overrides else ""
        planted = f" --mutant {mutant}" if mutant else ""
        super().__init__(
            f"{kind} violation, seed={seed} scenario={scenario}: {detail}\n"
            f"  replay: python -m node.sim --seed {seed} --scenario {scenario}{planted} -v{extra}"
        )


@dataclass
class Result:
    seed: int
    scenario: str
    n: int  # validators in the genesis
    byzantine: dict[int, str]
    height: int  # lowest finalized height among honest nodes at the end
    virtual_ms: float
    events: int
    evidence: int
    rejected: int
    violation: str | None = None
    kind: str | None = None
    changes: int = 0  # decided blocks that changed the validator set


@dataclass
class Split:
    """byz_minority: the height whose round 0 a Byzantine validator proposes with two values."""

    height: int
    again: int  # the next round of the height with a Byzantine proposer: it re-proposes v
    target: int  # the honest node that decides w in round 0
    majority: tuple[int, ...]  # f + 1 honest nodes shown w (the target among them)
    minority: tuple[int, ...]  # the other f honest nodes, shown v
    below: bool  # v has a polka in round 0, below the lock on w (round 1); else f + f prevotes
    v: Any = None  # the minority value (a block)
    v_hash: str = ""
    support: tuple[Vote, ...] = ()  # the Byzantine prevotes for v in round 0
    active: bool = True
    done: frozenset[int] = frozenset()  # rounds of the height already played
    prompt: dict[tuple[int, int], set[int]] = field(default_factory=dict)  # (round, node) -> prompt senders


@dataclass(frozen=True, slots=True)
class SyncRequest:
    from_height: int


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    blocks: tuple[tuple[Any, str, dict[str, Any]], ...]  # (block, hash, certificate)


_KEYS: list[SigningKey] = []


def keys(n: int) -> list[SigningKey]:
    """Fixed validator keys (the same in every run, so signatures repeat across seeds)."""
    while len(_KEYS) < n:
        _KEYS.append(SigningKey.from_seed(hashlib.sha256(b"provledger-sim-%d" % len(_KEYS)).digest()))
    return _KEYS[:n]


def chain_id(n: int) -> str:
    return tagged_hash(GENESIS_TAG, {"v": 1, "name": f"sim-{n}"})


def block_hash(block: dict[str, Any]) -> str:
    return tagged_hash(BLOCK_TAG, block)


def planned_changes(plan: dict[int, list[list[tuple[Any, ...]]]], pub: list[str]) -> dict[int, list[list[dict[str, Any]]]]:
    """A plan by node index in the form blocks carry changes (PROTOCOL.md 9.3, without pop)."""
    def form(o: tuple[Any, ...]) -> dict[str, Any]:
        if o[0] == "add":
            return {"op": "validator.add", "key": pub[o[1]]}
        if o[0] == "remove":
            return {"op": "validator.remove", "key": pub[o[1]]}
        return {"op": "validator.replace", "old": pub[o[1]], "new": pub[o[2]]}

    return {h: [[form(o) for o in ops] for ops in opts] for h, opts in plan.items()}


def apply_changes(validators: tuple[str, ...], ever: frozenset[str], ops: list[Any]
                  ) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """The set after ``ops`` in order, and the keys that ever were validators; None if one is
    invalid (PROTOCOL.md 9.3: an added or new key never was a validator, a removed or old one
    is current, the set never becomes empty; an added key goes last, a new one takes the place
    of the old)."""
    cur, seen = list(validators), set(ever)
    for o in ops:
        kind = o.get("op") if type(o) is dict else None
        if kind == "validator.add" and set(o) == {"op", "key"} and o["key"] not in seen:
            cur.append(o["key"])
            seen.add(o["key"])
        elif kind == "validator.remove" and set(o) == {"op", "key"} and o["key"] in cur and len(cur) > 1:
            cur.remove(o["key"])
        elif (kind == "validator.replace" and set(o) == {"op", "old", "new"} and o["old"] in cur
              and o["new"] not in seen):
            cur[cur.index(o["old"])] = o["new"]
            seen.add(o["new"])
        else:
            return None
    return tuple(cur), frozenset(seen)


class Node:
    """One node (a validator at the heights whose set holds its key, else a follower): its
    persisted state ("disk") and, while up, its consensus core."""

    def __init__(self, sim: Simulation, idx: int, key: SigningKey, byz: str | None) -> None:
        self.sim, self.idx, self.key, self.byz = sim, idx, key, byz
        self.chain: list[tuple[Any, str, dict[str, Any]]] = []  # persisted finalized blocks
        # sets[h - 1]: the keys of the set certifying height h, derived from the chain (9.1)
        self.sets: list[tuple[str, ...]] = [tuple(sim.validators)]
        self.ever: frozenset[str] = frozenset(sim.validators)  # every key that was a validator
        self.synced: list[int] = []  # heights stored by catch-up (not decided by the core)
        self.last_signed: PersistSigned | None = None  # persisted before every send
        self.core: Consensus | None = None
        self.up = False
        self.paused = False
        self.held: list[tuple[int, Any, Any, Any]] = []
        self.incarnation = 0
        self.last_sync = -1e18
        self.gossip_mark = (-1, -1)

    # App callbacks (deterministic).
    def prev(self, height: int) -> str:
        return self.sim.chain if height == 1 else self.chain[height - 2][1]

    def propose(self, height: int, round: int) -> tuple[Any, str]:
        b: dict[str, Any] = {"height": height, "prev": self.prev(height), "proposer": self.key.public,
                             "payload": f"tx-{height}-{round}"}
        changes = self.sim.wanted(self, height, round)
        if changes:
            b["changes"] = changes
        return b, block_hash(b)

    def valid(self, block: Any, bhash: str, height: int) -> bool:
        return (
            type(block) is dict
            and block.get("height") == height
            and len(self.chain) == height - 1
            and block.get("prev") == self.prev(height)
            and block_hash(block) == bhash
            and ("changes" not in block or self.next_set(block) is not None)
        )

    def validators_at(self, height: int) -> tuple[str, ...]:
        """The set certifying ``height``: the core asks once block ``height - 1`` is stored."""
        assert len(self.sets) >= height, f"node {self.idx} asked for the set of {height} with {len(self.chain)} blocks"
        return self.sets[height - 1]

    def next_set(self, block: dict[str, Any]) -> tuple[tuple[str, ...], frozenset[str]] | None:
        """The set after ``block``'s changes (on top of our chain), or None if one is invalid."""
        ops = block.get("changes", [])
        if type(ops) is not list or ("changes" in block and not ops):
            return None
        return apply_changes(self.sets[-1], self.ever, ops)

    def boot(self) -> None:
        """(Re)create the core from what was persisted: committed height and last_signed."""
        self.up, self.paused, self.held = True, False, []
        self.incarnation += 1
        self.sim.checks.booted(self)
        h = len(self.chain) + 1
        self.core = self.sim.core_class(
            self.sim.chain, self.validators_at(h), self.key, self, h,
            last_signed=self.last_signed, timeouts=TIMEOUTS, validators_for=self.validators_at,
        )
        self.sim.apply(self, self.core.start())


class Simulation:
    def __init__(self, seed: int, scenario: str | None = None, *, byzantine: dict[int, str] | None = None,
                 n: int | None = None, check_liveness: bool = True, mutant: str | None = None) -> None:
        self.seed = seed
        self.mutant = mutant
        self.core_class: type[Consensus] = Consensus
        if mutant is not None:
            from .mutants import core_class

            self.core_class = core_class(mutant)
        self.rng = rng = random.Random(seed)
        # Draw everything even when the caller forces it, so that a forced scenario replays
        # the very run a campaign made with the same seed.
        drawn = rng.choice(_FIXED_SET_SCENARIOS)
        # The membership scenarios are drawn from a second generator, so that a seed of the
        # other scenarios replays the very run it made before they existed.
        pick = random.Random(f"membership-{seed}")
        if pick.random() < len(MEMBERSHIP_SCENARIOS) / len(SCENARIOS):
            drawn = pick.choice(MEMBERSHIP_SCENARIOS)
        self.scenario = scenario or drawn
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {', '.join(SCENARIOS)}")
        self.check_liveness = check_liveness
        drawn_n = rng.choice((1, 4, 4, 4, 7, 7) if self.scenario in ("happy", "lossy", "crash", "pause")
                             else (4, 4, 4, 7) if self.scenario == "byz_relock"
                             else (1, 2, 3, 4, 4, 7) if self.scenario in ("churn", "set_swap", "rival_changes")
                             else (4, 4, 7))
        self.overrides = "".join(
            f" {k}={v}" for k, v in (("n", n), ("byzantine", byzantine)) if v is not None
        )
        n = n if n is not None else drawn_n
        self.n = n
        self.f = max_faulty(n)
        self.chain = chain_id(n)
        # membership (``_membership_plan``): ``plan`` (set below), height -> the changes each
        # round's proposer wants
        self.late: dict[int, float] = {}  # node -> when it starts (from an empty database)
        self.trouble: dict[tuple[int, int], str] = {}  # (height, round) -> what the network does
        self.end_height = 0  # every honest node must reach it (the schedule's last change + 3)
        extra, drawn_byz, plan = 0, dict[int, str](), dict[int, list[list[tuple[Any, ...]]]]()
        if self.scenario in MEMBERSHIP_SCENARIOS:
            extra, drawn_byz, plan = self._membership_plan(n)
        ks = keys(n + extra)
        self.validators = [k.public for k in ks[:n]]  # the genesis set
        self.plan = planned_changes(plan, [k.public for k in ks])
        if self.scenario not in MEMBERSHIP_SCENARIOS:
            drawn_byz = self._pick_byzantine()
        self.byzantine = byzantine if byzantine is not None else drawn_byz
        self.nodes = [Node(self, i, ks[i], self.byzantine.get(i)) for i in range(n + extra)]
        self.honest = [nd for nd in self.nodes if nd.byz is None]
        self.now = 0.0
        self.queue: list[tuple[float, int, int, Any, Any, Any]] = []
        self.seq = 0
        self.events = 0
        # network model
        self.min_delay = 1.0
        self.max_delay = float(rng.choice((5, 20, 50)))
        self.drop = 0.0
        self.dup = 0.0
        self.blocked: set[tuple[int, int]] = set()
        # byz_relock: per (height, round, step), the nodes an honest vote reaches (None: all)
        self.vote_reach: dict[tuple[int, int, str], Any] | None = None
        self._precommits_let: dict[tuple[int, int, int], set[int]] = {}
        self._prevotes_let: dict[tuple[int, int, int], set[int]] = {}
        self.relock_target = -1
        self.split: Split | None = None  # byz_minority
        self.sync_down = False  # catch-up requests and answers are lost
        self.late_height: int | None = None  # byz_late: the height it plays
        self.poison_until = -1.0  # byz_poison: proposals are garbled until then
        self._victims: dict[tuple[int, int], frozenset[int]] = {}
        self._nil_rounds: dict[tuple[int, int], bool] = {}
        self._late_node: dict[int, int] = {}  # byz_late: round -> the honest node its proposal reaches late
        self._late_done: set[int] = set()
        self._withheld: Proposal | None = None
        self.quorum = quorum(n)
        self.blocks: dict[str, Any] = {}  # every proposed block by hash (the validity check)
        self.known: dict[int, dict[str, Any]] = {}  # height -> hash -> block, for Byzantine re-proposals
        # (height, hash) -> (round, validator) -> every prevote for a value that was sent
        self.prevotes: dict[tuple[int, str], dict[tuple[int, str], Vote]] = {}
        # bookkeeping for the invariants
        self.decided: dict[int, str] = {}
        self.set_of: dict[int, tuple[str, ...]] = {1: tuple(self.validators)}  # by the decided blocks
        self.changed: set[int] = set()  # decided heights whose block changed the set
        self.cert_ok: set[tuple[Any, ...]] = set()
        self.evidence = 0
        self.rejected = 0
        self.heal_at = 0.0
        self.log: list[str] = []
        self.verbose = False
        self.checks = Conformance(self, TIMEOUTS)  # every honest signature against Algorithm 1

    # ------------------------------------------------------------------ scenario

    def _pick_byzantine(self) -> dict[int, str]:
        s, rng = self.scenario, self.rng
        if not s.startswith("byz_") and s != "mixed":
            return {}
        count = self.f if s != "mixed" else rng.randint(0, self.f)
        if s == "byz_late" and count:  # the proposer of height 1 or 2, round 0, and f - 1 others
            first = rng.choice((1, 2))
            who = [first, *rng.sample([i for i in range(self.n) if i != first], count - 1)]
        else:
            who = rng.sample(range(self.n), count)
        mode = _BYZ_SCENARIOS.get(s)
        return {i: mode or rng.choice(BYZ_MODES) for i in who}

    def _setup(self) -> None:
        s, rng, n = self.scenario, self.rng, self.n
        if s in MEMBERSHIP_SCENARIOS:
            self._membership_setup()
            return
        t0 = rng.uniform(100, 800)  # when the trouble starts
        t1 = t0 + rng.uniform(500, 3000)  # when it ends
        heal = t1
        if s in ("lossy", "mixed", "byz_proposer", "byz_voter", "byz_silent", "byz_mirror", "byz_skip"):
            self.drop = rng.choice((0.0, 0.05, 0.1, 0.3)) if s != "lossy" else rng.uniform(0.05, 0.35)
            self.dup = rng.choice((0.0, 0.1, 0.3))
            self.max_delay = float(rng.choice((20, 50, 120)))
            self.at(t1, self._set_drop, 0.0)
        if s == "byz_relock":
            # Until t1 (gossip re-sends what was dropped afterwards) the network splits the
            # honest locks: the honest prevotes of a (height, round) reach everyone at once, or a
            # random subset at once and the others only later (delayed past the lock); the
            # honest precommits for a value reach the target, if there is one, and each other
            # node one short of a quorum, until the target has decided the height, then
            # everyone but the target (for another value than the target's); catch-up is down. So
            # the target may decide alone, while the others, locked on its value or not, go on
            # to rounds whose proposer is Byzantine (``relock_proposal``). After t1 the
            # Byzantine validators fall silent: the honest ones must then agree on their own,
            # through their valid values and valid rounds (lines 15-16, 28-29, 42-43).
            t1 = heal = t0 + rng.uniform(2500, 6000)
            self.relock_target = rng.choice([nd.idx for nd in self.honest]) if rng.random() < 0.6 else -1
            self.at(t0, self._set_reach, {})
            self.at(t1, self._set_reach, None)
            for i in self.byzantine:
                self.at(t1, self._silence, i)
        if s == "byz_minority" and self.byzantine:
            # A Byzantine proposer of round 0 splits the honest nodes: f + 1 of them (the
            # majority) get the value w and the Byzantine prevotes for w, so they lock on it, and
            # one of them, the target, gets the Byzantine precommits too and decides w; the
            # other f get v and the Byzantine prevotes for v, which then has f + f >= f + 1
            # prevotes in round 0, short of a polka. The next Byzantine proposer of the height
            # re-proposes v with valid round 0 and those prevotes: line 28 must refuse it (2f + 1
            # are needed), although the nodes locked in round 0 pass line 29. In the rounds
            # between, the Byzantine validators vote nil, so that the 2f honest nodes left at the
            # height (the target has moved on) get from round to round without a quorum of their
            # own. Catch-up is down until the end, so they cannot learn the target's decision.
            # Or (``below``) the lock is above v's valid round: in round 0 every honest node
            # prevotes v, but each gets only f of the other honest prevotes in time (and nil
            # from the Byzantine ones), so nobody locks; in round 1 the majority locks on a new
            # value w and the target decides it, the minority getting the prevotes late; v is
            # then re-proposed with valid round 0 and its polka: line 29 must refuse it to the
            # nodes locked in round 1.
            t1 = heal = t0 + rng.uniform(12_000, 15_000)
            below = rng.random() < 0.5
            h = next(h for h in itertools.count(2) if h % n in self.byzantine)
            again = next(r for r in itertools.count(1 + below) if (h + r) % n in self.byzantine)
            honest = [nd.idx for nd in self.honest]
            rng.shuffle(honest)
            self.split = Split(h, again, honest[0], tuple(honest[: self.f + 1]), tuple(honest[self.f + 1:]), below)
            self.sync_down = True
            self.at(t1, self._end_split)
        if s == "byz_poison" and self.byzantine:
            # A proposal signs its block's hash, not the block: until t1 the Byzantine
            # validators relay a garbled copy of every proposal (the signature intact, another
            # block) to up to f honest victims per round, so that it reaches them first, and the
            # true copy later (see ``poison_send``). Their own proposals go garbled to the
            # victims and true to the others, so that a polka and a decision can form without
            # the victims; in half of the rounds they precommit nil, so that the value is
            # re-proposed with its valid round. A victim must neither vote for nor decide a value
            # it only has a garbled block of (valid(v), lines 22-36 and 49), and must take the
            # value once the true block arrives.
            self.poison_until = t1 = heal = t0 + rng.uniform(1500, 4000)
        if s == "byz_late" and self.byzantine:
            # The network is within its bound from the start (the liveness clock runs from 0),
            # but at the height whose round 0 a Byzantine validator proposes it is adversarial
            # within that bound: every message takes min_delay, except that the proposal of each
            # honest round reaches one honest node (drawn per round) LATE_MS after it was sent.
            # That node then sees the round's polka, for a value it already knows, before the
            # proposal: it must still lock and precommit once the proposal arrives (lines 28 and
            # 36 with step = prevote). The Byzantine proposer of round 0 shows its value to all
            # but one honest node (which gets it only after it precommitted nil), so that the
            # round makes a polka but no decision; the Byzantine validators prevote whatever is
            # proposed and precommit nil.
            self.late_height = next(i for i in sorted(self.byzantine) if i in (1, 2))
            self.max_delay = max(self.max_delay, LATE_MS)
            heal = 0.0
        if s in ("halves", "mixed") and n > 1:
            side = set(rng.sample(range(n), n // 2))
            links = {(a, b) for a in range(n) for b in range(n) if (a in side) != (b in side)}
            self.at(t0, self._block, links)
            self.at(t1, self._block, set())
        if s == "isolated" and n > 1:
            x = rng.randrange(n)
            self.at(t0, self._block, {(a, b) for a in range(n) for b in range(n) if a != b and x in (a, b)})
            self.at(t1, self._block, set())
        if s == "asymmetric" and n > 1:
            if rng.random() < 0.5:  # one node hears nobody (or nobody hears it)
                x = rng.randrange(n)
                deaf = rng.random() < 0.5
                links = {(a, x) if deaf else (x, a) for a in range(n) if a != x}
            else:
                links = {(a, b) for a in range(n) for b in range(n) if a != b and rng.random() < 0.3}
            self.at(t0, self._block, links)
            self.at(t1, self._block, set())
        if s == "ring" and n > 1:
            k = n // 2  # i reaches i+1..i+k: with itself, a majority
            reach = {(a, (a + d) % n) for a in range(n) for d in range(1, k + 1)}
            self.at(t0, self._block, {(a, b) for a in range(n) for b in range(n) if a != b} - reach)
            self.at(t1, self._block, set())
        if s in ("crash", "mixed"):
            pool = [nd.idx for nd in self.honest]
            for i in rng.sample(pool, rng.randint(1, len(pool)) if s == "crash" else min(1, len(pool))):
                down = rng.uniform(t0, t1)
                up = rng.uniform(down, t1)
                self.at(down, self._crash, i)
                self.at(up, self._restart, i)
        if s == "pause":
            pool = [nd.idx for nd in self.honest]
            later = t0 + rng.uniform(3000, 6000)  # "much later"
            for i in rng.sample(pool, max(1, self.f) if n > 1 else 1):
                self.at(t0, self._pause, i)
                self.at(later, self._resume, i)
            heal = later
        self.heal_at = heal

    def _set_drop(self, p: float) -> None:
        self.drop = p

    def _end_split(self) -> None:
        assert self.split is not None
        self.split.active = self.sync_down = False
        for i in self.byzantine:
            self._silence(i)

    def _set_reach(self, reach: dict[tuple[int, int, str], Any] | None) -> None:
        self.vote_reach = reach
        self.note("votes reach chosen nodes only" if reach is not None else "votes reach everyone again")

    def _silence(self, i: int) -> None:
        self.nodes[i].byz = "silent_all"
        self.note(f"node {i} falls silent")

    def _target_decided(self, height: int) -> bool:
        target = self.relock_target
        return target >= 0 and len(self.nodes[target].chain) >= height

    def _target_hears(self, hr: tuple[int, int]) -> bool:
        """Whether the target hears the precommits of (height, round): not in round 0."""
        return bool(self._reach((*hr, "target precommit"), lambda: hr[1] > 0 and self.rng.random() < 0.8))

    def _held_back(self, src: int, dst: int, msg: Any) -> float | None:
        """byz_relock: the extra delay of an honest node's message, or None if it is dropped
        (gossip re-sends it after the trouble); see ``_setup``."""
        target, t = self.relock_target, type(msg)
        if t is SyncRequest or t is SyncAnswer:
            return None
        if t is not Vote:
            return 0.0
        rng, h, r = self.rng, msg.height, msg.round
        if msg.step == "precommit" and msg.block_hash != NIL:
            decided = self.decided.get(h) if self._target_decided(h) else None
            if dst == target:
                if decided is None and self._target_hears((h, r)):
                    return 0.0
            elif decided is not None and msg.block_hash != decided:
                return 0.0  # a value other than the target's: let the others decide it
            # Else one short of a quorum of precommits for a value: with the f nil precommits
            # of the Byzantine validators a node still counts 2f+1 precommits and leaves the
            # round (line 47), but does not decide.
            let = self._precommits_let.setdefault((h, r, dst), set())
            if len(let) + 2 < self.quorum:  # with this one and its own, quorum - 1
                let.add(src)
                return 0.0
            return None
        if msg.step == "precommit" or dst in self._polka_seen(h, r):
            return 0.0
        # The others get one short of a quorum of prevotes for a value at once and, with the
        # Byzantine nil prevote, leave the round on timeoutPrevote (lines 34, 61) without a
        # lock; the rest of the prevotes arrive later (delayed past the lock).
        let = self._prevotes_let.setdefault((h, r, dst), set())
        if msg.block_hash == NIL or len(let) + 2 < self.quorum:
            let.add(src)
            return 0.0
        return rng.uniform(300, 1200)

    def _polka_seen(self, h: int, r: int) -> frozenset[int]:
        """byz_relock: the nodes that see the prevotes of (height, round) in time to lock."""
        rng = self.rng

        def draw() -> frozenset[int]:
            x = rng.random()
            if x < 0.15 or (self._target_decided(h) and self.nodes[(h + r) % self.n].byz is None):
                return frozenset()  # once the target decided, no honest round locks anyone
            if x < 0.45:
                return frozenset(range(self.n))
            return frozenset(i for i in range(self.n) if rng.random() < 0.5)

        got: frozenset[int] = self._reach((h, r, "prevote"), draw)
        return got

    def _reach(self, key: tuple[int, int, str], draw: Callable[[], Any]) -> Any:
        """The network's choice for the messages of (height, round, step), drawn once."""
        assert self.vote_reach is not None
        got = self.vote_reach.get(key)
        if got is None:
            got = self.vote_reach[key] = draw()
            self.note(f"{key[2]}s of {key[0]}/{key[1]}: {got}")
        return got

    def _block(self, links: set[tuple[int, int]]) -> None:
        self.blocked = links
        self.note(f"links blocked: {sorted(links)}")

    def _crash(self, i: int) -> None:
        nd = self.nodes[i]
        if nd.up:
            nd.up, nd.core, nd.held = False, None, []
            nd.incarnation += 1
            self.note(f"node {i} crashes at height {len(nd.chain) + 1}")

    def _restart(self, i: int) -> None:
        nd = self.nodes[i]
        if not nd.up:
            ls = nd.last_signed
            where = f"{ls.height}/{ls.round}/{ls.step} {ls.block_hash[:8]} locked={ls.locked_round}" if ls else None
            self.note(f"node {i} restarts with {len(nd.chain)} blocks, last signed {where}")
            nd.boot()
            self.request_sync(nd, None)

    def _pause(self, i: int) -> None:
        nd = self.nodes[i]
        if nd.up:
            nd.paused = True
            self.note(f"node {i} paused")

    def _resume(self, i: int) -> None:
        nd = self.nodes[i]
        if nd.up and nd.paused:
            nd.paused = False
            held, nd.held = nd.held, []
            self.note(f"node {i} resumes with {len(held)} held events")
            for kind, a, b, c in held:
                self.push(self.now, kind, a, b, c)

    # ------------------------------------------------------------------ event queue

    def push(self, t: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, kind, a, b, c))

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self.push(t, _CONTROL, fn, args)

    def note(self, text: str) -> None:
        if self.verbose:
            self.log.append(f"{self.now:9.1f} {text}")

    # ------------------------------------------------------------------ network

    def send(self, src: int, dst: int, msg: Any) -> None:
        if (src, dst) in self.blocked:
            return
        t = type(msg)
        if self.sync_down and (t is SyncRequest or t is SyncAnswer):
            return
        if t is Proposal and self.now < self.poison_until and self.poison_send(src, dst, msg):
            return
        extra = 0.0
        if self.trouble and (t is Proposal or t is Vote):
            held = self._troubled(src, dst, msg)
            if held is None:
                return
            extra = held
        if (t is Proposal or t is Vote) and msg.height == self.late_height:
            if t is Proposal:
                self.blocks.setdefault(msg.block_hash, msg.block)
            late = t is Proposal and self.nodes[src].byz is None and dst == self.late_node(msg.round)
            self.push(self.now + (LATE_MS if late else self.min_delay), _DELIVER, dst, msg, src)
            return
        if t is Proposal:
            self.blocks.setdefault(msg.block_hash, msg.block)
            self.known.setdefault(msg.height, {}).setdefault(msg.block_hash, msg.block)
        elif t is Vote and msg.step == "prevote" and msg.block_hash != NIL:
            self.prevotes.setdefault((msg.height, msg.block_hash), {}).setdefault((msg.round, msg.validator), msg)
        sp = self.split
        if (sp is not None and sp.below and sp.active and t is Vote and msg.step == "prevote"
                and msg.height == sp.height and self.nodes[src].byz is None and self.nodes[dst].byz is None
                and (msg.round == 0 or (msg.round == 1 and dst in sp.minority))):
            let = sp.prompt.setdefault((msg.round, dst), set())
            if src in let or len(let) < self.f:
                let.add(src)  # f honest prevotes in time: with the Byzantine nil ones, no polka
            else:
                extra = self.rng.uniform(600, 1200)  # delayed past the lock
        if self.vote_reach is not None and self.nodes[src].byz is None:
            held = self._held_back(src, dst, msg)
            if held is None:
                return
            extra = held
        rng = self.rng
        if self.drop and rng.random() < self.drop:
            return
        self.push(self.now + extra + rng.uniform(self.min_delay, self.max_delay), _DELIVER, dst, msg, src)
        if self.dup and rng.random() < self.dup:
            self.push(self.now + rng.uniform(self.min_delay, 2 * self.max_delay), _DELIVER, dst, msg, src)

    def broadcast(self, src: int, msg: Any) -> None:
        for j in range(len(self.nodes)):
            if j != src:
                self.send(src, j, msg)

    # ------------------------------------------------------------------ driver

    def apply(self, nd: Node, actions: Iterable[Any]) -> None:
        """Carry out a core's actions in order, as the daemon does."""
        for a in actions:
            t = type(a)
            if t is Broadcast:
                if type(a.message) is Proposal:
                    self.blocks.setdefault(a.message.block_hash, a.message.block)
                if nd.byz is None:
                    m = a.message
                    if nd.key.public not in nd.validators_at(m.height):
                        raise self.violation("validity", f"node {nd.idx} signed a message of height {m.height}, "
                                                         "whose set does not hold its key")
                    if type(m) is Vote and m.block_hash != NIL:
                        self.check_valid(nd, m.height, m.block_hash, f"{m.step} of round {m.round}")
                    self.checks.signed(nd, m)
                    self.broadcast(nd.idx, m)
                else:
                    self.byzantine_send(nd, a.message)
            elif t is ScheduleTimeout:
                self.push(self.now + a.duration_ms, _TIMER, nd.idx, nd.incarnation, (a.height, a.round, a.step))
            elif t is PersistSigned:
                nd.last_signed = a  # persisted before the Broadcast that follows
            elif t is Commit:
                if nd.byz is None:
                    self.checks.committed(nd, a.height, a.block, a.block_hash)
                self.store(nd, a.height, a.block, a.block_hash, a.certificate, "commit")
            elif t is ReportEvidence:
                self.evidence += 1

    def describe(self, nd: Node) -> str:
        c = nd.core
        if c is None:
            return f"{len(nd.chain)} blocks, down"
        return (f"{len(nd.chain)} blocks, at h={c.height} r={c.round} {c.step} locked={c.locked_round}"
                f" valid={c.valid_round}" + (" paused" if nd.paused else ""))

    def violation(self, kind: str, detail: str) -> SimViolation:
        return SimViolation(kind, self.seed, self.scenario, detail, self.overrides, self.mutant)

    def check_valid(self, nd: Node, height: int, bhash: str, what: str) -> None:
        """Validity: an honest node votes for (and decides) only values valid(v) at its height."""
        block = self.blocks.get(bhash)
        if block is None or not nd.valid(block, bhash, height):
            raise self.violation("validity", f"node {nd.idx} signed a {what} at height {height} for {bhash[:12]}, "
                                             "which is not a valid next block of its chain")

    def store(self, nd: Node, height: int, block: Any, bhash: str, cert: dict[str, Any], how: str) -> None:
        """Persist a finalized block after checking invariants 1-3."""
        if height != len(nd.chain) + 1:
            if nd.byz is None:
                raise self.violation("durability", f"node {nd.idx} finalized height {height} with {len(nd.chain)} blocks stored ({how})")
            return
        certifying = nd.sets[height - 1]  # the set of this height, from the node's own chain
        key = (height, bhash, tuple((v["validator"], v["sig"]) for v in cert["votes"]), cert["round"], certifying)
        if key not in self.cert_ok:
            try:
                verify_certificate(self.chain, certifying, height, bhash, cert)
            except LedgerError as e:
                raise self.violation("certificate", f"node {nd.idx} height {height} ({how}): {e}") from e
            self.cert_ok.add(key)
        after = nd.next_set(block) if "changes" in block else (nd.sets[-1], nd.ever)
        if nd.byz is None:
            if how == "commit":
                self.check_valid(nd, height, bhash, "decision")
            if after is None:
                raise self.violation("validity", f"node {nd.idx} stored block {height} ({how}) with invalid changes")
            first = self.decided.setdefault(height, bhash)
            if first != bhash:
                raise self.violation("agreement", f"height {height}: node {nd.idx} finalized {bhash[:12]}, another honest node {first[:12]} ({how})")
            if height + 1 not in self.set_of:
                self.set_of[height + 1] = after[0]
                if after[0] != nd.sets[-1]:
                    self.changed.add(height)
                    self.note(f"block {height} changes the set: {len(after[0])} validators certify {height + 1}")
        if after is None:
            return  # a Byzantine node's core decided an invalid block: it goes no further
        nd.sets.append(after[0])
        nd.ever = after[1]
        nd.chain.append((block, bhash, cert))
        if how != "commit":
            nd.synced.append(height)
        self.note(f"node {nd.idx} finalizes {height} {bhash[:8]} round {cert['round']} ({how})")
        sp = self.split
        if sp is not None and sp.active and nd.byz is None and height == sp.height - 1 and 0 not in sp.done:
            self.split_round(0)  # the honest nodes are about to enter the height: propose at once

    def request_sync(self, nd: Node, peer: int | None) -> None:
        if self.now - nd.last_sync < SYNC_EVERY_MS:
            return
        nd.last_sync = self.now
        req = SyncRequest(len(nd.chain) + 1)
        # The sender of a message of a later height, and one other validator: a Byzantine
        # sender that never answers must not starve catch-up.
        ask = [peer, self.rng.randrange(len(self.nodes))] if peer is not None else range(len(self.nodes))
        for j in ask:
            if j != nd.idx:
                self.send(nd.idx, j, req)

    def deliver(self, nd: Node, msg: Any, src: int) -> None:
        core = nd.core
        assert core is not None
        t = type(msg)
        if t is Vote or t is Proposal:
            if nd.byz == "skip":
                self.skip_ahead(nd, msg)
            elif nd.byz == "late":
                if msg.height == self.late_height and self.nodes[src].byz is None:
                    if t is Proposal:
                        self.late_round(msg)
                    held = self._withheld
                    if (held is not None and src == self.late_node(0)
                            and (msg.round > 0 or (t is Vote and msg.step == "precommit"))):
                        self._withheld = None  # it has left round 0 or precommitted nil in it
                        self.send(self.byzantine_proposer(held), src, held)
            elif nd.byz == "former":
                self.former_sign(nd, msg)
            elif nd.byz == "minority":
                sp = self.split
                if sp is not None and sp.active and msg.height == sp.height and self.nodes[src].byz is None:
                    # Play a round on its first message, or on a precommit of the round before it.
                    self.split_round(msg.round, msg if t is Proposal else None)
                    if t is Vote and msg.step == "precommit":
                        self.split_round(msg.round + 1)
            elif nd.byz == "relock":
                if t is Vote and msg.step == "precommit" and self.vote_reach is not None:
                    self.relock_precommit(nd, msg)
                # Propose on the first message of the round, or on a precommit of the round
                # before it: the honest nodes are about to enter it, and wait for a proposal.
                nxt = msg.round + (t is Vote and msg.step == "precommit")
                if self.validators[(msg.height + nxt) % self.n] == nd.key.public:
                    self.relock_proposal(nd, msg.height, nxt)
            if msg.height > core.height:
                self.request_sync(nd, src)
            if nd.byz is None and t is Proposal and self.mirrors:
                self.mirror(nd, msg)
            height = core.height
            try:
                acts = core.on_vote(msg) if t is Vote else core.on_proposal(msg)
            except LedgerError as e:
                self.rejected += 1
                self.note(f"node {nd.idx} refuses {msg}: {e}")
                return
            if nd.byz is None and height <= msg.height <= height + 1:
                self.checks.received(nd, msg, height)
            self.apply(nd, acts)
        elif t is SyncRequest:
            if nd.byz is None and len(nd.chain) >= msg.from_height:
                blocks = nd.chain[msg.from_height - 1: msg.from_height - 1 + SYNC_BATCH]
                self.send(nd.idx, src, SyncAnswer(tuple(blocks)))
        elif t is SyncAnswer:
            for block, bhash, cert in msg.blocks:
                h = len(nd.chain) + 1
                if block.get("height") != h:
                    continue
                # Verify before storing: the hash, the link, the certificate (store()).
                if block_hash(block) != bhash or block.get("prev") != nd.prev(h):
                    raise self.violation("agreement", f"node {nd.idx} got a block for {h} that does not extend its chain")
                self.store(nd, h, block, bhash, cert, f"sync from {src}")
                self.apply(nd, core.advance(h))

    # ------------------------------------------------------------------ Byzantine behaviour

    @property
    def mirrors(self) -> list[Node]:
        return self._mirrors

    def byzantine_send(self, nd: Node, msg: Any) -> None:
        rng, mode = self.rng, nd.byz
        peers = [j for j in range(self.n) if j != nd.idx]
        if mode == "silent_all":
            return
        if mode == "silent":
            if type(msg) is Vote:
                self.broadcast(nd.idx, msg)
            return
        if type(msg) is Proposal and mode in ("equivocate_proposal", "mirror"):
            evil = dict(msg.block, payload=f"evil-{msg.height}-{msg.round}-{rng.randrange(1 << 30)}")
            alt = sign_proposal(nd.key, msg.chain, msg.height, msg.round, evil, block_hash(evil), msg.valid_round)
            for j in peers:
                self.send(nd.idx, j, msg if rng.random() < 0.5 else alt)
            return
        if mode == "poison":
            if self.now < self.poison_until and type(msg) is Vote and msg.step == "precommit" and self.nil_round(msg):
                msg = sign_vote(nd.key, msg.chain, msg.height, msg.round, msg.step, NIL)
            self.broadcast(nd.idx, msg)  # its proposals: poison_send
            return
        if mode == "late":
            if msg.height != self.late_height:
                self.broadcast(nd.idx, msg)  # honest at the other heights
            elif type(msg) is Proposal and msg.round == 0:
                self.late_round(msg)
            return
        if mode == "minority":
            sp = self.split
            if sp is None or not sp.active or msg.height < sp.height:
                self.broadcast(nd.idx, msg)  # honest until the split height; then split_round speaks
            return
        if mode == "relock":
            if type(msg) is Proposal:
                self.relock_proposal(nd, msg.height, msg.round)
                return
            if msg.step == "precommit" and self.vote_reach is not None:
                return  # it precommits on its own terms (relock_precommit)
        if type(msg) is Vote and mode == "equivocate_vote":
            other = NIL if msg.block_hash != NIL else tagged_hash(BLOCK_TAG, {"fake": msg.height, "r": msg.round})
            alt_vote = sign_vote(nd.key, msg.chain, msg.height, msg.round, msg.step, other)
            for j in peers:
                x = rng.random()
                if x < 0.4:
                    self.send(nd.idx, j, msg)
                elif x < 0.8:
                    self.send(nd.idx, j, alt_vote)
                else:
                    self.send(nd.idx, j, msg)
                    self.send(nd.idx, j, alt_vote)
            return
        self.broadcast(nd.idx, msg)

    def relock_proposal(self, nd: Node, h: int, r: int) -> None:
        """A Byzantine proposer that forgets its lock: it proposes an older value of the height
        with an older valid round (and the prevotes it can show for it: every prevote for that
        value it has seen, its own signed afresh), a new value with valid round -1, or an
        invalid block; then votes for it. With the mirror votes it also casts, f of them are
        the f extra votes a weakened lock, valid-round or quorum rule needs to fork the chain.
        It proposes as soon as it hears of the round, so that its proposal is not late."""
        if (h, r) in self._relocked:
            return
        self._relocked.add((h, r))
        rng = self.rng
        prev = self.decided.get(h - 1, self.chain) if h > 1 else self.chain
        base = {"height": h, "prev": prev, "proposer": nd.key.public, "payload": ""}
        older = sorted(self.known.get(h, {}))
        # Fork candidates: a value other than the one an honest node decided, with a round
        # where enough honest validators prevoted it that the Byzantine prevotes make a polka
        # (or, half as likely, where one did: enough for a quorum rule weakened to f + 1).
        need = self.quorum - len(self.byzantine)
        honest = {self.validators[nd.idx] for nd in self.honest}
        strong: list[tuple[str, int]] = []
        weak: list[tuple[str, int]] = []
        for bh in older:
            if bh == self.decided.get(h):
                continue
            per_round: dict[int, int] = {}
            for q, who in self.prevotes.get((h, bh), {}):
                if q < r and who in honest:
                    per_round[q] = per_round.get(q, 0) + 1
            strong += [(bh, q) for q, c in sorted(per_round.items()) if c >= need]
            weak += [(bh, q) for q, c in sorted(per_round.items()) if c < need]
        x = rng.random()
        vr = -1
        fork = strong if strong and (not weak or rng.random() < 0.75) else weak
        if self._target_decided(h) and not fork:
            x = 0.95  # a new value, to prevote and re-propose later with its valid round
        if fork and x < 0.85:
            bh, vr = rng.choice(fork)
            block = self.known[h][bh]
            support = [v for (q, _), v in sorted(self.prevotes[(h, bh)].items()) if q == vr]
            support.append(sign_vote(nd.key, self.chain, h, vr, "prevote", bh))
        elif older and x < 0.9:
            bh = rng.choice(older)
            block = self.known[h][bh]
            seen = self.prevotes.get((h, bh), {})
            rounds = sorted({q for q, _ in seen if q < r})
            vr = rng.choice(rounds) if rounds and rng.random() < 0.8 else rng.randrange(-1, r) if r else -1
            support = [v for (q, _), v in sorted(seen.items()) if q == vr]
            if vr >= 0:
                support.append(sign_vote(nd.key, self.chain, h, vr, "prevote", bh))
        elif x < 0.96:
            block = dict(base, payload=f"new-{h}-{r}-{rng.randrange(1 << 30)}")
            bh, support = block_hash(block), []
        else:
            block = dict(base, prev=block_hash({"not": "the chain"}), payload=f"invalid-{h}-{r}")
            bh, support = block_hash(block), []
        alt = sign_proposal(nd.key, self.chain, h, r, block, bh, vr)
        votes = [sign_vote(nd.key, self.chain, h, r, "prevote", bh)]
        if self._target_decided(h) and bh != self.decided.get(h):  # the fork: precommit it at once
            votes.append(sign_vote(nd.key, self.chain, h, r, "precommit", bh))
        for m in (*support, alt, *votes):
            self.broadcast(nd.idx, m)

    def victims(self, h: int, r: int) -> frozenset[int]:
        """byz_poison: the honest nodes that get a garbled copy of the proposal of (h, r) first."""
        got = self._victims.get((h, r))
        if got is None:
            honest = [nd.idx for nd in self.honest]
            got = self._victims[(h, r)] = frozenset(self.rng.sample(honest, self.rng.randint(1, self.f)))
            self.note(f"proposal of {h}/{r} garbled to {sorted(got)}")
        return got

    def nil_round(self, v: Vote) -> bool:
        """byz_poison: whether the Byzantine validators precommit nil in (h, r) (drawn once)."""
        got = self._nil_rounds.get((v.height, v.round))
        if got is None:
            got = self._nil_rounds[(v.height, v.round)] = self.rng.random() < 0.5
        return got

    def poison_send(self, src: int, dst: int, p: Proposal) -> bool:
        """byz_poison: a proposal to a victim of its round goes as a garbled copy (relayed by a
        Byzantine validator at once), and, unless a Byzantine validator proposed it, true
        100-400 ms later; True if this took care of the send."""
        if self.nodes[dst].byz is not None or dst not in self.victims(p.height, p.round):
            return False
        self.blocks.setdefault(p.block_hash, p.block)
        block = p.block if type(p.block) is dict else {}
        garbled = dataclasses.replace(p, block=dict(block, payload=f"garbled-{p.height}-{p.round}"))
        relay = min(self.byzantine)
        self.push(self.now + self.min_delay, _DELIVER, dst, garbled, relay)
        if self.nodes[src].byz is None:
            later = self.rng.uniform(self.min_delay, self.max_delay) + self.rng.uniform(100, 400)
            self.push(self.now + later, _DELIVER, dst, p, src)
        return True

    def late_node(self, r: int) -> int:
        """byz_late: the honest node that round ``r``'s proposal reaches late (drawn once)."""
        got = self._late_node.get(r)
        if got is None:
            h = self.late_height
            assert h is not None
            proposer = (h + r) % self.n
            # In round 1, not the node left out in round 0: it may not know the value yet.
            pool = [nd.idx for nd in self.honest if nd.idx != proposer and (r != 1 or nd.idx != self._late_node.get(0))]
            got = self._late_node[r] = self.rng.choice(pool)
            self.note(f"the proposal of {h}/{r} reaches node {got} late")
        return got

    def byzantine_proposer(self, p: Proposal) -> int:
        return self.validators.index(p.proposer)

    def late_round(self, p: Proposal) -> None:
        """byz_late: once per round of the height, on its proposal: the Byzantine validators
        prevote its value and precommit nil; in round 0 (their own) the proposal reaches every
        honest node but one, which gets it after its precommit."""
        r = p.round
        if r in self._late_done:
            return
        self._late_done.add(r)
        honest = [nd.idx for nd in self.honest]
        if r == 0:
            left_out = self.late_node(0)
            self._withheld = p
            for j in honest:
                if j != left_out:
                    self.send(self.byzantine_proposer(p), j, p)
        for i in sorted(self.byzantine):
            b = self.nodes[i]
            for step, value in (("prevote", p.block_hash), ("precommit", NIL)):
                vote = sign_vote(b.key, self.chain, p.height, r, step, value)
                for j in honest:
                    self.send(i, j, vote)

    def split_round(self, r: int, seen: Proposal | None = None) -> None:
        """byz_minority: what the Byzantine validators send, once, for round ``r`` of the split
        height (see ``_setup``): in round 0, w to the majority and v to the minority, with
        prevotes to match and precommits for w to the target only (nil to the others); in round
        ``again``, v re-proposed with valid round 0 and its round-0 prevotes, and votes for it;
        in the rounds between, nil votes; after ``again``, nothing. With ``below``: in round 0,
        v to everyone and nil votes; in round 1, votes for the round's new value w as in round
        0 (``seen`` is its proposal when an honest validator made it)."""
        sp = self.split
        assert sp is not None
        if r in sp.done or r > sp.again:
            return
        h, chain, rng = sp.height, self.chain, self.rng
        byz = [self.nodes[i] for i in sorted(self.byzantine)]
        honest = [nd.idx for nd in self.honest]
        proposer = self.nodes[(h + r) % self.n]
        if sp.below and r == 1 and proposer.byz is None and seen is None:
            return  # wait for the honest proposal of round 1
        sp.done |= {r}

        def to_all(src: Node, m: Any) -> None:
            for j in honest:
                self.send(src.idx, j, m)

        def lock_on(wh: str, r: int) -> None:  # the majority locks, the target decides
            for b in byz:
                vote = sign_vote(b.key, chain, h, r, "prevote", wh)
                nil = sign_vote(b.key, chain, h, r, "prevote", NIL)
                for j in honest:
                    self.send(b.idx, j, vote if j in sp.majority else nil)
                for j in honest:
                    self.send(b.idx, j, sign_vote(b.key, chain, h, r, "precommit", wh if j == sp.target else NIL))

        if r == 0 and sp.below:
            base = {"height": h, "prev": self.decided[h - 1], "proposer": proposer.key.public}
            sp.v = dict(base, payload=f"polka-{h}-{rng.randrange(1 << 30)}")
            sp.v_hash = block_hash(sp.v)
            self.note(f"split at height {h}: v={sp.v_hash[:8]} to all, majority {sp.majority} "
                      f"(target {sp.target}) to lock in round 1, v again in round {sp.again}")
            to_all(proposer, sign_proposal(proposer.key, chain, h, 0, sp.v, sp.v_hash))
            sp.support = tuple(sign_vote(b.key, chain, h, 0, "prevote", sp.v_hash) for b in byz)
            for b in byz:
                for step in ("prevote", "precommit"):
                    to_all(b, sign_vote(b.key, chain, h, 0, step, NIL))
        elif r == 1 and sp.below:
            if seen is None or seen.round != 1:
                w = {"height": h, "prev": self.decided[h - 1], "proposer": proposer.key.public,
                     "payload": f"lock-{h}-{rng.randrange(1 << 30)}"}
                seen = sign_proposal(proposer.key, chain, h, 1, w, block_hash(w))
                to_all(proposer, seen)
            lock_on(seen.block_hash, 1)
        elif r == 0:
            w = {"height": h, "prev": self.decided[h - 1], "proposer": proposer.key.public,
                 "payload": f"majority-{h}-{rng.randrange(1 << 30)}"}
            sp.v = dict(w, payload=f"minority-{h}-{rng.randrange(1 << 30)}")
            wh, sp.v_hash = block_hash(w), block_hash(sp.v)
            self.note(f"split at height {h}: w={wh[:8]} to {sp.majority} (target {sp.target}), "
                      f"v={sp.v_hash[:8]} to {sp.minority}, v again in round {sp.again}")
            for group, block, bh in ((sp.majority, w, wh), (sp.minority, sp.v, sp.v_hash)):
                for j in group:
                    self.send(proposer.idx, j, sign_proposal(proposer.key, chain, h, 0, block, bh))
            support = []
            for b in byz:
                for group, bh in ((sp.majority, wh), (sp.minority, sp.v_hash)):
                    vote = sign_vote(b.key, chain, h, 0, "prevote", bh)
                    for j in group:
                        self.send(b.idx, j, vote)
                support.append(sign_vote(b.key, chain, h, 0, "prevote", sp.v_hash))
                for j in honest:
                    self.send(b.idx, j, sign_vote(b.key, chain, h, 0, "precommit", wh if j == sp.target else NIL))
            sp.support = tuple(support)
        elif r < sp.again:
            for b in byz:
                for step in ("prevote", "precommit"):
                    to_all(b, sign_vote(b.key, chain, h, r, step, NIL))
        else:
            honest_keys = {self.validators[j] for j in honest}
            shown = [v for (q, who), v in sorted(self.prevotes.get((h, sp.v_hash), {}).items())
                     if q == 0 and who in honest_keys]
            for m in (*shown, *sp.support, sign_proposal(proposer.key, chain, h, r, sp.v, sp.v_hash, 0)):
                to_all(proposer, m)
            for b in byz:
                for step in ("prevote", "precommit"):
                    to_all(b, sign_vote(b.key, chain, h, r, step, sp.v_hash))

    def relock_precommit(self, nd: Node, seen: Vote) -> None:
        """Once per (height, round) in which it sees an honest precommit: nil to everyone
        but the target, and to the target, in the rounds it may decide, a precommit for the
        value the target is shown (so that, with the capped honest ones, everyone else
        leaves the round without deciding while the target decides)."""
        h, r = seen.height, seen.round
        if (h, r) in self._relock_pc or self._target_decided(h):
            return
        self._relock_pc.add((h, r))
        nil = sign_vote(nd.key, self.chain, h, r, "precommit", NIL)
        target = self.relock_target
        for j in range(self.n):
            if j != nd.idx and j != target:
                self.send(nd.idx, j, nil)
        if target >= 0 and self._target_hears((h, r)):
            value = seen.block_hash
            if value == NIL:  # the value the target was shown in this round, if any
                value = next(iter(self._shown.get((target, h, r), ())), NIL)
            self.send(nd.idx, target, sign_vote(nd.key, self.chain, h, r, "precommit", value))

    def skip_ahead(self, nd: Node, msg: Vote | Proposal) -> None:
        """Pull the others into the next round whenever one of them speaks: the messages of
        a higher round from f validators (fewer than f + 1) must not move an honest node
        (line 55), else no round lasts long enough to decide."""
        k = (msg.height, msg.round + 1)
        if k not in self._skipped:
            self._skipped.add(k)
            self.broadcast(nd.idx, sign_vote(nd.key, msg.chain, msg.height, msg.round + 1, "prevote", NIL))

    def mirror(self, target: Node, p: Proposal) -> None:
        """Mirroring Byzantine validators vote for whatever proposal ``target`` is shown."""
        self._shown.setdefault((target.idx, p.height, p.round), []).append(p.block_hash)
        for b in self._mirrors:
            if b.byz == "silent_all":
                continue
            value = p.block_hash
            if b.byz == "relock" and self.vote_reach is not None and target.idx not in self._polka_seen(p.height, p.round):
                value = NIL  # no polka for the nodes that must not lock in this round
            for step in ("prevote", "precommit") if b.byz == "mirror" else ("prevote",):
                k = (b.idx, p.height, p.round, step, value)
                v = self._mirror_votes.get(k)
                if v is None:
                    v = self._mirror_votes[k] = sign_vote(b.key, p.chain, p.height, p.round, step, value)
                self.send(b.idx, target.idx, v)

    # ------------------------------------------------------------------ membership changes
    #
    # The scenarios of MEMBERSHIP_SCENARIOS (docs/consensus.md): blocks carry validator
    # changes on a schedule drawn from the seed. ``plan[h]`` lists, for block h, the changes
    # the proposer of each round wants (round r takes option r % len; more than one option
    # only in rival_changes); a proposer includes those that are valid on top of its own
    # chain. Keys are planned as node indices: the genesis validators are nodes 0..n-1, every
    # key a change brings in has a node of its own (n, n+1, ...), which follows the chain
    # from the start or starts later from an empty database (``late``).

    def _membership_plan(self, n: int) -> tuple[int, dict[int, str], dict[int, list[list[tuple[Any, ...]]]]]:
        """Draw the schedule: the nodes it adds beyond the genesis, the Byzantine ones, the plan
        (by node index)."""
        s, rng = self.scenario, self.rng
        cur, ever = list(range(n)), set(range(n))  # the planned set and every index ever in it

        def snapshot() -> tuple[list[int], set[int]]:
            return list(cur), set(ever)

        def restore(snap: tuple[list[int], set[int]]) -> None:
            cur[:] = snap[0]
            ever.clear()
            ever.update(snap[1])

        fresh = itertools.count(n)
        plan: dict[int, list[list[tuple[Any, ...]]]] = {}
        byzantine: dict[int, str] = {}
        # The faulty scenarios keep f >= 1 (four validators or more) at every height.
        floor = 4 if s in ("churn_lag", "churn_rounds") and n >= 4 else 1

        def op(kinds: tuple[str, ...], keep: int = floor) -> tuple[Any, ...] | None:
            choices = [k for k in kinds if k != "remove" or len(cur) > keep]
            if not choices:
                return None
            kind = rng.choice(choices)
            if kind == "add":
                new = next(fresh)
                cur.append(new)
                ever.add(new)
                return ("add", new)
            old = rng.choice(cur)
            if kind == "remove":
                cur.remove(old)
                return ("remove", old)
            new = next(fresh)
            cur[cur.index(old)] = new
            ever.add(new)
            return ("replace", old, new)

        if s == "set_swap":
            # Every genesis validator leaves, one change at a time: replaced in place, or a new
            # validator added first and the old one removed at a later height.
            h = rng.randint(1, 3)
            for old in rng.sample(range(n), n):
                if rng.random() < 0.5 or len(cur) == 1:
                    new = next(fresh)
                    cur[cur.index(old)] = new
                    plan[h] = [[("replace", old, new)]]
                else:
                    new = next(fresh)
                    cur.append(new)
                    plan[h] = [[("add", new)]]
                    h += rng.randint(1, 3)
                    cur.remove(old)
                    plan[h] = [[("remove", old)]]
                h += rng.randint(1, 3)
        elif s == "byz_former":
            # A genesis validator is removed (or its key replaced: the old key leaked) at height
            # hr; from then on its node signs whatever it likes (``former_sign``).
            former = rng.randrange(n)
            hr = rng.randint(1, 6)
            for h in sorted(rng.sample(range(1, hr), min(hr - 1, rng.randint(0, 2)))):
                saved = snapshot()
                got = op(("add", "replace", "remove"), keep=4)  # f >= 1 at hr: see former_sign
                if former not in cur:  # the former must still be there at hr
                    restore(saved)
                elif got:
                    plan[h] = [[got]]
            if former in cur:
                if rng.random() < 0.5 and len(cur) > 1:
                    cur.remove(former)
                    plan[hr] = [[("remove", former)]]
                else:
                    new = next(fresh)
                    cur[cur.index(former)] = new
                    plan[hr] = [[("replace", former, new)]]
                byzantine[former] = "former"
            for h in sorted(rng.sample(range(hr + 1, 14), rng.randint(0, 2))):
                got = op(("add", "replace", "remove"))
                if got:
                    plan[h] = [[got]]
        else:
            count = rng.randint(2, 5) if s != "rival_changes" else rng.randint(2, 4)
            for h in sorted(rng.sample(range(1, 15), count)):
                # rival_changes: two alternatives for one block, each on the set before it;
                # the plan goes on from the first (a proposer drops what the winner made invalid)
                before, after = snapshot(), None
                options = []
                for _ in range(2 if s == "rival_changes" else 1):
                    restore(before)
                    ops = [o for o in (op(("add", "remove", "replace")) for _ in range(1 + (rng.random() < 0.2))) if o]
                    if ops:
                        options.append(ops)
                        after = after or snapshot()
                restore(after or before)
                if options:
                    plan[h] = options
        added = max((k for opts in plan.values() for ops in opts for o in ops for k in o[1:]), default=0)
        if plan:
            self.end_height = max(plan) + 3
        return max(0, added + 1 - n), byzantine, plan

    def _membership_setup(self) -> None:
        """The faults and network of a membership scenario (the schedule is drawn already)."""
        s, rng, n = self.scenario, self.rng, self.n
        for i in range(n, len(self.nodes)):
            if rng.random() < 0.5:  # starts from an empty database, after the others
                self.late[i] = rng.uniform(100, 2500)
                self.at(self.late[i], self._join, i)
        heal = max(self.late.values(), default=0.0)
        if s in ("churn_rounds", "rival_changes"):
            # The network makes rounds 0 (and at times 1) of the heights around each change
            # fail (``_troubled``): the proposal is lost, or reaches only some nodes, or the
            # prevotes for it reach only some in time (who lock). Rounds from 2 on are left alone.
            for h in sorted(self.plan):
                for hh in (h, h + 1) if s == "churn_rounds" else (h,):
                    for r in (0, 1) if rng.random() < 0.5 else (0,):
                        mode = rng.choice(("mute", "split", "lock_some", "none" if s == "rival_changes" else "lock_some"))
                        if mode != "none":
                            self.trouble[(hh, r)] = mode
        if s == "churn_lag":
            # One validator of the genesis lags across the changes: paused, or cut off, then
            # catches up by sync, checking each certificate against the set of its height.
            x = rng.randrange(n)
            t0 = rng.uniform(100, 400)
            t1 = t0 + rng.uniform(2000, 5000)
            if rng.random() < 0.5:
                self.at(t0, self._pause, x)
                self.at(t1, self._resume, x)
            else:
                everyone = range(len(self.nodes))
                self.at(t0, self._block, {(a, b) for a in everyone for b in everyone if a != b and x in (a, b)})
                self.at(t1, self._block, set())
            heal = max(heal, t1)
        self.heal_at = heal

    def _join(self, i: int) -> None:
        nd = self.nodes[i]
        self.note(f"node {i} starts from an empty database")
        nd.boot()
        self.request_sync(nd, None)

    def wanted(self, nd: Node, height: int, round: int) -> list[dict[str, Any]]:
        """The changes the proposer of (height, round) puts in its block: its option of the
        plan, less those that are not valid on top of its chain (a rival option won before)."""
        options = self.plan.get(height)
        if not options:
            return []
        out: list[dict[str, Any]] = []
        for o in options[round % len(options)]:
            if apply_changes(nd.sets[-1], nd.ever, [*out, o]) is not None:
                out.append(o)
        return out

    def _troubled(self, src: int, dst: int, msg: Proposal | Vote) -> float | None:
        """churn_rounds, rival_changes: the extra delay of this message, or None if the
        network loses it (``trouble``): "mute" loses the round's proposal, "split" delivers it
        to some nodes only, "lock_some" delivers the prevotes for a value promptly to some
        nodes only (they may lock) and to the others after their prevote timeout."""
        mode = self.trouble.get((msg.height, msg.round))
        if mode is None or self.nodes[src].byz is not None:
            return 0.0
        if mode == "lock_some":
            if not isinstance(msg, Vote) or msg.step != "prevote" or msg.block_hash == NIL:
                return 0.0
        elif type(msg) is not Proposal:
            return 0.0
        elif mode == "mute":
            return None
        key = (msg.height, msg.round)
        reach = self._split_reach.get(key)
        if reach is None:
            reach = self._split_reach[key] = frozenset(j for j in range(len(self.nodes)) if self.rng.random() < 0.5)
            self.note(f"{'prevotes' if mode == 'lock_some' else 'the proposal'} of {key} reach only {sorted(reach)}")
        if dst in reach:
            return 0.0
        return None if mode == "split" else self.rng.uniform(300, 800)

    def former_sign(self, nd: Node, msg: Proposal | Vote) -> None:
        """byz_former: once removed, the node signs at every (height, round) it hears of: a
        proposal with changes of its own, votes for it and for what it heard, votes of the next
        height, and a precommit for another block at the last height it was a validator. None
        of it may count (it is outside the set of those heights), except that last precommit,
        one faulty vote in a set that tolerates one."""
        h, r = msg.height, msg.round
        me = nd.key.public
        known = self.set_of.get(h)
        if known is None or me in known or (h, r) in self._former_done:
            return
        self._former_done.add((h, r))
        chain, key = self.chain, nd.key
        victim = known[r % len(known)]
        evil = {"height": h, "prev": self.decided.get(h - 1, chain) if h > 1 else chain, "proposer": me,
                "payload": f"former-{h}-{r}", "changes": [{"op": "validator.remove", "key": victim}]}
        eh = block_hash(evil)
        self.blocks.setdefault(eh, evil)
        out: list[Any] = [sign_proposal(key, chain, h, r, evil, eh)]
        for step in ("prevote", "precommit"):
            out.append(sign_vote(key, chain, h, r, step, eh))
            out.append(sign_vote(key, chain, h + 1, r, step, NIL))
            if msg.block_hash != NIL:
                out.append(sign_vote(key, chain, h, r, step, msg.block_hash))
        last = max(k for k, v in self.set_of.items() if me in v)
        other = tagged_hash(BLOCK_TAG, {"former": last, "r": r})
        out.append(sign_vote(key, chain, last, r, "precommit", other))
        for m in out:
            self.broadcast(nd.idx, m)

    # ------------------------------------------------------------------ run

    def run(self) -> Result:
        try:
            return self._run()
        except Livelock as e:
            raise self.violation("liveness", str(e)) from e

    def _run(self) -> Result:
        self._mirrors = [nd for nd in self.nodes if nd.byz in ("mirror", "relock")]
        self._skipped: set[tuple[int, int]] = set()
        self._relocked: set[tuple[int, int]] = set()
        self._relock_pc: set[tuple[int, int]] = set()
        self._shown: dict[tuple[int, int, int], list[str]] = {}  # (node, height, round) -> proposals
        self._mirror_votes: dict[tuple[Any, ...], Vote] = {}
        self._split_reach: dict[tuple[int, int], frozenset[int]] = {}
        self._former_done: set[tuple[int, int]] = set()
        self._setup()
        for nd in self.nodes:
            if nd.idx not in self.late:
                nd.boot()
        for nd in self.nodes:
            self.push(self.rng.uniform(0, GOSSIP_MS), _GOSSIP, nd.idx)
        heal_target: int | None = None
        deadline = self.heal_at + STALL_MS
        queue, pop = self.queue, heapq.heappop
        while queue:
            t, _, kind, a, b, c = pop(queue)
            self.now = t
            self.events += 1
            self.checks.event = (self.events, c if kind == _TIMER else None)
            if self.events > _MAX_EVENTS:
                raise self.violation("liveness", f"more than {_MAX_EVENTS} events")
            if kind == _CONTROL:
                a(*b)
            elif kind in (_DELIVER, _TIMER):
                nd = self.nodes[a]
                if not nd.up or (kind == _TIMER and b != nd.incarnation):
                    continue
                if nd.paused:
                    nd.held.append((kind, a, b, c))
                    continue
                if kind == _DELIVER:
                    self.deliver(nd, b, c)
                else:
                    assert nd.core is not None
                    self.apply(nd, nd.core.on_timeout(*c))
            else:  # _GOSSIP: re-send this height's messages if no progress since last time
                nd = self.nodes[a]
                if nd.up and not nd.paused and nd.core is not None and nd.byz is None:
                    mark = (nd.core.height, nd.core.round)
                    if mark == nd.gossip_mark:
                        for m in nd.core.gossip_messages():
                            self.broadcast(nd.idx, m)
                        if self.scenario in MEMBERSHIP_SCENARIOS:
                            # As the daemon does: the others may have decided this height and
                            # have nothing to say (a set that changed to validators which are
                            # behind): ask for the block. The fixed-set scenarios keep the runs
                            # they made before (a seed replays what it did).
                            self.request_sync(nd, None)
                    nd.gossip_mark = mark
                self.push(t + GOSSIP_MS, _GOSSIP, a)
            if t >= self.heal_at:
                if heal_target is None:
                    heal_target = max(max(len(nd.chain) for nd in self.honest) + 2, self.end_height)
                    self.note(f"network healed; every honest node must reach height {heal_target}")
                if min(len(nd.chain) for nd in self.honest) >= heal_target:
                    break
                if t > deadline:
                    if not self.check_liveness:
                        break
                    lows = {nd.idx: self.describe(nd) for nd in self.honest}
                    raise self.violation("liveness", f"no progress within {STALL_MS} ms after healing: heights {lows}, wanted {heal_target}")
        # durability: every honest chain is a prefix of the decided sequence
        for nd in self.honest:
            for h, (_, bh, _) in enumerate(nd.chain, 1):
                if self.decided.get(h) != bh:
                    raise self.violation("durability", f"node {nd.idx} holds {bh[:12]} at height {h}")
        return Result(self.seed, self.scenario, self.n, self.byzantine, min(len(nd.chain) for nd in self.honest),
                      self.now, self.events, self.evidence, self.rejected, changes=len(self.changed))


def run(seed: int, scenario: str | None = None, **kw: Any) -> Result:
    """Run one seed; raises SimViolation if an invariant breaks."""
    return Simulation(seed, scenario, **kw).run()


def run_seed(seed: int, scenario: str | None = None, mutant: str | None = None) -> Result:
    """Run one seed and report a violation in the result instead of raising (campaigns)."""
    sim = Simulation(seed, scenario, mutant=mutant)
    try:
        return sim.run()
    except SimViolation as e:
        return Result(seed, sim.scenario, sim.n, sim.byzantine, -1, sim.now, sim.events, sim.evidence,
                      sim.rejected, str(e), e.kind)
    except Exception as e:  # a crash of the core or the simulator is a failure too
        import traceback

        detail = "".join(traceback.format_exception(e)[-4:])
        err = SimViolation("error", seed, sim.scenario, f"{type(e).__name__}: {e}\n{detail}", mutant=mutant)
        return Result(seed, sim.scenario, sim.n, sim.byzantine, -1, sim.now, sim.events, sim.evidence,
                      sim.rejected, str(err), "error")


# --------------------------------------------------------------------------- the mutation check

HUNT_SEEDS = 60  # seeds per preferred scenario of a mutant
HUNT_MIXED = 300  # then seeds of the whole scenario mix


@dataclass
class Caught:
    mutant: str
    seed: int | None  # None: the mutant survived every seed tried
    scenario: str | None
    kind: str | None
    runs: int
    seconds: float

    def replay(self) -> str:
        return f"python -m node.sim --seed {self.seed} --scenario {self.scenario} --mutant {self.mutant} -v"


def hunt(mutant: str, per_scenario: int = HUNT_SEEDS, mixed: int = HUNT_MIXED) -> Caught:
    """Run seeds with ``mutant`` planted until one breaks an invariant: first the mutant's own
    scenarios, ``per_scenario`` seeds each, then ``mixed`` seeds of the scenario mix."""
    m = next(m for m in MUTANTS if m.name == mutant)
    t0 = time.perf_counter()
    plan: list[tuple[int, str | None]] = [(seed, sc) for sc in m.scenarios for seed in range(per_scenario)]
    plan += [(seed, None) for seed in range(mixed)]
    for runs, (seed, sc) in enumerate(plan, 1):
        r = run_seed(seed, sc, mutant)
        if r.violation:
            return Caught(mutant, seed, r.scenario, r.kind, runs, time.perf_counter() - t0)
    return Caught(mutant, None, None, None, len(plan), time.perf_counter() - t0)


def _mutation_check(jobs: int) -> int:
    import multiprocessing as mp

    t0 = time.perf_counter()
    names = [m.name for m in MUTANTS]
    ctx = mp.get_context("fork") if sys.platform != "win32" else mp.get_context()
    with ctx.Pool(jobs) as pool:
        results = pool.map(hunt, names, chunksize=1)
    for m, c in zip(MUTANTS, results, strict=True):
        if c.seed is None:
            print(f"SURVIVED {m.name:11} lines {m.lines:8} {m.what} ({c.runs} runs, {c.seconds:.1f}s)")
        else:
            print(f"caught   {m.name:11} lines {m.lines:8} {m.what}\n"
                  f"         {c.kind} at seed {c.seed} ({c.scenario}) after {c.runs} runs, {c.seconds:.1f}s;"
                  f" replay: {c.replay()}")
    caught = sum(c.seed is not None for c in results)
    print(f"mutants: {caught} caught, {len(MUTANTS) - caught} survived, of {len(MUTANTS)}, "
          f"in {time.perf_counter() - t0:.1f}s, jobs={jobs}")
    return 1 if caught < len(MUTANTS) else 0


def _run_forced(job: tuple[int, str | None]) -> Result:
    return run_seed(*job)


def scenario_list(text: str) -> tuple[str, ...]:
    """``--scenarios``: names separated by commas; ``membership`` stands for MEMBERSHIP_SCENARIOS."""
    names: list[str] = []
    for name in text.split(","):
        for x in MEMBERSHIP_SCENARIOS if name == "membership" else (name,):
            if x not in SCENARIOS:
                raise argparse.ArgumentTypeError(f"unknown scenario {x!r}; one of {', '.join(SCENARIOS)} or membership")
            if x not in names:
                names.append(x)
    return tuple(names)


def _campaign(start: int, count: int, jobs: int, quiet: bool, only: tuple[str, ...] = ()) -> int:
    import multiprocessing as mp

    t0 = time.perf_counter()
    bad: list[Result] = []
    stalls = done = events = 0
    by_scenario: dict[str, int] = {}
    # Seed s runs only[s % len(only)] when scenarios are given, else the scenario it draws.
    jobs_of = [(s, only[s % len(only)] if only else None) for s in range(start, start + count)]
    step = max(1, count // 20)
    ctx = mp.get_context("fork") if sys.platform != "win32" else mp.get_context()
    with ctx.Pool(jobs) as pool:
        for r in pool.imap_unordered(_run_forced, jobs_of, chunksize=16):
            done += 1
            events += r.events
            by_scenario[r.scenario] = by_scenario.get(r.scenario, 0) + 1
            if r.violation:
                bad.append(r)
                if r.kind == "liveness":
                    stalls += 1
                print(r.violation, file=sys.stderr, flush=True)
            if not quiet and (done % step == 0 or done == count):
                rate = done / (time.perf_counter() - t0)
                print(f"  {done}/{count} seeds, {len(bad)} violations, {rate:.0f} seeds/s", flush=True)
    dt = time.perf_counter() - t0
    safety = len(bad) - stalls
    print(f"seeds run: {done} (from {start}) in {dt:.1f}s, {done / dt:.0f} seeds/s, {events} events, "
          f"{events / dt:.0f} events/s, jobs={jobs}")
    print("scenarios: " + ", ".join(f"{k}={v}" for k, v in sorted(by_scenario.items())))
    print(f"violations: {safety} safety/validity/certificate/durability/conformance, {stalls} stalls (liveness)")
    for r in sorted(bad, key=lambda r: r.seed)[:20]:
        print(f"  seed {r.seed} {r.scenario}: {r.kind}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m node.sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="run (replay) one seed and tell what happened")
    ap.add_argument("--scenario", choices=SCENARIOS, help="force a scenario (with --seed)")
    ap.add_argument("--mutant", choices=[m.name for m in MUTANTS], help="plant this bug in the core (with --seed)")
    ap.add_argument("--mutants", action="store_true",
                    help="the mutation check: plant each bug of node/mutants.py, exit 1 if one goes unnoticed")
    ap.add_argument("--seeds", type=int, help="run a campaign of this many seeds")
    ap.add_argument("--start", type=int, default=0, help="first seed of the campaign")
    ap.add_argument("--scenarios", type=scenario_list, default=(), metavar="A,B,...",
                    help="a campaign of these scenarios only, in turn ('membership': the validator set changes)")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the run's event log")
    args = ap.parse_args(argv)
    if args.mutants:
        import os

        return _mutation_check(args.jobs or os.cpu_count() or 1)
    if args.seeds is not None:
        import os

        return _campaign(args.start, args.seeds, args.jobs or os.cpu_count() or 1, args.quiet, args.scenarios)
    if args.seed is None:
        ap.error("give --seed S (replay one) or --seeds N (campaign)")
    sim = Simulation(args.seed, args.scenario, mutant=args.mutant)
    sim.verbose = args.verbose
    try:
        r = sim.run()
    except SimViolation as e:
        if args.verbose:
            print("\n".join(sim.log))
        print(e, file=sys.stderr)
        return 1
    if args.verbose:
        print("\n".join(sim.log))
    print(f"seed {r.seed} scenario {r.scenario} n={r.n} byzantine={r.byzantine}: ok, height {r.height}, "
          f"{r.events} events, {r.virtual_ms:.0f} virtual ms, evidence {r.evidence}, refused {r.rejected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
