"""The one reading of times and decimals (docs/protocol.md 2), at every place they are read:
record ``ts``, block header ``time``, genesis ``created``, record decimals, genesis policy."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from factory import TS, Consortium
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.blocks import Header, make_header
from ledger.errors import InputError, RecordFormError
from ledger.genesis import parse_genesis
from ledger.governance import parse_action
from ledger.records import make_record, parse_record
from ledger.values import decimal_str, parse_decimal, parse_time

C = Consortium()

BAD_TIMES = [
    "2026-13-45T25:61:61Z",  # no such month, day, hour, minute or second
    "2026-02-30T00:00:00Z",  # no February 30
    "2025-02-29T00:00:00Z",  # 2025 is no leap year
    "2026-04-31T00:00:00Z",
    "2026-11-21T24:00:00Z",
    "2026-11-21T12:00:60Z",  # leap seconds are not written
    "0000-01-01T00:00:00Z",
    "\uff12\uff10\uff12\uff16-11-21T12:00:00Z",  # full-width digits
    "2026-11-2\u0661T12:00:00Z",  # an Arabic-Indic digit
    "2026-11-21T12:00:00Z\n",  # a trailing newline
    "\n2026-11-21T12:00:00Z",
    " 2026-11-21T12:00:00Z",
    "2026-11-21T12:00:00z",
    "2026-11-21T12:00:00.Z",
    "2026-11-21T12:00:00.1234567890Z",
    "2026-11-21t12:00:00Z",
    "",
]
GOOD_TIMES = ["2026-11-21T12:00:00Z", "2024-02-29T23:59:59Z", "2026-11-21T12:00:00.123456789Z", "0001-01-01T00:00:00Z"]
BAD_DECIMALS = [
    "1\u0660",  # "1" and an Arabic-Indic zero: not ten
    "\uff11",  # full-width one
    "0.\u0665",
    "0.5\n",
    "1\n",
    " 1",
    "1e3",
    "+1",
    "01",
    ".5",
    "5.",
    "-",
    "",
    "1" * 31,
    "0." + "1" * 31,
]


# --- the parsers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", BAD_TIMES)
def test_parse_time_refuses(text: str) -> None:
    assert parse_time(text) is None


@pytest.mark.parametrize("text", GOOD_TIMES)
def test_parse_time_accepts(text: str) -> None:
    t = parse_time(text)
    assert t is not None and t.tzinfo is UTC and t.replace(tzinfo=None).isoformat(timespec="seconds") == text[:19]


def test_parse_time_refuses_non_strings() -> None:
    for v in (None, 1700000000, ["2026-11-21T12:00:00Z"], b"2026-11-21T12:00:00Z"):
        assert parse_time(v) is None


@pytest.mark.parametrize("text", BAD_DECIMALS)
def test_parse_decimal_refuses(text: str) -> None:
    assert parse_decimal(text) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789-T:.Z\n\u0661\uff10 "), max_size=32) | st.text(max_size=32))
def test_every_accepted_time_is_ascii_and_round_trips_through_datetime(text: str) -> None:
    t = parse_time(text)
    if t is not None:
        assert text.isascii() and text.endswith("Z") and "\n" not in text
        assert datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC) == t.replace(microsecond=0)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(0, 9),
)
def test_every_real_time_is_accepted(when: datetime, places: int) -> None:
    frac = f".{when.microsecond:06d}000"[: places + 1] if places else ""
    text = when.isoformat(timespec="seconds") + frac + "Z"
    t = parse_time(text)
    assert t is not None and t.replace(microsecond=0) == when.replace(microsecond=0, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789-.\n\u0660\u0661\uff11e+ "), max_size=40) | st.text(max_size=12))
def test_every_accepted_decimal_is_ascii_and_its_exact_fraction(text: str) -> None:
    value = parse_decimal(text)
    if value is not None:
        assert text.isascii() and text.strip() == text
        assert value == Fraction(text)
        # decimal_str writes the same exact value back (in its shortest form).
        assert Fraction(decimal_str(value)) == value and parse_decimal(decimal_str(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**30) + 1, 10**30 - 1), st.integers(0, 30))
def test_every_decimal_in_range_is_read_exactly(units: int, places: int) -> None:
    digits = str(abs(units)).rjust(places + 1, "0")
    text = ("-" if units < 0 else "") + (digits[:-places] + "." + digits[-places:] if places else digits)
    if len(digits) - places > 30 or (digits[0] == "0" and len(digits) - places > 1):
        return  # beyond the form's 30 integer digits, or a leading zero
    assert parse_decimal(text) == Fraction(units, 10**places)
    assert decimal_str(Fraction(units, 10**places)) == (text.rstrip("0").rstrip(".") if places else text)


def test_decimal_str_refuses_a_fraction_with_no_decimal_expansion() -> None:
    with pytest.raises(ValueError):
        decimal_str(Fraction(1, 3))


# --- every place a time is read ------------------------------------------------------------------
def _header(time: str) -> dict[str, Any]:
    return make_header(chain=C.chain_id, height=1, prev="00" * 32, time=time, proposer=C.validators[0].public,
                       count=0, log_size=0, log_root="00" * 32, next_validators="00" * 32).to_dict()


@pytest.mark.parametrize("text", BAD_TIMES)
def test_bad_time_is_refused_in_a_record_a_header_and_the_genesis(text: str) -> None:
    env = make_record(C.alice, C.chain_id, "dataset.contribute", C.dataset_body("d"), ts=text or TS)
    env["ts"] = text  # signed or not, the form is checked first
    with pytest.raises(RecordFormError) as ei:
        parse_record(env)
    assert ei.value.code == "bad_time" and ei.value.details["field"] == "ts"
    with pytest.raises(InputError) as hi:
        Header.from_dict(_header(text))
    assert hi.value.code == "bad_header" and hi.value.details["field"] == "header.time"
    doc = copy.deepcopy(C.doc)
    doc["created"] = text
    with pytest.raises(InputError) as gi:
        parse_genesis(doc)
    assert gi.value.code == "bad_genesis" and gi.value.details["field"] == "created"


@pytest.mark.parametrize("text", GOOD_TIMES)
def test_good_time_is_accepted_in_a_record_a_header_and_the_genesis(text: str) -> None:
    parse_record(make_record(C.alice, C.chain_id, "dataset.contribute", C.dataset_body("d"), ts=text))
    assert Header.from_dict(_header(text)).time == text
    doc = copy.deepcopy(C.doc)
    doc["created"] = text
    parse_genesis(doc)


# --- every place a decimal is read ---------------------------------------------------------------
DECIMAL_FIELDS = [
    ("dataset.contribute", C.dataset_body("d", budget=("1", "0.5")), ("privacy_budget", "epsilon")),
    ("dataset.contribute", C.dataset_body("d", budget=("1", "0.5")), ("privacy_budget", "delta")),
    ("annotation.event", C.annotation_body("d"), ("quality",)),
    ("model.update", C.update_body("m", 0, inputs=[("d", 1, "0.1", "0")]), ("inputs", 0, "epsilon")),
    ("model.update", C.update_body("m", 0, inputs=[("d", 1, "0.1", "0")]), ("inputs", 0, "delta")),
    ("model.update", C.update_body("m", 0, inputs=[("d", 1, "0.1", "0")]), ("metrics", "loss")),
    ("policy.set", {"attribution": {"data": "0.5", "annotation": "0.25", "training": "0.25"}}, ("attribution", "data")),
]


@pytest.mark.parametrize("text", ["1\u0660", "0.5\n", "\uff11", "0.\u0665"])
@pytest.mark.parametrize(("rtype", "body", "path"), DECIMAL_FIELDS, ids=[f"{t}:{'.'.join(map(str, p))}" for t, _, p in DECIMAL_FIELDS])
def test_bad_decimal_is_refused_in_every_record_field(rtype: str, body: dict[str, Any], path: tuple[Any, ...], text: str) -> None:
    body = copy.deepcopy(body)
    node: Any = body
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = text
    with pytest.raises(RecordFormError) as ei:
        parse_record(make_record(C.alice, C.chain_id, rtype, body))
    assert ei.value.code == "bad_decimal"


@pytest.mark.parametrize("text", ["1\u0660", "0.5\n", "\uff10.5", "0.\u0665"])
def test_bad_decimal_is_refused_in_the_genesis_policy(text: str) -> None:
    doc = copy.deepcopy(C.doc)
    doc["policy"]["attribution"]["data"] = text
    with pytest.raises(InputError) as ei:
        parse_genesis(doc)
    assert ei.value.code == "bad_genesis" and "policy.attribution" in ei.value.message


def test_policy_pools_are_summed_exactly() -> None:
    """Three pools whose sum a 28-digit Decimal context rounds to 1 do not sum to 1."""
    pools = {"data": "0.333333333333333333333333333333", "annotation": "0.333333333333333333333333333333",
             "training": "0.333333333333333333333333333334"}
    parse_record(make_record(C.admin_a, C.chain_id, "policy.set", {"attribution": pools}))
    pools["training"] = "0.333333333333333333333333333335"
    with pytest.raises(RecordFormError) as ei:
        parse_record(make_record(C.admin_a, C.chain_id, "policy.set", {"attribution": pools}))
    assert ei.value.code == "bad_value" and "1.000000000000000000000000000001" in ei.value.message
    # The adopted action of version 2 (PROTOCOL.md 9.3) is read the same way.
    with pytest.raises(InputError) as ei2:
        parse_action({"op": "policy.set", "attribution": pools})
    assert ei2.value.code == "bad_action" and "1.000000000000000000000000000001" in ei2.value.message
    pools["training"] = "0.333333333333333333333333333334"
    assert parse_action({"op": "policy.set", "attribution": pools})["attribution"] == pools
    pools["training"] = "0.333333333333333333333333333335"
    doc = copy.deepcopy(C.doc)
    doc["policy"]["attribution"] = pools
    with pytest.raises(InputError):
        parse_genesis(doc)


def test_attribution_total_is_read_as_strictly() -> None:
    """``?total=`` (node.api_lineage) takes ASCII digits and the whole string only."""
    from node.api_lineage import parse_total

    assert parse_total("12") == 12
    for bad in ("12\n", "\uff11\uff12", "1\u0662", " 12", "-1", "1e3"):
        with pytest.raises(InputError) as ei:
            parse_total(bad)
        assert ei.value.code == "bad_total"


def test_long_strings_are_refused_without_being_remembered() -> None:
    """The parsers cache what they read (amounts and times repeat); a string longer than
    any valid one is refused before the cache, so a flood of huge values holds no memory."""
    from ledger import values

    before = (values._time.cache_info().currsize, values._decimal.cache_info().currsize)
    assert parse_time("2026-11-21T12:00:00Z" + " " * 10**6) is None
    assert parse_decimal("1" * 10**6) is None
    assert (values._time.cache_info().currsize, values._decimal.cache_info().currsize) == before
