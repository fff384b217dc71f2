"""Waiting and real node processes for the tests, written once so that no test depends on
how fast a loaded machine is.

- ``until(what, check)`` polls ``check`` until it returns something true (and returns it);
  the deadline is generous (``WAIT_S``) because a machine running several suites at once
  can be many times slower than an idle one. No test sleeps to wait for a condition.
  ``holds(what, check, seconds)`` is the other side: something that must not happen is
  watched for a while, and the test fails the moment it does.
- Ports: ``free_port()`` and ``free_base(n)`` choose ports *below* the kernel's ephemeral
  range, so the source port of an outgoing connection (any HTTP client on the machine)
  cannot take the port between the choice and the node's bind. Another test may still pick
  the same port at the same time: a node that cannot listen says so in one line and exits,
  and ``start_node_process`` / ``start_network`` start again on fresh ports (tenacity).
- In-process servers take a socket already bound (``bound_socket()``): no race at all.

Import it by name (``from procs import ...``); tests/ is on ``sys.path`` through its
conftest. The fixtures in tests/node/conftest.py are built on it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")

WAIT_S = 120.0  # any condition a test waits for
READY_S = 120.0  # a node process answering /healthz after its start
STOP_S = 60.0  # a node's clean shutdown after SIGTERM
PARTICIPANT_ROLES = "contributor,annotator,trainer,evaluator"


class Timeout(AssertionError):
    """A condition did not hold within its deadline."""


def until(what: str, check: Callable[[], T], timeout: float = WAIT_S, interval: float = 0.05) -> T:
    """Call ``check`` every ``interval`` s until it returns a true value, and return that.
    Past ``timeout`` s: ``Timeout`` naming ``what`` and the last value seen. An exception
    from ``check`` is raised at once."""
    polling = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval), retry=retry_if_result(_false))
    try:
        return polling(check)
    except RetryError as e:
        raise Timeout(_late(what, timeout, e)) from None


async def until_async(what: str, check: Callable[[], T], timeout: float = WAIT_S, interval: float = 0.01) -> T:
    """``until`` inside an event loop: the loop runs between the polls."""

    async def call() -> T:
        return check()

    polling = AsyncRetrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval), retry=retry_if_result(_false))
    try:
        return await polling(call)
    except RetryError as e:
        raise Timeout(_late(what, timeout, e)) from None


def holds(what: str, check: Callable[[], Any], seconds: float, interval: float = 0.05) -> None:
    """Assert that ``check`` stays true for ``seconds`` (polled), failing at the first time it
    is not: for what must *not* happen (a block while no quorum is up). A slow machine can
    only make this check weaker, never make it fail a correct program."""
    watching = Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(interval), retry=retry_if_result(bool))
    try:
        watching(check)
    except RetryError:
        return  # true at every poll until the end
    raise AssertionError(f"no longer true within {seconds:g} s: {what}")


async def holds_async(what: str, check: Callable[[], Any], seconds: float, interval: float = 0.02) -> None:
    """``holds`` inside an event loop: the loop runs between the polls."""

    async def call() -> Any:
        return check()

    watching = AsyncRetrying(stop=stop_after_delay(seconds), wait=wait_fixed(interval), retry=retry_if_result(bool))
    try:
        await watching(call)
    except RetryError:
        return
    raise AssertionError(f"no longer true within {seconds:g} s: {what}")


def _false(got: Any) -> bool:
    return not got


def _late(what: str, timeout: float, e: RetryError) -> str:
    return f"not within {timeout:g} s: {what} (last: {e.last_attempt.result()!r:.1500})"


# --- ports -----------------------------------------------------------------------------------
def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999  # Linux's default
    return lo, hi


def _candidates(n: int) -> Iterator[int]:
    """Random base ports B with B+1 .. B+n outside the ephemeral range."""
    lo, hi = _ephemeral()
    ranges = [(r0, r1) for r0, r1 in ((10000, lo - 1), (hi + 1, 65535)) if r1 - r0 > n + 1]
    if not ranges:  # the whole range is ephemeral: any port then
        ranges = [(1024, 65535)]
    rng = random.SystemRandom()
    for _ in range(500):
        r0, r1 = rng.choice(ranges)
        yield rng.randrange(r0 - 1, r1 - n)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base(n: int) -> int:
    """A base port B such that B+1 .. B+n are free now (``--base-port B``)."""
    for base in _candidates(n):
        if all(_bindable(base + i) for i in range(1, n + 1)):
            return base
    raise RuntimeError(f"no free range of {n} ports")


def free_port() -> int:
    """A port that is free now (below the ephemeral range)."""
    return free_base(1) + 1


def bound_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a port of the kernel's choosing, not listening:
    it holds the port (connections are refused) until it listens or is closed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


# --- node processes --------------------------------------------------------------------------
def provledger_cmd() -> list[str]:
    """The installed ``provledger`` next to this interpreter, else ``python -m ledger.cli``."""
    exe = Path(sys.executable).parent / "provledger"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("provledger")
    return [found] if found else [sys.executable, "-m", "ledger.cli"]


class PortBusy(RuntimeError):
    """The node exited because its port was taken (``cannot listen on ...``)."""


class NodeProcess:
    """A ``provledger node start`` process; its output goes to ``home/node.log``."""

    def __init__(self, home: Path, port: int | None = None, *, log_level: str = "info") -> None:
        self.home = Path(home)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "node.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self._log_from = self._log.tell()  # this process's part of the log
        self.proc = subprocess.Popen(
            [*provledger_cmd(), "node", "start", "--home", str(self.home), "--port", str(self.port),
             "--log-level", log_level],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            mine = self.log_path.read_bytes()[self._log_from:].decode(errors="replace")
            self.wait()
            if "cannot listen on" in mine or "Address already in use" in mine:
                raise PortBusy(f"port {self.port} taken: {mine.strip()[-300:]}")
            raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = READY_S) -> str:
        """The node's URL once ``/healthz`` answers 200; ``PortBusy`` if it could not listen."""
        try:
            until(f"{self.home.name} ready on {self.url}", self._healthy, timeout)
        except Timeout as e:
            raise RuntimeError(f"{e}\n{self.log()}") from None
        return self.url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all."""
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def terminate(self, timeout: float = STOP_S) -> int:
        """SIGTERM and wait for the clean shutdown; SIGKILL if it takes too long."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = STOP_S) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
        else:
            self.wait()


def start_node_process(home: Path, port: int | None = None, **kw: Any) -> NodeProcess:
    """A ready node on ``home``. With no ``port``, a busy port means a fresh one; with a
    given port (fixed by a network's config) the same port is tried again for a while."""
    fixed = port is not None
    for attempt in Retrying(retry=retry_if_exception_type(PortBusy), reraise=True,
                            stop=stop_after_delay(READY_S) if fixed else stop_after_attempt(10),
                            wait=wait_fixed(0.5 if fixed else 0)):
        with attempt:
            p = NodeProcess(home, port, **kw)
            try:
                p.wait_ready()
            except BaseException:
                p.stop()
                raise
    return p


def init_home(path: Path, *args: str) -> Path:
    """Run ``provledger init --home path`` (in process) with extra ``args``."""
    from click.testing import CliRunner

    from ledger.cli import cli

    res = CliRunner().invoke(cli, ["init", "--home", str(path), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return path


class Network:
    """``provledger init --validators n`` in ``root/net`` (participant key ``root/alice.key``
    with every contributing role), each validator a ready ``NodeProcess``."""

    def __init__(self, root: Path, n: int = 4) -> None:
        self.root, self.n = Path(root), n
        self.key_path = self.root / "alice.key"
        self.homes = [self.root / "net" / f"node-{i}" for i in range(1, n + 1)]
        self.ports: list[int] = []
        self.nodes: list[NodeProcess] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def init(self) -> Network:
        """``provledger init`` on a range of ports free now (anew if it was made before)."""
        shutil.rmtree(self.root / "net", ignore_errors=True)
        self.key_path.unlink(missing_ok=True)
        base = free_base(self.n)
        init_home(self.root / "net", "--validators", str(self.n), "--base-port", str(base),
                  "--participant-key", f"{self.key_path}={PARTICIPANT_ROLES}")
        self.ports = [base + i for i in range(1, self.n + 1)]
        return self

    def _try_start(self) -> None:
        self.init()
        self.nodes = [NodeProcess(h, p) for h, p in zip(self.homes, self.ports, strict=True)]
        try:
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.stop()
            raise

    def start(self) -> Network:
        """Init and start all; when a port was taken meanwhile, all again on a new range."""
        for attempt in Retrying(retry=retry_if_exception_type(PortBusy), stop=stop_after_attempt(10), reraise=True):
            with attempt:
                self._try_start()
        return self

    def restart(self, i: int) -> NodeProcess:
        """Start validator ``i`` (0-based) again on its own port, once it has stopped."""
        self.nodes[i].stop()
        self.nodes[i] = start_node_process(self.homes[i], self.ports[i])
        return self.nodes[i]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextmanager
def network(root: Path, n: int = 4) -> Iterator[Network]:
    net = Network(root, n).start()
    try:
        yield net
    finally:
        net.stop()

