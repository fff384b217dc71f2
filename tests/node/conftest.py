"""Fixtures for the node tests: in-process apps and real node processes on 127.0.0.1.

There is deliberately no ``tests/node/__init__.py``: with one, pytest would import this
directory as a package named ``node`` and shadow the daemon package.

In-process (fast; a real SQLite file in ``tmp_path``, the block loop running):
  ``consortium``   the factory's deterministic consortium (tests/factory.py)
  ``home``         a node home for that consortium (its validator-0 key)
  ``client``       a ``fastapi.testclient.TestClient`` of the node app, lifespan started

Real processes (mark the tests ``@pytest.mark.e2e``):
  ``node_home``    ``provledger init`` into tmp_path/net with a participant key
                   ``node_home / "alice.key"`` (contributor, annotator, trainer, evaluator)
  ``running_node(home, port=None) -> base_url``   a context manager; SIGTERM on exit
  ``start_node(home, port=None) -> NodeProcess``  for tests that kill and restart
  (tests/procs.py: ``free_port()``, ``NodeProcess``, ``until()``, four-validator ``network()``)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factory import Consortium
from procs import PARTICIPANT_ROLES, NodeProcess, init_home, start_node_process

from ledger.store import Store


# --- in-process --------------------------------------------------------------------------
def make_home(path: Path, c: Consortium, **config: Any) -> Path:
    """A node home for the factory consortium ``c`` (validator 0 runs it)."""
    import json

    from node.config import NodeConfig

    path.mkdir(parents=True, exist_ok=True)
    c.validators[0].save(path / "validator.key")
    (path / "genesis.json").write_text(json.dumps(c.doc, indent=2))
    Store.create(path / "ledger.db", c.doc).close()
    cfg = NodeConfig(home=path, **config)
    cfg.save()
    return path


@pytest.fixture
def consortium() -> Consortium:
    return Consortium()


@pytest.fixture
def home(tmp_path: Path, consortium: Consortium) -> Path:
    return make_home(tmp_path / "home", consortium, block_interval_ms=10)


@pytest.fixture
def client(home: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from node.app import create_app

    with TestClient(create_app(home), raise_server_exceptions=True) as c:
        yield c


# --- real processes (tests/procs.py: ports, readiness, retry on a busy port) ------------------
@pytest.fixture
def node_home(tmp_path: Path) -> Path:
    home = tmp_path / "net"
    return init_home(home, "--participant-key", f"{home / 'alice.key'}={PARTICIPANT_ROLES}")


@pytest.fixture
def start_node() -> Iterator[Any]:
    """``start_node(home, port=None) -> NodeProcess`` (ready); every process it started is
    stopped when the test ends."""
    started: list[NodeProcess] = []

    def start(home: Path, port: int | None = None, **kw: Any) -> NodeProcess:
        p = start_node_process(home, port, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@contextlib.contextmanager
def _running(home: Path, port: int | None = None, **kw: Any) -> Iterator[str]:
    p = start_node_process(home, port, **kw)
    try:
        yield p.url
    finally:
        p.stop()


@pytest.fixture
def running_node() -> Any:
    """``with running_node(home) as base_url: ...`` runs a real node for the block."""
    return _running
