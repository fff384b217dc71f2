"""The HTTP server on a real node's port (granian, ``node.serve``), over raw sockets:
the cases a hand-written server got wrong (pipelining, ``Connection: close``, percent-encoded
paths, ``Expect: 100-continue``, chunked bodies with trailers, ``Allow``, clients that stop
halfway through their headers, malformed requests)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from procs import PARTICIPANT_ROLES, NodeProcess, init_home, start_node_process

from ledger.keys import SigningKey
from ledger.records import make_record

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 1.0  # config.json ``header_timeout_s`` of the node under test
GENESIS = b"GET /v1/genesis HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, str, SigningKey]]:
    home = tmp_path_factory.mktemp("http") / "net"
    init_home(home, "--participant-key", f"{home / 'alice.key'}={PARTICIPANT_ROLES}")
    cfg = json.loads((home / "config.json").read_text())
    cfg["header_timeout_s"] = HEADER_TIMEOUT_S
    (home / "config.json").write_text(json.dumps(cfg))
    proc = start_node_process(home)
    try:
        chain = httpx.get(proc.url + "/v1/status").json()["chain_id"]
        yield proc, chain, SigningKey.load(home / "alice.key")
    finally:
        proc.terminate()


def _dataset(key: SigningKey, chain: str, name: str) -> dict[str, Any]:
    body = {"dataset": name, "version": "1", "content_hash": "ab" * 32, "size_bytes": 100, "items": 1,
            "license": "CC-BY-4.0", "modality": "image", "derived_from": [], "privacy_budget": None}
    return make_record(key, chain, "dataset.contribute", body)


def _talk(port: int, data: bytes, deadline_s: float = 60.0) -> tuple[bytes, float]:
    """Send ``data`` in one write; read until the server closes (or the deadline). A server
    that answers "at once" does so well within half the deadline, even on a loaded machine."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(deadline_s)
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out, time.monotonic() - started


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP/1.1 answers in ``raw`` (Content-Length bodies): status, headers, body."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, raw[:200]
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        raw = rest[n:]
    return out


def _one_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head = _answers(buf.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")[0][1]
        n = int(head["content-length"])
        while len(buf.partition(b"\r\n\r\n")[2]) < n:
            buf += s.recv(65536)
    return _answers(buf)[0]


def test_pipelined_requests_then_a_malformed_one_get_every_answer(node: Any) -> None:
    proc, _, _ = node
    raw, _ = _talk(proc.port, GENESIS + GENESIS + b"NOT HTTP AT ALL\r\n\r\n")
    answers = _answers(raw)
    assert [a[0] for a in answers] == [200, 200, 400], raw[:300]
    assert orjson.loads(answers[0][2]) == orjson.loads(answers[1][2])
    assert "v" in orjson.loads(answers[0][2])
    assert answers[2][1].get("connection") == "close"


def test_connection_close_then_another_request_in_one_write(node: Any) -> None:
    proc, _, _ = node
    raw, _ = _talk(proc.port, GENESIS.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + GENESIS)
    answers = _answers(raw)
    assert [a[0] for a in answers] == [200], raw[:300]  # answered, then closed: the second is not read


def test_percent_encoded_paths_are_decoded(node: Any) -> None:
    proc, chain, key = node
    status, _, body = _one_request(proc.port, b"GET /v1/gen%65sis HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200 and "validators" in orjson.loads(body)
    r = httpx.post(proc.url + "/v1/records?wait=true&timeout=60", content=orjson.dumps(_dataset(key, chain, "chest xray")),
                   timeout=90)
    assert r.status_code == 200, r.text
    status, _, body = _one_request(proc.port, b"GET /v1/datasets/chest%20xray HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200, body
    assert orjson.loads(body)["name"] == "chest xray"


def test_expect_continue_with_a_huge_body_is_refused_at_once(node: Any) -> None:
    proc, _, _ = node
    raw, took = _talk(proc.port, b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 20000000\r\nExpect: 100-continue\r\n\r\n")
    answers = [a for a in _answers(raw) if a[0] != 100]
    assert answers and answers[0][0] == 413, raw[:300]
    assert orjson.loads(answers[0][2])["code"] == "request_too_large"
    assert took < 30, f"the 413 took {took:.1f} s"


def test_chunked_body_over_64_kib_with_a_trailer_is_accepted(node: Any) -> None:
    proc, chain, key = node
    body = orjson.dumps({"records": [_dataset(key, chain, f"chunked-{i}") for i in range(200)]})
    assert len(body) > 64 * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50_000]), body[i:i + 50_000])
                      for i in range(0, len(body), 50_000))
    status, _, answer = _one_request(
        proc.port, b"POST /v1/records/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nTrailer: X-Check\r\n\r\n" + chunks + b"0\r\nX-Check: 1\r\n\r\n")
    assert status == 200, answer[:300]
    results = orjson.loads(answer)["results"]
    assert len(results) == 200 and all(r["status"] == "pending" for r in results), results[:3]


def test_405_names_the_allowed_methods(node: Any) -> None:
    proc, _, _ = node
    status, headers, body = _one_request(proc.port, b"DELETE /v1/genesis HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 405 and orjson.loads(body)["code"] == "method_not_allowed"
    assert headers.get("allow") == "GET"


def test_a_client_that_stops_in_its_headers_is_closed(node: Any) -> None:
    proc, _, _ = node
    raw, took = _talk(proc.port, b"GET /v1/genesis HTTP/1.1\r\nHost: t\r\nX-Half")
    assert took < 30, "the half-sent request was held open"
    assert took >= HEADER_TIMEOUT_S * 0.5
    assert raw == b"" or _answers(raw)[0][0] in (400, 408), raw[:200]


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/genesis HTTP/1.1\r\nHost t\r\n\r\n",  # a header without a colon
    b"\x00\x01\x02 garbage\r\n\r\n",
    b"GET /v1/genesis HTTP/9.9\r\nHost: t\r\n\r\n",
])
def test_a_malformed_request_gets_400_and_the_connection_is_closed(node: Any, request_bytes: bytes) -> None:
    proc, _, _ = node
    raw, took = _talk(proc.port, request_bytes)
    answers = _answers(raw)
    # granian answers a request it cannot parse itself: 400, an empty body, connection closed
    # (docs/protocol.md 8); the app never sees it.
    assert [a[0] for a in answers] == [400], raw[:300]
    assert answers[0][1].get("connection") == "close" and answers[0][2] == b""
    assert took < 30


def test_header_timeout_is_checked_at_start(tmp_path: Path) -> None:
    home = init_home(tmp_path / "net")
    cfg = json.loads((home / "config.json").read_text())
    cfg["header_timeout_s"] = 0
    (home / "config.json").write_text(json.dumps(cfg))
    proc = NodeProcess(home)
    assert proc.wait() == 2  # a bad config.json value: one line naming the key (node.config)
    assert "header_timeout_s" in proc.log() and "Traceback" not in proc.log()

