"""Prometheus metrics. With several workers, each writes to PROMETHEUS_MULTIPROC_DIR
(set by the parent before they start) and /metrics sums every worker's values.

Label sets are bounded by the config: routes are the operation names, subaccounts the
configured ones (any other is "other"), buckets the configured ones.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REDIS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
OTHER = "other"  # the label of a subaccount the config does not name


def _version() -> str:
    try:
        return metadata.version("gateway")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "unknown"


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
        self.request_seconds = Histogram(
            "gateway_request_seconds",
            "The gateway's own answer time (8x8's and shaping waits included), by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "gateway_decisions",
            "Outcomes of proxied requests (forwarded, or the refusing rule), by configured "
            "subaccount",
            ["outcome", "subaccount"],
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
        self.shadow_refusals = Counter(
            "gateway_shadow_refusals",
            "Refusals a rule in limits.shadow would have made (the send went), by rule",
            ["rule"],
            registry=r,
        )
        self.late_rebooks = Counter(
            "gateway_late_rebooks",
            "Fresh slots booked for sends this process came round to late (pacing), by outcome",
            ["outcome"],
            registry=r,
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
        self.redis_seconds = Histogram(
            "gateway_redis_seconds",
            "Redis call time, by operation",
            ["op"],
            buckets=_REDIS_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors",
            "Redis calls that failed or timed out, by operation",
            ["op"],
            registry=r,
        )
        self.redis_healthy = Gauge(
            "gateway_redis_healthy",
            "1 while this worker decides on Redis, 0 while it falls back (no Redis: absent)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.breaker_open = Gauge(
            "gateway_breaker_open",
            "1 while a product's circuit to 8x8 is open",
            ["product"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.bucket_remaining = Gauge(
            "gateway_bucket_remaining",
            "Requests a configured capacity bucket would take at once now",
            ["bucket", "id"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.bucket_burst = Gauge(
            "gateway_bucket_burst",
            "A configured capacity bucket's burst (its size)",
            ["bucket", "id"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.max_wait_seconds = Gauge(
            "gateway_max_wait_seconds",
            "limits.max_wait_ms in force, in seconds (for alerts on shaping waits)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "gateway_reloads",
            "SIGHUP reloads, by outcome (applied or refused), per worker",
            ["outcome"],
            registry=r,
        )
        self.build_info = Gauge(
            "gateway_build_info",
            "The running gateway's version",
            ["version", "python"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.build_info.labels(_version(), platform.python_version()).set(1)
        for outcome in ("applied", "refused"):
            self.reloads.labels(outcome)  # 0 from the start, so increase() sees the first
        # per-request counts gather here and reach prometheus-client once a second (and
        # before every scrape): with several workers each prometheus-client update is an
        # mmap write plus a getpid(), too dear to pay per request
        self._pending_requests: dict[tuple[str, int, str], int] = {}
        self._pending_seconds: dict[str, list[float]] = {}
        self._pending_decisions: dict[tuple[str, str], int] = {}
        self._pending_upstream: dict[tuple[str, int], list[float]] = {}
        self._pending_redis: dict[tuple[str, bool], list[float]] = {}

    def request(self, route: str, status: int, decision: str, seconds: float = 0.0) -> None:
        """Count one answered request and its time."""
        key = (route, status, decision)
        self._pending_requests[key] = self._pending_requests.get(key, 0) + 1
        pending = self._pending_seconds.get(route)
        if pending is None:
            self._pending_seconds[route] = [seconds]
        else:
            pending.append(seconds)

    def decision(self, outcome: str, subaccount: str) -> None:
        """Count one proxied request's outcome; `subaccount` already bounded (or OTHER)."""
        key = (outcome, subaccount)
        self._pending_decisions[key] = self._pending_decisions.get(key, 0) + 1

    def rebooked(self, outcome: str) -> None:
        """A late send's fresh slot (gateway/policy/pacing.py): "booked" or "refused"."""
        self.late_rebooks.labels(outcome).inc()

    def upstream(self, product: str, status: int, seconds: float) -> None:
        """Count one 8x8 answer and its latency."""
        pending = self._pending_upstream.get((product, status))
        if pending is None:
            self._pending_upstream[(product, status)] = [seconds]
        else:
            pending.append(seconds)

    def redis_call(self, op: str, seconds: float, ok: bool) -> None:
        """Count one Redis call, its time and whether it failed."""
        pending = self._pending_redis.get((op, ok))
        if pending is None:
            self._pending_redis[(op, ok)] = [seconds]
        else:
            pending.append(seconds)

    def flush(self) -> None:
        """Apply what gathered since the last flush to the exported metrics."""
        requests, self._pending_requests = self._pending_requests, {}
        seconds, self._pending_seconds = self._pending_seconds, {}
        decisions, self._pending_decisions = self._pending_decisions, {}
        upstream, self._pending_upstream = self._pending_upstream, {}
        redis, self._pending_redis = self._pending_redis, {}
        for (route, status, decision), n in requests.items():
            self.requests.labels(route, str(status), decision).inc(n)
        for route, latencies in seconds.items():
            _observe(self.request_seconds.labels(route), latencies)
        for (outcome, subaccount), n in decisions.items():
            self.decisions.labels(outcome, subaccount).inc(n)
        for (product, status), latencies in upstream.items():
            self.upstream_status.labels(product, str(status)).inc(len(latencies))
            _observe(self.upstream_seconds.labels(product), latencies)
        for (op, ok), latencies in redis.items():
            _observe(self.redis_seconds.labels(op), latencies)
            if not ok:
                self.redis_errors.labels(op).inc(len(latencies))

    def render(self) -> tuple[bytes, str]:
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _observe(histogram: Histogram, values: list[float]) -> None:
    for value in values:
        histogram.observe(value)
