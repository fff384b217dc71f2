"""Without Chromium the browser tests skip and say why; with CI=true they fail instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("ci", ["", "true"])
def test_browser_tests_without_chromium(tmp_path: Path, ci: str) -> None:
    env = {**os.environ, "PROVLEDGER_CHROMIUM": str(tmp_path / "no-chromium"), "CI": ci}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-rsf",
         str(HERE / "test_browser.py"), "-k", "test_every_page and light"],
        capture_output=True, text=True, timeout=120, env=env, cwd=HERE.parents[1])
    out = res.stdout
    if ci:
        assert res.returncode == 1 and "1 error" in out, out[-1500:]  # the fixture fails: the run fails
        assert "browser tests cannot run" in out and "no-chromium is missing" in out
    else:
        assert res.returncode == 0 and "1 skipped" in out, out[-1500:]
        assert "browser tests skipped" in out and "no-chromium is missing" in out
