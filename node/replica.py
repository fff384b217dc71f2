"""The consensus driver: runs the Tendermint core (``node.consensus``) between real nodes.

A ``Replica`` belongs to a ``Node`` whose genesis names more than one validator. It mirrors
the simulator's driver (``node.sim``): one task feeds the core its events one at a time and
carries out the actions each returns, in order, before the next event:

  PersistSigned   the recovery document goes to the store (``Store.save_signed_state``,
                  synchronous=FULL) and the call returns only once it is durable, so the
                  Broadcast after it never sends a signature the node could forget;
  Broadcast       the message goes to every other validator (``node.peers``, never waiting
                  for a slow peer);
  ScheduleTimeout ``loop.call_later``, which puts the timeout back on the event queue;
  Commit          ``Node.apply_final`` stores the block with its certificate and does the
                  follow-up (mempool, ``?wait=true`` waiters, metrics, log line); the core's
                  next event is taken only after the block is stored (the core's contract);
  ReportEvidence  ``Store.add_evidence``.

The app callbacks: ``propose`` builds the block from the mempool (``Ledger.build_block``,
at most ``max_block_records``); ``valid`` checks a proposed block against the chain
(``Node.check_block``: links, state rules, Merkle root, and the signatures of records this
node has not verified yet). A proposal's block is checked before the proposal is handed to
the core, off the critical path where it can be (large batches of unknown signatures go to
the verifier processes), so ``valid`` usually answers from that check.

Wire form of a proposal's block: ``{"header": header, "ids": [record id, ...], "records":
[envelope, ...]}``. ``ids`` lets a node take the records it already holds from its mempool
without parsing them again; the header's Merkle root binds the ids, and an envelope taken
from the message must hash to its id.

Idle chains do not grow: after a decision the core asks for the ``commit`` timeout before
the next height; the driver holds that timeout (and the core's start) while the mempool is
empty and no message of the height has arrived (the proposer would only propose an empty
block). Records arriving, or a peer's message of the height, release it.

The transport is injected: by default ``node.peers.Peers`` (HTTP to the genesis validators);
any object with the same methods (``Transport``) will do, which is how a test runs this very
driver between several nodes in one process over a seeded lossy network
(tests/node/test_replica.py).

Liveness (the core's docstring): every ``gossip_ms`` the driver re-sends
``gossip_messages()`` if the height and round have not moved since the last look, and also
asks its peers for the block of its height (the others may have decided it and gone idle);
a message of a height beyond the core's starts catch-up (``node.catchup``) as well, when
the node has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any, Protocol

from ledger.blocks import Header
from ledger.chain import Block
from ledger.errors import InputError, LedgerError

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
from .peers import Peers

__all__ = ["Replica", "Transport", "block_to_wire", "timeouts_from_config"]

log = logging.getLogger("provledger.consensus")

SWITCH_INTERVAL_S = 0.001
_QUEUE_LIMIT = 100_000


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


def timeouts_from_config(config: Any) -> Timeouts:
    """The core's timeouts from the node's config (``NodeConfig.consensus_timeouts``)."""
    return Timeouts(**config.timeouts())


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
    """One validator's consensus: the core, its event queue, its peers."""

    def __init__(self, node: Any, transport: Transport | None = None) -> None:
        self.node = node
        g = node.genesis
        self.chain = node.chain_id
        self.validators = list(g.validators)
        self.members = frozenset(self.validators)
        self.timeouts = timeouts_from_config(node.config)
        self.gossip_s = node.config.gossip_ms / 1000
        me = node.key.public
        self.peers: Transport = transport if transport is not None else Peers(
            {k: g.validator_urls[k] for k in self.validators if k != me},
            names={v["key"]: v.get("name", "") for v in g.doc["validators"]})
        self.core: Consensus | None = None
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._checked: dict[str, Block] = {}  # block hash -> checked block, current height
        self._invalid: set[str] = set()
        self._held: tuple[Any, ...] | None = None  # the start or a commit timeout, waiting for work
        self._sync_task: asyncio.Task[Any] | None = None
        self._persisted: set[str] = set()  # blocks already in the store's signed_blocks
        self._persisted_height = 0
        self._height_started = time.monotonic()
        self.decided = 0

    # -- lifecycle ----------------------------------------------------------------------
    def _restore(self) -> dict[str, Any] | None:
        saved = self.node.store.last_signed_state()
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
        node = self.node
        # Blocks stored in the commit thread (catch-up's) make SQLite calls that each give
        # up the GIL and wait to take it back from the busy event loop: at the default 5 ms
        # switch interval a block of thousands of rows waits far longer than it works.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        height = node.store.height() + 1
        last = self._restore()
        self.core = Consensus(self.chain, self.validators_for(height), node.key, self, height, last_signed=last,
                              timeouts=self.timeouts, validators_for=self.validators_for)
        if last is not None:
            log.info("consensus resumes at height %d; last signed %d/%d/%s", height, last["height"],
                     last["round"], last["step"])
        await self.peers.start()
        self._tasks.append(asyncio.create_task(self._run(), name="consensus"))
        self._tasks.append(asyncio.create_task(self._gossip(), name="gossip"))
        self._tasks.append(asyncio.create_task(self._watch_mempool(), name="mempool-watch"))
        self._queue.put_nowait(("start",))

    async def stop(self) -> None:
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        tasks = [*self._tasks, *([self._sync_task] if self._sync_task else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
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
        }

    # -- inputs ---------------------------------------------------------------------------
    def accept(self, obj: Any) -> Proposal | Vote:
        """Check a peer's message (form, chain, signer, signature) and queue it for the core.
        Raises LedgerError (a 4xx for the peer route) for anything the core would refuse."""
        m = message_from_dict(obj)
        if m.chain != self.chain:
            raise InputError(f"message is for chain {m.chain[:16]}…, this is {self.chain[:16]}…", code="wrong_chain")
        core = self.core
        signer = m.validator if isinstance(m, Vote) else m.proposer
        if core is not None:
            core.check(m)  # signer and proposer by the set of its height, signature (memoised for the core)
        elif signer not in self.members:
            raise InputError(f"message signed by {signer[:16]}…, not a validator of this chain", code="not_validator")
        elif isinstance(m, Proposal):
            verify_proposal(m)
        else:
            verify_vote(m)
        if self._queue.qsize() < _QUEUE_LIMIT:
            self._queue.put_nowait(("msg", m))
        return m

    def forward(self, rec: Any) -> None:
        self.peers.forward_record(rec.canonical)

    def stored(self, height: int) -> None:
        """A block was stored (by consensus or catch-up): let the core move past it."""
        self._queue.put_nowait(("advance", height))

    # -- the event loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        core = self.core
        assert core is not None
        q = self._queue
        while True:
            ev = await q.get()
            kind = ev[0]
            try:
                if kind == "msg":
                    m = ev[1]
                    if m.height > core.height:
                        self._catch_up(m.height - 1)
                    if self._held is not None and m.height == core.height:
                        await self._release()
                    if isinstance(m, Proposal):
                        await self._precheck(m)
                        actions = core.on_proposal(m)
                    else:
                        actions = core.on_vote(m)
                elif kind == "timeout":
                    h, r, step = ev[1], ev[2], ev[3]
                    if step == "commit" and h == core.height and not self._has_work():
                        self._held = ev  # idle: wait for records or a message of the height
                        continue
                    actions = core.on_timeout(h, r, step)
                elif kind == "release":
                    if self._held is None:
                        continue
                    await self._release()
                    continue
                elif kind == "advance":
                    actions = core.advance(ev[1])
                    if actions:  # catch-up moved the core: a held commit timeout is stale
                        if self._held is not None and self._held[0] == "timeout":
                            self._held = None
                        self._new_height()
                elif kind == "start":
                    if not self._has_work() and (core.last_signed is None or core.last_signed.height < core.height):
                        self._held = ev  # nothing to propose yet: start round 0 once there is
                        continue
                    actions = core.start()
                else:  # pragma: no cover
                    continue
                t_ev = time.monotonic()
                await self._apply(actions)
                if log.isEnabledFor(logging.DEBUG):
                    m = ev[1] if kind == "msg" else None
                    what = (f"{type(m).__name__} {m.height}/{m.round}/{getattr(m, 'step', 'propose')} from "
                            f"{(getattr(m, 'validator', None) or m.proposer)[:6]}") if m is not None else str(ev)
                    log.debug("event %s -> %s (%.1f ms)", what, [type(a).__name__ for a in actions],
                              (time.monotonic() - t_ev) * 1000)
            except LedgerError as e:
                log.info("consensus input refused: %s: %s", e.code, e.message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consensus event %s failed", kind)

    def _has_work(self) -> bool:
        return len(self.node.mempool) > 0

    async def _release(self) -> None:
        """Carry out the held start or commit timeout (there is work, or a peer moved)."""
        core = self.core
        assert core is not None and self._held is not None
        ev, self._held = self._held, None
        await self._apply(core.start() if ev[0] == "start" else core.on_timeout(ev[1], ev[2], ev[3]))

    async def _watch_mempool(self) -> None:
        """Release a held commit timeout when records arrive."""
        node = self.node
        while True:
            wake = node._wake
            if wake is None:
                await asyncio.sleep(0.05)
                continue
            await wake.wait()
            wake.clear()
            if self._held is not None:
                self._queue.put_nowait(("release",))

    def _new_height(self) -> None:
        self._checked.clear()
        self._invalid.clear()
        self._height_started = time.monotonic()

    async def _apply(self, actions: list[Any]) -> None:
        """Carry out the core's actions, in order (see the module docstring)."""
        node = self.node
        for a in actions:
            t = type(a)
            if t is Broadcast:
                self.peers.broadcast(a.message)
            elif t is PersistSigned:
                doc, blocks = self._persist_doc(a)
                if self._persisted_height != a.height:  # the store forgets lower heights' blocks
                    self._persisted.clear()
                    self._persisted_height = a.height
                # Durable before the Broadcast that follows (persist-before-send). On the
                # event loop: one small transaction that nothing of consensus can overtake,
                # and a hand-off to the commit thread would cost more than it takes.
                node.store.save_signed_state(doc, blocks)
                self._persisted.update(blocks)
            elif t is ScheduleTimeout:
                if a.step == "propose" and a.round > 0:
                    log.info("height %d: round %d (the rounds before it did not decide)", a.height, a.round)
                self._schedule(a)
            elif t is Commit:
                await self._commit(a)
            elif t is ReportEvidence:
                ev = a.evidence
                d = ev.to_dict()
                eid = f"{ev.validator}:{ev.vote_a.height}:{ev.vote_a.round}:" + (
                    ev.vote_a.step if isinstance(ev.vote_a, Vote) else "propose")
                if node.store.add_evidence(eid, ev.vote_a.height, ev.validator, d):  # bounded: one per height
                    log.warning("evidence: validator %s… signed two conflicting messages at %s", ev.validator[:16],
                                eid[65:])

    def _persist_doc(self, a: PersistSigned) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The recovery document with its blocks set apart (one row per block, by hash)."""
        import orjson

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
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait(("timeout", a.height, a.round, a.step))

        handle = loop.call_later(a.duration_ms / 1000, fire)
        self._timers.add(handle)

    async def _commit(self, a: Commit) -> None:
        node = self.node
        block = self._checked.get(a.block_hash)
        try:
            await node.apply_final(block if block is not None else a.block, a.certificate, on_loop=True)
        except LedgerError as e:
            # Only if the block is not the next one on this node's disk (catch-up raced us).
            log.warning("decided block %d not stored: %s: %s", a.height, e.code, e.message)
        self.decided += 1
        log.debug("height %d decided in round %d (%d ms at this height)", a.height, a.certificate["round"],
                  (time.monotonic() - self._height_started) * 1000)
        self._new_height()

    # -- app callbacks (node.consensus.App) ---------------------------------------------
    def validators_for(self, height: int) -> list[str]:
        """The keys of the set certifying ``height`` (PROTOCOL.md 9.1), asked by the core once
        block ``height - 1`` is stored: the genesis set until the store keeps each height's."""
        return self.validators

    def propose(self, height: int, round: int) -> tuple[Any, str]:
        """getValue() (Algorithm 1, line 18): the next block from the mempool."""
        node = self.node
        batch = node.mempool.take(node.max_block)
        block, rejected = node.ledger.build_block(batch, proposer=node.key.public)
        if rejected:
            node.stale_pending = True
            log.info("proposal for height %d leaves out %d records the rules refuse", height, len(rejected))
        self._checked[block.hash] = block
        return block_to_wire(block), block.hash

    def valid(self, block: Any, block_hash: str, height: int) -> bool:
        """valid(v): ``block`` hashes to ``block_hash`` and is the next block of our chain."""
        if block_hash in self._invalid:
            return False
        checked = self._checked.get(block_hash)
        node = self.node
        if node.store.height() != height - 1:
            return False
        if checked is not None and checked.header.height == height:
            return True
        if _block_hash_of(block) != block_hash:
            return False
        try:
            self._checked[block_hash] = node.check_block_sync(block)
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
        if self.node.store.height() != p.height - 1 or _block_hash_of(p.block) != h:
            return
        try:
            self._checked[h] = await self.node.check_block(p.block)
        except LedgerError as e:
            log.warning("proposed block %s… for height %d is invalid: %s: %s", h[:16], p.height, e.code, e.message)
            self._invalid.add(h)

    # -- liveness -------------------------------------------------------------------------------
    async def _gossip(self) -> None:
        """Re-send this height's messages when the height and round have not moved."""
        mark: tuple[int, int, str] | None = None
        while True:
            await asyncio.sleep(self.gossip_s)
            core = self.core
            if core is None or self._held is not None:
                continue
            now = (core.height, core.round, core.step)
            if now == mark:
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
            mark = now

    def _catch_up(self, target: int) -> None:
        """A peer is past our height: fetch the final blocks (node.catchup), in the background."""
        catchup = getattr(self.node, "catchup", None)
        if catchup is None or (self._sync_task is not None and not self._sync_task.done()):
            return
        if time.monotonic() - self._height_started < 0.5 and target <= self.node.store.height() + 1:
            return  # one height behind for a moment is the normal race of a decision; wait for it

        async def run() -> None:
            try:
                await catchup.sync(target)
            except Exception:
                log.exception("catch-up failed")

        self._sync_task = asyncio.create_task(run(), name="catch-up")
