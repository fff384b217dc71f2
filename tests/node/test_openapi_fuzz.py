"""Schemathesis against a real node process and its own ``/openapi.json``: every check
(``--checks all``), a bounded run; any 5xx, any answer the document does not describe
(status, content type, body schema), any schema-violating request accepted fails it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import PARTICIPANT_ROLES, init_home

from ledger.keys import SigningKey
from ledger.records import make_record

pytestmark = pytest.mark.e2e

# What a schema cannot say: whether a signature verifies, a chain id is this chain's, a
# signer is registered, a log size is reached, a metric was reported. Requests to these
# operations that match their schema may still be refused with their documented 4xx.
_STATE_DEPENDENT = ["/v1/records", "/v1/records/batch", "/v1/peer/message", "/v1/peer/records",
                    "/v1/proofs/consistency", "/v1/attribution/{record_id}", "/v1/lineage/{ref}"]


def _config(path: Path, record_id: str) -> Path:
    """Checks' expected statuses; real ids for the reads, so that they reach the store
    (a drawn id names nothing, and the answer would always be 404)."""
    real = {"/v1/records/{record_id}": ("record_id", record_id), "/v1/records/{record_id}/proof": ("record_id", record_id),
            "/v1/lineage/{ref}": ("ref", record_id), "/v1/blocks/{height}": ("height", 1),
            "/v1/checkpoint/{height}": ("height", 1), "/v1/datasets/{name}": ("name", "scans")}
    lines = [
        "[checks.negative_data_rejection]",
        # 413: a batch over its limit is refused for its size before anything else.
        'expected-statuses = ["400", "404", "405", "413", "422"]',
    ]
    for op in sorted(set(_STATE_DEPENDENT) | set(real)):
        lines += ["", "[[operations]]", f'include-path = "{op}"']
        if op in _STATE_DEPENDENT:
            lines.append('checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "413", "422"]')
        if op in real:
            name, value = real[op]
            lines.append(f"parameters = {{ {name} = {value!r} }}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n")
    return path


def _st() -> list[str]:
    exe = Path(sys.executable).parent / "st"
    return [str(exe)] if exe.exists() else [shutil.which("st") or "st"]


def test_schemathesis_finds_nothing(tmp_path: Path, start_node: Any) -> None:
    home = init_home(tmp_path / "net", "--participant-key", f"{tmp_path / 'net' / 'alice.key'}={PARTICIPANT_ROLES}")
    node = start_node(home)
    chain = httpx.get(node.url + "/v1/status").json()["chain_id"]
    body = {"dataset": "scans", "version": "1", "content_hash": "ab" * 32, "size_bytes": 100, "items": 1,
            "license": "CC-BY-4.0", "modality": "image", "derived_from": [], "privacy_budget": None}
    env = make_record(SigningKey.load(home / "alice.key"), chain, "dataset.contribute", body)
    answer = httpx.post(node.url + "/v1/records?wait=true&timeout=60", content=orjson.dumps(env), timeout=90)
    assert answer.status_code == 200
    run = subprocess.run(
        [*_st(), "--config-file", str(_config(tmp_path / "schemathesis.toml", answer.json()["id"])), "run", node.url + "/openapi.json",
         # The stateful phase runs until --max-time; the phases before it reach every
         # operation within it even on a loaded machine (asserted below).
         "--checks", "all", "--max-examples", "8", "--max-time", "40", "--seed", "1", "--workers", "1",
         "--request-timeout", "60", "--no-color"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )
    out = run.stdout + run.stderr
    report = "\n".join(line[:300] for line in out.splitlines())  # request bodies can be megabytes
    assert run.returncode == 0, report[-6000:]
    reached = re.search(r"Selected: ([0-9]+)/([0-9]+)\s+Tested: ([0-9]+)", out)
    assert reached, report[-3000:]
    selected, total, tested = map(int, reached.groups())
    assert selected == total >= 20 and tested == selected, reached.group(0)  # every operation reached
    assert " ERROR " not in node.log() and "internal error" not in node.log()
