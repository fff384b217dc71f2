"""Every kind of bad input gets a JSON error with a stable code and the right status, never
a 500 (issue 3, item 4). In process, over a real SQLite file."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from factory import Consortium, h

from ledger.records import make_record, record_signing_bytes


def post(client: Any, payload: Any, path: str = "/v1/records", **kw: Any) -> Any:
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return client.post(path, content=content, **kw)


def err(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


def resign(env: dict[str, Any], key: Any) -> dict[str, Any]:
    env = {k: v for k, v in env.items() if k != "sig"}
    env["sig"] = key.sign_bytes(record_signing_bytes(env))
    return env


@pytest.fixture
def c(consortium: Consortium) -> Consortium:
    return consortium


def dataset(c: Consortium, name: str = "d", **kw: Any) -> dict[str, Any]:
    return c.envelope(c.alice, "dataset.contribute", c.dataset_body(name, **kw))


# --- malformed requests (400) ------------------------------------------------------------------
def test_malformed_json(client: Any) -> None:
    err(post(client, b'{"v": 1, '), 400, "bad_json")


def test_empty_body(client: Any) -> None:
    err(post(client, b""), 400, "bad_json")


def test_body_not_utf8(client: Any) -> None:
    err(post(client, b'{"v": "\xff\xfe"}'), 400, "bad_json")


def test_wrong_top_level_type(client: Any, c: Consortium) -> None:
    err(post(client, [dataset(c)]), 400, "bad_type")


def test_unknown_envelope_field(client: Any, c: Consortium) -> None:
    body = err(post(client, {**dataset(c), "extra": 1}), 400, "unknown_field")
    assert body["field"] == "extra"


def test_unknown_body_field(client: Any, c: Consortium) -> None:
    b = c.dataset_body("d")
    b["colour"] = "blue"
    body = err(post(client, c.envelope(c.alice, "dataset.contribute", b)), 400, "unknown_field")
    assert body["field"] == "body.colour"


def test_missing_field(client: Any, c: Consortium) -> None:
    b = c.dataset_body("d")
    del b["license"]
    body = err(post(client, c.envelope(c.alice, "dataset.contribute", b)), 400, "missing_field")
    assert body["field"] == "body.license"


def test_wrong_type(client: Any, c: Consortium) -> None:
    b = c.dataset_body("d")
    b["size_bytes"] = "1000"
    err(post(client, c.envelope(c.alice, "dataset.contribute", b)), 400, "bad_type")


def test_float_where_decimal_string_belongs(client: Any, c: Consortium) -> None:
    b = c.annotation_body("d")
    b["quality"] = 0.9
    err(post(client, c.envelope(c.alice, "annotation.event", b)), 400, "bad_type")


def test_bad_decimal(client: Any, c: Consortium) -> None:
    b = c.annotation_body("d", quality="0,9")
    err(post(client, c.envelope(c.alice, "annotation.event", b)), 400, "bad_decimal")


def test_bad_time(client: Any, c: Consortium) -> None:
    err(post(client, c.envelope(c.alice, "dataset.contribute", c.dataset_body("d"), ts="2026-11-21 12:00:00")), 400, "bad_time")


def test_unknown_record_type(client: Any, c: Consortium) -> None:
    err(post(client, c.envelope(c.alice, "dataset.delete", {"dataset": "d"})), 400, "unknown_type")


def test_bad_hex(client: Any, c: Consortium) -> None:
    b = c.dataset_body("d")
    b["content_hash"] = b["content_hash"].upper()
    body = err(post(client, c.envelope(c.alice, "dataset.contribute", b)), 400, "bad_hex")
    assert body["field"] == "body.content_hash"


def test_bad_hex_signer(client: Any, c: Consortium) -> None:
    env = dataset(c)
    env["signer"] = "zz" * 32
    err(post(client, env), 400, "bad_hex")


def test_bad_signature(client: Any, c: Consortium) -> None:
    env = dataset(c)
    env["sig"] = ("0" if env["sig"][0] != "0" else "1") + env["sig"][1:]
    err(post(client, env), 400, "bad_signature")


def test_tampered_body_breaks_signature(client: Any, c: Consortium) -> None:
    env = dataset(c)
    env["body"]["items"] += 1
    err(post(client, env), 400, "bad_signature")


def test_signature_by_another_key(client: Any, c: Consortium) -> None:
    env = resign(dataset(c), c.bob)  # signer field still says alice
    err(post(client, env), 400, "bad_signature")


def test_another_chains_id(client: Any, c: Consortium) -> None:
    env = c.envelope(c.alice, "dataset.contribute", c.dataset_body("d"), chain=h("another chain"))
    body = err(post(client, env), 400, "wrong_chain")
    assert body["field"] == "chain"


def test_wrong_version(client: Any, c: Consortium) -> None:
    env = dataset(c)
    env["v"] = 2
    err(post(client, resign(env, c.alice)), 400, "bad_version")


def test_integer_out_of_range(client: Any, c: Consortium) -> None:
    raw = orjson.dumps(dataset(c))
    err(post(client, raw.replace(b'"items":1000', b'"items":1' + b"0" * 40)), 400, "bad_type")  # parsed as a float
    err(post(client, raw.replace(b'"items":1000', b'"items":' + str(2**60).encode())), 400, "bad_value")


def test_bad_query_parameter(client: Any, c: Consortium) -> None:
    body = err(post(client, dataset(c), params={"wait": "perhaps"}), 400, "bad_request")
    assert "wait" in body["field"]


# --- the chain's state refuses (422) -----------------------------------------------------------
def test_unregistered_signer(client: Any, c: Consortium) -> None:
    env = c.envelope(c.carol, "dataset.contribute", c.dataset_body("d"))
    err(post(client, env), 422, "unknown_signer")


def test_revoked_signer(client: Any, c: Consortium) -> None:
    rev = c.envelope(c.admin_a, "identity.revoke", {"key": c.alice.public, "reason": "left"})
    assert post(client, rev, params={"wait": "true"}).status_code == 200
    err(post(client, dataset(c)), 422, "revoked_signer")


def test_revoked_in_the_same_pending_window(client: Any, c: Consortium) -> None:
    client.app.state.node.interval = 30.0
    post(client, dataset(c, "warm"), params={"wait": "true"})
    rev = c.envelope(c.admin_a, "identity.revoke", {"key": c.alice.public, "reason": "left"})
    assert post(client, rev).status_code == 202
    err(post(client, dataset(c, "after")), 422, "revoked_signer")


def test_wrong_role(client: Any, c: Consortium) -> None:
    target = c.envelope(c.bob, "model.update", c.update_body("m", 1, inputs=[("d", 1, "0", "0")]))
    post(client, dataset(c), params={"wait": "true"})
    tid = post(client, target, params={"wait": "true"}).json()["id"]
    ev = c.envelope(c.bob, "model.evaluation", {"target": tid, "metric": "acc", "value": "0.5",
                                                 "eval_set_hash": h("e"), "coalition": None})
    err(post(client, ev), 422, "forbidden_role")  # bob is no evaluator


def test_admin_of_another_org(client: Any, c: Consortium) -> None:
    reg = c.envelope(c.admin_b, "identity.register", {"key": c.carol.public, "name": "carol", "org": "org-a", "roles": ["contributor"]})
    err(post(client, reg), 422, "forbidden_role")


def test_replayed_nonce_committed(client: Any, c: Consortium) -> None:
    assert post(client, dataset(c, "a", items=1, ), params={"wait": "true"}).status_code == 200
    again = c.envelope(c.alice, "dataset.contribute", c.dataset_body("b"), nonce="n0")
    err(post(client, again), 422, "replayed_nonce")


def test_replayed_nonce_pending(client: Any, c: Consortium) -> None:
    client.app.state.node.interval = 30.0
    post(client, dataset(c, "warm"), params={"wait": "true"})
    first = c.envelope(c.alice, "dataset.contribute", c.dataset_body("a"), nonce="same")
    assert post(client, first).status_code == 202
    err(post(client, c.envelope(c.alice, "dataset.contribute", c.dataset_body("b"), nonce="same")), 422, "replayed_nonce")


def test_missing_dataset_reference(client: Any, c: Consortium) -> None:
    body = err(post(client, c.envelope(c.alice, "annotation.event", c.annotation_body("nowhere"))), 422, "missing_reference")
    assert body["field"] == "body.dataset"


def test_missing_record_reference(client: Any, c: Consortium) -> None:
    post(client, dataset(c), params={"wait": "true"})
    upd = c.envelope(c.alice, "model.update", c.update_body("m", 2, inputs=[("d", 1, "0", "0")], parent=h("no such update")))
    err(post(client, upd), 422, "missing_reference")


def test_duplicate_dataset_version(client: Any, c: Consortium) -> None:
    post(client, dataset(c), params={"wait": "true"})
    err(post(client, dataset(c)), 422, "duplicate_dataset")


def test_budget_exceeded(client: Any, c: Consortium) -> None:
    post(client, dataset(c, budget=("1", "0.01")), params={"wait": "true"})
    spend = c.envelope(c.alice, "model.update", c.update_body("m", 1, inputs=[("d", 10, "0.6", "0.001")]))
    assert post(client, spend, params={"wait": "true"}).status_code == 200
    over = c.envelope(c.alice, "model.update", c.update_body("m", 2, inputs=[("d", 10, "0.6", "0.001")]))
    body = err(post(client, over), 422, "budget_exceeded")
    assert "'d'" in body["message"] and "0.6" in body["message"] and "0.4" in body["message"]


def test_budget_exceeded_by_pending_records(client: Any, c: Consortium) -> None:
    client.app.state.node.interval = 30.0
    post(client, dataset(c, budget=("1", "0.01")), params={"wait": "true"})
    a = c.envelope(c.alice, "model.update", c.update_body("m", 1, inputs=[("d", 10, "0.6", "0")]))
    b = c.envelope(c.alice, "model.update", c.update_body("m", 2, inputs=[("d", 10, "0.6", "0")]))
    r = post(client, {"records": [a, b]}, "/v1/records/batch")
    res = r.json()["results"]
    assert res[0]["status"] == "pending"
    assert res[1]["index"] == 1 and res[1]["code"] == "budget_exceeded"


# --- sizes (413) -------------------------------------------------------------------------------
def test_record_too_large(client: Any, c: Consortium) -> None:
    body = c.update_body("m", 1, inputs=[("d", 1, "0", "0")])
    body["metrics"] = {f"{i:04d}" + "x" * 1000: "0.5" for i in range(70)}
    env = make_record(c.alice, c.chain_id, "model.update", body, nonce="big", ts="2026-11-21T12:00:00Z")
    err(post(client, env), 413, "record_too_large")


def test_request_too_large(client: Any) -> None:
    err(post(client, b"[" + b" " * (16 * 1024 * 1024) + b"]"), 413, "request_too_large")


def test_request_too_large_without_content_length(client: Any) -> None:
    def chunks() -> Any:
        for _ in range(17):
            yield b" " * (1024 * 1024)

    err(client.post("/v1/records/batch", content=chunks()), 413, "request_too_large")


def test_batch_too_large(client: Any) -> None:
    err(post(client, {"records": [{}] * 10_001}, "/v1/records/batch"), 413, "batch_too_large")


# --- batch shape (400) -----------------------------------------------------------------------------
def test_batch_not_an_object(client: Any, c: Consortium) -> None:
    err(post(client, [dataset(c)], "/v1/records/batch"), 400, "bad_type")


def test_batch_unknown_field(client: Any, c: Consortium) -> None:
    err(post(client, {"records": [], "more": 1}, "/v1/records/batch"), 400, "unknown_field")


def test_batch_records_missing(client: Any) -> None:
    err(post(client, {}, "/v1/records/batch"), 400, "missing_field")


def test_batch_records_not_an_array(client: Any) -> None:
    err(post(client, {"records": {"a": 1}}, "/v1/records/batch"), 400, "bad_type")


def test_batch_malformed_json(client: Any) -> None:
    err(post(client, b'{"records": [', "/v1/records/batch"), 400, "bad_json")


# --- reads and routes ----------------------------------------------------------------------------
def test_unknown_record(client: Any) -> None:
    err(client.get(f"/v1/records/{h('nothing')}"), 404, "not_found")
    err(client.get(f"/v1/records/{h('nothing')}/proof"), 404, "not_found")


def test_bad_record_id(client: Any) -> None:
    err(client.get("/v1/records/xyz"), 400, "bad_hex")


def test_unknown_block_and_checkpoint(client: Any) -> None:
    err(client.get("/v1/blocks/99"), 404, "not_found")
    err(client.get("/v1/checkpoint/0"), 404, "not_found")
    err(client.get("/v1/blocks/one"), 400, "bad_request")


def test_unknown_dataset(client: Any) -> None:
    err(client.get("/v1/datasets/nope"), 404, "not_found")


def test_bad_consistency_range(client: Any) -> None:
    err(client.get("/v1/proofs/consistency?first=2&second=1"), 400, "bad_range")
    err(client.get("/v1/proofs/consistency?first=0&second=5"), 400, "bad_range")
    err(client.get("/v1/proofs/consistency?first=a&second=1"), 400, "bad_request")
    err(client.get("/v1/proofs/consistency"), 400, "bad_request")


def test_unknown_route_and_method(client: Any) -> None:
    err(client.get("/v2/records"), 404, "not_found")
    err(client.put("/v1/records"), 405, "method_not_allowed")


def test_wait_times_out(client: Any, c: Consortium) -> None:
    client.app.state.node.interval = 30.0
    post(client, dataset(c, "warm"), params={"wait": "true"})
    err(post(client, dataset(c, "late"), params={"wait": "true", "timeout": "0.2"}), 504, "commit_timeout")


def test_internal_error_is_json_and_logged(client: Any, caplog: Any) -> None:
    def broken(record_id: str) -> Any:
        raise RuntimeError("disk on fire")

    client.app.state.node.store.record = broken  # an unexpected failure deep inside
    r = client.get(f"/v1/records/{h('x')}")
    assert r.status_code == 500 and r.json()["code"] == "internal"
    assert "disk on fire" not in r.text
    assert any("internal error" in rec.getMessage() for rec in caplog.records)


# --- never a 500 -----------------------------------------------------------------------------------
JUNK: list[Any] = [None, True, 0, -1, 2**53, 1.5, "", "x" * 2000, "0" * 64, [], [1], {}, {"a": 1}]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def test_every_field_with_junk_is_a_clean_error(client: Any, c: Consortium) -> None:
    post(client, dataset(c), params={"wait": "true"})
    seeds = [
        dataset(c, "d2", budget=("1", "0.1")),
        c.envelope(c.alice, "annotation.event", c.annotation_body("d", method="automatic")),
        c.envelope(c.alice, "model.update", c.update_body("m", 1, inputs=[("d", 5, "0.1", "0")])),
    ]
    batch = []
    for seed in seeds:
        for path in _paths(seed):
            for junk in JUNK:
                env = copy.deepcopy(seed)
                target = env
                for p in path[:-1]:
                    target = target[p]
                target[path[-1]] = junk
                batch.append(env)
    r = post(client, {"records": batch}, "/v1/records/batch")
    assert r.status_code == 200
    for item in r.json()["results"]:
        assert "status" in item or (item["code"] and item["message"] and item["code"] != "internal"), item
    for env in batch[:: max(1, len(batch) // 60)]:
        assert post(client, env).status_code in (200, 202, 400, 413, 422)


BIG = "99999999999999999999"  # over SQLite's 64-bit INTEGER: an OverflowError if it reached the store


@pytest.mark.parametrize("path", [
    f"/v1/checkpoint/{BIG}", f"/v1/blocks/{BIG}", f"/v1/blocks?from={BIG}", "/v1/blocks?from=0",
    f"/v1/blocks?from=1&limit={BIG}", f"/v1/blocks?from=1&records={BIG}", "/v1/checkpoint/-1",
    f"/v1/proofs/consistency?first=0&second={BIG}", f"/v1/proofs/consistency?first={BIG}&second=1",
    f"/v1/records?wait=true&timeout={BIG}",
])
def test_integer_parameters_out_of_range(client: Any, path: str) -> None:
    r = client.post(path, content=b"{}") if path.startswith("/v1/records") else client.get(path)
    body = err(r, 400, "bad_request")
    assert body["field"]


def test_attribution_total_out_of_range(client: Any) -> None:
    err(client.get(f"/v1/attribution/{h('m')}?total={BIG}"), 400, "bad_total")
    err(client.get(f"/v1/attribution/{h('m')}?total=1%0A"), 400, "bad_total")
    err(client.get(f"/v1/attribution/{h('m')}"), 400, "bad_total")
    err(client.get("/v1/attribution/xyz?total=1"), 400, "bad_hex")


def test_405_names_the_allowed_methods(client: Any) -> None:
    r = client.put("/v1/records")
    err(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    r = client.get("/v1/records/batch")
    err(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


def test_openapi_tells_the_error_body_and_statuses(client: Any) -> None:
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/v1/records"]["post"]
    assert set(post["responses"]) == {"200", "202", "400", "413", "422", "503", "504"}
    assert "HTTPValidationError" not in str(doc)
    error = doc["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "message"}
    record = doc["paths"]["/v1/records/{record_id}"]["get"]["parameters"][0]
    assert record["schema"]["pattern"] == "^[0-9a-f]{64}$"
    height = doc["paths"]["/v1/blocks/{height}"]["get"]["parameters"][0]["schema"]
    assert height["maximum"] == 2**63 - 1
    consistency = doc["paths"]["/v1/proofs/consistency"]["get"]["parameters"]
    assert all(p["required"] for p in consistency)
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
