"""The HTTP/1.1 server of the ingress processes (node.ingress_http), over real sockets:
keep-alive and pipelining in order, Expect: 100-continue, chunked bodies both ways, HEAD,
the body limit, malformed requests, Connection: close and HTTP/1.0, and a client that
leaves before its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

import node.ingress_http as ih
from node.ingress_http import HttpServer, Request, Responder


def _echo(req: Request, res: Responder) -> Awaitable[None] | None:
    """Answers now, or (path /slow) after a pause, or (path /stream) in three parts."""
    doc = {"method": req.method, "path": req.path, "query": req.query.decode(), "body": req.body.decode(),
           "too_large": req.too_large, "headers": {k.decode(): v.decode() for k, v in req.headers}}
    if req.path == "/slow":
        async def later() -> None:
            await asyncio.sleep(0.2)
            res.answer(200, orjson.dumps(doc))
        return later()
    if req.path == "/stream":
        res.start(200, [(b"content-type", b"text/plain")])
        res.body(b"one,", True)
        res.body(b"two,", True)
        res.body(b"three", False)
        return None
    res.answer(200, orjson.dumps(doc))
    return None


def _serve(handler: Callable[[Request, Responder], Any], client: Callable[[int], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        server = HttpServer(handler)
        listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            return await client(port)
        finally:
            await server.stop(timeout=2)
            listener.close()

    return asyncio.run(main())


async def _exchange(port: int, data: bytes, *, until_closed: bool = False, answers: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            got += chunk
            if not until_closed and got.count(b"HTTP/1.1 ") >= answers and _complete(got, answers):
                break
    finally:
        writer.close()
    return got


def _complete(data: bytes, answers: int) -> bool:
    """``answers`` responses with Content-Length bodies are all in ``data``."""
    at = 0
    for _ in range(answers):
        head_end = data.find(b"\r\n\r\n", at)
        if head_end < 0:
            return False
        head = data[at:head_end].lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) if b"content-length: " in head else 0
        at = head_end + 4 + length
        if at > len(data):
            return False
    return True


def _bodies(data: bytes) -> list[dict[str, Any]]:
    out = []
    for part in data.split(b"HTTP/1.1 ")[1:]:
        out.append(orjson.loads(part.split(b"\r\n\r\n", 1)[1]))
    return out


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    async def client(port: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            first = await http.post("/a?x=1", content=b"hello")
            second = await http.get("/b")
        assert (first.json()["path"], first.json()["query"], first.json()["body"]) == ("/a", "x=1", "hello")
        assert second.json()["method"] == "GET"
        # Three requests in one write, the first one slow: the answers keep the order.
        got = await _exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                                    b"GET /quick1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                    b"POST /quick2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", answers=3)
        assert [b["path"] for b in _bodies(got)] == ["/slow", "/quick1", "/quick2"]

    _serve(_echo, client)


def test_expect_continue_and_chunked_request_body() -> None:
    async def client(port: int) -> None:
        got = await _exchange(port, b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc")
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
        assert orjson.loads(got.split(b"\r\n\r\n", 2)[2])["body"] == "abc"
        got = await _exchange(port, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        assert _bodies(got)[0]["body"] == "abcdefg"

    _serve(_echo, client)


def test_streamed_answer_is_chunked_and_head_has_no_body() -> None:
    async def client(port: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.get("/stream")
            assert r.text == "one,two,three" and r.headers["transfer-encoding"] == "chunked"
            assert "date" in r.headers
        got = await _exchange(port, b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
                              answers=2)
        head, rest = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: " in head
        assert rest.startswith(b"HTTP/1.1 200 OK")  # no body after the HEAD answer's headers
        assert orjson.loads(rest.split(b"\r\n\r\n", 1)[1])["path"] == "/after"

    _serve(_echo, client)


def test_body_over_the_limit_is_flagged_after_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ih, "MAX_REQUEST_BYTES", 10)

    async def client(port: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            by_length = (await http.post("/big", content=b"x" * 11)).json()
            assert by_length["too_large"] and by_length["body"] == ""

            async def chunks() -> Any:
                for _ in range(3):
                    yield b"x" * 5

            by_count = (await http.post("/big", content=chunks())).json()
            assert by_count["too_large"] and by_count["body"] == ""
            assert not (await http.post("/ok", content=b"x" * 10)).json()["too_large"]

    _serve(_echo, client)


def test_malformed_request_gets_json_400_and_is_closed() -> None:
    async def client(port: int) -> None:
        got = await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n", until_closed=True)
        assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert orjson.loads(got.split(b"\r\n\r\n", 1)[1])["code"] == "bad_request"

    _serve(_echo, client)


def test_connection_close_and_http_1_0_end_the_connection() -> None:
    async def client(port: int) -> None:
        for request in (b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"GET /x HTTP/1.0\r\n\r\n"):
            got = await _exchange(port, request, until_closed=True)  # returns once the server closes
            assert got.count(b"HTTP/1.1 200 OK") == 1 and b"connection: close" in got

    _serve(_echo, client)


def test_a_client_that_leaves_is_reported() -> None:
    left = asyncio.Event()

    def handler(req: Request, res: Responder) -> Awaitable[None]:
        res.on_gone = left.set

        async def never() -> None:
            await asyncio.sleep(10)
        return never()

    async def client(port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.wait_for(left.wait(), 5)

    _serve(handler, client)


def test_endless_headers_are_a_malformed_request() -> None:
    async def client(port: int) -> None:
        def pad(n: int) -> bytes:  # n headers of about 1 KB
            return b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 1000) for i in range(n))

        got = await _exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\n" + pad(70) + b"\r\n", until_closed=True)
        assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert "exceed 64 KiB" in orjson.loads(got.split(b"\r\n\r\n", 1)[1])["message"]
        ok = await _exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\n" + pad(30) + b"\r\n")
        assert _bodies(ok)[0]["path"] == "/x"

    _serve(_echo, client)
