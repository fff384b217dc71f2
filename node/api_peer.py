"""HTTP routes between validators (docs/protocol.md, "Peers and consensus messages").

    POST /v1/peer/message    a signed proposal or vote, or {"messages": [...]}  -> 202
    POST /v1/peer/records    {"records": [envelope, ...]} forwarded by a validator -> 200
    GET  /v1/evidence        {"evidence": [...]}: pairs of conflicting signed messages

A message is checked before it is queued for the consensus core: its form, its chain, its
signer (a validator of the set of its height; a proposal's signer must be the proposer of its height
and round) and its signature. Anything else is refused with a 400 and a stable ``code``:
``bad_message``, ``wrong_chain``, ``not_validator``, ``wrong_proposer``, ``bad_signature``,
``no_consensus`` (a one-validator node takes no consensus messages). Forwarded records
are admitted as any submission is (form, signature, state rules) but not forwarded again,
on every node: a one-validator node's block loop commits those a full node forwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from ledger.errors import InputError, LedgerError, TooLargeError

from .api_schema import body, errors
from .asgi import MAX_BATCH_RECORDS, loads, read_body
from .daemon import Node
from .replica import Replica

__all__ = ["MAX_PEER_MESSAGES", "install"]

MAX_PEER_MESSAGES = 10_000
PEER_RECORDS_SLICE = 256  # forwarded records admitted per turn of the event loop


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def install(app: FastAPI, node: Node) -> None:
    """Add the peer routes to the node's app (``node.app.create_app`` calls this)."""
    def replica() -> Replica:
        r = node.replica
        if r is None:
            raise InputError("this node is the only validator of its chain; it takes no peer messages",
                             code="no_consensus")
        return r

    def accept(body: bytes) -> dict[str, Any]:
        rep = replica()
        obj = loads(body)
        if type(obj) is dict and "messages" in obj and "type" not in obj:
            items = obj["messages"]
            if set(obj) != {"messages"} or type(items) is not list:
                raise InputError('a batch of messages is {"messages": [message, ...]}', code="bad_message")
            if len(items) > MAX_PEER_MESSAGES:
                raise TooLargeError(f"at most {MAX_PEER_MESSAGES} messages at once", code="batch_too_large")
            refused = []
            for i, m in enumerate(items):
                try:
                    rep.accept(m)
                except LedgerError as e:
                    refused.append({"index": i, **e.to_dict()})
            if refused and len(refused) == len(items):
                first = refused[0]
                raise InputError(f"every message refused; the first: {first['message']}", code=first["code"])
            return {"accepted": len(items) - len(refused), "refused": refused}
        rep.accept(obj)
        return {"accepted": 1, "refused": []}

    message_doc = {"type": "object", "description": 'A signed proposal or vote, or {"messages": [...]}'}
    records_doc = {"type": "object", "description": '{"records": [envelope, ...]}'}

    @app.post("/v1/peer/message", status_code=202, tags=["peers"], openapi_extra=body(message_doc),
              responses={202: {"description": "How many messages were accepted; the refused ones"},
                         **errors(400, 413)})
    async def post_peer_message(request: Request) -> Response:
        """A signed consensus message from a validator (one, or ``{"messages": [...]}``)."""
        return _json(accept(await read_body(request)), 202)

    @app.post("/v1/peer/records", tags=["peers"], openapi_extra=body(records_doc),
              responses={200: {"description": "One result per record, in order"}, **errors(400, 413)})
    async def post_peer_records(request: Request) -> Response:
        """Records another node accepted; admitted here without forwarding them again. A
        one-validator node takes them too: a full node following its chain forwards what
        it is given to the validator, whose block loop commits it."""
        obj = loads(await read_body(request))
        if type(obj) is not dict or set(obj) != {"records"} or type(obj["records"]) is not list:
            raise InputError('forwarded records are {"records": [envelope, ...]}', code="bad_type")
        if len(obj["records"]) > MAX_BATCH_RECORDS:
            raise TooLargeError(f"a batch holds at most {MAX_BATCH_RECORDS} records", code="batch_too_large")
        # In slices, letting consensus events in between: a large forwarded batch must not
        # hold the event loop (and so this node's votes) for the whole batch.
        items: list[Any] = obj["records"]
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), PEER_RECORDS_SLICE):
            part = await node.submit_batch(items[start:start + PEER_RECORDS_SLICE], forward=False)
            for r in part:
                if "index" in r:
                    r["index"] += start
            results.extend(part)
            await asyncio.sleep(0)
        return _json({"results": results})

    @app.get("/v1/evidence", tags=["peers"], responses={200: {"description": "The evidence"}})
    async def get_evidence() -> Response:
        """Equivocation evidence: two conflicting messages one validator signed for one
        height, round and step (``{"validator", "a", "b"}`` each)."""
        return _json({"evidence": node.store.evidence()})
