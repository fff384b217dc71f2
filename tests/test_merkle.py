"""The log's Merkle tree (PROTOCOL.md 4): RFC 9162 roots, stored-subtree proofs, verification.

Checked three ways: the published RFC 6962 vectors of the Certificate Transparency /
transparency-dev reference implementations, a recursive transcription of the RFC 9162 2.1
definitions (MTH, PATH, PROOF) below, and pymerkle as an independent implementation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from functools import cache

import pymerkle
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import InputError, ProofError, StorageError
from ledger.merkle import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    Accumulator,
    MemoryNodes,
    NodeKey,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    new_nodes,
    node_hash,
    root,
    root_at,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------- published vectors
# The 8-leaf test tree of RFC 6962 implementations: Certificate Transparency's
# merkle_tree_test and transparency-dev/merkle testonly/constants.go (leaf inputs, hex).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_HASHES = [leaf_hash(d) for d in CT_LEAVES]
# RootHashes(): MTH of the first n leaves, n = 0..8.
CT_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
# NodeHashes(): every perfect subtree of the 8-leaf tree, by level then index.
CT_NODES = {
    (0, 0): "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    (0, 1): "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    (0, 2): "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    (0, 3): "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    (0, 4): "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    (0, 5): "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    (0, 6): "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    (0, 7): "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    (1, 0): "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    (1, 1): "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    (1, 2): "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    (1, 3): "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    (2, 0): "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    (2, 1): "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    (3, 0): "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# proof/verify_test.go inclusionProofs and testonly/reference_test.go; indices from 0 here.
CT_INCLUSION = [
    (0, 1, []),
    (0, 2, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
    (1, 2, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
# proof/verify_test.go consistencyProofs.
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hexes(path: Sequence[bytes]) -> list[str]:
    return [p.hex() for p in path]


def test_public_api_is_exact() -> None:
    assert sorted(merkle.__all__) == sorted(
        [
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
    )
    for name in merkle.__all__:
        assert hasattr(merkle, name), name


def test_rfc6962_hasher_vectors() -> None:
    # transparency-dev/merkle rfc6962/rfc6962_test.go TestRFC6962Hasher.
    assert LEAF_PREFIX == b"\x00" and NODE_PREFIX == b"\x01"
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert node_hash(b"N123", b"N456").hex() == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"


def test_published_roots_and_nodes() -> None:
    store = MemoryNodes(CT_HASHES)
    for n in range(9):
        assert root(CT_HASHES[:n]) == CT_ROOTS[n], n
        assert root_at(n, store.get_nodes) == CT_ROOTS[n], n
    assert {k: v.hex() for k, v in store.nodes.items()} == CT_NODES


def _inclusion_probes(
    index: int, size: int, path: list[bytes], rt: bytes, leaf: bytes
) -> list[tuple[str, bytes, int, int, list[bytes], bytes]]:
    """transparency-dev/merkle proof/verify_test.go corruptInclusionProof, as data."""
    probes = [
        ("index - 1", leaf, index - 1, size, path, rt),
        ("index + 1", leaf, index + 1, size, path, rt),
        ("index ^ 2", leaf, index ^ 2, size, path, rt),
        ("size * 2", leaf, index, size * 2, path, rt),
        ("size // 2", leaf, index, size // 2, path, rt),
        ("wrong leaf", leaf_hash(b"WrongLeaf"), index, size, path, rt),
        ("empty root", leaf, index, size, path, EMPTY_ROOT),
        ("random root", leaf, index, size, path, SOME_HASH),
        ("trailing garbage", leaf, index, size, [*path, b""], rt),
        ("trailing root", leaf, index, size, [*path, rt], rt),
        ("preceding garbage", leaf, index, size, [b"", *path], rt),
        ("preceding root", leaf, index, size, [rt, *path], rt),
    ]
    for i in range(len(path)):
        bad = list(path)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        probes.append((f"path[{i}] bit 3 flipped", leaf, index, size, bad, rt))
    if path:
        probes.append(("removed component", leaf, index, size, path[:-1], rt))
    if len(path) > 1:
        probes.append(("inserted component", leaf, index, size, [path[0], SOME_HASH, *path[1:]], rt))
    return probes


@pytest.mark.parametrize(("index", "size", "want"), CT_INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, want: list[str]) -> None:
    store = MemoryNodes(CT_HASHES)
    path = inclusion_proof(index, size, store.get_nodes)
    assert _hexes(path) == want
    verify_inclusion(CT_HASHES[index], index, size, path, CT_ROOTS[size])
    for desc, leaf, i, n, p, rt in _inclusion_probes(index, size, path, CT_ROOTS[size], CT_HASHES[index]):
        with pytest.raises(ProofError) as e:
            verify_inclusion(leaf, i, n, p, rt)
        assert e.value.code == "bad_proof", desc


def _consistency_probes(
    m: int, n: int, r1: bytes, r2: bytes, path: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """transparency-dev/merkle proof/verify_test.go corruptConsistencyProof, as data."""
    probes = [
        ("first - 1", m - 1, n, r1, r2, path),
        ("first + 1", m + 1, n, r1, r2, path),
        ("first ^ 2", m ^ 2, n, r1, r2, path),
        ("second * 2", m, n * 2, r1, r2, path),
        ("second // 2", m, n // 2, r1, r2, path),
        ("wrong first root", m, n, SOME_HASH, r2, path),
        ("wrong second root", m, n, r1, SOME_HASH, path),
        ("swapped roots", m, n, r2, r1, path),
        ("empty proof", m, n, r1, r2, []),
        ("trailing garbage", m, n, r1, r2, [*path, b""]),
        ("trailing root1", m, n, r1, r2, [*path, r1]),
        ("trailing root2", m, n, r1, r2, [*path, r2]),
        ("preceding garbage", m, n, r1, r2, [b"", *path]),
        ("preceding root1", m, n, r1, r2, [r1, *path]),
        ("preceding root2", m, n, r1, r2, [r2, *path]),
        ("preceding path[0]", m, n, r1, r2, [path[0], *path]),
        ("truncated", m, n, r1, r2, path[:-1]),
    ]
    for i in range(len(path)):
        bad = list(path)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((f"path[{i}] bit 4 flipped", m, n, r1, r2, bad))
    return probes


@pytest.mark.parametrize(("first", "second", "want"), CT_CONSISTENCY)
def test_published_consistency_proofs(first: int, second: int, want: list[str]) -> None:
    store = MemoryNodes(CT_HASHES)
    path = consistency_proof(first, second, store.get_nodes)
    assert _hexes(path) == want
    r1, r2 = CT_ROOTS[first], CT_ROOTS[second]
    verify_consistency(first, second, r1, r2, path)
    if not path:
        return
    for desc, m, n, a, b, p in _consistency_probes(first, second, r1, r2, path):
        with pytest.raises(ProofError):
            verify_consistency(m, n, a, b, p)
            pytest.fail(f"verified a corrupted proof: {desc}")


def test_trivial_consistency_cases() -> None:
    # RFC 9162 2.1.4.2 covers 0 < first < second; our documented choices for the rest.
    r1 = CT_ROOTS[1]
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, CT_ROOTS[5], [])
    verify_consistency(1, 1, r1, r1, [])
    bad: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (0, 0, EMPTY_ROOT, SOME_HASH, []),  # same size, different roots
        (1, 1, r1, SOME_HASH, []),
        (0, 1, SOME_HASH, r1, []),  # the empty tree has exactly one root
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # roots match, path not empty
        (0, 1, EMPTY_ROOT, r1, [EMPTY_ROOT]),
        (1, 1, r1, r1, [r1]),
        (1, 0, r1, EMPTY_ROOT, []),  # time travel to the past
        (2, 1, CT_ROOTS[2], r1, []),
        (1, 2, r1, CT_ROOTS[2], []),  # an empty path between different sizes
        (-1, 1, r1, r1, []),
    ]
    for m, n, a, b, p in bad:
        with pytest.raises(ProofError):
            verify_consistency(m, n, a, b, p)
            pytest.fail(f"verified {(m, n)}")
    store = MemoryNodes(CT_HASHES)
    assert consistency_proof(0, 8, store.get_nodes) == []
    assert consistency_proof(8, 8, store.get_nodes) == []


def test_verify_inclusion_rejects_bad_shapes_with_reasons() -> None:
    h = leaf_hash(b"data")
    verify_inclusion(h, 0, 1, [], h)  # a one-leaf tree: the root is the leaf hash
    cases: list[tuple[bytes, int, int, list[bytes], bytes, str]] = [
        (h, 0, 0, [], h, "out of range"),
        (h, 1, 1, [], h, "out of range"),
        (h, -1, 1, [], h, "out of range"),
        (h, 0, 1, [], b"", "32-byte"),
        (b"", 0, 1, [], h, "32-byte"),
        (h, 0, 2, [], h, "must have 1 hashes"),
        (h, 0, 1, [h], h, "must have 0 hashes"),
        (h, 0, 2, [h[:31]], h, "32-byte"),
        (h, 0, 1, [], SOME_HASH, "does not lead to the root"),
    ]
    for leaf, i, n, p, rt, why in cases:
        with pytest.raises(ProofError, match=why) as e:
            verify_inclusion(leaf, i, n, p, rt)
        assert e.value.code == "bad_proof"


def test_proof_requests_out_of_range_and_missing_nodes() -> None:
    store = MemoryNodes(CT_HASHES)
    for i, n in [(-1, 4), (4, 4), (0, 0)]:
        with pytest.raises(InputError):
            inclusion_proof(i, n, store.get_nodes)
    for m, n in [(-1, 3), (5, 3)]:
        with pytest.raises(InputError):
            consistency_proof(m, n, store.get_nodes)
    with pytest.raises(InputError):
        root_at(-1, store.get_nodes)
    # A size beyond what is stored is a storage fault, never a silently wrong proof.
    with pytest.raises(StorageError, match="missing"):
        inclusion_proof(0, 9, store.get_nodes)
    with pytest.raises(StorageError):
        root_at(12, store.get_nodes)
    with pytest.raises(InputError):
        store.root(9)


# ---------------------------------------------------------------- RFC 9162 2.1, transcribed
class Reference:
    """MTH, PATH and PROOF exactly as RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1 define them."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.d = list(leaves)
        self.mth = cache(self._mth)

    @staticmethod
    def _k(n: int) -> int:
        return 1 << ((n - 1).bit_length() - 1)  # the largest power of two smaller than n

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return self.d[lo]
        k = self._k(n)
        return node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = self._k(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = self._k(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


N_ROOTS = 300
N_PROOFS = 130
DATA = [b"provledger record %d" % i for i in range(N_ROOTS)]
LEAVES = [leaf_hash(d) for d in DATA]


@cache
def _pymerkle_tree() -> pymerkle.InmemoryTree:
    # pymerkle's defaults are RFC 9162's: SHA-256, 0x00 leaf and 0x01 node prefixes.
    return pymerkle.InmemoryTree.init_from_entries(DATA, algorithm="sha256")


def test_pymerkle_hashing_matches_rfc9162() -> None:
    tree = _pymerkle_tree()
    assert tree.get_leaf(1) == LEAVES[0]  # pymerkle counts leaves from one
    assert tree.hash_pair(LEAVES[0], LEAVES[1]) == node_hash(LEAVES[0], LEAVES[1])
    assert tree.get_root(0) == EMPTY_ROOT


def test_roots_every_size_against_pymerkle_and_reference() -> None:
    tree = _pymerkle_tree()
    ref = Reference(LEAVES)
    store = MemoryNodes(LEAVES)
    acc = Accumulator()
    for n in range(N_ROOTS + 1):
        want = tree.get_root(n)
        assert ref.mth(0, n) == want, n
        assert root(LEAVES[:n]) == want, n
        assert root_at(n, store.get_nodes) == want, n
        assert acc.root() == want and acc.size == n, n
        if n < N_ROOTS:
            acc.append(LEAVES[n])


def test_inclusion_every_index_and_size_against_pymerkle_and_reference() -> None:
    tree = _pymerkle_tree()
    ref = Reference(LEAVES)
    store = MemoryNodes(LEAVES[:N_PROOFS])
    for n in range(1, N_PROOFS + 1):
        rt = store.root(n)
        for i in range(n):
            path = inclusion_proof(i, n, store.get_nodes)
            assert path == ref.path(i, 0, n), (i, n)
            theirs = tree.prove_inclusion(i + 1, n)
            # pymerkle's path is [leaf hash, *RFC 9162 PATH]: compare the bytes.
            assert theirs.path == [LEAVES[i], *path], (i, n)
            verify_inclusion(LEAVES[i], i, n, path, rt)


def test_consistency_every_pair_against_reference_and_pymerkle() -> None:
    tree = _pymerkle_tree()
    ref = Reference(LEAVES)
    store = MemoryNodes(LEAVES[:N_PROOFS])
    roots = [store.root(n) for n in range(N_PROOFS + 1)]
    for n in range(1, N_PROOFS + 1):
        for m in range(1, n + 1):
            path = consistency_proof(m, n, store.get_nodes)
            want = [] if m == n else ref.subproof(m, 0, n, True)
            assert path == want, (m, n)
            verify_consistency(m, n, roots[m], roots[n], path)
            # pymerkle's consistency path is laid out differently from RFC 9162 PROOF
            # (it ends at the first new leaf), so only its verdict on our roots is compared.
            tree.prove_consistency(m, n).verify(roots[m], roots[n])


# ---------------------------------------------------------------- properties
BIG = 4096


@cache
def _big() -> tuple[MemoryNodes, list[bytes]]:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(BIG)]
    store = MemoryNodes(leaves)
    acc = Accumulator()
    roots = [acc.root()]
    for h in leaves:
        acc.append(h)
        roots.append(acc.root())
    return store, roots


def _flip(path: list[bytes], i: int, byte: int, bit: int) -> list[bytes]:
    bad = list(path)
    b = bytearray(bad[i])
    b[byte] ^= 1 << bit
    bad[i] = bytes(b)
    return bad


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(1, BIG))
def test_inclusion_property(data: st.DataObject, size: int) -> None:
    store, roots = _big()
    index = data.draw(st.integers(0, size - 1), label="index")
    leaf = store.nodes[(0, index)]
    path = inclusion_proof(index, size, store.get_nodes)
    verify_inclusion(leaf, index, size, path, roots[size])
    if path:
        i = data.draw(st.integers(0, len(path) - 1), label="element")
        byte, bit = data.draw(st.integers(0, 31), label="byte"), data.draw(st.integers(0, 7), label="bit")
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, _flip(path, i, byte, bit), roots[size])
    other = data.draw(st.integers(0, size - 1).filter(lambda j: j != index) if size > 1 else st.none())
    if other is not None:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, other, size, path, roots[size])
    # A client checking against the root of another size must fail too.
    wrong = data.draw(st.integers(index + 1, BIG), label="wrong size")
    note(f"index={index} size={size} wrong={wrong}")
    if wrong != size:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, wrong, path, roots[wrong])


@settings(max_examples=300, deadline=None)
@given(data=st.data(), second=st.integers(1, BIG))
def test_consistency_property(data: st.DataObject, second: int) -> None:
    store, roots = _big()
    first = data.draw(st.integers(1, second), label="first")
    path = consistency_proof(first, second, store.get_nodes)
    verify_consistency(first, second, roots[first], roots[second], path)
    if not path:
        assert first == second
        return
    i = data.draw(st.integers(0, len(path) - 1), label="element")
    byte, bit = data.draw(st.integers(0, 31), label="byte"), data.draw(st.integers(0, 7), label="bit")
    with pytest.raises(ProofError):
        verify_consistency(first, second, roots[first], roots[second], _flip(path, i, byte, bit))
    other = data.draw(st.integers(1, second).filter(lambda k: k != first), label="other first")
    with pytest.raises(ProofError):
        verify_consistency(other, second, roots[other], roots[second], path)
    with pytest.raises(ProofError):
        verify_consistency(second, first, roots[second], roots[first], path)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=300))
def test_accumulator_equals_mth_for_every_prefix(items: list[bytes]) -> None:
    leaves = [leaf_hash(x) for x in items]
    ref = Reference(leaves)
    acc = Accumulator()
    assert acc.root() == EMPTY_ROOT
    for n, h in enumerate(leaves, 1):
        acc.append(h)
        assert acc.size == n
        assert acc.root() == ref.mth(0, n), n
    assert root(leaves) == ref.mth(0, len(leaves))


class CountingNodes:
    """Wraps a store's get_nodes, counting calls and keys."""

    def __init__(self, inner: Callable[[list[NodeKey]], Mapping[NodeKey, bytes]]) -> None:
        self.inner = inner
        self.calls = 0
        self.keys = 0

    def __call__(self, keys: list[NodeKey]) -> Mapping[NodeKey, bytes]:
        self.calls += 1
        self.keys += len(keys)
        return self.inner(keys)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 70), max_size=25))
def test_chunked_appends_store_every_perfect_subtree(chunks: list[int]) -> None:
    store = MemoryNodes()
    leaves: list[bytes] = []
    for c in chunks:
        chunk = [leaf_hash(b"%d" % (len(leaves) + j)) for j in range(c)]
        counter = CountingNodes(store.get_nodes)
        made = new_nodes(store.size, chunk, counter)
        assert counter.calls <= 1 and counter.keys <= store.size.bit_length()
        assert store.append(chunk) == len(leaves) + c
        leaves += chunk
        assert all(store.nodes[(lv, ix)] == h for lv, ix, h in made)
    n = len(leaves)
    # Exactly the complete perfect subtrees are stored, nothing else.
    want = {(lv, ix) for lv in range(n.bit_length()) for ix in range(n >> lv)}
    assert set(store.nodes) == want
    ref = Reference(leaves)
    for k in range(n + 1):
        assert root_at(k, store.get_nodes) == ref.mth(0, k), k


# ---------------------------------------------------------------- O(log n), batched
@cache
def _large() -> MemoryNodes:
    return MemoryNodes([leaf_hash(i.to_bytes(4, "big")) for i in range(100_000)])


def _sizes_and_indices() -> list[tuple[int, int]]:
    rng = random.Random(9162)
    out = []
    for n in [1, 2, 3, 5, 64, 65, 127, 1000, 4097, 65535, 65536, 65537, 99_999, 100_000]:
        for i in {0, n - 1, n // 2, rng.randrange(n), rng.randrange(n)}:
            out.append((i, n))
    return out


@pytest.mark.parametrize(("index", "size"), _sizes_and_indices())
def test_proofs_read_log_n_nodes_in_one_batch(index: int, size: int) -> None:
    store = _large()
    bound = 2 * math.log2(size) + 2
    counter = CountingNodes(store.get_nodes)
    path = inclusion_proof(index, size, counter)
    assert counter.calls <= 1 and counter.keys <= bound, (counter.calls, counter.keys)
    verify_inclusion(store.nodes[(0, index)], index, size, path, store.root(size))

    first = index + 1
    counter = CountingNodes(store.get_nodes)
    path = consistency_proof(first, size, counter)
    assert counter.calls <= 1 and counter.keys <= bound, (counter.calls, counter.keys)
    verify_consistency(first, size, store.root(first), store.root(size), path)

    counter = CountingNodes(store.get_nodes)
    root_at(size, counter)
    assert counter.calls == 1 and counter.keys <= size.bit_length()


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=1, max_value=40))
def test_accumulator_append_nodes_are_the_stored_nodes(start: int, more: int) -> None:
    """What ``Accumulator.append_nodes`` reports, leaf by leaf, is exactly the set of nodes
    a store holds (``MemoryNodes``: the leaves and ``new_nodes``), and the root still agrees."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(start + more)]
    acc = merkle.Accumulator()
    got: dict[tuple[int, int], bytes] = {}
    for pos, leaf in enumerate(leaves):
        for level, h in enumerate(acc.append_nodes(leaf)):
            got[(level, pos >> level)] = h
    assert got == MemoryNodes(leaves).nodes
    assert acc.root() == merkle.root(leaves)
