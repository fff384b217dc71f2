"""``202 pending`` is not durable; the client resends the same envelope until committed
(docs/protocol.md 8, "Durability"): a real node killed between submission and commit."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import bound_socket, provledger_cmd, until
from test_crash import dataset_body

from ledger.client import Client
from ledger.keys import SigningKey
from ledger.records import make_record
from ledger.store import Store

pytestmark = pytest.mark.e2e


def warm_up(url: str, key: SigningKey, chain: str) -> None:
    """Commit one record: the block loop's first block starts at once, the next only after
    the interval, so records sent after this one stay pending."""
    with Client(url) as c:
        assert c.submit(make_record(key, chain, "dataset.contribute", dataset_body("warm-up")), wait=True)[
            "status"] == "committed"


def set_interval(home: Path, ms: int) -> None:
    cfg = json.loads((home / "config.json").read_text())
    cfg["block_interval_ms"] = ms
    (home / "config.json").write_text(json.dumps(cfg))


def test_client_resends_the_same_envelope_across_a_crash(node_home: Path, start_node: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    set_interval(node_home, 600_000)  # nothing is committed while the first process runs
    node = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    chain = httpx.get(node.url + "/v1/status").json()["chain_id"]
    warm_up(node.url, key, chain)
    env = make_record(key, chain, "dataset.contribute", dataset_body("across-a-crash"))
    with Client(node.url) as c:
        first = c.submit(env)
        assert first["status"] == "pending"
        rid = first["id"]
        assert c.record(rid)["status"] == "pending"

    result: dict[str, Any] = {}

    def wait_for_commit() -> None:
        with Client(node.url, timeout=5, retry_deadline=120) as c:
            try:
                result["out"] = c.submit(env, wait=True)
            except Exception as e:  # reported below
                result["error"] = e

    caplog.set_level(logging.INFO, logger="provledger.client")
    waiter = threading.Thread(target=wait_for_commit)
    waiter.start()
    node.kill()  # the mempool, and the pending record with it, is gone
    set_interval(node_home, 10)
    restarted = start_node(node_home, node.port)
    waiter.join(timeout=150)
    assert not waiter.is_alive()
    assert "error" not in result, result.get("error")
    assert result["out"] == {"id": rid, "status": "committed"}
    assert any("sending /v1/records again" in r.getMessage() for r in caplog.records)
    assert httpx.get(f"{restarted.url}/v1/records/{rid}").json()["status"] == "committed"
    assert restarted.terminate() == 0
    store = Store(node_home / "ledger.db")
    try:
        assert store.log_size() == 2 and store.record_index(rid) == 1  # stored once
    finally:
        store.close()


def test_submit_wait_gives_up_at_the_deadline(node_home: Path) -> None:
    # No node at all: the same envelope is tried again until the deadline, then the error.
    with bound_socket() as held, Client(f"http://127.0.0.1:{held.getsockname()[1]}", retry_deadline=1.0) as c:
        c._chain_id = "00" * 32
        env = make_record(SigningKey.load(node_home / "alice.key"), c.chain_id, "dataset.contribute",
                          dataset_body("nowhere"))
        with pytest.raises(Exception, match="cannot reach node") as e:
            c.submit(env, wait=True)
        assert getattr(e.value, "code", None) == "unreachable"


def pending_or_fail(cli: subprocess.Popen[str], url: str) -> bool:
    if cli.poll() is not None:
        pytest.fail(f"the CLI ended before the crash: {(cli.returncode, *cli.communicate())}")
    return bool(httpx.get(url + "/v1/status").json()["mempool"] == 1)


def test_cli_submit_wait_survives_a_crash(node_home: Path, start_node: Any) -> None:
    set_interval(node_home, 600_000)
    node = start_node(node_home)
    warm_up(node.url, SigningKey.load(node_home / "alice.key"), httpx.get(node.url + "/v1/status").json()["chain_id"])
    cli = subprocess.Popen(
        [*provledger_cmd(), "submit", "dataset", "--key", str(node_home / "alice.key"), "--node", node.url,
         "--dataset", "cli-d", "--content-hash", "ab" * 32, "--size-bytes", "1", "--items", "1",
         "--license", "MIT", "--modality", "text", "--wait", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until("the CLI's record is pending", lambda: pending_or_fail(cli, node.url))
        node.kill()
        set_interval(node_home, 10)
        restarted = start_node(node_home, node.port)
        out, err = cli.communicate(timeout=150)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, err
    doc = json.loads(out)
    assert doc["status"] == "committed" and doc["proof"]["index"] == 1
    assert httpx.get(f"{restarted.url}/v1/records/{doc['id']}").json()["status"] == "committed"
