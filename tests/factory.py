"""A small deterministic consortium for tests: fixed keys, a genesis, record builders.

Keys come from fixed seeds so that every run (and every failing seed) is reproducible.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

from ledger.chain import Ledger
from ledger.genesis import Genesis, parse_genesis
from ledger.keys import SigningKey
from ledger.records import Record, make_record, parse_record
from ledger.store import Store

TS = "2026-11-21T12:00:00Z"


def key(name: str) -> SigningKey:
    """The fixed test key called ``name``."""
    return SigningKey.from_seed(hashlib.sha256(b"provledger-test-key/" + name.encode()).digest())


def h(text: str) -> str:
    """A stand-in SHA-256 content hash."""
    return hashlib.sha256(text.encode()).hexdigest()


class Consortium:
    """Two organisations, one validator, participants with every role.

    ``alice`` (org-a): contributor, annotator, trainer, evaluator
    ``bob`` (org-b): contributor, annotator, trainer
    ``admin_a`` / ``admin_b``: admins of org-a / org-b
    """

    def __init__(self, validators: int = 1, url: str = "http://127.0.0.1:8000", orgs: int = 2) -> None:
        """``orgs`` > 2 adds organisations org-c, org-d, ... each with one admin
        (``admins["org-c"]`` = key "admin-c", ...)."""
        self.validators = [key(f"validator-{i}") for i in range(validators)]
        self.admin_a, self.admin_b = key("admin-a"), key("admin-b")
        self.alice, self.bob, self.carol = key("alice"), key("bob"), key("carol")
        self.doc: dict[str, Any] = {
            "v": 2,
            "name": "test-consortium",
            "created": TS,
            "validators": [
                {"name": f"node-{i}", "key": v.public, "url": url} for i, v in enumerate(self.validators)
            ],
            "organisations": [
                {"name": "org-a", "admins": [self.admin_a.public]},
                {"name": "org-b", "admins": [self.admin_b.public]},
            ],
            "participants": [
                {"key": self.alice.public, "name": "alice", "org": "org-a",
                 "roles": ["contributor", "annotator", "trainer", "evaluator"]},
                {"key": self.bob.public, "name": "bob", "org": "org-b",
                 "roles": ["contributor", "annotator", "trainer"]},
            ],
            "policy": {"attribution": {"data": "0.5", "annotation": "0.3", "training": "0.2"}},
        }
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.admins: dict[str, SigningKey] = {"org-a": self.admin_a, "org-b": self.admin_b}
        for letter in letters[2:orgs]:
            self.admins[f"org-{letter}"] = key(f"admin-{letter}")
            self.doc["organisations"].append({"name": f"org-{letter}", "admins": [key(f"admin-{letter}").public]})
        if orgs < 2:
            self.doc["organisations"] = self.doc["organisations"][:orgs]
            self.doc["participants"] = [p for p in self.doc["participants"] if p["org"] in self.admins and
                                        p["org"] in {o["name"] for o in self.doc["organisations"]}]
            self.admins = {o["name"]: self.admins[o["name"]] for o in self.doc["organisations"]}
        self.genesis: Genesis = parse_genesis(self.doc)
        self.chain_id = self.genesis.chain_id
        self._nonce = itertools.count()

    # -- records --------------------------------------------------------------------
    def envelope(self, signer: SigningKey, rtype: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        kw.setdefault("nonce", f"n{next(self._nonce)}")
        kw.setdefault("ts", TS)
        return make_record(signer, kw.pop("chain", self.chain_id), rtype, body, **kw)

    def record(self, signer: SigningKey, rtype: str, body: dict[str, Any], **kw: Any) -> Record:
        return parse_record(self.envelope(signer, rtype, body, **kw))

    @staticmethod
    def dataset_body(name: str, version: str = "1", *, items: int = 1000, budget: tuple[str, str] | None = None,
                     derived_from: list[str] | None = None) -> dict[str, Any]:
        return {
            "dataset": name, "version": version, "content_hash": h(f"{name}/{version}"),
            "size_bytes": items * 100, "items": items, "license": "CC-BY-4.0", "modality": "image",
            "derived_from": derived_from or [],
            "privacy_budget": None if budget is None else {"epsilon": budget[0], "delta": budget[1]},
        }

    @staticmethod
    def annotation_body(dataset: str, *, labels: int = 100, quality: str = "0.9", method: str = "manual") -> dict[str, Any]:
        return {
            "dataset": dataset, "labels_hash": h(f"labels/{dataset}/{labels}"), "labels": labels,
            "label_schema": "imagenet-1k", "method": method,
            "model": None if method == "manual" else h("labeller"), "quality": quality,
            "quality_method": "expert-review",
        }

    @staticmethod
    def update_body(model: str, rnd: int, *, inputs: list[tuple[str, int, str, str]] | None = None,
                    aggregates: list[str] | None = None, parent: str | None = None) -> dict[str, Any]:
        return {
            "model": model, "round": rnd, "parent": parent, "weights_hash": h(f"{model}/{rnd}/{inputs}/{aggregates}"),
            "inputs": [{"dataset": d, "samples": n, "epsilon": e, "delta": dl} for d, n, e, dl in (inputs or [])],
            "aggregates": aggregates or [], "metrics": {"loss": "0.25"},
        }

    # -- governance (PROTOCOL.md 9.2, 9.3) ---------------------------------------------
    @staticmethod
    def policy_action(data: str, annotation: str, training: str) -> dict[str, Any]:
        return {"op": "policy.set", "attribution": {"data": data, "annotation": annotation, "training": training}}

    def propose(self, signer: SigningKey, action: dict[str, Any], *, expires: int = 1_000_000, reason: str = "",
                **kw: Any) -> Record:
        return self.record(signer, "network.propose", {"action": action, "expires": expires, "reason": reason}, **kw)

    def approve(self, signer: SigningKey, proposal: str, **kw: Any) -> Record:
        return self.record(signer, "network.approve", {"proposal": proposal}, **kw)

    def adoption(self, action: dict[str, Any], admins: list[SigningKey] | None = None, **kw: Any) -> list[Record]:
        """The proposal of ``action`` by the first of ``admins`` and the approvals of the
        others (default: admin_a proposes, admin_b approves: both organisations)."""
        first, *rest = admins or [self.admin_a, self.admin_b]
        prop = self.propose(first, action, **kw)
        return [prop, *(self.approve(a, prop.id) for a in rest)]

    # -- stores ---------------------------------------------------------------------
    def ledger(self, path: Path) -> Ledger:
        return Ledger(Store.create(path, self.doc))
