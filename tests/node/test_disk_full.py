"""A full disk under a running node: the node backs off, says so once, reports unhealthy,
refuses writes with 503 ``storage_unavailable``, and recovers by itself when space returns,
losing nothing. A real process with its database on a small tmpfs that the test fills
(where the test may mount one), and in process with SQLite's ``max_page_count`` making
commits fail with SQLITE_FULL (everywhere)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import until
from test_crash import audit_clean, dataset_body

from ledger.keys import SigningKey
from ledger.records import make_record


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test (needs root and a kernel that allows it)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); a full disk cannot be made here")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until the file system has no page left."""
    filler = disk / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
    return filler


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert m, text
    return float(m.group(1))


@pytest.mark.e2e
def test_full_disk_backs_off_refuses_writes_and_recovers(node_home: Path, small_disk: Path, start_node: Any) -> None:
    # The database (and its WAL) on the small disk; the log stays in the home.
    db = small_disk / "ledger.db"
    shutil.move(node_home / "ledger.db", db)
    cfg = json.loads((node_home / "config.json").read_text())
    cfg["db"] = str(db)
    (node_home / "config.json").write_text(json.dumps(cfg))
    node = start_node(node_home)
    url = node.url
    key = SigningKey.load(node_home / "alice.key")
    chain = httpx.get(url + "/v1/status").json()["chain_id"]

    def batch(tag: str, n: int) -> list[dict[str, Any]]:
        return [make_record(key, chain, "dataset.contribute", dataset_body(f"{tag}-{i}"), nonce=f"{tag}-{i}")
                for i in range(n)]

    with httpx.Client(base_url=url, timeout=90) as http:
        r = http.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": batch("before", 50)}))
        acked = [x["id"] for x in r.json()["results"] if x["status"] == "committed"]
        assert len(acked) == 50
        assert metric(url, "provledger_storage_available") == 1

        t_fill = time.monotonic()
        filler = fill(small_disk)
        # Accepted (nobody knows yet), then its block cannot be stored: more pages than the WAL has.
        pending = http.post("/v1/records/batch", content=orjson.dumps({"records": batch("during", 1000)}))
        assert pending.status_code == 200
        waiting = [x["id"] for x in pending.json()["results"] if x.get("status") == "pending"]
        assert len(waiting) == 1000

        health = until("/healthz says 503", lambda: (h := http.get("/healthz")).status_code == 503 and h)
        body = health.json()
        assert body["ok"] is False and body["code"] == "storage_unavailable"
        assert "full" in body["message"]
        assert metric(url, "provledger_storage_available") == 0

        # Writes are refused, one record or a batch, with the stable code.
        one = http.post("/v1/records", content=orjson.dumps(batch("refused", 1)[0]))
        assert one.status_code == 503 and one.json()["code"] == "storage_unavailable"
        many = http.post("/v1/records/batch", content=orjson.dumps({"records": batch("refused-b", 3)}))
        assert many.status_code == 503 and many.json()["code"] == "storage_unavailable"
        # Reads still work.
        assert http.get(f"/v1/records/{acked[0]}").json()["status"] == "committed"

        # Retries go on, with a doubling delay: k failures take at least 0.1 * (2^(k-1) - 1) s.
        failures = until("5 failed commits", lambda: (f := metric(url, "provledger_commit_failures_total")) >= 5 and f)
        failures = metric(url, "provledger_commit_failures_total")
        elapsed = time.monotonic() - t_fill
        assert 0.1 * (2 ** (failures - 1) - 1) <= elapsed, (failures, elapsed)

        filler.unlink()
        until("/healthz says 200 again", lambda: http.get("/healthz").status_code == 200)
        assert metric(url, "provledger_storage_available") == 1
        until("the waiting batch committed", lambda: all(
            http.get(f"/v1/records/{rid}").json()["status"] == "committed" for rid in waiting[-1:]))
        statuses = {http.get(f"/v1/records/{rid}").json()["status"] for rid in [*acked, *waiting]}
        assert statuses == {"committed"}
        after = http.post("/v1/records?wait=true&timeout=60", content=orjson.dumps(batch("after", 1)[0]))
        assert after.status_code == 200 and after.json()["status"] == "committed"

    assert node.terminate() == 0
    log = node.log()
    assert log.count("storage unavailable:") == 1, log
    assert log.count("storage available again") == 1, log
    assert "Traceback" not in log
    audit_clean(db)


def test_sqlite_full_in_process(client: Any, consortium: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    node = client.app.state.node
    c = consortium
    page_count = node.store.conn.execute("PRAGMA page_count").fetchone()[0]
    node.store.conn.execute(f"PRAGMA max_page_count = {page_count}")  # the next block does not fit
    caplog.set_level(logging.INFO, logger="provledger.node")
    envs = [c.envelope(c.alice, "dataset.contribute", c.dataset_body(f"full-{i}")) for i in range(200)]
    r = client.post("/v1/records/batch", content=orjson.dumps({"records": envs}))
    assert r.status_code == 200
    ids = [x["id"] for x in r.json()["results"]]
    assert all(x["status"] == "pending" for x in r.json()["results"])

    until("/healthz says 503", lambda: client.get("/healthz").status_code == 503)
    assert client.get("/healthz").json()["code"] == "storage_unavailable"
    one = client.post("/v1/records", content=orjson.dumps(c.envelope(c.bob, "dataset.contribute", c.dataset_body("x"))))
    assert one.status_code == 503 and one.json()["code"] == "storage_unavailable"
    assert node.metrics.registry.get_sample_value("provledger_storage_available") == 0
    until("3 failed commits", lambda: node.metrics.registry.get_sample_value("provledger_commit_failures_total") >= 3)

    node.store.conn.execute("PRAGMA max_page_count = 1073741823")
    until("/healthz says 200 again", lambda: client.get("/healthz").status_code == 200)
    assert {client.get(f"/v1/records/{rid}").json()["status"] for rid in ids} == {"committed"}
    lines = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("storage unavailable:") for m in lines) == 1, lines
    assert sum(m.startswith("storage available again") for m in lines) == 1, lines
    assert not any(r.exc_info for r in caplog.records)
