"""The production consensus driver under simulated faults, in virtual time.

``node.sim`` runs the consensus core through a driver of its own. This module runs the
driver of ``provledger node start`` itself: N validators, each a real ``node.daemon.Node``
(SQLite store, ledger, mempool, admission, block sink) with a real ``node.replica.Replica``,
whose ports are the simulator's (``Replica``'s typed interfaces):

  Transport  a seeded network: every consensus message and forwarded record goes through
             its wire form (JSON bytes) with a delay, and may be dropped, duplicated or
             blocked by a partition; a message is checked by ``Replica.accept`` on arrival,
             a forwarded record admitted by ``Admission.submit_batch`` as over HTTP;
  Clock      virtual time: one queue of events ordered by (time, sequence);
  Inbox      the driver's events go into that queue and are handled one at a time;
  Syncer     catch-up from a reachable peer's store, every block through
             ``BlockSink.apply_final`` (certificate, records, signatures, rules, Merkle root).

One seed draws everything (``random.Random(seed)``): the scenario, the network, the
records a client submits (to a random validator; it resubmits what is not committed yet,
as ``ledger.client`` does) and the faults. Scenarios: ``happy``, ``lossy`` (drops and
duplicates), ``partition`` (two halves, no quorum on either side), ``isolated`` (one
validator cut off, then catching up), ``restart`` (a validator stops, losing its mempool,
and is rebuilt from its store and persisted signing state), ``mixed`` (all of them).

Checks (a breach raises ``node.sim.SimViolation``):

1. agreement: no two validators store different blocks at one height;
2. validity: every stored block holds only records a client submitted, none twice;
3. certificates: every stored block's certificate verifies (PROTOCOL.md 6);
4. durability: a validator's chain grows by the next height only, across restarts;
5. liveness: once the faults are over, every submitted record is committed on every
   validator within ``STALL_S`` virtual seconds;
6. every validator's database passes the offline audit (``ledger.audit``) at the end;

and the driver logs no error (a failed event is a bug). Run::

    python -m node.sim_replica --seed 3 [--scenario restart] [-v]
    python -m node.sim_replica --seeds 40              # scripts/simulate --replica --seeds 40
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import heapq
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ledger.audit import DbSource, audit
from ledger.blocks import verify_certificate
from ledger.errors import LedgerError
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.records import make_record, parse_record
from ledger.store import Store

from .config import NodeConfig
from .daemon import Node
from .replica import Event
from .sim import SimViolation

__all__ = ["SCENARIOS", "ReplicaResult", "ReplicaSimulation", "main", "run_seed"]

SCENARIOS = ("happy", "lossy", "partition", "isolated", "restart", "mixed")
STALL_S = 60.0  # liveness bound (virtual seconds) once the faults are over
RESUBMIT_S = 2.0  # the client resubmits what is not committed after this long
CHECK_S = 0.1  # how often the end condition is looked at
MAX_EVENTS = 400_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # virtual time 0, for block headers' ``time``
_LOGGERS = ("provledger.consensus", "provledger.node", "provledger.sync")

Callback = Callable[[], Awaitable[None] | None]


def _key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"provledger-sim-replica/" + name.encode()).digest())


def genesis_doc(n: int) -> dict[str, Any]:
    """A chain of ``n`` validators and one contributor, ``alice`` (fixed keys)."""
    admin = _key("admin")
    return {
        "v": 2, "name": f"sim-replica-{n}", "created": "2026-01-01T00:00:00Z",
        "validators": [{"name": f"node-{i}", "key": _key(f"validator-{i}").public, "url": f"http://127.0.0.1:{9000 + i}"}
                       for i in range(n)],
        "organisations": [{"name": "org-a", "admins": [admin.public]}],
        "participants": [{"key": _key("alice").public, "name": "alice", "org": "org-a", "roles": ["contributor"]}],
        "policy": {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}},
    }


@dataclass
class ReplicaResult:
    seed: int
    scenario: str
    n: int
    height: int  # lowest stored height at the end
    records: int
    virtual_s: float
    events: int
    dropped: int
    refused: int  # peer messages Replica.accept refused (duplicates of a round are not refused)
    caught_up: int  # blocks stored by catch-up
    restarts: int
    seconds: float
    violation: str | None = None
    kind: str | None = None


# --- virtual time ----------------------------------------------------------------------------
class _Handle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """``node.replica.Clock`` on the simulation's event queue (seconds)."""

    def __init__(self, sim: ReplicaSimulation) -> None:
        self.sim = sim

    def now(self) -> float:
        return self.sim.now

    def call_later(self, seconds: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()

        def fire() -> None:
            if not handle.cancelled:
                callback()

        self.sim.at(self.sim.now + seconds, fire)
        return handle


class SimInbox:
    """``node.replica.Inbox``: each event is one entry of the event queue, handled (and
    awaited to its end) when its turn comes; nothing after ``stop``."""

    def __init__(self, sim: ReplicaSimulation) -> None:
        self.sim = sim
        self.waiting = 0
        self.handle: Callable[[Event], Awaitable[None]] | None = None

    def start(self, handle: Callable[[Event], Awaitable[None]]) -> None:
        self.handle = handle

    async def stop(self) -> None:
        self.handle = None

    def put(self, event: Event) -> None:
        self.waiting += 1

        def run() -> Awaitable[None] | None:
            self.waiting -= 1
            return self.handle(event) if self.handle is not None else None

        self.sim.at(self.sim.now, run)

    def size(self) -> int:
        return self.waiting


# --- the validators ----------------------------------------------------------------------------
class SimValidator:
    """One validator: its home (the store survives a restart) and, while up, its node."""

    def __init__(self, sim: ReplicaSimulation, idx: int, home: Path, genesis: dict[str, Any]) -> None:
        self.sim, self.idx, self.home = sim, idx, home
        self.key = _key(f"validator-{idx}")
        self.db = home / "ledger.db"
        home.mkdir(parents=True)
        Store.create(self.db, genesis).close()
        self.node: Node | None = None
        self.syncing = False
        self.height = 0  # stored height, as seen by the checks
        self.seen: set[str] = set()  # record ids stored

    @property
    def up(self) -> bool:
        return self.node is not None

    async def boot(self) -> None:
        cfg = NodeConfig(home=self.home, node_name=f"node-{self.idx}", verify_workers=0)
        node = Node(cfg, key=self.key, store=Store(self.db))
        sim = self.sim
        node.chain.block_time = sim.block_time
        node.replica = node.make_replica(transport=SimTransport(sim, self.idx), clock=VirtualClock(sim),
                                         inbox=SimInbox(sim), syncer=SimSync(sim, self.idx))
        node.sink.on_stored(lambda h: sim.stored(self, h))
        self.node = node
        await node.start()

    async def crash(self) -> None:
        """The process ends: the mempool is lost, the store stays (closed cleanly here)."""
        node, self.node = self.node, None
        self.syncing = False
        if node is not None:
            await node.stop()


class SimTransport:
    """``node.replica.Transport`` over the simulated network."""

    def __init__(self, sim: ReplicaSimulation, src: int) -> None:
        self.sim, self.src = sim, src

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> list[dict[str, Any]]:
        return []

    def broadcast(self, message: Any) -> None:
        self.sim.send_all(self.src, "message", orjson.dumps(message.to_dict()))

    def gossip(self, messages: list[Any]) -> int:
        for m in messages:
            self.broadcast(m)
        return self.sim.n - 1

    def forward_record(self, canonical: bytes) -> None:
        self.sim.send_all(self.src, "record", canonical)


class SimSync:
    """``node.replica.Syncer``: catch-up from the reachable peer with the most blocks."""

    def __init__(self, sim: ReplicaSimulation, idx: int) -> None:
        self.sim, self.idx = sim, idx

    def start(self, target: int) -> None:
        me = self.sim.validators[self.idx]
        if me.syncing or not me.up:
            return
        me.syncing = True
        self.sim.at(self.sim.now + self.sim.delay(), lambda: self.sim.sync(me, target))

    async def stop(self) -> None: ...


# --- the simulation ------------------------------------------------------------------------------
class ReplicaSimulation:
    def __init__(self, seed: int, scenario: str | None = None, *, n: int = 4) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        drawn = rng.choice(SCENARIOS)
        self.scenario = scenario or drawn
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {', '.join(SCENARIOS)}")
        self.n = n
        self.now = 0.0
        self.queue: list[tuple[float, int, Callback]] = []
        self.seq = 0
        self.events = 0
        self.min_delay, self.max_delay = 0.001, rng.choice((0.005, 0.02, 0.05))
        self.drop = self.dup = 0.0
        self.blocked: set[tuple[int, int]] = set()
        self.heal_at = 0.0
        self.dropped = self.refused = self.caught_up = self.restarts = 0
        self.decided: dict[int, str] = {}
        self.committed_ids: set[str] = set()
        self.submitted: dict[str, dict[str, Any]] = {}  # record id -> envelope, as the client sent them
        self.waves_left = 0
        self.log: list[str] = []
        self.verbose = False
        self.errors: list[str] = []  # ERROR lines the node logged
        self.failures: list[SimViolation] = []
        self.doc = genesis_doc(n)
        self.chain_id = parse_genesis(self.doc).chain_id
        self.validator_keys = [v["key"] for v in self.doc["validators"]]
        self.validators: list[SimValidator] = []

    # -- the queue ------------------------------------------------------------------------
    def at(self, t: float, fn: Callback) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, fn))

    def note(self, text: str) -> None:
        if self.verbose:
            self.log.append(f"{self.now * 1000:10.1f} ms  {text}")

    def delay(self) -> float:
        return self.rng.uniform(self.min_delay, self.max_delay)

    def block_time(self) -> str:
        return (EPOCH + timedelta(seconds=int(self.now))).strftime("%Y-%m-%dT%H:%M:%SZ")

    def violation(self, kind: str, detail: str) -> SimViolation:
        e = SimViolation(kind, self.seed, self.scenario, detail)
        n = f" --n {self.n}" if self.n != 4 else ""
        e.args = (str(e).replace("python -m node.sim ", "python -m node.sim_replica ").replace(" -v", f"{n} -v"),)
        return e

    # -- the network -----------------------------------------------------------------------
    def send_all(self, src: int, kind: str, body: bytes) -> None:
        for dst in range(self.n):
            if dst != src:
                self.send(src, dst, kind, body)

    def send(self, src: int, dst: int, kind: str, body: bytes) -> None:
        if (src, dst) in self.blocked or (self.drop and self.rng.random() < self.drop):
            self.dropped += 1
            return
        for _ in range(2 if self.dup and self.rng.random() < self.dup else 1):
            self.at(self.now + self.delay(), lambda: self.deliver(dst, kind, body))

    async def deliver(self, dst: int, kind: str, body: bytes) -> None:
        node = self.validators[dst].node
        if node is None:
            return
        if kind == "message":
            assert node.replica is not None
            try:
                node.replica.accept(orjson.loads(body))
            except LedgerError:
                self.refused += 1
        else:  # a forwarded record: POST /v1/peer/records
            await node.admission.submit_batch([orjson.loads(body)], forward=False)

    def reachable(self, a: int, b: int) -> bool:
        return (a, b) not in self.blocked and (b, a) not in self.blocked

    # -- catch-up ----------------------------------------------------------------------------
    async def sync(self, me: SimValidator, target: int) -> None:
        """Blocks up to ``target`` from the reachable peer with the most, each stored through
        the node's one path for final blocks (which checks it as catch-up over HTTP does)."""
        try:
            peers = [v for v in self.validators if v is not me and v.up and self.reachable(v.idx, me.idx)]
            if me.node is None or not peers:
                return
            peer = max(peers, key=lambda v: (v.height, -v.idx))
            while me.node is not None and peer.node is not None and me.height < min(target, peer.height):
                h = me.height + 1
                row = peer.node.store.block(h)
                assert row is not None
                wire = {"header": row.header.to_dict(), "records": peer.node.store.block_records(h)}
                try:
                    await me.node.apply_final(wire, row.certificate.to_dict(), how="caught up")
                except LedgerError as e:
                    self.note(f"node {me.idx}: catch-up of {h} from {peer.idx} refused: {e.code}")
                    return
                self.caught_up += 1
        finally:
            me.syncing = False

    # -- the checks -----------------------------------------------------------------------------
    def stored(self, v: SimValidator, height: int) -> None:
        """A block was stored on ``v`` (``BlockSink`` listener): checks 1-4. A breach is
        raised by the event loop, after the event (not into the node's code)."""
        try:
            self._check_stored(v, height)
        except SimViolation as e:
            self.failures.append(e)

    def _check_stored(self, v: SimValidator, height: int) -> None:
        assert v.node is not None
        store = v.node.store
        if height != v.height + 1:
            raise self.violation("durability", f"node {v.idx} stored height {height} with {v.height} blocks")
        row = store.block(height)
        if row is None:
            raise self.violation("durability", f"node {v.idx} reported block {height} it does not hold")
        first = self.decided.setdefault(height, row.hash)
        if first != row.hash:
            raise self.violation("agreement", f"height {height}: node {v.idx} stored {row.hash[:12]}, another "
                                              f"validator {first[:12]}")
        try:
            verify_certificate(row.certificate, chain=self.chain_id, height=height, block_hash=row.hash,
                               validators=self.validator_keys)
        except LedgerError as e:
            raise self.violation("certificate", f"node {v.idx} height {height}: {e}") from e
        ids = [r[0] for r in store.reader.execute("SELECT id FROM records WHERE height = ? ORDER BY idx", (height,))]
        for rid in ids:
            if rid not in self.submitted:
                raise self.violation("validity", f"node {v.idx} height {height} holds {rid[:12]}, which no client "
                                                 "submitted")
            if rid in v.seen:
                raise self.violation("validity", f"node {v.idx} height {height} holds {rid[:12]} a second time")
        v.seen.update(ids)
        v.height = height
        self.note(f"node {v.idx} stores {height} {row.hash[:8]} ({len(ids)} records)")

    def _log_errors(self) -> logging.Handler:
        sim = self

        class Errors(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                sim.errors.append(f"{record.name}: {record.getMessage()}")

        h = Errors(logging.ERROR)
        return h

    # -- the scenario --------------------------------------------------------------------------------
    def _setup(self) -> None:
        s, rng, n = self.scenario, self.rng, self.n
        t0 = rng.uniform(0.2, 1.0)  # when the trouble starts
        t1 = t0 + rng.uniform(1.0, 4.0)  # when it ends
        heal = 0.0
        if s in ("lossy", "mixed"):
            self.drop = rng.uniform(0.05, 0.3)
            self.dup = rng.choice((0.0, 0.1, 0.3))
            self.at(t1, lambda: self._set_drop(0.0))
            heal = t1
        if s in ("partition", "mixed"):
            side = set(rng.sample(range(n), n // 2))
            links = {(a, b) for a in range(n) for b in range(n) if (a in side) != (b in side)}
            self.at(t0, lambda: self._block(links))
            self.at(t1, lambda: self._block(set()))
            heal = t1
        if s == "isolated":
            x = rng.randrange(n)
            self.at(t0, lambda: self._block({(a, b) for a in range(n) for b in range(n) if a != b and x in (a, b)}))
            self.at(t1, lambda: self._block(set()))
            heal = t1
        if s in ("restart", "mixed"):
            i = rng.randrange(n)
            down = rng.uniform(t0, t1)
            up = rng.uniform(down + 0.2, t1 + 1.0)
            self.at(down, lambda: self._crash(i))
            self.at(up, lambda: self._restart(i))
            heal = max(heal, up)
        self.heal_at = heal
        # The client: waves of records to random validators, until after the trouble.
        count = 0
        self.waves_left = rng.randint(4, 8)
        for wave in range(self.waves_left):
            t = rng.uniform(0.0, max(heal, 1.0) + 1.0)
            envs = []
            for _ in range(rng.randint(1, 6)):
                envs.append(self._record(count))
                count += 1
            self.at(t, functools.partial(self._wave, envs, f"wave {wave}"))
        self.at(RESUBMIT_S, self._resubmit)

    def _record(self, i: int) -> dict[str, Any]:
        body = {"dataset": f"sim-{i}", "version": "1", "content_hash": hashlib.sha256(b"%d" % i).hexdigest(),
                "size_bytes": 1, "items": 1, "license": "MIT", "modality": "text", "derived_from": [],
                "privacy_budget": None}
        env = make_record(_key("alice"), self.chain_id, "dataset.contribute", body, nonce=f"n{i}",
                          ts="2026-01-01T00:00:00Z")
        return env

    async def _wave(self, envs: list[dict[str, Any]], what: str) -> None:
        self.waves_left -= 1
        for env in envs:
            self.submitted[parse_record(env).id] = env
        await self._submit(envs, what)

    async def _submit(self, envs: list[dict[str, Any]], what: str) -> None:
        up = [v for v in self.validators if v.up]
        if not up:
            return
        v = self.rng.choice(up)
        assert v.node is not None
        results = await v.node.admission.submit_batch(envs)
        self.note(f"client: {what}, {len(envs)} records to node {v.idx}: "
                  f"{[r.get('status') or r.get('code') for r in results]}")

    async def _resubmit(self) -> None:
        """Records not committed everywhere yet go again (the mempool is not durable)."""
        self.at(self.now + RESUBMIT_S, self._resubmit)
        lowest = min(self.validators, key=lambda v: v.height)
        if lowest.node is None:
            return
        missing = [e for rid, e in self.submitted.items() if lowest.node.store.record_index(rid) is None]
        if missing:
            await self._submit(missing, "resubmission")

    def _set_drop(self, p: float) -> None:
        self.drop = p
        self.note(f"drop rate {p:.2f}")

    def _block(self, links: set[tuple[int, int]]) -> None:
        self.blocked = links
        self.note(f"links blocked: {sorted(links)}")

    async def _crash(self, i: int) -> None:
        v = self.validators[i]
        self.note(f"node {i} stops at height {v.height}")
        await v.crash()

    async def _restart(self, i: int) -> None:
        v = self.validators[i]
        if v.up:
            return
        self.restarts += 1
        await v.boot()
        assert v.node is not None
        if v.node.store.height() != v.height:
            raise self.violation("durability", f"node {i} restarted at height {v.node.store.height()}, "
                                               f"it had stored {v.height}")
        self.note(f"node {i} restarts at height {v.height}")
        # As node.api_sync's follow() does at start-up: catch up with the others.
        assert v.node.replica is not None and v.node.replica.syncer is not None
        v.node.replica.syncer.start(max(x.height for x in self.validators))

    def _done(self) -> bool:
        want = len(self.submitted)
        return self.now >= self.heal_at and not self.waves_left and all(
            v.node is not None and v.node.store.log_size() == want and v.height == self.validators[0].height
            for v in self.validators)

    # -- the run ---------------------------------------------------------------------------------------
    async def run(self) -> ReplicaResult:
        t_real = time.perf_counter()
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # memory-backed stores when there is one
        loggers = [logging.getLogger(name) for name in _LOGGERS]
        levels = [lg.level for lg in loggers]
        handler = self._log_errors()
        for lg in loggers:
            lg.setLevel(logging.ERROR if not self.verbose else logging.INFO)
            lg.addHandler(handler)
        try:
            with tempfile.TemporaryDirectory(prefix="provledger-sim-", dir=base) as tmp:
                self.validators = [SimValidator(self, i, Path(tmp) / f"node-{i}", self.doc) for i in range(self.n)]
                try:
                    self._setup()
                    for v in self.validators:
                        await v.boot()
                    await self._loop()
                finally:
                    for v in self.validators:
                        await v.crash()
                self._audit()
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
                lg.removeHandler(handler)
        return ReplicaResult(self.seed, self.scenario, self.n, min(v.height for v in self.validators),
                             len(self.submitted), self.now, self.events, self.dropped, self.refused,
                             self.caught_up, self.restarts, time.perf_counter() - t_real)

    def _audit(self) -> None:
        """Every validator's database passes the offline audit (``provledger audit``)."""
        for v in self.validators:
            source = DbSource(v.db)
            try:
                report = audit(source)
            finally:
                source.conn.close()
            if not report.ok or report.records != len(self.submitted):
                first = report.findings[0].to_dict() if report.findings else f"{report.records} records"
                raise self.violation("validity", f"node {v.idx}: the audit of its database fails: {first}")

    async def _loop(self) -> None:
        deadline = self.heal_at + STALL_S
        next_check = 0.0
        while self.queue:
            t, _, fn = heapq.heappop(self.queue)
            self.now = t
            self.events += 1
            if self.events > MAX_EVENTS:
                raise self.violation("liveness", f"more than {MAX_EVENTS} events")
            out = fn()
            if out is not None:
                await out
            if self.failures:
                raise self.failures[0]
            if self.errors:
                raise self.violation("error", "; ".join(self.errors[:3]))
            if t >= next_check:
                next_check = t + CHECK_S
                if self._done():
                    return
                if t > deadline:
                    heights = {v.idx: (v.height, v.node.store.log_size() if v.node else None) for v in self.validators}
                    raise self.violation("liveness", f"{len(self.submitted)} records not all committed within "
                                                     f"{STALL_S:g} s after the faults: (height, log size) {heights}")


def run(seed: int, scenario: str | None = None, *, n: int = 4, verbose: bool = False) -> ReplicaResult:
    """Run one seed; raises SimViolation if a check fails."""
    sim = ReplicaSimulation(seed, scenario, n=n)
    sim.verbose = verbose
    try:
        return asyncio.run(sim.run())
    finally:
        if verbose:
            print("\n".join(sim.log))


def run_seed(seed: int, scenario: str | None = None, n: int = 4) -> ReplicaResult:
    """Run one seed, reporting a violation (or a crash) in the result instead of raising."""
    sim = ReplicaSimulation(seed, scenario, n=n)
    t0 = time.perf_counter()
    try:
        return asyncio.run(sim.run())
    except SimViolation as e:
        violation, kind = str(e), e.kind
    except Exception as e:
        import traceback

        violation, kind = f"error, seed={seed} scenario={sim.scenario}: " + "".join(
            traceback.format_exception(e)[-4:]), "error"
    return ReplicaResult(seed, sim.scenario, sim.n, -1, len(sim.submitted), sim.now, sim.events, sim.dropped,
                         sim.refused, sim.caught_up, sim.restarts, time.perf_counter() - t0, violation, kind)


def _campaign(start: int, count: int, jobs: int, n: int) -> int:
    import multiprocessing as mp

    t0 = time.perf_counter()
    bad: list[ReplicaResult] = []
    by_scenario: dict[str, int] = {}
    events = 0
    ctx = mp.get_context("fork") if sys.platform != "win32" else mp.get_context()
    with ctx.Pool(jobs) as pool:
        for r in pool.imap_unordered(functools.partial(run_seed, scenario=None, n=n), range(start, start + count)):
            by_scenario[r.scenario] = by_scenario.get(r.scenario, 0) + 1
            events += r.events
            if r.violation:
                bad.append(r)
                print(r.violation, file=sys.stderr, flush=True)
    dt = time.perf_counter() - t0
    print(f"seeds run: {count} (from {start}, n={n}) in {dt:.1f}s, {count / dt:.1f} seeds/s, {events} events, "
          f"jobs={jobs}")
    print("scenarios: " + ", ".join(f"{k}={v}" for k, v in sorted(by_scenario.items())))
    print(f"violations: {len(bad)}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m node.sim_replica", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="run (replay) one seed and tell what happened")
    ap.add_argument("--scenario", choices=SCENARIOS, help="force a scenario (with --seed)")
    ap.add_argument("--seeds", type=int, help="run a campaign of this many seeds")
    ap.add_argument("--start", type=int, default=0, help="first seed of the campaign")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    ap.add_argument("--n", type=int, default=4, help="validators (default 4)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the run's event log")
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n: at least 2 validators (one validator runs no consensus)")
    if args.seeds is not None:
        return _campaign(args.start, args.seeds, args.jobs or os.cpu_count() or 1, args.n)
    if args.seed is None:
        ap.error("give --seed S (replay one) or --seeds N (campaign)")
    try:
        r = run(args.seed, args.scenario, n=args.n, verbose=args.verbose)
    except SimViolation as e:
        print(e, file=sys.stderr)
        return 1
    print(f"seed {r.seed} scenario {r.scenario} n={r.n}: ok, height {r.height}, {r.records} records, "
          f"{r.events} events, {r.virtual_s:.1f} virtual s, dropped {r.dropped}, refused {r.refused}, "
          f"caught up {r.caught_up} blocks, restarts {r.restarts}, {r.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
