"""Light verification (PROTOCOL.md 9.4): ``ledger.light.verify_checkpoint`` follows a
membership history from the genesis set, with real keys, headers and certificates.

The chains here are headers only (tests/light_chain.py), with real keys and certificates.
Hypothesis draws the change sequences; every single alteration of the history is
refused, and so is every deletion except one the rest of the history makes harmless (the
next certificate is also a certificate of the earlier set, and the verifier still ends with
the right keys).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from light_chain import Chain, build, certify, vkey

from ledger.blocks import Header
from ledger.errors import LedgerError
from ledger.keys import SigningKey
from ledger.light import verify_checkpoint


def refused(chain: Chain, history: Any, checkpoint: Any = None) -> LedgerError:
    with pytest.raises(LedgerError) as e:
        verify_checkpoint(chain.genesis, chain.checkpoint() if checkpoint is None else checkpoint, history)
    return e.value


# --- worked cases ------------------------------------------------------------------------
FOUR = [vkey(i) for i in range(4)]


def test_no_change_yet_the_genesis_set_certifies() -> None:
    chain = build(FOUR, {}, 5)
    assert chain.history()["changes"] == []
    assert verify_checkpoint(chain.genesis, chain.checkpoint(), chain.history()) == chain.keys_at(1)
    one = build(FOUR, {}, 1)
    assert one.history() == {"to": 1, "changes": [], "previous": None}
    assert verify_checkpoint(one.genesis, one.checkpoint(), one.history()) == one.keys_at(1)


def test_a_whole_set_swap_over_several_changes() -> None:
    a, b, c, d, e, f, g, x = (vkey(i) for i in range(8))
    # e joins, a leaves, f replaces e, then g and x replace b and c and d leaves: none of the genesis set is left.
    changes = {2: [a, b, c, d, e], 4: [b, c, d, e], 5: [b, c, d, f], 8: [g, x, d, f], 9: [g, x, f]}
    chain = build([a, b, c, d], changes, 10, extra=0)
    assert len(chain.history()["changes"]) == 5
    assert verify_checkpoint(chain.genesis, chain.checkpoint(), chain.history()) == chain.keys_at(10)
    # The same checkpoint against the genesis set alone (no history followed): refused.
    empty = {**chain.history(), "changes": []}
    assert refused(chain, empty).details["field"] == "checkpoint"


def test_a_change_left_out_is_caught_by_the_previous_header() -> None:
    a, b, c, d, e = (vkey(i) for i in range(5))
    chain = build([a, b, c, d], {3: [a, b, c, e]}, 6, extra=0)  # e replaces d; a, b, c still sign
    hist = chain.history()
    hist["changes"] = []
    err = refused(chain, hist)
    assert err.details["field"] == "membership.previous" and "left out" in err.message


def test_a_certificate_by_the_wrong_set_names_its_entry() -> None:
    a, b, c, d, e, f, g = (vkey(i) for i in range(7))
    chain = build([a, b, c, d], {2: [a, b, c, d, e], 5: [e, f, g]}, 7)
    hist = chain.history()
    h = Header.from_dict(hist["changes"][1]["header"])
    hist["changes"][1]["certificate"] = certify(h, [e, f, g]).to_dict()  # the new set, not the one certifying 5
    err = refused(chain, hist)
    assert err.details["field"] == "membership.changes[1]" and "not a validator of the set certifying height 5" in err.message


def test_the_document_form() -> None:
    chain = build(FOUR, {2: FOUR[:3]}, 4)
    good = chain.history()
    assert refused(chain, {**good, "to": 3}).details["field"] == "membership.to"
    assert refused(chain, {**good, "extra": 1}).details["field"] == "membership"
    assert refused(chain, [good]).details["field"] == "membership"
    assert refused(chain, {**good, "previous": None}).details["field"] == "membership.previous"
    bad = copy.deepcopy(good)
    bad["changes"][0]["validators"].reverse()
    assert refused(chain, bad).details["field"] == "membership.changes[0].validators"
    bad["changes"][0]["validators"] = []
    assert refused(chain, bad).details["field"] == "membership.changes[0].validators"
    other = build([vkey(50)], {}, 4)
    assert refused(chain, good, other.checkpoint()).code == "wrong_chain"


# --- properties --------------------------------------------------------------------------
@st.composite
def histories(draw: st.DrawFn) -> tuple[Chain, int]:
    """A chain with random validator adds, removes and replaces at random heights."""
    fresh = iter(range(100, 10_000))
    first = [vkey(next(fresh)) for _ in range(draw(st.integers(1, 4)))]
    current = list(first)
    changes: dict[int, list[SigningKey]] = {}
    h = 0
    for _ in range(draw(st.integers(0, 6))):
        h += draw(st.integers(1, 3))
        op = draw(st.sampled_from(["add", "remove", "replace"] if len(current) > 1 else ["add", "replace"]))
        if op == "add":
            current = [*current, vkey(next(fresh))]
        elif op == "remove":
            gone = draw(st.sampled_from(current))
            current = [k for k in current if k != gone]
        else:
            i = draw(st.integers(0, len(current) - 1))
            current = [*current[:i], vkey(next(fresh)), *current[i + 1:]]
        changes[h] = current
    t = h + draw(st.integers(1, 3))
    return build(first, changes, t, extra=draw(st.integers(0, 2))), len(changes)


def _flip(hex_text: str) -> str:
    return ("1" if hex_text[0] != "1" else "2") + hex_text[1:]


def _alterations(hist: dict[str, Any], chain: Chain) -> list[tuple[str, dict[str, Any]]]:
    """Every kind of single alteration, at every entry."""
    out = []

    def variant(name: str, change: Any) -> None:
        doc = copy.deepcopy(hist)
        change(doc)
        out.append((name, doc))

    n = len(hist["changes"])
    for i in range(n):
        variant(f"duplicated {i}", lambda d, i=i: d["changes"].insert(i, copy.deepcopy(d["changes"][i])))
        variant(f"header time {i}", lambda d, i=i: d["changes"][i]["header"].update(time="2026-11-21T12:00:01Z"))
        variant(f"hash {i}", lambda d, i=i: d["changes"][i].update(hash=_flip(d["changes"][i]["hash"])))
        variant(f"vote {i}", lambda d, i=i: d["changes"][i]["certificate"]["votes"][0].update(
            sig=_flip(d["changes"][i]["certificate"]["votes"][0]["sig"])))
        variant(f"keys dropped {i}", lambda d, i=i: d["changes"][i]["validators"].pop())
        variant(f"key swapped {i}", lambda d, i=i: d["changes"][i]["validators"].__setitem__(0, vkey(99).public))
        variant(f"next_validators {i}", lambda d, i=i: d["changes"][i]["header"].update(
            next_validators=_flip(d["changes"][i]["header"]["next_validators"])))
        if i + 1 < n:
            variant(f"reordered {i}", lambda d, i=i: d["changes"].insert(i, d["changes"].pop(i + 1)))
        h = Header.from_dict(hist["changes"][i]["header"])
        outsiders = [vkey(9000 + j) for j in range(len(chain.sets[h.height]))]
        variant(f"wrong set {i}", lambda d, i=i, h=h, o=outsiders: d["changes"][i].update(
            certificate=certify(h, o).to_dict()))
    if hist["previous"] is not None:
        variant("previous time", lambda d: d["previous"]["header"].update(time="2026-11-21T12:00:01Z"))
        variant("previous next_validators", lambda d: d["previous"]["header"].update(
            next_validators=_flip(d["previous"]["header"]["next_validators"])))
        variant("previous hash", lambda d: d["previous"].update(hash=_flip(d["previous"]["hash"])))
        variant("previous dropped", lambda d: d.update(previous=None))
    variant("to", lambda d: d.update(to=d["to"] + 1))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=histories())
def test_the_full_history_verifies_and_every_alteration_is_refused(drawn: tuple[Chain, int]) -> None:
    chain, _ = drawn
    hist = chain.history()
    assert verify_checkpoint(chain.genesis, chain.checkpoint(), hist) == chain.keys_at(chain.t)
    for name, doc in _alterations(hist, chain):
        with pytest.raises(LedgerError):
            verify_checkpoint(chain.genesis, chain.checkpoint(), doc)
            pytest.fail(f"accepted a history with {name}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=histories())
def test_a_deleted_change_is_refused_or_changes_nothing(drawn: tuple[Chain, int]) -> None:
    """Deleting the last change is always refused (9.4 step 3). Deleting an earlier one is
    refused unless the next change's certificate is also a certificate of the earlier set:
    then the verifier ends with the same, right, keys."""
    chain, _ = drawn
    hist = chain.history()
    n = len(hist["changes"])
    for i in range(n):
        doc = copy.deepcopy(hist)
        del doc["changes"][i]
        try:
            keys = verify_checkpoint(chain.genesis, chain.checkpoint(), doc)
        except LedgerError as e:
            assert e.details.get("field", "").startswith(("membership.changes", "membership.previous", "checkpoint"))
            continue
        assert i < n - 1, "the last change was left out and not refused"
        assert keys == chain.keys_at(chain.t)
