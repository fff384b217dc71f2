"""Happy paths of every endpoint, in process, over a real SQLite file."""

from __future__ import annotations

from typing import Any

import orjson
from factory import Consortium

from ledger import merkle
from ledger.genesis import parse_genesis
from ledger.proofs import verify_checkpoint, verify_proof_doc


def post(client: Any, env: dict[str, Any], wait: bool = True) -> Any:
    return client.post("/v1/records" + ("?wait=true&timeout=60" if wait else ""), content=orjson.dumps(env))


def test_submit_wait_fetch_prove(client: Any, consortium: Consortium) -> None:
    c = consortium
    ds = c.envelope(c.alice, "dataset.contribute", c.dataset_body("mnist", budget=("2.0", "0.001")))
    r = post(client, ds)
    assert r.status_code == 200 and r.json()["status"] == "committed"
    ds_id = r.json()["id"]

    ann = c.envelope(c.alice, "annotation.event", c.annotation_body("mnist", labels=500, quality="0.8"))
    upd = c.envelope(c.alice, "model.update", c.update_body("net", 1, inputs=[("mnist", 600, "0.5", "0.0001")]))
    ids = [post(client, e).json()["id"] for e in (ann, upd)]
    ev = c.envelope(c.alice, "model.evaluation", {"target": ids[1], "metric": "accuracy", "value": "0.91",
                                                  "eval_set_hash": "ab" * 32, "coalition": ["mnist"]})
    assert post(client, ev).status_code == 200

    rec = client.get(f"/v1/records/{ids[1]}").json()
    assert rec["status"] == "committed" and rec["record"] == upd
    assert isinstance(rec["height"], int) and rec["index"] == 2

    genesis = parse_genesis(client.get("/v1/genesis").json())
    assert genesis.chain_id == c.chain_id
    for rid in (ds_id, *ids):
        proof = client.get(f"/v1/records/{rid}/proof").json()
        header = verify_proof_doc(proof, genesis, rid)
        assert header.log_size == 4

    ds_doc = client.get("/v1/datasets/mnist").json()
    assert ds_doc["versions"] == {"1": ds_id}
    assert ds_doc["budget"] == {"epsilon": "2", "delta": "0.001"}  # the exact value, shortest (docs/protocol.md 2)
    assert ds_doc["remaining"] == {"epsilon": "1.5", "delta": "0.0009"}
    assert [a["id"] for a in ds_doc["annotations"]] == [ids[0]]
    assert client.get("/v1/datasets/mnist").json() == ds_doc
    assert ds_doc["annotations"][0]["labels"] == 500


def test_checkpoint_block_and_consistency(client: Any, consortium: Consortium) -> None:
    c = consortium
    genesis = parse_genesis(c.doc)
    assert client.get("/v1/checkpoint").status_code == 404  # nothing committed yet
    post(client, c.envelope(c.alice, "dataset.contribute", c.dataset_body("a")))
    cp1 = client.get("/v1/checkpoint").json()
    h1 = verify_checkpoint(cp1, genesis)
    batch = [c.envelope(c.bob, "dataset.contribute", c.dataset_body("b", str(v))) for v in range(5)]
    r = client.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": batch}))
    assert r.status_code == 200
    assert [x["status"] for x in r.json()["results"]] == ["committed"] * 5
    cp2 = client.get("/v1/checkpoint").json()
    h2 = verify_checkpoint(cp2, genesis)
    assert h2.log_size == 6 and h2.height > h1.height
    assert client.get(f"/v1/checkpoint/{h1.height}").json() == cp1

    block = client.get(f"/v1/blocks/{h2.height}").json()
    assert block["header"] == cp2["header"] and block["hash"] == cp2["hash"]
    assert block["certificate"] == cp2["certificate"]
    assert block["records"] == batch[-block["header"]["count"]:]

    cons = client.get(f"/v1/proofs/consistency?first={h1.log_size}&second={h2.log_size}").json()
    assert cons["first"] == h1.log_size and cons["second"] == h2.log_size
    merkle.verify_consistency(h1.log_size, h2.log_size, bytes.fromhex(h1.log_root), bytes.fromhex(h2.log_root),
                              [bytes.fromhex(x) for x in cons["path"]])


def test_idempotent_resubmission(client: Any, consortium: Consortium) -> None:
    c = consortium
    env = c.envelope(c.alice, "dataset.contribute", c.dataset_body("idem"))
    first = post(client, env, wait=False)
    assert first.status_code in (200, 202)
    again = post(client, env, wait=True)
    assert again.status_code == 200 and again.json() == {"id": first.json()["id"], "status": "committed"}
    third = post(client, env, wait=False)
    assert third.status_code == 200 and third.json()["status"] == "committed"
    r = client.post("/v1/records/batch", content=orjson.dumps({"records": [env, env]}))
    assert r.json()["results"] == [{"id": first.json()["id"], "status": "committed"}] * 2


def test_pending_then_committed(client: Any, consortium: Consortium, home: Any) -> None:
    c = consortium
    node = client.app.state.node
    node.interval = 0.3  # hold the next block back long enough to see "pending"
    post(client, c.envelope(c.alice, "dataset.contribute", c.dataset_body("warmup")))
    env = c.envelope(c.alice, "dataset.contribute", c.dataset_body("slow"))
    r = post(client, env, wait=False)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    rec = client.get(f"/v1/records/{r.json()['id']}").json()
    assert rec == {"record": env, "status": "pending", "height": None, "index": None}
    assert post(client, env, wait=False).status_code == 202  # still pending, not a replay
    assert client.get("/v1/status").json()["mempool"] == 1
    assert post(client, env, wait=True).status_code == 200


def test_batch_items_may_depend_on_each_other(client: Any, consortium: Consortium) -> None:
    c = consortium
    carol = c.carol
    reg = c.envelope(c.admin_a, "identity.register",
                     {"key": carol.public, "name": "carol", "org": "org-a", "roles": ["contributor", "annotator"]})
    ds = c.envelope(carol, "dataset.contribute", c.dataset_body("carols"))
    ann = c.envelope(carol, "annotation.event", c.annotation_body("carols"))
    r = client.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": [reg, ds, ann]}))
    assert [x["status"] for x in r.json()["results"]] == ["committed"] * 3
    idents = {i["name"]: i for i in client.get("/v1/identities").json()["identities"]}
    assert idents["carol"]["roles"] == ["annotator", "contributor"] and idents["carol"]["org"] == "org-a"
    assert idents["alice"]["revoked"] is False and "org-a-admin" in idents


def test_batch_one_bad_item_does_not_fail_the_others(client: Any, consortium: Consortium) -> None:
    c = consortium
    good = c.envelope(c.alice, "dataset.contribute", c.dataset_body("g"))
    bad = dict(c.envelope(c.alice, "dataset.contribute", c.dataset_body("h")), sig="00" * 64)
    r = client.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": [bad, good, 7]}))
    res = r.json()["results"]
    assert res[0]["index"] == 0 and res[0]["code"] == "bad_signature"
    assert res[1]["status"] == "committed"
    assert res[2]["index"] == 2 and res[2]["code"] == "bad_type"


def test_status_health_metrics_docs(client: Any, consortium: Consortium) -> None:
    c = consortium
    post(client, c.envelope(c.alice, "dataset.contribute", c.dataset_body("m")))
    st = client.get("/v1/status").json()
    assert st["chain_id"] == c.chain_id and st["height"] == 1 and st["log_size"] == 1
    assert st["validator"] == c.validators[0].public and st["mempool"] == 0
    assert client.get("/healthz").json() == {"ok": True, "height": 1}
    client.post("/v1/records", content=b"{")
    text = client.get("/metrics").text
    assert "provledger_height 1.0" in text
    assert "provledger_log_size 1.0" in text
    assert 'provledger_rejected_inputs_total{code="bad_json"} 1.0' in text
    assert "provledger_commit_seconds_count 1.0" in text
    assert "provledger_http_requests_total" in text
    assert client.get("/openapi.json").json()["paths"]["/v1/records/batch"]["post"]
    assert client.get("/docs").status_code == 200


def test_restart_keeps_state(home: Any, consortium: Consortium) -> None:
    from fastapi.testclient import TestClient

    from node.app import create_app

    c = consortium
    env = c.envelope(c.alice, "dataset.contribute", c.dataset_body("kept", budget=("1", "0.1")))
    with TestClient(create_app(home)) as cl:
        rid = post(cl, env).json()["id"]
    with TestClient(create_app(home)) as cl:
        assert cl.get(f"/v1/records/{rid}").json()["status"] == "committed"
        assert cl.get("/v1/datasets/kept").json()["budget"] == {"epsilon": "1", "delta": "0.1"}
        r = post(cl, c.envelope(c.alice, "dataset.contribute", c.dataset_body("kept", "2")))
        assert r.status_code == 200 and cl.get("/v1/status").json()["height"] == 2


def test_shutdown_commits_what_is_waiting(home: Any, consortium: Consortium) -> None:
    from fastapi.testclient import TestClient

    from ledger.store import Store
    from node.app import create_app

    c = consortium
    with TestClient(create_app(home)) as cl:
        cl.app.state.node.interval = 30.0  # no block would come before shutdown
        post(cl, c.envelope(c.alice, "dataset.contribute", c.dataset_body("x")), wait=False)
        r = post(cl, c.envelope(c.alice, "dataset.contribute", c.dataset_body("y")), wait=False)
        assert r.status_code == 202
    with Store(home / "ledger.db") as s:
        assert s.record_index(r.json()["id"]) is not None


def test_dataset_name_with_slash(client: Any, consortium: Consortium) -> None:
    c = consortium
    post(client, c.envelope(c.alice, "dataset.contribute", c.dataset_body("org-a/cifar")))
    assert client.get("/v1/datasets/org-a/cifar").json()["name"] == "org-a/cifar"


def test_large_batch_verified_in_helper_processes(client: Any, consortium: Consortium) -> None:
    c = consortium
    batch = [c.envelope(c.alice, "dataset.contribute", c.dataset_body(f"p{i}")) for i in range(300)]
    batch[150]["sig"] = batch[151]["sig"]  # one bad signature in the middle
    r = client.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": batch}))
    res = r.json()["results"]
    assert res[150] == {"index": 150, "code": "bad_signature", "message": res[150]["message"]}
    assert sum(x.get("status") == "committed" for x in res) == 299
    assert client.app.state.node.signatures.pool is not None  # the helpers did the work


def test_record_refused_at_block_time_is_dropped(client: Any, consortium: Consortium) -> None:
    from ledger.records import parse_record

    c = consortium
    node = client.app.state.node
    stranger = parse_record(c.envelope(c.carol, "dataset.contribute", c.dataset_body("sneaky")))
    good = c.envelope(c.alice, "dataset.contribute", c.dataset_body("fine"))

    async def smuggle() -> Any:  # past admission, as if the state had changed under it
        node.mempool._records[stranger.id] = stranger
        node.mempool._arrived[stranger.id] = 0.0
        node.block_loop.arrived(len(node.mempool))
        return (await node.wait_committed([stranger.id], 5))[stranger.id]

    err = client.portal.call(smuggle)
    assert err.code == "unknown_signer"
    assert post(client, good).status_code == 200
    assert client.get(f"/v1/records/{stranger.id}").status_code == 404
    assert 'provledger_rejected_inputs_total{code="unknown_signer"} 1.0' in client.get("/metrics").text


def test_mempool_full(tmp_path: Any, consortium: Consortium) -> None:
    from conftest import make_home  # tests/node/conftest.py
    from fastapi.testclient import TestClient

    from node.app import create_app

    c = consortium
    home = make_home(tmp_path / "small", c, block_interval_ms=60_000, extra={"max_mempool": 3})
    with TestClient(create_app(home)) as cl:
        post(cl, c.envelope(c.alice, "dataset.contribute", c.dataset_body("first")))  # first block at once
        for i in range(3):
            assert post(cl, c.envelope(c.alice, "dataset.contribute", c.dataset_body(f"q{i}")), wait=False).status_code == 202
        r = post(cl, c.envelope(c.alice, "dataset.contribute", c.dataset_body("q3")), wait=False)
        assert r.status_code == 503 and r.json()["code"] == "mempool_full"


def test_pending_state_stays_small(client: Any, consortium: Consortium) -> None:
    c = consortium
    for n in range(3):
        batch = [c.envelope(c.alice, "dataset.contribute", c.dataset_body(f"s{n}", str(v))) for v in range(50)]
        client.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": batch}))
    pending = client.app.state.node.mempool.pending
    assert len(pending._nonces) == 0 and pending.size == 150
    dup = c.envelope(c.alice, "dataset.contribute", c.dataset_body("s0", "1"))
    assert post(client, dup).json()["code"] == "duplicate_dataset"
