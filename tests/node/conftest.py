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
  ``free_port()``
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from factory import Consortium

from ledger.store import Store

PARTICIPANT_ROLES = "contributor,annotator,trainer,evaluator"


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


# --- real processes ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provledger_cmd() -> list[str]:
    """The installed ``provledger`` next to this interpreter, else ``python -m ledger.cli``."""
    exe = Path(sys.executable).parent / "provledger"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("provledger")
    return [found] if found else [sys.executable, "-m", "ledger.cli"]


def init_home(path: Path, *args: str) -> Path:
    """Run ``provledger init --home path`` (in process) with extra ``args``."""
    from ledger.cli import cli

    res = CliRunner().invoke(cli, ["init", "--home", str(path), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture
def node_home(tmp_path: Path) -> Path:
    home = tmp_path / "net"
    return init_home(home, "--participant-key", f"{home / 'alice.key'}={PARTICIPANT_ROLES}")


class NodeProcess:
    """A ``provledger node start`` process; its output goes to ``home/node.log``."""

    def __init__(self, home: Path, port: int | None = None, *, log_level: str = "info") -> None:
        self.home = Path(home)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "node.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [*provledger_cmd(), "node", "start", "--home", str(self.home), "--port", str(self.port),
             "--log-level", log_level],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all."""
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the clean shutdown; SIGKILL if it takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


@pytest.fixture
def start_node() -> Iterator[Any]:
    """``start_node(home, port=None) -> NodeProcess`` (ready); every process it started is
    stopped when the test ends."""
    procs: list[NodeProcess] = []

    def start(home: Path, port: int | None = None, **kw: Any) -> NodeProcess:
        p = NodeProcess(home, port, **kw)
        procs.append(p)
        p.wait_ready()
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.terminate()


@contextlib.contextmanager
def _running(home: Path, port: int | None = None, **kw: Any) -> Iterator[str]:
    p = NodeProcess(home, port, **kw)
    try:
        yield p.wait_ready()
    finally:
        p.terminate()


@pytest.fixture
def running_node() -> Any:
    """``with running_node(home) as base_url: ...`` runs a real node for the block."""
    return _running
