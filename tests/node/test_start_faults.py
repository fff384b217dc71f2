"""Faults an operator meets when starting a node (real processes): a busy port, a key file
that others may read."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from procs import free_port, provledger_cmd

pytestmark = pytest.mark.e2e


def start(home: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*provledger_cmd(), "node", "start", "--home", str(home), "--port", str(port)],
                          capture_output=True, text=True, timeout=120)


def test_a_busy_port_fails_before_startup_completes(node_home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = start(node_home, port)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in lines[0]
    assert "startup complete" not in out and "listening on" not in out


def test_a_validator_key_others_may_read_stops_the_node(node_home: Path) -> None:
    os.chmod(node_home / "validator.key", 0o644)
    res = start(node_home, free_port())
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "accessible by others (mode 0644)" in lines[0], res.stderr
    assert "chmod 600" in lines[0] and "Traceback" not in res.stdout + res.stderr
