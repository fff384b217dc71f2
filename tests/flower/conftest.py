"""Fixtures for the Flower integration tests: a real node process (tests/procs.py) on the
worked example's network (scripts/demo.py's ``make_network``) and the federation of
scripts/fl_demo.py run against it once, in process.

The test modules skip themselves (``pytest.importorskip``) when flwr is not installed
(``pip install -e .[test,flower]``; ``scripts/test`` installs it).
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))  # fl_demo.py and demo.py, the helpers they share


@pytest.fixture(scope="session")
def fl_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The demo's three-organisation network in a fresh home with a node process on it."""
    pytest.importorskip("flwr", reason="the flower extra is not installed (pip install -e .[test,flower])")
    from demo import make_network
    from procs import free_port, start_node_process

    from ledger.client import Client

    home = tmp_path_factory.mktemp("fl") / "net"
    make_network(home, free_port())
    with contextlib.ExitStack() as stack:
        node = start_node_process(home, log_level="warning")  # on a port free when it starts
        stack.callback(node.stop)
        client = stack.enter_context(Client(node.url))
        yield {"home": home, "url": node.url, "client": client, "db": home / "ledger.db"}


@pytest.fixture(scope="session")
def federation(fl_node: dict[str, Any]) -> dict[str, Any]:
    """scripts/fl_demo.py's federation (3 hospitals, 3 rounds, central DP), with the arrays
    every client sent and ``demo_db``, a copy of the chain as the demo left it.

    The node and its chain are shared by the whole session: tests that record more (other
    federations on the same network) append to it, in whatever order they run. A test reads
    what it relies on from ``out``, from ``demo_db``, or relative to the records it made."""
    import fl_demo

    sent: dict[tuple[int, int], Any] = {}
    out = fl_demo.run(fl_node["client"], fl_node["home"], 3, sent=sent)
    demo_db = fl_node["home"].parent / "demo.db"
    # SQLite's online backup: a consistent copy of the node's WAL database while it runs.
    with contextlib.closing(sqlite3.connect(fl_node["db"])) as src, contextlib.closing(sqlite3.connect(demo_db)) as dst:
        src.backup(dst)
    return {**fl_node, "out": out, "sent": sent, "demo_db": demo_db}
