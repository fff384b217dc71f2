"""Fixtures for the explorer tests: one real node on the worked example's chain, and one
headless Chromium (Debian's, driven by Playwright) per test module.

``explorer``  a ``provledger node start`` process on a network made by ``scripts/demo
              --init-only``, after ``scripts/demo --node URL --json`` recorded the worked
              example (every record type): ``SimpleNamespace(url, home, out, final, records)``
``browser``   a Playwright ``Browser`` of /usr/bin/chromium. When Chromium or Playwright is
              missing the browser tests skip with the reason (``scripts/test`` installs
              both where it can); with ``CI=true`` they fail instead.

Helpers are handed out as fixtures (never imported: other ``conftest.py`` files exist).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from procs import start_node_process

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"

# Debian's chromium; PROVLEDGER_CHROMIUM names another binary (tests/explorer/test_skip.py: a missing one).
CHROMIUM = Path(os.environ.get("PROVLEDGER_CHROMIUM", "/usr/bin/chromium"))
# No sandbox (root in a container), no GPU, and none of Chromium's own calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _run(*args: str) -> str:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
    return res.stdout


@pytest.fixture(scope="session")
def explorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    home = tmp_path_factory.mktemp("explorer") / "net"
    _run(sys.executable, str(DEMO), "--home", str(home), "--init-only")
    node = start_node_process(home, log_level="warning")  # tests/procs.py: a port free when it starts
    try:
        url = node.url
        out = json.loads(_run(sys.executable, str(DEMO), "--node", url, "--home", str(home), "--json"))
        yield SimpleNamespace(url=url, home=home, out=out, final=out["final_model"], records=out["records"])
    finally:
        node.stop()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (scripts/test installs Debian's chromium when run as root)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is missing (pip install -e '.[test]')")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as e:
            _unavailable(f"{CHROMIUM} did not start: {str(e).splitlines()[0]}")
        try:
            yield b
        finally:
            b.close()
