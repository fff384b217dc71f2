"""Every final block of a node over HTTP, as of its latest checkpoint (PROTOCOL.md 8).

Shared by ``ledger.reader.fetch_node`` (a reader over the blocks) and
``ledger.bundle.export_node_bundle`` (a bundle of them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .client import Client

__all__ = ["node_blocks"]


def node_blocks(url: str) -> tuple[dict[str, Any], Iterator[dict[str, Any]], int, int]:
    """(genesis, blocks 1..height, height, log size) of the node at ``url``, as of its
    latest checkpoint when called. The blocks are fetched one at a time as the iterator
    is consumed; the connection closes when it is exhausted or closed."""
    client = Client(url)
    try:
        genesis = client.genesis()
        height = client.height()
        size = int(client.checkpoint(height)["header"]["log_size"]) if height else 0
    except BaseException:
        client.close()
        raise

    def gen() -> Iterator[dict[str, Any]]:
        try:
            for h in range(1, height + 1):
                yield client.block(h)
        finally:
            client.close()

    return genesis, gen(), height, size
