"""The ingress processes (node.ingress): a node whose port they serve answers every request
exactly as the node's own app does, counts and logs what they refuse, survives the loss
of one, and leaves nothing holding its port when it is killed."""

from __future__ import annotations

import copy
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import make_home
from factory import Consortium

from ledger.keys import SigningKey
from node.config import NodeConfig


def _with_ingress(home: Path, workers: int) -> Path:
    cfg = NodeConfig.load(home)
    cfg.ingress_workers = workers
    cfg.save()
    return home


def _ingress_pids(log: str) -> list[int]:
    found = re.findall(r"ingress processes serve \S+ \(pids ([\d, ]+)\)", log)
    assert found, log
    return [int(p) for p in found[-1].split(", ")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _rejected(metrics: str) -> dict[str, float]:
    return {m[0]: float(m[1]) for m in re.findall(r'provledger_rejected_inputs_total\{code="(\w+)"\} ([\d.]+)', metrics)}


def _requests(c: Consortium) -> list[tuple[str, str, bytes]]:
    """(method, path, body): bad input of every kind the ingress answers itself, the
    records it passes on, and requests it passes on whole."""
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
        (post, "/v1/records?wait=true&timeout=5", orjson.dumps(good)),
        (post, "/v1/records", orjson.dumps(good)),  # the same envelope again: committed
        (post, "/v1/records?wait=1", orjson.dumps(replay)),
        (post, "/v1/records", orjson.dumps(orphan)),
        (post, "/v1/records/batch?wait=true", orjson.dumps(batch)),
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
    node = start_node(_with_ingress(make_home(tmp_path / "real", c, block_interval_ms=10), 2))
    assert len(_ingress_pids(node.log())) == 2
    in_process = make_home(tmp_path / "inproc", c, block_interval_ms=10)
    requests = _requests(c)
    with TestClient(create_app(in_process)) as app, httpx.Client(base_url=node.url, timeout=30) as http:
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
        # What the ingress processes refused is counted and logged by the node, as its own app does.
        assert _rejected(http.get("/metrics").text) == _rejected(app.get("/metrics").text)
    assert "rejected input: bad_signature: POST /v1/records -> 400" in node.log()
    assert "rejected input: request_too_large: POST /v1/records -> 413" in node.log()


@pytest.mark.e2e
def test_one_lost_ingress_process_is_replaced(tmp_path: Path, start_node: Any) -> None:
    c = Consortium()
    node = start_node(_with_ingress(make_home(tmp_path / "home", c, block_interval_ms=10), 2))
    first, second = _ingress_pids(node.log())
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "starting another" not in node.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"ingress process {first} exited" in node.log()
    # New connections, each handed to a process in turn, all get their answers.
    for i in range(6):
        env = c.envelope(c.alice, "dataset.contribute", c.dataset_body(f"after-{i}"))
        r = httpx.post(node.url + "/v1/records?wait=true", content=orjson.dumps(env), timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "committed"
    assert _alive(second)
    assert node.terminate() == 0


@pytest.mark.e2e
def test_sigkill_leaves_nothing_on_the_port(tmp_path: Path, start_node: Any) -> None:
    c = Consortium()
    home = _with_ingress(make_home(tmp_path / "home", c, block_interval_ms=10), 2)
    node = start_node(home)
    pids = _ingress_pids(node.log())
    env = c.envelope(c.alice, "dataset.contribute", c.dataset_body("kept"))
    assert httpx.post(node.url + "/v1/records?wait=true", content=orjson.dumps(env), timeout=30).status_code == 200
    node.kill()
    deadline = time.monotonic() + 5
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, pids)), "ingress processes outlived their node"
    again = start_node(home, node.port)  # the same port, at once
    assert httpx.get(again.url + "/v1/status").json()["log_size"] == 1


@pytest.mark.e2e
def test_sigterm_to_every_process_stops_the_node_cleanly(tmp_path: Path, start_node: Any) -> None:
    # As a service manager stops a service: SIGTERM to each of its processes at once.
    c = Consortium()
    node = start_node(_with_ingress(make_home(tmp_path / "home", c, block_interval_ms=10), 2))
    pids = _ingress_pids(node.log())
    for pid in pids:  # each ignores SIGTERM from its first line
        deadline = time.monotonic() + 10
        while not _ignores_sigterm(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(pid, signal.SIGTERM)
    assert node.terminate() == 0
    assert not any(map(_alive, pids))
    assert "exited with" not in node.log() and "stopped at height 0" in node.log()
