"""The log's Merkle tree: RFC 9162 section 2.1, over leaf hashes.

In provledger every leaf hash is a record id, already ``SHA-256(0x00 || JCS(envelope))``
(PROTOCOL.md 3 and 4), so everything here works on 32-byte leaf hashes, never on leaf data.

Storage model. A *perfect aligned subtree* is keyed ``(level, index)`` and covers the leaf
hashes ``[index * 2**level, (index + 1) * 2**level)``; level 0 are the leaf hashes
themselves. Every such node is written once, when it becomes complete (:func:`new_nodes`),
and never changes afterwards. A store is anything with a batched read::

    get_nodes(keys: list[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]

Roots and proofs for any past tree size are then assembled from O(log n) stored nodes read
in ONE ``get_nodes`` call: the keys are computed first (they depend only on index and sizes),
fetched, then folded. The non-perfect subtree on the right edge of a tree that RFC 9162
hashes as one node is folded from its perfect parts; the log is never rehashed.

Verification (:func:`verify_inclusion`, :func:`verify_consistency`) follows the numbered
steps of RFC 9162 2.1.3.2 and 2.1.4.2 and raises :class:`~ledger.errors.ProofError`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeAlias

from ledger.errors import InputError, ProofError, StorageError

__all__ = [
    "EMPTY_ROOT",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "Accumulator",
    "GetNodes",
    "MemoryNodes",
    "NodeKey",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "new_nodes",
    "node_hash",
    "root",
    "root_at",
    "verify_consistency",
    "verify_inclusion",
]

# RFC 9162 2.1.1: domain separation between leaves and interior nodes (second preimages).
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
# RFC 9162 2.1.1: MTH({}) = HASH(), the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32

NodeKey: TypeAlias = tuple[int, int]
"""``(level, index)`` of a perfect aligned subtree."""
GetNodes: TypeAlias = Callable[[list[NodeKey]], Mapping[NodeKey, bytes]]
"""A store's batched node read: one call for all keys; a key it lacks is left out."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 2.1.1: ``MTH({d(0)}) = HASH(0x00 || d(0))``."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: an interior node, ``HASH(0x01 || left || right)``."""
    return _sha256(NODE_PREFIX + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH over ``leaves`` (leaf hashes), computed bottom-up in one pass.

    The split point of MTH is the largest power of two smaller than n, which is exactly
    what folding the right-edge perfect subtrees from right to left produces.
    """
    acc = Accumulator()
    append = acc.append
    for leaf in leaves:
        append(leaf)
    return acc.root()


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Fold perfect subtree roots, given left to right, into the MTH of their union.

    RFC 9162 2.1.1: MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])) with k the largest
    power of two < n; for a range cut into decreasing aligned powers of two that is the
    right-to-left fold below.
    """
    acc = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        acc = _sha256(NODE_PREFIX + hashes[i] + acc).digest()
    return acc


def _range_keys(start: int, end: int) -> list[NodeKey]:
    """The perfect aligned subtrees covering ``[start, end)``, left to right.

    Valid when ``start`` is a multiple of a power of two >= ``end - start`` (the
    case for every range this module asks about): the cut follows the bits of the width,
    high to low.
    """
    keys: list[NodeKey] = []
    width = end - start
    pos = start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            keys.append((level, pos >> level))
            pos += 1 << level
    return keys


def _fetch(get_nodes: GetNodes, keys: list[NodeKey]) -> list[bytes]:
    """One batched read; a missing node is a storage fault, not a proof failure."""
    if not keys:
        return []
    got = get_nodes(keys)
    try:
        return [got[k] for k in keys]
    except KeyError as e:
        raise StorageError(
            f"Merkle node (level, index)={e.args[0]} is missing from the store"
        ) from e


def _path_plan(level: int, index: int, size: int) -> tuple[list[NodeKey], int, int]:
    """Keys of the audit path of node ``(level, index)`` in the tree of ``size`` leaves.

    Returns ``(keys, at, width)``: the path, bottom-up, is ``keys`` in order except that
    ``keys[at:at + width]`` are the perfect parts of ONE right-edge sibling that RFC 9162
    hashes as a single non-perfect subtree (``width`` 0: there is none).

    Levels below ``inner`` are where the node and the tree's last leaf part ways: their
    siblings are complete, except possibly the highest, on the right edge. Above ``inner``
    the node lies on the right edge and RFC 9162's unbalanced split gives it a left
    sibling exactly where the node's index has a 1 bit (RFC 9162 2.1.3.1, PATH).
    """
    last = (size - 1) >> level
    inner = (index ^ last).bit_length()
    keys: list[NodeKey] = [(level + j, (index >> j) ^ 1) for j in range(inner - 1)]
    at = len(keys)
    width = 0
    if inner:
        top = level + inner - 1
        start = ((index >> (inner - 1)) ^ 1) << top
        # The sibling at the top inner level is always to the right and may be cut
        # short by the end of the tree; it is then folded from its perfect parts.
        part = _range_keys(start, min(size, start + (1 << top)))
        keys += part
        width = len(part)
    rest = index >> inner
    j = inner
    while rest:
        if rest & 1:
            keys.append((level + j, (index >> j) ^ 1))
        rest >>= 1
        j += 1
    return keys, at, width


def _assemble(hashes: list[bytes], at: int, width: int) -> list[bytes]:
    if width <= 1:
        return hashes
    return [*hashes[:at], _fold(hashes[at : at + width]), *hashes[at + width :]]


def new_nodes(
    size: int, new_leaves: Sequence[bytes], get_nodes: GetNodes
) -> list[tuple[int, int, bytes]]:
    """Interior nodes completed by appending ``new_leaves`` to a tree of ``size`` leaves.

    Returns every ``(level, index, hash)`` with level >= 1 that becomes a complete perfect
    subtree; the caller stores them together with the level-0 leaves. Reads only the
    right-edge perfect subtrees of the old tree that get a new right sibling (at most
    log2(size) + 1 nodes) in one ``get_nodes`` call.
    """
    if size < 0:
        raise InputError(f"tree size must be >= 0, got {size}")
    count = len(new_leaves)
    if not count:
        return []
    end = size + count
    # The old right edge: one perfect subtree per 1 bit of size (RFC 9162 2.1.1's split).
    # Only those whose right sibling completes within ``end`` are needed; they are the
    # lowest ones, i.e. the top of the stack below.
    need: list[NodeKey] = []
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1 and ((size >> level) + 1) << level <= end:
            need.append((level, (size >> level) - 1))
    stack = _fetch(get_nodes, need)
    out: list[tuple[int, int, bytes]] = []
    pos = size
    for leaf in new_leaves:
        h = leaf
        idx = pos
        level = 0
        while idx & 1:  # a right child: its left sibling is on the stack, the parent completes
            h = _sha256(NODE_PREFIX + stack.pop() + h).digest()
            idx >>= 1
            level += 1
            out.append((level, idx, h))
        stack.append(h)
        pos += 1
    return out


def root_at(size: int, get_nodes: GetNodes) -> bytes:
    """RFC 9162 MTH of the first ``size`` leaves, from O(log n) stored perfect subtrees."""
    if size < 0:
        raise InputError(f"tree size must be >= 0, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return _fold(_fetch(get_nodes, _range_keys(0, size)))


def inclusion_proof(index: int, size: int, get_nodes: GetNodes) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(index, D[size]), bottom-up, from stored perfect subtrees.

    One ``get_nodes`` call for at most ~2*log2(size) keys; the only hashing is folding the
    right-edge non-perfect sibling, if there is one.
    """
    if not 0 <= index < size:
        raise InputError(f"leaf index {index} is out of range for tree size {size}")
    keys, at, width = _path_plan(0, index, size)
    return _assemble(_fetch(get_nodes, keys), at, width)


def consistency_proof(first: int, second: int, get_nodes: GetNodes) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(first, D[second]) from stored perfect subtrees.

    RFC 9162 defines PROOF only for 0 < first < second; for ``first == 0`` and
    ``first == second`` this returns the empty path, which :func:`verify_consistency`
    accepts (see there).

    PROOF(m, D[n]) is the subtree ``(level, index)`` that ends the old tree (level = the
    number of trailing zero bits of m), unless m is a power of two and that subtree is the
    old tree itself, followed by that subtree's audit path in the new tree.
    """
    if not 0 <= first <= second:
        raise InputError(
            f"consistency needs 0 <= first <= second, got first={first}, second={second}"
        )
    if first == 0 or first == second:
        return []
    level = (first & -first).bit_length() - 1
    index = (first - 1) >> level
    keys, at, width = _path_plan(level, index, second)
    if index:  # first is not a power of two: SUBPROOF's b flag is false, MTH(D[m]) is included
        keys.insert(0, (level, index))
        at += 1
    return _assemble(_fetch(get_nodes, keys), at, width)


def _inclusion_path_len(level: int, index: int, size: int) -> int:
    last = (size - 1) >> level
    inner = (index ^ last).bit_length()
    return inner + (index >> inner).bit_count()


def _check_hash(name: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise ProofError(f"{name} must be a {HASH_SIZE}-byte SHA-256 digest, got {got}")


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """Check an RFC 9162 inclusion proof (2.1.3.2); raise ProofError saying what is wrong."""
    _check_hash("leaf hash", leaf)
    _check_hash("root", root)
    for i, p in enumerate(path):
        _check_hash(f"path[{i}]", p)
    # 1. leaf_index must be < tree_size.
    if not (isinstance(index, int) and isinstance(size, int)) or not 0 <= index < size:
        raise ProofError(
            f"leaf index {index} is out of range for tree size {size}", index=index, size=size
        )
    # The path length is fixed by (index, size); say so rather than "root mismatch".
    want = _inclusion_path_len(0, index, size)
    if len(path) != want:
        raise ProofError(
            f"inclusion path for leaf {index} of {size} must have {want} hashes, got {len(path)}",
            index=index,
            size=size,
        )
    # 2. Set fn to leaf_index and sn to tree_size - 1.  3. Set r to the leaf hash.
    fn, sn, r = index, size - 1, leaf
    # 4. For each p in inclusion_path ...
    for p in path:
        if sn == 0:  # cannot happen after the length check; kept as RFC 9162 states it
            raise ProofError("inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 and r must equal the root.
    if sn != 0:
        raise ProofError(f"inclusion path for leaf {index} of {size} is too short")
    if not hmac.compare_digest(r, root):
        raise ProofError(
            f"inclusion proof for leaf {index} of {size} does not lead to the root "
            f"(computed {r.hex()}, expected {root.hex()})",
            index=index,
            size=size,
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """Check an RFC 9162 consistency proof (2.1.4.2); raise ProofError saying what is wrong.

    RFC 9162's algorithm covers 0 < first < second. The other cases are decided here:

    - ``first == second``: consistent exactly when the path is empty and the roots are equal.
    - ``first == 0``: the empty tree is a prefix of every tree, so this holds with an empty
      path and ``first_root == EMPTY_ROOT`` (MTH of no leaves, RFC 9162 2.1.1), whatever
      ``second_root`` is; a non-empty path is rejected.
    - ``first > second`` or negative sizes are rejected.
    """
    _check_hash("first root", first_root)
    _check_hash("second root", second_root)
    for i, p in enumerate(path):
        _check_hash(f"path[{i}]", p)
    if not (isinstance(first, int) and isinstance(second, int)) or not 0 <= first <= second:
        raise ProofError(
            f"consistency needs 0 <= first <= second, got first={first}, second={second}"
        )
    if first == 0 or first == second:
        if path:
            raise ProofError(
                f"consistency path from size {first} to {second} must be empty, "
                f"got {len(path)} hashes"
            )
        if first == 0 and not hmac.compare_digest(first_root, EMPTY_ROOT):
            raise ProofError("the root of the empty tree must be SHA-256 of the empty string")
        if first == second and not hmac.compare_digest(first_root, second_root):
            raise ProofError(f"two roots for the same tree size {first} differ")
        return
    level = (first & -first).bit_length() - 1
    index = (first - 1) >> level
    want = (1 if index else 0) + _inclusion_path_len(level, index, second)
    # 1. An empty consistency_path fails (covered by the exact length check).
    if len(path) != want:
        raise ProofError(
            f"consistency path from size {first} to {second} must have {want} hashes, got {len(path)}",
            first=first,
            second=second,
        )
    # 2. If first is an exact power of 2, prepend first_hash to the path.
    hashes = [first_root, *path] if first & (first - 1) == 0 else list(path)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, right-shift fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value of the path.
    fr = sr = hashes[0]
    # 6. For each subsequent value c ...
    for c in hashes[1:]:
        if sn == 0:
            raise ProofError(f"consistency path from size {first} to {second} is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(NODE_PREFIX + c + fr).digest()
            sr = _sha256(NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # 7. fr must equal first_hash, sr second_hash, and sn must be 0.
    if sn != 0:
        raise ProofError(f"consistency path from size {first} to {second} is too short")
    if not hmac.compare_digest(fr, first_root):
        raise ProofError(
            f"consistency proof does not lead to the root of size {first} "
            f"(computed {fr.hex()}, expected {first_root.hex()})",
            first=first,
            second=second,
        )
    if not hmac.compare_digest(sr, second_root):
        raise ProofError(
            f"consistency proof does not lead to the root of size {second} "
            f"(computed {sr.hex()}, expected {second_root.hex()})",
            first=first,
            second=second,
        )


class MemoryNodes:
    """A dict-backed node store: for tests and for the offline auditor's bundles.

    ``nodes`` maps ``(level, index)`` to hash; ``append`` stores the leaf hashes at level 0
    and the interior nodes :func:`new_nodes` reports.
    """

    __slots__ = ("nodes", "size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.nodes: dict[NodeKey, bytes] = {}
        self.size = 0
        leaves = list(leaf_hashes)
        if leaves:
            self.append(leaves)

    def __len__(self) -> int:
        return self.size

    def get_nodes(self, keys: list[NodeKey]) -> dict[NodeKey, bytes]:
        nodes = self.nodes
        return {k: nodes[k] for k in keys if k in nodes}

    def append(self, leaf_hashes: Sequence[bytes]) -> int:
        """Append leaf hashes; returns the new size."""
        made = new_nodes(self.size, leaf_hashes, self.get_nodes)
        nodes = self.nodes
        for i, h in enumerate(leaf_hashes, self.size):
            nodes[(0, i)] = h
        for level, index, h in made:
            nodes[(level, index)] = h
        self.size += len(leaf_hashes)
        return self.size

    def root(self, size: int | None = None) -> bytes:
        """Root of the first ``size`` leaves (default: all)."""
        n = self.size if size is None else size
        if not 0 <= n <= self.size:
            raise InputError(f"tree size {n} is beyond the {self.size} leaves stored")
        return root_at(n, self.get_nodes)


class Accumulator:
    """Incremental RFC 9162 root in O(log n) memory (a "compact range" of the right edge).

    Holds one hash per 1 bit of ``size``: the perfect subtrees RFC 9162's split cuts the
    tree into. ``append`` costs one SHA-256 per completed subtree, amortized one per leaf.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        stack = self._stack
        h = leaf
        n = self.size
        while n & 1:
            h = _sha256(NODE_PREFIX + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.size += 1

    def append_nodes(self, leaf: bytes) -> list[bytes]:
        """Append one leaf hash and return the perfect subtrees it completes, bottom-up:
        the leaf itself (level 0, index ``size``) and one parent per level above it
        (level j, index ``size >> j``), i.e. the rows :func:`new_nodes` would store."""
        stack = self._stack
        h = leaf
        n = self.size
        out = [h]
        while n & 1:
            h = _sha256(NODE_PREFIX + stack.pop() + h).digest()
            out.append(h)
            n >>= 1
        stack.append(h)
        self.size += 1
        return out

    def root(self) -> bytes:
        """RFC 9162 MTH of everything appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        return _fold(self._stack)
