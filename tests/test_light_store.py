"""The membership history of a stored chain with real governance records, and proof
documents that verify with the genesis alone across its changes (PROTOCOL.md 9.4):
``ledger.proofs.store_membership_doc``, ``ledger.proofs.proof_doc`` /
``verify_proof_doc``, ``provledger prove`` / ``verify-proof``, ``GET /v1/membership``.

The chain (four validators, two organisations; each change adopted by both):
height 2 adds validator ``new-0``, height 4 replaces validator 0 by ``new-1``, height 6
removes validator 1. Every block is certified by every validator of its own set, so each
change's certificate carries a vote that the set before the previous change does not have:
any change left out is refused.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from factory import Consortium, key
from light_chain import certify

from ledger.chain import Ledger
from ledger.cli import cli
from ledger.errors import LedgerError, NotFoundError, VerificationError
from ledger.governance import make_pop
from ledger.light import verify_checkpoint
from ledger.proofs import proof_doc, store_membership_doc, verify_proof_doc
from ledger.reader import StoreReader
from ledger.store import Store

CHANGES = [2, 4, 6]


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    cons = Consortium(validators=4)
    path = tmp_path_factory.mktemp("moved") / "moved.db"
    ledger = Ledger(Store.create(path, cons.doc))
    keys = {k.public: k for k in [*cons.validators, key("new-0"), key("new-1")]}
    new0, new1 = key("new-0"), key("new-1")
    v = cons.validators

    def put(records: list[Any]) -> None:
        now = [keys[k] for k in ledger.state.validator_keys()]
        block, rejected = ledger.build_block(records, proposer=now[0].public, time=f"2026-11-21T12:00:{ledger.height:02d}Z")
        assert not rejected, [str(e) for _r, e in rejected]
        ledger.commit(block, certify(block.header, now))

    put([cons.record(cons.alice, "dataset.contribute", cons.dataset_body("a"))])  # 1
    put(cons.adoption({"op": "validator.add", "key": new0.public, "name": "new-0", "url": "http://127.0.0.1:9",
                       "pop": make_pop(new0, cons.chain_id)}))  # 2
    put([])  # 3
    put(cons.adoption({"op": "validator.replace", "old": v[0].public, "new": new1.public, "name": "new-1",
                       "url": "http://127.0.0.1:9", "pop": make_pop(new1, cons.chain_id)}))  # 4
    put([])  # 5
    put(cons.adoption({"op": "validator.remove", "key": v[1].public}))  # 6
    rec = cons.record(cons.bob, "dataset.contribute", cons.dataset_body("b"))
    put([rec])  # 7
    put([])  # 8
    ledger.store.close()
    return SimpleNamespace(path=path, cons=cons, record=rec.id, genesis=cons.genesis)


def test_the_stored_history_names_every_change(moved: SimpleNamespace) -> None:
    with Store(moved.path) as store:
        reader = StoreReader(store)
        assert reader.membership_changes(9) == CHANGES
        doc = store_membership_doc(store)
        assert doc["to"] == 8 and [c["header"]["height"] for c in doc["changes"]] == CHANGES
        for c in doc["changes"]:
            assert c["validators"] == sorted(v.key for v in reader.validators_at(c["header"]["height"] + 1))
            assert c["certificate"] == store.block(c["header"]["height"]).certificate.to_dict()
        assert doc["previous"] == {"header": store.block(7).header.to_dict(), "hash": store.block(7).hash}
        assert store_membership_doc(store, 4)["changes"] == doc["changes"][:1]  # changes below 4 only
        assert store_membership_doc(store, 1) == {"to": 1, "changes": [], "previous": None}
        for h in (3, 6, 7, 8):
            cp = {"header": store.block(h).header.to_dict(), "hash": store.block(h).hash,
                  "certificate": store.block(h).certificate.to_dict()}
            keys = verify_checkpoint(moved.genesis, cp, store_membership_doc(store, h))
            assert keys == sorted(v.key for v in reader.validators_at(h))
        for bad in (0, 9):
            with pytest.raises(NotFoundError):
                store_membership_doc(store, bad)


def test_a_proof_across_changes_verifies_with_the_genesis_alone(moved: SimpleNamespace) -> None:
    with Store(moved.path) as store:
        doc = proof_doc(store, moved.record)
    assert doc["checkpoint"]["header"]["height"] == 8 and len(doc["membership"]["changes"]) == 3
    assert verify_proof_doc(json.loads(json.dumps(doc)), moved.genesis, moved.record).height == 8
    for i in range(3):
        left_out = copy.deepcopy(doc)
        del left_out["membership"]["changes"][i]
        with pytest.raises(VerificationError):
            verify_proof_doc(left_out, moved.genesis, moved.record)
    without = {k: v for k, v in doc.items() if k != "membership"}
    with pytest.raises(LedgerError) as e:
        verify_proof_doc(without, moved.genesis, moved.record)
    assert e.value.code == "bad_proof_document"


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_prove_and_verify_proof_on_the_command_line(moved: SimpleNamespace, tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(moved.cons.doc))
    out = tmp_path / "proof.json"
    db = tmp_path / "copy.db"
    shutil.copy(moved.path, db)
    assert run("prove", "--db", str(db), moved.record, "--out", str(out)).exit_code == 0
    ok = run("verify-proof", str(out), "--genesis", str(genesis))
    assert ok.exit_code == 0 and "certified at height 8" in ok.output

    doc = json.loads(out.read_text())
    del doc["membership"]["changes"][2]  # the last change left out: header 7 names another set
    out.write_text(json.dumps(doc))
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "membership.previous" in res.output or "left out" in res.output

    doc["membership"]["changes"] = "none"
    out.write_text(json.dumps(doc))
    res = run("verify-proof", str(out), "--genesis", str(genesis))
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1


def test_prove_from_a_bundle_carries_the_history(moved: SimpleNamespace, tmp_path: Path) -> None:
    bundle = tmp_path / "chain.bundle"
    assert run("export", "bundle", "--db", str(moved.path), "--out", str(bundle)).exit_code == 0
    out = tmp_path / "proof.json"
    assert run("prove", "--bundle", str(bundle), moved.record, "--out", str(out)).exit_code == 0
    with Store(moved.path) as store:
        assert json.loads(out.read_text())["membership"] == store_membership_doc(store)


def test_get_membership(moved: SimpleNamespace, tmp_path: Path) -> None:
    """The node's answer is the stored history; bad and absent heights are JSON errors.
    The app is not started (no lifespan): the node only reads its store here."""
    from fastapi.testclient import TestClient

    from node.app import create_app
    from node.config import NodeConfig

    home = tmp_path / "home"
    home.mkdir()
    moved.cons.validators[2].save(home / "validator.key")  # a validator of the genesis and of the head
    (home / "genesis.json").write_text(json.dumps(moved.cons.doc))
    shutil.copy(moved.path, home / "ledger.db")
    NodeConfig(home=home).save()
    client = TestClient(create_app(home))
    with Store(moved.path) as store:
        for to in (None, 1, 5, 8):
            r = client.get("/v1/membership" + ("" if to is None else f"?to={to}"))
            assert r.status_code == 200 and r.json() == store_membership_doc(store, to)
    r = client.get("/v1/membership?to=9")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    for bad in ("0", "-1", "x", "1.5"):
        r = client.get(f"/v1/membership?to={bad}")
        assert r.status_code == 400 and r.json()["code"] == "bad_request", bad
    proof = client.get(f"/v1/records/{moved.record}/proof").json()
    assert verify_proof_doc(proof, moved.genesis, moved.record).height == 8
    schema = client.get("/openapi.json").json()["paths"]["/v1/membership"]["get"]["responses"]
    assert set(schema) == {"200", "400", "404"}
    assert schema["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Membership"}
    proof_schema = client.get("/openapi.json").json()["components"]["schemas"]["Proof"]
    assert proof_schema["properties"]["membership"] == {"$ref": "#/components/schemas/Membership"}
