"""Block sync between nodes: the bulk block route and the background catch-up task.

``GET /v1/blocks?from=H&limit=K[&records=R]`` returns consecutive final blocks from height
``H``, each exactly the body of ``GET /v1/blocks/{height}`` (PROTOCOL.md 8)::

    {"height": <this node's height>, "blocks": [{"header", "hash", "certificate", "records"}, ...]}

At most ``limit`` blocks (1..1000, default 100); blocks are added while the records
gathered stay within ``records`` (1..20,000, default 5,000) and their envelopes within 16
MiB, so the answer holds at least one block whenever block ``H`` exists and stays small. ``from`` beyond the
head gives ``"blocks": []``. A lagging node (``node.catchup``) uses it to fetch whole ranges
in one request; nothing in the answer is trusted by the receiver.

``install(app, node)`` adds the route, and runs ``CatchUp.follow`` beside the node for as
long as the app runs when the node has peers (other validators of the genesis or of the current set, or
``"peers": [URL, ...]`` in config.json).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import Response

from .api_schema import MAX_INT, Blocks, errors
from .daemon import Node

__all__ = ["MAX_BYTES", "MAX_LIMIT", "MAX_RECORDS", "blocks_range", "install"]

log = logging.getLogger("provledger.sync")

MAX_LIMIT = 1000
MAX_RECORDS = 20_000
MAX_BYTES = 16 * 1024 * 1024  # envelopes per answer, beyond its first block


def blocks_range(store: Any, start: int, limit: int = 100, records: int = 5000, max_bytes: int = MAX_BYTES) -> bytes:
    """The JSON body of ``GET /v1/blocks?from=start&limit=limit&records=records``, built
    from the stored canonical header, certificate and envelope strings without parsing them.
    Blocks are added while the records stay within ``records`` and the envelopes within
    ``max_bytes``; the first block always goes in."""
    conn = store.reader
    height = store.height()
    rows = conn.execute(
        'SELECT height, hash, header, certificate, first, "count" FROM blocks '
        "WHERE height >= ? ORDER BY height LIMIT ?",
        (start, limit),
    ).fetchall()
    parts: list[bytes] = []
    n = size = 0
    expect = start
    for h, block_hash, header, cert, first, count in rows:
        if h != expect or (parts and (n + count > records or size >= max_bytes)):
            break
        envs = ",".join(r[0] for r in conn.execute(
            "SELECT envelope FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", (first, first + count))).encode()
        parts.append(b'{"header":' + header.encode() + b',"hash":"' + block_hash.encode() + b'","certificate":'
                     + cert.encode() + b',"records":[' + envs + b"]}")
        n += count
        size += len(envs)
        expect += 1
    return b'{"height":' + str(height).encode() + b',"blocks":[' + b",".join(parts) + b"]}"


def install(app: FastAPI, node: Node) -> None:
    """Add ``GET /v1/blocks`` to ``app`` and run the node's catch-up beside it."""

    @app.get("/v1/blocks", tags=["blocks"],
             responses={200: {"model": Blocks, "description": "The blocks"}, **errors(400)})
    async def get_blocks(
        start: int = Query(..., alias="from", ge=1, le=MAX_INT, description="First height to return."),
        limit: int = Query(100, ge=1, le=MAX_LIMIT, description="At most this many blocks."),
        records: int = Query(5000, ge=1, le=MAX_RECORDS, description="Stop adding blocks past this many records."),
    ) -> Response:
        """Consecutive final blocks from height `from`, each with its certificate and records
        (for nodes that catch up); `height` is this node's height."""
        return Response(blocks_range(node.store, start, limit, records), media_type="application/json")

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            catchup = node.make_catchup()
            node.catchup = catchup
            task = asyncio.create_task(catchup.follow(), name="catch-up") if catchup.peers else None
            try:
                yield state
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await catchup.aclose()

    app.router.lifespan_context = lifespan
