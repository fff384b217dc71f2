"""The commit path (PROTOCOL.md 5, 6): build, check, certify, store."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from factory import Consortium

from ledger import merkle
from ledger.blocks import Header, certify_single
from ledger.chain import Ledger
from ledger.errors import CertificateError, RuleError, SignatureError, VerificationError
from ledger.records import parse_record
from ledger.store import Store


@pytest.fixture
def cons() -> Consortium:
    return Consortium()


@pytest.fixture
def ledger(cons: Consortium, tmp_path: Path) -> Any:
    lg = cons.ledger(tmp_path / "ledger.db")
    yield lg
    lg.store.close()


def test_commit_single_builds_linked_blocks(cons: Consortium, ledger: Ledger) -> None:
    v = cons.validators[0]
    r1 = [cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a")),
          cons.record(cons.bob, "dataset.contribute", cons.dataset_body("b"))]
    b1, c1, rej = ledger.commit_single(v, r1, time="2026-11-21T12:00:01Z")
    assert not rej
    h1 = b1.header
    assert (h1.height, h1.prev, h1.count, h1.log_size, h1.proposer) == (1, cons.chain_id, 2, 2, v.public)
    assert h1.log_root == merkle.root([bytes.fromhex(r.id) for r in r1]).hex()
    # Record ids are RFC 9162 leaf hashes of the canonical envelope.
    assert r1[0].id == hashlib.sha256(b"\x00" + rfc8785.dumps(r1[0].envelope)).hexdigest()
    b2, _, _ = ledger.commit_single(v, [], time="2026-11-21T12:00:02Z")
    assert (b2.header.height, b2.header.prev, b2.header.count, b2.header.log_size) == (2, b1.hash, 0, 2)
    assert b2.header.log_root == h1.log_root  # an empty block keeps the root
    r3 = [cons.record(cons.alice, "annotation.event", cons.annotation_body("a"))]
    b3, _, _ = ledger.commit_single(v, r3, time="2026-11-21T12:00:03Z")
    assert b3.header.prev == b2.hash and b3.header.log_size == 3
    assert ledger.height == 3 and ledger.store.head().hash == b3.hash  # type: ignore[union-attr]
    assert ledger.store.block(1).certificate == c1  # type: ignore[union-attr]


def test_build_block_drops_what_the_rules_refuse(cons: Consortium, ledger: Ledger) -> None:
    good = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))
    dup = cons.record(cons.bob, "dataset.contribute", cons.dataset_body("a"))  # same (dataset, version)
    stranger = cons.record(cons.carol, "dataset.contribute", cons.dataset_body("c"))
    ann = cons.record(cons.bob, "annotation.event", cons.annotation_body("a"))  # valid after `good`
    block, _, rejected = ledger.commit_single(cons.validators[0], [good, dup, stranger, ann])
    assert [r.id for r in block.records] == [good.id, ann.id]
    assert {(r.id, e.code) for r, e in rejected} == {(dup.id, "duplicate_dataset"), (stranger.id, "unknown_signer")}
    assert all(isinstance(e, RuleError) for _, e in rejected)


def test_building_does_not_move_the_state(cons: Consortium, ledger: Ledger) -> None:
    rec = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))
    ledger.build_block([rec], proposer=cons.validators[0].public)
    assert "a" not in ledger.state.datasets and ledger.height == 0
    ledger.commit_single(cons.validators[0], [rec])
    assert "a" in ledger.state.datasets


def test_committed_nonce_cannot_be_replayed_after_restart(cons: Consortium, tmp_path: Path) -> None:
    lg = cons.ledger(tmp_path / "l.db")
    rec = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"), nonce="once")
    lg.commit_single(cons.validators[0], [rec])
    lg.store.close()
    lg2 = Ledger(Store(tmp_path / "l.db"))
    again = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("b"), nonce="once")
    block, _, rejected = lg2.commit_single(cons.validators[0], [again])
    assert block.records == [] and rejected[0][1].code == "replayed_nonce"
    lg2.store.close()


def test_check_block_accepts_the_block_it_would_build(cons: Consortium, ledger: Ledger) -> None:
    recs = [cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))]
    built, _ = ledger.build_block(recs, proposer=cons.validators[0].public, time="2026-11-21T12:00:01Z")
    checked = ledger.check_block(built.header, recs)
    assert checked.header == built.header
    ledger.commit(checked, certify_single(cons.validators[0], checked.header))
    assert ledger.height == 1


@pytest.mark.parametrize("field", ["log_root", "count", "log_size", "prev", "height", "chain"])
def test_check_block_refuses_a_wrong_header(cons: Consortium, ledger: Ledger, field: str) -> None:
    recs = [cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))]
    built, _ = ledger.build_block(recs, proposer=cons.validators[0].public)
    d = built.header.to_dict()
    d[field] = {"count": 2, "log_size": 2, "height": 2}.get(field, "ab" * 32)
    with pytest.raises(VerificationError) as ei:
        ledger.check_block(Header.from_dict(d), recs)
    assert ei.value.code == "bad_block"


def test_check_block_refuses_bad_records(cons: Consortium, ledger: Ledger) -> None:
    rec = cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))
    built, _ = ledger.build_block([rec], proposer=cons.validators[0].public)
    forged = dict(rec.envelope, sig=cons.bob.sign_bytes(b"x"))
    with pytest.raises(SignatureError):
        ledger.check_block(built.header, [parse_record(forged)])
    stranger = cons.record(cons.carol, "dataset.contribute", cons.dataset_body("c"))
    with pytest.raises(RuleError):
        ledger.check_block(built.header, [stranger])


def test_commit_refuses_a_certificate_for_another_block(cons: Consortium, ledger: Ledger) -> None:
    a, _ = ledger.build_block([cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))],
                              proposer=cons.validators[0].public)
    b, _ = ledger.build_block([cons.record(cons.alice, "dataset.contribute", cons.dataset_body("b"))],
                              proposer=cons.validators[0].public)
    with pytest.raises(CertificateError):
        ledger.commit(a, certify_single(cons.validators[0], b.header))
    assert ledger.height == 0


def test_multi_validator_commit_needs_a_quorum(tmp_path: Path, kit: Any) -> None:
    cons = Consortium(validators=4)
    lg = cons.ledger(tmp_path / "l.db")
    block, _ = lg.build_block([cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))],
                              proposer=cons.validators[1].public, time="2026-11-21T12:00:01Z")
    with pytest.raises(CertificateError):
        lg.commit(block, kit.certify(block.header, cons.validators[:2]))
    with pytest.raises(CertificateError):  # a single validator is not enough here
        lg.commit(block, certify_single(cons.validators[0], block.header))
    lg.commit(block, kit.certify(block.header, cons.validators[1:]))
    assert lg.height == 1 and len(lg.store.head().certificate.votes) == 3  # type: ignore[union-attr]
    lg.store.close()
