"""The offline auditor: every check of PROTOCOL.md 7, with findings located.

``audit(source)`` returns an ``AuditReport`` (what passed, what failed, where);
``verify_chain(source)`` raises ``VerificationError`` on the first report that is not clean.
A source is a database file, a node URL or an exported bundle (see ``ChainSource``).

Checks, numbered as PROTOCOL.md 7:
  1. ``chain_id`` recomputes from the genesis (and matches what the source claims).
  2. Per height: ``height`` increments, ``prev`` links, the certificate is valid for the
     block hash against the set certifying that height (PROTOCOL.md 9.1: the set the replay
     gives after the block before), ``count`` and ``log_size`` add up, records sit at
     consecutive log indexes, and ``next_validators`` is the hash of the set after the
     block's records (finding ``next_validators``).
  3. Per record: form, id recomputes, signature verifies, the signer's identity and role
     and the type's rules hold at that point in the log (``ledger.state``).
  4. ``log_root`` of every block equals the RFC 9162 root recomputed over the record ids.
  5. The chain is consistent with a checkpoint audited before (``--state FILE``): no
     rollback, no fork (root at the old size recomputed, the block at the old height hashes
     as it did, and an RFC 9162 consistency proof where the source can give one).
A database file is also checked as a file (docs/protocol.md 4): SQLite's
``PRAGMA integrity_check`` first, then every stored Merkle node against the tree recomputed
from the record ids, and every row of the derived tables against a replay of the log. A
file SQLite cannot read, bytes that do not decode, a missing table: each is a finding.
Findings after the first may be consequences of it; each says which check failed and
where (table, height, record, log index, row key).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from . import merkle
from .blocks import Certificate, Header, verify_certificate
from .errors import InputError, LedgerError, ProofError, StorageError, VerificationError
from .genesis import parse_genesis
from .keys import verify_bytes
from .records import Record, parse_record
from .state import ChainState
from .store import (
    DERIVED_TABLES,
    LEDGER_TABLES,
    DerivedRows,
    compare_derived,
    derived_rows,
    node_key,
    read_derived,
)

__all__ = [
    "AuditReport",
    "ChainSource",
    "Checkpoint",
    "DbSource",
    "Finding",
    "SourceBlock",
    "audit",
    "verify_chain",
]


@dataclass(frozen=True)
class Finding:
    check: str  # e.g. "signature", "certificate", "prev", "log_root", "rule:replayed_nonce"
    message: str
    height: int | None = None
    record: str | None = None  # record id (as stored, else recomputed)
    index: int | None = None  # log index
    table: str | None = None  # the database table holding the row at fault
    key: str | None = None  # that row's key, e.g. "level 3 index 5" in ``merkle``

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        where = []
        if self.height is not None:
            where.append(f"height {self.height}")
        if self.index is not None:
            where.append(f"index {self.index}")
        if self.record:
            where.append(f"record {self.record[:16]}…")
        if self.table:
            where.append(f"table {self.table}" + (f" {self.key}" if self.key else ""))
        return f"[{self.check}] {', '.join(where) + ': ' if where else ''}{self.message}"


@dataclass(frozen=True)
class Checkpoint:
    """What an audit verified: kept in ``--state FILE`` to catch rollbacks and forks."""

    chain_id: str
    height: int
    hash: str
    log_size: int
    log_root: str

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint | None:
        p = Path(path)
        if not p.exists():
            return None
        try:
            d = json.loads(p.read_text())
            return cls(**{k: d[k] for k in ("chain_id", "height", "hash", "log_size", "log_root")})
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{p} is not an audit state file: {e}", code="bad_state_file") from e

    def save(self, path: str | Path) -> None:
        p = Path(path)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, p)


@dataclass
class AuditReport:
    chain_id: str | None = None
    blocks: int = 0
    records: int = 0
    head: Checkpoint | None = None
    findings: list[Finding] = field(default_factory=list)
    checkpoint: str | None = None  # what the --state comparison concluded

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chain_id": self.chain_id,
            "blocks": self.blocks,
            "records": self.records,
            "head": asdict(self.head) if self.head else None,
            "checkpoint": self.checkpoint,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class SourceBlock:
    """One block as a source holds it. ``records`` are (log index or None, stored id or
    None, envelope as JSON text or dict)."""

    height: int
    header: Any
    certificate: Any
    records: list[tuple[int | None, str | None, Any]]


class ChainSource(Protocol):
    def genesis_doc(self) -> Any: ...

    def claimed_chain_id(self) -> str | None:
        """The chain id the source says it holds (None if it says nothing)."""
        ...

    def totals(self) -> tuple[int, int]:
        """(blocks, records) expected, for progress."""
        ...

    def blocks(self) -> Iterator[SourceBlock]: ...

    def structure(self) -> Iterator[Finding]:
        """Findings about the source's own layout (e.g. records that belong to no block)."""
        ...

    def consistency_proof(self, first: int, second: int) -> list[bytes] | None: ...


@dataclass(frozen=True)
class Undecodable:
    """A stored text value that is not UTF-8: kept as its bytes, so the audit can say where."""

    data: bytes
    at: int  # offset of the first byte that does not decode


def _text(data: bytes) -> str | Undecodable:
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        return Undecodable(data, e.start)


class DbSource:
    """A provledger SQLite file, read as raw rows: nothing the store caches is trusted.

    Opening never fails on a damaged file: ``integrity()`` says what SQLite finds wrong,
    and a read that fails later becomes a ``StorageError`` the audit reports as a finding.
    A readable SQLite file without the ledger tables is not a ledger (``InputError``)."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"no such database file: {p}", code="no_database")
        self.path = p
        self.conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        self.conn.text_factory = _text
        self._damage: list[Finding] = []
        self.readable = self._check_file()

    def _check_file(self) -> bool:
        try:
            # PRAGMA integrity_check: every page, b-tree and index of the file (SQLite docs).
            problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            self._damage.append(Finding("database", f"SQLite cannot read the file: {e} (truncated or overwritten?)"))
            return False
        for text in problems[:20]:
            self._damage.append(Finding("integrity_check", str(text)))
        if len(problems) > 20:
            self._damage.append(Finding("integrity_check", f"... and {len(problems) - 20} more problems"))
        missing = [t for t in (*LEDGER_TABLES, *DERIVED_TABLES) if t not in tables]
        if not problems and set(LEDGER_TABLES) <= set(missing):
            raise InputError(f"{self.path} is an SQLite file but not a provledger database (no ledger tables)",
                             code="bad_database")
        for t in missing:
            self._damage.append(Finding("schema", f"table {t} is missing", table=t))
        self._derived_ok = not any(t in DERIVED_TABLES for t in missing)
        return not any(t in LEDGER_TABLES for t in missing)

    def integrity(self) -> list[Finding]:
        """What is wrong with the file itself, before any row is read."""
        return list(self._damage)

    def _read(self, what: str, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"cannot read {what}: {e}", code="corrupt_database") from e

    def _meta(self, key: str) -> str | None:
        rows = self._read("meta", "SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return None
        value = rows[0][0]
        if not isinstance(value, str):
            raise StorageError(f"meta {key!r} is not UTF-8 text", code="corrupt_database")
        return value

    def genesis_doc(self) -> Any:
        text = self._meta("genesis")
        if text is None:
            raise InputError(f"{self.path} holds no genesis", code="bad_database")
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise StorageError(f"the stored genesis is not JSON: {e}", code="corrupt_database") from e

    def claimed_chain_id(self) -> str | None:
        return self._meta("chain_id")

    def totals(self) -> tuple[int, int]:
        try:
            return (self.conn.execute("SELECT count(*) FROM blocks").fetchone()[0],
                    self.conn.execute("SELECT count(*) FROM records").fetchone()[0])
        except sqlite3.DatabaseError:
            return 0, 0  # only for progress; the audit reports the damage

    def blocks(self) -> Iterator[SourceBlock]:
        cur = self.conn.cursor()
        height = 0
        try:
            for height, header, cert in self.conn.execute("SELECT height, header, certificate FROM blocks ORDER BY height"):
                recs = cur.execute(
                    "SELECT idx, id, envelope FROM records WHERE height = ? ORDER BY idx", (height,)
                ).fetchall()
                yield SourceBlock(height, _loads(header), _loads(cert),
                                  [(i, r if isinstance(r, str) else None, e) for i, r, e in recs])
        except sqlite3.DatabaseError as e:
            raise StorageError(f"cannot read the blocks after height {height}: {e}", code="corrupt_database") from e

    def structure(self) -> Iterator[Finding]:
        for idx, rid, height in self._read(
            "records", "SELECT idx, id, height FROM records WHERE height NOT IN (SELECT height FROM blocks) ORDER BY idx"
        ):
            yield Finding("orphan_record", f"record belongs to height {height}, which has no block", height,
                          rid if isinstance(rid, str) else None, idx)

    # -- the tables the node derives from the log ------------------------------------------
    def merkle_level(self, level: int) -> Iterator[tuple[int, Any]]:
        """(index, hash) of the stored Merkle nodes of ``level``, in index order (a cursor:
        a read that fails later raises ``sqlite3.DatabaseError``)."""
        lo = node_key(level, 0)
        return self.conn.execute("SELECT k - ?, h FROM merkle WHERE k >= ? AND k < ? ORDER BY k",
                                 (lo, lo, node_key(level + 1, 0)))

    def merkle_above(self, level: int) -> list[int]:
        """Keys of stored Merkle nodes of ``level`` or higher, or that are no node key at all
        (at most 21: enough to report)."""
        rows = self._read("merkle", "SELECT k FROM merkle WHERE k >= ? OR k < 0 ORDER BY k LIMIT 21",
                          (node_key(level, 0),))
        return [r[0] for r in rows]

    def derived_rows(self) -> DerivedRows | None:
        """The stored derived tables, row by row (``ledger.store.DERIVED_TABLES``); None
        when one is missing (a ``schema`` finding already)."""
        if not self._derived_ok:
            return None
        try:
            return read_derived(self.conn)
        except sqlite3.DatabaseError as e:
            raise StorageError(f"cannot read the derived tables: {e}", code="corrupt_database") from e

    def _get_nodes(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        out = {}
        for lv, i in keys:
            row = self.conn.execute("SELECT h FROM merkle WHERE k = ?", (node_key(lv, i),)).fetchone()
            if row:
                out[(lv, i)] = row[0]
        return out

    def consistency_proof(self, first: int, second: int) -> list[bytes] | None:
        try:
            return merkle.consistency_proof(first, second, self._get_nodes)
        except LedgerError:
            return None

    def proven_leaves(self, start: int, end: int, size: int, root: bytes) -> dict[int, bytes]:
        """Stored leaf hashes in ``[start, end)`` that an RFC 9162 inclusion proof, built from
        the stored nodes, ties to ``root`` of a tree of ``size``: those are the certified
        record ids, whatever else in the file was edited. Others are left out."""
        out = {}
        for i in range(start, min(end, size)):
            leaf = self._get_nodes([(0, i)]).get((0, i))
            if leaf is None:
                continue
            try:
                merkle.verify_inclusion(leaf, i, size, merkle.inclusion_proof(i, size, self._get_nodes), root)
            except LedgerError:
                continue
            out[i] = leaf
        return out


def _loads(text: Any) -> Any:
    if isinstance(text, Undecodable):
        return text
    try:
        return orjson.loads(text) if isinstance(text, (str, bytes)) else text
    except orjson.JSONDecodeError:
        return None


# --- per-record work that needs no state: form, id, signature ---------------------------
Analysis = tuple[str | None, str | None, str | None, bool, Record | None]
"""(recomputed id, form error code, form error message, signature verifies, the parsed
record when ``keep``)."""


def _analyze(rows: Sequence[tuple[int | None, str | None, Any]]) -> list[Analysis]:
    """Checks of one record that depend on nothing before it; runs in worker processes
    with ``--jobs N`` (the main process decodes each envelope again for the state rules:
    that costs less than sending it back)."""
    return list(_analyses(rows, keep=False))


def _analyses(rows: Iterable[tuple[int | None, str | None, Any]], keep: bool) -> Iterator[Analysis]:
    """``_analyze``, one record at a time. ``keep``: with each analysis, the parsed record
    for the state rules, so that its envelope is decoded once (``--jobs 1``)."""
    for _idx, _sid, env in rows:
        if isinstance(env, Undecodable):
            yield None, "not_utf8", f"the stored envelope is not UTF-8 (byte {env.at} of {len(env.data)})", False, None
            continue
        try:
            rec = parse_record(_loads(env))
        except LedgerError as e:
            yield None, e.code, e.message, False, None
            continue
        try:
            verify_bytes(rec.signer, rec.signing_bytes(), rec.envelope["sig"])
            ok = True
        except LedgerError:
            ok = False
        yield rec.id, None, None, ok, rec if keep else None


_CHUNK = 4096  # records per batch handed to the workers


def _analyzed(source: ChainSource, jobs: int) -> Iterator[tuple[SourceBlock, Iterable[Analysis]]]:
    """Blocks in order, each with the analysis of its records. With ``jobs > 1`` the
    analysis runs in a process pool, a few chunks ahead of the sequential checks; with
    one job, each record's as the sequential checks reach it (a parsed record lives
    only while it is checked)."""
    if jobs <= 1:
        for blk in source.blocks():
            yield blk, _analyses(blk.records, keep=True)
        return
    pool = ProcessPoolExecutor(max_workers=jobs)
    inflight: deque[tuple[list[SourceBlock], list[Future[list[Analysis]]]]] = deque()

    def submit(blocks: list[SourceBlock]) -> None:
        rows = [r for b in blocks for r in b.records]
        step = max(1, -(-len(rows) // jobs))
        inflight.append((blocks, [pool.submit(_analyze, rows[i : i + step]) for i in range(0, len(rows), step)]))

    def drain() -> Iterator[tuple[SourceBlock, list[Analysis]]]:
        blocks, futs = inflight.popleft()
        results = [a for f in futs for a in f.result()]
        at = 0
        for b in blocks:
            yield b, results[at : at + len(b.records)]
            at += len(b.records)

    try:
        batch: list[SourceBlock] = []
        size = 0
        for blk in source.blocks():
            batch.append(blk)
            size += len(blk.records)
            if size >= _CHUNK:
                submit(batch)
                batch, size = [], 0
                while len(inflight) > 2:
                    yield from drain()
        if batch:
            submit(batch)
        while inflight:
            yield from drain()
    finally:
        pool.shutdown(cancel_futures=True)


def _readable(blocks: Iterator[Any], stop: Callable[[Exception], None]) -> Iterator[Any]:
    """``blocks`` until a read fails: the failure goes to ``stop`` (a finding)."""
    try:
        yield from blocks
    except (StorageError, sqlite3.DatabaseError) as e:
        stop(e)


class _MerkleCheck:
    """The stored Merkle nodes (the ``merkle`` table, PROTOCOL.md 4) against the tree the
    audit recomputes from the record ids. Each level is read in index order beside the
    recomputation: one row read and one comparison per node. The recomputation never
    reads a stored node, so an edited row is one finding, not a path of them."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._levels: list[Iterator[tuple[int, Any]]] = []
        self._next: list[tuple[int, Any] | None] = []
        self._pending: list[Finding] = []
        self.failed: sqlite3.DatabaseError | None = None  # a read of the table failed: no more checks
        self.failed_height = 0  # the block being checked when it failed
        self._height = 0

    def _row(self, level: int) -> tuple[int, Any] | None:
        try:
            return next(self._levels[level], None)
        except sqlite3.DatabaseError as e:
            self.failed, self.failed_height = e, self._height
            return None

    def add(self, pos: int, hashes: list[bytes], height: int, record: str | None) -> None:
        """The nodes appending leaf ``pos`` completed (``Accumulator.append_nodes``)."""
        if self.failed is not None:
            return
        self._height = height
        levels, nxt = self._levels, self._next
        for level, h in enumerate(hashes):
            if level == len(levels):
                try:
                    levels.append(self._source.merkle_level(level))
                except sqlite3.DatabaseError as e:
                    self.failed, self.failed_height = e, height
                    return
                nxt.append(self._row(level))
                if self.failed is not None:
                    return
            index = pos >> level
            row = nxt[level]
            stored = None
            if row is not None and row[0] == index:
                nxt[level] = self._row(level)
                if self.failed is not None:
                    return
                stored = row[1]
                if stored == h:
                    continue
            what = "is missing" if stored is None else f"holds {_short(stored)}"
            self._pending.append(Finding(
                "merkle", f"stored node {what}; the record ids give {h.hex()[:16]}…", height,
                record if level == 0 else None, pos if level == 0 else None, "merkle", f"level {level} index {index}",
            ))

    def end_block(self, add: Callable[[Finding], None], root_ok: bool) -> None:
        """Report the block's node findings when its records give the certified root; else
        the records, not the table, are what the other findings name."""
        if root_ok:
            for f in self._pending:
                add(f)
        self._pending.clear()

    def leftover(self, add: Callable[[Finding], None], size: int) -> None:
        """Stored nodes the log does not give: beyond its size, or no node key at all."""
        extra: list[str] = []
        for level, rows in enumerate(self._levels):
            nxt = self._next[level]
            while nxt is not None and len(extra) <= 20:
                extra.append(f"level {level} index {nxt[0]}")
                nxt = next(rows, None)  # a failure here is the caller's to report
        if len(extra) <= 20:
            extra += [f"level {k >> 40} index {k & ((1 << 40) - 1)}" if k >= 0 else f"key {k}"
                      for k in self._source.merkle_above(len(self._levels))]
        for key in extra[:20]:
            add(Finding("merkle", f"stored node the log of {size} records does not give", table="merkle", key=key))
        if len(extra) > 20:
            add(Finding("merkle", "... and more stored nodes the log does not give", table="merkle"))


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        return f"{value.hex()[:16]}…" + ("" if len(value) == 32 else f" ({len(value)} bytes)")
    return f"a {type(value).__name__}, not a hash"


def audit(
    source: ChainSource,
    *,
    jobs: int = 1,
    checkpoint: Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
) -> AuditReport:
    """Audit a chain end to end. ``progress(n)`` is told of every n records checked."""
    report = AuditReport()
    integrity = getattr(source, "integrity", None)
    if integrity is not None:
        report.findings.extend(integrity())
        if not getattr(source, "readable", True):
            return report
    _audit(source, report, jobs, checkpoint, progress)
    report.findings.sort(key=lambda f: (f.height if f.height is not None else -1, f.index if f.index is not None else -1))
    return report


def _audit(
    source: ChainSource,
    report: AuditReport,
    jobs: int,
    checkpoint: Checkpoint | None,
    progress: Callable[[int], None] | None,
) -> None:
    add = report.findings.append
    # 1. The genesis and the chain id.
    try:
        genesis = parse_genesis(source.genesis_doc())
        claimed = source.claimed_chain_id()
    except LedgerError as e:
        add(Finding("genesis", f"genesis document is invalid: {e.message}"))
        return
    chain_id = report.chain_id = genesis.chain_id
    if claimed is not None and claimed != chain_id:
        add(Finding("chain_id", f"chain id recomputed from the genesis is {chain_id[:16]}…, the source says {claimed[:16]}… (genesis edited?)"))

    state = ChainState(genesis)
    acc = merkle.Accumulator()
    nodes = _MerkleCheck(source) if hasattr(source, "merkle_level") else None
    prev_hash, expected_height, log_size = chain_id, 1, 0
    last: Checkpoint | None = None
    root_at_checkpoint: bytes | None = None
    hash_at_checkpoint: str | None = None
    if checkpoint is not None and checkpoint.log_size == 0:
        root_at_checkpoint = merkle.EMPTY_ROOT

    failed: list[Exception] = []

    def stop(e: Exception, height: int | None = None) -> None:
        # The file could not be read further (PRAGMA integrity_check says why).
        failed.append(e)
        add(Finding("database", e.message if isinstance(e, StorageError) else f"cannot read the file: {e}",
                    expected_height if height is None else height))

    for blk, analyses in _readable(_analyzed(source, jobs), stop):
        # 2. The block: height, links, certificate, counts.
        try:
            header = Header.from_dict(blk.header)
        except LedgerError as e:
            add(Finding("header", f"block header is malformed: {e.message}", blk.height))
            continue
        h = header.height
        if h > expected_height:
            gap = f"{expected_height}" if h == expected_height + 1 else f"{expected_height}..{h - 1}"
            add(Finding("height", f"block {gap} is missing: the block after height {expected_height - 1} is at height {h}", expected_height))
        elif h != expected_height:
            add(Finding("height", f"expected height {expected_height}, found {h} (a block is repeated or out of order)", h))
        if header.chain != chain_id:
            add(Finding("chain", f"header names chain {header.chain[:16]}…, not {chain_id[:16]}…", h))
        if header.prev != prev_hash:
            add(Finding("prev", f"prev is {header.prev[:16]}…, the block before hashes to {prev_hash[:16]}…", h))
        block_hash = header.hash
        certified = True
        state.begin_block(h)
        try:  # PROTOCOL.md 9.1: the set after the block before certifies this height
            verify_certificate(
                Certificate.from_dict(blk.certificate),
                chain=chain_id, height=h, block_hash=block_hash, validators=state.validator_keys(),
            )
        except LedgerError as e:
            certified = False
            add(Finding("certificate", e.message, h))
        if len(blk.records) != header.count:
            add(Finding("count", f"block holds {len(blk.records)} records, its header says {header.count}", h))
        _check_indexes(blk, header, add)
        # 3. The records. A finding names a record by its stored id and stored log index
        # when the source has them: that is where a reader finds the row.
        seen: list[tuple[int, str | None, bytes]] = []
        for (idx, stored_id, env), (rid, err_code, err_msg, sig_ok, rec) in zip(blk.records, analyses, strict=True):
            at = idx if idx is not None else log_size
            if rid is None:
                add(Finding("record_form", f"{err_msg} ({err_code})", h, stored_id, at))
                leaf = bytes.fromhex(stored_id) if stored_id and len(stored_id) == 64 else bytes(32)
            else:
                if stored_id is not None and stored_id != rid:
                    add(Finding("record_id", f"stored id {stored_id[:16]}… but the envelope hashes to {rid[:16]}…", h, stored_id, at))
                if not sig_ok:
                    add(Finding("signature", "record signature does not verify", h, stored_id or rid, at))
                try:  # the form was checked in _analyze; only the state rules remain
                    state.check_apply(rec if rec is not None else Record(_loads(env), rid, b""))
                except LedgerError as e:
                    add(Finding("rule:" + e.code, e.message, h, stored_id or rid, at))
                    state.size += 1
                leaf = bytes.fromhex(rid)
            seen.append((at, stored_id, leaf))
            if nodes is None:
                acc.append(leaf)
            else:
                nodes.add(log_size, acc.append_nodes(leaf), h, stored_id or rid)
            log_size += 1
            report.records += 1
            if checkpoint is not None and log_size == checkpoint.log_size:
                root_at_checkpoint = acc.root()
        # PROTOCOL.md 7.2, 9.1: next_validators names the set after this block's records.
        if header.next_validators != state.validators_hash():
            add(Finding("next_validators", f"next_validators is {header.next_validators[:16]}…; the set after the "
                        f"block's records hashes to {state.validators_hash()[:16]}… "
                        f"({len(state.validators)} validators)", h))
        # 4. The log root and size.
        if header.log_size != log_size:
            add(Finding("log_size", f"header says log_size {header.log_size}, the records add up to {log_size}", h))
        root = acc.root()
        if header.log_root != root.hex():
            add(Finding("log_root", f"log_root {header.log_root[:16]}… but the records give {root.hex()[:16]}… (records edited, swapped, added or removed)", h))
            if certified:
                _locate_leaves(source, header, seen, add)
        if nodes is not None:
            nodes.end_block(add, header.log_root == root.hex())
        report.blocks += 1
        prev_hash, expected_height = block_hash, h + 1
        last = Checkpoint(chain_id, h, block_hash, log_size, root.hex())
        if checkpoint is not None and h == checkpoint.height:
            hash_at_checkpoint = block_hash
        if progress:
            progress(len(blk.records))
    if nodes is not None and nodes.failed is not None:
        stop(nodes.failed, nodes.failed_height)
    try:
        if failed:
            raise StorageError("the rest of the file was not read")  # already a finding
        for f in source.structure():
            add(f)
        if nodes is not None:
            nodes.leftover(add, log_size)
        stored = getattr(source, "derived_rows", None)
        rows = stored() if stored is not None else None
        if rows is not None:
            _compare_state(state, rows, last.height if last else 0, add)
    except (StorageError, sqlite3.DatabaseError) as e:
        if not failed:
            stop(e)
    report.head = last
    # 5. Consistency with the checkpoint audited before.
    if checkpoint is not None:
        report.checkpoint = _compare(checkpoint, last, root_at_checkpoint, hash_at_checkpoint, source, add)


def _compare_state(state: ChainState, stored: DerivedRows, height: int, add: Callable[[Finding], None]) -> None:
    """Every row of the derived tables against the state a replay of the log gives
    (``ledger.store.derived_rows``): what the node's rules read is what the log says."""
    for table, key, what in compare_derived(derived_rows(state), stored):
        add(Finding("derived_state", f"{what} (state after height {height})", height,
                    table=table, key="/".join(map(str, key))))


def _check_indexes(blk: SourceBlock, header: Header, add: Callable[[Finding], None]) -> None:
    """Stored log indexes against the block's range ``log_size - count .. log_size - 1``
    (PROTOCOL.md 5): a gap is a deleted record, an index outside the range an inserted or
    moved one. Sources that store no indexes are checked by count and log_root alone."""
    if not blk.records or any(idx is None for idx, _, _ in blk.records):
        return
    h, lo, hi = header.height, header.log_size - header.count, header.log_size
    expect = lo
    for idx, stored_id, _ in blk.records:
        assert idx is not None
        if not lo <= idx < hi:
            add(Finding("log_index", f"record at log index {idx} lies outside block {h}'s range {lo}..{hi - 1} (inserted or moved)", h, stored_id, idx))
            continue
        if idx > expect:
            gap = f"{expect}" if idx == expect + 1 else f"{expect}..{idx - 1}"
            add(Finding("log_index", f"log index {gap} is missing from block {h} (record deleted)", h, None, expect))
        elif idx < expect:
            add(Finding("log_index", f"record at log index {idx} is repeated or out of order", h, stored_id, idx))
        expect = max(expect, idx + 1)
    if expect < hi:
        gap = f"{expect}" if hi == expect + 1 else f"{expect}..{hi - 1}"
        add(Finding("log_index", f"log index {gap} is missing from block {h} (record deleted)", h, None, expect))


def _locate_leaves(
    source: ChainSource, header: Header, seen: list[tuple[int, str | None, bytes]], add: Callable[[Finding], None]
) -> None:
    """After a log_root mismatch in a certified block, name the records that differ from
    the certified log. A source that keeps Merkle nodes can prove, with an RFC 9162
    inclusion proof against the certified ``log_root``, which record id the certified log
    holds at each index; nothing unproven is used."""
    proven = getattr(source, "proven_leaves", None)
    if proven is None:
        return
    lo = header.log_size - header.count
    leaves = proven(lo, header.log_size, header.log_size, bytes.fromhex(header.log_root))
    for at, stored_id, leaf in seen:
        want = leaves.get(at)
        if want is not None and want != leaf:
            add(Finding(
                "log_leaf",
                f"the certified log holds record {want.hex()[:16]}… at index {at}; the record here hashes to {leaf.hex()[:16]}… (edited, swapped or inserted)",
                header.height, stored_id or leaf.hex(), at,
            ))


def _compare(
    old: Checkpoint,
    new: Checkpoint | None,
    root_at_old: bytes | None,
    hash_at_old: str | None,
    source: ChainSource,
    add: Callable[[Finding], None],
) -> str:
    if new is None:
        add(Finding("rollback", f"the chain is empty; the last audit saw {old.log_size} records at height {old.height}"))
        return "rollback"
    if old.chain_id != new.chain_id:
        add(Finding("fork", f"the last audit was of chain {old.chain_id[:16]}…, this is {new.chain_id[:16]}…"))
        return "fork"
    if new.log_size < old.log_size or new.height < old.height:
        add(Finding("rollback", f"the chain has {new.log_size} records at height {new.height}; the last audit saw {old.log_size} at height {old.height} (truncated?)", new.height))
        return "rollback"
    if root_at_old is None or root_at_old.hex() != old.log_root:
        add(Finding("fork", f"the first {old.log_size} records no longer give the root audited before", old.height))
        return "fork"
    if old.height and hash_at_old != old.hash:
        # The same records under another block: a second block certified at that height.
        now = f"hashes to {hash_at_old[:16]}…" if hash_at_old else "is missing"
        add(Finding("fork", f"block {old.height} {now}; the last audit saw {old.hash[:16]}… at that height", old.height))
        return "fork"
    path = source.consistency_proof(old.log_size, new.log_size)
    if path is not None:
        try:
            merkle.verify_consistency(old.log_size, new.log_size, bytes.fromhex(old.log_root), bytes.fromhex(new.log_root), path)
        except ProofError as e:
            add(Finding("consistency", f"the source's RFC 9162 consistency proof fails: {e}", new.height))
            return "fork"
    return f"consistent with the checkpoint at height {old.height} ({old.log_size} records)"


def verify_chain(source: ChainSource, **kw: Any) -> AuditReport:
    """``audit`` that raises VerificationError (code ``audit_failed``) unless clean."""
    report = audit(source, **kw)
    if not report.ok:
        raise VerificationError(f"audit failed: {report.findings[0]}", code="audit_failed", findings=len(report.findings))
    return report
