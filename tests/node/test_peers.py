"""node.peers: queues, batching, down/up detection and back-off, against a real HTTP server
(uvicorn on 127.0.0.1) standing in for another validator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import uvicorn
from procs import bound_socket, until_async

from node import peers as peers_module
from node.peers import MAX_QUEUED, Peer, PeerConnection, PeerError, Peers


class Recorder:
    """A bare ASGI app: keeps every (path, body) and answers ``status`` (settable)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []
        self.status = 202
        self.close = False

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        self.got.append((scope["path"], orjson.loads(body)))
        headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
        if self.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


async def serve(app: Recorder, sock: socket.socket | None = None) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """uvicorn on ``sock`` (bound already: no other process can take its port), or on a
    fresh one; the server, its task and its port once it is up."""
    sock = sock or bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_async("the server is up", lambda: server.started)
    return server, task, sock.getsockname()[1]


class Msg:
    def __init__(self, n: int) -> None:
        self.n = n

    def to_dict(self) -> dict[str, int]:
        return {"n": self.n}


def test_messages_and_records_reach_a_live_peer() -> None:
    async def main() -> None:
        app = Recorder()
        server, task, port = await serve(app)
        peers = Peers({"k1": f"http://127.0.0.1:{port}"}, names={"k1": "node-1"})
        await peers.start()
        try:
            peers.broadcast(Msg(1))
            await until_async("one message", lambda: len(app.got) >= 1)
            # Several queued while nothing is in flight go as one batch or one by one, in order.
            for n in range(2, 7):
                peers.broadcast(Msg(n))
            peers.forward_record(b'{"r":1}')
            peers.forward_record(b'{"r":2}')
            await until_async("all sent", lambda: peers.peers[0].sent >= 8)
            seen: list[int] = []
            records: list[Any] = []
            for path, body in app.got:
                if path == "/v1/peer/message":
                    seen += [m["n"] for m in body["messages"]] if "messages" in body else [body["n"]]
                else:
                    assert path == "/v1/peer/records"
                    records += body["records"]
            assert seen == [1, 2, 3, 4, 5, 6]
            assert records == [{"r": 1}, {"r": 2}]
            st = peers.status()[0]
            assert st["up"] is True and st["name"] == "node-1" and st["dropped"] == 0 and st["queued"] == 0
        finally:
            await peers.stop()
            server.should_exit = True
            await task

    asyncio.run(main())


def test_a_dead_peer_is_marked_down_and_found_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers_module, "PROBE_S", 0.2)
    monkeypatch.setattr(peers_module, "BACKOFF_S", (1.0,))

    async def main() -> None:
        held = bound_socket()  # the peer's port: nothing listens on it yet
        port = held.getsockname()[1]
        peers = Peers({"k1": f"http://127.0.0.1:{port}"})
        p = peers.peers[0]
        await peers.start()
        try:
            peers.broadcast(Msg(1))
            await until_async("marked down", lambda: p.up is False)
            assert p.last_error and p.failures >= 1
            # During the back-off what is queued for it is dropped, not kept without end.
            assert not p._accepting()
            before = p.dropped
            peers.broadcast(Msg(2))
            assert p.dropped == before + 1 and not p.messages
            app = Recorder()
            server, task, _ = await serve(app, held)
            try:
                # The empty probe (or a re-send) finds it again.
                await until_async("up again", lambda: p.up is True)
                assert p.failures == 0
                assert app.got and all(path == "/v1/peer/message" for path, _ in app.got)
            finally:
                server.should_exit = True
                await task
        finally:
            await peers.stop()

    asyncio.run(main())


def test_errors_of_the_peer() -> None:
    async def main() -> None:
        app = Recorder()
        server, task, port = await serve(app)
        peers = Peers({"k1": f"http://127.0.0.1:{port}"})
        p = peers.peers[0]
        conn = PeerConnection(p.url)
        try:
            app.status = 422  # refused, but the peer is there
            assert await peers._post(p, conn, "/v1/peer/message", b'{"n":1}', 1)
            assert p.up is True and "HTTP 422" in p.last_error
            app.status = 503  # failing: down, with a back-off
            assert not await peers._post(p, conn, "/v1/peer/message", b'{"n":2}', 1)
            assert p.up is False and p.last_error == "HTTP 503" and not p._accepting()
            # A peer that closes the connection after answering: the next request reconnects.
            app.status, app.close = 202, True
            assert (await conn.post("/v1/peer/message", b'{"n":3}'))[0] == 202
            assert (await conn.post("/v1/peer/message", b'{"n":4}'))[0] == 202
            assert [b for _, b in app.got][-2:] == [{"n": 3}, {"n": 4}]
        finally:
            conn.close()
            server.should_exit = True
            await task
        with pytest.raises(PeerError):
            await PeerConnection(f"http://127.0.0.1:{port}").post("/v1/peer/message", b"{}")

    asyncio.run(main())


def test_queues_are_bounded() -> None:
    async def main() -> None:
        p = Peer("k", "http://127.0.0.1:9")
        for i in range(MAX_QUEUED + 3):
            p.push_message(b"%d" % i)
        assert len(p.messages) == MAX_QUEUED and p.dropped == 3
        assert p.messages[0] == b"3"  # the oldest were dropped

    asyncio.run(main())


def test_records_beyond_the_bound_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers_module, "MAX_QUEUED_RECORDS", 3)

    async def main() -> None:
        p = Peer("k", "http://127.0.0.1:9")
        for i in range(5):
            p.push_record(b"%d" % i)
        assert list(p.records) == [b"0", b"1", b"2"] and p.dropped == 2  # the newest were dropped
        assert p.status()["queued"] == 3

    asyncio.run(main())


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:8000", "http://"])
def test_a_peer_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        PeerConnection(url)
