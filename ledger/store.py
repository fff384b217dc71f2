"""The SQLite store: one file per node (DESIGN.md, Storage).

Ledger tables (append-only, enforced by triggers that refuse UPDATE and DELETE):
  ``meta``     genesis document and chain id
  ``blocks``   height, hash, header JSON, certificate JSON, first log index
  ``records``  log index, id, height, canonical envelope, and columns indexed by
               type, signer (+ nonce, unique), dataset and model
  ``merkle``   RFC 9162 perfect-subtree hashes, key ``level << 40 | index`` (level 0 = ids)
Derived tables (rewritten as blocks commit, rebuildable by replaying the log):
  ``identities``, ``datasets``, ``budgets``, ``policies`` (with the adopted proposal of each
  change), ``organisations`` (every one ever in force), ``proposals`` (every
  ``network.propose`` and its approvals) and ``validators`` (each validator set, by the
  first height it certifies: PROTOCOL.md 9.1)
Node tables: ``evidence`` (equivocation), ``signed`` (the consensus guard: what this
validator last signed), ``signed_state`` (one row: the consensus core's recovery document,
overwritten before every signature is sent) and ``signed_blocks`` (the blocks that document
refers to, by hash, so a block is written once per height rather than with every vote).

A block, its records, its Merkle nodes and the derived state commit in one transaction
with ``synchronous=FULL``: after a crash either the whole block is there or none of it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils

from . import merkle
from .blocks import Certificate, Header
from .canonical import jcs
from .errors import StorageError
from .genesis import Genesis, parse_genesis
from .records import Record
from .state import ChainState, DatasetState, Identity, Organisation, Proposal, Validator
from .values import decimal_str, parse_decimal

__all__ = ["DERIVED_TABLES", "BlockRow", "DerivedRows", "Store", "compare_derived", "derived_rows", "node_key", "read_derived"]

EVIDENCE_LIMIT = 1000  # rows of the evidence table; the oldest are dropped beyond it

SCHEMA_VERSION = "2"  # protocol version 2: governance tables
LEDGER_TABLES = ("meta", "blocks", "records", "merkle")


def node_key(level: int, index: int) -> int:
    """The ``merkle`` table key of perfect subtree (level, index)."""
    return (level << 40) | index


@dataclass(frozen=True)
class BlockRow:
    header: Header
    hash: str
    certificate: Certificate
    first: int  # log index of the block's first record


class Store:
    """A provledger SQLite database. Writes go through one connection (under a lock);
    each reading thread gets its own connection (WAL lets reads run beside the writer)."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StorageError(f"no provledger database at {self.path}", code="no_database")
        self._lock = threading.RLock()
        self._local = threading.local()
        try:
            self.conn = self._connect()
            if create:
                self._create_schema()
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{self.path} is not a usable provledger database: {e}", code="bad_database") from e
        self._genesis: Genesis | None = parse_genesis(orjson.loads(row[0])) if row else None
        self._head: BlockRow | None = None
        self._inputs_lock = threading.Lock()
        self._inputs: tuple[dict[str, list[int]], int] = ({}, 0)  # inputs_index and the size it covers

    # -- connections ------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed block survives power loss
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
        return conn

    def close(self) -> None:
        self.conn.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -----------------------------------------------------------------------
    def _create_schema(self) -> None:
        db = sqlite_utils.Database(self.conn)
        if "meta" in db.table_names():
            return
        with self._lock:
            self.conn.execute("BEGIN")
            db.table("meta").create({"key": str, "value": str}, pk="key")
            db.table("blocks").create(
                {"height": int, "hash": str, "header": str, "certificate": str, "first": int, "count": int},
                pk="height",
            )
            db.table("blocks").create_index(["hash"], unique=True)
            db.table("records").create(
                {"idx": int, "id": str, "height": int, "type": str, "signer": str, "nonce": str,
                 "dataset": str, "model": str, "envelope": str},
                pk="idx",
                not_null={"id", "height", "type", "signer", "nonce", "envelope"},
            )
            db.table("records").create_index(["id"], unique=True)
            db.table("records").create_index(["signer", "nonce"], unique=True)
            db.table("records").create_index(["height"])
            db.table("records").create_index(["type"])
            db.table("records").create_index(["dataset"])
            db.table("records").create_index(["model"])
            db.table("merkle").create({"k": int, "h": bytes}, pk="k")
            db.table("identities").create(
                {"key": str, "name": str, "org": str, "roles": str, "revoked": int, "registered_by": str}, pk="key"
            )
            db.table("datasets").create({"name": str, "version": str, "record": str}, pk=("name", "version"))
            db.table("budgets").create(
                {"dataset": str, "epsilon": str, "delta": str, "spent_epsilon": str, "spent_delta": str}, pk="dataset"
            )
            db.table("policies").create(
                {"idx": int, "data": str, "annotation": str, "training": str, "proposal": str}, pk="idx"
            )
            db.table("organisations").create(
                {"name": str, "added_by": str, "added_at": int, "removed_by": str, "removed_at": int}, pk="name"
            )
            db.table("proposals").create(
                {"id": str, "action": str, "proposer": str, "org": str, "height": int, "idx": int, "expires": int,
                 "reason": str, "approvals": str, "adopted_at": int, "adopted_by": str},
                pk="id",
            )
            db.table("validators").create(
                {"height": int, "position": int, "key": str, "name": str, "url": str}, pk=("height", "position")
            )
            db.table("evidence").create({"id": str, "height": int, "validator": str, "evidence": str}, pk="id")
            db.table("signed").create({"k": int, "height": int, "round": int, "step": str, "block": str}, pk="k")
            for table in LEDGER_TABLES:
                for op in ("UPDATE", "DELETE"):
                    self.conn.execute(
                        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                    )
            self.conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self.conn.execute("COMMIT")

    @classmethod
    def create(cls, path: str | Path, genesis_doc: dict[str, Any]) -> Store:
        """A new database for ``genesis_doc``; refuses to touch an existing file."""
        p = Path(path)
        if p.exists():
            raise StorageError(f"{p} already exists; refusing to overwrite a ledger", code="database_exists")
        genesis = parse_genesis(genesis_doc)
        p.parent.mkdir(parents=True, exist_ok=True)
        store = cls(p, create=True)
        with store._lock:
            store.conn.execute("BEGIN")
            store.conn.execute("INSERT INTO meta VALUES ('genesis', ?)", (jcs(genesis_doc).decode(),))
            store.conn.execute("INSERT INTO meta VALUES ('chain_id', ?)", (genesis.chain_id,))
            store._write_state(ChainState(genesis))
            store.conn.execute("COMMIT")
        store._genesis = genesis
        return store

    @property
    def genesis(self) -> Genesis:
        if self._genesis is None:
            raise StorageError(f"{self.path} has no genesis", code="no_genesis")
        return self._genesis

    # -- reads ------------------------------------------------------------------------
    def height(self) -> int:
        head = self.head()
        return head.header.height if head else 0

    def log_size(self) -> int:
        head = self.head()
        return head.header.log_size if head else 0

    def head(self) -> BlockRow | None:
        """The latest final block (cached; the writer updates it)."""
        if self._head is None:
            row = self.reader.execute(
                "SELECT header, hash, certificate, first FROM blocks ORDER BY height DESC LIMIT 1"
            ).fetchone()
            if row is not None:
                self._head = _block_row(row)
        return self._head

    def block(self, height: int) -> BlockRow | None:
        row = self.reader.execute(
            "SELECT header, hash, certificate, first FROM blocks WHERE height = ?", (height,)
        ).fetchone()
        return _block_row(row) if row else None

    def block_records(self, height: int) -> list[dict[str, Any]]:
        return [
            orjson.loads(r[0])
            for r in self.reader.execute("SELECT envelope FROM records WHERE height = ? ORDER BY idx", (height,))
        ]

    def record(self, record_id: str) -> tuple[dict[str, Any], int, int] | None:
        """(envelope, log index, height) of a committed record."""
        row = self.reader.execute("SELECT envelope, idx, height FROM records WHERE id = ?", (record_id,)).fetchone()
        return (orjson.loads(row[0]), row[1], row[2]) if row else None

    def record_index(self, record_id: str) -> int | None:
        row = self.reader.execute("SELECT idx FROM records WHERE id = ?", (record_id,)).fetchone()
        return row[0] if row else None

    def records(self, start: int = 0, end: int | None = None, batch: int = 5000) -> Iterator[tuple[int, int, str, str]]:
        """(log index, height, id, canonical envelope) in log order from ``start``."""
        conn = self.reader
        stop = end if end is not None else self.log_size()
        at = start
        while at < stop:
            rows = conn.execute(
                "SELECT idx, height, id, envelope FROM records WHERE idx >= ? AND idx < ? ORDER BY idx",
                (at, min(stop, at + batch)),
            ).fetchall()
            if not rows:
                return
            yield from rows
            at = rows[-1][0] + 1

    def blocks(self, start: int = 1) -> Iterator[BlockRow]:
        conn = self.reader
        for row in conn.execute(
            "SELECT header, hash, certificate, first FROM blocks WHERE height >= ? ORDER BY height", (start,)
        ):
            yield _block_row(row)

    def inputs_index(self, size: int) -> dict[str, list[int]]:
        """Dataset name -> the log indexes (ascending) of the ``model.update`` records below
        ``size`` that name it among their ``inputs`` (PROTOCOL.md 3.1), or more: callers cut
        at their own size. Built once with SQLite's JSON functions and extended as the log
        grows, which is safe because the records table is append-only (its triggers)."""
        with self._inputs_lock:
            index, done = self._inputs
            if size > done:
                rows = self.reader.execute(
                    "SELECT json_extract(j.value, '$.dataset'), r.idx FROM records AS r, "
                    "json_each(r.envelope, '$.body.inputs') AS j "
                    "WHERE r.type = 'model.update' AND r.idx >= ? AND r.idx < ? ORDER BY r.idx", (done, size)).fetchall()
                for ds, idx in rows:
                    seen = index.setdefault(ds, [])
                    if not seen or seen[-1] != idx:  # an update may name a dataset twice
                        seen.append(idx)
                self._inputs = (index, size)
            return index

    def records_where(self, column: str, value: str) -> list[tuple[int, str, dict[str, Any]]]:
        """(log index, id, envelope) of committed records by an indexed column."""
        if column not in ("type", "signer", "dataset", "model"):
            raise StorageError(f"no index on records.{column}")
        return [
            (r[0], r[1], orjson.loads(r[2]))
            for r in self.reader.execute(f"SELECT idx, id, envelope FROM records WHERE {column} = ? ORDER BY idx", (value,))
        ]

    # -- validator sets (PROTOCOL.md 9.1), from the derived table ------------------------
    def validator_sets(self) -> list[tuple[int, tuple[Validator, ...]]]:
        """(first height, set) of every validator set, by first height: the set certifies
        every height from its first to the next set's first height - 1."""
        by_height: dict[int, list[Validator]] = {}
        for height, _pos, key, name, url in self.reader.execute(
                "SELECT height, position, key, name, url FROM validators ORDER BY height, position"):
            by_height.setdefault(height, []).append(Validator(name, key, url))
        return [(h, tuple(vals)) for h, vals in by_height.items()]

    def validators_at(self, height: int) -> list[Validator]:
        """The set certifying ``height`` (PROTOCOL.md 9.1)."""
        row = self.reader.execute(
            "SELECT max(height) FROM validators WHERE height <= ?", (max(height, 1),)).fetchone()
        if row is None or row[0] is None:
            return [Validator(self.genesis.validator_names[k], k, self.genesis.validator_urls[k])
                    for k in self.genesis.validators]
        return [Validator(name, key, url) for key, name, url in self.reader.execute(
            "SELECT key, name, url FROM validators WHERE height = ? ORDER BY position", (row[0],))]

    # LogIndex (ledger.state): lookups for the state rules.
    def nonce_used(self, signer: str, nonce: str) -> bool:
        return self.reader.execute(
            "SELECT 1 FROM records WHERE signer = ? AND nonce = ?", (signer, nonce)
        ).fetchone() is not None

    def nonces_used(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """One query per signer (per 500 nonces): the (signer, nonce) index serves each."""
        by_signer: dict[str, list[str]] = {}
        for signer, nonce in pairs:
            by_signer.setdefault(signer, []).append(nonce)
        used: set[tuple[str, str]] = set()
        for signer, nonces in by_signer.items():
            for start in range(0, len(nonces), 500):
                part = nonces[start:start + 500]
                used.update(self.reader.execute(
                    f"SELECT signer, nonce FROM records WHERE signer = ? AND nonce IN ({','.join('?' * len(part))})",
                    (signer, *part)))
        return used

    def model_of(self, record_id: str) -> str | None:
        row = self.reader.execute(
            "SELECT model FROM records WHERE id = ? AND type = 'model.update'", (record_id,)
        ).fetchone()
        return row[0] if row else None

    # -- Merkle -----------------------------------------------------------------------
    def get_nodes(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """merkle.GetNodes over the ``merkle`` table: one query for the whole set."""
        if not keys:
            return {}
        wanted = {node_key(lv, i): (lv, i) for lv, i in keys}
        out: dict[tuple[int, int], bytes] = {}
        ks = list(wanted)
        for s in range(0, len(ks), 500):
            chunk = ks[s : s + 500]
            q = f"SELECT k, h FROM merkle WHERE k IN ({','.join('?' * len(chunk))})"
            for k, h in self.reader.execute(q, chunk):
                out[wanted[k]] = h
        return out

    def root_at(self, size: int) -> bytes:
        return merkle.root_at(size, self.get_nodes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self.get_nodes)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return merkle.consistency_proof(first, second, self.get_nodes)

    def prepare_log(self, size: int, leaves: Sequence[bytes]) -> tuple[list[tuple[int, int, bytes]], bytes]:
        """The Merkle nodes that appending ``leaves`` at ``size`` adds, and the new root."""
        added = [(0, size + i, leaf) for i, leaf in enumerate(leaves)]
        added += merkle.new_nodes(size, leaves, self.get_nodes)
        overlay = {(lv, i): h for lv, i, h in added}

        def get(keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            found = {k: overlay[k] for k in keys if k in overlay}
            found.update(self.get_nodes([k for k in keys if k not in overlay]))
            return found

        return added, merkle.root_at(size + len(leaves), get)

    # -- the one write path -------------------------------------------------------------
    def append_block(
        self,
        header: Header,
        certificate: Certificate,
        records: Sequence[Record],
        nodes: Sequence[tuple[int, int, bytes]],
        state: ChainState,
    ) -> None:
        """Commit a block, its certificate, records, Merkle nodes and the state after it —
        all in one transaction (DESIGN.md: a crash leaves the whole block or none of it)."""
        block_hash = header.hash
        first = header.log_size - header.count
        rows = []
        for i, rec in enumerate(records):
            body = rec.envelope["body"]
            rows.append(
                (first + i, rec.id, header.height, rec.type, rec.signer, rec.nonce,
                 body.get("dataset") if isinstance(body.get("dataset"), str) else None,
                 body.get("model") if rec.type == "model.update" else None,
                 rec.canonical.decode())
            )
        with self._lock:
            try:
                c = self.conn
                c.execute("BEGIN IMMEDIATE")
                c.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?)", rows)
                c.executemany("INSERT INTO merkle VALUES (?, ?)", [(node_key(lv, i), h) for lv, i, h in nodes])
                c.execute(
                    "INSERT INTO blocks VALUES (?,?,?,?,?,?)",
                    (header.height, block_hash, jcs(header.to_dict()).decode(),
                     jcs(certificate.to_dict()).decode(), first, header.count),
                )
                self._write_state(state, records)
                c.execute("COMMIT")
            except BaseException as e:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.DatabaseError):
                    raise StorageError(f"could not commit block {header.height}: {e}", code="commit_failed") from e
                raise
            self._head = BlockRow(header, block_hash, certificate, first)

    # -- derived state ----------------------------------------------------------------
    def _write_state(self, state: ChainState, records: Sequence[Record] | None = None) -> None:
        """Rewrite the derived tables. With ``records``, only what those records touched."""
        c = self.conn
        if records is None:
            for t, rows in derived_rows(state).items():
                c.execute(f"DELETE FROM {t}")
                if rows:
                    c.executemany(f"INSERT INTO {t} VALUES ({','.join('?' * len(DERIVED_TABLES[t]))})", rows.values())
            return
        touched_ids, touched_ds = set(), set()
        governance = False
        for rec in records:
            b = rec.envelope["body"]
            if rec.type in ("identity.register", "identity.revoke"):
                touched_ids.add(b["key"])
            elif rec.type in ("network.propose", "network.approve"):
                governance = True
            elif rec.type == "dataset.contribute":
                touched_ds.add(b["dataset"])
            elif rec.type == "model.update":
                touched_ds.update(i["dataset"] for i in b["inputs"])
        for name in touched_ds:
            ds = state.datasets[name]
            c.executemany("INSERT OR REPLACE INTO datasets VALUES (?,?,?)", [(name, v, r) for v, r in ds.versions.items()])
            if ds.budget is not None:
                c.execute("INSERT OR REPLACE INTO budgets VALUES (?,?,?,?,?)", _budget_row(ds))
        if governance:
            # Few rows, rarely: an adopted org.add / org.remove changes identities of a whole
            # organisation, so the governance tables and the identities are rewritten whole.
            for t in ("identities", "organisations", "proposals", "validators"):
                c.execute(f"DELETE FROM {t}")
            for t, grows in _governance_rows(state).items():
                c.executemany(f"INSERT INTO {t} VALUES ({','.join('?' * len(DERIVED_TABLES[t]))})", grows.values())
        else:
            c.executemany("INSERT OR REPLACE INTO identities VALUES (?,?,?,?,?,?)",
                          [_identity_row(state.identities[k]) for k in touched_ids])
        c.executemany("INSERT OR REPLACE INTO policies VALUES (?,?,?,?,?)",
                      [_policy_row(at, p, state.policy_proposals.get(at)) for at, p in state.policies[1:]])

    def load_state(self) -> ChainState:
        """The state after the last block, from the derived tables (fast start)."""
        state = ChainState(self.genesis, index=self)
        conn = self.reader
        state.identities = {
            k: Identity(k, n, o, frozenset(r.split(",")) if r else frozenset(), bool(rv), rb)
            for k, n, o, r, rv, rb in conn.execute("SELECT * FROM identities")
        }
        state.datasets = {}
        for name, version, rec in conn.execute("SELECT name, version, record FROM datasets ORDER BY rowid"):
            state.datasets.setdefault(name, DatasetState(name)).versions[version] = rec
        for name, e, d, se, sd in conn.execute("SELECT * FROM budgets"):
            ds = state.datasets.setdefault(name, DatasetState(name))
            ds.budget = (_stored_decimal(e), _stored_decimal(d))
            ds.spent = (_stored_decimal(se), _stored_decimal(sd))
        state.policies = [(0, dict(self.genesis.policy))]
        state.policy_proposals = {}
        for at, a, b, t, prop in conn.execute("SELECT idx, data, annotation, training, proposal FROM policies ORDER BY idx"):
            state.policies.append(
                (at, {"data": _stored_decimal(a), "annotation": _stored_decimal(b), "training": _stored_decimal(t)}))
            if prop is not None:
                state.policy_proposals[at] = prop
        state.organisation_log = {
            n: Organisation(n, ab, aa, rb, ra)
            for n, ab, aa, rb, ra in conn.execute(
                "SELECT name, added_by, added_at, removed_by, removed_at FROM organisations ORDER BY rowid")
        }
        state.orgs = {n for n, o in state.organisation_log.items() if o.in_force}
        state.proposals = {
            r[0]: _proposal(r)
            for r in conn.execute(f"SELECT {', '.join(DERIVED_TABLES['proposals'])} FROM proposals ORDER BY idx")
        }
        sets = self.validator_sets()
        if sets:
            state.validator_sets = sets
            state.validators = list(sets[-1][1])
            state.ever_validators = {v.key for _h, vals in sets for v in vals}
            state._validators_hash = None
        state.size = self.log_size()
        state.begin_block(self.height())
        return state

    def rebuild_state(self) -> ChainState:
        """Replay the whole log to recompute the derived tables (DESIGN.md: state is
        derivable from the log); returns the state and rewrites the tables."""
        from .records import parse_record

        state = ChainState(self.genesis)
        for _idx, height, _id, env in self.records():
            if height != state.height:
                state.begin_block(height)
            state.check_apply(parse_record(orjson.loads(env)))
        state.begin_block(self.height())
        self.write_derived(state)
        state.index = self
        state.settle()
        return state

    def write_derived(self, state: ChainState) -> None:
        """Replace every row of the derived tables by those of ``state``, in one transaction."""
        with self._lock:
            try:
                with self.conn:  # commits on success, rolls back on any error
                    self.conn.execute("BEGIN IMMEDIATE")
                    self._write_state(state)
            except sqlite3.DatabaseError as e:
                raise StorageError(f"could not rewrite the derived tables: {e}", code="commit_failed") from e

    # -- consensus guard and evidence (used by the node) --------------------------------
    def save_signed(self, height: int, round: int, step: str, block: str) -> None:
        """Persist what this validator is about to sign, before it is sent (issue: the
        restart rule); durable before the caller broadcasts."""
        with self._lock:
            self.conn.execute(
                "INSERT OR REPLACE INTO signed VALUES (0, ?, ?, ?, ?)", (height, round, step, block)
            )

    def last_signed(self) -> tuple[int, int, str, str] | None:
        row = self.reader.execute("SELECT height, round, step, block FROM signed WHERE k = 0").fetchone()
        return (int(row[0]), int(row[1]), str(row[2]), str(row[3])) if row else None

    def save_signed_state(self, doc: dict[str, Any], blocks: dict[str, bytes] | None = None) -> None:
        """Durably keep the consensus core's recovery document (one row, overwritten) and
        the blocks it names, in one transaction (synchronous=FULL): the caller sends the
        signature only after this returns. Blocks of lower heights are forgotten."""
        height, rnd, step, block = doc["height"], doc["round"], doc["step"], doc["block_hash"]
        with self._lock:
            c = self.conn
            try:
                c.execute("BEGIN IMMEDIATE")
                c.execute("CREATE TABLE IF NOT EXISTS signed_state (k INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
                c.execute(
                    "CREATE TABLE IF NOT EXISTS signed_blocks "
                    "(hash TEXT PRIMARY KEY, height INTEGER NOT NULL, block TEXT NOT NULL)"
                )
                if blocks:
                    c.execute("DELETE FROM signed_blocks WHERE height < ?", (height,))
                    c.executemany(
                        "INSERT OR IGNORE INTO signed_blocks VALUES (?, ?, ?)",
                        [(h, height, b.decode()) for h, b in blocks.items()],
                    )
                c.execute("INSERT OR REPLACE INTO signed_state VALUES (0, ?)", (orjson.dumps(doc).decode(),))
                c.execute("INSERT OR REPLACE INTO signed VALUES (0, ?, ?, ?, ?)", (height, rnd, step, block))
                c.execute("COMMIT")
            except BaseException as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if isinstance(e, sqlite3.DatabaseError):
                    raise StorageError(f"could not persist the signing state: {e}", code="persist_failed") from e
                raise

    def last_signed_state(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The recovery document saved last and the blocks it names (hash -> block)."""
        try:
            row = self.reader.execute("SELECT doc FROM signed_state WHERE k = 0").fetchone()
            if row is None:
                return None
            blocks = {h: orjson.loads(b) for h, b in self.reader.execute("SELECT hash, block FROM signed_blocks")}
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return None  # a database in which this validator never signed
            raise
        return orjson.loads(row[0]), blocks

    def add_evidence(self, evidence_id: str, height: int, validator: str, evidence: dict[str, Any]) -> bool:
        """Keep a piece of equivocation evidence; True if it was kept. Bounded, so a faulty
        validator cannot grow the table without end (docs/protocol.md 10, "Evidence"): at
        most one piece per validator and height (the first; one proves the fault), and at
        most ``EVIDENCE_LIMIT`` rows, the oldest dropped."""
        with self._lock:
            c = self.conn
            kept = c.execute(
                "INSERT OR IGNORE INTO evidence SELECT ?, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM evidence WHERE validator = ? AND height = ?)",
                (evidence_id, height, validator, jcs(evidence).decode(), validator, height),
            ).rowcount == 1
            if kept:
                c.execute("DELETE FROM evidence WHERE rowid <= (SELECT max(rowid) FROM evidence) - ?",
                          (EVIDENCE_LIMIT,))
            return kept

    def evidence(self) -> list[dict[str, Any]]:
        return [orjson.loads(r[0]) for r in self.reader.execute("SELECT evidence FROM evidence ORDER BY height, rowid")]


def _stored_decimal(text: Any) -> Fraction:
    """A decimal of the derived tables, read as records' decimals are (docs/protocol.md 2)."""
    value = parse_decimal(text)
    if value is None:
        raise StorageError(f"derived tables hold {text!r:.40}, which is not a decimal", code="bad_database")
    return value


# -- derived state as rows -----------------------------------------------------------------
DERIVED_TABLES: dict[str, tuple[str, ...]] = {
    "identities": ("key", "name", "org", "roles", "revoked", "registered_by"),
    "datasets": ("name", "version", "record"),
    "budgets": ("dataset", "epsilon", "delta", "spent_epsilon", "spent_delta"),
    "policies": ("idx", "data", "annotation", "training", "proposal"),
    "organisations": ("name", "added_by", "added_at", "removed_by", "removed_at"),
    "proposals": ("id", "action", "proposer", "org", "height", "idx", "expires", "reason", "approvals",
                  "adopted_at", "adopted_by"),
    "validators": ("height", "position", "key", "name", "url"),
}
"""The derived tables and their columns; the primary key is the first column (the first
two for ``datasets`` and ``validators``)."""

DerivedRows = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]
"""Table -> primary key -> row."""


def _pk(table: str, row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(row[:2]) if table in ("datasets", "validators") else (row[0],)


def _identity_row(i: Identity) -> tuple[Any, ...]:
    return (i.key, i.name, i.org, ",".join(sorted(i.roles)), int(i.revoked), i.registered_by)


def _budget_row(ds: DatasetState) -> tuple[Any, ...]:
    assert ds.budget is not None
    return (ds.name, *map(decimal_str, (*ds.budget, *ds.spent)))


def _policy_row(at: int, p: dict[str, Any], proposal: str | None) -> tuple[Any, ...]:
    return (at, decimal_str(p["data"]), decimal_str(p["annotation"]), decimal_str(p["training"]), proposal)


def _organisation_row(o: Organisation) -> tuple[Any, ...]:
    return (o.name, o.added_by, o.added_at, o.removed_by, o.removed_at)


def _proposal_row(p: Proposal) -> tuple[Any, ...]:
    # Organisation names hold no newline (a proposal's approvals are joined by one).
    return (p.id, jcs(p.action).decode(), p.proposer, p.org, p.height, p.index, p.expires, p.reason,
            "\n".join(p.approvals), p.adopted_at, p.adopted_by)


def _proposal(row: Sequence[Any]) -> Proposal:
    pid, action, proposer, org, height, idx, expires, reason, approvals, adopted_at, adopted_by = row
    return Proposal(pid, orjson.loads(action), proposer, org, height, idx, expires, reason,
                    tuple(approvals.split("\n")) if approvals else (), adopted_at, adopted_by)


def derived_rows(state: ChainState) -> DerivedRows:
    """The rows the derived tables hold for ``state``: what a replay of the log says
    they must hold (DESIGN.md: state is derivable from the log)."""
    out: DerivedRows = {t: {} for t in DERIVED_TABLES}
    out.update(_governance_rows(state))
    for name, ds in state.datasets.items():
        for v, r in ds.versions.items():
            out["datasets"][(name, v)] = (name, v, r)
        if ds.budget is not None:
            out["budgets"][(name,)] = _budget_row(ds)
    for at, p in state.policies[1:]:
        out["policies"][(at,)] = _policy_row(at, p, state.policy_proposals.get(at))
    return out


def _governance_rows(state: ChainState) -> DerivedRows:
    """The rows of the tables a governance record may change (PROTOCOL.md 9): identities
    (an adopted org.add or org.remove changes many), organisations, proposals and the
    validator sets."""
    out: DerivedRows = {"identities": {}, "organisations": {}, "proposals": {}, "validators": {}}
    for i in state.identities.values():
        out["identities"][(i.key,)] = _identity_row(i)
    for o in state.organisation_log.values():
        out["organisations"][(o.name,)] = _organisation_row(o)
    for prop in state.proposals.values():
        out["proposals"][(prop.id,)] = _proposal_row(prop)
    for first, vals in state.validator_sets:
        for pos, val in enumerate(vals):
            out["validators"][(first, pos)] = (first, pos, val.key, val.name, val.url)
    return out


def read_derived(conn: sqlite3.Connection) -> DerivedRows:
    """The rows the derived tables of the database on ``conn`` hold, by primary key."""
    out: DerivedRows = {}
    for t, cols in DERIVED_TABLES.items():
        rows = out[t] = {}
        for row in conn.execute(f"SELECT {', '.join(cols)} FROM {t}"):
            rows[_pk(t, row)] = tuple(row)
    return out


def compare_derived(want: DerivedRows, have: DerivedRows) -> Iterator[tuple[str, tuple[Any, ...], str]]:
    """(table, primary key, what differs) for every row of ``have`` that is not the row
    of ``want`` with that key, and every row of ``want`` that ``have`` lacks."""
    for t, cols in DERIVED_TABLES.items():
        w, h = want.get(t, {}), have.get(t, {})
        for key in sorted(w.keys() | h.keys(), key=repr):
            a, b = w.get(key), h.get(key)
            if a == b:
                continue
            if b is None:
                yield t, key, "row missing; the log gives " + _show(cols, a)
            elif a is None:
                yield t, key, "row the log does not give: " + _show(cols, b)
            else:
                diff = [f"{c} is {y!r}, the log gives {x!r}" for c, x, y in zip(cols, a, b, strict=True) if x != y]
                yield t, key, "; ".join(diff)


def _show(cols: Sequence[str], row: Sequence[Any] | None) -> str:
    return ", ".join(f"{c}={v!r}" for c, v in zip(cols, row or (), strict=True))


def _block_row(row: Sequence[Any]) -> BlockRow:
    return BlockRow(Header.from_dict(orjson.loads(row[0])), row[1], Certificate.from_dict(orjson.loads(row[2])), row[3])
