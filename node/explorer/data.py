"""What the explorer's pages show, read from the node's store and committed state.

Every function here is a plain read: the store's indexed SQLite columns (``records.id``,
``records.height``, ``records.signer``, ``blocks.hash``) and the node's in-memory state
(identities, datasets). Nothing is trusted by a reader of the pages: the browser checks
the documents it fetches from ``/v1`` (``static/js/checks.js``).

``validators_at(node, height)`` is the one place that says which validators certify a
height (PROTOCOL.md 6; 9.1 once membership changes are recorded): the pages and the search
ask it, never the genesis directly.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any
from urllib.parse import quote

import orjson

__all__ = [
    "BLOCKS_PER_PAGE",
    "MAX_QUERY",
    "RECORDS_PER_PAGE",
    "block_rows",
    "block_summary",
    "lineage_depths",
    "recent_signers",
    "search",
    "signer_info",
    "validators_at",
]

BLOCKS_PER_PAGE = 20
RECORDS_PER_PAGE = 100
MAX_QUERY = 200  # characters of a search query
MAX_RESULTS = 20
_HEX_PREFIX = re.compile(r"[0-9a-f]{8,64}")
_HEIGHT = re.compile(r"[0-9]{1,15}")


def validators_at(node: Any, height: int) -> list[dict[str, Any]]:
    """The validator set certifying ``height``: ``[{key, name, url}]`` in genesis order.

    PROTOCOL.md 6: the genesis set until the first membership change (section 9.1 names
    the set of later heights; this is where that history is read once the chain records it).
    """
    g = node.genesis
    return [{"key": k, "name": g.validator_names.get(k, ""), "url": g.validator_urls.get(k, "")}
            for k in g.validators]


def signer_info(node: Any, key: str) -> dict[str, Any]:
    """Who a public key is: ``{key, name, org, roles, revoked}`` from the committed state,
    a validator of the genesis, or unknown (name ``""``)."""
    ident = node.ledger.state.identities.get(key)
    if ident is not None:
        return {"key": key, "name": ident.name, "org": ident.org, "roles": sorted(ident.roles),
                "revoked": ident.revoked, "registered_by": ident.registered_by}
    name = node.genesis.validator_names.get(key)
    if name is not None:
        return {"key": key, "name": name, "org": "", "roles": ["validator"], "revoked": False, "registered_by": None}
    return {"key": key, "name": "", "org": "", "roles": [], "revoked": False, "registered_by": None}


def block_summary(height: int, block_hash: str, header: str, first: int, count: int) -> dict[str, Any]:
    h = orjson.loads(header)
    return {"height": height, "hash": block_hash, "time": h["time"], "proposer": h["proposer"], "count": count,
            "first": first, "log_size": h["log_size"]}


def block_rows(node: Any, top: int, limit: int) -> list[dict[str, Any]]:
    """Blocks ``top, top-1, ...`` (at most ``limit``), newest first."""
    rows = node.store.reader.execute(
        'SELECT height, hash, header, first, "count" FROM blocks WHERE height <= ? ORDER BY height DESC LIMIT ?',
        (top, limit)).fetchall()
    return [block_summary(*r) for r in rows]


def block_records(node: Any, first: int, count: int, offset: int, limit: int) -> list[dict[str, Any]]:
    """Records ``first+offset ..`` of a block (log order, at most ``limit``), with their signers."""
    start = first + offset
    stop = min(first + count, start + limit)
    rows = node.store.reader.execute(
        "SELECT idx, id, type, signer FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop)).fetchall()
    return [{"index": i, "id": rid, "type": t, "signer": signer_info(node, s)} for i, rid, t, s in rows]


def recent_signers(node: Any, last: int) -> list[dict[str, Any]]:
    """For each of the last ``last`` blocks: its height, hash and which validators of the
    set certifying it precommitted (from its certificate)."""
    height = node.store.height()
    rows = node.store.reader.execute(
        "SELECT height, hash, certificate FROM blocks WHERE height > ? ORDER BY height DESC",
        (max(0, height - last),)).fetchall()
    out = []
    for h, block_hash, cert in rows:
        signed = {v["validator"] for v in orjson.loads(cert)["votes"]}
        vals = validators_at(node, h)
        out.append({"height": h, "hash": block_hash, "round": orjson.loads(cert)["round"],
                    "signed": [v["key"] in signed for v in vals]})
    return out


def _prefix_range(prefix: str) -> tuple[str, str]:
    # Every lowercase hex string starting with ``prefix`` sorts in [prefix, prefix + "g").
    return prefix, prefix + "g"


def search(node: Any, query: str) -> list[dict[str, Any]]:
    """What ``query`` names, as ``[{kind, ref, label, url}]`` (at most 20):

    - a record id, or a prefix of one of at least 8 hex characters (pending records by full id);
    - a block hash or a prefix of one; a height (decimal digits);
    - ``dataset:NAME`` or a dataset's name;
    - a public key of a registered identity or a validator (or a prefix of at least 8 hex
      characters), or an identity's name: the identity, then the latest records it signed.
    """
    q = query.strip()
    out: list[dict[str, Any]] = []
    state = node.ledger.state
    conn = node.store.reader
    hexq = q.lower()
    if _HEX_PREFIX.fullmatch(hexq):
        lo, hi = _prefix_range(hexq)
        if len(hexq) == 64 and hexq in node.mempool:
            out.append({"kind": "record", "ref": hexq, "label": f"pending record {hexq[:16]}…",
                        "url": f"/explorer/records/{hexq}"})
        for rid, rtype, h in conn.execute(
                "SELECT id, type, height FROM records WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (lo, hi, MAX_RESULTS + 1)):
            out.append({"kind": "record", "ref": rid, "label": f"{rtype} record in block {h}",
                        "url": f"/explorer/records/{rid}"})
        for h, block_hash in conn.execute(
                "SELECT height, hash FROM blocks WHERE hash >= ? AND hash < ? ORDER BY hash LIMIT ?",
                (lo, hi, MAX_RESULTS + 1)):
            out.append({"kind": "block", "ref": block_hash, "label": f"block {h}", "url": f"/explorer/blocks/{h}"})
        keys = [k for k in state.identities if k.startswith(hexq)]
        keys += [k for k in node.genesis.validators if k.startswith(hexq) and k not in state.identities]
        for key in sorted(keys)[:MAX_RESULTS]:
            out += _identity_results(node, key)
    if _HEIGHT.fullmatch(q):
        h = int(q)
        if 1 <= h <= node.store.height():
            out.append({"kind": "block", "ref": str(h), "label": f"block {h}", "url": f"/explorer/blocks/{h}"})
    name = q[len("dataset:"):] if q.startswith("dataset:") else q
    if name in state.datasets:
        out.append({"kind": "dataset", "ref": name, "label": f"dataset {name}", "url": f"/explorer/datasets/{quote(name)}"})
    for key in sorted(k for k, ident in state.identities.items() if ident.name == q):
        out += _identity_results(node, key)
    for key in node.genesis.validators:
        if node.genesis.validator_names.get(key) == q and key not in state.identities:
            out += _identity_results(node, key)
    return out[:MAX_RESULTS]


def _identity_results(node: Any, key: str) -> list[dict[str, Any]]:
    info = signer_info(node, key)
    if "validator" in info["roles"]:
        label = f"validator {info['name']}"
        url = "/explorer/network"
    else:
        label = f"identity {info['name']} ({info['org']})" + (", revoked" if info["revoked"] else "")
        url = f"/explorer/search?q={key}"
    out = [{"kind": "identity", "ref": key, "label": label, "url": url}]
    for rid, rtype, h in node.store.reader.execute(
            "SELECT id, type, height FROM records WHERE signer = ? ORDER BY idx DESC LIMIT 5", (key,)):
        out.append({"kind": "record", "ref": rid, "label": f"{rtype} signed by {info['name'] or key[:16]}, block {h}",
                    "url": f"/explorer/records/{rid}"})
    return out


def lineage_depths(graph: dict[str, Any]) -> dict[str, int]:
    """Each node's distance from the graph's root, following edges either way (a model's
    sources and a dataset's users alike)."""
    near: dict[str, list[str]] = {}
    for e in graph["edges"]:
        near.setdefault(e["from"], []).append(e["to"])
        near.setdefault(e["to"], []).append(e["from"])
    root = graph["root"]
    depth = {root: 0}
    todo = deque([root])
    while todo:
        n = todo.popleft()
        for m in near.get(n, ()):
            if m not in depth:
                depth[m] = depth[n] + 1
                todo.append(m)
    return depth
