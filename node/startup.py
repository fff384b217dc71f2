"""What a node checks in its database before it trusts it (docs/protocol.md 6, "Start-up").

The node extends the chain from its head: the next block's ``prev`` is the head's hash, its
``log_root`` is folded from the stored Merkle frontier, its rules read the derived tables
and the record columns. ``check_store`` makes each of those agree with the certified head
before the node opens its port:

1. the head block hashes to its stored hash and carries a valid commit certificate;
2. the stored frontier (the right-edge perfect subtrees) folds to the head's ``log_root``;
3. one pass over the log: every stored envelope hashes to its id, the record ids give the
   head's ``log_root``, the indexed columns (type, signer, nonce, dataset, model) say what
   the envelope says, and the records are replayed into the state they give;
4. the derived tables are compared with that state row by row; if they differ they are
   rewritten from it, with one log line naming the first difference.

A failure of 1-3 is a ``VerificationError`` with one line: the node refuses to start (exit 1,
as an audit of that file would); the signatures and every older block are the audit's to check (``provledger audit``).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3

import orjson

from ledger import merkle
from ledger.blocks import verify_certificate
from ledger.errors import LedgerError, VerificationError
from ledger.records import Record
from ledger.state import ChainState
from ledger.store import Store, compare_derived, derived_rows, read_derived

__all__ = ["check_store"]

log = logging.getLogger("node.startup")


def _refuse(store: Store, what: str) -> VerificationError:
    return VerificationError(f"{store.path}: {what}; refusing to start (run `provledger audit {store.path}`)",
                        code="untrusted_database")


def check_store(store: Store) -> None:
    """Refuse a database whose ledger tables do not give the certified head; rebuild its
    derived tables from the log when they differ from a replay."""
    try:
        _check(store)
    except sqlite3.DatabaseError as e:
        raise _refuse(store, f"SQLite cannot read it: {e}") from e


def _check(store: Store) -> None:
    genesis = store.genesis
    try:
        head = store.head()
    except (LedgerError, ValueError) as e:
        raise _refuse(store, f"the head block cannot be read: {e}") from e
    size = head.header.log_size if head else 0
    root = head.header.log_root if head else merkle.EMPTY_ROOT.hex()
    if head is not None:
        h = head.header.height
        if head.header.hash != head.hash:
            raise _refuse(store, f"block {h} is stored under hash {head.hash[:16]}… but hashes to {head.header.hash[:16]}…")
        if head.header.chain != genesis.chain_id:
            raise _refuse(store, f"block {h} names another chain")
        try:
            frontier = store.root_at(size).hex()
        except LedgerError as e:
            raise _refuse(store, f"the Merkle frontier is incomplete: {e.message}") from e
        except (TypeError, AttributeError) as e:  # a stored node that is not bytes
            raise _refuse(store, f"the Merkle frontier holds a value that is not a hash: {e} (merkle table edited)") from e
        if frontier != root:
            raise _refuse(store, f"the stored Merkle frontier gives log_root {frontier[:16]}…, "
                                 f"block {h} certifies {root[:16]}… (merkle table edited)")
    state = _replay(store, size, root)
    if head is not None:
        h = head.header.height
        try:  # against the set certifying the head's height, from the replay (PROTOCOL.md 9.1)
            verify_certificate(head.certificate, chain=genesis.chain_id, height=h, block_hash=head.hash,
                               validators=[v.key for v in state.validators_at(h)])
        except LedgerError as e:
            raise _refuse(store, f"the certificate of block {h} does not verify: {e.message}") from e
    diffs = list(compare_derived(derived_rows(state), read_derived(store.reader)))
    if diffs:
        table, key, what = diffs[0]
        log.warning("derived tables differ from a replay of the log in %d row(s) (first: %s %s: %s); "
                    "rebuilt from the log", len(diffs), table, "/".join(map(str, key)), what)
        store.write_derived(state)


def _replay(store: Store, size: int, root: str) -> ChainState:
    """The state the stored records give, checking each row against its envelope and the
    record ids against the certified ``log_root`` (PROTOCOL.md 3, 4)."""
    count, lo, hi = store.reader.execute("SELECT count(*), min(idx), max(idx) FROM records").fetchone()
    if count != size or (size and (lo, hi) != (0, size - 1)):
        raise _refuse(store, f"the records table holds {count} rows at log indexes {lo}..{hi}; "
                             f"the head certifies {size} records")
    state = ChainState(store.genesis)
    acc = merkle.Accumulator()
    sha256 = hashlib.sha256
    rows = store.reader.execute(
        "SELECT idx, id, type, signer, nonce, dataset, model, envelope, height FROM records ORDER BY idx")
    idx = 0
    try:
        for idx, rid, rtype, signer, nonce, dataset, model, text, height in rows:
            if height != state.height:
                state.begin_block(height)
            data = text.encode()
            if sha256(b"\x00" + data).hexdigest() != rid:
                raise _refuse(store, f"the record at log index {idx} does not hash to its stored id")
            env = orjson.loads(data)
            body = env["body"]
            if (rtype, signer, nonce, dataset, model) != (
                    env["type"], env["signer"], env["nonce"],
                    body.get("dataset") if isinstance(body.get("dataset"), str) else None,
                    body.get("model") if rtype == "model.update" else None):
                raise _refuse(store, f"the indexed columns of the record at log index {idx} differ from its envelope")
            state.apply(Record(env, rid, data))
            acc.append(bytes.fromhex(rid))
    except VerificationError:
        raise
    except (LedgerError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _refuse(store, f"the record at log index {idx} cannot be replayed: {e}") from e
    if acc.root().hex() != root:
        raise _refuse(store, f"the stored records give log_root {acc.root().hex()[:16]}…, the head certifies "
                             f"{root[:16]}… (records edited)")
    state.begin_block(store.height())
    state.index = store
    state.settle()
    return state
