"""Signature checks in the verifier processes (node.verify): every flag right, records sent
one per request at the same moment checked together, and a node whose verifier process
dies goes on checking signatures itself."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import until

from ledger.keys import SigningKey
from ledger.records import make_record
from node.verify import Verifiers

H = "ab" * 32


def test_verifiers_flag_each_signature() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    messages = [os.urandom(50 + i % 700) for i in range(300)]
    checks = [(key.public, m, key.sign_bytes(m)) for m in messages]
    bad = {
        3: (key.public, messages[3], key.sign_bytes(b"something else")),  # another message
        40: (other.public, messages[40], checks[40][2]),  # another key
        129: (key.public, messages[129], "zz" * 64),  # not hex
        200: (key.public, messages[200], checks[200][2].upper()),  # hex, but not lowercase
        201: (key.public, messages[201], checks[201][2][:-2]),  # too short
        202: ("00" * 32, messages[202], checks[202][2]),  # a key that is not a curve point
        250: ("01" + "00" * 31, messages[250], "01" + "00" * 63),  # small-order forgery (docs/protocol.md 1)
        299: (key.public, messages[299] + b"x", checks[299][2]),  # the message changed
    }
    for i, check in bad.items():
        checks[i] = check

    async def run() -> list[bool]:
        v = Verifiers(2)
        try:
            first = await v.verify(checks, chunk=64)  # several jobs over both processes
            assert len(v.pids) == 2
            again = await asyncio.gather(*(v.verify(checks[i:i + 10]) for i in range(0, 300, 10)))
            assert [ok for part in again for ok in part] == first
            return first
        finally:
            await v.close()

    flags = asyncio.run(run())
    assert [i for i, ok in enumerate(flags) if not ok] == sorted(bad)


def test_verifiers_exit_when_the_node_closes_them() -> None:
    async def run() -> list[int]:
        v = Verifiers(1)
        await v.start()
        pids = v.pids
        await v.close()
        return pids

    (pid,) = asyncio.run(run())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _dataset(key: SigningKey, chain: str, name: str) -> dict[str, Any]:
    body = {"dataset": name, "version": "1", "content_hash": H, "size_bytes": 10, "items": 1, "license": "MIT",
            "modality": "text", "derived_from": [], "privacy_budget": None}
    return make_record(key, chain, "dataset.contribute", body)


def _verifier_pids(node_pid: int) -> list[int]:
    pids = []
    for child in Path(f"/proc/{node_pid}/task/{node_pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"node.verify" in cmdline:
            pids.append(int(child))
    return pids


@pytest.mark.e2e
def test_concurrent_singles_and_a_dead_verifier(node_home: Path, start_node: Any) -> None:
    # Single records are verified in the node's verifier process.
    node = start_node(node_home)
    key = SigningKey.load(node_home / "alice.key")
    (verifier,) = until("the verifier process", lambda: _verifier_pids(node.proc.pid))  # started with the node
    with httpx.Client(base_url=node.url, timeout=90) as http:
        chain = http.get("/v1/status").json()["chain_id"]

        # Records sent one per request from many threads at once, a few with bad signatures.
        envs = [_dataset(key, chain, f"s{i}") for i in range(200)]
        for i in range(0, 200, 25):
            envs[i]["sig"] = envs[i + 1]["sig"]

        def send(env: dict[str, Any]) -> tuple[int, str]:
            with httpx.Client(base_url=node.url, timeout=90) as c:
                r = c.post("/v1/records", content=orjson.dumps(env))
                return r.status_code, r.json().get("code", r.json().get("status"))

        with cf.ThreadPoolExecutor(16) as ex:
            answers = list(ex.map(send, envs))
        assert [i for i, a in enumerate(answers) if a == (400, "bad_signature")] == list(range(0, 200, 25))
        assert all(a == (202, "pending") for i, a in enumerate(answers) if i % 25)

        # The verifier process dies: the node notices and checks signatures itself.
        os.kill(verifier, signal.SIGKILL)
        batch = [_dataset(key, chain, f"b{i}") for i in range(100)]
        batch[50]["sig"] = batch[51]["sig"]
        res = http.post("/v1/records/batch?wait=true&timeout=60", content=orjson.dumps({"records": batch})).json()["results"]
        assert res[50]["code"] == "bad_signature"
        assert sum(x.get("status") == "committed" for x in res) == 99
        lone = _dataset(key, chain, "after")
        assert http.post("/v1/records?wait=true&timeout=60", content=orjson.dumps(lone)).json()["status"] == "committed"
        assert http.get("/v1/status").json()["log_size"] == (200 - 8) + 99 + 1
    assert node.terminate() == 0
    assert "signature verifier processes failed" in node.log()
