"""The explorer's routes (the list is in ``node.explorer``'s docstring)."""

from __future__ import annotations

import csv
import io
import mimetypes
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from ledger.attribution import METHODS, attribute
from ledger.blocks import quorum
from ledger.errors import InputError, LedgerError
from ledger.keys import is_hex
from ledger.lineage import lineage
from ledger.reader import StoreReader

from ..api_schema import errors
from . import data

__all__ = ["CSP", "router"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# Every answer of this router: nothing but this node's own files and endpoints.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
# ReDoc and Swagger UI set element styles from script (style-src applies to those too).
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

_DIGITS = re.compile(r"[0-9]{1,15}")
DEFAULT_TOTAL = 1000


def _static_files() -> dict[str, Path]:
    """Every file under static/, by its path there: only these are served."""
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["short"] = lambda s, n=16: (s[:n] + "…") if isinstance(s, str) and len(s) > n else s
    env.filters["thousands"] = lambda n: f"{n:,}"
    env.filters["json"] = lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return env


def status_of(e: LedgerError) -> int:
    """The HTTP status of an error a page meets (docs/protocol.md 8)."""
    if e.code == "not_found":
        return 404
    return 422 if e.code in ("not_a_model", "coalitions_missing", "nothing_to_attribute", "broken_lineage") else 400


def _int_param(text: str | None, name: str, default: int | None = None) -> int | None:
    if text is None or text == "":
        return default
    if not _DIGITS.fullmatch(text):
        raise InputError(f"{name}: must be a non-negative integer, got {text!r:.40}", code="bad_request", field=name)
    return int(text)


def router(node: Any) -> APIRouter:
    """The explorer's pages and ``GET /v1/search`` for ``node`` (a ``node.daemon.Node``)."""
    r = APIRouter()
    env = _env()
    files = _static_files()
    genesis = node.genesis

    def render(template: str, status: int = 200, **ctx: Any) -> Response:
        html = env.get_template(template).render(
            chain_id=node.chain_id, chain_name=genesis.doc["name"], node_name=node.config.node_name, **ctx)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8", headers=HEADERS)

    def error_page(e: LedgerError) -> Response:
        status = status_of(e)
        return render("error.html", status, title=f"{status}: {e.code}", error=e.to_dict())

    def record_id(text: str) -> str:
        if not is_hex(text, 32):
            raise InputError("a record id is 64 lowercase hex characters", code="bad_hex", field="id")
        return text

    # -- home ------------------------------------------------------------------------------
    @r.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/explorer", status_code=307)

    def validators_up() -> tuple[int, int]:
        vals = data.validators_at(node, node.store.height() + 1)
        peers = {p["key"]: p["up"] for p in (node.replica.peers.status() if node.replica is not None else [])}
        up = sum(1 for v in vals if v["key"] == node.key.public or peers.get(v["key"]))
        return up, len(vals)

    @r.get("/explorer", include_in_schema=False)
    async def home() -> Response:
        height = node.store.height()
        up, n = validators_up()
        return render("home.html", title="Explorer", height=height, log_size=node.store.log_size(),
                    mempool=len(node.mempool), validators_up=up, validators=n,
                    blocks=data.block_rows(node, height, 10))

    @r.get("/explorer/live", include_in_schema=False)
    async def live(since: str | None = None) -> Response:
        try:
            seen = _int_param(since, "since", 0)
        except LedgerError as e:
            return error_page(e)
        new = node.store.height() - (seen or 0)
        return render("live.html", new=max(0, new))

    # -- blocks ----------------------------------------------------------------------------
    @r.get("/explorer/blocks", include_in_schema=False)
    async def blocks(before: str | None = None) -> Response:
        height = node.store.height()
        try:
            top = min(height, _int_param(before, "before", height) or 0)
        except LedgerError as e:
            return error_page(e)
        rows = data.block_rows(node, top, data.BLOCKS_PER_PAGE)
        older = rows[-1]["height"] - 1 if rows and rows[-1]["height"] > 1 else None
        newer = min(height, top + data.BLOCKS_PER_PAGE) if top < height else None
        return render("blocks.html", title="Blocks", blocks=rows, height=height, older=older, newer=newer)

    @r.get("/explorer/blocks/{height}", include_in_schema=False)
    async def block(height: str, page: str | None = None) -> Response:
        try:
            h = _int_param(height, "height")
            pno = _int_param(page, "page", 1) or 1
            row = node.store.reader.execute(
                'SELECT height, hash, header, certificate, first, "count" FROM blocks WHERE height = ?', (h,)).fetchone()
            if row is None:
                raise InputError(f"no block at height {height}", code="not_found")
        except LedgerError as e:
            return error_page(e)
        _, block_hash, header, cert, first, count = row
        certificate = orjson.loads(cert)
        vals = data.validators_at(node, h or 0)
        names = {v["key"]: v["name"] for v in vals}
        votes = [{"validator": v["validator"], "name": names.get(v["validator"], ""), "sig": v["sig"]}
                 for v in certificate["votes"]]
        pages = max(1, -(-count // data.RECORDS_PER_PAGE))
        pno = min(pno, pages)
        recs = data.block_records(node, first, count, (pno - 1) * data.RECORDS_PER_PAGE, data.RECORDS_PER_PAGE)
        top = node.store.height()
        return render("block.html", title=f"Block {h}", height=h, hash=block_hash, header=orjson.loads(header),
                    certificate=certificate, votes=votes, validators=vals, records=recs, page_no=pno, pages=pages,
                    prev=h - 1 if h and h > 1 else None, next=h + 1 if h is not None and h < top else None,
                    proposer=data.signer_info(node, orjson.loads(header)["proposer"]))

    # -- records ---------------------------------------------------------------------------
    @r.get("/explorer/records/{rid}", include_in_schema=False)
    async def record(rid: str) -> Response:
        try:
            rid = record_id(rid)
            pending = node.mempool.get(rid)
            if pending is not None:
                env_, state, index, height = orjson.loads(pending.canonical), "pending", None, None
            else:
                found = node.store.record(rid)
                if found is None:
                    raise InputError(f"no record {rid}", code="not_found")
                env_, index, height = found
                state = "committed"
        except LedgerError as e:
            return error_page(e)
        body = env_["body"]
        refs: dict[str, Any] = {}
        if env_["type"] in ("identity.register", "identity.revoke"):
            refs["subject"] = data.signer_info(node, body["key"])
        return render("record.html", title=f"Record {rid[:16]}…", id=rid, envelope=env_, body=body, state=state,
                    index=index, height=height, signer=data.signer_info(node, env_["signer"]), refs=refs)

    # -- datasets --------------------------------------------------------------------------
    @r.get("/explorer/datasets/{name:path}", include_in_schema=False)
    async def dataset(name: str) -> Response:
        ds = node.ledger.state.datasets.get(name)
        if ds is None:
            return error_page(InputError(f"no dataset {name!r} on the chain", code="not_found"))
        info = ds.to_dict()
        versions, annotations = [], []
        for idx, rid, env_ in node.store.records_where("dataset", name):
            item = {"id": rid, "index": idx, "ts": env_["ts"], "body": env_["body"],
                    "signer": data.signer_info(node, env_["signer"])}
            if env_["type"] == "dataset.contribute":
                versions.append(item)
            elif env_["type"] == "annotation.event":
                annotations.append(item)
        graph = await run_in_threadpool(lambda: lineage(StoreReader(node.store), f"dataset:{name}"))
        models = [n for n in graph["nodes"] if n["kind"] == "model_version"]
        budget = None
        if info["budget"] is not None:
            total, spent = Fraction(info["budget"]["epsilon"]), Fraction(info["spent"]["epsilon"])
            budget = {"total": float(total), "spent": float(spent), "percent": round(float(100 * spent / total)) if total else 0}
        return render("dataset.html", title=f"Dataset {name}", name=name, info=info, versions=versions,
                    annotations=annotations, models=models, budget=budget)

    # -- lineage ---------------------------------------------------------------------------
    @r.get("/explorer/lineage/{ref:path}", include_in_schema=False)
    async def lineage_page(ref: str, depth: str | None = None) -> Response:
        try:
            graph = await run_in_threadpool(lambda: lineage(StoreReader(node.store), ref))
            limit = _int_param(depth, "depth")
        except LedgerError as e:
            return error_page(e)
        depths = data.lineage_depths(graph)
        deepest = max(depths.values(), default=0)
        shown = deepest if limit is None else min(limit, deepest)
        nodes = sorted((n for n in graph["nodes"] if depths.get(n["id"], deepest) <= shown),
                       key=lambda n: (depths.get(n["id"], deepest), n.get("index", -1), n["id"]))
        ids = {n["id"] for n in nodes}
        edges = [e for e in graph["edges"] if e["from"] in ids and e["to"] in ids]
        return render("lineage.html", title=f"Lineage of {graph['root'][:24]}", ref=ref, graph=graph, nodes=nodes,
                    edges=edges, depths=depths, depth=shown, deepest=deepest, labels={n["id"]: n["label"] for n in graph["nodes"]})

    # -- attribution -----------------------------------------------------------------------
    async def tables(rid: str, total_text: str | None) -> tuple[int, dict[str, Any]]:
        rid = record_id(rid)
        from ..api_lineage import parse_total

        total = parse_total(total_text) if total_text not in (None, "") else DEFAULT_TOTAL

        def work() -> dict[str, Any]:
            reader = StoreReader(node.store)
            out: dict[str, Any] = {}
            for method in METHODS:
                try:
                    out[method] = attribute(reader, rid, total, method)
                except LedgerError as e:
                    if method == "proportional":
                        raise
                    out[method] = e.to_dict()
            return out

        return total, await run_in_threadpool(work)

    def table_rows(by_method: dict[str, Any]) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for method, table in by_method.items():
            for line in table.get("lines", []):
                row = rows.setdefault(line["key"], {"key": line["key"], "name": line["name"], "org": line["org"], "units": {}})
                row["units"][method] = line["units"]
        return sorted(rows.values(), key=lambda x: (-x["units"].get("proportional", 0), x["name"]))

    @r.get("/explorer/attribution/{rid}", include_in_schema=False)
    async def attribution(rid: str, total: str | None = None) -> Response:
        try:
            units, by_method = await tables(rid, total)
        except LedgerError as e:
            return error_page(e)
        rows = table_rows(by_method)
        recorded = [m for m in METHODS if "lines" in by_method[m]]
        return render("attribution.html", title=f"Attribution of {rid[:16]}…", id=rid, total=units, tables=by_method,
                    rows=rows, methods=METHODS, recorded=recorded, first=by_method["proportional"])

    @r.get("/explorer/attribution/{rid}/table.{fmt}", include_in_schema=False)
    async def attribution_download(rid: str, fmt: str, total: str | None = None) -> Response:
        """The tables for download: ``table.json`` (every method's table, or its error) or
        ``table.csv`` (one row per person, one column of units per method)."""
        try:
            if fmt not in ("csv", "json"):
                raise InputError(f"no table.{fmt:.20}; there are table.csv and table.json", code="not_found")
            units, by_method = await tables(rid, total)
        except LedgerError as e:
            return Response(orjson.dumps(e.to_dict()), status_code=status_of(e), media_type="application/json",
                            headers=HEADERS)
        if fmt == "json":
            body = orjson.dumps({"model": rid, "total_units": units, "methods": by_method}, option=orjson.OPT_INDENT_2)
            kind = "application/json"
        else:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["key", "name", "organisation", *METHODS])
            for row in table_rows(by_method):
                w.writerow([row["key"], row["name"], row["org"], *(row["units"].get(m, "") for m in METHODS)])
            body, kind = buf.getvalue().encode(), "text/csv; charset=utf-8"
        return Response(body, media_type=kind, headers={
            **HEADERS, "Content-Disposition": f'attachment; filename="attribution-{rid[:16]}-{units}.{fmt}"'})

    # -- network ---------------------------------------------------------------------------
    @r.get("/explorer/network", include_in_schema=False)
    async def network() -> Response:
        height = node.store.height()
        vals = data.validators_at(node, height + 1)
        peers = node.replica.peers.status() if node.replica is not None else []
        up = {p["key"]: p for p in peers}
        for v in vals:
            v["self"] = v["key"] == node.key.public
            v["up"] = v["self"] or bool(up.get(v["key"], {}).get("up"))
        return render("network.html", title="Network", height=height, validators=vals, peers=peers,
                    consensus=node.replica.status() if node.replica is not None else None,
                    evidence=node.store.evidence(), signers=data.recent_signers(node, 20),
                    quorum=quorum(len(vals)))

    # -- search ----------------------------------------------------------------------------
    def query_of(q: str | None) -> str:
        if q is None or not q.strip():
            raise InputError("q: required (a record id or prefix, block hash, height, dataset:NAME, key or name)",
                             code="bad_request", field="q")
        if len(q) > data.MAX_QUERY:
            raise InputError(f"q: at most {data.MAX_QUERY} characters", code="bad_request", field="q")
        return q.strip()

    @r.get("/v1/search", tags=["chain"], responses={200: {"description": "What the query names"}, **errors(400)})
    async def api_search(q: str = Query(..., min_length=1, max_length=data.MAX_QUERY, pattern=r"\S",
                                        description="A record id or prefix (8+ hex), block hash, height, "
                                                    "dataset:NAME, public key or identity name.")) -> Response:
        """What `q` names: a record id or a prefix of one (at least 8 hex characters), a
        block hash or prefix, a height, `dataset:NAME`, a public key or an identity's name."""
        query = query_of(q)
        return Response(orjson.dumps({"query": query, "results": data.search(node, query)}),
                        media_type="application/json")

    @r.get("/explorer/search", include_in_schema=False)
    async def search_page(q: str | None = None) -> Response:
        if q is None or not q.strip():
            return render("search.html", title="Search", query="", results=None)
        try:
            query = query_of(q)
        except LedgerError as e:
            return error_page(e)
        results = data.search(node, query)
        if len(results) == 1 and results[0]["kind"] != "identity":
            return RedirectResponse(results[0]["url"], status_code=303, headers=HEADERS)
        return render("search.html", title=f"Search: {query}", query=query, results=results)

    # -- API docs and static files ------------------------------------------------------------
    @r.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        html = env.get_template("docs.html").render(title="provledger node API", ui="swagger")
        return Response(html, media_type="text/html; charset=utf-8", headers={**HEADERS, "Content-Security-Policy": DOCS_CSP})

    @r.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        html = env.get_template("docs.html").render(title="provledger node API", ui="redoc")
        return Response(html, media_type="text/html; charset=utf-8", headers={**HEADERS, "Content-Security-Policy": DOCS_CSP})

    @r.get("/explorer/static/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        p = files.get(path)
        if p is None:
            return Response(orjson.dumps({"code": "not_found", "message": f"no file {path!r:.80}"}), status_code=404,
                            media_type="application/json", headers=HEADERS)
        kind = "text/javascript" if p.suffix in (".js", ".mjs") else mimetypes.guess_type(p.name)[0] or "text/plain"
        return FileResponse(p, media_type=kind, headers={**HEADERS, "Cache-Control": "public, max-age=3600"})

    return r

