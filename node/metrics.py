"""Prometheus metrics of one node, in a registry of its own (so two apps in one process,
as in the tests, never share counters). Served at ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "NodeMetrics"]


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.height = Gauge("provledger_height", "Height of the latest committed block", registry=r)
        self.log_size = Gauge("provledger_log_size", "Records in the committed log", registry=r)
        self.records = Counter("provledger_records_committed", "Records committed by this process", registry=r)
        self.blocks = Counter("provledger_blocks_committed", "Blocks committed by this process", registry=r)
        self.mempool = Gauge("provledger_mempool_size", "Records waiting for a block", registry=r)
        self.commit_seconds = Histogram(
            "provledger_commit_seconds",
            "Time to build, certify and store one block",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.wait_seconds = Histogram(
            "provledger_submit_to_commit_seconds",
            "Time from admission to commit of the oldest record of each block",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.storage_available = Gauge(
            "provledger_storage_available", "1 while blocks can be stored, 0 after a failed commit until one succeeds",
            registry=r,
        )
        self.storage_available.set(1)
        self.commit_failures = Counter(
            "provledger_commit_failures", "Block commits that failed (each is retried with backoff)", registry=r
        )
        self.rejected = Counter(
            "provledger_rejected_inputs", "Inputs refused, by error code", ["code"], registry=r
        )
        self.http = Counter(
            "provledger_http_requests", "HTTP requests answered, by method and status", ["method", "status"], registry=r
        )

        self._answered: dict[tuple[str, int], Any] = {}

    def answered(self, method: str, status: int) -> None:
        """Count an HTTP answer (``http``, by method and status; the labelled counters are
        kept, since resolving labels costs more than the count)."""
        counter = self._answered.get((method, status))
        if counter is None:
            counter = self._answered[(method, status)] = self.http.labels(method, str(status))
        counter.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
