"""The node's process: ``provledger node start`` runs ``serve``, the node's app
(``node.app``) on the node's port, served by granian, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from .app import create_app
from .config import NodeConfig
from .daemon import Node

__all__ = ["serve", "setup_logging"]

log = logging.getLogger("provledger.node")


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on the node's address (to find a busy port before starting)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


def _deprecated_keys(cfg: NodeConfig) -> None:
    """``ingress_workers`` is no longer used (granian parses HTTP on its own thread): a
    config.json that has it is warned about, and it is ignored."""
    if "ingress_workers" in cfg.extra:
        log.warning("config.json: ingress_workers is no longer used and is ignored; remove it")


def serve(home: str | Path, *, host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    """Run the node in this process until SIGTERM / SIGINT, its app served on the node's
    port by granian (HTTP/1.1 parsed by its Rust threads, the app on this process's event
    loop). An incomplete request is closed after ``header_timeout_s``; a malformed one is
    answered ``400 Bad Request`` with an empty body by granian itself (docs/protocol.md 8)."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    setup_logging(log_level)
    node = Node.open(home, host=host, port=port)  # errors surface here, before the server starts
    cfg = node.config
    _deprecated_keys(cfg)
    try:  # the port, before anything starts: a busy port is one line and exit 1
        _listen(cfg.host, cfg.port).close()
    except OSError as e:
        node.store.close()
        log.error("cannot listen on %s:%d: %s", cfg.host, cfg.port, e.strerror or e)
        raise SystemExit(1) from e
    node.warm_verifier = True
    app = create_app(node=node)
    server = Server(
        app, address=cfg.host, port=cfg.port, interface=Interfaces.ASGI, http=HTTPModes.http1,
        websockets=False, backlog=2048, log_enabled=False,
        http1_settings=HTTP1Settings(header_read_timeout=int(cfg.header_timeout_s * 1000)),
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency
        asyncio.run(run())
    else:
        uvloop.run(run())
