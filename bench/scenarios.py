"""Scenarios 1-6 of issue 5 (7, memory, is in bench/memory.py). Each returns a JSON-ready
dict: `figures` (the medians and ratios the summary reports) and the runs behind them."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis

from bench import procs, workload
from bench.measure import TARGETS, Ctx, closed, median, metric_delta, open_loop, rotate
from bench.workload import Account

ACME = Account("acme", procs.HIGH_SUB, optouts=1_000, templates=1)
RATES = (500, 1000, 2000)


def big_account(smoke: bool) -> Account:
    return Account("bigco", procs.BIG_SUB, 100_000 if smoke else 1_000_000, 10_000)


def redis_client(ctx: Ctx) -> redis.Redis:
    return redis.Redis(port=ctx.stack.redis.port, socket_timeout=30)


def ensure_loaded(ctx: Ctx, account: Account) -> dict[str, Any]:
    """The account's opt-outs, templates and consent, loaded unless already there."""
    client = redis_client(ctx)
    if workload.is_loaded(client, account):
        return {"loaded": "already"}
    started = time.perf_counter()
    counts = workload.load_account(client, account)
    return {**counts, "load_s": round(time.perf_counter() - started, 2)}


def mix(ctx: Ctx, target: str, account: Account) -> dict[str, Any]:
    host = procs_host(ctx, target)
    return {
        "kind": "mix",
        "host": host,
        "token": ctx.stack.tokens[target],
        "account": account.name,
        "subaccount": account.subaccount,
        "templates": account.templates,
    }


def gateway_load(ctx: Ctx, kind: str, subaccount: str, **extra: Any) -> dict[str, Any]:
    """A workload spec (bench/workload.py) aimed at the gateway."""
    return {
        "kind": kind,
        "host": procs_host(ctx, "gateway"),
        "token": ctx.stack.tokens["gateway"],
        "subaccount": subaccount,
        **extra,
    }


def procs_host(ctx: Ctx, target: str) -> str:
    return ctx.stack.targets[target].split("://", 1)[1].rsplit(":", 1)[0]


def _refused(result: dict[str, Any]) -> int:
    return int(result["requests"]) - int(result["ok"])


def s1_throughput(ctx: Ctx) -> dict[str, Any]:
    """Max throughput through gateway, bare proxy and straight to the simulator."""
    ensure_loaded(ctx, ACME)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TARGETS}
    for r in range(ctx.rounds):
        for target in rotate(TARGETS, r):
            res = closed(ctx, target, mix(ctx, target, ACME))
            ctx.log(
                f"s1 round {r + 1} {target}: {res['rate']:.0f} req/s, "
                f"{res['target_cpu_us_per_request']} µs CPU/req"
            )
            runs[target].append(res)
    rate = {t: median([x["rate"] for x in runs[t]]) for t in TARGETS}
    cpu = {t: median([x["target_cpu_us_per_request"] for x in runs[t]]) for t in TARGETS}
    paired = [g["rate"] / b["rate"] for g, b in zip(runs["gateway"], runs["bare"], strict=True)]
    figures = {
        "throughput_rps": rate,
        "gateway_over_bare": round(rate["gateway"] / rate["bare"], 3) if rate["bare"] else 0,
        "gateway_over_bare_paired": median(paired),
        "gateway_over_direct": round(rate["gateway"] / rate["direct"], 3) if rate["direct"] else 0,
        "cpu_us_per_request": cpu,
        "added_cpu_us_per_request": round(cpu["gateway"] - cpu["bare"], 1),
        "refused": {t: sum(_refused(x) for x in runs[t]) for t in TARGETS},
        "gateway_fallback_batches": _fallbacks(runs["gateway"]),
        "latency_ms_p99": {t: median([x["latency_ms"]["p99"] for x in runs[t]]) for t in TARGETS},
        "loadgen": runs["gateway"][0].get("loadgen", "python"),
        "connections": ctx.connections,
    }
    return {"figures": figures, "runs": runs}


def _fallbacks(runs: list[dict[str, Any]]) -> float:
    """Decisions the gateway took without Redis (a Redis call over redis.timeout_ms)."""
    return float(sum(x.get("gateway_metrics", {}).get("fallback_batches", 0) for x in runs))


def s2_latency(ctx: Ctx) -> dict[str, Any]:
    """Open-loop latency at fixed rates; added = gateway - bare, paired per round."""
    ensure_loaded(ctx, ACME)
    duration = min(ctx.duration, 1.0) if ctx.smoke else ctx.duration
    by_rate: dict[str, Any] = {}
    for rate in RATES:
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TARGETS}
        for r in range(ctx.rounds):
            for target in rotate(TARGETS, r):
                res = open_loop(
                    ctx,
                    target,
                    mix(ctx, target, ACME),
                    rate,
                    duration,
                    raw=f"s2-{rate}-{target}-r{r + 1}",
                )
                res.pop("per_second", None)
                runs[target].append(res)
            ctx.log(
                f"s2 {rate}/s round {r + 1}: p99 "
                + ", ".join(f"{t} {runs[t][-1]['latency_ms'].get('p99')} ms" for t in TARGETS)
            )
        pct = {
            t: {
                q: median([x["latency_ms"].get(q, 0.0) for x in runs[t]])
                for q in ("p50", "p99", "p999")
            }
            for t in TARGETS
        }
        added = {
            q: median(
                [
                    g["latency_ms"].get(q, 0.0) - b["latency_ms"].get(q, 0.0)
                    for g, b in zip(runs["gateway"], runs["bare"], strict=True)
                ]
            )
            for q in ("p50", "p99", "p999")
        }
        errors = {t: sum(_refused(x) for x in runs[t]) for t in TARGETS}
        lag = median([x["schedule_lag_ms"].get("p99", 0.0) for x in runs["gateway"]])
        by_rate[str(rate)] = {
            "latency_ms": pct,
            "added_ms": added,
            "non_2xx": errors,
            "loadgen_lag_p99_ms": lag,
            "runs": runs,
        }
    figures = {
        "added_p99_ms": {k: v["added_ms"]["p99"] for k, v in by_rate.items()},
        "added_p50_ms": {k: v["added_ms"]["p50"] for k, v in by_rate.items()},
        "gateway_p99_ms": {k: v["latency_ms"]["gateway"]["p99"] for k, v in by_rate.items()},
    }
    return {"figures": figures, "rates": by_rate, "duration_s": duration}


def s3_accuracy(ctx: Ctx) -> dict[str, Any]:
    """2x a subaccount's limit, open loop, all workers: what 8x8 saw, second by second."""
    limit, sub = procs.LIMITED_RPS, procs.LIMITED_SUB
    duration = 3.0 if ctx.smoke else max(10.0, ctx.duration)
    load = gateway_load(ctx, "texts", sub)
    rounds = []
    for r in range(ctx.rounds):
        time.sleep(1.1)  # a full bucket and an empty simulator window to start from
        ctx.stack.sim.reset()
        m0 = ctx.stack.metrics()
        res = open_loop(ctx, "gateway", load, 2 * limit, duration, raw=f"s3-r{r + 1}")
        stats, m1 = ctx.stack.sim.stats(), ctx.stack.metrics()
        per = stats["per_second"].get(sub, {}).get("accepted", {})
        seconds = [int(per.get(str(s), 0)) for s in range(int(max(map(int, per), default=-1)) + 1)]
        steady = seconds[1:-1] or seconds
        delta = metric_delta(m0, m1)
        rounds.append(
            {
                "forwarded_per_second": seconds,
                "max_window": stats["max_window"].get(sub, 0),
                "seconds_over_limit": sum(1 for s in seconds if s > limit),
                "upstream_429": int(stats["refused"]["subaccount"]),
                "goodput": round(sum(steady) / len(steady) / limit, 4) if steady else 0.0,
                "refused": delta.get("rate_limited.subaccount", 0),
                "shaped": delta.get("shaped", 0),
                "fallback_batches": delta.get("fallback_batches", 0),
                "forwarded": delta.get("forwarded", 0),
                "client_statuses": res["by_status"],
                "client_per_second": res["per_second"],
            }
        )
        ctx.log(
            f"s3 round {r + 1}: goodput {rounds[-1]['goodput']:.3f}, "
            f"max window {rounds[-1]['max_window']}, 429s {rounds[-1]['upstream_429']}"
        )
    figures = {
        "limit_rps": limit,
        "offered_rps": 2 * limit,
        "workers": ctx.stack.workers,
        "max_window": max(x["max_window"] for x in rounds),
        "seconds_over_limit": sum(x["seconds_over_limit"] for x in rounds),
        "upstream_429": sum(x["upstream_429"] for x in rounds),
        "goodput": median([x["goodput"] for x in rounds]),
        "refused": median([x["refused"] for x in rounds]),
        "shaped": median([x["shaped"] for x in rounds]),
    }
    return {"figures": figures, "rounds": rounds, "duration_s": duration}


def s4_otp_storm(ctx: Ctx) -> dict[str, Any]:
    """Many Verify sends to few numbers: one per number per window may reach 8x8."""
    n_numbers = 20
    duration = 1.0 if ctx.smoke else max(3.0, ctx.duration / 3)
    rate = 1000
    sim = ctx.stack.sim
    rounds = []
    for r in range(ctx.rounds):
        numbers = [workload.otp_number(r * 1000 + k) for k in range(n_numbers)]
        sim.configure(record_limit=100_000)
        sim.reset()
        load = gateway_load(ctx, "verifies", procs.OTP_SUB, numbers=numbers)
        res = open_loop(ctx, "gateway", load, rate, duration)
        arrived = Counter(str(a["body"]["destination"]) for a in sim.requests(product="verify"))
        sim.configure(record_limit=0)
        per_number = [arrived.get(n, 0) for n in numbers]
        rounds.append(
            {
                "sends": res["requests"],
                "statuses": res["by_status"],
                "reached_simulator": sum(per_number),
                "per_number": per_number,
                "exactly_one_each": all(c == 1 for c in per_number),
            }
        )
        ctx.log(
            f"s4 round {r + 1}: {res['requests']} sends to {n_numbers} numbers, "
            f"{sum(per_number)} reached the simulator"
        )
    figures = {
        "numbers": n_numbers,
        "offered_rps": rate,
        "sends": median([x["sends"] for x in rounds]),
        "reached_simulator": median([x["reached_simulator"] for x in rounds]),
        "exactly_one_each": all(x["exactly_one_each"] for x in rounds),
    }
    return {"figures": figures, "rounds": rounds, "duration_s": duration}


def s5_compliance_scale(ctx: Ctx, s1: dict[str, Any] | None) -> dict[str, Any]:
    """Scenario 1's gateway throughput with 1M opt-outs and 10k templates loaded, measured
    alternately with the small account so both see the same machine."""
    big = big_account(ctx.smoke)
    ensure_loaded(ctx, ACME)
    loaded = ensure_loaded(ctx, big)
    ctx.log(f"s5 loaded {loaded}")
    runs: dict[str, list[dict[str, Any]]] = {"big": [], "small": []}
    for r in range(ctx.rounds):
        for name in ("big", "small") if r % 2 == 0 else ("small", "big"):
            acct = big if name == "big" else ACME
            res = closed(ctx, "gateway", mix(ctx, "gateway", acct))
            ctx.log(f"s5 round {r + 1} {name}: {res['rate']:.0f} req/s")
            runs[name].append(res)
    rate = {k: median([x["rate"] for x in v]) for k, v in runs.items()}
    s1_rate = s1["figures"]["throughput_rps"]["gateway"] if s1 else None
    info = redis_client(ctx).info("memory")
    figures = {
        "optouts": big.optouts,
        "templates": big.templates,
        "throughput_rps": rate,
        "over_small_account": round(rate["big"] / rate["small"], 3) if rate["small"] else 0,
        "over_scenario_1": round(rate["big"] / s1_rate, 3) if s1_rate else None,
        "refused": sum(_refused(x) for x in runs["big"]),
        "gateway_fallback_batches": _fallbacks(runs["big"] + runs["small"]),
        "redis_used_memory_mb": round(int(info["used_memory"]) / 2**20, 1),
    }
    return {"figures": figures, "load": loaded, "runs": runs}


def s_lanes(ctx: Ctx) -> dict[str, Any]:
    """Priority lanes (docs/lanes.md): OTP waits under a 2x MARKETING flood of one
    subaccount, per reserved share, on the stack's redis-server (bench/lanes.py; also
    runnable alone: `python -m bench.lanes`)."""
    import argparse
    import asyncio

    from bench import lanes

    args = argparse.Namespace(rps=200, flood=2.0, otp_rate=20.0, max_wait_ms=100,
                              duration=2.0 if ctx.smoke else ctx.duration,
                              shares=[0.0, 0.2, 0.5])  # fmt: skip
    result = asyncio.run(lanes.against(ctx.stack.redis.url, args))
    figures = {
        str(r["reserved_share"]): {"otp_p99_ms": r["otp_wait_ms"]["p99"],
                                   "otp_refused": r["otp_refused"],
                                   "marketing_share": r["marketing_share_of_capacity"]}
        for r in result["runs"]
    }  # fmt: skip
    return {"figures": figures, **result}
