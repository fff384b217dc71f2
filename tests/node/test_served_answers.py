"""A real node process (``provledger node start``, granian on its port) answers every request
exactly as the node's app does in process, counts and logs what it refuses in the same way,
and, killed, leaves nothing holding its port."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import make_home
from factory import Consortium
from procs import NodeProcess

from ledger.keys import SigningKey
from node.config import NodeConfig


def _rejected(metrics: str) -> dict[str, float]:
    return {m[0]: float(m[1]) for m in re.findall(r'provledger_rejected_inputs_total\{code="(\w+)"\} ([\d.]+)', metrics)}


def _requests(c: Consortium) -> list[tuple[str, str, bytes]]:
    """(method, path, body): bad input of every kind, good records, and other requests."""
    good = c.envelope(c.alice, "dataset.contribute", c.dataset_body("scans"))
    tampered = copy.deepcopy(good)
    tampered["body"]["items"] += 1
    other_chain = c.envelope(c.alice, "dataset.contribute", c.dataset_body("x"), chain="ab" * 32)
    stranger = c.envelope(SigningKey.generate(), "dataset.contribute", c.dataset_body("y"))
    replay = c.envelope(c.alice, "dataset.contribute", c.dataset_body("scans2"), nonce=good["nonce"])
    orphan = c.envelope(c.bob, "annotation.event", c.annotation_body("nowhere"))
    huge = c.envelope(c.alice, "dataset.contribute", c.dataset_body("big", derived_from=["ab" * 32] * 1200))
    batch = {"records": [c.envelope(c.alice, "dataset.contribute", c.dataset_body("b1")), {"v": 1}, tampered]}
    post = "POST"
    return [
        (post, "/v1/records", b'{"v": 1, '),
        (post, "/v1/records", b""),
        (post, "/v1/records", b"[]"),
        (post, "/v1/records", orjson.dumps({**good, "extra": 1})),
        (post, "/v1/records", orjson.dumps({**good, "sig": "zz" * 64})),
        (post, "/v1/records", orjson.dumps(tampered)),
        (post, "/v1/records", orjson.dumps(other_chain)),
        (post, "/v1/records", orjson.dumps(huge)),
        (post, "/v1/records", orjson.dumps(stranger)),
        (post, "/v1/records?wait=maybe", orjson.dumps(good)),
        (post, "/v1/records?timeout=0", orjson.dumps(good)),
        (post, "/v1/records?wait=true&timeout=60", orjson.dumps(good)),
        (post, "/v1/records", orjson.dumps(good)),  # the same envelope again: committed
        (post, "/v1/records?wait=1", orjson.dumps(replay)),
        (post, "/v1/records", orjson.dumps(orphan)),
        (post, "/v1/records/batch?wait=true&timeout=60", orjson.dumps(batch)),
        (post, "/v1/records", b"x" * (16 * 1024 * 1024 + 1)),
        ("GET", f"/v1/records/{'0' * 64}", b""),
        ("GET", "/v1/records/nothex", b""),
        ("GET", "/v1/identities", b""),
        ("GET", "/v1/datasets/scans", b""),
        ("GET", "/v1/nowhere", b""),
        ("DELETE", "/v1/records", b""),
        ("GET", "/healthz", b""),
    ]


@pytest.mark.e2e
def test_same_answers_as_the_nodes_own_app(tmp_path: Path, start_node: Any) -> None:
    from fastapi.testclient import TestClient

    from node.app import create_app

    c = Consortium()
    node = start_node(make_home(tmp_path / "real", c, block_interval_ms=10))
    in_process = make_home(tmp_path / "inproc", c, block_interval_ms=10)
    requests = _requests(c)
    with TestClient(create_app(in_process)) as app, httpx.Client(base_url=node.url, timeout=90) as http:
        for method, path, body in requests:
            want = app.request(method, path, content=body)
            got = http.request(method, path, content=body)
            assert (got.status_code, got.json()) == (want.status_code, want.json()), (method, path)
            assert got.headers["content-type"] == want.headers["content-type"]
        committed = orjson.loads(requests[11][2])
        rid = http.post("/v1/records", content=requests[11][2]).json()["id"]
        assert http.get(f"/v1/records/{rid}").json()["record"] == committed
        proof, want = http.get(f"/v1/records/{rid}/proof").json(), app.get(f"/v1/records/{rid}/proof").json()
        assert {k: proof[k] for k in ("record", "index", "tree_size", "path")} == {
            k: want[k] for k in ("record", "index", "tree_size", "path")}
        # What the node refused is counted and logged as in process.
        assert _rejected(http.get("/metrics").text) == _rejected(app.get("/metrics").text)
    assert "rejected input: bad_signature: POST /v1/records -> 400" in node.log()
    assert "rejected input: request_too_large: POST /v1/records -> 413" in node.log()


@pytest.mark.e2e
def test_sigkill_leaves_nothing_on_the_port(tmp_path: Path, start_node: Any) -> None:
    c = Consortium()
    home = make_home(tmp_path / "home", c, block_interval_ms=10)
    node = start_node(home)
    env = c.envelope(c.alice, "dataset.contribute", c.dataset_body("kept"))
    assert httpx.post(node.url + "/v1/records?wait=true&timeout=60", content=orjson.dumps(env), timeout=90).status_code == 200
    node.kill()
    again = NodeProcess(home, node.port)  # the same port, at once: not started again if it is busy
    try:
        again.wait_ready()
        assert httpx.get(again.url + "/v1/status").json()["log_size"] == 1
    finally:
        again.stop()


@pytest.mark.e2e
def test_ingress_workers_is_ignored_with_a_warning(tmp_path: Path, start_node: Any) -> None:
    home = make_home(tmp_path / "home", Consortium(), block_interval_ms=10)
    cfg = NodeConfig.load(home)
    cfg.extra["ingress_workers"] = 2
    cfg.save()
    node = start_node(home)
    assert "ingress_workers is no longer used and is ignored" in node.log()
    assert node.terminate() == 0
