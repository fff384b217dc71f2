"""A local network of four validators on 127.0.0.1, run in the background (``scripts/devnet``).

    scripts/devnet up            init ./.devnet the first time, start the four nodes, wait until healthy
    scripts/devnet status        each node's height, round, peers and whether it is up [--json]
    scripts/devnet stop NODE     stop one node (node-2, or 2): the other three go on
    scripts/devnet start NODE    start it again: it catches up and rejoins consensus
    scripts/devnet down          stop every node (SIGTERM, then wait)
    scripts/devnet catchup-rate  how fast a node catches up, next to the offline audit rate
                                 (its own chain in a temporary directory; --records N)
    scripts/devnet add NAME      a new organisation NAME with its validator: ``.devnet/NAME``
                                 (keys, genesis, empty database, config), voted in through the
                                 running nodes' admins (org-add); its node starts and catches
                                 up as a full node; then validator-add, and it takes part as a
                                 validator
    scripts/devnet remove NAME   vote a validator and its organisation out (validator-remove,
                                 then org-remove; NAME is node-N or an added NAME), then stop it

Layout: ``.devnet/node-1`` ... ``.devnet/node-4`` (homes made by ``provledger init
--validators 4``), each with ``node.pid`` and ``node.log``; ``.devnet/alice.key`` is a
participant key with every contributing role. ``DEVNET_DIR`` and ``DEVNET_BASE_PORT``
(node-i listens on BASE + i; default 8100) override the defaults before the first ``up``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
NODES = 4
ROLES = "contributor,annotator,trainer,evaluator"


def devnet_dir() -> Path:
    return Path(os.environ.get("DEVNET_DIR", ROOT / ".devnet")).resolve()


def provledger() -> list[str]:
    exe = Path(sys.executable).parent / "provledger"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("provledger")
    return [found] if found else [sys.executable, "-m", "ledger.cli"]


def homes(d: Path) -> list[Path]:
    return [d / f"node-{i}" for i in range(1, NODES + 1)]


def all_homes(d: Path) -> list[Path]:
    """The four nodes, then those ``add`` made (by port)."""
    added = [p.parent for p in d.glob("*/config.json") if p.parent not in homes(d)]
    return homes(d) + sorted(added, key=lambda h: json.loads((h / "config.json").read_text())["port"])


def org_of(home: Path) -> str:
    """The organisation of a node's home: org-N for node-N, NAME for an added NAME."""
    return home.name.replace("node-", "org-") if home.name.startswith("node-") else home.name


def node_url(home: Path) -> str:
    cfg = json.loads((home / "config.json").read_text())
    return f"http://{cfg['host']}:{cfg['port']}"


def pid_of(home: Path) -> int | None:
    """The pid in ``home/node.pid`` if that process is alive and is this home's node."""
    try:
        pid = int((home / "node.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        args = cmdline.read_bytes().split(b"\0")
        if str(home).encode() not in args:
            return None  # the pid was reused by another process
    return pid


def pick(d: Path, name: str) -> Path:
    n = name.removeprefix("node-")
    if n.isdigit() and 1 <= int(n) <= NODES:
        return d / f"node-{n}"
    for home in all_homes(d):
        if home.name == name:
            return home
    raise SystemExit(f"error: no node {name!r}; the nodes are " + ", ".join(h.name for h in all_homes(d)))


def ensure_init(d: Path) -> None:
    if (d / "node-1" / "config.json").exists():
        return
    base = os.environ.get("DEVNET_BASE_PORT", "8100")
    print(f"creating a network of {NODES} validators in {d}", flush=True)
    subprocess.run(
        [*provledger(), "init", "--home", str(d), "--validators", str(NODES), "--base-port", base,
         "--name", "devnet", "--participant-key", f"{d / 'alice.key'}={ROLES}"],
        check=True,
    )


def start(home: Path) -> bool:
    """Start the node of ``home`` in the background unless it runs; True if started."""
    if pid_of(home) is not None:
        return False
    with open(home / "node.log", "ab") as log:
        proc = subprocess.Popen(
            [*provledger(), "node", "start", "--home", str(home)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # not stopped by the terminal's Ctrl-C; `down` stops it
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    (home / "node.pid").write_text(f"{proc.pid}\n")
    return True


def stop(home: Path, timeout: float = 30.0) -> bool:
    """SIGTERM the node of ``home`` and wait for it to finish its shutdown; True if it ran."""
    pid = pid_of(home)
    if pid is None:
        (home / "node.pid").unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):  # it may have just exited
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_of(home) is not None:
        time.sleep(0.1)
    if pid_of(home) is not None:
        print(f"{home.name} did not stop within {timeout:.0f} s; killing it", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    (home / "node.pid").unlink(missing_ok=True)
    return True


def wait_healthy(targets: list[Path], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(targets)
    with httpx.Client(timeout=1.0) as http:
        while pending:
            for home in list(pending):
                if pid_of(home) is None:
                    tail = (home / "node.log").read_text(errors="replace").splitlines()[-15:]
                    raise SystemExit(f"error: {home.name} exited; the end of {home / 'node.log'}:\n" + "\n".join(tail))
                try:
                    if http.get(node_url(home) + "/healthz").status_code == 200:
                        pending.remove(home)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                names = ", ".join(h.name for h in pending)
                raise SystemExit(f"error: {names} not healthy after {timeout:.0f} s; see node.log in their homes")
            time.sleep(0.1)


def node_status(home: Path, http: httpx.Client) -> dict[str, Any]:
    out: dict[str, Any] = {"node": home.name, "url": node_url(home), "pid": pid_of(home), "up": False}
    if out["pid"] is None:
        return out
    try:
        s = http.get(out["url"] + "/v1/status").json()
    except (httpx.HTTPError, ValueError):
        return out
    cons = s.get("consensus") or {}
    peers = s.get("peers") or []
    out.update(up=True, height=s.get("height"), log_size=s.get("log_size"), mempool=s.get("mempool"),
               round=cons.get("round"), step=cons.get("step"),
               peers_up=sum(1 for p in peers if isinstance(p, dict) and p.get("up")), peers=len(peers))
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'node':<8} {'state':<6} {'height':>7} {'log size':>9} {'round':>5} {'step':<10} {'peers up':>8} "
          f"{'mempool':>7}  url")

    def v(r: dict[str, Any], k: str) -> str:
        x = r.get(k)
        return "-" if x is None else str(x)

    for r in rows:
        state = "up" if r["up"] else ("no api" if r["pid"] else "down")
        peers = f"{r['peers_up']}/{r['peers']}" if r["up"] and r.get("peers") else "-"
        print(f"{r['node']:<8} {state:<6} {v(r, 'height'):>7} {v(r, 'log_size'):>9} {v(r, 'round'):>5} "
              f"{v(r, 'step'):<10} {peers:>8} {v(r, 'mempool'):>7}  {r['url']}")


def cmd_up(d: Path) -> None:
    ensure_init(d)
    started = [h for h in homes(d) if start(h)]
    wait_healthy(homes(d))
    urls = [node_url(h) for h in homes(d)]
    rel = os.path.relpath(d, Path.cwd()) if d.is_relative_to(Path.cwd()) else str(d)
    key = f"{rel}/alice.key"
    print(f"\ndevnet up ({len(started)} started, {NODES - len(started)} already running):")
    for h, u in zip(homes(d), urls, strict=True):
        print(f"  {h.name}  {u}   (API docs {u}/docs, log {rel}/{h.name}/node.log)")
    print(f"""
participant key: {key}   (admin of org-i: {rel}/node-i/admin.key)

Try, with the virtualenv active (. .venv/bin/activate):
  echo "some data" > /tmp/devnet-data.bin
  provledger submit dataset --key {key} --node {urls[0]} \\
    --dataset demo --file /tmp/devnet-data.bin --items 1 --license CC-BY-4.0 --modality text --wait
  provledger audit {urls[2]}
  scripts/devnet status            # heights, rounds, peers
  scripts/devnet stop node-4       # the other three go on; `scripts/devnet start node-4` rejoins
  scripts/devnet down""")


def _vote(d: Path, url: str, proposer: Path, args: list[str], what: str) -> dict[str, Any]:
    """``provledger propose ARGS`` signed by ``proposer``, then ``provledger approve`` by the
    admins of the organisations in force (node-1 ... node-4, then the added ones) in turn
    until the proposal is adopted (PROTOCOL.md 9.2)."""

    def run(*cmd: str) -> dict[str, Any]:
        res = subprocess.run([*provledger(), *cmd, "--node", url, "--wait", "--json"], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"error: {what}: provledger {cmd[0]} exited {res.returncode}: {res.stderr.strip()}")
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    out = run("propose", *args, "--key", str(proposer), "--reason", f"scripts/devnet: {what}")
    state = out.get("proposal_state") or {}
    in_force = _organisations(url)
    for home in all_homes(d):
        if state.get("status") == "adopted":
            break
        if org_of(home) not in in_force or org_of(home) in state.get("approvals", []):
            continue
        state = run("approve", out["id"], "--key", str(home / "admin.key")).get("proposal_state") or {}
    if state.get("status") != "adopted":
        raise SystemExit(f"error: {what}: proposal {out['id']} was not adopted ({state.get('status')})")
    print(f"  {what}: proposal {out['id'][:16]}… adopted, approved by {', '.join(state['approvals'])}", flush=True)
    return state


def cmd_add(d: Path, name: str) -> None:
    """A new organisation ``name`` with its own validator: its home ``d/name`` (validator and
    admin keys, the genesis, a database holding only the genesis, a config whose peers are the
    devnet's nodes), then the votes of PROTOCOL.md 9.3 through the running nodes: org.add by
    node-1's admin with approvals of the others until adopted; its node starts and catches
    up as a full node; then validator.add (its pop signed with the new key) proposed by the
    new organisation's admin."""
    import re

    from ledger.keys import SigningKey
    from ledger.store import Store

    if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", name) or re.fullmatch(r"node-[0-9]+", name):
        raise SystemExit(f"error: {name!r}: a new organisation's name is lowercase letters, digits and '-' "
                         "(not node-N, the names of the devnet's own nodes)")
    home = d / name
    if home.exists():
        raise SystemExit(f"error: {home} already exists")
    url = _running_url(d)
    orgs = _organisations(url)
    if name in orgs:
        raise SystemExit(f"error: {name} is already an organisation of the devnet")
    taken = [json.loads(p.read_text())["port"] for p in d.glob("*/config.json")]
    cfg = json.loads((homes(d)[0] / "config.json").read_text())
    cfg.update(node_name=name, port=max(taken) + 1, peers=[node_url(h) for h in all_homes(d)])
    home.mkdir()
    validator, admin = SigningKey.generate(), SigningKey.generate()
    validator.save(home / "validator.key")
    admin.save(home / "admin.key")
    shutil.copy(homes(d)[0] / "genesis.json", home / "genesis.json")
    Store.create(home / "ledger.db", json.loads((home / "genesis.json").read_text())).close()
    (home / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    new_url = f"http://{cfg['host']}:{cfg['port']}"
    print(f"created {home} (validator {validator.public[:16]}…, admin {admin.public[:16]}…, {new_url})", flush=True)
    proposer = next(h for h in all_homes(d) if org_of(h) in orgs) / "admin.key"
    _vote(d, url, proposer, ["org-add", name, "--admin", str(home / "admin.key")], f"org.add {name}")
    # Its node starts first, as a full node: it catches up from an empty database while the
    # others go on, so that when the set including it certifies the height after the
    # adopting block (PROTOCOL.md 9.1) it is level and can propose and vote at once.
    start(home)
    wait_healthy([home])
    _wait_level(home, url, timeout=300.0)
    _vote(d, url, home / "admin.key", ["validator-add", "--name", name, "--url", new_url,
                                       "--validator-key-file", str(home / "validator.key")], f"validator.add {name}")
    height = _wait_validator(home, timeout=120.0)
    print(f"{name} started at {new_url} (home {home}); caught up, a validator from height {height}")


def cmd_remove(d: Path, name: str) -> None:
    """Vote ``name``'s validator and then its organisation out (PROTOCOL.md 9.3:
    validator.remove, org.remove) through another running node, proposed by the admin of the
    first other organisation in force, and stop its node once both are adopted."""
    home = pick(d, name)
    org = org_of(home)
    url = _running_url(d, besides=home)
    orgs = _organisations(url)
    with httpx.Client(timeout=5.0) as http:
        current = http.get(url + "/v1/validators").json()["validators"]
    key = _public_key(home / "validator.key")
    proposer = next((h for h in all_homes(d) if org_of(h) in orgs and h != home), None)
    if proposer is None:
        raise SystemExit(f"error: no other organisation in force to propose removing {name}")
    if any(v["key"] == key for v in current):
        _vote(d, url, proposer / "admin.key", ["validator-remove", key], f"validator.remove {home.name}")
    else:
        print(f"  {home.name}'s key is not in the validator set", flush=True)
    if org in orgs:
        _vote(d, url, proposer / "admin.key", ["org-remove", org], f"org.remove {org}")
    else:
        print(f"  {org} is not an organisation in force", flush=True)
    print(f"stopped {home.name}" if stop(home) else f"{home.name} was not running")


def _public_key(path: Path) -> str:
    from ledger.keys import SigningKey

    return SigningKey.load(path).public


def _running_url(d: Path, besides: Path | None = None) -> str:
    """The URL of the first running node (other than ``besides``) that answers."""
    with httpx.Client(timeout=2.0) as http:
        for home in all_homes(d):
            if home == besides or pid_of(home) is None:
                continue
            with contextlib.suppress(httpx.HTTPError):
                if http.get(node_url(home) + "/healthz").status_code == 200:
                    return node_url(home)
    raise SystemExit("error: no node of the devnet answers: start it (`scripts/devnet up`)")


def _organisations(url: str) -> list[str]:
    with httpx.Client(timeout=5.0) as http:
        try:
            return [o["name"] for o in http.get(url + "/v1/organisations").json()["organisations"]]
        except (httpx.HTTPError, ValueError, KeyError) as e:
            raise SystemExit(f"error: the node at {url} does not answer: {e}") from e


def _wait_status(home: Path, what: str, check: Callable[[dict[str, Any]], Any], timeout: float) -> Any:
    """Poll the ``/v1/status`` of the node of ``home`` (tenacity) until ``check`` of it is
    true (or not None); that value. Exits with one line if the node exits or ``what`` is
    not so in time."""
    from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

    def once(http: httpx.Client) -> Any:
        if pid_of(home) is None:
            raise SystemExit(f"error: {home.name} exited; see {home / 'node.log'}")
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            return check(http.get(node_url(home) + "/v1/status").json())
        return None

    polling = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.2),
                       retry=retry_if_result(lambda v: v is None or v is False))
    with httpx.Client(timeout=2.0) as http:
        try:
            return polling(once, http)
        except RetryError:
            raise SystemExit(f"error: {home.name} {what} within {timeout:.0f} s; see {home / 'node.log'}") from None


def _wait_level(home: Path, url: str, timeout: float) -> None:
    """Wait until the node of ``home`` holds the final height ``url``'s node had when asked."""
    with httpx.Client(timeout=5.0) as http:
        target = int(http.get(url + "/v1/status").json()["height"])
    _wait_status(home, f"did not catch up to height {target}", lambda s: int(s["height"]) >= target, timeout)


def _wait_validator(home: Path, timeout: float) -> int:
    """Wait until the node of ``home`` runs consensus at a height whose set holds its key;
    that height."""
    height: int = _wait_status(home, "did not become a validator", lambda s: int(s["consensus"]["height"])
                               if s["consensus"]["validator"] else None, timeout)
    return height


def cmd_catchup_rate(records: int) -> None:
    """Catch-up against the offline audit on one chain of ``records`` records (in a temporary
    directory, not the devnet): a one-validator node serves it, a second node of the same
    chain starts from an empty database with the first as its peer, and the rate at which it
    catches up is set against ``provledger audit --jobs 1`` of the same database."""
    import re
    import resource
    import tempfile

    from ledger.audit import DbSource, audit
    from ledger.chain import Ledger
    from ledger.keys import SigningKey
    from ledger.records import make_record, parse_record
    from ledger.store import Store

    with tempfile.TemporaryDirectory(prefix="provledger-catchup-") as tmp:
        root = Path(tmp)
        source_port, follower_port = _free_port(), _free_port()
        subprocess.run([*provledger(), "init", "--home", str(root / "source"), "--port", str(source_port),
                        "--participant-key", f"{root / 'alice.key'}=contributor"], check=True, stdout=subprocess.DEVNULL)
        key = SigningKey.load(root / "alice.key")
        store = Store(root / "source" / "ledger.db")
        ledger, validator = Ledger(store), SigningKey.load(root / "source" / "validator.key")
        print(f"building a chain of {records:,} records ...", flush=True)
        body = {"version": "1", "content_hash": "ab" * 32, "size_bytes": 1, "items": 1, "license": "MIT",
                "modality": "text", "derived_from": [], "privacy_budget": None}
        for start in range(0, records, 2000):
            batch = [parse_record(make_record(key, ledger.chain_id, "dataset.contribute", {"dataset": f"d{i}", **body},
                                              nonce=f"n{i}")) for i in range(start, min(records, start + 2000))]
            ledger.commit_single(validator, batch)
        store.close()
        print("auditing it (provledger audit --jobs 1) ...", flush=True)
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        report = audit(DbSource(root / "source" / "ledger.db"), jobs=1)
        audit_s = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF)
        if not report.ok:
            raise SystemExit(f"error: the chain does not audit clean: {report.findings[0]}")
        audit_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        # The follower: the same genesis and validator key, an empty database, the source as peer.
        fol = root / "follower"
        fol.mkdir()
        for name in ("genesis.json", "validator.key"):
            shutil.copy(root / "source" / name, fol / name)
        Store.create(fol / "ledger.db", json.loads((root / "source" / "genesis.json").read_text())).close()
        cfg = json.loads((root / "source" / "config.json").read_text())
        cfg.update(node_name="follower", port=follower_port, peers=[f"http://127.0.0.1:{source_port}"])
        (fol / "config.json").write_text(json.dumps(cfg))
        print("catching up a node from an empty database ...", flush=True)
        cpu = {}
        source = subprocess.Popen([*provledger(), "node", "start", "--home", str(root / "source"), "--log-level",
                                   "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy_url(f"http://127.0.0.1:{source_port}", source)
            with open(fol / "node.log", "wb") as log:
                follower = subprocess.Popen([*provledger(), "node", "start", "--home", str(fol)], stdout=log,
                                            stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 600
                done = re.compile(rf"catch-up: \d+ blocks from \S+ in [\d.]+ s, now at height {report.blocks}\b")
                while time.monotonic() < deadline and follower.poll() is None:
                    if done.search((fol / "node.log").read_text(errors="replace")):
                        break
                    time.sleep(0.2)
            finally:
                follower.send_signal(signal.SIGTERM)
                cpu["follower"] = _cpu_seconds(follower.pid)
        finally:
            source.send_signal(signal.SIGTERM)
            cpu["source"] = _cpu_seconds(source.pid)
        text = (fol / "node.log").read_text()
        if not done.search(text):
            raise SystemExit("error: the follower did not report a complete catch-up; its log:\n" + text[-2000:])
        spent = sum(float(x) for x in re.findall(r"catch-up: \d+ blocks from \S+ in ([\d.]+) s", text))
        rate, audit_rate = records / spent, records / audit_s
        print(f"audit --jobs 1      {audit_rate:9,.0f} records/s   CPU {audit_cpu / records * 1e6:5.0f} us/record")
        print(f"catch-up            {rate:9,.0f} records/s   CPU {(cpu['follower'] + cpu['source']) / records * 1e6:5.0f}"
              " us/record (both nodes, their verifier processes, start-up included)")
        print(f"catch-up / audit    {rate / audit_rate:9.2f}   (load average now {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """Wait for the child ``pid`` and return the CPU seconds it and its children used."""
    _, _, usage = os.wait4(pid, 0)
    return float(usage.ru_utime + usage.ru_stime)


def wait_healthy_url(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"error: the node at {url} exited")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(url + "/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise SystemExit(f"error: the node at {url} is not healthy after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="scripts/devnet", description="A local network of four validators.",
                                 epilog="Example: scripts/devnet up; scripts/devnet status; scripts/devnet down")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="create .devnet the first time, start the nodes, wait until healthy")
    sub.add_parser("down", help="stop every node (SIGTERM, then wait)")
    st = sub.add_parser("status", help="a table of the nodes")
    st.add_argument("--json", action="store_true", help="print JSON")
    for name in ("stop", "start"):
        p = sub.add_parser(name, help=f"{name} one node (node-N or N)")
        p.add_argument("node")
    cr = sub.add_parser("catchup-rate", help="measure catch-up against the offline audit (in a temporary directory)")
    cr.add_argument("--records", type=int, default=100_000, help="records in the chain (default 100,000)")
    ad = sub.add_parser("add", help="vote a new organisation and its validator in, start its node")
    ad.add_argument("name", help="the new organisation's name, also its node's and its home's (.devnet/NAME)")
    rm = sub.add_parser("remove", help="vote a validator and its organisation out, stop its node")
    rm.add_argument("name", help="node-N or a NAME added with `add`")
    args = ap.parse_args(argv)
    d = devnet_dir()
    if args.cmd == "catchup-rate":
        cmd_catchup_rate(args.records)
        return
    if args.cmd != "up" and not (d / "node-1" / "config.json").exists():
        raise SystemExit(f"error: no devnet in {d}; run `scripts/devnet up` first")
    if args.cmd == "up":
        cmd_up(d)
    elif args.cmd == "add":
        cmd_add(d, args.name)
    elif args.cmd == "remove":
        cmd_remove(d, args.name)
    elif args.cmd == "down":
        running = [h for h in all_homes(d) if pid_of(h) is not None]
        for h in running:  # all at once, then wait for each to finish its shutdown
            pid = pid_of(h)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        for h in all_homes(d):
            stop(h)
        stopped = [h.name for h in running]
        print(f"stopped {', '.join(stopped)}" if stopped else "no node was running")
    elif args.cmd == "status":
        with httpx.Client(timeout=2.0) as http:
            rows = [node_status(h, http) for h in all_homes(d)]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_table(rows)
    elif args.cmd == "stop":
        home = pick(d, args.node)
        print(f"stopped {home.name}" if stop(home) else f"{home.name} was not running")
    elif args.cmd == "start":
        home = pick(d, args.node)
        if start(home):
            wait_healthy([home])
            print(f"started {home.name} at {node_url(home)}; it catches up from its peers")
        else:
            print(f"{home.name} is already running")


if __name__ == "__main__":
    main()
