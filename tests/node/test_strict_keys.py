"""The small-order forgery against a node (docs/protocol.md 1): an envelope signed "by" the
identity point is a 400 form error, in process and over real HTTP to a real node, and an
admin cannot register such a key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from factory import Consortium

from ledger.genesis import parse_genesis
from ledger.keys import SigningKey
from ledger.records import make_record

FORGED_SIGNER = "01" + "00" * 31
FORGED_SIG = "01" + "00" * 63
MIXED_ORDER = "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d"


def forged(chain: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "chain": chain, "type": "dataset.contribute", "signer": FORGED_SIGNER, "nonce": "n1",
            "ts": "2026-11-21T12:00:00Z", "body": body, "sig": FORGED_SIG}


def refused(r: Any, code: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.json()["code"] == code and r.json()["message"]


def test_forged_envelope_is_a_400_in_process(client: Any, consortium: Consortium) -> None:
    c = consortium
    r = client.post("/v1/records", content=orjson.dumps(forged(c.chain_id, c.dataset_body("x"))))
    refused(r, "bad_key")
    r = client.post("/v1/records/batch", content=orjson.dumps({"records": [forged(c.chain_id, c.dataset_body("x"))]}))
    assert "bad_key" in r.text and "unknown_signer" not in r.text, r.text[:300]


def test_admin_cannot_register_a_small_order_key_in_process(client: Any, consortium: Consortium) -> None:
    c = consortium
    for bad in (FORGED_SIGNER, MIXED_ORDER):
        env = make_record(c.admin_a, c.chain_id, "identity.register",
                          {"key": bad, "name": "mallory", "org": "org-a", "roles": ["admin", "contributor"]})
        refused(client.post("/v1/records", content=orjson.dumps(env)), "bad_key")


@pytest.mark.e2e
def test_forged_envelope_is_a_400_from_a_real_node(node_home: Path, running_node: Any) -> None:
    chain = parse_genesis(json.loads((node_home / "genesis.json").read_text())).chain_id
    alice = SigningKey.load(node_home / "alice.key")
    body = {"dataset": "x", "version": "1", "content_hash": "ab" * 32, "size_bytes": 1, "items": 1,
            "license": "CC-BY-4.0", "modality": "image", "derived_from": [], "privacy_budget": None}
    with running_node(node_home) as url, httpx.Client(base_url=url, timeout=90) as http:
        refused(http.post("/v1/records", content=orjson.dumps(forged(chain, body))), "bad_key")
        # The same body signed by a real participant is accepted: the refusal is the key's.
        ok = http.post("/v1/records", content=orjson.dumps(make_record(alice, chain, "dataset.contribute", body)))
        assert ok.status_code in (200, 202), ok.text[:300]
