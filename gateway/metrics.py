"""Prometheus metrics. With several workers, each writes to PROMETHEUS_MULTIPROC_DIR
(set by the parent before they start) and /metrics sums every worker's values."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, status and decision",
            ["route", "status", "decision"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_seconds",
            "8x8 answer time",
            ["product"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_status = Counter(
            "gateway_upstream_answers", "8x8 answers by status", ["product", "status"], registry=r
        )
        self.shaped_seconds = Histogram(
            "gateway_shaped_wait_seconds",
            "Time sends were held for a booked slot",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fallback = Counter(
            "gateway_fallback_decisions",
            "Decisions taken without Redis, by mode",
            ["mode"],
            registry=r,
        )
        self.dropped = Counter(
            "gateway_batch_dropped", "Batch messages dropped, by code", ["code"], registry=r
        )
        self.unconsented = Counter(
            "gateway_unconsented_sends",
            "Template sends forwarded without consent (opt_in = warn)",
            registry=r,
        )
        self.webhooks = Counter(
            "gateway_webhook_events",
            "Webhook events, by kind and effect",
            ["kind", "effect"],
            registry=r,
        )
        # per-request counts gather here and reach prometheus-client once a second (and
        # before every scrape): with several workers each prometheus-client update is an
        # mmap write plus a getpid(), too dear to pay per request
        self._pending_requests: dict[tuple[str, int, str], int] = {}
        self._pending_upstream: dict[tuple[str, int], list[float]] = {}

    def request(self, route: str, status: int, decision: str) -> None:
        """Count one answered request."""
        key = (route, status, decision)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1

    def upstream(self, product: str, status: int, seconds: float) -> None:
        """Count one 8x8 answer and its latency."""
        pending = self._pending_upstream.get((product, status))
        if pending is None:
            self._pending_upstream[(product, status)] = [seconds]
        else:
            pending.append(seconds)

    def flush(self) -> None:
        """Apply what gathered since the last flush to the exported metrics."""
        requests, self._pending_requests = self._pending_requests, {}
        upstream, self._pending_upstream = self._pending_upstream, {}
        for (route, status, decision), n in requests.items():
            self.requests.labels(route, str(status), decision).inc(n)
        for (product, status), latencies in upstream.items():
            self.upstream_status.labels(product, str(status)).inc(len(latencies))
            histogram = self.upstream_seconds.labels(product)
            for seconds in latencies:
                histogram.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
