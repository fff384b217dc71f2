"""W3C PROV-JSON for a model's or a dataset's lineage.

``prov_document(reader, ref)`` maps the lineage graph (``ledger.lineage``) to PROV-JSON
(https://www.w3.org/Submission/prov-json/), a plain dict ready for ``json.dumps``:

- entities: model versions (``plm:ID``), datasets (``pld:NAME``), dataset versions
  (``plv:ID``), label batches (``pll:ID``);
- activities: the training or aggregation run of each model version (``plr:ID``), each
  contribution (``plc:ID``) and each annotation (``pla:ID``);
- agents: participants (``plk:KEY``) and organisations (``plo:NAME``, ``prov:Organization``);
- relations: ``wasGeneratedBy`` (each entity by its activity), ``used`` (a run uses its
  parent version, the updates it aggregates and its input datasets; an annotation uses
  its dataset), ``wasDerivedFrom`` (the same dependencies between entities, and a dataset
  version from its ``derived_from`` parents), ``specializationOf`` (a version of its
  dataset), ``wasAttributedTo`` and ``wasAssociatedWith`` (the signer),
  ``actedOnBehalfOf`` (participant on behalf of its organisation).

IDs are record ids (hex), public keys (hex) or names percent-encoded, under ``urn:provledger:``
namespaces; attributes are in the ``provledger`` namespace.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .lineage import lineage
from .reader import ChainReader

__all__ = ["NAMESPACES", "prov_document", "to_prov"]

NAMESPACES = {
    "provledger": "urn:provledger:",
    "plm": "urn:provledger:model-version:",
    "plr": "urn:provledger:run:",
    "pld": "urn:provledger:dataset:",
    "plv": "urn:provledger:dataset-version:",
    "plc": "urn:provledger:contribution:",
    "pll": "urn:provledger:label-batch:",
    "pla": "urn:provledger:annotation:",
    "plk": "urn:provledger:participant:",
    "plo": "urn:provledger:organisation:",
}


def _name(s: str) -> str:
    return quote(s, safe="")


class _Doc:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"prefix": dict(NAMESPACES)}
        self.n = 0

    def element(self, kind: str, ident: str, attrs: dict[str, Any]) -> str:
        bucket = self.doc.setdefault(kind, {})
        if ident not in bucket:
            bucket[ident] = {k: v for k, v in attrs.items() if v is not None}
        return ident

    def relation(self, kind: str, **attrs: Any) -> None:
        self.n += 1
        self.doc.setdefault(kind, {})[f"_:{kind}{self.n}"] = attrs


def _q(qname: str) -> dict[str, str]:
    """A PROV-JSON qualified-name value."""
    return {"$": qname, "type": "prov:QUALIFIED_NAME"}


def _attr(v: Any) -> Any:
    """PROV-JSON attribute values: strings and integers as they are; lists and objects as
    JSON text (PROV has no nested values)."""
    import json

    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return v
    return json.dumps(v, sort_keys=True)


def to_prov(graph: dict[str, Any]) -> dict[str, Any]:
    """PROV-JSON for a lineage graph (``ledger.lineage.lineage``)."""
    d = _Doc()
    nodes = {n["id"]: n for n in graph["nodes"]}
    ent: dict[str, str] = {}  # graph node id -> PROV entity (or agent) id
    act: dict[str, str] = {}  # graph node id -> PROV activity id
    for n in graph["nodes"]:
        nid, kind = n["id"], n["kind"]
        common = {f"provledger:{k}": _attr(v) for k, v in n.items() if k not in ("id", "kind", "label") and v is not None}
        if kind == "model_version":
            ent[nid] = d.element("entity", f"plm:{nid}", {"prov:label": n["label"], "prov:type": _q("provledger:ModelVersion"), **common})
            act[nid] = d.element("activity", f"plr:{nid}", {"prov:label": f"{n['role']} training {n['label']}",
                                                          "prov:type": _q("provledger:Aggregation" if n["role"] == "aggregate" else "provledger:LocalTraining")})
            d.relation("wasGeneratedBy", **{"prov:entity": ent[nid], "prov:activity": act[nid]})
        elif kind == "dataset":
            ent[nid] = d.element("entity", f"pld:{_name(n['name'])}", {"prov:label": n["label"], "prov:type": _q("provledger:Dataset"), **common})
        elif kind == "dataset_version":
            ent[nid] = d.element("entity", f"plv:{nid}", {"prov:label": n["label"], "prov:type": _q("provledger:DatasetVersion"), **common})
            act[nid] = d.element("activity", f"plc:{nid}", {"prov:label": f"contribution of {n['label']}", "prov:type": _q("provledger:Contribution")})
            d.relation("wasGeneratedBy", **{"prov:entity": ent[nid], "prov:activity": act[nid]})
        elif kind == "annotation":
            ent[nid] = d.element("entity", f"pll:{nid}", {"prov:label": n["label"], "prov:type": _q("provledger:LabelBatch"), **common})
            act[nid] = d.element("activity", f"pla:{nid}", {"prov:label": f"annotation ({n['method']})", "prov:type": _q("provledger:Annotation")})
            d.relation("wasGeneratedBy", **{"prov:entity": ent[nid], "prov:activity": act[nid]})
        elif kind == "participant":
            ent[nid] = d.element("agent", f"plk:{n['key']}", {"prov:label": n["label"], "prov:type": _q("provledger:Participant"), **common})
        elif kind == "organisation":
            ent[nid] = d.element("agent", f"plo:{_name(n['name'])}", {"prov:label": n["label"], "prov:type": _q("prov:Organization")})
    for e in graph["edges"]:
        src, dst, rel = e["from"], e["to"], e["relation"]
        if src not in nodes or dst not in nodes:
            continue
        extra = {f"provledger:{k}": _attr(v) for k, v in e.items() if k not in ("from", "to", "relation")}
        if rel in ("parent", "aggregates", "used"):
            d.relation("used", **{"prov:activity": act[src], "prov:entity": ent[dst], "prov:role": _q(f"provledger:{rel}"), **extra})
            d.relation("wasDerivedFrom", **{"prov:generatedEntity": ent[src], "prov:usedEntity": ent[dst], "prov:activity": act[src]})
        elif rel == "annotates":
            d.relation("used", **{"prov:activity": act[src], "prov:entity": ent[dst], "prov:role": _q("provledger:annotated")})
        elif rel == "derived_from":
            d.relation("wasDerivedFrom", **{"prov:generatedEntity": ent[src], "prov:usedEntity": ent[dst]})
        elif rel == "version_of":
            d.relation("specializationOf", **{"prov:specificEntity": ent[src], "prov:generalEntity": ent[dst]})
        elif rel == "signed_by":
            d.relation("wasAttributedTo", **{"prov:entity": ent[src], "prov:agent": ent[dst]})
            if src in act:
                d.relation("wasAssociatedWith", **{"prov:activity": act[src], "prov:agent": ent[dst]})
        elif rel == "member_of":
            d.relation("actedOnBehalfOf", **{"prov:delegate": ent[src], "prov:responsible": ent[dst]})
    return d.doc


def prov_document(reader: ChainReader, ref: str) -> dict[str, Any]:
    """PROV-JSON for the lineage of ``ref`` (a model.update record id, a dataset record id
    or ``dataset:NAME``)."""
    return to_prov(lineage(reader, ref))
