"""Lineage: the graph back from a model version, and forward from a dataset.

``Chain`` (used by the attribution, PROV, bundle and Shapley tests too) builds valid
chains on the factory consortium: every record is checked by ``ChainState`` as it is
added, and the chain can be read in memory or committed to a real store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from factory import TS, Consortium, key

from ledger.errors import InputError, RuleError
from ledger.keys import SigningKey
from ledger.lineage import lineage, model_lineage, to_dot, to_tree, trace
from ledger.reader import MemoryReader, StoreReader
from ledger.records import Record
from ledger.state import ChainState
from ledger.store import Store


class Chain:
    """A chain under construction: records are state-checked as they are added."""

    def __init__(self, prefix: str = "") -> None:
        self.c = Consortium()
        self.prefix = prefix
        self.state = ChainState(self.c.genesis)
        self.blocks: list[list[Record]] = [[]]
        self.keys: dict[str, SigningKey] = {"alice": self.c.alice, "bob": self.c.bob}

    # -- participants ---------------------------------------------------------------------
    def member(self, name: str, org: str = "org-a", roles: tuple[str, ...] = ("contributor", "annotator", "trainer", "evaluator")) -> SigningKey:
        """Register (once) a participant; ``prefix`` changes every key but not the names."""
        if name in self.keys:
            return self.keys[name]
        k = key(self.prefix + name)
        admin = self.c.admin_a if org == "org-a" else self.c.admin_b
        self.add(admin, "identity.register", {"key": k.public, "name": name, "org": org, "roles": list(roles)})
        self.keys[name] = k
        return k

    def who(self, signer: SigningKey | str) -> SigningKey:
        return self.member(signer) if isinstance(signer, str) else signer

    # -- records ----------------------------------------------------------------------------
    def add(self, signer: SigningKey | str, rtype: str, body: dict[str, Any]) -> str:
        rec = self.c.record(self.who(signer), rtype, body)
        self.state.check_apply(rec)
        self.blocks[-1].append(rec)
        return rec.id

    def policy(self, data: str, annotation: str, training: str) -> str:
        """A policy change adopted by both organisations (PROTOCOL.md 9.3); the proposal id."""
        prop, approval = self.c.adoption(self.c.policy_action(data, annotation, training))
        for rec in (prop, approval):
            self.state.check_apply(rec)
            self.blocks[-1].append(rec)
        return prop.id

    def cut(self) -> None:
        """Start a new block."""
        self.blocks.append([])

    def dataset(self, signer: SigningKey | str, name: str, version: str = "1", *, items: int = 1000,
                budget: tuple[str, str] | None = None, derived_from: list[str] | None = None) -> str:
        return self.add(signer, "dataset.contribute", Consortium.dataset_body(name, version, items=items, budget=budget, derived_from=derived_from))

    def annotate(self, signer: SigningKey | str, dataset: str, labels: int = 100, quality: str = "0.9", method: str = "manual") -> str:
        return self.add(signer, "annotation.event", Consortium.annotation_body(dataset, labels=labels, quality=quality, method=method))

    def local(self, signer: SigningKey | str, model: str, rnd: int, inputs: list[tuple[str, int]] | list[tuple[str, int, str, str]],
              parent: str | None = None) -> str:
        full = [i if len(i) == 4 else (i[0], i[1], "0.1", "0") for i in inputs]
        return self.add(signer, "model.update", Consortium.update_body(model, rnd, inputs=full, parent=parent))  # type: ignore[arg-type]

    def aggregate(self, signer: SigningKey | str, model: str, rnd: int, refs: list[str], parent: str | None = None) -> str:
        return self.add(signer, "model.update", Consortium.update_body(model, rnd, aggregates=refs, parent=parent))

    def evaluate(self, signer: SigningKey | str, target: str, value: str, coalition: list[str] | None, metric: str = "accuracy") -> str:
        return self.add(signer, "model.evaluation", {"target": target, "metric": metric, "value": value,
                                                       "eval_set_hash": "ab" * 32, "coalition": coalition})

    # -- readers ----------------------------------------------------------------------------
    def block_dicts(self) -> list[dict[str, Any]]:
        return [{"records": [r.envelope for r in b]} for b in self.blocks if b]

    def memory(self) -> MemoryReader:
        return MemoryReader(self.c.doc, self.block_dicts())

    def store(self, path: Path) -> Store:
        led = self.c.ledger(path)
        for b in self.blocks:
            if b:
                _, _, rejected = led.commit_single(self.c.validators[0], b, time=TS)
                assert not rejected
        return led.store


def demo(ch: Chain | None = None) -> tuple[Chain, dict[str, str]]:
    """Two rounds of federated training over three datasets (one derived from another)."""
    ch = ch or Chain()
    ids: dict[str, str] = {}
    ids["scans"] = ch.dataset("alice", "scans", items=1000, budget=("10", "0.001"))
    ids["notes"] = ch.dataset("bob", "notes", items=500)
    ids["scans-clean"] = ch.dataset("carol", "scans-clean", items=800, derived_from=["scans"])
    ids["ann1"] = ch.annotate("dave", "scans", labels=200, quality="0.9")
    ids["ann2"] = ch.annotate("erin", "notes", labels=100, quality="0.5", method="automatic")
    ch.cut()
    ids["l1a"] = ch.local("alice", "m", 1, [("scans-clean", 300, "1", "0")])
    ids["l1b"] = ch.local("bob", "m", 1, [("notes", 100)])
    ids["g1"] = ch.aggregate("frank", "m", 1, [ids["l1a"], ids["l1b"]])
    ch.cut()
    ids["l2a"] = ch.local("alice", "m", 2, [("scans", 200, "2", "0.0001")], parent=ids["g1"])
    ids["l2b"] = ch.local("bob", "m", 2, [("notes", 100)], parent=ids["g1"])
    ids["g2"] = ch.aggregate("frank", "m", 2, [ids["l2a"], ids["l2b"]], parent=ids["g1"])
    ids["late"] = ch.annotate("dave", "scans", labels=1000, quality="1")  # after the model
    ids["other"] = ch.local("grace", "other-model", 1, [("notes", 50)])
    return ch, ids


def _edges(graph: dict[str, Any], relation: str) -> set[tuple[str, str]]:
    return {(e["from"], e["to"]) for e in graph["edges"] if e["relation"] == relation}


def test_model_lineage_reaches_datasets_annotations_signers_and_orgs() -> None:
    ch, ids = demo()
    g = model_lineage(ch.memory(), ids["g2"])
    assert g["root"] == ids["g2"] and g["kind"] == "model"
    nodes = {n["id"]: n for n in g["nodes"]}
    # Updates: both rounds, both aggregates, all four local updates.
    assert {ids[k] for k in ("g2", "g1", "l1a", "l1b", "l2a", "l2b")} <= set(nodes)
    assert ids["other"] not in nodes
    assert (ids["g2"], ids["g1"]) in _edges(g, "parent")
    assert (ids["g2"], ids["l2a"]) in _edges(g, "aggregates")
    assert (ids["l1a"], "dataset:scans-clean") in _edges(g, "used")
    # derived_from parents are traced back.
    assert (ids["scans-clean"], "dataset:scans") in _edges(g, "derived_from")
    assert (ids["scans"], "dataset:scans") in _edges(g, "version_of")
    # Annotations before the model only.
    assert ids["ann1"] in nodes and ids["ann2"] in nodes and ids["late"] not in nodes
    # Signers and their organisations.
    carol = nodes[f"key:{ch.keys['carol'].public}"]
    assert carol["name"] == "carol" and carol["org"] == "org-a"
    assert (f"key:{ch.keys['bob'].public}", "org:org-b") in _edges(g, "member_of")
    assert (ids["scans-clean"], f"key:{ch.keys['carol'].public}") in _edges(g, "signed_by")
    assert g["summary"]["samples"] == {"notes": 200, "scans": 200, "scans-clean": 300}


def test_lineage_reports_budget_spent_and_remaining_at_the_model() -> None:
    ch, ids = demo()
    g = model_lineage(ch.memory(), ids["l1a"])  # round 1 only: scans untouched yet
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["dataset:scans"]["budget"] == {"epsilon": "10", "delta": "0.001"}
    assert nodes["dataset:scans"]["spent"] == {"epsilon": "0", "delta": "0"}
    g2 = model_lineage(ch.memory(), ids["g2"])
    scans = {n["id"]: n for n in g2["nodes"]}["dataset:scans"]
    assert scans["spent"] == {"epsilon": "2", "delta": "0.0001"}
    assert scans["remaining"] == {"epsilon": "8", "delta": "0.0009"}
    assert {n["id"]: n for n in g2["nodes"]}["dataset:notes"]["budget"] is None


def test_dataset_lineage_lists_every_model_that_used_it() -> None:
    ch, ids = demo()
    r = ch.memory()
    g = lineage(r, "dataset:notes")
    assert g["kind"] == "dataset" and g["root"] == "dataset:notes"
    assert set(g["summary"]["direct"]) == {ids["l1b"], ids["l2b"], ids["other"]}
    # Through aggregation and later versions.
    assert set(g["summary"]["models"]) == {ids[k] for k in ("l1b", "l2b", "other", "g1", "g2", "l2a")}
    # scans-clean is used only in round 1, but every later version descends from it.
    g = lineage(r, ids["scans-clean"])
    assert g["root"] == "dataset:scans-clean"
    assert set(g["summary"]["models"]) == {ids[k] for k in ("l1a", "g1", "l2a", "l2b", "g2")}
    assert lineage(r, "scans")["root"] == "dataset:scans"


def test_trace_counts_each_local_update_once() -> None:
    ch, ids = demo()
    t = trace(ch.memory(), ids["g2"])
    assert [r[1] for r in t.local_updates] == [ids["l1a"], ids["l1b"], ids["l2a"], ids["l2b"]]
    assert set(t.parents) == {"scans"}


def test_lineage_errors_are_input_errors() -> None:
    ch, ids = demo()
    r = ch.memory()
    with pytest.raises(InputError, match=r"not a model\.update"):
        trace(r, ids["ann1"])
    with pytest.raises(InputError, match="no committed record"):
        model_lineage(r, "0" * 64)
    with pytest.raises(InputError, match="no dataset"):
        lineage(r, "dataset:nope")
    with pytest.raises(InputError, match="64 lowercase hex"):
        model_lineage(r, "xyz")


def test_store_reader_and_memory_reader_agree(tmp_path: Path) -> None:
    ch, ids = demo()
    ch.member("zed")  # registered after everything else
    with ch.store(tmp_path / "l.db") as store:
        sr = StoreReader(store)
        for ref in (ids["g2"], ids["l1a"], "dataset:scans", ids["notes"]):
            assert lineage(sr, ref) == lineage(ch.memory(), ref)
        assert sr.identity(ch.keys["zed"].public).name == "zed"  # type: ignore[union-attr]
        assert sr.identity(ch.keys["zed"].public, 0) is None
        assert store.load_state().datasets["scans"].to_dict() == sr.dataset_state("scans").to_dict()  # type: ignore[union-attr]


def test_model_lineage_names_the_adopted_policy_and_its_approving_organisations(tmp_path: Path) -> None:
    ch = Chain()
    ch.dataset("alice", "scans")
    l1 = ch.local("bob", "m", 1, [("scans", 10)])
    pid = ch.policy("0.6", "0.3", "0.1")
    l2 = ch.local("bob", "m", 2, [("scans", 10)], parent=l1)
    graph = lineage(ch.memory(), l2)
    policy = next(n for n in graph["nodes"] if n["kind"] == "policy")
    assert policy["id"] == pid and policy["approved_by"] == ["org-a", "org-b"]
    assert (policy["data"], policy["annotation"], policy["training"]) == ("0.6", "0.3", "0.1")
    assert policy["proposer"] == ch.c.admin_a.public and policy["adopted_at"] == 3
    assert _edges(graph, "governed_by") == {(l2, pid)}
    assert _edges(graph, "approved_by") == {(pid, "org:org-a"), (pid, "org:org-b")}
    assert "policy" not in {n["kind"] for n in lineage(ch.memory(), l1)["nodes"]}  # the genesis policy
    with ch.store(tmp_path / "p.db") as store:
        assert lineage(StoreReader(store), l2) == graph
    assert "octagon" in to_dot(graph) and "policy data 0.6" in to_dot(graph)


def test_renderings() -> None:
    from rich.console import Console

    ch, ids = demo()
    g = model_lineage(ch.memory(), ids["g2"])
    dot = to_dot(g)
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert f'"{ids["g2"]}" -> "{ids["g1"]}" [label="parent"]' in dot
    console = Console(width=200, record=True)
    console.print(to_tree(g))
    text = console.export_text()
    assert "m r2 (aggregate)" in text and "scans-clean" in text and "carol" in text
    console.print(to_tree(lineage(ch.memory(), "dataset:notes")))
    assert "used by" in console.export_text()


def test_over_budget_update_is_refused_naming_dataset_and_amounts() -> None:
    ch = Chain()
    ch.dataset("alice", "scans", budget=("1.5", "0.001"))
    ch.local("alice", "m", 1, [("scans", 10, "1", "0.0005")])
    with pytest.raises(RuleError) as e:
        ch.local("alice", "m", 2, [("scans", 10, "0.75", "0")])
    assert e.value.code == "budget_exceeded"
    msg = e.value.message
    assert "'scans'" in msg and "epsilon 0.75" in msg and "remaining budget is epsilon 0.5, delta 0.0005" in msg
    assert e.value.details["dataset"] == "scans"
    ds = ch.state.datasets["scans"].to_dict()
    assert ds["spent"] == {"epsilon": "1", "delta": "0.0005"} and ds["remaining"] == {"epsilon": "0.5", "delta": "0.0005"}
