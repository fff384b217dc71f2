"""A one-validator chain (``provledger init`` without --validators, real node processes on
127.0.0.1) grows to two validators: a second organisation and its validator are voted in,
the second node starts from a database holding the genesis alone and catches up, and from
the height after the adopting block every certificate carries both validators' signatures
(PROTOCOL.md 9.1: the set after block h certifies h+1, and a quorum of two is both).
Records keep becoming final, submitted to either node (to the second while it is still a full
node, too), and both databases audit clean."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import (
    PARTICIPANT_ROLES,
    NodeProcess,
    free_port,
    init_home,
    provledger_cmd,
    start_node_process,
    until,
)
from test_devnet_faults import datasets

from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.store import Store
from node.config import NodeConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([*provledger_cmd(), *args], capture_output=True, text=True, timeout=300)
    assert (res.returncode == 0) == ok, (args, res.stdout + res.stderr)
    return res


def vote(*args: str) -> dict[str, Any]:
    """``provledger ARGS --wait --json``: the proposal's state once its record is final."""
    out = json.loads(run(*args, "--wait", "--json").stdout)
    return out["proposal_state"]  # type: ignore[no-any-return]


def test_a_one_validator_chain_takes_in_a_second_validator_that_signs_every_later_certificate(
        tmp_path: Path) -> None:
    alice_path = tmp_path / "alice.key"
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    port_a, port_b = free_port(), free_port()
    init_home(home_a, "--port", str(port_a), "--participant-key", f"{alice_path}={PARTICIPANT_ROLES}")
    alice = SigningKey.load(alice_path)
    genesis = json.loads((home_a / "genesis.json").read_text())
    assert len(genesis["validators"]) == 1
    key_a = SigningKey.load(home_a / "validator.key").public
    chain_id = parse_genesis(genesis).chain_id

    # The second organisation's home, as a joining node has it: its keys, the genesis, a
    # database holding the genesis alone, the first node as its peer.
    home_b.mkdir()
    validator_b, admin_b = SigningKey.generate(), SigningKey.generate()
    validator_b.save(home_b / "validator.key")
    admin_b.save(home_b / "admin.key")
    (home_b / "genesis.json").write_bytes((home_a / "genesis.json").read_bytes())
    Store.create(home_b / "ledger.db", genesis).close()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    NodeConfig(home=home_b, node_name="node-b", port=port_b, peers=[url_a]).save()

    nodes: list[NodeProcess] = []
    tag = iter(range(1_000_000))

    def commit(url: str, n: int = 5) -> int:
        """``n`` records submitted to ``url`` become final (on ``url``); the height of the last."""
        recs = datasets(alice, chain_id, f"r{next(tag)}", n)
        r = httpx.post(url + "/v1/records/batch", content=orjson.dumps({"records": recs}), timeout=60)
        assert r.status_code == 200, r.text[:600]
        ids = [x["id"] for x in r.json()["results"] if x.get("status") in ("pending", "committed")]
        assert len(ids) == n, r.text[:600]

        def heights() -> list[int] | None:
            got = [httpx.get(url + f"/v1/records/{i}", timeout=10).json()["height"] for i in ids]
            return got if None not in got else None

        return max(until(f"{n} records final on {url}", heights))

    def blocks(url: str, start: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = httpx.get(url + f"/v1/blocks?from={start}&limit=500", timeout=30).json()["blocks"]
        return got

    try:
        nodes.append(start_node_process(home_a, port_a))
        commit(url_a)
        commit(url_a)

        # With one organisation in force its admin's proposal alone is a majority.
        state = vote("propose", "org-add", "org-2", "--admin", str(home_b / "admin.key"),
                     "--key", str(home_a / "admin.key"), "--node", url_a)
        assert state["status"] == "adopted", state
        commit(url_a)
        # The second node starts from the genesis alone before it is a validator: a full
        # node, it forwards what it is given to the lone validator, whose block loop commits it.
        nodes.append(start_node_process(home_b, port_b))
        commit(url_b)
        # With two, the validator needs both: proposed by org-2's admin, approved by org-1's.
        prop = json.loads(run("propose", "validator-add", "--name", "node-b", "--url", url_b,
                              "--validator-key-file", str(home_b / "validator.key"),
                              "--key", str(home_b / "admin.key"), "--node", url_a, "--wait", "--json").stdout)
        assert prop["proposal_state"]["status"] == "open", prop
        state = vote("approve", prop["id"], "--key", str(home_a / "admin.key"), "--node", url_a)
        assert state["status"] == "adopted", state
        changed = httpx.get(url_a + "/v1/status", timeout=10).json()["height"]  # the adopting block
        vals = httpx.get(url_a + f"/v1/validators?height={changed + 1}", timeout=10).json()["validators"]
        assert [v["key"] for v in vals] == [key_a, validator_b.public]

        # The second node, caught up, takes part from the height after the adopting block.
        first = commit(url_a)
        assert first > changed
        until("node-b caught up and a validator",
              lambda: (s := httpx.get(url_b + "/v1/status", timeout=10).json())["height"] >= first
              and s["consensus"]["validator"])
        for url in (url_b, url_a, url_b):
            commit(url)
        head = commit(url_a)
        for url in (url_a, url_b):
            until(f"{url} at height {head}", lambda u=url: httpx.get(u + "/v1/status", timeout=10).json()["height"]
                  >= head)

        # Up to the change the lone validator certified alone; from the next height on every
        # certificate holds both signatures, and both nodes store the same blocks.
        on_a, on_b = blocks(url_a, 1), blocks(url_b, 1)
        assert [b["hash"] for b in on_a[:head]] == [b["hash"] for b in on_b[:head]]
        signers = [{v["validator"] for v in b["certificate"]["votes"]} for b in on_a[:head]]
        assert signers[:changed] == [{key_a}] * changed
        assert signers[changed:] == [{key_a, validator_b.public}] * (head - changed)
        assert head - changed >= 5
        assert {b["header"]["proposer"] for b in on_a[changed:head]} == {key_a, validator_b.public}
        assert "caught up" in (home_b / "node.log").read_text()
    finally:
        for node in nodes:
            node.stop()

    for home in (home_a, home_b):
        run("audit", "--db", str(home / "ledger.db"))
