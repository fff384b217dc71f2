"""Crash safety with real node processes (issue 3, item 6): SIGKILL while records stream in
loses nothing that was acknowledged as committed; the chain audits clean; the node goes on."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import until

from ledger.audit import DbSource, audit
from ledger.keys import SigningKey
from ledger.records import make_record

pytestmark = pytest.mark.e2e

H = "ab" * 32


def dataset_body(name: str) -> dict[str, Any]:
    return {"dataset": name, "version": "1", "content_hash": H, "size_bytes": 10, "items": 1, "license": "MIT",
            "modality": "text", "derived_from": [], "privacy_budget": None}


def annotation_body(name: str) -> dict[str, Any]:
    return {"dataset": name, "labels_hash": H, "labels": 3, "label_schema": "s", "method": "manual",
            "model": None, "quality": "0.5", "quality_method": "review"}


class Streamer(threading.Thread):
    """Sends batches with ?wait=true and single records without waiting until stopped;
    remembers every record the node acknowledged as committed."""

    def __init__(self, url: str, key: SigningKey, chain: str, tag: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.chain, self.tag = url, key, chain, tag
        self.acked: list[str] = []
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=90) as http:
            while not self.stop.is_set():
                batch = []
                for _ in range(40):
                    n += 1
                    name = f"{self.tag}-{n}"
                    batch.append(make_record(self.key, self.chain, "dataset.contribute", dataset_body(name), nonce=f"{name}-d"))
                    batch.append(make_record(self.key, self.chain, "annotation.event", annotation_body(name), nonce=f"{name}-a"))
                try:
                    single = make_record(self.key, self.chain, "dataset.contribute", dataset_body(f"{self.tag}-s{n}"))
                    http.post("/v1/records", content=orjson.dumps(single))
                    self.sent += len(batch) + 1
                    r = http.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": batch}))
                except httpx.HTTPError:
                    return  # the node is gone
                if r.status_code == 200:
                    self.acked += [x["id"] for x in r.json()["results"] if x.get("status") == "committed"]


def audit_clean(db: Path) -> Any:
    report = audit(DbSource(db))
    assert report.ok, [str(f) for f in report.findings]
    return report


def test_sigkill_loses_no_acknowledged_record(node_home: Path, start_node: Any) -> None:
    key = SigningKey.load(node_home / "alice.key")
    acked: list[str] = []
    chain = ""
    for cycle in range(2):
        node = start_node(node_home)
        chain = chain or httpx.get(node.url + "/v1/status").json()["chain_id"]
        # Everything acknowledged before any earlier crash is still committed.
        with httpx.Client(base_url=node.url, timeout=90) as http:
            for rid in acked:
                assert http.get(f"/v1/records/{rid}").json()["status"] == "committed", rid
        s = Streamer(node.url, key, chain, f"c{cycle}")
        s.start()
        want = 200 * (cycle + 1)
        until(f"{want} records acknowledged", lambda s=s, want=want: len(s.acked) >= want)
        # Land the kill inside the stream: once more has been sent after that (not yet acknowledged).
        sent = s.sent
        until("more records sent", lambda s=s, sent=sent: s.sent > sent, interval=0.001)
        node.kill()
        s.stop.set()
        s.join(120)
        assert not s.is_alive()
        assert len(s.acked) >= 100, node.log()
        acked += s.acked

    node = start_node(node_home)
    with httpx.Client(base_url=node.url, timeout=90) as http:
        status = http.get("/v1/status").json()
        assert status["log_size"] >= len(acked)
        for rid in acked:
            assert http.get(f"/v1/records/{rid}").json()["status"] == "committed", rid
        # ...and carries on: a new record commits on top of what survived.
        env = make_record(key, chain, "dataset.contribute", dataset_body("after-crash"))
        r = http.post("/v1/records?wait=true&timeout=60", content=orjson.dumps(env))
        assert r.status_code == 200 and r.json()["status"] == "committed"
        assert http.get("/v1/status").json()["height"] == status["height"] + 1
    assert node.terminate() == 0
    report = audit_clean(node_home / "ledger.db")
    assert report.records == status["log_size"] + 1


def test_sigterm_finishes_and_closes(node_home: Path, start_node: Any) -> None:
    node = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    with httpx.Client(base_url=node.url, timeout=90) as http:
        chain = http.get("/v1/status").json()["chain_id"]
        batch = [make_record(key, chain, "dataset.contribute", dataset_body(f"t{i}")) for i in range(300)]
        r = http.post("/v1/records/batch", content=orjson.dumps({"records": batch}))
        ids = [x["id"] for x in r.json()["results"]]
    assert node.terminate() == 0
    log = node.log()
    assert "listening on http://127.0.0.1:" in log and "chain " + chain in log
    assert "block 1 committed" in log and "stopped at height" in log
    report = audit_clean(node_home / "ledger.db")
    assert report.records == len(ids)  # accepted before SIGTERM, committed on the way out


def test_running_node_context(node_home: Path, running_node: Any) -> None:
    with running_node(node_home) as url:
        assert httpx.get(url + "/healthz").json()["ok"] is True
        assert httpx.get(url + "/v1/genesis").json()["participants"][0]["name"] == "alice"
