"""The devnet section of ``scripts/bench``: four validators on 127.0.0.1, all on this machine.

Measures, in one run:

- the limit: raw Ed25519 verify/s on one core (``bench.raw_verify_per_s``);
- throughput: records/s *final on every node* with batched submission (500 per batch)
  spread round-robin over the four nodes by several client threads;
- latency: submit-to-final p50/p99 of small batches submitted with ``?wait=true`` by a paced
  open-loop client at half the measured throughput;
- catch-up: one node is stopped, its database replaced by an empty one of the same genesis,
  and restarted; records/s until it is level with the others, next to the offline audit
  rate (``provledger audit --jobs 1``) of the same chain;
- membership: on a second, fresh devnet (``scripts/devnet``'s own commands), records/s final
  while a fifth organisation and its validator are voted in (``scripts/devnet add``) and an
  original validator is voted out and stopped (``scripts/devnet remove``), next to the rate
  before the changes, and the longest time without a new final record around each change.

Every node process, its client threads and the audit share the machine's cores, so the
figures are those of four organisations squeezed onto one small box.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench_node import ROLES, _cli, _keys, _stop  # scripts/ is on sys.path when run by bench.py
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_incrementing

ROOT = Path(__file__).resolve().parents[1]
NODES = 4


def _free_base_port(n: int) -> int:
    """A base port such that base+1 .. base+n are free now (best effort)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65000:
            continue
        ok = True
        for p in range(base + 1, base + n + 1):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("no free range of ports for the devnet")


class Devnet:
    """Four ``provledger node start`` processes made by ``provledger init --validators 4``."""

    def __init__(self, root: Path, people: int = 8) -> None:
        self.root = root
        self.key_files = [root / f"p{i}.key" for i in range(people)]
        base = _free_base_port(NODES)
        args = [*_cli(), "init", "--home", str(root / "net"), "--validators", str(NODES),
                "--base-port", str(base), "--json"]
        for k in self.key_files:
            args += ["--participant-key", f"{k}={ROLES}"]
        made = orjson.loads(subprocess.run(args, check=True, capture_output=True).stdout)
        self.homes = sorted(p for p in (root / "net").iterdir() if (p / "config.json").exists())
        if len(self.homes) != NODES:
            raise SystemExit(f"init --validators {NODES} made {len(self.homes)} node homes")
        self.urls = [self._url(h) for h in self.homes]
        self.chain_id: str = made["chain_id"]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * NODES
        # A pristine copy of each empty database, for the catch-up measurement.
        for h in self.homes:
            db = next(h.glob("*.db"))
            shutil.copy(db, h / "empty.db.orig")

    @staticmethod
    def _url(home: Path) -> str:
        cfg = orjson.loads((home / "config.json").read_bytes())
        return f"http://{cfg.get('host', '127.0.0.1')}:{cfg['port']}"

    def start(self, i: int) -> None:
        log = open(self.homes[i] / "node.log", "ab")  # noqa: SIM115 - the process owns it
        self.procs[i] = subprocess.Popen(
            [*_cli(), "node", "start", "--home", str(self.homes[i]), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, i: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.urls[i] + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"node {i + 1} not ready; see {self.homes[i] / 'node.log'}")

    def stop(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            _stop(p)
        self.procs[i] = None

    def status(self, i: int) -> dict[str, Any]:
        return httpx.get(self.urls[i] + "/v1/status", timeout=5).json()

    def log_size(self, i: int) -> int:
        try:
            return int(self.status(i)["log_size"])
        except (httpx.HTTPError, KeyError, ValueError):
            return -1

    def rss_mb(self) -> list[float]:
        out = []
        for p in self.procs:
            kb = 0
            if p is not None:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kb = int(line.split()[1])
            out.append(kb / 1024)
        return out

    def down(self) -> None:
        for i in range(NODES):
            self.stop(i)


def _records(chain_id: str, people: list[Any], n: int, start: int) -> list[bytes]:
    from bench import workload  # scripts/ is on sys.path when run by bench.py

    return [orjson.dumps(e) for e in workload(chain_id, people, n, start)]


class _Busy(Exception):
    """A node answered 503 (its mempool is full)."""


def _post_batch(c: httpx.Client, urls: list[str], first: int, path: str, body: bytes) -> None:
    """POST one batch of records to ``urls[first]`` (tenacity): a 503 is sent again to the
    same node after a growing pause, a transport error to the next node; a refused record
    stops the benchmark."""
    turn = [first]

    @retry(retry=retry_if_exception_type((_Busy, httpx.TransportError)), wait=wait_incrementing(0.05, 0.05),
           stop=stop_after_attempt(50), reraise=True)
    def once() -> None:
        try:
            r = c.post(urls[turn[0] % len(urls)] + path, content=body, headers={"content-type": "application/json"})
        except httpx.TransportError:
            turn[0] += 1  # that node is busy or going: the next one
            raise
        if r.status_code == 503:
            raise _Busy
        if r.status_code >= 400:
            raise SystemExit(f"devnet refused a bench batch: HTTP {r.status_code} {r.text[:200]}")
        bad = [x for x in r.json()["results"] if "code" in x]
        if bad:
            raise SystemExit(f"devnet refused a bench record: {bad[0]}")

    once()


def _post_batches(urls: list[str], batches: list[list[bytes]], threads: int) -> None:
    """Submit every batch (round-robin over the nodes) from ``threads`` clients."""
    it = iter(enumerate(batches))
    lock = threading.Lock()

    def client(t: int) -> None:
        with httpx.Client(timeout=60) as c:
            while True:
                with lock:
                    nxt = next(it, None)
                if nxt is None:
                    return
                i, batch = nxt
                _post_batch(c, urls, i + t, "/v1/records/batch", b'{"records":[' + b",".join(batch) + b"]}")

    with cf.ThreadPoolExecutor(threads) as ex:
        list(ex.map(client, range(threads)))


def _wait_all(net: Devnet, size: int, nodes: list[int], timeout: float = 600.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(net.log_size(i) >= size for i in nodes):
            return time.perf_counter()
        time.sleep(0.02)
    raise SystemExit(f"the devnet did not reach log size {size} on {nodes} in {timeout:.0f} s: "
                     f"{[net.log_size(i) for i in nodes]}")


def _all_committed(status: int, body: bytes) -> bool:
    return status == 200 and all(x.get("status") == "committed" for x in orjson.loads(body)["results"])


def _latency(net: Devnet, chain_id: str, people: list[Any], rate: float, seconds: float, start: int) -> dict[str, Any]:
    """Open-loop paced batches of 10 with ``?wait=true`` spread over the nodes, from
    one asyncio client on keep-alive connections (``bench_node.open_loop``): submit-to-final
    per batch, from the moment it was due."""
    from bench_node import open_loop

    per_batch = 10
    batches_per_s = max(1.0, rate / per_batch)
    total = int(batches_per_s * seconds)
    recs = _records(chain_id, people, total * per_batch, start)
    bodies = [b'{"records":[' + b",".join(recs[i * per_batch:(i + 1) * per_batch]) + b"]}" for i in range(total)]
    # The workload's records come in groups of 50 that use the group's first record, a
    # dataset: each group goes to one node, which may take it before its peers have it.
    group = 50 // per_batch
    ports = [int(u.rsplit(":", 1)[1]) for u in net.urls for _ in range(group)]
    r = open_loop(ports, "/v1/records/batch?wait=true&timeout=30", bodies, batches_per_s, accept=_all_committed)
    return {
        "offered_records_per_s": batches_per_s * per_batch,
        "batches": total,
        "completed": r["committed"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "records": total * per_batch,
    }


def _closed_loop(urls: list[str], recs: list[bytes], per_batch: int, threads: int, stop: threading.Event) -> None:
    """``threads`` clients, each posting its next batch of ``per_batch`` records with
    ``?wait=true`` once the last is answered, round-robin over ``urls``, until ``stop``
    (or the records run out). A batch holds whole groups of 50 (a dataset and what uses it)."""
    it = iter(range(0, len(recs), per_batch))
    lock = threading.Lock()

    def client(t: int) -> None:
        with httpx.Client(timeout=60) as c:
            k = t
            while not stop.is_set():
                with lock:
                    start = next(it, None)
                if start is None:
                    return
                body = b'{"records":[' + b",".join(recs[start:start + per_batch]) + b"]}"
                _post_batch(c, urls, k, "/v1/records/batch?wait=true&timeout=30", body)
                k += 1

    with cf.ThreadPoolExecutor(threads) as ex:
        list(ex.map(client, range(threads)))


def _sampler(url: str, out: list[tuple[float, int]], stop: threading.Event) -> None:
    """(time, log size) of the node at ``url`` every 20 ms, until ``stop``."""
    with httpx.Client(timeout=5) as c:
        while not stop.is_set():
            try:
                size = int(c.get(url + "/v1/status").json()["log_size"])
            except (httpx.HTTPError, KeyError, ValueError):
                size = -1
            if size >= 0:
                out.append((time.perf_counter(), size))
            time.sleep(0.02)


def _rate(samples: list[tuple[float, int]], t0: float, t1: float) -> float:
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def _longest_stall(samples: list[tuple[float, int]], t0: float, t1: float) -> float:
    """The longest time between two samples in [t0, t1] with no new final record between them."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    longest, since = 0.0, inside[0][0] if inside else t0
    for (_, a), (tb, b) in itertools.pairwise(inside):
        if b > a:
            since = tb
        longest = max(longest, tb - since)
    return longest


def _membership(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """A fresh ``scripts/devnet`` under load: ``add`` a fifth organisation and validator,
    then ``remove`` node-4, while closed-loop clients submit to node-1..3."""
    import devnet as dn  # scripts/devnet.py; scripts/ is on sys.path when run by bench.py

    from ledger.keys import SigningKey

    d = work / "membership"
    os.environ["DEVNET_BASE_PORT"] = str(_free_base_port(NODES + 1))
    dn.ensure_init(d)
    homes = dn.homes(d)
    for h in homes:
        dn.start(h)
    samples: list[tuple[float, int]] = []
    stop_load, stop_sampling = threading.Event(), threading.Event()
    try:
        dn.wait_healthy(homes)
        urls = [dn.node_url(h) for h in homes[:3]]
        chain_id = httpx.get(urls[0] + "/v1/status", timeout=5).json()["chain_id"]
        n = args.membership_records
        print(f"membership: signing {n:,} records ...", flush=True)
        recs = _records(chain_id, [SigningKey.load(d / "alice.key")], n, 0)
        sampler = threading.Thread(target=_sampler, args=(urls[0], samples, stop_sampling), daemon=True)
        sampler.start()
        load = threading.Thread(target=_closed_loop, args=(urls, recs, 200, args.devnet_clients, stop_load),
                                daemon=True)
        t_start = time.perf_counter()
        load.start()
        time.sleep(args.membership_settle)
        marks: dict[str, float] = {"add_begins": time.perf_counter()}
        dn.cmd_add(d, "newco")
        marks["add_done"] = time.perf_counter()
        time.sleep(args.membership_settle)
        marks["remove_begins"] = time.perf_counter()
        dn.cmd_remove(d, "node-4")
        marks["remove_done"] = time.perf_counter()
        time.sleep(args.membership_settle)
        t_end = time.perf_counter()
        ran_out = not load.is_alive()
        stop_load.set()
        load.join()
        if ran_out:  # the figures hold until the last record, not beyond: clip to it
            t_end = next((t for t, size in samples if size >= n), t_end)
            print(f"  the load's {n:,} records ran out before the end; raise --membership-records", flush=True)
        with httpx.Client(timeout=5) as c:
            validators = [v["name"] for v in c.get(urls[0] + "/v1/validators").json()["validators"]]
            changes = len(c.get(urls[0] + "/v1/membership").json()["changes"])
    finally:
        stop_load.set()
        stop_sampling.set()
        for h in dn.all_homes(d):
            dn.stop(h)
    around = 2.0  # seconds either side of a change
    marks = {k: min(v, t_end) for k, v in marks.items()}
    return {
        "load_ran_out": ran_out,
        "records": n,
        "before_per_s": _rate(samples, t_start + 1.0, marks["add_begins"]),
        "during_per_s": _rate(samples, marks["add_begins"], marks["remove_done"]),
        "add_s": marks["add_done"] - marks["add_begins"],
        "remove_s": marks["remove_done"] - marks["remove_begins"],
        "stall_add_s": _longest_stall(samples, marks["add_begins"] - around, min(marks["add_done"] + around, t_end)),
        "stall_remove_s": _longest_stall(samples, marks["remove_begins"] - around,
                                         min(marks["remove_done"] + around, t_end)),
        "stall_whole_s": _longest_stall(samples, t_start + 1.0, t_end),
        "validators_after": validators,
        "set_changes": changes,
    }


def section_devnet(args: argparse.Namespace) -> dict[str, Any]:
    from bench import audit_rate, machine, raw_verify_per_s

    n = args.devnet_records
    res: dict[str, Any] = {"machine": machine()}
    print("measuring the limit: Ed25519 verify/s on one core ...", flush=True)
    res["raw_verify_per_s"] = raw_verify_per_s()
    with tempfile.TemporaryDirectory(prefix="provledger-devnet-") as d:
        net = Devnet(Path(d))
        try:
            for i in range(NODES):
                net.start(i)
            for i in range(NODES):
                net.wait_ready(i)
            chain_id = net.status(0)["chain_id"]
            people = _keys(net.key_files)
            print(f"signing {n:,} records ...", flush=True)
            recs = _records(chain_id, people, n, 0)
            batches = [recs[i:i + 500] for i in range(0, n, 500)]
            print(f"throughput: {len(batches)} batches of 500 over {NODES} nodes ...", flush=True)
            t0 = time.perf_counter()
            _post_batches(net.urls, batches, threads=args.devnet_clients)
            t_sub = time.perf_counter()
            t_final = _wait_all(net, n, list(range(NODES)))
            res["throughput"] = {
                "records": n,
                "submitted_per_s": n / (t_sub - t0),
                "final_on_all_per_s": n / (t_final - t0),
                "rss_mb_after": net.rss_mb(),
                "height": net.status(0)["height"],
            }
            print(f"  {res['throughput']['final_on_all_per_s']:,.0f} records/s final on all four", flush=True)
            half = res["throughput"]["final_on_all_per_s"] / 2
            print(f"latency at half that rate ({half:,.0f} records/s) ...", flush=True)
            res["latency"] = _latency(net, chain_id, people, half, args.latency_seconds, n)
            size = max(net.log_size(i) for i in range(NODES))
            _wait_all(net, size, list(range(NODES)))
            print(f"catch-up: node 4 starts over from an empty database ({size:,} records behind) ...", flush=True)
            net.stop(NODES - 1)
            home = net.homes[NODES - 1]
            db = next(p for p in home.glob("*.db"))
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            shutil.copy(home / "empty.db.orig", db)
            t0 = time.perf_counter()
            net.start(NODES - 1)
            net.wait_ready(NODES - 1, timeout=120)
            t_level = _wait_all(net, size, [NODES - 1], timeout=1200)
            res["catch_up"] = {"records": size, "records_per_s": size / (t_level - t0)}
            print(f"  {res['catch_up']['records_per_s']:,.0f} records/s", flush=True)
        finally:
            net.down()
        print("auditing the same chain offline (--jobs 1) ...", flush=True)
        res["audit_j1_per_s"] = audit_rate(next(net.homes[0].glob("*.db")), 1)
        res["membership"] = _membership(args, Path(d))
        m = res["membership"]
        print(f"  {m['during_per_s']:,.0f} records/s final during the changes ({m['before_per_s']:,.0f} before); "
              f"longest stall {m['stall_add_s']:.2f} s around the add, {m['stall_remove_s']:.2f} s around the removal",
              flush=True)
    single = None
    node_json = args.out / "node.json"  # this run's node section, or an earlier run's
    if node_json.exists():
        single = orjson.loads(node_json.read_bytes()).get("summary", {}).get("batched_records_per_s")
    raw = res["raw_verify_per_s"]
    res["summary"] = {
        "final_records_per_s": res["throughput"]["final_on_all_per_s"],
        "vs_raw_verify": res["throughput"]["final_on_all_per_s"] / raw,
        "single_node_batched_per_s": single,
        "p50_ms": res["latency"]["p50_ms"],
        "p99_ms": res["latency"]["p99_ms"],
        "catch_up_per_s": res["catch_up"]["records_per_s"],
        "catch_up_vs_audit": res["catch_up"]["records_per_s"] / res["audit_j1_per_s"],
        "records": n,
        "membership_per_s": res["membership"]["during_per_s"],
        "membership_vs_before": res["membership"]["during_per_s"] / max(res["membership"]["before_per_s"], 1e-9),
        "membership_stall_s": max(res["membership"]["stall_add_s"], res["membership"]["stall_remove_s"]),
    }
    return res


def render_devnet(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    raw = r["raw_verify_per_s"]
    lat = r["latency"]
    single = s.get("single_node_batched_per_s")
    single_txt = f"single node batched {single:,.0f}/s" if single else "single node: run `scripts/bench node`"
    ratio_single = f"{s['final_records_per_s'] / single:.2f}" if single else ""
    return [
        "## Devnet: four validators on this machine (issue 4)",
        "",
        "| figure | value | next to | ratio | target |",
        "| --- | ---: | --- | ---: | --- |",
        f"| records/s final on all four nodes ({s['records']:,} records, batches of 500 spread over the nodes) "
        f"| {s['final_records_per_s']:,.0f} | raw Ed25519 verify {raw:,.0f}/s (one core) | {s['vs_raw_verify']:.2f} | >= 1,500/s |",
        f"| same figure | | {single_txt} | {ratio_single} | |",
        f"| submit-to-final latency at {lat['offered_records_per_s']:,.0f} records/s (batches of 10, `?wait=true`) "
        f"| p50 {lat['p50_ms']:,.0f} ms, p99 {lat['p99_ms']:,.0f} ms | | | p50 < 300 ms |",
        f"| catch-up of a node from an empty database ({r['catch_up']['records']:,} records) "
        f"| {s['catch_up_per_s']:,.0f} records/s | offline audit `--jobs 1` {r['audit_j1_per_s']:,.0f} records/s "
        f"| {s['catch_up_vs_audit']:.2f} | >= 0.7 |",
        *_render_membership(r.get("membership")),
        "",
        "All four nodes, the clients and the audit share the machine's 2 cores. Throughput: four client "
        "threads post pre-signed batches round-robin over the nodes. Latency: one asyncio client on keep-alive "
        "connections sends each group of 50 records (a dataset and what uses it) to one node, on schedule "
        "whatever the answers' pace; latency runs from the moment a batch was due to the answer that all ten are final. "
        "Membership: a second devnet made by `scripts/devnet up`, under closed-loop load (client threads posting batches "
        "of 200 with `?wait=true` to node-1 ... node-3); the rate during the changes runs from the start of `add` to the "
        "end of `remove`, and shares the cores with the votes' `provledger` processes and the new node's catch-up; the "
        "longest time without a new final record is sampled every 20 ms on node-1.",
        "",
    ]


def _render_membership(m: dict[str, Any] | None) -> list[str]:
    if not m:
        return []
    return [
        f"| records/s final while `scripts/devnet add newco` ({m['add_s']:.1f} s) and `remove node-4` "
        f"({m['remove_s']:.1f} s) run, on a fresh devnet | {m['during_per_s']:,.0f} | the same devnet before the "
        f"changes {m['before_per_s']:,.0f}/s | {m['during_per_s'] / max(m['before_per_s'], 1e-9):.2f} | |",
        f"| longest time without a new final record, from 2 s before to 2 s after each change "
        f"| add {m['stall_add_s']:.2f} s, remove {m['stall_remove_s']:.2f} s | whole run {m['stall_whole_s']:.2f} s "
        f"| | <= 2 s |",
        *([f"| (the load's {m['records']:,} records ran out before the end: figures up to the last) | | | | |"]
          if m.get("load_ran_out") else []),
    ]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--devnet-records", type=int, default=100_000, help="records for the devnet throughput run")
    ap.add_argument("--devnet-clients", type=int, default=4, help="client threads for the devnet throughput run")
    ap.add_argument("--latency-seconds", type=float, default=10.0, help="length of the devnet latency run")
    ap.add_argument("--membership-records", type=int, default=300_000,
                    help="records signed for the membership run (it stops when the changes are done)")
    ap.add_argument("--membership-settle", type=float, default=4.0,
                    help="seconds of load before, between and after the two changes")


if __name__ == "__main__":  # pragma: no cover - run through scripts/bench devnet
    os.execv(str(ROOT / "scripts" / "bench"), [str(ROOT / "scripts" / "bench"), "devnet", *sys.argv[1:]])
