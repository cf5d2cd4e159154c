"""The soak run's memory verdict (bench/soak.py `memory_verdict`): a heap that grows after
the warm-up fails it, RSS that climbs towards the warm-up's peak (allocator slack) does not,
RSS past that peak does."""

from __future__ import annotations

from typing import Any

from bench.soak import WARMUP_S, memory_verdict

T0 = 1_800_000_000.0
DURATION = 600.0


def run_of(rss_mb: Any, peak_mb: Any) -> dict[str, Any]:
    """Two workers alike: RSS every 10 s from `rss_mb(t)`, VmHWM from `peak_mb(t)`."""
    times = [float(t) for t in range(0, int(DURATION), 10)]
    kb = lambda mb: int(mb * 1024)  # noqa: E731
    return {
        "rss": [(t, [kb(rss_mb(t))] * 2) for t in times],
        "hwm": [(t, [kb(peak_mb(t))] * 2) for t in times],
        "started_at": T0,
    }


def probes(heap_mb: Any) -> list[list[dict[str, Any]]]:
    one = [{"time": T0 + t, "heap_kb": int(heap_mb(t) * 1024), "arenas": 39}
           for t in range(10, int(DURATION) + 1, 10)]  # fmt: skip
    return [one, one]


def climbing(t: float) -> float:
    """56 MB, up to 72 MB by minute 5 and flat after: what pymalloc's pinned arenas do."""
    return 56 + 16 * min(t, 300) / 300


def test_rss_climbing_towards_the_warm_up_peak_with_a_flat_heap_passes() -> None:
    got = memory_verdict(run_of(climbing, lambda t: 70 if t >= 60 else 60),
                         probes(lambda t: 38), DURATION)  # fmt: skip
    assert got["memory_judged"] and got["memory_ok"]
    assert got["rss_growth_from_first_minute"] > 0.10  # what the old check failed on
    assert got["rss_growth"] < 0.10 and got["heap_growth"] == 0


def test_a_heap_that_grows_after_the_warm_up_fails_even_under_the_rss_peak() -> None:
    leaking = lambda t: 38 + 8 * max(0.0, t - WARMUP_S) / (DURATION - WARMUP_S)  # noqa: E731
    got = memory_verdict(run_of(climbing, lambda t: 72), probes(leaking), DURATION)
    assert got["rss_growth"] < 0.10
    assert got["heap_growth"] > 0.10 and not got["memory_ok"]


def test_rss_past_the_warm_up_peak_fails() -> None:
    got = memory_verdict(run_of(lambda t: 56 + t / 20, lambda t: 56 + t / 20),
                         probes(lambda t: 38), DURATION)  # fmt: skip
    assert got["rss_growth"] > 0.10 and not got["memory_ok"]


def test_a_run_without_probe_readings_fails() -> None:
    got = memory_verdict(run_of(climbing, lambda t: 72), [[], []], DURATION)
    assert got["heap_growth"] is None and not got["memory_ok"]


def test_a_run_shorter_than_two_warm_ups_is_not_judged() -> None:
    short = run_of(climbing, lambda t: 72)
    got = memory_verdict(short, [[], []], 2 * WARMUP_S - 1)
    assert not got["memory_judged"] and got["memory_ok"]
