"""The node: one validator's parts, put together, and their lifecycle.

``Node`` opens the store and the ``Ledger`` (committed state), checks that the file gives
its certified head (``node.startup``), and assembles the parts, each a module of its own:

  ``node.mempool.Mempool``          verified records waiting for a block, the pending state
  ``node.signatures.SignatureChecker``  signature checks, inline or in verifier processes
  ``node.admission.Admission``      records into the mempool (form, known?, signature, rules)
  ``node.sink.BlockSink``           final blocks into the store and their follow-up;
                                    ``Waiters`` (``?wait=true``), ``StorageHealth`` (faults)
  ``node.blockloop.BlockLoop``      this key the whole validator set: the block loop
  ``node.replica.Replica``          any other set: the consensus driver, whose view of
                                    the node is ``NodeChain`` here
  ``node.metrics.NodeMetrics``      the Prometheus metrics

Everything except the block commit runs on the event loop; the commit runs on the sink's
one-thread executor so the loop keeps serving while SQLite writes and fsyncs. ``start``
runs the block loop or the replica; ``stop`` finishes the block in flight, commits what is
still waiting (one validator), answers the waiters and closes the store.

Which of the two runs is chosen by the validator set certifying the next height
(PROTOCOL.md 9.1), at start and again when the block loop stores a block that makes that
set larger: then the loop ends and the driver takes over from the next height. Under
consensus records accepted here are forwarded to the other validators' mempools, and
every final block of another proposer (decided by consensus, or fetched by catch-up) is
stored through ``BlockSink.apply_final``.

The process entry point (granian on the node's port) is ``node.serve``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from ledger.blocks import Certificate
from ledger.chain import Block, Ledger
from ledger.errors import InputError, LedgerError
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.records import Record
from ledger.state import Validator
from ledger.store import Store

from .admission import Admission
from .blockloop import BlockLoop
from .catchup import CHECKS_AHEAD, BackgroundSync, CatchUp, Syncing
from .config import NodeConfig
from .consensus import Consensus, Timeouts
from .mempool import Mempool
from .metrics import NodeMetrics
from .peers import Peers
from .replica import Clock, Inbox, Replica, Syncer, Transport
from .signatures import SignatureChecker
from .sink import BlockSink, Committed, StorageHealth, Waiters
from .startup import check_store

__all__ = ["Node", "NodeChain"]

log = logging.getLogger("provledger.node")


class NodeChain:
    """The node's chain as the consensus driver sees it (``node.replica.Chain``): the
    stored height (kept by the sink), the mempool, block building, block checks and the
    final-block path.
    ``block_time`` gives the ``time`` of built blocks (default: now, UTC)."""

    def __init__(self, store: Store, ledger: Ledger, key: SigningKey, mempool: Mempool, sink: BlockSink,
                 max_block: int, block_time: Callable[[], str] | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.key = key
        self.mempool = mempool
        self.sink = sink
        self.max_block = max_block
        self.block_time = block_time

    def height(self) -> int:
        return self.sink.height  # in memory: the app callbacks read no SQLite for it

    def has_work(self) -> bool:
        return len(self.mempool) > 0

    def build_block(self) -> tuple[Block, int]:
        when = self.block_time() if self.block_time is not None else None
        block, rejected = self.ledger.build_block(self.mempool.take(self.max_block), proposer=self.key.public,
                                                  time=when)
        if rejected:
            self.sink.stale_pending = True  # the pending state holds records the rules refuse now
        return block, len(rejected)

    def check_block_sync(self, wire: Any) -> Block:
        return self.sink.check_block_sync(wire)

    async def check_block(self, wire: Any) -> Block:
        return await self.sink.check_block(wire)

    async def apply_final(self, block: Block | dict[str, Any], certificate: Certificate | dict[str, Any], *,
                          on_loop: bool = False) -> Block | None:
        return await self.sink.apply_final(block, certificate, on_loop=on_loop)


class Node:
    """One running validator node. ``key`` and ``store`` may be given instead of being
    opened from the config's files (the simulator, ``node.sim_replica``, does so)."""

    def __init__(self, config: NodeConfig, *, key: SigningKey | None = None, store: Store | None = None) -> None:
        self.config = config
        self.key = key if key is not None else SigningKey.load(config.key_path)
        self.store = store if store is not None else Store(config.db_path)
        try:
            genesis = self.store.genesis
            if config.genesis_path.exists():
                try:
                    on_disk = parse_genesis(orjson.loads(config.genesis_path.read_bytes()))
                except orjson.JSONDecodeError as e:
                    raise InputError(f"{config.genesis_path} is not JSON: {e}", code="bad_genesis") from e
                if on_disk.chain_id != genesis.chain_id:
                    raise InputError(
                        f"{config.genesis_path} is for chain {on_disk.chain_id[:16]}…, the database for {genesis.chain_id[:16]}…",
                        code="genesis_mismatch",
                    )
            self.genesis = genesis
            self.chain_id = genesis.chain_id
            check_store(self.store)  # node.startup: the file must give its certified head
            self.ledger = Ledger(self.store)
            if self.key.public not in self.ledger.state.validator_keys():
                # Removed, not yet voted in, or never a validator: a full node that follows
                # the chain, stores its certified blocks and signs nothing (PROTOCOL.md 9.1).
                log.info("%s is not in the validator set of height %d: following the chain as a full node",
                         config.key_path, self.store.height() + 1)
        except BaseException:
            self.store.close()
            raise
        self.metrics = NodeMetrics()
        self.metrics.height.set(self.store.height())
        self.metrics.log_size.set(self.store.log_size())
        self.mempool = Mempool(self.ledger.state, limit=config.max_mempool)
        self.signatures = SignatureChecker(config.verify_workers)
        self.health = StorageHealth(self.metrics)
        self.waiters = Waiters()
        self.sink = BlockSink(self.store, self.ledger, self.mempool, self.signatures, self.metrics, self.health,
                              self.waiters)
        self.admission = Admission(self.store, self.ledger, self.mempool, self.signatures, self.metrics, self.health)
        self.chain = NodeChain(self.store, self.ledger, self.key, self.mempool, self.sink, config.max_block_records)
        self.warm_verifier = False  # start the verifier processes with the node (set by ``node.serve``)
        self.catchup: Syncing | None = None  # set by node.api_sync while the app runs (make_catchup)
        # The set certifying the next height decides (PROTOCOL.md 9.1), not the genesis:
        # this key alone, the block loop; anything else, consensus between the set
        # (node.replica), made here so that a bad setting stops the node early. A block
        # loop whose set grows hands over to consensus (``_outgrown``); a driver whose set
        # shrinks to this key alone goes on with n = 1 (docs/consensus.md).
        self.block_loop: BlockLoop | None = None
        self.replica: Replica | None = None
        self.peers: Peers | None = None  # the HTTP transport make_replica made, kept to the set
        self._peer_set: list[Validator] = []
        self._handover: asyncio.Task[None] | None = None
        self.sink.on_stored(self._stored)
        if self.multi:
            self._use(self.make_replica())
        else:
            self.block_loop = BlockLoop(self.ledger, self.key, self.mempool, self.sink, self.health,
                                        interval=config.block_interval_ms / 1000, max_block=config.max_block_records,
                                        on_outgrown=self._outgrown)
            self.admission.on_arrival(self.block_loop.arrived)

    @property
    def multi(self) -> bool:
        """Consensus runs, not the block loop: the set certifying the next height is not
        this key alone (more validators, or another key: a full node), or consensus has
        signed at that height already (a driver stopped mid-height resumes from its signing
        state; the block loop would sign another block there)."""
        if self.ledger.state.validator_keys() != [self.key.public]:
            return True
        signed = self.store.last_signed()
        return signed is not None and signed[0] > self.store.height()

    @classmethod
    def open(cls, home: str | Path, **overrides: Any) -> Node:
        cfg = NodeConfig.load(home)
        cfg.override(**{k: v for k, v in overrides.items() if v is not None})
        return cls(cfg)

    def make_replica(self, *, transport: Transport | None = None, clock: Clock | None = None,
                     inbox: Inbox | None = None, syncer: Syncer | None = None,
                     core_class: type[Consensus] = Consensus) -> Replica:
        """A consensus driver for this node, with the set of each height from the committed
        state. Defaults: HTTP to the other validators of the current set (``node.peers``,
        kept to the set as blocks are stored), the event loop's clock, an asyncio queue, and catch-up through
        ``self.catchup`` in the background. Assign it to ``replica`` to use it."""
        g = self.genesis
        if transport is None:
            self._peer_set = list(self.ledger.state.validators)
            urls, names = self._peer_urls()
            self.peers = transport = Peers(urls, names=names)
        state_of = self.ledger  # its committed state moves with every stored block

        def validator_sets(height: int) -> list[str]:
            # PROTOCOL.md 9.1: the set certifying ``height``, kept by the state per height.
            return [v.key for v in state_of.state.validators_at(height)]

        return Replica(
            chain_id=self.chain_id, validators=list(g.validators), key=self.key, chain=self.chain, store=self.store,
            transport=transport, timeouts=Timeouts(**self.config.timeouts()), gossip_s=self.config.gossip_ms / 1000,
            clock=clock, inbox=inbox,
            syncer=syncer if syncer is not None else BackgroundSync(lambda: self.catchup),
            core_class=core_class, validator_sets=validator_sets)

    def _use(self, replica: Replica) -> None:
        """Run consensus through ``replica``: records admitted here go to the other
        validators and wake the driver; stored blocks move it (``_stored``)."""
        self.replica = replica
        self.admission.forward = self._forward
        self.admission.on_arrival(self._work_arrived)

    def _outgrown(self) -> None:
        """The block loop stored the block after which the next height's set is no longer
        this key alone, and ended (``BlockLoop.on_outgrown``): consensus from that height,
        with the records still waiting in the mempool."""
        self.block_loop = None
        self._follow_set()  # catch-up asks the new validators too
        replica = self.make_replica()
        self._use(replica)
        log.info("consensus from height %d between %d validators", self.store.height() + 1,
                 len(self.ledger.state.validators))

        async def start() -> None:
            try:
                await replica.start()
            except Exception:
                log.exception("consensus did not start after the block loop ended")

        self._handover = asyncio.create_task(start(), name="hand-over")

    def _peer_urls(self) -> tuple[dict[str, str], dict[str, str]]:
        """The other validators of the current set (the set certifying the next height):
        their urls and names."""
        others = [v for v in self._peer_set if v.key != self.key.public]
        return {v.key: v.url for v in others}, {v.key: v.name for v in others}

    def _follow_set(self) -> None:
        """After a stored block: if the validator set changed, send to the new set and let
        catch-up ask its new members too."""
        current = self.ledger.state.validators
        if current == self._peer_set:
            return
        self._peer_set = list(current)
        if self.peers is not None:
            urls, names = self._peer_urls()
            self.peers.update(urls, names=names)
        if self.catchup is not None and isinstance(self.catchup, CatchUp):
            own = self.config.url.rstrip("/")
            self.catchup.add_peers(v.url for v in current if v.key != self.key.public and v.url.rstrip("/") != own)

    def make_catchup(self, peers: Sequence[str] | None = None, **kw: Any) -> CatchUp:
        """A catch-up (``node.catchup``) for this node: its ledger, its signature checks (the
        verifier processes), its one path for final blocks (``BlockSink``). Peers: the URLs
        of the other genesis validators, of the current set and ``"peers"`` of config.json
        (the current set's newcomers are added as blocks are stored), unless ``peers``
        is given."""
        if peers is None:
            urls = [u for k, u in self.genesis.validator_urls.items() if k != self.key.public]
            urls += [v.url for v in self.ledger.state.validators if v.key != self.key.public]
            urls += self.config.peers
            own = self.config.url.rstrip("/")
            peers = [u for u in urls if u.rstrip("/") != own]
        sink = self.sink

        async def run_check(fn: Callable[[], Block]) -> Block:
            # On the commit thread: it reads the store the commits write.
            return await sink.in_commit_thread(fn)

        async def commit(block: Block, cert: Certificate) -> None:
            # The node's one path for final blocks, shared with consensus: certificate
            # checked again, block stored, mempool, waiters, metrics, consensus told.
            await sink.apply_final(block, cert, how="caught up")

        kw.setdefault("checks_ahead", CHECKS_AHEAD * max(1, self.signatures.workers))
        return CatchUp(self.ledger, commit, peers, verify=self.signatures.verify_many, run_check=run_check, **kw)

    def _forward(self, rec: Record) -> None:
        if self.replica is not None:
            self.replica.forward(rec.canonical)

    def _work_arrived(self, _waiting: int) -> None:
        if self.replica is not None:
            self.replica.work_arrived()

    def _stored(self, height: int) -> None:
        self._follow_set()
        if self.replica is not None:
            self.replica.stored(height)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self.replica is not None:
            await self.replica.start()
        elif self.block_loop is not None:
            if self.warm_verifier:
                self.signatures.warm()
            self.block_loop.start()

    async def stop(self) -> None:
        """Finish the block in flight, commit what is waiting, close the store."""
        if self.block_loop is not None:
            await self.block_loop.stop()
        if self._handover is not None:
            await self._handover  # the driver's start, before its stop
        if self.replica is not None:
            await self.replica.stop()
        self.waiters.close()
        height, size = self.store.height(), self.store.log_size()
        await self.sink.close()
        await self.signatures.close()
        self.store.close()
        log.info("stopped at height %d, log size %d", height, size)

    # -- what the API calls -----------------------------------------------------------------
    @property
    def fault(self) -> LedgerError | None:
        """Why blocks cannot be stored right now (None: they can); ``StorageHealth``."""
        return self.health.fault

    @property
    def interval(self) -> float:
        """Seconds between the starts of two blocks (one validator)."""
        return self.block_loop.interval if self.block_loop is not None else self.config.block_interval_ms / 1000

    @interval.setter
    def interval(self, seconds: float) -> None:
        if self.block_loop is not None:
            self.block_loop.interval = seconds

    def status(self, record_id: str) -> str | None:
        return self.admission.status(record_id)

    def admit(self, rec: Record, *, verified: bool = False, forward: bool = True, uncommitted: bool = False) -> str:
        return self.admission.admit(rec, verified=verified, forward=forward, uncommitted=uncommitted)

    def submit(self, obj: Any) -> tuple[str, str]:
        return self.admission.submit(obj)

    async def submit_one(self, obj: Any) -> tuple[str, str]:
        return await self.admission.submit_one(obj)

    async def submit_batch(self, items: list[Any], *, forward: bool = True) -> list[dict[str, Any]]:
        return await self.admission.submit_batch(items, forward=forward)

    async def wait_committed(self, ids: Iterable[str], timeout: float) -> dict[str, Committed | LedgerError]:
        return await self.waiters.wait(ids, timeout)

    def rejected(self, code: str, message: str) -> None:
        self.admission.rejected(code, message)

    def check_writable(self) -> None:
        self.health.check_writable()

    async def apply_final(self, block: Block | dict[str, Any], certificate: Certificate | dict[str, Any], *,
                          how: str = "finalized", on_loop: bool = False) -> Block | None:
        """``BlockSink.apply_final``: the one path for final blocks of other proposers."""
        return await self.sink.apply_final(block, certificate, how=how, on_loop=on_loop)
