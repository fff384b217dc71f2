"""``POST /v1/records`` is a bare ASGI endpoint on a Starlette route (node.app): its query,
its errors and its OpenAPI operation are those of a FastAPI route, and the same as
``POST /v1/records/batch``'s (docs/protocol.md 8). In process, over a real SQLite file."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from factory import Consortium


def _dataset(c: Consortium, name: str) -> bytes:
    return orjson.dumps(c.envelope(c.alice, "dataset.contribute", c.dataset_body(name)))


@pytest.mark.parametrize("query, field", [
    ("timeout=0", "query.timeout"), ("timeout=61", "query.timeout"), ("timeout=", "query.timeout"),
    ("timeout=soon", "query.timeout"), ("wait=maybe", "query.wait"), ("wait=true&timeout=-1", "query.timeout"),
])
def test_bad_query_is_the_same_400_on_both_submission_routes(client: Any, consortium: Consortium, query: str,
                                                             field: str) -> None:
    one = client.post(f"/v1/records?{query}", content=_dataset(consortium, "q"))
    batch = client.post(f"/v1/records/batch?{query}", content=b'{"records": []}')
    assert one.status_code == batch.status_code == 400
    assert one.headers["content-type"] == "application/json"
    assert one.json() == batch.json()
    assert one.json()["code"] == "bad_request" and one.json()["field"] == field
    # Refused before the body was read: nothing was admitted.
    assert client.get("/v1/status").json()["mempool"] == 0


def test_query_is_read_as_fastapi_reads_it(client: Any, consortium: Consortium) -> None:
    # The last of repeated names counts; "1" is true; percent-encoding is decoded; unknown names are ignored.
    r = client.post("/v1/records?wait=false&wait=1&timeout=%35&colour=blue", content=_dataset(consortium, "w"))
    assert r.status_code == 200 and r.json()["status"] == "committed"
    r = client.post("/v1/records?wait=true&wait=false", content=_dataset(consortium, "p"))
    assert r.status_code in (200, 202)
    assert r.json()["status"] == ("committed" if r.status_code == 200 else "pending")


def test_answers_are_json_with_length(client: Any, consortium: Consortium) -> None:
    body = _dataset(consortium, "j")
    r = client.post("/v1/records", content=body)
    assert r.status_code == 202
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.json() == {"id": orjson.loads(client.post("/v1/records", content=body).content)["id"],
                        "status": r.json()["status"]}


def test_openapi_operation_of_post_records(client: Any) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/v1/records"]["post"]
    assert op["operationId"] == "post_record_v1_records_post"
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"wait", "timeout"}
    assert params["wait"]["in"] == "query" and params["wait"]["schema"]["type"] == "boolean"
    assert params["timeout"]["schema"]["exclusiveMinimum"] == 0 and params["timeout"]["schema"]["maximum"] == 60
    assert op["requestBody"]["required"] is True
    assert set(op["responses"]) == {"200", "202", "400", "413", "422", "503", "504"}
    assert doc["paths"]["/v1/records/batch"]["post"]["parameters"] == op["parameters"]
