"""The load generator's arithmetic: a run's records → counts, percentiles, per second."""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any


def summarize(
    sent: array[float],
    latency: array[float],
    status: array[int],
    lag: array[float],
    elapsed: float,
    cpu_s: float,
) -> dict[str, Any]:
    """Counts by status, per-second counts by status (by send time), latency percentiles
    (ms), the open loop's own lateness and the generator's CPU per request."""
    statuses = status.tolist()
    lats = sorted(latency.tolist())
    by_status = Counter(statuses)
    per_second: dict[int, Counter[int]] = {}
    for t, s in zip(sent.tolist(), statuses, strict=True):
        per_second.setdefault(int(t), Counter())[s] += 1
    n = len(lats)
    return {
        "requests": n,
        "elapsed_s": round(elapsed, 3),
        "rate": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "ok": sum(v for k, v in by_status.items() if 200 <= k < 300),
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "errors": by_status.get(0, 0),
        "latency_ms": {name: round(_pct(lats, q) * 1000, 3) for name, q in PCTS} if n else {},
        "per_second": {str(s): {str(k): v for k, v in c.items()} for s, c in per_second.items()},
        "schedule_lag_ms": _lag(lag.tolist()),
        "loadgen_cpu_s": round(cpu_s, 3),
        "loadgen_cpu_us_per_request": round(cpu_s / n * 1e6, 1) if n else 0.0,
    }


PCTS = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))


def _lag(lags: list[float]) -> dict[str, float]:
    """How late the open loop sent what was due (its own timer and CPU, not the server)."""
    if not lags:
        return {}
    lags.sort()
    return {
        "p50": round(_pct(lags, 0.5) * 1000, 3),
        "p99": round(_pct(lags, 0.99) * 1000, 3),
        "max": round(lags[-1] * 1000, 3),
    }


def _pct(sorted_values: list[float], q: float) -> float:
    i = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[i]
