"""Ingress processes: the node's HTTP port served by several processes.

A record sent on its own costs its node more in HTTP handling, parsing and the Ed25519
check than in everything the chain does with it, and one Python process runs on one core.
So ``provledger node start`` binds the port itself and runs ``ingress_workers`` child
processes (``python -m node.ingress``, default: one per core, at most 4). The node's
process accepts each connection and hands it (SCM_RIGHTS) to the next child in turn:
left to the kernel, one process would take a burst of new connections and leave the
others idle. Each ingress process serves its connections with a small HTTP/1.1 server
(``node.ingress_http``) and

* answers ``POST /v1/records`` with plain query parameters itself, as far as a record can
  be checked without the chain: it reads the body (the same 16 MiB limit), parses and
  checks the envelope (``parse_record`` against the node's chain id) and verifies its
  signature: the one check of that signature on this node (issue 3: "a signature is
  verified once per record per node"). It then sends the record to the node's process,
  which answers idempotent resubmissions, applies the state rules against the pending
  state (``Node.admit``), and, with ``?wait=true``, answers once the record is committed;
* passes every other request to the node's process whole (method, path, headers, body),
  where the node's own ASGI app answers it, and streams the answer back.

An error the ingress process answers itself (bad JSON, form, signature, body too large) is
reported to the node's process, which logs and counts it exactly as if it had found it
(``/metrics``, ``rejected input`` log lines). So a client cannot tell the two apart: the
same requests get the same answers as from a node without ingress processes
(tests/node/test_ingress.py checks this request by request).

Wire format: frames over the child's stdin (node -> ingress) and stdout (ingress -> node),
each ``u32 length of the rest, u32 request number, u8 kind, payload`` (little-endian):

    ingress -> node
      SUBMIT   u8 flags (1 wait, 2 fast JCS), f64 timeout, 64 ASCII id, canonical envelope
      REQUEST  u32 n, n bytes of JSON {method, path, raw_path, query_string, headers,
               client, server, scheme, http_version}, then the body
      GONE     the client of a REQUEST went away
      REFUSED  u16 status, JSON {method, path, code, message}: answered by the ingress
    node -> ingress
      ANSWER   u16 status, JSON body (to a SUBMIT)
      START    u16 status, JSON [[name, value], ...] headers (to a REQUEST)
      BODY     u8 more, bytes (to a REQUEST)
      STOP     (request 0) stop accepting, finish the requests in flight, exit

The node's process trusts its ingress processes as it trusts its verifier processes: they
are its children on private pipes. A child exits at once when the node's process goes away
(end of its stdin, and on Linux the parent-death signal), so a killed node never leaves
its port held by orphans.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ledger.errors import InputError, LedgerError
from ledger.records import Record, parse_record

from .asgi import (
    MAX_REQUEST_BYTES,
    Message,
    Receive,
    Scope,
    Send,
    loads,
    plain_submit_query,
    status_for,
)
from .ingress_http import HttpServer, Request, Responder

__all__ = ["Ingress", "main"]

log = logging.getLogger("provledger.node")

SUBMIT, REQUEST, GONE, REFUSED, ANSWER, START, BODY, STOP = range(1, 9)
_FRAME = struct.Struct("<IIB")  # length of the rest, request number, kind
_SUBMIT = struct.Struct("<Bd")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_WAIT, _FAST = 1, 2
_INTERNAL = orjson.dumps({"code": "internal", "message": "internal error; see the node's log"})

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (record, wait, timeout) -> (status, JSON body) now, or an awaitable of it (``?wait=true``)
SubmitFn = Callable[[Any, bool, float], "tuple[int, bytes] | Awaitable[tuple[int, bytes]]"]
# (method, path, status, code, message): an error an ingress process answered
RefusedFn = Callable[[str, str, int, str, str], None]


# ``python -m node.ingress``, except that SIGINT and SIGTERM are ignored from the first line:
# they are for the node's process (a service manager sends them to every process of the
# node), which stops its ingress processes itself.
_CHILD = ("import signal as s; s.signal(s.SIGINT, s.SIG_IGN); s.signal(s.SIGTERM, s.SIG_IGN); "
          "import sys; sys.argv[0] = 'node.ingress'; from node.ingress import main; main()")


_running: set[asyncio.Future[Any]] = set()  # tasks in flight (the event loop holds only weak references)


def _background(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)


def _frame(n: int, kind: int, *parts: bytes) -> bytes:
    return _FRAME.pack(5 + sum(map(len, parts)), n, kind) + b"".join(parts)


class _Frames:
    """Splits a byte stream into (request number, kind, payload) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        out = []
        at = 0
        while len(buf) - at >= 4:
            (length,) = _U32.unpack_from(buf, at)
            end = at + 4 + length
            if len(buf) < end:
                break
            _, n, kind = _FRAME.unpack_from(buf, at)
            out.append((n, kind, bytes(buf[at + 9:end])))
            at = end
        if at:
            del buf[:at]
        return out


# --- the node's side -------------------------------------------------------------------
class _Child(asyncio.SubprocessProtocol):
    """One ingress process as the node's process sees it."""

    def __init__(self, ingress: Ingress, conns: socket.socket) -> None:
        self.ingress = ingress
        self.conns = conns  # connections are handed over on this socket (SCM_RIGHTS)
        self.frames = _Frames()
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.exited = asyncio.get_running_loop().create_future()
        self.gone: dict[int, asyncio.Event] = {}  # REQUESTs in flight: set when the client went away
        self._writable = asyncio.Event()
        self._writable.set()
        self._out: list[bytes] | None = None  # answers gathered while a read is handled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stdin = self.transport.get_pipe_transport(0)  # type: ignore[union-attr,assignment]

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def send(self, frame: bytes) -> None:
        if self._out is not None:
            self._out.append(frame)  # written with the others at the end of pipe_data_received
        elif self.stdin is not None and not self.stdin.is_closing():
            self.stdin.write(frame)

    async def drain(self) -> None:
        await self._writable.wait()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        self._out = []
        try:
            for n, kind, payload in self.frames.feed(data):
                if kind == SUBMIT:
                    self._submit(n, payload)
                elif kind == REQUEST:
                    self.gone[n] = asyncio.Event()
                    _background(self._request(n, payload))
                elif kind == GONE:
                    event = self.gone.get(n)
                    if event is not None:
                        event.set()
                elif kind == REFUSED:
                    (status,) = _U16.unpack_from(payload)
                    e = orjson.loads(payload[2:])
                    self.ingress.refused(e["method"], e["path"], status, e["code"], e["message"])
        finally:
            out, self._out = self._out, None
            if out:
                self.send(b"".join(out))

    def _submit(self, n: int, payload: bytes) -> None:
        flags, timeout = _SUBMIT.unpack_from(payload)
        at = _SUBMIT.size
        canonical = payload[at + 64:]
        try:
            rec = Record(orjson.loads(canonical), payload[at:at + 64].decode("ascii"), canonical, bool(flags & _FAST))
            answer = self.ingress.submit(rec, bool(flags & _WAIT), timeout)
        except Exception:  # a bug: logged, answered as the app answers one
            log.exception("internal error on POST /v1/records")
            answer = (500, _INTERNAL)
        if isinstance(answer, tuple):
            self.send(_frame(n, ANSWER, _U16.pack(answer[0]), answer[1]))
        else:
            _background(self._answer_later(n, answer))

    async def _answer_later(self, n: int, answer: Awaitable[tuple[int, bytes]]) -> None:
        try:
            status, body = await answer
        except Exception:
            log.exception("internal error on POST /v1/records")
            status, body = 500, _INTERNAL
        self.send(_frame(n, ANSWER, _U16.pack(status), body))

    async def _request(self, n: int, payload: bytes) -> None:
        """Run the node's app on a passed-on request; stream its answer back."""
        (size,) = _U32.unpack_from(payload)
        meta = orjson.loads(payload[4:4 + size])
        body = payload[4 + size:]
        gone = self.gone[n]
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": meta["http_version"], "method": meta["method"], "scheme": meta["scheme"],
            "path": meta["path"], "raw_path": meta["raw_path"].encode("latin-1"), "root_path": "",
            "query_string": meta["query_string"].encode("latin-1"),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["headers"]],
            "client": tuple(meta["client"]) if meta["client"] else None,
            "server": tuple(meta["server"]) if meta["server"] else None,
            "state": {},
        }
        sent_body = False
        started = done = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal started, done
            if done or gone.is_set():
                return
            if message["type"] == "http.response.start":
                started = True
                headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in message.get("headers", [])]
                self.send(_frame(n, START, _U16.pack(message["status"]), orjson.dumps(headers)))
            elif message["type"] == "http.response.body":
                more = bool(message.get("more_body", False))
                done = not more
                self.send(_frame(n, BODY, b"\x01" if more else b"\x00", bytes(message.get("body", b""))))
                await self.drain()

        try:
            await self.ingress.app(scope, receive, send)
        except Exception:
            log.exception("internal error on %s %s", scope["method"], scope["path"])
        finally:
            self.gone.pop(n, None)
            if not started:
                self.send(_frame(n, START, _U16.pack(500), b'[["content-type","application/json"]]'))
                self.send(_frame(n, BODY, b"\x00", _INTERNAL))
            elif not done:
                self.send(_frame(n, BODY, b"\x00", b""))

    def hand_over(self, conn: socket.socket) -> bool:
        try:
            socket.send_fds(self.conns, [b"c"], [conn.fileno()])
        except OSError:
            return False
        return True

    def process_exited(self) -> None:
        for event in self.gone.values():
            event.set()
        self._writable.set()  # nothing more is written to it: no answer may wait on it
        self.conns.close()
        if not self.exited.done():
            self.exited.set_result(None)


class Ingress:
    """The node's ingress processes (see the module docstring), from the node's side."""

    def __init__(self, sock: socket.socket, workers: int, chain_id: str, *, log_level: str = "info") -> None:
        self.sock = sock
        self.workers = workers
        self.chain_id = chain_id
        self.log_level = log_level
        self.children: list[tuple[asyncio.SubprocessTransport, _Child]] = []
        self.app: ASGIApp = None  # type: ignore[assignment]
        self.submit: SubmitFn = None  # type: ignore[assignment]
        self.refused: RefusedFn = None  # type: ignore[assignment]
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._next = 0

    @property
    def pids(self) -> list[int]:
        return [t.get_pid() for t, _ in self.children]

    async def start(self, app: ASGIApp, submit: SubmitFn, refused: RefusedFn) -> None:
        self.app, self.submit, self.refused = app, submit, refused
        for _ in range(self.workers):
            self.children.append(await self._spawn())
        self._watch = asyncio.ensure_future(self._replace_exited())
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)
        host, port = self.sock.getsockname()[:2]
        log.info("%d ingress processes serve http://%s:%d (pids %s)", self.workers, host, port,
                 ", ".join(map(str, self.pids)))

    async def _spawn(self) -> tuple[asyncio.SubprocessTransport, _Child]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        try:
            transport, child = await asyncio.get_running_loop().subprocess_exec(
                lambda: _Child(self, ours),
                sys.executable, "-c", _CHILD, "--conns", str(theirs.fileno()), "--chain", self.chain_id,
                "--parent", str(os.getpid()), "--log-level", self.log_level,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
                pass_fds=(theirs.fileno(),), start_new_session=True,  # Ctrl-C in the terminal is for the node
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return transport, child

    def _accept(self) -> None:
        """Accept what is waiting on the port and hand each connection to the next ingress
        process in turn: the kernel would let one process take a burst of new connections,
        leaving the others idle."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors, say: the connection waits
                log.warning("cannot accept a connection: %s", e)
                return
            with conn:
                for _ in range(len(self.children)):
                    self._next = (self._next + 1) % len(self.children)
                    _, child = self.children[self._next]
                    if not child.exited.done() and child.hand_over(conn):
                        break

    async def _replace_exited(self) -> None:
        """An ingress process that exits while the node runs is replaced (and logged),
        unless they keep exiting: more than 5 in a minute leaves the port to the others."""
        exits: list[float] = []
        while not self._stopping and self.children:
            await asyncio.wait([c.exited for _, c in self.children], return_when=asyncio.FIRST_COMPLETED)
            if self._stopping:
                return
            for k, (t, c) in reversed(list(enumerate(self.children))):
                if not c.exited.done():
                    continue
                log.error("ingress process %d exited with %s; starting another", t.get_pid(), t.get_returncode())
                t.close()
                now = time.monotonic()
                exits = [x for x in exits if now - x < 60] + [now]
                if len(exits) > 5:
                    log.error("ingress processes keep exiting; not starting more (%d left)", len(self.children) - 1)
                    del self.children[k]
                    continue
                await asyncio.sleep(0.5)
                self.children[k] = await self._spawn()

    async def stop(self, timeout: float = 15.0) -> None:
        """Each child stops accepting, finishes its requests in flight (the node's process
        still answers them) and exits; one that takes longer than ``timeout`` is killed."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        if self.app is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        for _, child in self.children:
            child.send(_frame(0, STOP))
        try:
            await asyncio.wait_for(asyncio.gather(*(c.exited for _, c in self.children)), timeout)
        except TimeoutError:
            log.warning("ingress processes did not stop within %g s; killing them", timeout)
            for t, _ in self.children:
                if t.get_returncode() is None:
                    t.kill()
            await asyncio.gather(*(c.exited for _, c in self.children))
        for t, _ in self.children:
            t.close()
        self.children.clear()
        self.sock.close()


# --- the ingress process -----------------------------------------------------------------
class _Node(asyncio.Protocol):
    """The pipe from the node's process, as an ingress process sees it."""

    def __init__(self, out: asyncio.WriteTransport) -> None:
        self._out = out
        self._pending: list[bytes] = []
        self.frames = _Frames()
        self.answers: dict[int, Responder] = {}  # SUBMITs awaiting the node's answer, by number
        self.streams: dict[int, tuple[Responder, asyncio.Future[None]]] = {}  # REQUESTs passed on, by number
        self.on_stop: Callable[[], None] = lambda: None

    def data_received(self, data: bytes) -> None:
        for n, kind, payload in self.frames.feed(data):
            if kind == ANSWER:
                res = self.answers.pop(n, None)
                if res is not None:
                    res.answer(_U16.unpack_from(payload)[0], payload[2:])
            elif kind == START:
                stream = self.streams.get(n)
                if stream is not None:
                    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in orjson.loads(payload[2:])]
                    stream[0].start(_U16.unpack_from(payload)[0], headers)
            elif kind == BODY:
                stream = self.streams.get(n)
                if stream is not None:
                    more = payload[:1] == b"\x01"
                    stream[0].body(payload[1:], more)
                    if not more:
                        del self.streams[n]
                        if not stream[1].done():
                            stream[1].set_result(None)
            elif kind == STOP:
                self.on_stop()

    def connection_lost(self, exc: Exception | None) -> None:
        os._exit(0)  # the node's process is gone: nobody to answer for

    def write(self, frame: bytes) -> None:
        """Queue a frame for the node; the frames of one turn of the event loop go in one
        write (one system call, and one wake-up of the node's process, for several)."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(frame)

    def _flush(self) -> None:
        frames, self._pending = self._pending, []
        self._out.write(b"".join(frames))


class _Handler:
    """What an ingress process does with a request (see the module docstring)."""

    def __init__(self, chain_id: str, node: _Node) -> None:
        self.chain_id = chain_id
        self.node = node
        self._numbers = itertools.count(1)

    def __call__(self, req: Request, res: Responder) -> Awaitable[None] | None:
        if req.method == "POST" and req.path == "/v1/records":
            query = plain_submit_query(req.query)
            if query is not None:
                self._submit(req, res, *query)
                return None
        return self._pass_on(req, res)

    def _refused(self, method: str, path: str, status: int, code: str, message: str) -> None:
        self.node.write(_frame(0, REFUSED, _U16.pack(status), orjson.dumps(
            {"method": method, "path": path, "code": code, "message": message})))

    def _too_large(self, req: Request, res: Responder) -> None:
        e = InputError(f"request body exceeds {MAX_REQUEST_BYTES} bytes", code="request_too_large")
        self._refused(req.method, req.path, 413, e.code, e.message)
        res.answer(413, orjson.dumps(e.to_dict()))

    def _submit(self, req: Request, res: Responder, wait: bool, timeout: float) -> None:
        """Parse and verify now; the node's ANSWER frame answers the client (no task)."""
        if req.too_large:
            self._too_large(req, res)
            return
        try:
            rec = parse_record(loads(req.body), chain=self.chain_id)
            rec.verify_signature()
        except LedgerError as e:
            self._refused("POST", "/v1/records", status_for(e), e.code, e.message)
            res.answer(status_for(e), orjson.dumps(e.to_dict()))
            return
        except Exception:
            self._refused("POST", "/v1/records", 500, "internal", "internal error")
            raise  # logged and answered 500 by the server
        n = next(self._numbers)
        self.node.answers[n] = res
        res.on_gone = lambda: self.node.answers.pop(n, None)  # type: ignore[assignment,return-value]
        self.node.write(_frame(n, SUBMIT, _SUBMIT.pack((_WAIT if wait else 0) | (_FAST if rec.fast else 0), timeout),
                               rec.id.encode("ascii"), rec.canonical))

    async def _pass_on(self, req: Request, res: Responder) -> None:
        if req.too_large:
            self._too_large(req, res)
            return
        meta = orjson.dumps({
            "method": req.method, "path": req.path, "raw_path": req.raw_path.partition(b"?")[0].decode("latin-1"),
            "query_string": req.query.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.headers],
            "client": req.client, "server": req.server, "scheme": "http", "http_version": req.http_version,
        })
        n = next(self._numbers)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.node.streams[n] = (res, done)

        def gone() -> None:
            if self.node.streams.pop(n, None) is not None:
                self.node.write(_frame(n, GONE))
            if not done.done():
                done.set_result(None)

        res.on_gone = gone
        self.node.write(_frame(n, REQUEST, _U32.pack(len(meta)), meta, req.body))
        await done  # the node's answer has been written, or the client has gone


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the node's process dies (and exit now if it has)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    from .daemon import setup_logging

    p = argparse.ArgumentParser(prog="python -m node.ingress", description="An ingress process of a provledger node.")
    p.add_argument("--conns", type=int, required=True, help="the socket the node hands connections over on")
    p.add_argument("--chain", required=True, help="the chain id records must carry")
    p.add_argument("--parent", type=int, required=True, help="the node's process id")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    _die_with_parent(args.parent)
    # SIGINT / SIGTERM are for the node's process (see _CHILD): this one stops when told to
    # (STOP), or with the node.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # stdout is the pipe to the node: keep it for frames only, and let stray prints go to stderr.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    setup_logging(args.log_level)
    conns = socket.socket(fileno=args.conns)
    conns.setblocking(False)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(out_fd, "wb", buffering=0))
        node = _Node(out)  # type: ignore[arg-type]
        await loop.connect_read_pipe(lambda: node, sys.stdin.buffer)
        server = HttpServer(_Handler(args.chain, node))
        stopped = loop.create_future()

        def take() -> None:  # connections handed over by the node's process
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(conns, 16, 64)
                except (BlockingIOError, InterruptedError):
                    return
                for fd in fds:
                    server.run(loop.connect_accepted_socket(server.protocol, socket.socket(fileno=fd)))

        def stop() -> None:
            loop.remove_reader(conns.fileno())
            if not stopped.done():
                stopped.set_result(None)

        node.on_stop = stop
        loop.add_reader(conns.fileno(), take)
        await stopped
        await server.stop()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    os._exit(0)


if __name__ == "__main__":
    main()
