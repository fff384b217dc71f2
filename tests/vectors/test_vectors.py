"""The checked-in vectors: regenerating them gives the same bytes, and the library
reproduces every one of them (they are computed without ``ledger``: see generate.py)."""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from ledger import merkle
from ledger.audit import DbSource, audit
from ledger.blocks import Certificate, Header, validators_hash, verify_certificate, vote_payload
from ledger.bundle import BundleSource, write_bundle
from ledger.canonical import VOTE_TAG, signing_bytes
from ledger.chain import Ledger
from ledger.errors import CertificateError
from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.reader import StoreReader
from ledger.records import RECORD_TYPES, make_record, parse_record, record_id, record_signing_bytes
from ledger.state import ChainState
from ledger.store import Store

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("provledger_vector_generator", HERE / "generate.py")
assert _spec and _spec.loader
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

NAMES = ["genesis.json", "record.json", "records.json", "block.json", "certificate.json", "merkle.json",
         "membership.json"]


def vector(name: str) -> Any:
    return json.loads((HERE / name).read_text(encoding="utf-8"))


def test_generator_writes_exactly_the_checked_in_files(tmp_path: Path) -> None:
    written = gen.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(NAMES)
    for name in NAMES:
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), f"{name}: rerun generate.py?"


def test_genesis_vector() -> None:
    v = vector("genesis.json")
    g = parse_genesis(v["genesis"])
    assert g.chain_id == v["chain_id"]
    assert signing_bytes(b"provledger/genesis/v1", v["genesis"]) == v["hashed_text"].encode()


def test_record_vector() -> None:
    v = vector("record.json")
    env = v["envelope"]
    key = SigningKey.from_seed(bytes.fromhex(v["signer_seed"]))
    assert key.public == env["signer"]
    # Signing the same content with the library gives the same envelope, byte for byte.
    body = env["body"]
    assert make_record(key, env["chain"], env["type"], body, nonce=env["nonce"], ts=env["ts"]) == env
    assert record_signing_bytes(env) == v["signing_text"].encode()
    rec = parse_record(env, chain=env["chain"])
    rec.verify_signature()
    assert rec.id == record_id(env) == v["id"]


def test_every_record_type_vector_is_valid_in_order() -> None:
    v = vector("records.json")
    genesis = parse_genesis(vector("genesis.json")["genesis"])
    assert genesis.chain_id == v["chain_id"]
    state = ChainState(genesis)
    types = set()
    for item in v["records"]:
        rec = parse_record(item["envelope"], chain=genesis.chain_id)
        rec.verify_signature()
        assert rec.id == item["id"]
        state.check_apply(rec)
        types.add(rec.type)
    # Every type of version 2: all but the version 1 policy.set record (PROTOCOL.md 3.1).
    assert types == set(RECORD_TYPES) - {"policy.set"}
    assert state.organisations == ["org-a", "org-b"]
    assert state.policy_at(state.size)["annotation"] == Fraction(4, 10)


def test_block_vector() -> None:
    v = vector("block.json")
    header = Header.from_dict(v["header"])
    assert header.hash == v["hash"]
    assert signing_bytes(b"provledger/block/v1", header.to_dict()) == v["hashed_text"].encode()
    ids = [bytes.fromhex(r["id"]) for r in vector("records.json")["records"]]
    assert merkle.root(ids).hex() == header.log_root


def test_certificate_vector() -> None:
    v = vector("certificate.json")
    g = parse_genesis(v["genesis"])
    assert g.chain_id == v["chain_id"] and g.quorum == v["quorum"]
    header = Header.from_dict(v["header"])
    assert header.hash == v["block"]
    payload = vote_payload(g.chain_id, 1, 0, "precommit", header.hash)
    assert payload == v["vote"]
    assert signing_bytes(VOTE_TAG, payload) == v["vote_signing_text"].encode()
    cert = Certificate.from_dict(v["certificate"])
    assert cert.to_dict() == v["certificate"]
    verify_certificate(cert, chain=g.chain_id, height=1, block_hash=header.hash, validators=g.validators)
    for i, vote in enumerate(v["certificate"]["votes"]):
        name = f"validator-{(0, 2, 3)[i]}"
        k = SigningKey.from_seed(gen.seed(name))
        assert k.public == vote["validator"] and k.sign(VOTE_TAG, payload) == vote["sig"]


def test_merkle_vector() -> None:
    v = vector("merkle.json")
    leaves = [bytes.fromhex(x) for x in v["leaves"]]
    nodes = merkle.MemoryNodes(leaves)
    for n, root in v["roots"].items():
        assert merkle.root(leaves[: int(n)]).hex() == root
        assert merkle.root_at(int(n), nodes.get_nodes).hex() == root
    for p in v["inclusion"]:
        m, n = p["index"], p["size"]
        assert [x.hex() for x in merkle.inclusion_proof(m, n, nodes.get_nodes)] == p["path"]
        merkle.verify_inclusion(leaves[m], m, n, [bytes.fromhex(x) for x in p["path"]],
                                bytes.fromhex(v["roots"][str(n)]))
    for p in v["consistency"]:
        m, n = p["first"], p["second"]
        assert [x.hex() for x in merkle.consistency_proof(m, n, nodes.get_nodes)] == p["path"]
        merkle.verify_consistency(m, n, bytes.fromhex(v["roots"][str(m)]), bytes.fromhex(v["roots"][str(n)]),
                                  [bytes.fromhex(x) for x in p["path"]])


def test_membership_vector_replays_block_for_block(tmp_path: Path) -> None:
    """The chain with every kind of change (PROTOCOL.md 9): the library rebuilds every
    header (next_validators included) from its records, accepts every certificate against
    the set certifying its height, keeps the sets of every height, and audits it clean."""
    v = vector("membership.json")
    ledger = Ledger(Store.create(tmp_path / "m.db", v["genesis"]))
    for blk in v["blocks"]:
        header = Header.from_dict(blk["header"])
        assert header.hash == blk["hash"]
        height = header.height
        assert [x.to_dict() for x in ledger.state.validators] == blk["certified_by"]
        block = ledger.check_block(header, [parse_record(e) for e in blk["records"]])
        assert block.header == header  # next_validators as the vector computed it
        assert [x.to_dict() for x in block.state.validators] == blk["validators_after"]
        assert header.next_validators == validators_hash(x["key"] for x in blk["validators_after"])
        cert = Certificate.from_dict(blk["certificate"])
        genesis_set = [x["key"] for x in v["blocks"][0]["certified_by"]]
        if [x["key"] for x in blk["certified_by"]] != genesis_set:  # heights 3 to 6
            with pytest.raises(CertificateError):  # the genesis set no longer certifies
                verify_certificate(cert, chain=header.chain, height=height, block_hash=header.hash,
                                   validators=genesis_set)
        ledger.commit(block, cert)
    state = ledger.state
    assert state.organisations == v["organisations_after"]
    assert {k: str(x) for k, x in state.policy_at(state.size).items()} == {
        k: str(Fraction(x)) for k, x in v["policy_after"].items()}
    reader = StoreReader(ledger.store)
    for blk in v["blocks"]:
        assert [x.to_dict() for x in reader.validators_at(blk["header"]["height"])] == blk["certified_by"]
    # Heights whose next_validators differs from the set certifying them: 2, 3 and 4.
    assert reader.membership_changes(7) == [2, 3, 4] and reader.membership_changes(4) == [2, 3]
    # After a restart the store gives the same state as the replay.
    again = Ledger(Store(tmp_path / "m.db")).state
    assert (again.validators, again.validator_sets, again.organisations, again.proposals, again.policies,
            again.height) == (state.validators, state.validator_sets, state.organisations, state.proposals,
                              state.policies, state.height)
    ledger.store.close()
    bundle = tmp_path / "m.jsonl"
    write_bundle(bundle, v["genesis"], v["blocks"], block_count=len(v["blocks"]),
                 record_count=sum(len(b["records"]) for b in v["blocks"]))
    for source in (DbSource(tmp_path / "m.db"), BundleSource(bundle)):
        report = audit(source)
        assert report.ok, [str(f) for f in report.findings]
        assert report.blocks == 6


@pytest.mark.parametrize("name", NAMES)
def test_vectors_hold_no_floats(name: str) -> None:
    """PROTOCOL.md 1: signed content holds integers and strings only."""
    def walk(x: Any) -> None:
        assert not isinstance(x, float), name
        if isinstance(x, dict):
            for y in x.values():
                walk(y)
        elif isinstance(x, list):
            for y in x:
                walk(y)
    walk(vector(name))
