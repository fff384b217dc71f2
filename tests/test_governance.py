"""Membership changes (PROTOCOL.md 9): actions, proofs of possession, proposals,
approvals, adoption, and what each adopted action changes in the state."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest
from factory import Consortium, h, key
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.blocks import validators_hash
from ledger.errors import InputError, RecordFormError, RuleError
from ledger.governance import make_pop, parse_action, pop_ok, pop_payload
from ledger.keys import SigningKey
from ledger.records import Record, parse_record
from ledger.state import ChainState, Validator

NEW = key("validator-new")
NEWER = key("validator-newer")


def state(c: Consortium, height: int = 1) -> ChainState:
    s = ChainState(c.genesis)
    s.begin_block(height)
    return s


def ok(s: ChainState, *recs: Record) -> None:
    for r in recs:
        s.check_apply(r)


def refused(s: ChainState, rec: Record, code: str) -> RuleError:
    size, before = s.size, (dict(s.proposals), list(s.validators), set(s.orgs), list(s.policies))
    with pytest.raises(RuleError) as ei:
        s.check(rec)
    assert ei.value.code == code, (ei.value.code, ei.value.message)
    assert s.size == size and (dict(s.proposals), list(s.validators), set(s.orgs), list(s.policies)) == before
    return ei.value


def add_validator(c: Consortium, k: SigningKey = NEW, name: str = "node-new") -> dict[str, Any]:
    return {"op": "validator.add", "key": k.public, "name": name, "url": "http://127.0.0.1:8009",
            "pop": make_pop(k, c.chain_id)}


def replace_validator(c: Consortium, old: str, k: SigningKey = NEW) -> dict[str, Any]:
    return {"op": "validator.replace", "old": old, "new": k.public, "name": "node-rotated",
            "url": "http://127.0.0.1:8010", "pop": make_pop(k, c.chain_id)}


def adopt(c: Consortium, s: ChainState, action: dict[str, Any], admins: list[SigningKey] | None = None) -> str:
    recs = c.adoption(action, admins or list(c.admins.values()))
    ok(s, *recs)
    prop = s.proposals[recs[0].id]
    assert prop.adopted_at is not None, prop
    return recs[0].id


# --- the form of an action (PROTOCOL.md 9.3) -----------------------------------------------
def _actions(c: Consortium) -> list[dict[str, Any]]:
    return [
        {"op": "org.add", "name": "org-z", "admins": [key("admin-z").public]},
        {"op": "org.remove", "name": "org-b"},
        add_validator(c),
        {"op": "validator.remove", "key": c.validators[0].public},
        replace_validator(c, c.validators[0].public),
        c.policy_action("0.6", "0.2", "0.2"),
    ]


def test_every_action_form_parses_and_is_a_valid_proposal_body() -> None:
    c = Consortium()
    for action in _actions(c):
        assert parse_action(action) == action
        parse_record(c.envelope(c.admin_a, "network.propose", {"action": action, "expires": 3, "reason": "r"}))


BAD_ACTIONS: list[tuple[str, Any, str]] = [
    ("not an object", [], "action"),
    ("unknown op", {"op": "org.rename", "name": "x"}, "action.op"),
    ("op not a string", {"op": 1, "name": "x"}, "action.op"),
    ("missing field", {"op": "org.remove"}, "action.name"),
    ("unknown field", {"op": "org.remove", "name": "org-b", "why": "x"}, "action.why"),
    ("empty name", {"op": "org.remove", "name": ""}, "action.name"),
    ("no admins", {"op": "org.add", "name": "org-z", "admins": []}, "action.admins"),
    ("repeated admin", {"op": "org.add", "name": "org-z", "admins": [key("z").public] * 2}, "action.admins"),
    ("admin not a key", {"op": "org.add", "name": "org-z", "admins": ["AB" * 32]}, "action.admins[0]"),
    ("key not a point", {"op": "validator.remove", "key": "00" * 32}, "action.key"),
    ("pop not a signature", {"op": "validator.add", "key": NEW.public, "name": "n", "url": "u", "pop": "ab"},
     "action.pop"),
    ("replace by itself", {"op": "validator.replace", "old": NEW.public, "new": NEW.public, "name": "n",
                           "url": "u", "pop": "ab" * 64}, "action.new"),
    ("pools not summing to 1", {"op": "policy.set", "attribution": {"data": "0.5", "annotation": "0.3",
                                                                    "training": "0.3"}}, "action.attribution"),
    ("pool above 1", {"op": "policy.set", "attribution": {"data": "1.5", "annotation": "-0.5", "training": "0"}},
     "action.attribution.data"),
    ("pool not a decimal", {"op": "policy.set", "attribution": {"data": 0.5, "annotation": "0.3",
                                                                "training": "0.2"}}, "action.attribution.data"),
]


@pytest.mark.parametrize(("why", "action", "field"), BAD_ACTIONS, ids=[b[0] for b in BAD_ACTIONS])
def test_bad_action_is_refused_with_bad_action_naming_the_field(why: str, action: Any, field: str) -> None:
    with pytest.raises(InputError) as ei:
        parse_action(action)
    assert ei.value.code == "bad_action" and ei.value.details.get("field") == field, (ei.value.code, ei.value.details)
    assert not isinstance(ei.value, RecordFormError)  # an action alone is not a record
    # Inside a proposal it is a form error of the record, with the same code, under body.
    c = Consortium()
    with pytest.raises(RecordFormError) as er:
        parse_record(c.envelope(c.admin_a, "network.propose", {"action": action, "expires": 3, "reason": ""}))
    assert er.value.code == "bad_action" and er.value.details.get("field") == "body." + field


def test_parse_action_returns_a_copy() -> None:
    action = {"op": "org.add", "name": "org-z", "admins": [key("admin-z").public]}
    got = parse_action(action)
    got["admins"].append("x")
    assert action["admins"] == [key("admin-z").public]


# --- proofs of possession ------------------------------------------------------------------
def test_pop_is_the_new_keys_signature_over_its_own_payload() -> None:
    c = Consortium()
    pop = make_pop(NEW, c.chain_id)
    assert pop_payload(c.chain_id, NEW.public) == {"chain": c.chain_id, "key": NEW.public}
    assert pop == NEW.sign(b"provledger/pop/v1", {"chain": c.chain_id, "key": NEW.public})
    assert pop_ok(c.chain_id, NEW.public, pop)
    assert not pop_ok("cd" * 32, NEW.public, pop)  # another chain
    assert not pop_ok(c.chain_id, NEWER.public, pop)  # another key
    assert not pop_ok(c.chain_id, NEW.public, make_pop(NEWER, c.chain_id))  # signed by someone else
    assert not pop_ok(c.chain_id, NEW.public, pop[:-2] + ("00" if pop[-2:] != "00" else "11"))
    assert not pop_ok(c.chain_id, NEW.public, "zz")
    # A record signature over the same payload is no pop: the tag differs (PROTOCOL.md 1).
    assert not pop_ok(c.chain_id, NEW.public, NEW.sign(b"provledger/record/v1", pop_payload(c.chain_id, NEW.public)))


# --- who may propose and approve -----------------------------------------------------------
def test_only_an_unrevoked_admin_of_an_org_in_force_may_propose_or_approve() -> None:
    c = Consortium()
    s = state(c)
    action = c.policy_action("0.6", "0.2", "0.2")
    refused(s, c.propose(c.alice, action), "not_admin")
    prop = c.propose(c.admin_a, action)
    ok(s, prop)
    refused(s, c.approve(c.bob, prop.id), "not_admin")
    # A participant that also holds the admin role of its organisation may.
    dave = key("dave")
    ok(s, c.record(c.admin_b, "identity.register", {"key": dave.public, "name": "dave", "org": "org-b",
                                                    "roles": ["admin"]}))
    ok(s, c.record(c.admin_b, "identity.revoke", {"key": c.admin_b.public, "reason": "key lost"}))
    refused(s, c.approve(c.admin_b, prop.id), "revoked_signer")
    ok(s, c.approve(dave, prop.id))
    assert s.proposals[prop.id].approvals == ("org-a", "org-b") and s.policy_at(s.size)["data"] == Fraction(6, 10)


def test_expires_is_at_least_the_proposals_own_height() -> None:
    c = Consortium()
    s = state(c, height=5)
    refused(s, c.propose(c.admin_a, c.policy_action("1", "0", "0"), expires=4), "proposal_expired")
    ok(s, c.propose(c.admin_a, c.policy_action("1", "0", "0"), expires=5))


def test_approval_counts_while_expires_is_at_least_its_height() -> None:
    c = Consortium(orgs=3)
    s = state(c, height=2)
    prop = c.propose(c.admin_a, c.policy_action("1", "0", "0"), expires=3)
    ok(s, prop)
    s.begin_block(3)
    assert s.proposals[prop.id].status(3) == "open"
    late = c.approve(c.admin_b, prop.id)
    s.begin_block(4)
    assert s.proposals[prop.id].status(4) == "expired"
    refused(s, late, "proposal_expired")
    s.begin_block(3)  # the same approval at the last height counts, and adopts (2 of 3)
    ok(s, late)
    assert s.proposals[prop.id].status(4) == "adopted"


def test_approve_names_a_proposal_on_the_chain() -> None:
    c = Consortium()
    s = state(c)
    refused(s, c.approve(c.admin_a, h("nothing")), "unknown_proposal")
    other = c.record(c.alice, "dataset.contribute", c.dataset_body("d"))
    ok(s, other)
    refused(s, c.approve(c.admin_a, other.id), "unknown_proposal")  # a record, but no proposal


def test_one_approval_per_organisation() -> None:
    c = Consortium(orgs=4)
    s = state(c)
    prop = c.propose(c.admin_a, c.policy_action("1", "0", "0"))
    ok(s, prop)
    refused(s, c.approve(c.admin_a, prop.id), "already_approved")  # the proposer's org counts already
    second_a = key("admin-a2")
    ok(s, c.record(c.admin_a, "identity.register", {"key": second_a.public, "name": "a2", "org": "org-a",
                                                    "roles": ["admin"]}))
    refused(s, c.approve(second_a, prop.id), "already_approved")  # another admin, the same org
    ok(s, c.approve(c.admin_b, prop.id))
    refused(s, c.approve(c.admin_b, prop.id), "already_approved")
    assert s.proposals[prop.id].adopted_at is None  # 2 of 4 is not more than half
    ok(s, c.approve(c.admins["org-c"], prop.id))
    assert s.proposals[prop.id].adopted_at == s.size - 1
    refused(s, c.approve(c.admins["org-d"], prop.id), "already_adopted")


def test_with_one_organisation_a_proposal_adopts_itself() -> None:
    c = Consortium(orgs=1)
    s = state(c)
    prop = c.propose(c.admin_a, c.policy_action("0.1", "0.1", "0.8"))
    ok(s, prop)
    assert s.proposals[prop.id].adopted_at == 0 and s.proposals[prop.id].adopted_by == prop.id
    assert s.policy_at(0)["training"] * 10 == 8


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 7), order=st.permutations(range(7)), proposer=st.integers(0, 6))
def test_adoption_happens_exactly_when_approving_orgs_exceed_half(n: int, order: list[int], proposer: int) -> None:
    """PROTOCOL.md 9.2: the record after which the approving organisations (the
    proposer's one included, counted once) are more than half of those in force adopts."""
    c = Consortium(orgs=n)
    orgs = list(c.admins)
    s = state(c)
    first = orgs[proposer % n]
    prop = c.propose(c.admins[first], c.policy_action("0", "1", "0"))
    ok(s, prop)
    approving = {first}
    for i in [i for i in order if i < n and orgs[i] != first]:
        adopted = s.proposals[prop.id].adopted_at is not None
        assert adopted == (2 * len(approving) > n)
        rec = c.approve(c.admins[orgs[i]], prop.id)
        if adopted:
            refused(s, rec, "already_adopted")
            continue
        ok(s, rec)
        approving.add(orgs[i])
        if 2 * len(approving) > n:  # this approval adopted it, and the policy applies from it on
            assert s.proposals[prop.id].adopted_at == s.size - 1 and s.policy_at(s.size - 1)["annotation"] == 1
            assert s.policy_at(s.size - 2)["annotation"] != 1
    assert s.proposals[prop.id].adopted_at is not None  # every organisation approving is a majority


# --- each action: valid at the proposal, and again at adoption -----------------------------
def test_invalid_actions_are_refused_at_the_proposal_with_their_codes() -> None:
    c = Consortium(validators=2)
    s = state(c)
    v0, v1 = (v.public for v in c.validators)
    cases = [
        ({"op": "org.add", "name": "org-b", "admins": [key("z").public]}, "org_exists"),
        ({"op": "org.add", "name": "org-z", "admins": [c.alice.public]}, "admin_registered"),
        ({"op": "org.add", "name": "org-z", "admins": [key("z").public, c.admin_b.public]}, "admin_registered"),
        ({"op": "org.remove", "name": "org-z"}, "unknown_org"),
        (add_validator(c, c.validators[1]), "already_validator"),
        ({**add_validator(c), "pop": make_pop(NEW, "cd" * 32)}, "bad_pop"),
        ({**add_validator(c), "pop": make_pop(NEWER, c.chain_id)}, "bad_pop"),
        ({"op": "validator.remove", "key": NEW.public}, "not_validator"),
        (replace_validator(c, NEW.public, NEWER), "not_validator"),
        (replace_validator(c, v0, c.validators[1]), "already_validator"),
        ({**replace_validator(c, v0), "pop": make_pop(NEWER, c.chain_id)}, "bad_pop"),
    ]
    for action, code in cases:
        e = refused(s, c.propose(c.admin_a, action), code)
        assert e.details["field"].startswith("body.action"), e.details
    # A validator that was one and was removed is never one again; nor a replaced key.
    adopt(c, s, {"op": "validator.remove", "key": v1})
    refused(s, c.propose(c.admin_a, add_validator(c, c.validators[1])), "already_validator")
    refused(s, c.propose(c.admin_a, {"op": "validator.remove", "key": v0}), "last_validator")
    adopt(c, s, replace_validator(c, v0))
    refused(s, c.propose(c.admin_a, add_validator(c, c.validators[0])), "already_validator")
    refused(s, c.propose(c.admin_a, replace_validator(c, NEW.public, c.validators[0])), "already_validator")
    # An organisation's name is never reused, and the last one stays.
    adopt(c, s, {"op": "org.remove", "name": "org-b"})
    refused(s, c.propose(c.admin_a, {"op": "org.add", "name": "org-b", "admins": [key("z").public]}), "org_exists")
    refused(s, c.propose(c.admin_a, {"op": "org.remove", "name": "org-b"}), "unknown_org")
    refused(s, c.propose(c.admin_a, {"op": "org.remove", "name": "org-a"}), "last_organisation")


def test_an_action_no_longer_valid_makes_the_adopting_record_invalid() -> None:
    c = Consortium(validators=3)
    s = state(c)
    v2 = c.validators[2].public
    first, first_ok = c.adoption({"op": "validator.remove", "key": v2})
    second, second_ok = c.adoption({"op": "validator.remove", "key": v2})
    ok(s, first, second, first_ok)  # both proposals valid when made; the first is adopted
    e = refused(s, second_ok, "not_validator")
    assert e.details["field"] == "action.key"
    # Two organisations proposed under the same new name: the second cannot be adopted.
    a1, a1_ok = c.adoption({"op": "org.add", "name": "org-z", "admins": [key("z1").public]})
    a2, a2_ok = c.adoption({"op": "org.add", "name": "org-z", "admins": [key("z2").public]})
    ok(s, a1, a2, a1_ok)
    refused(s, a2_ok, "org_exists")
    # The same new key proposed twice as a validator.
    b1, b1_ok = c.adoption(add_validator(c))
    b2, b2_ok = c.adoption(add_validator(c, NEW, "again"))
    ok(s, b1, b2, b1_ok)
    refused(s, b2_ok, "already_validator")


# --- what adopted actions change -----------------------------------------------------------
def test_org_add_makes_its_admins_admins_of_the_new_org() -> None:
    c = Consortium()
    s = state(c)
    zed = key("admin-z")
    pid = adopt(c, s, {"op": "org.add", "name": "org-z", "admins": [zed.public]})
    assert s.organisations == ["org-a", "org-b", "org-z"]
    ident = s.identities[zed.public]
    assert (ident.org, ident.roles, ident.revoked, ident.registered_by) == ("org-z", {"admin"}, False, pid)
    assert s.organisation_log["org-z"].added_by == pid
    # The new admin registers members of its organisation and takes part in votes: three
    # organisations now, so two are a majority.
    member = key("zoe")
    ok(s, c.record(zed, "identity.register", {"key": member.public, "name": "zoe", "org": "org-z",
                                              "roles": ["contributor"]}))
    prop = c.propose(zed, c.policy_action("1", "0", "0"))
    ok(s, prop)
    assert s.proposals[prop.id].org == "org-z" and s.proposals[prop.id].adopted_at is None
    ok(s, c.approve(c.admin_b, prop.id))
    assert s.proposals[prop.id].adopted_at is not None


def test_org_remove_revokes_every_identity_of_the_org_at_that_point() -> None:
    c = Consortium(orgs=3)
    s = state(c)
    carol = key("carol")
    ok(s, c.record(c.admin_b, "identity.register", {"key": carol.public, "name": "carol", "org": "org-b",
                                                    "roles": ["contributor"]}))
    pending = c.propose(c.admin_b, c.policy_action("1", "0", "0"))  # org-b's open proposal
    ok(s, pending)
    prop, approval = c.adoption({"op": "org.remove", "name": "org-b"}, [c.admin_a, c.admins["org-c"]])
    ok(s, prop)
    ok(s, c.record(c.bob, "dataset.contribute", c.dataset_body("before")))  # not yet adopted
    ok(s, approval)
    assert s.organisations == ["org-a", "org-c"]
    assert s.organisation_log["org-b"].removed_at == s.size - 1
    for k in (c.bob, carol, c.admin_b):
        assert s.identities[k.public].revoked
    assert not s.identities[c.alice.public].revoked
    refused(s, c.record(c.bob, "dataset.contribute", c.dataset_body("after")), "revoked_signer")
    refused(s, c.approve(c.admin_b, pending.id), "revoked_signer")
    refused(s, c.record(c.admin_a, "identity.register", {"key": key("x").public, "name": "x", "org": "org-b",
                                                         "roles": ["contributor"]}), "unknown_org")
    # org-b's approval of the pending proposal no longer counts: org-a alone is 1 of 2.
    ok(s, c.approve(c.admin_a, pending.id))
    assert s.proposals[pending.id].adopted_at is None
    ok(s, c.approve(c.admins["org-c"], pending.id))
    assert s.proposals[pending.id].adopted_at is not None


def test_validator_set_order_and_the_height_a_change_governs() -> None:
    c = Consortium(validators=3)
    s = state(c, height=4)
    v0, v1, v2 = (v.public for v in c.validators)
    genesis_hash = validators_hash([v0, v1, v2])
    assert s.validator_keys() == [v0, v1, v2] and s.validators_hash() == genesis_hash
    adopt(c, s, add_validator(c))  # appended
    assert s.validator_keys() == [v0, v1, v2, NEW.public]
    assert s.validators[-1] == Validator("node-new", NEW.public, "http://127.0.0.1:8009")
    adopt(c, s, replace_validator(c, v1, NEWER))  # keeps its place
    assert s.validator_keys() == [v0, NEWER.public, v2, NEW.public]
    s.begin_block(5)
    adopt(c, s, {"op": "validator.remove", "key": v0})
    assert s.validator_keys() == [NEWER.public, v2, NEW.public]
    assert s.validators_hash() == validators_hash([NEW.public, v2, NEWER.public])  # order plays no part
    # Changes adopted in block h govern h + 1 on; two changes in block 4 are one set.
    assert [first for first, _ in s.validator_sets] == [1, 5, 6]
    assert [v.key for v in s.validators_at(4)] == [v0, v1, v2]
    assert [v.key for v in s.validators_at(5)] == [v0, NEWER.public, v2, NEW.public]
    assert [v.key for v in s.validators_at(6)] == s.validator_keys() == [v.key for v in s.validators_at(99)]


def test_a_change_undone_in_its_own_block_is_no_change() -> None:
    c = Consortium(validators=2)
    s = state(c, height=3)
    adopt(c, s, add_validator(c))
    adopt(c, s, {"op": "validator.remove", "key": NEW.public})
    assert [first for first, _ in s.validator_sets] == [1]
    assert s.validators_hash() == validators_hash([v.public for v in c.validators])


def test_fork_keeps_governance_apart() -> None:
    c = Consortium(validators=2)
    s = state(c)
    f = s.fork()
    adopt(c, f, add_validator(c))
    adopt(c, f, {"op": "org.add", "name": "org-z", "admins": [key("z").public]})
    assert s.validator_keys() == [v.public for v in c.validators] and s.organisations == ["org-a", "org-b"]
    assert not s.proposals and s.validator_sets == [(1, tuple(s.validators))]
    assert s.validators_hash() != f.validators_hash()


def test_the_proposal_document() -> None:
    c = Consortium(orgs=3)
    s = state(c, height=2)
    action = c.policy_action("0.5", "0.5", "0")
    prop = c.propose(c.admin_b, action, expires=9, reason="fairer")
    ok(s, prop)
    doc = s.proposals[prop.id].to_dict(3)
    assert doc == {"id": prop.id, "action": action, "proposer": c.admin_b.public, "org": "org-b", "height": 2,
                   "expires": 9, "reason": "fairer", "approvals": ["org-b"], "status": "open", "adopted_at": None}
    assert s.proposals[prop.id].to_dict(10)["status"] == "expired"
    ok(s, copy.copy(c.approve(c.admin_a, prop.id)))
    assert s.proposals[prop.id].to_dict(10)["status"] == "adopted"


# --- the store keeps what a replay gives (hypothesis) ----------------------------------------
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_governance_is_kept_by_the_store_and_audits_clean(tmp_path_factory: Any, data: Any) -> None:
    """Random proposals and approvals over several blocks, each kept or refused by the
    rules: the derived tables always give back the state of a replay (load_state), the
    reader's sets are the state's, and the audit of the file is clean."""
    from ledger.audit import DbSource, audit
    from ledger.blocks import Certificate, vote_payload
    from ledger.canonical import VOTE_TAG
    from ledger.reader import StoreReader
    from ledger.store import Store, derived_rows, read_derived

    c = Consortium(orgs=3)
    path = tmp_path_factory.mktemp("gov") / "g.db"
    ledger = c.ledger(path)
    keys = [key(f"cand-{i}") for i in range(4)]
    names = ["org-x", "org-y"]
    open_props: list[str] = []
    for height in range(1, data.draw(st.integers(2, 5)) + 1):
        recs: list[Record] = []
        for _ in range(data.draw(st.integers(0, 4))):
            signer = data.draw(st.sampled_from(list(c.admins.values())))
            if open_props and data.draw(st.booleans()):
                recs.append(c.approve(signer, data.draw(st.sampled_from(open_props))))
                continue
            kind = data.draw(st.sampled_from(["org.add", "org.remove", "validator.add", "validator.remove",
                                              "validator.replace", "policy.set"]))
            cand = data.draw(st.sampled_from(keys))
            action: dict[str, Any]
            if kind == "org.add":
                action = {"op": kind, "name": data.draw(st.sampled_from(names)), "admins": [key("x" + cand.public).public]}
            elif kind == "org.remove":
                action = {"op": kind, "name": data.draw(st.sampled_from(list(c.admins)))}
            elif kind == "validator.add":
                action = add_validator(c, cand)
            elif kind == "validator.remove":
                action = {"op": kind, "key": data.draw(st.sampled_from([c.validators[0].public, *(k.public for k in keys)]))}
            elif kind == "validator.replace":
                olds = [c.validators[0].public, *(k.public for k in keys if k is not cand)]
                action = replace_validator(c, data.draw(st.sampled_from(olds)), cand)
            else:
                action = c.policy_action("0.5", "0.5", "0")
            prop = c.propose(signer, action, expires=height + data.draw(st.integers(0, 2)))
            recs.append(prop)
            open_props.append(prop.id)
        block, _rejected = ledger.build_block(recs, proposer=c.validators[0].public, time=f"2026-11-21T12:00:0{height}Z")
        # Every member of the set certifying this height signs (PROTOCOL.md 9.1).
        held = {k.public: k for k in [c.validators[0], *keys]}
        payload = vote_payload(c.chain_id, height, 0, "precommit", block.hash)
        votes = tuple((v, held[v].sign(VOTE_TAG, payload)) for v in ledger.state.validator_keys())
        ledger.commit(block, Certificate(height, 0, block.hash, votes))
    state = ledger.state
    ledger.store.close()
    with Store(path) as store:
        loaded = store.load_state()
        assert (loaded.validators, loaded.validator_sets, loaded.ever_validators, loaded.organisation_log,
                loaded.orgs, loaded.proposals, loaded.policies, loaded.policy_proposals, loaded.height) == (
            state.validators, state.validator_sets, state.ever_validators, state.organisation_log, state.orgs,
            state.proposals, state.policies, state.policy_proposals, state.height)
        assert read_derived(store.reader) == derived_rows(store.rebuild_state())
        reader = StoreReader(store)
        for h in range(1, state.height + 2):
            assert reader.validators_at(h) == list(state.validators_at(h))
        assert reader.governance().validator_sets == state.validator_sets
    report = audit(DbSource(path))
    assert report.ok, [str(f) for f in report.findings]
