"""The package's layers: ``ledger`` (the auditor) never loads ``node`` (the daemon), the
modules import each other without circles, no private name crosses a module, and a plain
``pip install`` gives a working auditor without the web stack."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    return {f"{package}.{p.stem}" if p.stem != "__init__" else package: p
            for p in sorted((ROOT / package).glob("*.py"))}


def _annotation_only(tree: ast.AST) -> set[ast.AST]:
    """The imports under ``if TYPE_CHECKING:``: read by type checkers, never run."""
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found.update(n for stmt in node.body for n in ast.walk(stmt))
    return found


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in the module, at any depth (an import
    inside a function closes a circle as surely as one at the top), except those only for
    annotations (``if TYPE_CHECKING:``)."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    out: list[tuple[str, list[str]]] = []
    tree = ast.parse(path.read_text(), str(path))
    skip = _annotation_only(tree)
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [a.name for a in node.names]
            out.append((base, names))
            # ``from . import merkle`` imports a module
            out += [(f"{base}.{n}", []) for n in names if f"{base}.{n}" in _ALL]
    return out


_ALL = {**_modules("ledger"), **_modules("node")}


def _graph(package: str) -> dict[str, set[str]]:
    mods = _modules(package)
    return {m: {imp for imp, _ in _imports(m, p) if imp in mods and imp != m} for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports in ``graph``, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", ["ledger", "node"])
def test_no_import_circles(package: str) -> None:
    assert _cycle(_graph(package)) is None


@pytest.mark.parametrize("package", ["ledger", "node"])
def test_no_private_name_crosses_a_module(package: str) -> None:
    crossing = []
    for m, p in _modules(package).items():
        for imp, names in _imports(m, p):
            if imp.split(".")[0] in ("ledger", "node"):
                crossing += [f"{m} imports {imp}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert crossing == []


def test_ledger_imports_nothing_of_node() -> None:
    for m, p in _modules("ledger").items():
        assert not [imp for imp, _ in _imports(m, p) if imp == "node" or imp.startswith("node.")], m


def test_importing_every_ledger_module_loads_no_node_module() -> None:
    """In a fresh interpreter: every ledger module, the CLI included, and not one
    ``node`` module or web library loaded."""
    code = ("import importlib, json, sys\n"
            f"for m in {sorted(_modules('ledger'))!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('node', 'fastapi', 'uvicorn', 'starlette', 'prometheus_client', 'httptools'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_the_node_commands_come_from_the_entry_point() -> None:
    from importlib.metadata import entry_points

    from ledger.cli import cli

    (ep,) = [e for e in entry_points(group="provledger.commands") if e.name == "node"]
    assert ep.value == "node.cli:register"
    ctx = click.Context(cli)
    assert {"init", "node"} <= set(cli.list_commands(ctx))
    assert cli.get_command(ctx, "init").callback.__module__ == "node.cli"  # type: ignore[union-attr]


# --- the auditor alone -------------------------------------------------------------------------
def _run(*args: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_a_plain_install_is_a_working_auditor_without_the_web_stack(chain1: Any, tmp_path: Path) -> None:
    """``pip install provledger`` into a fresh venv (dependencies from the configured
    index or pip's cache): it audits a database, proves and verifies a record, cannot
    import fastapi, and its node commands say to install the node extra."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py, exe = env_dir / "bin" / "python", env_dir / "bin" / "provledger"
    src = tmp_path / "src"  # a copy: the build must not write into the worktree
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    inst = _run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", src, env=env)
    if inst.returncode != 0 and ("No matching distribution" in inst.stderr or "connection" in inst.stderr.lower()):
        pytest.skip(f"no package index or cache to install from: {inst.stderr.strip().splitlines()[-1]}")
    assert inst.returncode == 0, inst.stderr

    fastapi = _run(py, "-c", "import fastapi", env=env)
    assert fastapi.returncode != 0 and "No module named 'fastapi'" in fastapi.stderr
    for mod in ("uvicorn", "httptools", "prometheus_client"):
        assert _run(py, "-c", f"import {mod}", env=env).returncode != 0, mod

    db = tmp_path / "ledger.db"
    shutil.copy(chain1.path, db)
    audited = _run(exe, "audit", db, "--json", env=env, cwd=tmp_path)
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)["ok"] is True
    rid = chain1.ids[2][0]
    proved = _run(exe, "prove", rid[:8], "--db", db, "--out", tmp_path / "proof.json", env=env, cwd=tmp_path)
    assert proved.returncode == 0, proved.stderr
    (tmp_path / "genesis.json").write_text(json.dumps(chain1.cons.doc))
    verified = _run(exe, "verify-proof", tmp_path / "proof.json", "--genesis", tmp_path / "genesis.json",
                    "--record", rid, env=env, cwd=tmp_path)
    assert verified.returncode == 0 and rid in verified.stdout, verified.stderr

    for args in (("init", "--help"), ("node", "start", "--home", str(tmp_path))):
        res = _run(exe, *args, env=env, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'provledger[node]'" in lines[0], res.stderr
