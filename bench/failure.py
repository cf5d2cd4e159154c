"""Scenario 6: redis-server killed a third of the way into a 2x-the-limit run and started
again at two thirds (`redis.on_failure = local`): what reached 8x8 each second, what the
callers got, how many micro-batches the fallback decided."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from bench import procs
from bench.measure import Ctx, median, metric_delta, open_loop
from bench.scenarios import gateway_load


def s6_redis_failure(ctx: Ctx) -> dict[str, Any]:
    """2x the limit while redis-server is killed at 1/3 and restarted at 2/3."""
    limit, sub = procs.LIMITED_RPS, procs.LIMITED_SUB
    duration = 6.0 if ctx.smoke else max(9.0, ctx.duration)
    load = gateway_load(ctx, "texts", sub)
    events: dict[str, float] = {}
    time.sleep(1.1)
    ctx.stack.sim.reset()
    m0 = ctx.stack.metrics()
    started = time.monotonic()

    def chaos() -> None:
        time.sleep(duration / 3)
        ctx.stack.redis.stop(kill=True)
        events["killed_s"] = round(time.monotonic() - started, 2)
        time.sleep(max(0.0, started + 2 * duration / 3 - time.monotonic()))
        ctx.stack.redis.start()
        events["restarted_s"] = round(time.monotonic() - started, 2)

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    res = open_loop(ctx, "gateway", load, 2 * limit, duration, raw="s6")
    thread.join()
    stats, m1 = ctx.stack.sim.stats(), ctx.stack.metrics()
    per = stats["per_second"].get(sub, {}).get("accepted", {})
    seconds = [int(per.get(str(s), 0)) for s in range(int(max(map(int, per), default=-1)) + 1)]
    delta = metric_delta(m0, m1)
    killed, back = events.get("killed_s", duration / 3), events.get("restarted_s", duration)
    phases = {  # whole seconds only: the partial first and last seconds are left out
        "before": seconds[1 : math.floor(killed)],
        "outage": seconds[math.ceil(killed) : math.floor(back)],
        "after": seconds[math.ceil(back) : -1] or seconds[math.ceil(back) :],
    }
    rejected = stats["per_second"].get(sub, {}).get("rejected", {})
    upstream_429s = [int(rejected.get(str(s), 0)) for s in range(len(seconds))]
    figures = {
        "limit_rps": limit,
        "offered_rps": 2 * limit,
        "forwarded_rps": {k: median([float(x) for x in v]) for k, v in phases.items()},
        "max_window": stats["max_window"].get(sub, 0),
        "upstream_429": int(stats["refused"]["subaccount"]),
        "fallback_batches": delta.get("fallback_batches", 0),
        "client_statuses": res["by_status"],
        "errors": res["errors"],
    }
    ctx.log(f"s6: forwarded/s {figures['forwarded_rps']}, statuses {res['by_status']}")
    return {
        "figures": figures,
        "events": events,
        "forwarded_per_second": seconds,
        "upstream_429_per_second": upstream_429s,
        "client_per_second": res["per_second"],
        "duration_s": duration,
    }
