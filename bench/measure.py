"""One measurement: a workload against one target (gateway, bare proxy or the simulator
directly), with the CPU the target's processes spent per request around it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench import procs, workload, wrk
from bench.procs import Stack

TARGETS = ("gateway", "bare", "direct")


@dataclass
class Ctx:
    stack: Stack
    workdir: Path  # scratch files
    out: Path  # the report folder
    rounds: int
    duration: float
    warmup: float
    connections: int
    smoke: bool
    wrk: str | None  # wrk's path when closed loops use it
    notes: list[str] = field(default_factory=list)
    slot_base: int = 0

    def next_slots(self) -> int:
        """A fresh range of slot values (end-user IPs, phone numbers) for one run."""
        self.slot_base += 20_000_000
        return self.slot_base

    def log(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1]
    host, _, port = rest.rpartition(":")
    return host, int(port)


def _pids(ctx: Ctx, target: str) -> list[int]:
    stack = ctx.stack
    if target == "gateway":
        return stack.gateway_workers()
    if target == "bare":
        return stack.bare_workers()
    return [stack.sim.pid]


def _snapshot(ctx: Ctx, target: str) -> tuple[float, float, float, int]:
    stack = ctx.stack
    return (
        procs.cpu_seconds(_pids(ctx, target)),
        procs.cpu_seconds([stack.sim.pid]),
        procs.cpu_seconds(stack.redis_pids()),
        int(stack.sim.stats()["requests"]),
    )


def _cpu(ctx: Ctx, target: str, before: tuple[float, float, float, int]) -> dict[str, float]:
    after = _snapshot(ctx, target)
    n = max(1, after[3] - before[3])  # every send reached the simulator (or was refused)
    per = {
        "target": after[0] - before[0],
        "simulator": after[1] - before[1],
        "redis": after[2] - before[2],
    }
    return {f"{k}_cpu_us_per_request": round(v / n * 1e6, 1) for k, v in per.items()}


def closed(
    ctx: Ctx, target: str, load: dict[str, Any], duration: float | None = None
) -> dict[str, Any]:
    """Max throughput: `ctx.connections` callers for `duration` after a warm-up."""
    duration = ctx.duration if duration is None else duration
    url = ctx.stack.targets[target]
    host, port = host_port(url)
    slots = ctx.next_slots()
    run: Callable[[], dict[str, Any]]
    if ctx.wrk:
        run = partial(
            wrk.run,
            ctx.wrk,
            url,
            workload.build(load),
            connections=ctx.connections,
            duration_s=duration,
            warmup_s=ctx.warmup,
            workdir=ctx.workdir,
            slot_base=slots,
        )
    else:
        spec = {
            "mode": "closed",
            "host": host,
            "port": port,
            "duration": duration,
            "connections": ctx.connections,
            "warmup": ctx.warmup,
            "workload": load,
            "slot_base": slots,
        }
        run = partial(procs.run_loadgen, spec, ctx.workdir, f"closed-{target}")
    return _measured(ctx, target, run)


def open_loop(
    ctx: Ctx,
    target: str,
    load: dict[str, Any],
    rate: float,
    duration: float,
    raw: str | None = None,
) -> dict[str, Any]:
    """Fixed arrival rate; every send's latency kept in raw/<raw>.npz when named."""
    host, port = host_port(ctx.stack.targets[target])
    raw_path = None
    if raw:
        (ctx.out / "raw").mkdir(exist_ok=True)
        raw_path = str(ctx.out / "raw" / f"{raw}.npz")
    spec = {
        "mode": "open",
        "host": host,
        "port": port,
        "duration": duration,
        "rate": rate,
        "connections": 32,
        "workload": load,
        "slot_base": ctx.next_slots(),
        "raw": raw_path,
    }
    return _measured(ctx, target, partial(procs.run_loadgen, spec, ctx.workdir, f"open-{target}"))


def _measured(ctx: Ctx, target: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`run()`'s result with the target's CPU per request and, for the gateway, the change
    of its metrics over the run."""
    before = _snapshot(ctx, target)
    m0 = ctx.stack.metrics() if target == "gateway" else {}
    result = run()
    result.update(_cpu(ctx, target, before))
    if target == "gateway":
        result["gateway_metrics"] = metric_delta(m0, ctx.stack.metrics())
    ctx.stack.truncate_logs()
    return result


def metric_delta(m0: dict[str, float], m1: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}

    def add(name: str, diff: float) -> None:
        out[name] = out.get(name, 0.0) + diff

    for key, value in m1.items():
        diff = value - m0.get(key, 0.0)
        if not diff:
            continue
        if key.startswith("gateway_requests_total{"):
            decision = key.split('decision="', 1)[1].split('"', 1)[0]
            add(decision, diff)
        elif key.startswith("gateway_shaped_wait_seconds_count"):
            add("shaped", diff)
        elif key.startswith("gateway_fallback_decisions_total{"):
            add("fallback_batches", diff)
        elif key.startswith("gateway_upstream_answers_total{") and 'status="429"' in key:
            add("upstream_429", diff)
        elif key.startswith("gateway_late_rebooks_total{"):
            add("late_rebooks", diff)  # a second decision for a send come round to late
    return out


def rotate(items: tuple[str, ...], r: int) -> list[str]:
    """Round r measures the targets in a rotated order, so drift favours none."""
    k = r % len(items)
    return list(items[k:] + items[:k])


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0
