"""An HTTP client for a provledger node (PROTOCOL.md 8), for the CLI and for training code.

    from ledger.client import Client
    from ledger.keys import SigningKey

    with Client("http://127.0.0.1:8000") as node:
        key = SigningKey.load("alice.key")
        rec = node.submit_body(key, "dataset.contribute", {...}, wait=True)
        proof = node.proof(rec["id"])

Errors from the node (JSON ``{"code", "message"}``) are raised as ``PeerError`` carrying the
node's ``code`` and HTTP ``status``; a node that cannot be reached raises ``PeerError`` with
code ``unreachable``.

``202 pending`` is not durable: the node holds the record in memory until its block is
stored, and loses it if it crashes first (docs/protocol.md 8, "Durability"). Sending the
same envelope again is safe (its id is its hash; the node answers with its status), so a
submission with ``wait=True`` that meets a connection error, a 502/503 or a 504 sends the
same envelope again, with exponential backoff (tenacity), until the node answers
``committed`` or ``retry_deadline`` seconds have passed; then the last error is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import tenacity

from .audit import Finding, SourceBlock
from .errors import PeerError
from .keys import SigningKey
from .records import make_record

__all__ = ["RETRY_STATUSES", "Client", "HttpSource"]

log = logging.getLogger("provledger.client")

RETRY_STATUSES = frozenset({502, 503, 504})  # the node is busy, failing to store, or not done yet


def _worth_resending(e: BaseException) -> bool:
    return isinstance(e, PeerError) and (e.code == "unreachable" or e.details.get("status") in RETRY_STATUSES)


class Client:
    def __init__(self, base_url: str, *, timeout: float = 30.0, retry_deadline: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._chain_id: str | None = None
        self.retry_deadline = retry_deadline

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------
    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise PeerError(f"cannot reach node at {self.base_url}: {e}", code="unreachable") from e
        if resp.status_code >= 400:
            try:
                body = resp.json()
                code, message = body.get("code", "http_error"), body.get("message", resp.text)
            except ValueError:
                code, message = "http_error", resp.text[:200]
            raise PeerError(f"{message} ({code}, HTTP {resp.status_code})", code=code, status=resp.status_code)
        try:
            return resp.json()
        except ValueError as e:
            raise PeerError(f"node sent a non-JSON answer to {method} {path}", code="bad_response") from e

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    # -- PROTOCOL.md 8 ------------------------------------------------------------------
    def genesis(self) -> dict[str, Any]:
        return self.get("/v1/genesis")  # type: ignore[no-any-return]

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            from .genesis import parse_genesis

            self._chain_id = parse_genesis(self.genesis()).chain_id
        return self._chain_id

    def _until_committed(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` with ``?wait=true``, sending it again after a connection error or a
        502/503/504 (the node lost it in a crash, cannot store blocks yet, or took longer than
        the wait), with exponential backoff, until ``retry_deadline``."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_worth_resending),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5.0) + tenacity.wait_random(0, 0.1),
            stop=tenacity.stop_after_delay(self.retry_deadline),
            before_sleep=lambda state: log.info(
                "sending %s again (attempt %d): %s", path, state.attempt_number + 1,
                state.outcome.exception() if state.outcome else "?"),
            reraise=True,
        )
        return retrying(self.request, "POST", path, json=body, params={"wait": "true"})

    def submit(self, envelope: dict[str, Any], *, wait: bool = False) -> dict[str, Any]:
        """POST one envelope: ``{"id", "status"}``. With ``wait``, until it is committed
        (the same envelope again after a connection error, 502, 503 or 504)."""
        if wait:
            return self._until_committed("/v1/records", envelope)  # type: ignore[no-any-return]
        return self.request("POST", "/v1/records", json=envelope)  # type: ignore[no-any-return]

    def submit_batch(self, envelopes: list[dict[str, Any]], *, wait: bool = False) -> list[dict[str, Any]]:
        """POST envelopes; per-item results. With ``wait``, resent like ``submit``."""
        body = {"records": envelopes}
        out = self._until_committed("/v1/records/batch", body) if wait else self.request(
            "POST", "/v1/records/batch", json=body)
        return out["results"]  # type: ignore[no-any-return]

    def submit_body(self, key: SigningKey, rtype: str, body: dict[str, Any], *, wait: bool = False,
                    nonce: str | None = None) -> dict[str, Any]:
        """Build, sign and submit a record for this node's chain."""
        return self.submit(make_record(key, self.chain_id, rtype, body, nonce=nonce), wait=wait)

    def record(self, record_id: str) -> dict[str, Any]:
        return self.get(f"/v1/records/{record_id}")  # type: ignore[no-any-return]

    def proof(self, record_id: str) -> dict[str, Any]:
        return self.get(f"/v1/records/{record_id}/proof")  # type: ignore[no-any-return]

    def checkpoint(self, height: int | None = None) -> dict[str, Any]:
        return self.get("/v1/checkpoint" if height is None else f"/v1/checkpoint/{height}")  # type: ignore[no-any-return]

    def block(self, height: int) -> dict[str, Any]:
        return self.get(f"/v1/blocks/{height}")  # type: ignore[no-any-return]

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        return self.get("/v1/proofs/consistency", first=first, second=second)  # type: ignore[no-any-return]

    # -- provledger additions (docs/protocol.md) ---------------------------------------
    def status(self) -> dict[str, Any]:
        return self.get("/v1/status")  # type: ignore[no-any-return]

    def identities(self) -> list[dict[str, Any]]:
        out = self.get("/v1/identities")
        return out["identities"] if isinstance(out, dict) else out  # type: ignore[no-any-return]

    def dataset(self, name: str) -> dict[str, Any]:
        return self.get(f"/v1/datasets/{name}")  # type: ignore[no-any-return]

    def lineage(self, record_id: str) -> dict[str, Any]:
        return self.get(f"/v1/lineage/{record_id}")  # type: ignore[no-any-return]

    def attribution(self, record_id: str, total: int, method: str = "proportional") -> dict[str, Any]:
        return self.get(f"/v1/attribution/{record_id}", total=total, method=method)  # type: ignore[no-any-return]

    def height(self) -> int:
        try:
            return int(self.checkpoint()["header"]["height"])
        except PeerError as e:
            if e.code == "not_found":
                return 0
            raise


class HttpSource:
    """An audit ChainSource over a live node: the genesis, then every block with its
    certificate and records, each checked here exactly as a database file would be."""

    def __init__(self, base_url: str) -> None:
        self.client = Client(base_url)
        self._height = self.client.height()

    def genesis_doc(self) -> Any:
        return self.client.genesis()

    def claimed_chain_id(self) -> str | None:
        return None

    def totals(self) -> tuple[int, int]:
        if self._height == 0:
            return 0, 0
        return self._height, int(self.client.checkpoint(self._height)["header"]["log_size"])

    def blocks(self) -> Iterator[SourceBlock]:
        for h in range(1, self._height + 1):
            b = self.client.block(h)
            yield SourceBlock(h, b.get("header"), b.get("certificate"), [(None, None, env) for env in b.get("records", [])])

    def structure(self) -> Iterator[Finding]:
        return iter(())

    def consistency_proof(self, first: int, second: int) -> list[bytes] | None:
        try:
            doc = self.client.consistency(first, second)
            return [bytes.fromhex(x) for x in doc["path"]]
        except (PeerError, KeyError, ValueError, TypeError):
            return None
