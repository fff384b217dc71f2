"""The node section of ``scripts/bench``: one ``provledger node start`` process on 127.0.0.1.

Measures, in one run:

- limits: raw Ed25519 verify/s on one core (``bench.raw_verify_per_s``), and the
  requests/s of a trivial FastAPI endpoint (reads the body, answers a constant 202) in its
  own process, under the same client and the same request bodies as the node's
  single-record run;
- the HTTP servers side by side (``SERVERS``: granian, which the node runs, uvicorn with
  its httptools and h11 parsers, hypercorn): for each, the trivial endpoint, and the node's
  app on a fresh copy of the same chain for one record per request (``POST /v1/records``
  requests/s from several concurrent keep-alive connections, closed loop) and for batches;
- submit-to-commit latency: ``POST /v1/records?wait=true`` from paced open-loop clients at
  half the measured single-record rate, timed from each request's scheduled start, so a
  slow answer cannot delay the next request's clock;
- batched ingest: ``POST /v1/records/batch`` with 500 records per batch from several
  connections, records/s *committed* (until ``/v1/status`` shows the whole log), with the
  node's RSS (``VmRSS`` in ``/proc/<pid>/status``) sampled throughout and reported at 10%,
  50% and 100% of the records.

Every record is signed before its phase starts: signing is the client's cost, not the
node's. The client is a small asyncio HTTP/1.1 keep-alive client (uvloop when present) in
this process; on a 2-core machine it still competes with the node (and its signature
verifier process) for the cores, which the report says.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

ROOT = Path(__file__).resolve().parents[1]
ROLES = "contributor,annotator,trainer,evaluator"
PEOPLE = 8
BATCH = 500
BASE_DATASET = "bench-base"
H = "ab" * 32


# --- a minimal HTTP/1.1 keep-alive client ------------------------------------------------
class Conn:
    """One keep-alive connection; one request at a time. Just enough HTTP/1.1 for a
    uvicorn server that answers with Content-Length."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        request = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        for attempt in (1, 2):
            if self.writer is None:
                await self.open()
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(request)
                head = await self.reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closed a connection that sat idle (uvicorn's keep-alive
                # timeout) before reading this request: once more on a new one.
                self.close()
                if attempt == 2:
                    raise
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        data = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None


def _run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro_fn())
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        return asyncio.run(coro_fn())


def closed_loop(port: int, path: str, bodies: list[bytes], conns: int, seconds: float, ok: set[int], *,
                reuse: bool = False) -> dict[str, Any]:
    """``conns`` connections each send the next body as soon as the previous answer is
    in, for ``seconds``; returns requests/s counting only statuses in ``ok``. ``reuse``:
    start over when the bodies run out (for an endpoint that ignores what it gets)."""

    async def main() -> dict[str, Any]:
        it = itertools.cycle(bodies) if reuse else iter(bodies)
        done = bad = 0
        codes: dict[int, int] = {}
        stop_at = 0.0

        async def worker() -> None:
            nonlocal done, bad
            c = await Conn("127.0.0.1", port).open()
            try:
                while time.perf_counter() < stop_at:
                    body = next(it, None)
                    if body is None:
                        return
                    status, _ = await c.request("POST", path, body)
                    codes[status] = codes.get(status, 0) + 1
                    if status in ok:
                        done += 1
                    else:
                        bad += 1
            finally:
                c.close()

        t0 = time.perf_counter()
        stop_at = t0 + seconds
        await asyncio.gather(*(worker() for _ in range(conns)))
        dt = time.perf_counter() - t0
        if next(it, None) is None:
            raise SystemExit(f"ran out of {len(bodies)} pre-signed bodies before {seconds} s; sign more")
        return {"requests_per_s": done / dt, "requests": done, "errors": bad, "statuses": codes, "seconds": dt,
                "connections": conns}

    return _run(main)


def _status_200(status: int, _body: bytes) -> bool:
    return status == 200


def open_loop(port: int | list[int], path: str, bodies: list[bytes], rate: float,
              accept: Callable[[int, bytes], bool] = _status_200) -> dict[str, Any]:
    """Send ``bodies`` at ``rate`` per second on schedule, whatever the answers' pace
    (a new connection when every open one is busy); latency from the scheduled start,
    of the answers ``accept`` takes for a commit. Several ports: round-robin over them."""
    ports = [port] if isinstance(port, int) else port

    async def main() -> dict[str, Any]:
        idle: dict[int, list[Conn]] = {p: [] for p in ports}
        lat: list[float] = []
        codes: dict[int, int] = {}
        opened = 0

        async def one(due: float, body: bytes, p: int) -> None:
            nonlocal opened
            if idle[p]:
                c = idle[p].pop()
            else:
                c = Conn("127.0.0.1", p)
                opened += 1
            status, data = await c.request("POST", path, body)
            end = time.perf_counter()
            codes[status] = codes.get(status, 0) + 1
            if accept(status, data):
                lat.append(end - due)
            idle[p].append(c)

        tasks = []
        t0 = time.perf_counter() + 0.2
        for i, body in enumerate(bodies):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, body, ports[i % len(ports)])))
        await asyncio.gather(*tasks)
        for conns in idle.values():
            for c in conns:
                c.close()
        lat.sort()
        if not lat:
            raise SystemExit(f"no request was committed in the latency run: {codes}")
        return {
            "offered_per_s": rate,
            "requests": len(bodies),
            "committed": len(lat),
            "statuses": codes,
            "connections": opened,
            "p50_ms": statistics.median(lat) * 1000,
            "p90_ms": lat[int(0.90 * (len(lat) - 1))] * 1000,
            "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000,
            "max_ms": lat[-1] * 1000,
        }

    return _run(main)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_per_request(pids: list[int], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s result with the CPU microseconds each of ``pids`` spent per counted request."""
    before = [cpu_s(p) for p in pids]
    res = run()
    n = max(1, res["requests"])
    res["cpu_us_per_request"] = [(cpu_s(p) - b) / n * 1e6 for p, b in zip(pids, before, strict=True)]
    return res


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"--node-clients {text!r}: give connection counts, e.g. 16,32")
    return counts


def _helper_kind(pid: int) -> str:
    """``verifier`` (or ``?``): which of the node's helper processes ``pid`` is."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    for kind, module in (("verifier", b"node.verify"),):
        if any(module in arg for arg in cmdline):
            return kind
    return "?"


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def batched_ingest(port: int, pid: int, batches: list[bytes], conns: int, base: int, total: int) -> dict[str, Any]:
    """Submit every batch from ``conns`` connections (resubmitting what the node answers
    ``mempool_full`` after a pause) and wait until the log holds ``base + total`` records.
    The node's RSS is sampled all along and noted when 10%, 50% and 100% are committed."""

    async def main() -> dict[str, Any]:
        queue = list(reversed(batches))
        retries = 0
        submitted_at = 0.0
        marks = {10: 0, 50: 0, 100: 0}
        samples: list[tuple[float, int, int]] = []  # (s since start, committed, rss kb)

        async def worker() -> None:
            nonlocal retries
            c = await Conn("127.0.0.1", port).open()
            try:
                while queue:
                    body = queue.pop()
                    while True:
                        status, data = await c.request("POST", "/v1/records/batch", body)
                        if status == 503:  # mempool_full for the whole request
                            retries += 1
                            await asyncio.sleep(0.05)
                            continue
                        if status != 200:
                            raise SystemExit(f"batch refused: HTTP {status} {data[:300]!r}")
                        results = orjson.loads(data)["results"]
                        full = [r["index"] for r in results if r.get("code") == "mempool_full"]
                        wrong = [r for r in results if "code" in r and r["code"] != "mempool_full"]
                        if wrong:
                            raise SystemExit(f"the node refused a bench record: {wrong[0]}")
                        if not full:
                            break
                        # Admission stops at the first full item: resubmit that suffix.
                        retries += 1
                        records = orjson.loads(body)["records"][full[0]:]
                        body = orjson.dumps({"records": records})
                        await asyncio.sleep(0.05)
            finally:
                c.close()

        async def watch(t0: float) -> float:
            c = await Conn("127.0.0.1", port).open()
            try:
                while True:
                    _, data = await c.request("GET", "/v1/status")
                    committed = orjson.loads(data)["log_size"] - base
                    now = time.perf_counter()
                    rss = rss_kb(pid)
                    samples.append((now - t0, committed, rss))
                    for pct in marks:
                        if not marks[pct] and committed >= total * pct // 100:
                            marks[pct] = rss
                    if committed >= total:
                        return now
                    await asyncio.sleep(0.02)
            finally:
                c.close()

        t0 = time.perf_counter()
        watcher = asyncio.create_task(watch(t0))
        await asyncio.gather(*(worker() for _ in range(conns)))
        submitted_at = time.perf_counter()
        t_done = await watcher
        helpers = sum(rss_kb(p) for p in children(pid))
        return {
            "records": total,
            "batch": BATCH,
            "connections": conns,
            "seconds": t_done - t0,
            "committed_per_s": total / (t_done - t0),
            "submitted_per_s": total / (submitted_at - t0),
            "mempool_full_retries": retries,
            "rss_mb": {str(p): kb / 1024 for p, kb in marks.items()},
            "rss_mb_max": max(s[2] for s in samples) / 1024,
            "helpers_rss_mb": helpers / 1024,
            "samples": [(round(t, 2), n, kb) for t, n, kb in samples[:: max(1, len(samples) // 200)]],
        }

    return _run(main)


# --- records ------------------------------------------------------------------------------
def _keys(files: list[Path]) -> list[Any]:
    from ledger.keys import SigningKey

    return [SigningKey.load(f) for f in files]


def _sign_batches(chain_id: str, key_files: list[Path], start: int, n: int) -> list[bytes]:
    """Bodies of ``POST /v1/records/batch`` for workload records ``start .. start+n-1``
    (each batch of 500 names its own datasets first, so batches are independent)."""
    from bench import workload

    people = _keys(key_files)
    out = []
    for s in range(start, start + n, BATCH):
        recs = workload(chain_id, people, min(BATCH, start + n - s), s)
        out.append(b'{"records":[' + b",".join(orjson.dumps(r) for r in recs) + b"]}")
    return out


def _sign_singles(chain_id: str, key_files: list[Path], tag: str, start: int, n: int) -> list[bytes]:
    """Independent single records (any order commits): new datasets, annotation events
    and local model updates on the base dataset, from eight signers."""
    from ledger.records import make_record

    people = _keys(key_files)
    out = []
    for i in range(start, start + n):
        p = people[i % len(people)]
        if i % 3 == 0:
            rtype = "dataset.contribute"
            body: dict[str, Any] = {
                "dataset": f"{tag}-{i}", "version": "1", "content_hash": H, "size_bytes": 1000, "items": 10,
                "license": "CC-BY-4.0", "modality": "image", "derived_from": [], "privacy_budget": None}
        elif i % 3 == 1:
            rtype = "annotation.event"
            body = {"dataset": BASE_DATASET, "labels_hash": H, "labels": 500, "label_schema": "coco-80",
                    "method": "manual", "model": None, "quality": "0.93", "quality_method": "consensus-of-3"}
        else:
            rtype = "model.update"
            body = {"model": "bench-net", "round": i, "parent": None, "weights_hash": H,
                    "inputs": [{"dataset": BASE_DATASET, "samples": 1000, "epsilon": "0.1", "delta": "0.00001"}],
                    "aggregates": [], "metrics": {"loss": "0.31"}}
        out.append(orjson.dumps(make_record(p, chain_id, rtype, body, nonce=f"{tag}{i}", ts="2026-11-21T12:00:00Z")))
    return out


def sign_parallel(fn: Callable[..., list[bytes]], jobs: list[tuple[Any, ...]], workers: int) -> list[bytes]:
    """Run ``fn(*job)`` for every job in ``workers`` processes; results concatenated in order."""
    if workers <= 1:
        return [b for job in jobs for b in fn(*job)]
    with cf.ProcessPoolExecutor(workers) as ex:
        return [b for part in ex.map(fn, *zip(*jobs, strict=True)) for b in part]


def _split(total: int, parts: int, align: int) -> list[tuple[int, int]]:
    step = max(align, -(-total // parts // align) * align)
    return [(s, min(step, total - s)) for s in range(0, total, step)]


# --- processes ----------------------------------------------------------------------------
def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "provledger"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ledger.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} not listening after {timeout} s; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


SERVERS = ("granian", "uvicorn-httptools", "uvicorn-h11", "hypercorn")  # the first is the node's


def serve_with(app: Any, server: str, port: int) -> None:
    """Serve the ASGI ``app`` on 127.0.0.1:``port`` with ``server`` (one of SERVERS, each
    with uvloop) until SIGTERM."""
    import uvloop

    if server.startswith("uvicorn-"):
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, http=server.split("-")[1], loop="uvloop",
                    log_level="warning", access_log=False, lifespan="on")
        return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if server == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            cfg = Config()
            cfg.bind = [f"127.0.0.1:{port}"]
            cfg.loglevel = "WARNING"
            cfg.backlog = 2048
            await serve(app, cfg, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        elif server == "granian":
            from granian.constants import HTTPModes, Interfaces
            from granian.server.embed import Server

            g = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGI, http=HTTPModes.http1,
                       websockets=False, backlog=2048, log_enabled=False)
            loop.add_signal_handler(signal.SIGTERM, g.stop)
            await g.serve()
        else:
            raise SystemExit(f"unknown server {server!r}; one of {', '.join(SERVERS)}")

    uvloop.run(main())


def trivial_server(port: int, server: str) -> None:
    """The reference endpoint: FastAPI as the node runs it, doing nothing."""
    app = FastAPI()
    answer = orjson.dumps({"id": "0" * 64, "status": "pending"})

    @app.post("/v1/records")
    async def post(request: Request) -> Response:
        await request.body()
        return Response(answer, status_code=202, media_type="application/json")

    serve_with(app, server, port)


def node_server(home: str, port: int, server: str) -> None:
    """The node's app served by ``server``; granian exactly as ``provledger node start``
    runs it (``node.serve.serve``)."""
    from node.serve import serve, setup_logging

    if server == SERVERS[0]:
        serve(home, port=port, log_level="warning")
        return
    from node.app import create_app

    setup_logging("warning")
    serve_with(create_app(home, port=port), server, port)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _servers(text: str) -> list[str]:
    names = [x.strip() for x in str(text).split(",") if x.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if not names or unknown or names[0] != SERVERS[0]:
        raise SystemExit(f"--node-servers {text!r}: a list of {', '.join(SERVERS)}, starting with {SERVERS[0]}")
    return names


def _one_server(args: argparse.Namespace, root: Path, fresh: Path, server: str, chain_id: str, key_files: list[Path],
                singles: list[bytes], runs: list[list[bytes]], batches: list[bytes], n_batch: int) -> dict[str, Any]:
    """One HTTP server: the trivial endpoint at each connection count, then the node's app
    on a fresh copy of the chain (one record per request at each count, then batches)."""
    sweep, seconds = _counts(args.node_clients), args.node_seconds
    out: dict[str, Any] = {"trivial_sweep": [], "single_sweep": []}
    port = _free_port()
    log = root / f"trivial-{server}.log"
    proc = _spawn([sys.executable, str(Path(__file__).resolve()), "_trivial", str(port), server], log)
    try:
        _wait_http(port, proc, f"the trivial server ({server})", log)
        closed_loop(port, "/v1/records", singles[:2000], sweep[0], 0.5, {202}, reuse=True)
        for conns in sweep:
            print(f"limit: a trivial FastAPI endpoint under {server}, {conns} connections, {seconds:g} s ...", flush=True)
            run = cpu_per_request(
                [proc.pid], lambda n=conns: closed_loop(port, "/v1/records", singles, n, seconds, {202}, reuse=True))
            if run["errors"]:
                raise SystemExit(f"the trivial endpoint ({server}) failed: {run['statuses']}")
            print(f"  {run['requests_per_s']:,.0f} requests/s", flush=True)
            out["trivial_sweep"].append(run)
    finally:
        _stop(proc)
    out["trivial"] = max(out["trivial_sweep"], key=lambda x: x["requests_per_s"])

    home = root / f"node-{server}"
    shutil.copytree(fresh, home)
    port = _free_port()
    log = root / f"node-{server}.log"
    proc = _spawn([sys.executable, str(Path(__file__).resolve()), "_node", str(home), str(port), server], log)
    try:
        _wait_http(port, proc, f"the node ({server})", log)
        base = _run(lambda: Conn("127.0.0.1", port).request("POST", "/v1/records?wait=true",
                                                               _base_dataset(chain_id, key_files[0])))
        if base[0] != 200:
            raise SystemExit(f"the base dataset was not committed ({server}): {base}")
        for conns, bodies in zip(sweep, runs, strict=True):
            print(f"one record per request under {server}: {conns} connections, {seconds:g} s ...", flush=True)
            helpers = children(proc.pid)
            run = cpu_per_request([proc.pid, *helpers],
                                  lambda b=bodies, n=conns: closed_loop(port, "/v1/records", b, n, seconds, {202}))
            run["helpers"] = [_helper_kind(p) for p in helpers]
            if run["errors"]:
                raise SystemExit(f"the node ({server}) refused single records: {run['statuses']}")
            print(f"  {run['requests_per_s']:,.0f} requests/s", flush=True)
            out["single_sweep"].append(run)
        out["single"] = max(out["single_sweep"], key=lambda x: x["requests_per_s"])
        start_size = _settle(port)
        print(f"batched ingest under {server}: {n_batch:,} records, {args.node_batch_clients} connections ...", flush=True)
        out["batched"] = batched_ingest(port, proc.pid, batches, args.node_batch_clients, start_size, n_batch)
        out["batched"].pop("samples", None)
        print(f"  {out['batched']['committed_per_s']:,.0f} records/s committed", flush=True)
    finally:
        rc = _stop(proc)
    errors = [line for line in log.read_text(errors="replace").splitlines() if " ERROR " in line]
    # uvicorn re-raises SIGTERM after its clean shutdown (uvicorn >= 0.29): -15 is clean there.
    if rc not in (0, -signal.SIGTERM if server.startswith("uvicorn-") else 0) or errors:
        raise SystemExit(f"the node ({server}) exited with {rc} or logged errors: {errors[:3]}; see {log}")
    return out


# --- the section ----------------------------------------------------------------------------
def section_node(args: argparse.Namespace) -> dict[str, Any]:
    from bench import machine, raw_verify_per_s

    total = args.records if args.records is not None else 1_000_000
    sweep, seconds = _counts(args.node_clients), args.node_seconds
    workers = max(1, min(4, os.cpu_count() or 1))
    res: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
    print("measuring the limit: Ed25519 verify/s on one core ...", flush=True)
    res["raw_verify_per_s"] = raw_verify_per_s()

    with tempfile.TemporaryDirectory(prefix="provledger-bench-node-") as d:
        root = Path(d)
        home = root / "net"
        key_files = [root / f"p{i}.key" for i in range(PEOPLE)]
        cmd = [*_cli(), "init", "--home", str(home), "--json"]
        for k in key_files:
            cmd += ["--participant-key", f"{k}={ROLES}"]
        chain_id = orjson.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)["chain_id"]
        res["node_config"] = orjson.loads((home / "config.json").read_bytes())

        # Pre-sign generously: a closed-loop run stops on time, not when bodies run out.
        # Each run at each connection count gets bodies of its own (a record sent again
        # would be answered from the node's index, without a signature check).
        n_single = int(args.node_single_max * seconds)
        print(f"signing {n_single * len(sweep):,} single records ...", flush=True)
        singles = sign_parallel(_sign_singles, [(chain_id, key_files, "s", s, n)
                                                for s, n in _split(n_single * len(sweep), workers, 3)], workers)
        runs = [singles[k * n_single:(k + 1) * n_single] for k in range(len(sweep))]

        servers = _servers(args.node_servers)
        n_server = args.node_server_records
        print(f"signing {n_server:,} records in batches of {BATCH} for each server's batched run ...", flush=True)
        server_batches = sign_parallel(_sign_batches, [(chain_id, key_files, s, n)
                                                      for s, n in _split(n_server, workers * 4, BATCH)], workers)
        fresh = root / "fresh"
        shutil.copytree(home, fresh)  # the chain before any run: every server's node starts from a copy
        res["servers"] = {}
        for server in servers:
            res["servers"][server] = _one_server(args, root, fresh, server, chain_id, key_files, singles, runs,
                                                 server_batches, n_server)
        ours = res["servers"][servers[0]]
        for key in ("trivial", "trivial_sweep", "single", "single_sweep"):
            res[key] = ours[key]
        single_rate = res["single"]["requests_per_s"]

        port = _free_port()
        log = root / "node.log"
        proc = _spawn([*_cli(), "node", "start", "--home", str(home), "--port", str(port), "--log-level", "warning"], log)
        try:
            _wait_http(port, proc, "the node", log)
            base = _run(lambda: Conn("127.0.0.1", port).request("POST", "/v1/records?wait=true",
                                                                   _base_dataset(chain_id, key_files[0])))
            if base[0] != 200:
                raise SystemExit(f"the base dataset was not committed: {base}")

            rate = single_rate / 2
            n_lat = int(rate * args.node_latency_seconds)
            print(f"signing {n_lat:,} records; latency at {rate:,.0f} records/s for {args.node_latency_seconds:g} s ...",
                  flush=True)
            lat_bodies = sign_parallel(_sign_singles, [(chain_id, key_files, "l", s, n) for s, n in _split(n_lat, workers, 3)],
                                       workers)
            _settle(port)
            res["latency"] = open_loop(port, "/v1/records?wait=true&timeout=30", lat_bodies, rate)
            print(f"  p50 {res['latency']['p50_ms']:.0f} ms, p99 {res['latency']['p99_ms']:.0f} ms", flush=True)
            del lat_bodies

            print(f"signing {total:,} records in batches of {BATCH} ({workers} processes) ...", flush=True)
            t0 = time.perf_counter()
            batches = sign_parallel(_sign_batches, [(chain_id, key_files, s, n) for s, n in _split(total, workers * 4, BATCH)],
                                    workers)
            res["sign_records_per_s"] = total / (time.perf_counter() - t0)
            start_size = _settle(port)
            print(f"batched ingest: {total:,} records, {args.node_batch_clients} connections ...", flush=True)
            res["load_during"] = os.getloadavg()
            res["rss_mb_idle"] = rss_kb(proc.pid) / 1024
            res["batched"] = batched_ingest(port, proc.pid, batches, args.node_batch_clients, start_size, total)
            del batches
            b = res["batched"]
            print(f"  {b['committed_per_s']:,.0f} records/s committed; RSS MB at 10/50/100%: "
                  f"{b['rss_mb']['10']:.0f} / {b['rss_mb']['50']:.0f} / {b['rss_mb']['100']:.0f}", flush=True)
        finally:
            rc = _stop(proc)
        if rc != 0:
            raise SystemExit(f"the node exited with {rc} after SIGTERM; see its log")
        errors = [line for line in log.read_text(errors="replace").splitlines() if " ERROR " in line]
        if errors:
            raise SystemExit(f"the node logged errors: {errors[:3]}")

    trivial = res["trivial"]["requests_per_s"]
    raw = res["raw_verify_per_s"]
    res["summary"] = {
        "batched_records_per_s": res["batched"]["committed_per_s"],
        "batched_vs_raw_verify": res["batched"]["committed_per_s"] / raw,
        "single_requests_per_s": res["single"]["requests_per_s"],
        "single_vs_trivial": res["single"]["requests_per_s"] / trivial,
        "trivial_requests_per_s": trivial,
        "single_vs_raw_verify": res["single"]["requests_per_s"] / raw,
        "p50_ms": res["latency"]["p50_ms"],
        "p99_ms": res["latency"]["p99_ms"],
        "rss_mb": res["batched"]["rss_mb"],
        "records": total,
        "servers": {name: {"trivial_requests_per_s": x["trivial"]["requests_per_s"],
                           "single_requests_per_s": x["single"]["requests_per_s"],
                           "single_vs_trivial": x["single"]["requests_per_s"] / x["trivial"]["requests_per_s"],
                           "batched_records_per_s": x["batched"]["committed_per_s"]}
                    for name, x in res["servers"].items()},
    }
    return res


def _base_dataset(chain_id: str, key_file: Path) -> bytes:
    from ledger.records import make_record

    body = {"dataset": BASE_DATASET, "version": "1", "content_hash": H, "size_bytes": 10**9, "items": 10**6,
            "license": "CC-BY-4.0", "modality": "image", "derived_from": [], "privacy_budget": None}
    return orjson.dumps(make_record(_keys([key_file])[0], chain_id, "dataset.contribute", body, nonce="base"))


def _settle(port: int, timeout: float = 120) -> int:
    """Wait until the node's mempool is empty; returns its log size."""

    async def main() -> int:
        c = await Conn("127.0.0.1", port).open()
        deadline = time.monotonic() + timeout
        try:
            while True:
                st = orjson.loads((await c.request("GET", "/v1/status"))[1])
                if st["mempool"] == 0 or time.monotonic() > deadline:
                    return int(st["log_size"])
                await asyncio.sleep(0.05)
        finally:
            c.close()

    return int(_run(main))


def render_node(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    raw = r["raw_verify_per_s"]
    triv = s["trivial_requests_per_s"]
    b, lat, single = r["batched"], r["latency"], r["single"]
    rss = b["rss_mb"]
    load = r.get("load_during") or r.get("load_before") or (0, 0, 0)
    cfg = r.get("node_config", {})
    return ["## Node: one validator, real HTTP on 127.0.0.1 (issue 3)", "", "| figure | value | limit measured in the same run | ratio | target |", "| --- | ---: | --- | ---: | --- |", f"| batched ingest, {BATCH} records per `POST /v1/records/batch`, {b['connections']} connections, " f"{b['records']:,} records | {b['committed_per_s']:,.0f} records/s committed | raw Ed25519 verify {raw:,.0f}/s " f"(one core) | {s['batched_vs_raw_verify']:.2f} | >= 5,000/s |", f"| one record per `POST /v1/records`, best of {_sweep_text(r)} keep-alive connections " f"| {single['requests_per_s']:,.0f} requests/s ({single['connections']} connections) " f"| trivial FastAPI endpoint {triv:,.0f} requests/s ({r['trivial']['connections']} connections) " f"| {s['single_vs_trivial']:.2f} | >= 0.5 |", f"| submit-to-commit latency, `?wait=true`, open loop at {lat['offered_per_s']:,.0f} records/s " f"(half the single-record rate) | p50 {lat['p50_ms']:,.0f} ms, p99 {lat['p99_ms']:,.0f} ms | | | p50 < 100 ms |", f"| node RSS while ingesting {b['records']:,} records (at 10% / 50% / 100%) " f"| {rss['10']:,.0f} / {rss['50']:,.0f} / {rss['100']:,.0f} MB | idle before: {r['rss_mb_idle']:,.0f} MB; " f"its helper processes at the end: {b.get('helpers_rss_mb', 0):,.0f} MB together " f"| {rss['100'] / rss['10']:.2f} | flat |", "", f"The trivial endpoint is FastAPI under the node's HTTP server ({SERVERS[0]}, uvloop) in its own process reading the same request " f"bodies and answering a constant 202. The client is an asyncio HTTP/1.1 keep-alive client in one process " f"(records signed before each phase); it shares the machine's {r['machine'].get('cores')} cores with the node's " f"processes, so every figure is lower than on a machine with a core to spare for " f"the client. Batches the node answered `mempool_full` were resubmitted ({b['mempool_full_retries']} times). " f"Load average (1 min) when batched ingest began: {load[0]:.2f}. The node ran as `provledger init` configures it " f"(block interval {cfg.get('block_interval_ms')} ms, at most {cfg.get('max_block_records'):,} records per block, " f"default verifier processes), with `--log-level warning`. The records are the core section's mix (a new " f"dataset every 50 records, annotation events and model updates on them): the node keeps each dataset's state " f"(versions, budget) in memory, so RSS grows with the number of datasets ({b['records'] // 50:,} here) " f"rather than with the length of the log.", "", *_servers_table(r), *_sweep_note(r), *_cpu_note(r)]


def _servers_table(r: dict[str, Any]) -> list[str]:
    """The HTTP servers side by side, each serving the trivial endpoint and the node's app."""
    rows = r["summary"].get("servers") or {}
    if not rows:
        return []
    n = next(iter(r["servers"].values()))["batched"]["records"]
    out = ["| HTTP server | trivial endpoint | one record per request | ratio | batched, records/s committed |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for name, x in rows.items():
        mark = " (the node's)" if name == SERVERS[0] else ""
        out.append(f"| {name}{mark} | {x['trivial_requests_per_s']:,.0f}/s | {x['single_requests_per_s']:,.0f}/s "
                   f"| {x['single_vs_trivial']:.2f} | {x['batched_records_per_s']:,.0f} |")
    return [*out, "", f"Each server runs the trivial endpoint and then the node's app on a fresh copy of the same "
            f"chain (uvloop for all; granian as `provledger node start` runs it, the others with "
            f"`create_app`), one record per request at the same connection counts, then {n:,} records in batches.", ""]


def _sweep_text(r: dict[str, Any]) -> str:
    counts = [str(x["connections"]) for x in r.get("single_sweep", [r["single"]])]
    return counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + " or " + counts[-1]


def _sweep_note(r: dict[str, Any]) -> list[str]:
    """Both servers at every connection count: each is compared at its best."""
    pairs = list(zip(r.get("trivial_sweep", []), r.get("single_sweep", []), strict=False))
    if len(pairs) < 2:
        return []
    rows = "; ".join(f"{t['connections']} connections: trivial {t['requests_per_s']:,.0f}/s, node "
                     f"{n['requests_per_s']:,.0f}/s" for t, n in pairs)
    return [f"One record per request, each server at each connection count ({rows}). Each is compared at its "
            f"best: the trivial endpoint is one process and saturates its core with few connections, while a "
            f"record's round trip through the node's processes needs more requests in flight to keep every core busy. "
            f"The node's runs follow one another on one database, so each starts with the records of the runs "
            f"before it, and a record's commit costs the node more as its indexes grow.",
            ""]


def _cpu_note(r: dict[str, Any]) -> list[str]:
    """Where the single-record rate goes: CPU per request of each process, from /proc."""
    single = r["single"]
    node_cpu = single.get("cpu_us_per_request")
    triv_cpu = r["trivial"].get("cpu_us_per_request")
    if not node_cpu or not triv_cpu:
        return []
    kinds = single.get("helpers") or ["verifier"] * (len(node_cpu) - 1)
    parts = [f"the node's own process {node_cpu[0]:,.0f} µs"]
    for kind, what in (("verifier", "Ed25519 verifies, grouped"),):
        us = [c for k, c in zip(kinds, node_cpu[1:], strict=True) if k == kind]
        if us:
            parts.append(f"its {len(us)} {kind} process{'es' if len(us) > 1 else ''} {sum(us):,.0f} µs together "
                         f"({what})")
    return [
        f"CPU per single-record request at {single['connections']} connections: {', '.join(parts)}; the trivial "
        f"endpoint's server {triv_cpu[0]:,.0f} µs. The node's own process applies the state rules, answers, and "
        f"commits the blocks; granian parses HTTP on its own thread in that process.",
        "",
    ]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--node-clients", default="16,32,64",
                    help="connection counts for the single-record runs, each run on the trivial endpoint and on the "
                         "node; the best rate of each is compared (node)")
    ap.add_argument("--node-batch-clients", type=int, default=4, help="connections for batched ingest (node)")
    ap.add_argument("--node-seconds", type=float, default=5.0, help="length of each closed-loop run (node)")
    ap.add_argument("--node-latency-seconds", type=float, default=10.0, help="length of the latency run (node)")
    ap.add_argument("--node-servers", default=",".join(SERVERS),
                    help=f"HTTP servers to measure side by side, the node's ({SERVERS[0]}) first (node)")
    ap.add_argument("--node-server-records", type=int, default=100_000,
                    help="records of each server's batched run (node)")
    ap.add_argument("--node-single-max", type=int, default=12_000,
                    help="requests/s to pre-sign for in the closed-loop runs (node)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_trivial"]:
        trivial_server(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["_node"]:
        node_server(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:  # pragma: no cover - run through scripts/bench node
        os.execv(str(ROOT / "scripts" / "bench"), [str(ROOT / "scripts" / "bench"), "node", *sys.argv[1:]])
