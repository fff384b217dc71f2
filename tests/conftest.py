"""Shared helpers for the ledger tests: certificates signed by the factory's validator keys
and one varied chain (every record type, several blocks, an empty block, a revocation).

Helpers are handed out through the ``kit`` fixture rather than imported, so this module is
never imported by name (another ``conftest.py`` lives under ``tests/node``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from factory import Consortium, h
from hypothesis import HealthCheck, settings

from ledger.blocks import Certificate, Header, vote_payload
from ledger.canonical import VOTE_TAG
from ledger.chain import Ledger
from ledger.keys import SigningKey

T0 = "2026-11-21T12:00:0{}Z"

# Every property test, on a machine that may be running several suites at once: no time limit
# per example (Hypothesis' default of 200 ms fails a correct test under load, as a "flaky"
# timing), and no health check on how fast examples are generated. The properties and their
# example counts are unchanged.
settings.register_profile("loaded-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("loaded-machine")


def certify(header: Header, keys: list[SigningKey], round: int = 0) -> Certificate:
    """A commit certificate for ``header``: a precommit signed by each of ``keys``."""
    payload = vote_payload(header.chain, header.height, round, "precommit", header.hash)
    return Certificate(header.height, round, header.hash, tuple((k.public, k.sign(VOTE_TAG, payload)) for k in keys))


def commit(ledger: Ledger, records: list[Any], keys: list[SigningKey], *, time: str, round: int = 0) -> Any:
    """Build, certify with ``keys`` and store the next block; every record must be accepted."""
    block, rejected = ledger.build_block(records, proposer=keys[0].public, time=time)
    assert not rejected, [(r.id, str(e)) for r, e in rejected]
    ledger.commit(block, certify(block.header, keys, round))
    return block


@dataclass
class Chain:
    path: Path
    cons: Consortium
    ids: list[list[str]] = field(default_factory=list)  # record ids per height (index 0 = height 1)
    hashes: list[str] = field(default_factory=list)  # block hash per height
    votes: list[int] = field(default_factory=list)  # votes in each block's certificate

    def where(self, record_id: str) -> tuple[int, int]:
        """(height, log index) of a record."""
        index = 0
        for height, ids in enumerate(self.ids, start=1):
            if record_id in ids:
                return height, index + ids.index(record_id)
            index += len(ids)
        raise KeyError(record_id)

    @property
    def all_ids(self) -> list[str]:
        return [i for ids in self.ids for i in ids]


def build_varied(path: Path, cons: Consortium | None = None) -> Chain:
    """Six blocks, 20 records of every version 2 type; block 4 is empty.

    With a multi-validator consortium, odd heights carry every validator's vote and even
    heights exactly a quorum.
    """
    cons = cons or Consortium()
    ledger = cons.ledger(path)
    chain = Chain(path, cons)
    a, b, adm = cons.alice, cons.bob, cons.admin_a
    carol = cons.carol
    n = len(cons.validators)
    quorum = 2 * n // 3 + 1

    def put(height: int, recs: list[Any]) -> None:
        keys = cons.validators if height % 2 else cons.validators[:quorum]
        block = commit(ledger, recs, keys, time=T0.format(height))
        chain.ids.append([r.id for r in recs])
        chain.hashes.append(block.hash)
        chain.votes.append(len(keys))

    reg = cons.record(adm, "identity.register", {"key": carol.public, "name": "carol", "org": "org-a",
                                                 "roles": ["contributor", "trainer", "evaluator"]})
    put(1, [
        reg,
        cons.record(a, "dataset.contribute", cons.dataset_body("mnist", budget=("1.0", "0.0001"))),
        cons.record(b, "dataset.contribute", cons.dataset_body("cifar")),
    ])
    u1 = cons.record(a, "model.update", cons.update_body("m", 1, inputs=[("mnist", 600, "0.25", "0.00001")]))
    u2 = cons.record(b, "model.update", cons.update_body("m", 1, inputs=[("cifar", 500, "0.5", "0.00001")]))
    put(2, [
        cons.record(a, "annotation.event", cons.annotation_body("mnist")),
        cons.record(b, "annotation.event", cons.annotation_body("cifar", method="semi-automatic", quality="0.75")),
        cons.record(carol, "dataset.contribute", cons.dataset_body("mnist-small", items=100, derived_from=["mnist"])),
        u1,
        u2,
    ])
    agg = cons.record(a, "model.update", cons.update_body("m", 1, aggregates=[u1.id, u2.id]))
    put(3, [
        agg,
        cons.record(a, "model.evaluation", {"target": agg.id, "metric": "accuracy", "value": "0.91",
                                             "eval_set_hash": h("eval"), "coalition": ["mnist", "cifar"]}),
        *cons.adoption(cons.policy_action("0.4", "0.4", "0.2")),
        cons.record(carol, "model.update", cons.update_body("m", 2, parent=agg.id,
                                                            inputs=[("mnist-small", 100, "0", "0")])),
    ])
    put(4, [])
    put(5, [
        cons.record(adm, "identity.revoke", {"key": carol.public, "reason": "left the project"}),
        cons.record(b, "dataset.contribute", cons.dataset_body("cifar", "2")),
        cons.record(a, "model.update", cons.update_body("m", 2, parent=agg.id, inputs=[("mnist", 300, "0.25", "0")])),
        cons.record(a, "annotation.event", cons.annotation_body("mnist-small", labels=50, method="automatic")),
    ])
    put(6, [
        cons.record(a, "dataset.contribute", cons.dataset_body("mnist", "2", budget=("1.0", "0.0001"))),
        cons.record(b, "annotation.event", cons.annotation_body("cifar", labels=70)),
        cons.record(a, "model.evaluation", {"target": u1.id, "metric": "loss", "value": "0.3",
                                             "eval_set_hash": h("eval2"), "coalition": None}),
    ])
    ledger.store.close()
    return chain


def drop_triggers(path: Path) -> sqlite3.Connection:
    """An ordinary read-write connection to a store with its append-only triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    for table in ("meta", "blocks", "records", "merkle"):
        for op in ("update", "delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op}")
    return conn


@pytest.fixture
def kit() -> SimpleNamespace:
    return SimpleNamespace(certify=certify, commit=commit, build_varied=build_varied,
                           drop_triggers=drop_triggers, Chain=Chain, T0=T0)


@pytest.fixture(scope="session")
def chain1(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """The varied chain with one validator. Read it, or copy the file before editing."""
    return build_varied(tmp_path_factory.mktemp("chain1") / "clean.db", Consortium())


@pytest.fixture(scope="session")
def chain4(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """The varied chain with four validators. Read it, or copy the file before editing."""
    return build_varied(tmp_path_factory.mktemp("chain4") / "clean.db", Consortium(validators=4))
