"""Audit bundles: a whole chain in one file that ``provledger audit FILE`` verifies offline.

Format ``provledger-bundle/v1`` is JSON Lines (UTF-8, one JSON object per line):

- line 1, the head: ``{"format": "provledger-bundle/v1", "chain_id": hex, "genesis": {...},
  "blocks": int, "records": int}`` — ``chain_id`` as claimed by the exporter (the auditor
  recomputes it from ``genesis``), ``blocks``/``records`` the counts that follow;
- then one line per block, heights 1, 2, … in order: ``{"header": {...}, "hash": hex,
  "certificate": {...}, "records": [envelope, ...]}``, exactly the shape of
  ``GET /v1/blocks/{height}`` (PROTOCOL.md 8), records in log order.

Nothing in a bundle is trusted: ``hash`` and the counts are claims that the audit checks
(a mismatch is a finding), ids and roots are recomputed. The file is written and read one
block at a time. A reader also accepts the same content as a single JSON object
``{"format", "chain_id", "genesis", "blocks": [block, ...]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from . import merkle
from .audit import Finding, SourceBlock
from .blocks import Certificate, Header
from .errors import InputError, LedgerError
from .fetch import node_blocks
from .genesis import parse_genesis
from .light import ValidatorSets, membership_doc
from .records import record_id as envelope_id

__all__ = ["FORMAT", "BundleSource", "bundle_proof_doc", "export_bundle", "export_node_bundle", "write_bundle"]

FORMAT = "provledger-bundle/v1"


def write_bundle(
    path: str | Path, genesis_doc: dict[str, Any], blocks: Iterable[dict[str, Any]], *, block_count: int, record_count: int
) -> dict[str, Any]:
    """Write a bundle from a genesis and ``{"header", "hash", "certificate", "records"}``
    dicts, streaming; the file appears only once complete (written beside, then renamed).
    Returns ``{"file", "blocks", "records", "chain_id"}``."""
    p = Path(path)
    chain_id = parse_genesis(genesis_doc).chain_id
    tmp = p.with_name(p.name + ".part")
    n_blocks = n_records = 0
    try:
        with open(tmp, "wb") as f:
            head = {"format": FORMAT, "chain_id": chain_id, "genesis": genesis_doc,
                    "blocks": block_count, "records": record_count}
            f.write(orjson.dumps(head, option=orjson.OPT_SORT_KEYS) + b"\n")
            for blk in blocks:
                line = {k: blk[k] for k in ("header", "hash", "certificate", "records")}
                f.write(orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n")
                n_blocks += 1
                n_records += len(blk["records"])
            f.flush()
            os.fsync(f.fileno())
        if (n_blocks, n_records) != (block_count, record_count):
            raise InputError(
                f"bundle: expected {block_count} blocks and {record_count} records, wrote {n_blocks} and {n_records}",
                code="bundle_incomplete",
            )
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"file": str(p), "blocks": n_blocks, "records": n_records, "chain_id": chain_id}


def export_bundle(store: Any, path: str | Path) -> dict[str, Any]:
    """Write every final block of ``store`` (a ``ledger.store.Store``) to a bundle at
    ``path``: a snapshot at the height the export starts at."""
    head = store.head()
    height = head.header.height if head else 0
    size = head.header.log_size if head else 0

    def blocks() -> Iterator[dict[str, Any]]:
        for row in store.blocks():
            if row.header.height > height:
                break
            yield {"header": row.header.to_dict(), "hash": row.hash, "certificate": row.certificate.to_dict(),
                   "records": store.block_records(row.header.height)}

    return write_bundle(path, store.genesis.doc, blocks(), block_count=height, record_count=size)


def export_node_bundle(url: str, path: str | Path) -> dict[str, Any]:
    """Write every final block of the node at ``url`` (up to its checkpoint when the
    export starts) to a bundle at ``path``."""
    genesis, blocks, height, size = node_blocks(url)
    try:
        return write_bundle(path, genesis, blocks, block_count=height, record_count=size)
    except (KeyError, TypeError) as e:
        raise InputError(f"{url}: a block is not shaped as GET /v1/blocks/{{height}} answers: {e}", code="bad_block") from e


def bundle_proof_doc(path: str | Path, record_id: str, sets: ValidatorSets) -> dict[str, Any]:
    """An inclusion proof of ``record_id`` against the bundle's last block, in the shape
    of ``ledger.proofs.proof_doc``: the log is rebuilt from the record ids,
    as a bundle holds no Merkle nodes; the membership history comes from the bundle's
    blocks and ``sets``, a ``MemoryReader`` of the bundle (``ledger.light.membership_doc``).
    The caller verifies it (``verify_proof_doc``)."""
    leaves: list[bytes] = []
    index: int | None = None
    blocks: dict[int, dict[str, Any]] = {}  # the headers and certificates; their records are not kept
    last: dict[str, Any] | None = None
    for blk in BundleSource(path).block_dicts():
        try:
            for env in blk["records"]:
                rid = envelope_id(env)
                if rid == record_id:
                    index = len(leaves)
                leaves.append(bytes.fromhex(rid))  # the record id is the leaf hash (PROTOCOL.md 4)
            blocks[blk["header"]["height"]] = {"header": blk["header"], "certificate": blk["certificate"]}
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{path}: a block is not shaped as a bundle line: {e}", code="bad_bundle") from e
        last = blk
    if index is None or last is None:
        raise InputError(f"no committed record {record_id} in {path}", code="not_found")

    def block_at(h: int) -> tuple[Header, str, Certificate] | None:
        b = blocks.get(h)
        if b is None:
            return None
        header = Header.from_dict(b["header"])
        return header, header.hash, Certificate.from_dict(b["certificate"])

    nodes = merkle.MemoryNodes(leaves)
    return {
        "record": record_id,
        "index": index,
        "tree_size": len(leaves),
        "path": [h.hex() for h in merkle.inclusion_proof(index, len(leaves), nodes.get_nodes)],
        "checkpoint": {k: last.get(k) for k in ("header", "hash", "certificate")},
        "membership": membership_doc(sets, block_at, last["header"]["height"]),
    }


class BundleSource:
    """An audit ``ChainSource`` (``ledger.audit``) over a bundle file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"no such bundle file: {self.path}", code="no_such_file")
        self._findings: list[Finding] = []
        with open(self.path, "rb") as f:
            first = f.readline()
        try:
            head = orjson.loads(first)
            self._lines = True
        except orjson.JSONDecodeError:
            head = self._whole()  # a single JSON object over several lines
            self._lines = False
        if type(head) is not dict or head.get("format") != FORMAT:
            raise InputError(f"{self.path} is not a {FORMAT} bundle (no format line)", code="bad_bundle")
        for k in ("genesis",):
            if k not in head:
                raise InputError(f"{self.path}: bundle head has no {k!r}", code="bad_bundle")
        self._head = head

    def _whole(self) -> Any:
        try:
            with open(self.path, "rb") as f:
                return json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{self.path} is neither JSON Lines nor JSON: {e}", code="bad_bundle") from e

    # ChainSource ---------------------------------------------------------------------------
    def genesis_doc(self) -> Any:
        return self._head["genesis"]

    def claimed_chain_id(self) -> str | None:
        cid = self._head.get("chain_id")
        return cid if isinstance(cid, str) else None

    def totals(self) -> tuple[int, int]:
        if self._lines:
            b, r = self._head.get("blocks"), self._head.get("records")
            return (b if type(b) is int else 0, r if type(r) is int else 0)
        blocks = self._head.get("blocks") or []
        return len(blocks), sum(len(b.get("records", ())) for b in blocks if isinstance(b, dict))

    def block_dicts(self) -> Iterator[dict[str, Any]]:
        """The block objects in file order (for ``MemoryReader``)."""
        if not self._lines:
            yield from self._head.get("blocks") or []
            return
        with open(self.path, "rb") as f:
            f.readline()
            for n, line in enumerate(f, start=2):
                if not line.strip():
                    continue
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise InputError(f"{self.path} line {n}: not JSON: {e}", code="bad_bundle") from e

    def blocks(self) -> Iterator[SourceBlock]:
        self._findings = []
        n_blocks = n_records = 0
        for pos, blk in enumerate(self._iter_safe(), start=1):
            if type(blk) is not dict:
                self._findings.append(Finding("bundle", f"block entry {pos} is not an object"))
                continue
            header = blk.get("header")
            stated = header.get("height") if isinstance(header, dict) else None
            height = stated if type(stated) is int else pos
            recs = blk.get("records")
            if type(recs) is not list:
                self._findings.append(Finding("bundle", "block has no records array", height))
                recs = []
            try:
                if blk.get("hash") != Header.from_dict(header).hash:
                    self._findings.append(Finding("bundle", f"stated block hash {str(blk.get('hash'))[:16]}… is not the header's hash", height))
            except LedgerError:
                pass  # the audit reports the malformed header itself
            n_blocks += 1
            n_records += len(recs)
            yield SourceBlock(height, header, blk.get("certificate"), [(None, None, env) for env in recs])
        if self._lines and (n_blocks, n_records) != self.totals():
            b, r = self.totals()
            self._findings.append(Finding("bundle", f"bundle head announces {b} blocks and {r} records; it holds {n_blocks} and {n_records} (truncated?)"))

    def _iter_safe(self) -> Iterator[Any]:
        try:
            yield from self.block_dicts()
        except InputError as e:
            self._findings.append(Finding("bundle", e.message))

    def structure(self) -> Iterator[Finding]:
        yield from self._findings

    def consistency_proof(self, first: int, second: int) -> list[bytes] | None:
        return None  # a bundle holds no Merkle nodes: the audit recomputes roots instead
