"""``weights_hash`` (docs/flower.md 2) and ``decimal_string`` (docs/flower.md 3.1).

The hash is checked against a second, literal reading of the rule written here; the same
weights hash the same as a list, a Flower ArrayRecord, a mapping in any order, a
duck-typed tensor ``state_dict`` and a safetensors file; every part of the rule changes it.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e .[test,flower])")

import numpy as np
from flwr.app import ArrayRecord
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ledger.errors import InputError
from ledger.flower import decimal_string, weights_hash, weights_hash_file


def spec_hash(named: dict[str, np.ndarray]) -> str:
    """docs/flower.md 2, read literally."""
    out = b"provledger/weights/v1\n" + struct.pack(">Q", len(named))
    for name in sorted(named, key=lambda n: n.encode()):
        a = named[name]
        le = a.astype(a.dtype.newbyteorder("<"))
        parts = [name.encode(), le.dtype.str.encode()]
        out += b"".join(struct.pack(">Q", len(p)) + p for p in parts)
        out += struct.pack(">Q", a.ndim) + b"".join(struct.pack(">Q", d) for d in a.shape)
        data = le.tobytes(order="C")
        out += struct.pack(">Q", len(data)) + data
    return hashlib.sha256(out).hexdigest()


arrays = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.float16]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))


@given(st.dictionaries(st.text(min_size=1, max_size=8), arrays, min_size=1, max_size=4))
def test_hash_follows_the_rule(named: dict[str, Any]) -> None:
    assert weights_hash(named) == spec_hash(named)
    assert re.fullmatch("[0-9a-f]{64}", weights_hash(named))
    # Any order of the same names.
    assert weights_hash(dict(reversed(list(named.items())))) == weights_hash(named)


class FakeTensor:
    """A stand-in for a torch tensor: only ``.detach().cpu().numpy()``."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self.a


def test_same_weights_same_hash_in_every_container(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    w = {"layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "layer.bias": np.ones(3, np.float32)}
    h = weights_hash(w)
    assert weights_hash({k: FakeTensor(v) for k, v in w.items()}) == h  # a state_dict
    from flwr.app import Array

    assert weights_hash(ArrayRecord({k: Array(v) for k, v in w.items()})) == h
    save_file(w, str(tmp_path / "model.safetensors"))
    assert weights_hash_file(tmp_path / "model.safetensors") == h
    # A list is named "0", "1", ... as Flower's ArrayRecord(list) names it.
    lst = [w["layer.weight"], w["layer.bias"]]
    assert weights_hash(lst) == weights_hash(ArrayRecord(lst)) == weights_hash({"0": lst[0], "1": lst[1]})
    # Byte order and memory layout do not matter; values, dtype, shape and names do.
    assert weights_hash({k: v.astype(v.dtype.newbyteorder(">")) for k, v in w.items()}) == h
    assert weights_hash({**w, "layer.weight": np.asfortranarray(w["layer.weight"])}) == h
    changed = [
        {**w, "layer.bias": np.array([1, 1, 2], np.float32)},
        {**w, "layer.bias": np.ones(3, np.float64)},
        {**w, "layer.weight": w["layer.weight"].reshape(4, 3)},
        {"layer.w": w["layer.weight"], "layer.bias": w["layer.bias"]},
        {"layer.weight": w["layer.weight"]},
    ]
    assert len({h, *(weights_hash(c) for c in changed)}) == len(changed) + 1


def test_not_arrays_are_refused() -> None:
    for bad in ({"a": np.array([object()])}, {1: np.zeros(2)}, "weights"):
        with pytest.raises(InputError) as info:
            weights_hash(bad)
        assert info.value.code == "bad_weights"


DEC = re.compile("-?(0|[1-9][0-9]{0,29})(\\.[0-9]{1,30})?")


@given(st.floats(min_value=-1e29, max_value=1e29, allow_nan=False))
def test_decimal_string_is_the_float_exactly(x: float) -> None:
    s = decimal_string(x)
    assert DEC.fullmatch(s), s
    if abs(x) >= 1e-14 or x == 0:  # at most 30 fraction digits: tinier floats are rounded
        assert float(s) == x


def test_decimal_string_refuses_non_numbers() -> None:
    for bad in (float("nan"), float("inf"), True):
        with pytest.raises(InputError):
            decimal_string(bad)
    assert decimal_string(1e-5) == "0.00001" and decimal_string(2.0) == "2" and decimal_string(0.0) == "0"
