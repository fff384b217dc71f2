"""The HTTP API of a node (PROTOCOL.md 8 and the extra endpoints below), on FastAPI.

Endpoints::

    POST /v1/records[?wait=true&timeout=S]         one envelope -> 202 {id, status: pending}
                                                   or 200 {id, status: committed}
    POST /v1/records/batch[?wait=true&timeout=S]   {"records": [...]} -> 200 {"results": [...]}
    GET  /v1/records/{id}                          {record, status, height, index}
    GET  /v1/records/{id}/proof                    RFC 9162 inclusion proof + checkpoint
    GET  /v1/checkpoint, /v1/checkpoint/{height}   {header, hash, certificate}
    GET  /v1/blocks/{height}                       {header, hash, certificate, records}
    GET  /v1/blocks?from=H&limit=K&records=R       {height, blocks: [...]} (node.api_sync)
    GET  /v1/proofs/consistency?first=m&second=n   {first, second, path}
    GET  /v1/membership[?to=T]                     the membership history (node.api_membership)
    GET  /v1/genesis                               the genesis document
    GET  /v1/identities                            {"identities": [...]}
    GET  /v1/datasets/{name}                       versions, annotations, budget
    GET  /v1/status                                chain id, height, log size, mempool, peers
    GET  /v1/lineage/{ref}                         `provledger lineage --json` (node.api_lineage)
    GET  /v1/attribution/{id}?total=N[&method=M][&metric=NAME]
                                                   the table of `provledger attribution --json`
    GET  /v1/validators[?height=H], /v1/proposals[?status=S], /v1/organisations
                                                   the consortium (node.api_governance)
    POST /v1/peer/message                          a signed proposal or vote, or {"messages": [...]}
                                                   -> 202 {accepted, refused} (node.api_peer)
    POST /v1/peer/records                          {"records": [...]} forwarded by a validator
                                                   -> 200 {"results": [...]}
    GET  /v1/evidence                              {"evidence": [...]}: conflicting signed messages
    GET  /healthz, GET /metrics (Prometheus text), GET /docs (OpenAPI)

Errors: every error body is ``{"code": str, "message": str}``, sometimes with ``field``
or ``index``. Status by kind (each error family's ``http_status``, ledger.errors):

    400  the request or a record is malformed, or a signature does not verify:
         bad_json, bad_type, unknown_field, missing_field, bad_hex, bad_value, bad_decimal,
         bad_time, bad_version, unknown_type, wrong_chain, bad_signature, bad_range
         (consistency proof sizes), bad_request (query/path parameters, Content-Length);
         attribution: bad_total, bad_method; peer routes: bad_message, not_validator,
         wrong_proposer, no_consensus (a one-validator node takes no peer messages)
    422  a well-formed, correctly signed record that the chain's state refuses
         (ledger.errors.RuleError): unknown_signer, revoked_signer, forbidden_role,
         replayed_nonce, missing_reference, budget_exceeded, budget_mismatch,
         duplicate_dataset, unknown_org, identity_exists, unknown_identity, already_revoked;
         lineage/attribution of a record the chain cannot answer for: not_a_model,
         coalitions_missing, nothing_to_attribute, broken_lineage
    404  not_found (no such record, block, dataset, route); 405 method_not_allowed
    413  record_too_large (canonical envelope over 64 KiB), request_too_large (body over
         16 MiB), batch_too_large (over 10,000 records or peer messages)
    503  mempool_full (more than ``max_mempool`` records wait for blocks: retry), shutting_down,
         storage_unavailable (blocks cannot be stored, e.g. a full disk: ``Node.check_writable``)
    504  commit_timeout (``?wait=true`` and the record was not committed in time)
    500  internal (a bug: logged with its traceback)

Request bodies are read and parsed here with orjson, never by FastAPI/pydantic: it is
faster and the errors are ours. Responses are orjson bytes. Each request has one route and
one set of answers; the OpenAPI document (``/openapi.json``, ``node.api_schema``) lists them.
``POST /v1/records``, one request per record, is a bare ASGI endpoint on a Starlette route
(its query read with ``node.asgi.SubmitParams``, as the batch route's); every other route is FastAPI's.
The HTTP server on the port is granian (``node.serve``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from ledger.errors import InputError, LedgerError, NotFoundError, TooLargeError
from ledger.proofs import checkpoint_doc, proof_doc

from . import api_schema as doc
from .api_governance import install as install_governance
from .api_lineage import install as install_lineage
from .api_membership import Proof as MembershipProof
from .api_membership import install as install_membership
from .api_peer import install as install_peer
from .api_sync import install as install_sync
from .asgi import (
    MAX_BATCH_RECORDS,
    MAX_REQUEST_BYTES,
    Disconnected,
    Message,
    Receive,
    Scope,
    Send,
    SubmitParams,
    loads,
    read_body,
    receive_body,
    send_json,
    submit_params,
)
from .daemon import Node
from .explorer import router as explorer_router
from .metrics import CONTENT_TYPE_LATEST

__all__ = ["MAX_BATCH_RECORDS", "MAX_REQUEST_BYTES", "create_app"]

log = logging.getLogger("provledger.node")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A query or path parameter that breaks its declared form is 400 ``bad_request``, except
# these, which keep the code and field their own check gives (docs/protocol.md 8).
_PARAM_CODES = {"record_id": ("bad_hex", "id"), "total": ("bad_total", "total")}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _raw_json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


class _Edge:
    """Outermost handling of every request: counts it by method and status, and turns an
    unexpected exception into a logged 500 ``{"code": "internal"}``."""

    def __init__(self, app: ASGIApp, node_of: Callable[[], Node | None]) -> None:
        self.app = app
        self.node_of = node_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Disconnected:  # the client left before its request was read: nobody to answer
            status = 0
        except Exception:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            status = 500
            if not started:
                body = orjson.dumps({"code": "internal", "message": "internal error; see the node's log"})
                await send_json(send, 500, body)
        finally:
            node = self.node_of()
            if node is not None and status:
                node.metrics.answered(scope.get("method", ""), status)


class _Bare:
    """A bare ASGI endpoint for a Starlette ``Route`` (a function there would be wrapped
    as ``func(request) -> response``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self.app(scope, receive, send)


_RECORD_SCHEMA = {
    "type": "object",
    "description": "A signed record envelope (PROTOCOL.md 3)",
    "required": ["v", "chain", "type", "signer", "nonce", "ts", "body", "sig"],
}
_BATCH_SCHEMA = {
    "type": "object",
    "required": ["records"],
    "additionalProperties": False,
    # Any item: each is checked on its own and answered in ``results``.
    "properties": {"records": {"type": "array", "maxItems": MAX_BATCH_RECORDS,
                               "items": {"description": "A signed record envelope (PROTOCOL.md 3)"}}},
}


def create_app(home: str | Path | None = None, *, node: Node | None = None, **overrides: Any) -> FastAPI:
    """The node's FastAPI app. Give ``home`` (a node home made by ``provledger init``) or
    an opened ``node``. The lifespan starts the block loop and, on shutdown, finishes the
    block in flight, commits what is waiting and closes the store. More routes join with
    ``app.include_router(...)``; their errors get the same answers."""
    if node is None:
        if home is None:
            raise TypeError("create_app needs home or node")
        node = Node.open(home, **overrides)
    the_node: Node = node

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await the_node.start()
        cfg = the_node.config
        log.info("listening on http://%s:%d chain %s height %d log size %d (node %s, validator %s…)",
                 cfg.host, cfg.port, the_node.chain_id, the_node.store.height(), the_node.store.log_size(),
                 cfg.node_name, the_node.key.public[:16])
        try:
            yield
        finally:
            log.info("shutting down")
            await the_node.stop()

    app = FastAPI(
        title="provledger node",
        version="1",
        summary="Signed, hash-chained provenance records for collaborative ML (PROTOCOL.md 8)",
        lifespan=lifespan,
        # No OpenTelemetry: the node has /metrics; this spares a provider check per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None, redoc_url=None,  # /docs and /redoc with the node's own files (node.explorer)
    )
    app.openapi = lambda: doc.openapi(app, documented.routes)  # type: ignore[method-assign]
    app.state.node = the_node
    app.add_middleware(_Edge, node_of=lambda: the_node)

    # -- errors: one JSON shape for all -------------------------------------------------
    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, e: LedgerError) -> Response:
        status = e.http_status
        if request.method == "POST" or status == 413:
            the_node.rejected(e.code, f"{request.method} {request.url.path} -> {status}: {e.message}")
        return _json(e.to_dict(), status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> Response:
        errs = e.errors()
        first = errs[0] if errs else {}
        where = [str(p) for p in first.get("loc", ())]
        loc = ".".join(where)
        code, field = _PARAM_CODES.get(where[-1], ("bad_request", loc)) if where else ("bad_request", loc)
        body = {"code": code, "message": f"{loc}: {first.get('msg', 'invalid')}", "field": field}
        if request.method == "POST":
            the_node.rejected(code, body["message"])
        return _json(body, 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, f"http_{e.status_code}")
        out = _json({"code": code, "message": str(e.detail)}, e.status_code)
        out.headers.update(e.headers or {})  # 405: Allow
        return out

    # -- submission --------------------------------------------------------------------
    async def settle(rid: str, status: str, params: SubmitParams) -> tuple[int, dict[str, Any]]:
        if status == "pending" and params.wait:
            result = (await the_node.wait_committed([rid], params.timeout))[rid]
            if isinstance(result, LedgerError):  # dropped at block time (counted and logged there)
                return result.http_status, result.to_dict()
            status = "committed"
        return 200 if status == "committed" else 202, {"id": rid, "status": status}

    async def post_record(scope: Scope, receive: Receive, send: Send) -> None:
        """Submit one signed envelope. 202 pending, 200 if already committed."""
        params = submit_params(scope)
        rid, status = await the_node.submit_one(loads(await receive_body(scope, receive)))
        code, out = await settle(rid, status, params)
        await send_json(send, code, orjson.dumps(out))

    # The busiest route is a bare ASGI endpoint on a Starlette route: no Request object,
    # dependency solving or Response per record (measured in scripts/bench node). Its
    # errors are raised to the same handlers as every route's; its operation in the
    # OpenAPI document is declared below with FastAPI (``documented``), never mounted.
    app.router.routes.insert(0, Route("/v1/records", _Bare(post_record), methods=["POST"], name="post_record"))
    documented = APIRouter()

    @documented.post("/v1/records", name="post_record", status_code=202, openapi_extra=doc.body(_RECORD_SCHEMA),
                     tags=["records"],
                     responses={200: {"model": doc.Submitted, "description": "Committed (before, or with `wait=true`)"},
                                202: {"model": doc.Submitted, "description": "Accepted, pending"},
                                **doc.errors(400, 413, 422, 503, 504)})
    async def post_record_operation(params: Annotated[SubmitParams, Query()]) -> None:  # pragma: no cover - never called
        """Submit one signed envelope. 202 pending, 200 if already committed."""

    @app.post("/v1/records/batch", openapi_extra=doc.body(_BATCH_SCHEMA), tags=["records"],
              responses={200: {"model": doc.BatchResults, "description": "One result per item, in order"},
                         **doc.errors(400, 413, 503, 504)})
    async def post_batch(request: Request, params: Annotated[SubmitParams, Query()]) -> Response:
        """Submit up to 10,000 envelopes; per-item results in the same order."""
        obj = loads(await read_body(request))
        if type(obj) is not dict:
            raise InputError('a batch must be a JSON object {"records": [...]}', code="bad_type")
        for k in obj:
            if k != "records":
                raise InputError(f"{k}: unknown field of a batch", code="unknown_field", field=k)
        if "records" not in obj:
            raise InputError("records: missing required field", code="missing_field", field="records")
        items = obj["records"]
        if type(items) is not list:
            raise InputError("records: must be an array", code="bad_type", field="records")
        if len(items) > MAX_BATCH_RECORDS:
            raise TooLargeError(f"a batch holds at most {MAX_BATCH_RECORDS} records, got {len(items)}",
                                code="batch_too_large")
        results = await the_node.submit_batch(items)
        if params.wait:
            waiting = [r["id"] for r in results if r.get("status") == "pending"]
            if waiting:
                done = await the_node.wait_committed(waiting, params.timeout)
                for i, r in enumerate(results):
                    out = done.get(r.get("id", ""))
                    if isinstance(out, LedgerError):
                        results[i] = {"index": i, **out.to_dict()}
                    elif out is not None:
                        r["status"] = "committed"
        return _json({"results": results})

    @app.api_route("/v1/records/batch", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def batch_other_methods() -> Response:
        """405, not ``GET /v1/records/{record_id}`` with the id "batch"."""
        raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})

    # -- reading -----------------------------------------------------------------------
    record_id_p = PathParam(pattern=doc.HEX64, description="A record id: 64 lowercase hex characters.")
    height_p = PathParam(ge=0, le=doc.MAX_INT, description="A block height (the first block is 1).")

    @app.get("/v1/records/{record_id}", tags=["records"],
             responses={200: {"model": doc.RecordView, "description": "The record"}, **doc.errors(400, 404)})
    async def get_record(record_id: str = record_id_p) -> Response:
        """A record with its status, and its block height and log index once committed."""
        rec = the_node.mempool.get(record_id)
        if rec is not None:
            return _raw_json(b'{"record":' + rec.canonical + b',"status":"pending","height":null,"index":null}')
        found = the_node.store.record(record_id)
        if found is None:
            raise NotFoundError(f"no record {record_id}")
        env, index, height = found
        return _json({"record": env, "status": "committed", "height": height, "index": index})

    @app.get("/v1/records/{record_id}/proof", tags=["proofs"],
             responses={200: {"model": MembershipProof, "description": "RFC 9162 inclusion proof, checkpoint and "
                                                                        "membership history"}, **doc.errors(400, 404)})
    async def get_proof(record_id: str = record_id_p) -> Response:
        """RFC 9162 inclusion proof against the latest checkpoint, with its membership
        history (PROTOCOL.md 9.4): it verifies with the genesis alone."""
        if record_id in the_node.mempool:
            raise NotFoundError(f"record {record_id} is pending; it has no proof until it is committed")
        return _json(proof_doc(the_node.store, record_id))

    def _checkpoint(height: int | None) -> dict[str, Any]:
        store = the_node.store
        block = store.head() if height is None else store.block(height)
        if block is None:
            raise NotFoundError("no block has been committed yet" if height is None else f"no block at height {height}")
        return checkpoint_doc(block.header, block.certificate)

    @app.get("/v1/checkpoint", tags=["blocks"],
             responses={200: {"model": doc.Checkpoint, "description": "The latest checkpoint"}, **doc.errors(404)})
    async def get_checkpoint() -> Response:
        """The latest final block's header, hash and commit certificate."""
        return _json(_checkpoint(None))

    @app.get("/v1/checkpoint/{height}", tags=["blocks"],
             responses={200: {"model": doc.Checkpoint, "description": "The checkpoint"}, **doc.errors(400, 404)})
    async def get_checkpoint_at(height: int = height_p) -> Response:
        """The header, hash and commit certificate of the block at `height`."""
        return _json(_checkpoint(height))

    @app.get("/v1/blocks/{height}", tags=["blocks"],
             responses={200: {"model": doc.Block, "description": "The block"}, **doc.errors(400, 404)})
    async def get_block(height: int = height_p) -> Response:
        """A block: header, hash, certificate and its records in log order."""
        head = orjson.dumps(_checkpoint(height))
        rows = the_node.store.reader.execute(
            "SELECT envelope FROM records WHERE height = ? ORDER BY idx", (height,)
        ).fetchall()
        # The stored envelopes are canonical JSON already: splice them in unparsed.
        return _raw_json(head[:-1] + b',"records":[' + ",".join(r[0] for r in rows).encode() + b"]}")

    @app.get("/v1/proofs/consistency", tags=["proofs"],
             responses={200: {"model": doc.Consistency, "description": "The proof"}, **doc.errors(400)})
    async def get_consistency(first: int = Query(..., ge=0, le=doc.MAX_INT, description="The older log size."),
                              second: int = Query(..., ge=0, le=doc.MAX_INT, description="The newer log size.")) -> Response:
        """RFC 9162 consistency proof between two log sizes (each a checkpoint's log_size)."""
        size = the_node.store.log_size()
        if first > second:
            raise InputError(f"first ({first}) must not exceed second ({second})", code="bad_range", field="first")
        if second > size:
            raise InputError(f"second ({second}) exceeds the log size {size}", code="bad_range", field="second")
        path = the_node.store.consistency_proof(first, second) if 0 < first < second else []
        return _json({"first": first, "second": second, "path": [h.hex() for h in path]})

    genesis_bytes = orjson.dumps(the_node.genesis.doc)

    @app.get("/v1/genesis", tags=["chain"], responses={200: {"description": "The genesis document"}})
    async def get_genesis() -> Response:
        """The genesis document; its chain id is hex(SHA-256(tag || JCS(genesis)))."""
        return _raw_json(genesis_bytes)

    @app.get("/v1/identities", tags=["chain"], responses={200: {"description": "The identities"}})
    async def get_identities() -> Response:
        """Registered identities in the committed state (genesis and identity records)."""
        return _json({"identities": [i.to_dict() for i in the_node.ledger.state.identities.values()]})

    @app.get("/v1/datasets/{name:path}", tags=["chain"],
             responses={200: {"model": doc.Dataset, "description": "The dataset"}, **doc.errors(404)})
    async def get_dataset(name: str) -> Response:
        """A dataset's versions (record ids), annotations and privacy budget."""
        ds = the_node.ledger.state.datasets.get(name)
        if ds is None:
            raise NotFoundError(f"no dataset {name!r} on the chain")
        out = ds.to_dict()
        out["annotations"] = [
            {"id": rid, "index": idx, "signer": env["signer"], "ts": env["ts"], **env["body"]}
            for idx, rid, env in the_node.store.records_where("dataset", name)
            if env["type"] == "annotation.event"
        ]
        return _json(out)

    @app.get("/v1/status", tags=["chain"], responses={200: {"description": "The node's status"}})
    async def get_status() -> Response:
        """Chain id, height, log size, mempool, consensus and peers."""
        n = the_node
        return _json({
            "chain_id": n.chain_id,
            "name": n.genesis.doc["name"],
            "node_name": n.config.node_name,
            "height": n.store.height(),
            "log_size": n.store.log_size(),
            "mempool": len(n.mempool),
            "validator": n.key.public,
            "validators": len(n.ledger.state.validators),  # the set certifying the next height
            "consensus": n.replica.status() if n.replica is not None else None,
            "peers": n.replica.peers.status() if n.replica is not None else [],
            "config": n.config.settings(),  # every setting in force (node.config.NodeConfig)
        })

    @app.get("/healthz", tags=["ops"], responses={200: {"model": doc.Health, "description": "The node is up"},
                                                  **doc.errors(503)})
    async def healthz() -> Response:
        """200 ``{"ok": true, "height"}``; 503 ``{"ok": false, "code", "message", "height"}``
        while blocks cannot be stored (``storage_unavailable``, ``commit_failing``)."""
        fault = the_node.fault
        if fault is not None:
            return _json({"ok": False, **fault.to_dict(), "height": the_node.store.height()}, 503)
        return _json({"ok": True, "height": the_node.store.height()})

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    async def metrics() -> Response:
        """Prometheus text format."""
        the_node.metrics.mempool.set(len(the_node.mempool))
        return Response(the_node.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    install_sync(app, the_node)  # GET /v1/blocks?from=H (bulk) and the catch-up task
    install_peer(app, the_node)  # POST /v1/peer/message, /v1/peer/records; GET /v1/evidence
    install_lineage(app, the_node)  # GET /v1/lineage/{ref}, /v1/attribution/{id} (node.api_lineage)
    install_governance(app, the_node)  # GET /v1/validators, /v1/proposals, /v1/organisations
    install_membership(app, the_node)  # GET /v1/membership (node.api_membership)
    app.include_router(explorer_router(the_node))  # /explorer pages, GET /v1/search, /docs, /redoc
    return app
