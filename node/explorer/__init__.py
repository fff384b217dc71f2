"""The explorer: the ledger as web pages, served by the node itself (README "Explorer").

``router(node)`` is a FastAPI ``APIRouter`` with::

    GET /                                 -> 307 /explorer
    GET /explorer                         home: chain, height, last blocks, mempool, validators up
    GET /explorer/live?since=H            the home page's "N new blocks" notice (htmx polls it)
    GET /explorer/blocks[?before=H]       blocks, newest first, 20 a page
    GET /explorer/blocks/{height}[?page=N] one block: header, certificate votes, records
    GET /explorer/records/{id}            one record, a view per type, its proof
    GET /explorer/datasets/{name}         versions, annotations, privacy budget, models using it
    GET /explorer/lineage/{ref}[?depth=N] the lineage graph (and a table of it)
    GET /explorer/attribution/{id}[?total=N]  the attribution tables side by side, a bar chart
    GET /explorer/attribution/{id}/table.csv|table.json   the same for download
    GET /explorer/network                 validators, peers, rounds, evidence, who signed what
    GET /explorer/search?q=               what a query names (one result: a redirect to it)
    GET /v1/search?q=                     the same as JSON {"query", "results": [...]}
    GET /docs, /redoc                     the API's documentation (Swagger UI, ReDoc)
    GET /explorer/static/{path}           the explorer's CSS and JS, and the vendored files

The pages are rendered on the server (Jinja2) and work without JavaScript; htmx, Cytoscape
and the browser's checks (``static/js/checks.js``) add to them. Every file a page loads is
served from here (``static/vendor/MANIFEST.json`` pins each vendored file's SHA-256), and
every answer carries a ``Content-Security-Policy`` of ``'self'``: a page makes no request to
another host and runs no inline script.
"""

from __future__ import annotations

from .pages import router

__all__ = ["router"]
