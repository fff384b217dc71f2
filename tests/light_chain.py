"""Header-only chains with membership changes, for light verification tests
(tests/test_light.py, and the explorer's browser check in tests/explorer/test_browser.py).

Every height's certificate is signed, with real keys, by a quorum (or more) of the set
certifying it; each header names the next set (PROTOCOL.md 5, 6, 9.1). ``Chain.history``
is the membership history of PROTOCOL.md 9.4 for the last height.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ledger.blocks import Certificate, Header, quorum, validators_hash, vote_payload
from ledger.canonical import VOTE_TAG
from ledger.genesis import Genesis, parse_genesis
from ledger.keys import SigningKey

TS = "2026-11-21T12:00:00Z"
_KEYS: dict[int, SigningKey] = {}


def vkey(i: int) -> SigningKey:
    if i not in _KEYS:
        _KEYS[i] = SigningKey.from_seed(hashlib.sha256(b"provledger-test-light/" + str(i).encode()).digest())
    return _KEYS[i]


def genesis_of(keys: list[SigningKey]) -> Genesis:
    admin = vkey(10_000)
    return parse_genesis({
        "v": 2, "name": "light", "created": TS,
        "validators": [{"name": f"v{i}", "key": k.public, "url": "http://127.0.0.1:1"} for i, k in enumerate(keys)],
        "organisations": [{"name": "org", "admins": [admin.public]}], "participants": [],
        "policy": {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}},
    })


def certify(header: Header, signers: list[SigningKey], round: int = 0) -> Certificate:
    payload = vote_payload(header.chain, header.height, round, "precommit", header.hash)
    return Certificate(header.height, round, header.hash, tuple((k.public, k.sign(VOTE_TAG, payload)) for k in signers))


@dataclass
class Chain:
    genesis: Genesis
    headers: dict[int, Header]
    certs: dict[int, Certificate]
    sets: dict[int, list[SigningKey]]  # the set certifying each height, 1..t+1

    @property
    def t(self) -> int:
        return max(self.headers)

    def checkpoint(self) -> dict[str, Any]:
        h = self.headers[self.t]
        return {"header": h.to_dict(), "hash": h.hash, "certificate": self.certs[self.t].to_dict()}

    def history(self) -> dict[str, Any]:
        """The membership history of PROTOCOL.md 9.4 for the checkpoint at t."""
        changes = []
        for c in range(1, self.t):
            if self.headers[c].next_validators != validators_hash(k.public for k in self.sets[c]):
                h = self.headers[c]
                changes.append({"header": h.to_dict(), "hash": h.hash, "certificate": self.certs[c].to_dict(),
                                "validators": sorted(k.public for k in self.sets[c + 1])})
        prev = self.headers.get(self.t - 1)
        return {"to": self.t, "changes": changes,
                "previous": None if prev is None else {"header": prev.to_dict(), "hash": prev.hash}}

    def keys_at(self, h: int) -> list[str]:
        return sorted(k.public for k in self.sets[h])


def build(first: list[SigningKey], changes: dict[int, list[SigningKey]], t: int, extra: int = 99) -> Chain:
    """Heights 1..t; the set after block c is ``changes[c]`` where given. Each certificate
    has a quorum of the certifying set plus ``extra`` more of its validators (capped)."""
    genesis = genesis_of(first)
    sets = {1: list(first)}
    headers: dict[int, Header] = {}
    certs: dict[int, Certificate] = {}
    prev = genesis.chain_id
    for h in range(1, t + 1):
        now = sets[h]
        sets[h + 1] = list(changes.get(h, now))
        header = Header(chain=genesis.chain_id, height=h, prev=prev, time=TS, proposer=now[h % len(now)].public,
                        count=0, log_size=0, log_root="00" * 32,
                        next_validators=validators_hash(k.public for k in sets[h + 1]))
        headers[h] = header
        certs[h] = certify(header, now[:min(len(now), quorum(len(now)) + extra)])
        prev = header.hash
    return Chain(genesis, headers, certs, sets)


