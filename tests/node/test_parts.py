"""The node's parts: no module reaches into another's private attributes, and each part
does its one job (admission, the block sink, the consensus driver's typed events)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _private_names_defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, attributes it assigns."""
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(n.name)
        targets: list[ast.expr] = []
        if isinstance(n, ast.Assign):
            targets = n.targets
        elif isinstance(n, ast.AnnAssign | ast.AugAssign):
            targets = [n.target]
        for t in targets:
            for x in ast.walk(t):
                if isinstance(x, ast.Attribute):
                    out.add(x.attr)
                elif isinstance(x, ast.Name):
                    out.add(x.id)
    return {name for name in out if name.startswith("_") and not name.startswith("__")}


def _crossings(package: Path, *others: Path) -> list[str]:
    """``obj._name`` where ``_name`` is defined by another module (of the package or of the
    ``others`` it uses) and not by the module using it (``self``, ``cls`` and ``super()``
    are the module's own business)."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in sorted(package.rglob("*.py"))}
    defined = {p: _private_names_defined(t) for p, t in trees.items()}
    beyond = set().union(*(_private_names_defined(ast.parse(p.read_text())) for o in others for p in o.rglob("*.py")))
    found = []
    for p, tree in trees.items():
        elsewhere = beyond.union(*(d for q, d in defined.items() if q != p))
        for n in ast.walk(tree):
            if not isinstance(n, ast.Attribute) or not n.attr.startswith("_") or n.attr.startswith("__"):
                continue
            v = n.value
            if (isinstance(v, ast.Name) and v.id in ("self", "cls")) or (
                    isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super"):
                continue
            if n.attr in elsewhere and n.attr not in defined[p]:
                found.append(f"{p.relative_to(package.parent)}:{n.lineno} {ast.unparse(n)}")
    return found


def test_no_node_module_uses_another_modules_private_attributes() -> None:
    assert _crossings(ROOT / "node", ROOT / "ledger") == []


def test_the_crossing_finder_finds_one(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("class A:\n    def __init__(self):\n        self._wake = 1\n")
    (pkg / "b.py").write_text("def f(node):\n    return node._wake\n")
    assert _crossings(pkg) == ["pkg/b.py:2 node._wake"]


# --- the consensus driver's steps, with every port injected ------------------------------------
class _Inbox:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def start(self, handle: Any) -> None:
        self.handle = handle

    async def stop(self) -> None: ...

    def put(self, event: Any) -> None:
        self.events.append(event)

    def size(self) -> int:
        return len(self.events)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.timers: list[tuple[float, Any]] = []

    def now(self) -> float:
        return self.t

    def call_later(self, seconds: float, callback: Any) -> Any:
        self.timers.append((self.t + seconds, callback))
        return _Timer()


class _Timer:
    def cancel(self) -> None: ...


class _Transport:
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> list[dict[str, Any]]:
        return []

    def broadcast(self, message: Any) -> None: ...

    def gossip(self, messages: list[Any]) -> int:
        return 0

    def forward_record(self, canonical: bytes) -> None: ...


class _Chain:
    def __init__(self) -> None:
        self.work = False

    def height(self) -> int:
        return 0

    def has_work(self) -> bool:
        return self.work


class _Store:
    def last_signed_state(self) -> None:
        return None


def test_an_idle_replica_holds_its_start_and_one_release_carries_it_out() -> None:
    """No records: the start is held ("waiting"); records arriving queue one Release, however
    many arrive, and handling it starts round 0 (a propose timeout on the injected clock)."""
    from factory import Consortium

    from node.consensus import Timeouts
    from node.replica import Release, Replica, Start

    four = Consortium(validators=4)
    inbox, clock, chain = _Inbox(), _Clock(), _Chain()
    rep = Replica(chain_id=four.chain_id, validators=[v.public for v in four.validators], key=four.validators[0],
                  chain=chain, store=_Store(), transport=_Transport(),  # type: ignore[arg-type]
                  timeouts=Timeouts(propose=300), gossip_s=0.5, clock=clock, inbox=inbox)

    async def run() -> None:
        await rep.start()
        assert inbox.events == [Start()]
        assert [t for t, _ in clock.timers] == [0.5]  # the gossip tick
        await inbox.handle(inbox.events.pop())
        assert rep.status()["step"] == "waiting" and len(clock.timers) == 1
        chain.work = True
        rep.work_arrived()
        rep.work_arrived()
        assert inbox.events == [Release()]
        await inbox.handle(inbox.events.pop())
        assert rep.status()["step"] == "propose"  # validator 1 proposes height 1 round 0
        assert [t for t, _ in clock.timers] == [0.5, 0.3]  # timeoutPropose(0) on the injected clock
        rep.work_arrived()
        assert inbox.events == []  # nothing held: nothing to release
        await rep.stop()

    asyncio.run(run())
