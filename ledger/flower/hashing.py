"""The ``weights_hash`` of a model's arrays, exactly as docs/flower.md section 2 specifies it.

One function for every holder of weights: a Flower ``ArrayRecord``, a list of numpy
arrays, a mapping of names to arrays or tensors (a PyTorch ``state_dict``: anything with
``.detach().cpu().numpy()`` or ``.numpy()``), and a safetensors file. Client and server
both call it, so the hash a client signs is recomputed by the server from the arrays it
received.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["WEIGHTS_TAG", "named_arrays", "weights_hash", "weights_hash_file"]

WEIGHTS_TAG = b"provledger/weights/v1\n"  # docs/flower.md 2: the domain tag


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def _lp(b: bytes) -> bytes:
    """docs/flower.md 2: a length-prefixed byte string (8-byte big-endian length)."""
    return _u64(len(b)) + b


def _as_numpy(value: Any, name: str) -> np.ndarray[Any, Any]:
    """An ndarray from a numpy array, a Flower ``Array`` (``.numpy()``) or a tensor
    (``.detach().cpu().numpy()``), without importing any framework."""
    if isinstance(value, np.ndarray):
        arr = value
    elif hasattr(value, "detach"):
        arr = value.detach().cpu().numpy()
    elif hasattr(value, "numpy"):
        arr = value.numpy()
    else:
        arr = np.asarray(value)
    if not isinstance(arr, np.ndarray) or arr.dtype.hasobject or arr.dtype.fields is not None:
        raise InputError(f"weights {name!r}: not a numeric array", code="bad_weights")
    return arr


def named_arrays(weights: Any) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """``(name, array)`` pairs of ``weights``: a mapping (``ArrayRecord``, ``state_dict``,
    dict) keeps its names; a list or tuple of arrays is named ``"0"``, ``"1"``, ...
    (the names Flower's ``ArrayRecord(list)`` gives)."""
    if isinstance(weights, Mapping):
        items: Iterable[tuple[Any, Any]] = weights.items()
    elif isinstance(weights, list | tuple):
        items = ((str(i), w) for i, w in enumerate(weights))
    else:
        raise InputError("weights: expected a mapping of names to arrays or a list of arrays", code="bad_weights")
    out = []
    for name, value in items:
        if type(name) is not str:
            raise InputError(f"weights: array name {name!r} is not a string", code="bad_weights")
        out.append((name, _as_numpy(value, name)))
    return out


def weights_hash(weights: Any) -> str:
    """docs/flower.md 2: SHA-256 over the tag, the number of arrays, then for each array in
    the order of its UTF-8 name: the name, the little-endian dtype string, the shape and
    the little-endian C-order bytes, each length-prefixed. Lowercase hex."""
    arrays = named_arrays(weights)
    encoded = sorted(((name.encode("utf-8"), arr) for name, arr in arrays), key=lambda x: x[0])
    for a, b in itertools.pairwise(encoded):
        if a[0] == b[0]:
            raise InputError(f"weights: array name {a[0].decode()!r} appears twice", code="bad_weights")
    h = hashlib.sha256(WEIGHTS_TAG)
    h.update(_u64(len(encoded)))
    for name, arr in encoded:
        le = arr.dtype.newbyteorder("<")  # '|' dtypes (one byte, bool) are unchanged
        data = arr.astype(le, copy=False)  # keeps a 0-d array 0-d (ascontiguousarray would not)
        h.update(_lp(name))
        h.update(_lp(le.str.encode("ascii")))
        h.update(_u64(data.ndim))
        for dim in data.shape:
            h.update(_u64(dim))
        h.update(_lp(data.tobytes(order="C")))
    return h.hexdigest()


def weights_hash_file(path: str | os.PathLike[str]) -> str:
    """``weights_hash`` of the tensors in a safetensors file (read with ``safetensors.numpy``;
    needs the ``safetensors`` package)."""
    try:
        from safetensors.numpy import load_file
    except ImportError as e:  # pragma: no cover - part of the flower extra
        raise InputError("hashing a safetensors file needs the safetensors package", code="missing_dependency") from e
    return weights_hash(load_file(os.fspath(path)))
