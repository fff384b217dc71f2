"""The consensus driver: runs the Tendermint core (``node.consensus``) between real nodes.

A ``Replica`` is one validator's driver. It feeds the core its events (``Event``: a start,
a peer's message, a timeout, a release of a held height, a block stored by someone else)
one at a time from its ``Inbox`` and carries out the actions each returns, in order,
before the next event:

  PersistSigned   the recovery document goes to the ``SigningStore``
                  (``Store.save_signed_state``, synchronous=FULL) and the call returns only
                  once it is durable, so the Broadcast after it never sends a signature the
                  node could forget;
  Broadcast       the message goes to every other validator (the ``Transport``, never
                  waiting for a slow peer);
  ScheduleTimeout a ``Clock`` timer, which puts the timeout back into the inbox;
  Commit          ``Chain.apply_final`` stores the block with its certificate and does the
                  follow-up (mempool, ``?wait=true`` waiters, metrics, log line); the core's
                  next event is taken only after the block is stored (the core's contract);
  ReportEvidence  ``SigningStore.add_evidence``.

Everything the driver touches is injected through the typed interfaces below, so that the
same class runs in ``provledger node start`` (``node.daemon.Node.make_replica``: HTTP peers,
the event loop's clock, an asyncio queue, the node's SQLite store) and in the deterministic
simulator (``node.sim_replica``: a simulated network, virtual time, the same stores).

The app callbacks: ``propose`` builds the block from the mempool (``Chain.build_block``);
``valid`` checks a proposed block against the chain (``Chain.check_block_sync``: links,
state rules, Merkle root, and the signatures of records this node has not verified yet).
A proposal's block is checked before the proposal is handed to the core, off the critical
path where it can be (``Chain.check_block``: large batches of unknown signatures go to the
verifier processes), so ``valid`` usually answers from that check.

Wire form of a proposal's block: ``{"header": header, "ids": [record id, ...], "records":
[envelope, ...]}``. ``ids`` lets a node take the records it already holds from its mempool
without parsing them again; the header's Merkle root binds the ids, and an envelope taken
from the message must hash to its id.

Idle chains do not grow: after a decision the core asks for the ``commit`` timeout before
the next height; the driver holds that timeout (and the core's start) while the mempool is
empty and no message of the height has arrived (the proposer would only propose an empty
block). Records arriving (``work_arrived``), or a peer's message of the height, release it.

Liveness (the core's docstring): every ``gossip_s`` the driver re-sends
``gossip_messages()`` if the height and round have not moved since the last look, and also
asks its peers for the block of its height (the others may have decided it and gone idle);
a message of a height beyond the core's starts catch-up (the ``Syncer``) as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ledger.blocks import Header
from ledger.chain import Block
from ledger.errors import InputError, LedgerError
from ledger.keys import SigningKey

from .consensus import (
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
    verify_proposal,
    verify_vote,
)

__all__ = [
    "Advance", "Chain", "Clock", "Event", "Inbox", "LoopClock", "QueueInbox", "Received", "Release", "Replica",
    "SigningStore", "Start", "Syncer", "TimeoutFired", "Timer", "Transport", "block_to_wire",
]

log = logging.getLogger("provledger.consensus")

SWITCH_INTERVAL_S = 0.001
QUEUE_LIMIT = 100_000  # peer messages beyond this many waiting events are dropped
CATCH_UP_GRACE_S = 0.5  # one height behind for this long is the normal race of a decision


# --- events ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Start:
    """Start the core (round 0 of the next height), once there is something to propose."""


@dataclass(frozen=True, slots=True)
class Received:
    """A peer's proposal or vote, already checked by ``Replica.accept``."""

    message: Proposal | Vote


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    height: int
    round: int
    step: str


@dataclass(frozen=True, slots=True)
class Release:
    """Records arrived: carry out a held start or commit timeout."""


@dataclass(frozen=True, slots=True)
class Advance:
    """A block of ``height`` was stored (by consensus or catch-up)."""

    height: int


Event = Start | Received | TimeoutFired | Release | Advance


# --- what the driver is given -------------------------------------------------------------------
class Transport(Protocol):
    """How the driver reaches the other validators (``node.peers.Peers`` in production)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> list[dict[str, Any]]: ...

    def broadcast(self, message: Any) -> None:
        """Send a Proposal or Vote to every other validator, never waiting for a slow one."""
        ...

    def gossip(self, messages: list[Any]) -> int:
        """Re-send ``messages``; the number of peers they went to."""
        ...

    def forward_record(self, canonical: bytes) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time for the driver: seconds that only go forward, and timers."""

    def now(self) -> float: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer: ...


class Inbox(Protocol):
    """The driver's event queue: ``handle`` gets the events one at a time, in order, each
    awaited to the end before the next."""

    def start(self, handle: Callable[[Event], Awaitable[None]]) -> None: ...

    async def stop(self) -> None: ...

    def put(self, event: Event) -> None: ...

    def size(self) -> int: ...


class SigningStore(Protocol):
    """Where the signing state and evidence are kept (``ledger.store.Store``)."""

    def last_signed_state(self) -> tuple[dict[str, Any], dict[str, Any]] | None: ...

    def save_signed_state(self, doc: dict[str, Any], blocks: dict[str, bytes] | None = None) -> None: ...

    def add_evidence(self, evidence_id: str, height: int, validator: str, evidence: dict[str, Any]) -> bool: ...


class Chain(Protocol):
    """The node's chain as consensus sees it (``node.daemon.NodeChain``)."""

    def height(self) -> int:
        """The height of the last stored block."""
        ...

    def has_work(self) -> bool:
        """Records wait for a block."""
        ...

    def build_block(self) -> tuple[Block, int]:
        """The next block from the mempool, and how many waiting records it leaves out."""
        ...

    def check_block_sync(self, wire: Any) -> Block: ...

    async def check_block(self, wire: Any) -> Block: ...

    async def apply_final(self, block: Block | dict[str, Any], certificate: dict[str, Any], *,
                          on_loop: bool = False) -> Block | None: ...


class Syncer(Protocol):
    """Catch-up for the driver (``node.catchup``, run in the background)."""

    def start(self, target: int) -> None:
        """Begin fetching final blocks up to ``target`` unless a catch-up runs already."""
        ...

    async def stop(self) -> None: ...


# --- production implementations of Clock and Inbox ---------------------------------------------
class LoopClock:
    """The running event loop's timers, ``time.monotonic`` seconds."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(seconds, callback)


class QueueInbox:
    """An asyncio queue and the task that hands its events to the driver."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self, handle: Callable[[Event], Awaitable[None]]) -> None:
        async def run() -> None:
            while True:
                await handle(await self._queue.get())

        self._task = asyncio.create_task(run(), name="consensus")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def put(self, event: Event) -> None:
        self._queue.put_nowait(event)

    def size(self) -> int:
        return self._queue.qsize()


def block_to_wire(block: Block) -> dict[str, Any]:
    return {
        "header": block.header.to_dict(),
        "ids": [r.id for r in block.records],
        "records": [r.envelope for r in block.records],
    }


def _block_hash_of(wire: Any) -> str | None:
    try:
        return Header.from_dict(wire["header"]).hash
    except (LedgerError, TypeError, KeyError):
        return None


class Replica:
    """One validator's consensus: the core, its events, its peers (module docstring)."""

    def __init__(self, *, chain_id: str, validators: list[str], key: SigningKey, chain: Chain,
                 store: SigningStore, transport: Transport, timeouts: Timeouts, gossip_s: float,
                 clock: Clock | None = None, inbox: Inbox | None = None, syncer: Syncer | None = None,
                 core_class: type[Consensus] = Consensus,
                 validator_sets: Callable[[int], Sequence[str]] | None = None) -> None:
        self.chain_id = chain_id
        self.validators = list(validators)  # the genesis set: of every height without ``validator_sets``
        self.validator_sets = validator_sets
        self.key = key
        self.chain = chain
        self.store = store
        self.peers = transport
        self.timeouts = timeouts
        self.gossip_s = gossip_s
        self.clock: Clock = clock if clock is not None else LoopClock()
        self.inbox: Inbox = inbox if inbox is not None else QueueInbox()
        self.syncer = syncer
        self.core_class = core_class
        self.core: Consensus | None = None
        self.decided = 0
        self._timers: set[Timer] = set()
        self._gossip_timer: Timer | None = None
        self._gossip_mark: tuple[int, int, str] | None = None
        self._checked: dict[str, Block] = {}  # block hash -> checked block, current height
        self._invalid: set[str] = set()
        self._held: Start | TimeoutFired | None = None  # the start or a commit timeout, waiting for work
        self._release_queued = False
        self._persisted: set[str] = set()  # blocks already in the store's signed_blocks
        self._persisted_height = 0
        self._height_started = self.clock.now()

    # -- lifecycle ----------------------------------------------------------------------
    def _restore(self) -> dict[str, Any] | None:
        saved = self.store.last_signed_state()
        if saved is None:
            return None
        doc, blocks = saved
        missing: list[str] = []

        def block_of(ref: dict[str, Any]) -> Any:
            b = blocks.get(ref["ref"])
            if b is None:
                missing.append(ref["ref"])
            return b

        # Blocks are kept beside the document, by hash (Store.save_signed_state).
        for k in ("locked_block", "valid_block"):
            ref = doc.get(k)
            if type(ref) is dict and set(ref) == {"ref"}:
                doc[k] = block_of(ref)
        for k in ("round_proof", "signed"):
            for m in doc.get(k, ()):
                if m.get("type") == "proposal" and type(m.get("block")) is dict and set(m["block"]) == {"ref"}:
                    m["block"] = block_of(m["block"])
        if missing:
            # Only a database edited by hand gets here: the document and its blocks are
            # written in one transaction. Without its locked block the core cannot keep
            # its lock (Algorithm 1, lines 36-43); say so loudly.
            log.error("signing state names blocks the database lacks (%s); the lock of height %d is lost",
                      ", ".join(h[:16] for h in missing), doc.get("height", 0))
        return doc

    async def start(self) -> None:
        # Blocks stored in the commit thread (catch-up's) make SQLite calls that each give
        # up the GIL and wait to take it back from the busy event loop: at the default 5 ms
        # switch interval a block of thousands of rows waits far longer than it works.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        height = self.chain.height() + 1
        last = self._restore()
        self.core = self.core_class(self.chain_id, self.validators_for(height), self.key, self, height,
                                    last_signed=last, timeouts=self.timeouts, validators_for=self.validators_for)
        if last is not None:
            log.info("consensus resumes at height %d; last signed %d/%d/%s", height, last["height"],
                     last["round"], last["step"])
        self._height_started = self.clock.now()
        await self.peers.start()
        self.inbox.start(self.handle)
        self._gossip_timer = self.clock.call_later(self.gossip_s, self._gossip)
        self.inbox.put(Start())

    async def stop(self) -> None:
        for t in (*self._timers, *([self._gossip_timer] if self._gossip_timer else [])):
            t.cancel()
        self._timers.clear()
        self._gossip_timer = None
        await self.inbox.stop()
        if self.syncer is not None:
            await self.syncer.stop()
        await self.peers.stop()

    def status(self) -> dict[str, Any]:
        c = self.core
        return {
            "height": c.height if c else None,
            "round": c.round if c else None,
            "step": ("waiting" if self._held else c.step) if c else None,
            "proposer": c.proposer(c.height, c.round) if c else None,
            "decided": self.decided,
            "evidence": len(c.evidence) if c else 0,
            # In the set of the core's height (signs), or a full node there (signs nothing).
            "validator": (c.me is not None) if c else None,
        }

    # -- inputs ---------------------------------------------------------------------------
    def accept(self, obj: Any) -> Proposal | Vote:
        """Check a peer's message (form, chain, signer, signature) and queue it for the core.
        Raises LedgerError (a 4xx for the peer route) for anything the core would refuse."""
        m = message_from_dict(obj)
        if m.chain != self.chain_id:
            raise InputError(f"message is for chain {m.chain[:16]}…, this is {self.chain_id[:16]}…", code="wrong_chain")
        core = self.core
        signer = m.validator if isinstance(m, Vote) else m.proposer
        if core is not None:
            core.check(m)  # signer and proposer by the set of its height, signature (memoised for the core)
        elif m.height == self.chain.height() + 1 and signer not in self.validators_for(m.height):
            raise InputError(f"message signed by {signer[:16]}…, not a validator of height {m.height}",
                             code="not_validator")
        elif isinstance(m, Proposal):
            verify_proposal(m)
        else:
            verify_vote(m)
        if self.inbox.size() < QUEUE_LIMIT:
            self.inbox.put(Received(m))
        return m

    def forward(self, canonical: bytes) -> None:
        """A record admitted here goes to the other validators' mempools."""
        self.peers.forward_record(canonical)

    def stored(self, height: int) -> None:
        """A block was stored (by consensus or catch-up): let the core move past it."""
        self.inbox.put(Advance(height))

    def work_arrived(self) -> None:
        """Records arrived: release a held start or commit timeout (once per hold)."""
        if self._held is not None and not self._release_queued:
            self._release_queued = True
            self.inbox.put(Release())

    # -- the events, one at a time -------------------------------------------------------------
    async def handle(self, ev: Event) -> None:
        """Feed one event to the core and carry out what it asks (module docstring)."""
        core = self.core
        assert core is not None
        t_ev = time.monotonic()
        try:
            actions = await self._step(core, ev)
            if actions is None:
                return
            await self._apply(actions)
        except LedgerError as e:
            log.info("consensus input refused: %s: %s", e.code, e.message)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("consensus event %s failed", type(ev).__name__)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event %s -> %s (%.1f ms)", _describe(ev), [type(a).__name__ for a in actions],
                      (time.monotonic() - t_ev) * 1000)

    async def _step(self, core: Consensus, ev: Event) -> list[Any] | None:
        """The core's actions for ``ev``; None when the event is held or used up here."""
        if isinstance(ev, Received):
            return await self._on_message(core, ev.message)
        if isinstance(ev, TimeoutFired):
            if ev.step == "commit" and ev.height == core.height and not self.chain.has_work():
                self._held = ev  # idle: wait for records or a message of the height
                return None
            return core.on_timeout(ev.height, ev.round, ev.step)
        if isinstance(ev, Release):
            self._release_queued = False
            if self._held is not None:
                await self._release()
            return None
        if isinstance(ev, Advance):
            actions = core.advance(ev.height)
            if actions:  # catch-up moved the core: a held commit timeout is stale
                if isinstance(self._held, TimeoutFired):
                    self._held = None
                self._new_height()
            return actions
        # Start
        if not self.chain.has_work() and (core.last_signed is None or core.last_signed.height < core.height):
            self._held = ev  # nothing to propose yet: start round 0 once there is
            return None
        return core.start()

    async def _on_message(self, core: Consensus, m: Proposal | Vote) -> list[Any]:
        if m.height > core.height:
            self._catch_up(m.height - 1)
        if self._held is not None and m.height == core.height:
            await self._release()
        if isinstance(m, Proposal):
            await self._precheck(m)
            return core.on_proposal(m)
        return core.on_vote(m)

    async def _release(self) -> None:
        """Carry out the held start or commit timeout (there is work, or a peer moved)."""
        core = self.core
        assert core is not None and self._held is not None
        ev, self._held = self._held, None
        await self._apply(core.start() if isinstance(ev, Start) else core.on_timeout(ev.height, ev.round, ev.step))

    def _new_height(self) -> None:
        self._checked.clear()
        self._invalid.clear()
        self._height_started = self.clock.now()

    # -- the core's actions ----------------------------------------------------------------------
    async def _apply(self, actions: list[Any]) -> None:
        """Carry out the core's actions, in order (see the module docstring)."""
        for a in actions:
            t = type(a)
            if t is Broadcast:
                self.peers.broadcast(a.message)
            elif t is PersistSigned:
                self._persist(a)
            elif t is ScheduleTimeout:
                if a.step == "propose" and a.round > 0:
                    log.info("height %d: round %d (the rounds before it did not decide)", a.height, a.round)
                self._schedule(a)
            elif t is Commit:
                await self._commit(a)
            elif t is ReportEvidence:
                self._report(a)

    def _persist(self, a: PersistSigned) -> None:
        doc, blocks = self._persist_doc(a)
        if self._persisted_height != a.height:  # the store forgets lower heights' blocks
            self._persisted.clear()
            self._persisted_height = a.height
        # Durable before the Broadcast that follows (persist-before-send). On the event
        # loop: one small transaction that nothing of consensus can overtake, and a hand-off
        # to the commit thread would cost more than it takes.
        self.store.save_signed_state(doc, blocks)
        self._persisted.update(blocks)

    def _persist_doc(self, a: PersistSigned) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The recovery document with its blocks set apart (one row per block, by hash)."""
        doc = a.to_dict()
        blocks: dict[str, bytes] = {}

        def ref(block: Any, known: str | None = None) -> Any:
            if type(block) is not dict:
                return block
            h = known or _block_hash_of(block)
            if h is None:
                return block
            if h not in blocks and h not in self._persisted:
                blocks[h] = orjson.dumps(block)
            return {"ref": h}

        if a.locked_round >= 0:
            doc["locked_block"] = ref(doc["locked_block"], a.locked_hash)
        doc["valid_block"] = ref(doc["valid_block"], a.valid_proof[0].block_hash if a.valid_proof else None)
        for k in ("round_proof", "signed"):
            for m in doc[k]:
                if m["type"] == "proposal":
                    m["block"] = ref(m["block"], m["block_hash"])
        return doc, blocks

    def _schedule(self, a: ScheduleTimeout) -> None:
        timer: Timer

        def fire() -> None:
            self._timers.discard(timer)
            self.inbox.put(TimeoutFired(a.height, a.round, a.step))

        timer = self.clock.call_later(a.duration_ms / 1000, fire)
        self._timers.add(timer)

    async def _commit(self, a: Commit) -> None:
        block = self._checked.get(a.block_hash)
        try:
            await self.chain.apply_final(block if block is not None else a.block, a.certificate, on_loop=True)
        except LedgerError as e:
            # Only if the block is not the next one on this node's disk (catch-up raced us).
            log.warning("decided block %d not stored: %s: %s", a.height, e.code, e.message)
        self.decided += 1
        log.debug("height %d decided in round %d (%d ms at this height)", a.height, a.certificate["round"],
                  (self.clock.now() - self._height_started) * 1000)
        self._new_height()

    def _report(self, a: ReportEvidence) -> None:
        ev = a.evidence
        eid = f"{ev.validator}:{ev.vote_a.height}:{ev.vote_a.round}:" + (
            ev.vote_a.step if isinstance(ev.vote_a, Vote) else "propose")
        if self.store.add_evidence(eid, ev.vote_a.height, ev.validator, ev.to_dict()):  # bounded: one per height
            log.warning("evidence: validator %s… signed two conflicting messages at %s", ev.validator[:16], eid[65:])

    # -- app callbacks (node.consensus.App) ---------------------------------------------
    def validators_for(self, height: int) -> list[str]:
        """The keys of the set certifying ``height`` (PROTOCOL.md 9.1: the set after block
        ``height - 1``'s records), asked by the core once block ``height - 1`` is stored:
        ``validator_sets`` (the node's committed state), else the genesis set."""
        if self.validator_sets is None:
            return self.validators
        return list(self.validator_sets(height))

    def propose(self, height: int, round: int) -> tuple[Any, str]:
        """getValue() (Algorithm 1, line 18): the next block from the mempool."""
        block, left_out = self.chain.build_block()
        if left_out:
            log.info("proposal for height %d leaves out %d records the rules refuse", height, left_out)
        self._checked[block.hash] = block
        return block_to_wire(block), block.hash

    def valid(self, block: Any, block_hash: str, height: int) -> bool:
        """valid(v): ``block`` hashes to ``block_hash`` and is the next block of our chain."""
        if block_hash in self._invalid:
            return False
        checked = self._checked.get(block_hash)
        if self.chain.height() != height - 1:
            return False
        if checked is not None and checked.header.height == height:
            return True
        if _block_hash_of(block) != block_hash:
            return False
        try:
            self._checked[block_hash] = self.chain.check_block_sync(block)
            return True
        except LedgerError as e:
            log.warning("proposed block %s… for height %d is invalid: %s: %s", block_hash[:16], height, e.code, e.message)
            self._invalid.add(block_hash)
            return False

    async def _precheck(self, p: Proposal) -> None:
        """Check a proposal's block before the core asks ``valid`` (signatures of unknown
        records in the verifier processes), so that ``valid`` answers from memory."""
        core = self.core
        assert core is not None
        h = p.block_hash
        if p.height != core.height or h in self._checked or h in self._invalid:
            return
        if self.chain.height() != p.height - 1 or _block_hash_of(p.block) != h:
            return
        try:
            self._checked[h] = await self.chain.check_block(p.block)
        except LedgerError as e:
            log.warning("proposed block %s… for height %d is invalid: %s: %s", h[:16], p.height, e.code, e.message)
            self._invalid.add(h)

    # -- liveness -------------------------------------------------------------------------------
    def _gossip(self) -> None:
        """Every ``gossip_s``: re-send this height's messages when the height and round have
        not moved."""
        self._gossip_timer = self.clock.call_later(self.gossip_s, self._gossip)
        core = self.core
        if core is None or self._held is not None:
            return
        now = (core.height, core.round, core.step)
        if now == self._gossip_mark:
            # Every vote of the height, but of the proposals (large: they carry their
            # block) only those of this round and the one of our valid value.
            msgs = [m for m in core.gossip_messages()
                    if isinstance(m, Vote) or m.round == core.round or m.block_hash == core.valid_hash]
            sent = self.peers.gossip(msgs)
            if sent:
                log.debug("no progress at %d/%d/%s: re-sent %d messages to %d peers", *now, len(msgs), sent)
            # The others may have decided this height and gone idle (no message of the
            # next height will come to start catch-up): ask them for the block.
            self._catch_up(core.height)
        self._gossip_mark = now

    def _catch_up(self, target: int) -> None:
        """A peer is past our height: fetch the final blocks, in the background."""
        if self.syncer is None:
            return
        if self.clock.now() - self._height_started < CATCH_UP_GRACE_S and target <= self.chain.height() + 1:
            return  # one height behind for a moment is the normal race of a decision; wait for it
        self.syncer.start(target)


def _describe(ev: Event) -> str:
    if isinstance(ev, Received):
        m = ev.message
        who = m.validator if isinstance(m, Vote) else m.proposer
        return f"{type(m).__name__} {m.height}/{m.round}/{getattr(m, 'step', 'propose')} from {who[:6]}"
    return repr(ev)
