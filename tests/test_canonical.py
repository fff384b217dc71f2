"""Canonical bytes: the published RFC 8785 vectors, and the fast path against the reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import MAX_SAFE_INTEGER, RECORD_TAG, jcs, jcs_checked, jcs_part, signing_bytes


def _published_vectors() -> Path:
    """``shared/vectors/rfc8785`` beside the checkout or beside any folder above it
    (``$PROVLEDGER_VECTORS`` names another place)."""
    if os.environ.get("PROVLEDGER_VECTORS"):
        return Path(os.environ["PROVLEDGER_VECTORS"]) / "rfc8785"
    for up in Path(__file__).resolve().parents[1].parents:
        if (up / "shared" / "vectors" / "rfc8785").is_dir():
            return up / "shared" / "vectors" / "rfc8785"
    return Path(__file__).resolve().parents[2] / "shared" / "vectors" / "rfc8785"


VECTORS = _published_vectors()
NAMES = ["arrays", "french", "structures", "unicode", "values", "weird"]


@pytest.mark.parametrize("name", NAMES)
def test_published_vectors(name: str) -> None:
    if not VECTORS.exists():
        pytest.skip(f"vectors not found at {VECTORS}")
    value = json.loads((VECTORS / "input" / f"{name}.json").read_text(encoding="utf-8"))
    expected = (VECTORS / "output" / f"{name}.json").read_bytes()
    assert jcs(value) == expected, name


# Everything signed content may hold (PROTOCOL.md 1), with keys from all of Unicode.
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | _text
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=600)
@given(_json)
def test_fast_path_matches_reference(value: object) -> None:
    assert jcs(value) == rfc8785.dumps(value)


@settings(max_examples=300)
@given(st.dictionaries(_text, _json, max_size=6), st.data())
def test_parts_of_a_fast_value_encode_like_the_reference(value: dict[str, object], data: st.DataObject) -> None:
    """Record signing bytes skip the domain walk for an envelope already canonicalized on
    the fast path: any sub-dict of such a value must still encode exactly as RFC 8785."""
    whole, fast = jcs_checked(value)
    assert whole == rfc8785.dumps(value)
    keep = data.draw(st.sets(st.sampled_from(sorted(value))) if value else st.just(set()))
    part = {k: v for k, v in value.items() if k in keep}
    assert jcs_part(part, fast=fast) == rfc8785.dumps(part)


@given(st.dictionaries(_text, st.floats(allow_nan=False, allow_infinity=False), max_size=4))
def test_floats_go_to_the_reference_encoder(value: dict[str, float]) -> None:
    assert jcs(value) == rfc8785.dumps(value)


def test_supplementary_keys_sort_by_utf16_code_units() -> None:
    # U+10000 is D800 DC00 in UTF-16 and sorts before U+E000; by code point it sorts after.
    value = {"\U00010000": 1, "\ue000": 2}
    assert jcs(value) == rfc8785.dumps(value)
    assert jcs(value).index("\U00010000".encode()) < jcs(value).index("\ue000".encode())


def test_signing_bytes_are_tag_newline_jcs() -> None:
    assert signing_bytes(RECORD_TAG, {"b": 1, "a": "x"}) == b'provledger/record/v1\n{"a":"x","b":1}'
