"""Lineage and attribution computed by the node from its own store.

    GET /v1/lineage/{ref}                         the graph of ``provledger lineage --json``
    GET /v1/attribution/{record_id}?total=UNITS[&method=M][&metric=NAME]
                                                  the table of ``provledger attribution --json``

Both call the library functions the CLI calls (``ledger.lineage.lineage``,
``ledger.attribution.attribute``) over a ``ledger.reader.StoreReader`` of the node's
store, so the answers are the same JSON an auditor recomputes offline from the database
file or a bundle (docs/attribution.md). Nothing here is trusted by such an auditor: these
routes are a convenience.

The work runs in a worker thread (it reads many records and, for Shapley, enumerates
coalitions), at most ``MAX_CONCURRENT`` at a time, each with the thread's own read-only
SQLite connection (``Store.reader``); the reader fixes the log size when it starts, so a
block committed meanwhile does not change the answer halfway.

Errors (docs/protocol.md 8): 404 ``not_found`` (no such committed record or dataset; a
lineage ref that is not 64 hex characters is taken for a dataset name); 400 ``bad_hex``
(attribution), ``bad_total``, ``bad_method``; 422 when the record exists but the chain
cannot answer for it: ``not_a_model`` (attribution of a record that is not a model.update),
``coalitions_missing``, ``nothing_to_attribute``, ``broken_lineage``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Path, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ledger.attribution import METHODS, attribute
from ledger.errors import InputError, LedgerError
from ledger.lineage import lineage
from ledger.reader import StoreReader

from .api_schema import HEX64, errors

__all__ = ["MAX_CONCURRENT", "MAX_TOTAL", "install", "parse_total"]

MAX_CONCURRENT = 2  # lineage/attribution computations at once; more wait their turn
MAX_TOTAL = 10**18  # units to share out: any integer 0..MAX_TOTAL
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_total(text: str | None) -> int:
    """``?total=`` as an integer 0..MAX_TOTAL (``bad_total`` otherwise)."""
    if text is None or text == "":
        raise InputError("total: required (the integer number of units to share out)", code="bad_total", field="total")
    if not _DIGITS.fullmatch(text) or int(text) > MAX_TOTAL:
        raise InputError(f"total: must be an integer from 0 to {MAX_TOTAL}, got {text!r:.40}", code="bad_total",
                         field="total")
    return int(text)


def install(app: FastAPI, node: Any) -> None:
    """Add ``GET /v1/lineage/{ref}`` and ``GET /v1/attribution/{record_id}`` to ``app``."""
    gate = asyncio.Semaphore(MAX_CONCURRENT)

    async def compute(work: Callable[[StoreReader], dict[str, Any]]) -> Response:
        async with gate:
            try:
                out = await run_in_threadpool(lambda: work(StoreReader(node.store)))
            except LedgerError as e:
                return Response(orjson.dumps(e.to_dict()), status_code=e.http_status, media_type="application/json")
        return Response(orjson.dumps(out), media_type="application/json")

    @app.get("/v1/lineage/{ref:path}", tags=["lineage"],
             responses={200: {"description": "The lineage graph"}, **errors(400, 404, 422)})
    async def get_lineage(ref: str) -> Response:
        """Where a model version came from (a model.update record id), or which models
        used a dataset (a dataset.contribute record id, or `dataset:NAME`): the graph
        `provledger lineage --json` prints."""
        return await compute(lambda r: lineage(r, ref))

    @app.get("/v1/attribution/{record_id}", tags=["lineage"],
             responses={200: {"description": "The attribution table"}, **errors(400, 404, 422)})
    async def get_attribution(
        record_id: str = Path(pattern=HEX64, description="A model.update record id."),
        total: str = Query(pattern="^[0-9]{1,19}$", description="Units to share out: an integer 0..10^18."),
        method: str = Query("proportional", description="proportional, shapley or leave-one-out.",
                            json_schema_extra={"enum": list(METHODS)}),
        metric: str | None = Query(None, description="Evaluation metric for shapley / leave-one-out."),
    ) -> Response:
        """Share `total` units of a model version's benefit among its contributors
        (docs/attribution.md): the table `provledger attribution --json` prints."""
        units = parse_total(total)
        if method not in METHODS:
            raise InputError(f"method: must be one of {', '.join(METHODS)}, got {method!r:.40}", code="bad_method",
                             field="method")
        return await compute(lambda r: attribute(r, record_id, units, method, metric=metric))
