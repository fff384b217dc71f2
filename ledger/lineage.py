"""Lineage: where a model version came from, and which models a dataset went into.

``trace(reader, record_id)`` walks back from a ``model.update``: through ``parent``
(previous global version) and ``aggregates`` (the updates an aggregate combines) to the
local updates, their input datasets, each dataset's versions committed before the model
and their ``derived_from`` parents (recursively: a parent's versions committed before the
version that names it), the annotation events on the input datasets committed before the
model, and everyone who signed any of these. ``attribution`` and ``prov`` build on it.

``lineage(reader, ref)`` returns the plain graph::

    {"root": id, "kind": "model" | "dataset",
     "nodes": [{"id", "kind", "label", ...}], "edges": [{"from", "to", "relation", ...}]}

Node kinds: ``model_version`` (a model.update record), ``dataset`` (``dataset:NAME``),
``dataset_version`` (a dataset.contribute record), ``annotation`` (an annotation.event
record), ``participant`` (``key:HEX``), ``organisation`` (``org:NAME``), ``policy`` (the
attribution policy in force at a model when an adopted change set it: the id of its
``network.propose`` record, PROTOCOL.md 9.3).
Edges point from the derived thing to what it came from: ``parent``, ``aggregates``,
``used`` (local update -> dataset, with samples/epsilon/delta), ``version_of``,
``derived_from`` (version -> parent dataset), ``annotates``, ``signed_by``, ``member_of``,
``governed_by`` (model -> the policy in force at it), ``approved_by`` (policy -> each
organisation whose approval counted towards its adoption, the proposer's first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError, NotFoundError, UnprocessableError
from .keys import is_hex
from .reader import ChainReader, Participant, Row

__all__ = ["Trace", "dataset_lineage", "lineage", "model_lineage", "to_dot", "to_tree", "trace"]


@dataclass
class Trace:
    """Everything a model version depends on, as committed records."""

    root: str
    index: int  # log index of the root record
    height: int
    updates: dict[str, Row] = field(default_factory=dict)  # every model.update reached
    datasets: dict[str, list[Row]] = field(default_factory=dict)  # input name -> versions before the model
    parents: dict[str, list[Row]] = field(default_factory=dict)  # derived_from ancestors -> their versions
    annotations: list[Row] = field(default_factory=list)  # on input datasets, before the model

    @property
    def local_updates(self) -> list[Row]:
        """Local updates (with inputs) in log order."""
        return sorted((r for r in self.updates.values() if r[2]["body"]["inputs"]), key=lambda r: r[0])

    def samples(self) -> dict[str, int]:
        """Samples per input dataset name, summed over every local update (n_k)."""
        out: dict[str, int] = {}
        for _i, _rid, env in self.local_updates:
            for inp in env["body"]["inputs"]:
                out[inp["dataset"]] = out.get(inp["dataset"], 0) + inp["samples"]
        return out


def _need_record(reader: ChainReader, record_id: str) -> tuple[dict[str, Any], int, int]:
    if not is_hex(record_id, 32):
        raise InputError(f"record id must be 64 lowercase hex characters, got {record_id!r:.80}", code="bad_hex")
    found = reader.record(record_id)
    if found is None:
        raise NotFoundError(f"no committed record {record_id}")
    return found


def trace(reader: ChainReader, record_id: str) -> Trace:
    """Walk the lineage of the ``model.update`` record ``record_id``."""
    env, index, height = _need_record(reader, record_id)
    if env["type"] != "model.update":
        raise UnprocessableError(f"record {record_id[:16]}… is a {env['type']}, not a model.update", code="not_a_model")
    t = Trace(record_id, index, height)
    # 1. Updates: the root, its parents and what aggregates combine, transitively.
    stack = [record_id]
    while stack:
        rid = stack.pop()
        if rid in t.updates:
            continue
        found = reader.record(rid)
        if found is None or found[0]["type"] != "model.update":  # pragma: no cover - the state rules forbid it
            raise UnprocessableError(f"record {rid[:16]}… named in the lineage is not a committed model.update", code="broken_lineage")
        e, i, _h = found
        t.updates[rid] = (i, rid, e)
        b = e["body"]
        if b["parent"] is not None:
            stack.append(b["parent"])
        stack.extend(b["aggregates"])
    # 2. Input datasets: their versions committed before the model.
    names = sorted(t.samples())
    for name in names:
        recs = reader.dataset_records(name)
        t.datasets[name] = [r for r in recs if r[2]["type"] == "dataset.contribute" and r[0] < index]
        # 3. Annotation events on those datasets committed before the model.
        t.annotations.extend(r for r in recs if r[2]["type"] == "annotation.event" and r[0] < index)
    t.annotations.sort(key=lambda r: r[0])
    # 4. derived_from ancestors: versions committed before the version that names them.
    todo = [(p, v[0]) for vs in t.datasets.values() for v in vs for p in v[2]["body"]["derived_from"]]
    while todo:
        name, before = todo.pop()
        versions = [r for r in reader.dataset_records(name) if r[2]["type"] == "dataset.contribute" and r[0] < before]
        known = t.parents.setdefault(name, [])
        for v in versions:
            if all(v[1] != k[1] for k in known):
                known.append(v)
                todo.extend((p, v[0]) for p in v[2]["body"]["derived_from"])
    for vs in t.parents.values():
        vs.sort(key=lambda r: r[0])
    return t


# --- the graph ---------------------------------------------------------------------------
class _Graph:
    def __init__(self, reader: ChainReader) -> None:
        self.reader = reader
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str, str], dict[str, Any]] = {}

    def node(self, nid: str, kind: str, label: str, **attrs: Any) -> str:
        if nid not in self.nodes:
            self.nodes[nid] = {"id": nid, "kind": kind, "label": label, **attrs}
        return nid

    def edge(self, src: str, dst: str, relation: str, **attrs: Any) -> None:
        self.edges.setdefault((src, dst, relation), {"from": src, "to": dst, "relation": relation, **attrs})

    def signer(self, nid: str, env: dict[str, Any], index: int) -> None:
        key = env["signer"]
        p = self.reader.identity(key, index) or self.reader.identity(key)
        pid = self.participant(key, p)
        self.edge(nid, pid, "signed_by")

    def participant(self, key: str, p: Participant | None) -> str:
        name, org = (p.name, p.org) if p else ("(unknown)", None)
        pid = self.node(f"key:{key}", "participant", name, key=key, name=name, org=org)
        if org is not None:
            oid = self.node(f"org:{org}", "organisation", org, name=org)
            self.edge(pid, oid, "member_of")
        return pid

    def model(self, row: Row) -> str:
        idx, rid, env = row
        b = env["body"]
        role = "aggregate" if b["aggregates"] else "local"
        nid = self.node(
            rid, "model_version", f"{b['model']} r{b['round']} ({role})",
            model=b["model"], round=b["round"], role=role, weights_hash=b["weights_hash"],
            metrics=dict(b["metrics"]), index=idx, signer=env["signer"], ts=env["ts"],
        )
        self.signer(nid, env, idx)
        return nid

    def dataset(self, name: str, upto: int | None) -> str:
        st = self.reader.dataset_state(name, upto)
        budget = st.to_dict() if st else {}
        return self.node(
            f"dataset:{name}", "dataset", name, name=name,
            budget=budget.get("budget"), spent=budget.get("spent"), remaining=budget.get("remaining"),
        )

    def version(self, row: Row) -> str:
        idx, rid, env = row
        b = env["body"]
        nid = self.node(
            rid, "dataset_version", f"{b['dataset']}@{b['version']}",
            dataset=b["dataset"], version=b["version"], content_hash=b["content_hash"], items=b["items"],
            size_bytes=b["size_bytes"], license=b["license"], modality=b["modality"],
            derived_from=list(b["derived_from"]), index=idx, signer=env["signer"], ts=env["ts"],
        )
        self.signer(nid, env, idx)
        self.edge(nid, f"dataset:{b['dataset']}", "version_of")
        return nid

    def annotation(self, row: Row) -> str:
        idx, rid, env = row
        b = env["body"]
        nid = self.node(
            rid, "annotation", f"{b['labels']} labels on {b['dataset']} ({b['method']}, q={b['quality']})",
            dataset=b["dataset"], labels=b["labels"], quality=b["quality"], method=b["method"],
            labels_hash=b["labels_hash"], label_schema=b["label_schema"], model=b["model"],
            quality_method=b["quality_method"], index=idx, signer=env["signer"], ts=env["ts"],
        )
        self.signer(nid, env, idx)
        self.edge(nid, f"dataset:{b['dataset']}", "annotates")
        return nid

    def policy(self, index: int) -> str | None:
        """The policy in force at log index ``index`` when an adopted change set it."""
        prop = self.reader.policy_change(index)
        if prop is None:
            return None
        pools = prop.action["attribution"]
        nid = self.node(
            prop.id, "policy",
            f"policy data {pools['data']} / annotation {pools['annotation']} / training {pools['training']}",
            data=pools["data"], annotation=pools["annotation"], training=pools["training"],
            proposer=prop.proposer, adopted_at=prop.adopted_at, approved_by=list(prop.approvals),
        )
        for org in prop.approvals:
            self.edge(nid, self.node(f"org:{org}", "organisation", org, name=org), "approved_by")
        return nid

    def out(self, root: str, kind: str, **extra: Any) -> dict[str, Any]:
        order = {"model_version": 0, "dataset": 1, "dataset_version": 2, "annotation": 3, "participant": 4,
                 "organisation": 5, "policy": 6}
        nodes = sorted(self.nodes.values(), key=lambda n: (n["id"] != root, order[n["kind"]], n.get("index", -1), n["id"]))
        edges = sorted(self.edges.values(), key=lambda e: (e["from"], e["relation"], e["to"]))
        return {"root": root, "kind": kind, **extra, "nodes": nodes, "edges": edges}


def _add_trace(g: _Graph, t: Trace) -> None:
    for row in sorted(t.updates.values(), key=lambda r: r[0]):
        nid = g.model(row)
        b = row[2]["body"]
        if b["parent"] is not None:
            g.edge(nid, b["parent"], "parent")
        for ref in b["aggregates"]:
            g.edge(nid, ref, "aggregates")
        for inp in b["inputs"]:
            g.dataset(inp["dataset"], t.index + 1)
            g.edge(nid, f"dataset:{inp['dataset']}", "used", samples=inp["samples"], epsilon=inp["epsilon"], delta=inp["delta"])
    for name, versions in list(t.datasets.items()) + list(t.parents.items()):
        g.dataset(name, t.index + 1)
        for v in versions:
            vid = g.version(v)
            for p in v[2]["body"]["derived_from"]:
                g.dataset(p, t.index + 1)
                g.edge(vid, f"dataset:{p}", "derived_from")
    for a in t.annotations:
        g.annotation(a)


def model_lineage(reader: ChainReader, record_id: str) -> dict[str, Any]:
    """The lineage graph of a ``model.update`` (see the module docstring)."""
    t = trace(reader, record_id)
    g = _Graph(reader)
    _add_trace(g, t)
    policy = g.policy(t.index)  # PROTOCOL.md 9.3: the policy in force at the model
    if policy is not None:
        g.edge(record_id, policy, "governed_by")
    locals_ = t.local_updates
    return g.out(
        record_id, "model", index=t.index, height=t.height,
        summary={
            "updates": len(t.updates), "local_updates": len(locals_),
            "datasets": sorted(t.datasets), "ancestors": sorted(t.parents),
            "annotations": len(t.annotations), "samples": dict(sorted(t.samples().items())),
        },
    )


def dataset_lineage(reader: ChainReader, name: str) -> dict[str, Any]:
    """Every ``model.update`` that used dataset ``name``, directly (a local update with it
    among its inputs) or through aggregation and later versions (any update whose lineage
    holds such a local update); plus the dataset's versions, parents and annotations."""
    recs = reader.dataset_records(name)
    if not recs:
        raise NotFoundError(f"no dataset {name!r} on the chain")
    g = _Graph(reader)
    root = g.dataset(name, None)
    for r in recs:
        (g.version if r[2]["type"] == "dataset.contribute" else g.annotation)(r)
        for p in r[2]["body"].get("derived_from", ()):
            g.dataset(p, None)
            g.edge(r[1], f"dataset:{p}", "derived_from")
    direct = reader.updates_using(name)
    for row in direct:
        nid = g.model(row)
        for inp in row[2]["body"]["inputs"]:
            if inp["dataset"] == name:
                g.edge(nid, root, "used", samples=inp["samples"], epsilon=inp["epsilon"], delta=inp["delta"])
    # Forward closure: updates whose parent or aggregates reach a direct user.
    reached = {r[1] for r in direct}
    if reached:
        models = sorted({r[2]["body"]["model"] for r in direct})
        rows = sorted((r for m in models for r in reader.model_records(m)), key=lambda r: r[0])
        for row in rows:  # log order: references always point back
            b = row[2]["body"]
            refs = [x for x in [b["parent"], *b["aggregates"]] if x in reached]
            if refs:
                reached.add(row[1])
                nid = g.model(row)
                for ref in refs:
                    g.edge(nid, ref, "parent" if ref == b["parent"] else "aggregates")
    users = sorted(reached, key=lambda rid: g.nodes[rid]["index"])
    return g.out(root, "dataset", dataset=reader.dataset_state(name).to_dict() if reader.dataset_state(name) else None,  # type: ignore[union-attr]
                 summary={"direct": [r[1] for r in direct], "models": users})


def lineage(reader: ChainReader, ref: str) -> dict[str, Any]:
    """The lineage graph of ``ref``: a model.update record id, a dataset.contribute record
    id (its dataset's users) or ``dataset:NAME`` / a dataset name."""
    if ref.startswith("dataset:"):
        return dataset_lineage(reader, ref[len("dataset:"):])
    if is_hex(ref, 32):
        found = reader.record(ref)
        if found is not None and found[0]["type"] in ("dataset.contribute", "annotation.event"):
            return dataset_lineage(reader, found[0]["body"]["dataset"])
        if found is not None or not reader.dataset_records(ref):
            return model_lineage(reader, ref)
    return dataset_lineage(reader, ref)


# --- rendering ---------------------------------------------------------------------------
def _children(graph: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in graph["edges"]:
        out.setdefault(e["from"], []).append(e)
    return out


def to_tree(graph: dict[str, Any]) -> Any:
    """A ``rich.tree.Tree`` of the graph from its root (a shared node is expanded once)."""
    from rich.markup import escape
    from rich.tree import Tree

    nodes = {n["id"]: n for n in graph["nodes"]}
    kids = _children(graph)
    if graph["kind"] == "dataset":
        # Show users under the dataset: reverse the "used" edges.
        for e in graph["edges"]:
            if e["relation"] in ("used", "version_of", "annotates"):
                kids.setdefault(e["to"], []).append({"from": e["to"], "to": e["from"], "relation": "used by" if e["relation"] == "used" else e["relation"], **{k: v for k, v in e.items() if k not in ("from", "to", "relation")}})
            if e["relation"] in ("parent", "aggregates"):
                kids.setdefault(e["to"], []).append({"from": e["to"], "to": e["from"], "relation": "into"})
    else:
        for e in graph["edges"]:
            if e["relation"] in ("version_of", "annotates"):
                kids.setdefault(e["to"], []).append({"from": e["to"], "to": e["from"], "relation": e["relation"]})

    def text(n: dict[str, Any]) -> str:
        kind = n["kind"]
        style = {"model_version": "bold cyan", "dataset": "bold green", "dataset_version": "green",
                 "annotation": "yellow", "participant": "magenta", "organisation": "blue", "policy": "bold red"}[kind]
        extra = ""
        if kind in ("model_version", "dataset_version", "annotation"):
            extra = f" [dim]{n['id'][:12]}…[/dim]"
        if kind == "participant":
            extra = f" [dim]{n['key'][:12]}… ({n['org']})[/dim]"
        if kind == "dataset" and n.get("remaining"):
            r = n["remaining"]
            extra = f" [dim]budget remaining ε={r['epsilon']} δ={r['delta']}[/dim]"
        return f"[{style}]{escape(n['label'])}[/{style}]{extra}"

    root = nodes[graph["root"]]
    tree = Tree(text(root))
    seen = {root["id"]}

    def grow(branch: Any, nid: str) -> None:
        for e in kids.get(nid, []):
            if e["relation"] in ("member_of",) or e["to"] not in nodes:
                continue
            child = nodes[e["to"]]
            label = e["relation"]
            if "samples" in e:
                label += f" {e['samples']} samples"
            if e["relation"] == "signed_by":
                branch.add(f"[dim]signed by[/dim] {text(child)}")
                continue
            if child["id"] in seen:
                branch.add(f"[dim]{escape(label)}[/dim] {text(child)} [dim](above)[/dim]")
                continue
            seen.add(child["id"])
            grow(branch.add(f"[dim]{escape(label)}[/dim] {text(child)}"), child["id"])

    grow(tree, root["id"])
    return tree


def _dot_id(s: str) -> str:
    """A DOT quoted string; a newline becomes the DOT line break ``\\n``."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: dict[str, Any]) -> str:
    """Graphviz DOT text of the graph (``dot -Tsvg``)."""
    shapes = {"model_version": "box", "dataset": "cylinder", "dataset_version": "note", "annotation": "tab",
              "participant": "ellipse", "organisation": "house", "policy": "octagon"}
    lines = ["digraph lineage {", "  rankdir=BT;", '  node [fontname="Helvetica"];']
    for n in graph["nodes"]:
        short = n["id"][:12] + "…" if n["kind"] in ("model_version", "dataset_version", "annotation") else ""
        label = n["label"] + (f"\n{short}" if short else "")
        extra = ", penwidth=2" if n["id"] == graph["root"] else ""
        lines.append(f"  {_dot_id(n['id'])} [label={_dot_id(label)}, shape={shapes[n['kind']]}{extra}];")
    for e in graph["edges"]:
        label = e["relation"] + (f" ({e['samples']})" if "samples" in e else "")
        lines.append(f"  {_dot_id(e['from'])} -> {_dot_id(e['to'])} [label={_dot_id(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
