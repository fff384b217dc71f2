"""State rules (PROTOCOL.md 3, 3.1): who may sign what, replays, references, budgets."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from factory import Consortium, h, key

from ledger.errors import RecordFormError, RuleError
from ledger.records import Record, make_record, parse_record
from ledger.state import ChainState


@pytest.fixture
def c() -> Consortium:
    return Consortium()


@pytest.fixture
def st(c: Consortium) -> ChainState:
    return ChainState(c.genesis)


def ok(st: ChainState, *recs: Record) -> None:
    for r in recs:
        st.check_apply(r)


def refused(st: ChainState, rec: Record, code: str) -> RuleError:
    size = st.size
    with pytest.raises(RuleError) as ei:
        st.check(rec)
    assert ei.value.code == code, (ei.value.code, ei.value.message)
    assert st.size == size  # a refused record moves nothing
    return ei.value


def contribute(c: Consortium, signer: Any, name: str, version: str = "1", *, nonce: str | None = None,
               **kw: Any) -> Record:
    extra = {"nonce": nonce} if nonce else {}
    return c.record(signer, "dataset.contribute", c.dataset_body(name, version, **kw), **extra)


def update(c: Consortium, signer: Any, model: str, rnd: int = 1, **kw: Any) -> Record:
    return c.record(signer, "model.update", c.update_body(model, rnd, **kw))


def register(c: Consortium, admin: Any, who: Any, org: str, roles: list[str]) -> Record:
    return c.record(admin, "identity.register", {"key": who.public, "name": "x", "org": org, "roles": roles})


# --- identities and roles -----------------------------------------------------------------
def test_genesis_identities(c: Consortium, st: ChainState) -> None:
    assert st.identities[c.alice.public].roles == {"contributor", "annotator", "trainer", "evaluator"}
    assert st.identities[c.admin_a.public].roles == {"admin"} and st.identities[c.admin_a.public].org == "org-a"
    assert c.validators[0].public not in st.identities  # validators sign blocks only


def test_unknown_signer(c: Consortium, st: ChainState) -> None:
    e = refused(st, contribute(c, c.carol, "d"), "unknown_signer")
    assert c.carol.public[:16] in e.message


def test_validator_is_not_a_participant(c: Consortium, st: ChainState) -> None:
    refused(st, contribute(c, c.validators[0], "d"), "unknown_signer")


ROLE_CASES = [
    ("dataset.contribute", "contributor", lambda c: c.dataset_body("d")),
    ("annotation.event", "annotator", lambda c: c.annotation_body("base")),
    ("model.update", "trainer", lambda c: c.update_body("m", 1, inputs=[("base", 10, "0", "0")])),
    ("model.evaluation", "evaluator", None),
]


@pytest.mark.parametrize(("rtype", "role", "body"), ROLE_CASES, ids=[r[0] for r in ROLE_CASES])
def test_each_type_needs_its_role(c: Consortium, st: ChainState, rtype: str, role: str, body: Any) -> None:
    ok(st, contribute(c, c.alice, "base"))
    u = update(c, c.alice, "m", inputs=[("base", 10, "0", "0")])
    ok(st, u)
    if body is None:
        body = lambda c: {"target": u.id, "metric": "acc", "value": "0.9", "eval_set_hash": h("e"), "coalition": None}  # noqa: E731
    all_roles = ["contributor", "annotator", "trainer", "evaluator"]
    ok(st, register(c, c.admin_a, c.carol, "org-a", [r for r in all_roles if r != role]))
    e = refused(st, c.record(c.carol, rtype, body(c)), "forbidden_role")
    assert role in e.message
    # The admin role alone allows none of these types either.
    refused(st, c.record(c.admin_a, rtype, body(c)), "forbidden_role")
    # With the role, the same record is accepted.
    dave = key("dave")
    ok(st, register(c, c.admin_a, dave, "org-a", [role]))
    ok(st, c.record(dave, rtype, body(c)))


def test_registration_then_use_in_order(c: Consortium, st: ChainState) -> None:
    rec = contribute(c, c.carol, "d")
    refused(st, rec, "unknown_signer")
    reg = register(c, c.admin_a, c.carol, "org-a", ["contributor"])
    ok(st, reg, rec)
    ident = st.identities[c.carol.public]
    assert ident.org == "org-a" and ident.roles == {"contributor"} and ident.registered_by == reg.id


def test_register_by_admin_of_another_org(c: Consortium, st: ChainState) -> None:
    e = refused(st, register(c, c.admin_b, c.carol, "org-a", ["contributor"]), "forbidden_role")
    assert "org-a" in e.message
    ok(st, register(c, c.admin_b, c.carol, "org-b", ["contributor"]))


def test_register_by_non_admin_and_unknown_org_and_twice(c: Consortium, st: ChainState) -> None:
    refused(st, register(c, c.alice, c.carol, "org-a", ["contributor"]), "forbidden_role")
    refused(st, register(c, c.admin_a, c.carol, "org-z", ["contributor"]), "unknown_org")
    refused(st, register(c, c.admin_a, c.bob, "org-a", ["contributor"]), "identity_exists")


def test_registered_admin_can_register_in_own_org(c: Consortium, st: ChainState) -> None:
    ok(st, register(c, c.admin_a, c.carol, "org-a", ["admin"]))
    dave = key("dave")
    ok(st, register(c, c.carol, dave, "org-a", ["trainer"]))
    refused(st, register(c, c.carol, key("erin"), "org-b", ["trainer"]), "forbidden_role")


def test_revoke_rules(c: Consortium, st: ChainState) -> None:
    revoke = c.record(c.admin_b, "identity.revoke", {"key": c.alice.public, "reason": "x"})
    refused(st, revoke, "forbidden_role")  # admin of another org
    refused(st, c.record(c.bob, "identity.revoke", {"key": c.alice.public, "reason": "x"}), "forbidden_role")
    refused(st, c.record(c.admin_a, "identity.revoke", {"key": c.carol.public, "reason": "x"}), "unknown_identity")
    ok(st, c.record(c.admin_a, "identity.revoke", {"key": c.alice.public, "reason": "left"}))
    assert st.identities[c.alice.public].revoked
    refused(st, c.record(c.admin_a, "identity.revoke", {"key": c.alice.public, "reason": "x"}), "already_revoked")


def test_revoked_signer_refused_after_but_valid_before_in_replay(c: Consortium) -> None:
    before = contribute(c, c.alice, "a1")
    revoke = c.record(c.admin_a, "identity.revoke", {"key": c.alice.public, "reason": "key lost"})
    after = contribute(c, c.alice, "a2")
    st = ChainState(c.genesis)
    st.replay([before, revoke])  # the record before the revocation stays valid
    e = refused(st, after, "revoked_signer")
    assert "alice" in e.message
    # Replaying the log in the other order is a different log: there the record is refused.
    st2 = ChainState(c.genesis)
    ok(st2, revoke)
    refused(st2, before, "revoked_signer")


def test_revoked_admin_can_no_longer_register(c: Consortium, st: ChainState) -> None:
    ok(st, register(c, c.admin_a, c.carol, "org-a", ["admin"]),
       c.record(c.admin_a, "identity.revoke", {"key": c.carol.public, "reason": "x"}))
    refused(st, register(c, c.carol, key("dave"), "org-a", ["trainer"]), "revoked_signer")


def test_policy_set_record_is_refused_in_version_2(c: Consortium, st: ChainState) -> None:
    pools = {"attribution": {"data": "0.6", "annotation": "0.2", "training": "0.2"}}
    refused(st, c.record(c.alice, "policy.set", pools), "not_adopted")
    refused(st, c.record(c.admin_b, "policy.set", pools), "not_adopted")  # an admin alone neither
    assert st.policies == [(0, c.genesis.policy)]


def test_policy_changes_only_by_the_adopted_action(c: Consortium, st: ChainState) -> None:
    prop, approval = c.adoption(c.policy_action("0.6", "0.2", "0.2"))
    ok(st, prop)
    assert st.policy_at(0) == c.genesis.policy  # one of two organisations is no majority
    ok(st, approval)
    assert st.policy_at(1)["data"] == Decimal("0.6")
    assert st.policies[-1] == (1, {"data": Decimal("0.6"), "annotation": Decimal("0.2"), "training": Decimal("0.2")})
    assert st.policy_proposals == {1: prop.id}


def test_policy_in_force_by_log_position(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d1"), contribute(c, c.alice, "d2"))
    ok(st, *c.adoption(c.policy_action("1", "0", "0")))
    assert st.policy_at(2) == c.genesis.policy  # the proposal: not yet adopted
    assert st.policy_at(3)["data"] == 1 and st.policy_at(10)["data"] == 1


# --- replays ----------------------------------------------------------------------------
def test_replayed_nonce_with_different_content(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d", nonce="same"))
    e = refused(st, contribute(c, c.alice, "other", nonce="same"), "replayed_nonce")
    assert "'same'" in e.message
    # Another signer may use the same nonce.
    ok(st, contribute(c, c.bob, "b", nonce="same"))


def test_same_envelope_twice_is_a_replay_for_the_state(c: Consortium, st: ChainState) -> None:
    rec = contribute(c, c.alice, "d")
    ok(st, rec)
    refused(st, rec, "replayed_nonce")


# --- datasets ---------------------------------------------------------------------------
def test_duplicate_dataset_version(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d"))
    e = refused(st, contribute(c, c.bob, "d"), "duplicate_dataset")
    assert "'d'" in e.message and "'1'" in e.message
    ok(st, contribute(c, c.bob, "d", "2"))
    assert set(st.datasets["d"].versions) == {"1", "2"}


def test_derived_from_must_exist(c: Consortium, st: ChainState) -> None:
    e = refused(st, contribute(c, c.alice, "small", derived_from=["big"]), "missing_reference")
    assert "derived_from[0]" in e.message and "'big'" in e.message
    ok(st, contribute(c, c.alice, "big"), contribute(c, c.alice, "small", derived_from=["big"]))


def test_budget_fixed_by_first_version(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d", budget=("2", "0.001")))
    e = refused(st, contribute(c, c.alice, "d", "2", budget=("3", "0.001")), "budget_mismatch")
    assert "'d'" in e.message
    ok(st, contribute(c, c.alice, "d", "2", budget=("2.0", "0.0010")))  # the same amounts
    ok(st, contribute(c, c.alice, "d", "3"))  # null keeps the budget
    assert st.datasets["d"].budget == (Decimal(2), Decimal("0.001"))
    # A dataset without a budget cannot acquire one later.
    ok(st, contribute(c, c.bob, "free"))
    refused(st, contribute(c, c.bob, "free", "2", budget=("1", "0")), "budget_mismatch")


def test_annotation_on_missing_dataset(c: Consortium, st: ChainState) -> None:
    e = refused(st, c.record(c.alice, "annotation.event", c.annotation_body("nope")), "missing_reference")
    assert "body.dataset" in e.message
    ok(st, contribute(c, c.bob, "nope"), c.record(c.alice, "annotation.event", c.annotation_body("nope")))


# --- model updates and budgets ----------------------------------------------------------
def test_update_references(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d"))
    e = refused(st, update(c, c.alice, "m", inputs=[("ghost", 1, "0", "0")]), "missing_reference")
    assert "inputs[0].dataset" in e.message
    u1 = update(c, c.alice, "m", inputs=[("d", 10, "0", "0")])
    refused(st, update(c, c.alice, "m", 2, inputs=[("d", 1, "0", "0")], parent=h("nothing")), "missing_reference")
    refused(st, update(c, c.alice, "m", aggregates=[u1.id]), "missing_reference")  # not yet on the chain
    ok(st, u1)
    # A parent or aggregate must be an update of the same model.
    e = refused(st, update(c, c.alice, "other", aggregates=[u1.id]), "missing_reference")
    assert "aggregates[0]" in e.message
    refused(st, update(c, c.alice, "other", 2, inputs=[("d", 1, "0", "0")], parent=u1.id), "missing_reference")
    agg = update(c, c.alice, "m", aggregates=[u1.id])
    ok(st, agg, update(c, c.bob, "m", 2, inputs=[("d", 5, "0", "0")], parent=agg.id))
    # A dataset record id is not an update.
    refused(st, update(c, c.alice, "m", aggregates=[st.datasets["d"].versions["1"]]), "missing_reference")


def test_evaluation_target_must_be_an_update(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d"))
    body = {"target": h("x"), "metric": "acc", "value": "1", "eval_set_hash": h("e"), "coalition": None}
    e = refused(st, c.record(c.alice, "model.evaluation", body), "missing_reference")
    assert "body.target" in e.message
    body["target"] = st.datasets["d"].versions["1"]
    refused(st, c.record(c.alice, "model.evaluation", body), "missing_reference")
    u = update(c, c.alice, "m", inputs=[("d", 1, "0", "0")])
    ok(st, u)
    body["target"] = u.id
    body["coalition"] = ["d", "ghost"]
    assert "coalition[1]" in refused(st, c.record(c.alice, "model.evaluation", body), "missing_reference").message
    body["coalition"] = ["d"]
    ok(st, c.record(c.alice, "model.evaluation", body))


def test_budget_basic_composition_exact_boundary(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d", budget=("1", "0.0001")))
    ok(st, update(c, c.alice, "m", 1, inputs=[("d", 10, "0.3", "0.00003")]))
    ok(st, update(c, c.bob, "m", 1, inputs=[("d", 10, "0.3", "0.00003")]))
    # Remaining: epsilon 0.4, delta 0.00004. One unit (of the last decimal place) over: refused.
    over = update(c, c.alice, "m", 2, inputs=[("d", 10, "0.4000000001", "0.00004")])
    e = refused(st, over, "budget_exceeded")
    assert "'d'" in e.message and "0.4000000001" in e.message and "0.4" in e.message
    assert e.details["dataset"] == "d"
    refused(st, update(c, c.alice, "m", 2, inputs=[("d", 10, "0.4", "0.00004000001")]), "budget_exceeded")
    # Exactly the rest is allowed, and then nothing more, not even a tiny cost.
    ok(st, update(c, c.alice, "m", 2, inputs=[("d", 10, "0.4", "0.00004")]))
    assert st.datasets["d"].remaining == (0, 0)
    refused(st, update(c, c.alice, "m", 3, inputs=[("d", 1, "0.000001", "0")]), "budget_exceeded")
    ok(st, update(c, c.alice, "m", 3, inputs=[("d", 1, "0", "0")]))  # a free pass costs nothing


def test_budget_is_summed_exactly_beyond_28_digits(c: Consortium, st: ChainState) -> None:
    """docs/protocol.md 2: sums are exact fractions. A 28-digit Decimal context would round
    0.5 + 0.500000000000000000000000000001 to 1 and let the second update through."""
    ok(st, contribute(c, c.alice, "d", budget=("1", "1")))
    ok(st, update(c, c.alice, "m", 1, inputs=[("d", 10, "0.5", "0.5")]))
    tiny_over = "0.500000000000000000000000000001"
    e = refused(st, update(c, c.alice, "m", 2, inputs=[("d", 10, tiny_over, "0")]), "budget_exceeded")
    assert tiny_over in e.message and "remaining budget is epsilon 0.5," in e.message
    refused(st, update(c, c.alice, "m", 2, inputs=[("d", 10, "0", tiny_over)]), "budget_exceeded")
    # The same cost split across two inputs of one update is summed exactly too.
    half, rest = "0.250000000000000000000000000001", "0.25"
    refused(st, update(c, c.alice, "m", 2, inputs=[("d", 5, half, "0"), ("d", 5, rest, "0")]), "budget_exceeded")
    ok(st, update(c, c.alice, "m", 2, inputs=[("d", 10, "0.499999999999999999999999999999", "0")]))
    assert st.datasets["d"].remaining == (Fraction(1, 10**30), Fraction(1, 2))
    assert st.datasets["d"].to_dict()["remaining"] == {"epsilon": "0.000000000000000000000000000001", "delta": "0.5"}


def test_a_small_order_key_cannot_be_registered(c: Consortium, st: ChainState) -> None:
    """An admin registering the identity point (which "signs" anything with R = identity,
    S = 0) or a key with a torsion part is refused as a form error, before any state rule."""
    for bad in ("01" + "00" * 31, "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d"):
        env = make_record(c.admin_a, c.chain_id, "identity.register",
                          {"key": bad, "name": "mallory", "org": "org-a", "roles": ["admin"]})
        with pytest.raises(RecordFormError) as ei:
            parse_record(env, chain=c.chain_id)
        assert ei.value.code == "bad_key" and ei.value.details["field"] == "body.key"
    assert "01" + "00" * 31 not in st.identities


def test_budget_sums_inputs_of_one_update(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d", budget=("1", "0")))
    refused(st, update(c, c.alice, "m", inputs=[("d", 5, "0.6", "0"), ("d", 5, "0.5", "0")]), "budget_exceeded")
    ok(st, update(c, c.alice, "m", inputs=[("d", 5, "0.5", "0"), ("d", 5, "0.5", "0")]))
    assert st.datasets["d"].spent == (Decimal(1), Decimal(0))


def test_budget_shared_by_versions_and_unbudgeted_datasets_are_free(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d", budget=("1", "0")), contribute(c, c.alice, "d", "2"))
    ok(st, update(c, c.alice, "m", inputs=[("d", 5, "1", "0")]))
    refused(st, update(c, c.alice, "m", inputs=[("d", 5, "0.1", "0")]), "budget_exceeded")
    ok(st, contribute(c, c.bob, "free"))
    ok(st, update(c, c.bob, "m", inputs=[("free", 5, "1000", "1")]))
    assert st.datasets["free"].remaining is None


# --- fork ------------------------------------------------------------------------------
def test_fork_is_independent(c: Consortium, st: ChainState) -> None:
    ok(st, contribute(c, c.alice, "d", budget=("1", "0")))
    f = st.fork()
    ok(f, update(c, c.alice, "m", inputs=[("d", 5, "0.5", "0")]), contribute(c, c.alice, "d", "2"),
       register(c, c.admin_a, c.carol, "org-a", ["trainer"]),
       c.record(c.admin_b, "identity.revoke", {"key": c.bob.public, "reason": "x"}),
       *c.adoption(c.policy_action("1", "0", "0")),
       contribute(c, c.alice, "e", nonce="shared"))
    # The original saw none of it.
    assert st.size == 1 and f.size == 8 and not st.proposals and len(f.proposals) == 1
    assert st.datasets["d"].spent == (0, 0) and set(st.datasets["d"].versions) == {"1"}
    assert c.carol.public not in st.identities and not st.identities[c.bob.public].revoked
    assert len(st.policies) == 1 and "e" not in st.datasets
    ok(st, contribute(c, c.alice, "e", nonce="shared"))  # the nonce is free in the original
    # ... and the fork is unaffected by the original moving on.
    ok(st, update(c, c.alice, "m", inputs=[("d", 5, "1", "0")]))
    assert f.datasets["d"].spent == (Decimal("0.5"), 0)


def test_wrong_chain_refused_by_the_state(c: Consortium, st: ChainState) -> None:
    rec = c.record(c.alice, "dataset.contribute", c.dataset_body("d"), chain="cd" * 32)
    refused(st, rec, "wrong_chain")
