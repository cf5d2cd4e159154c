"""Scenario 7: memory. RSS per gateway worker, Redis bytes per tracked key after 1,000,000
distinct recipients, and a TTL audit of every key.

How the 1M recipients are made: first the gateway itself, as fast as it goes for the run's
duration, Verify sends each to a new number (each decision creates an OTP key); then the
rest straight through the decision path the workers use — `LimitPlan.check` and
`RedisStore.decide_many` (lua/decide.lua) with the gateway's own config, 500 decisions per
script call — because 1M sends over HTTP would take minutes on this box. Worker RSS is read
after the HTTP phase (and after every earlier scenario), from /proc/<pid>/status. Bytes
per key = the growth of Redis' used_memory over both phases / the keys they added.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from bench import procs
from bench.measure import Ctx, closed, median
from bench.scenarios import ACME, ensure_loaded, gateway_load, mix, redis_client
from gateway import config as config_mod
from gateway.policy.limits import LimitPlan
from gateway.routes import Kind, Route
from gateway.store.base import MessageCheck
from gateway.store.redis import RedisStore

NO_TTL_ALLOWED = frozenset({"optout", "consent", "tpl"})
HTTP_PREFIX = "+447"  # UK mobiles: "+447" + 9 digits (the slot)
DIRECT_PREFIX = "+614"  # Australian mobiles: "+614" + 8 digits


def s7_memory(ctx: Ctx) -> dict[str, Any]:
    target = 20_000 if ctx.smoke else 1_000_000
    client = redis_client(ctx)
    # every kind of key present for the TTL audit (scenario 6 may have emptied Redis)
    ensure_loaded(ctx, ACME)
    closed(ctx, "gateway", mix(ctx, "gateway", ACME), 1.0)
    before = _redis_memory(client)
    http_s = 2.0 if ctx.smoke else ctx.duration
    load = gateway_load(ctx, "distinct", procs.OTP_SUB, prefix=HTTP_PREFIX)
    sim0 = int(ctx.stack.sim.stats()["accepted"])
    res = closed(ctx, "gateway", load, http_s)
    through_http = int(ctx.stack.sim.stats()["accepted"]) - sim0
    # a decision taken without Redis (a call over redis.timeout_ms on a busy box) leaves
    # no OTP key: the keys tell how many of the HTTP phase's decisions Redis made
    http_keys = sum(1 for _ in client.scan_iter(match=f"gw:*:otp:{HTTP_PREFIX}*", count=5_000))
    ctx.log(f"s7 HTTP phase: {through_http} distinct recipients at {res['rate']:.0f} req/s")
    workers = _rss(ctx.stack.gateway_workers())
    bare = _rss(ctx.stack.bare_workers())
    remaining = max(0, target - through_http)
    started = time.perf_counter()
    decided, refused = asyncio.run(_decide_direct(ctx, remaining))
    direct_s = time.perf_counter() - started
    ctx.log(f"s7 direct phase: {decided} decisions in {direct_s:.1f}s ({refused} refused)")
    after = _redis_memory(client)
    audit = ttl_audit(client)
    new_keys = after["keys"] - before["keys"]
    otp_sample = _sample_usage(client, "otp")
    figures = {
        "distinct_recipients": through_http + decided,
        "through_http": through_http,
        "through_decision_path": decided,
        "http_fallback_batches": res.get("gateway_metrics", {}).get("fallback_batches", 0),
        "http_decisions_without_redis": through_http - http_keys,
        "decisions_per_s_direct": round(decided / direct_s, 0) if direct_s else 0,
        "rss_mb_per_worker": [w["rss_mb"] for w in workers],
        "rss_mb_max": max((w["rss_mb"] for w in workers), default=0),
        "peak_rss_mb_max": max((w["peak_mb"] for w in workers), default=0),
        "bare_rss_mb_per_worker": [w["rss_mb"] for w in bare],
        "redis_used_memory_mb": round(after["used_memory"] / 2**20, 1),
        "redis_bytes_per_key": round((after["used_memory"] - before["used_memory"]) / new_keys, 1)
        if new_keys > 0
        else None,
        "otp_key_memory_usage_bytes": otp_sample,
        "keys_by_kind": audit["keys_by_kind"],
        "keys_without_ttl": audit["without_ttl"],
        "ttl_violations": audit["violations"],
    }
    return {
        "figures": figures,
        "http": {k: v for k, v in res.items() if k != "per_second"},
        "workers": workers,
        "redis_before": before,
        "redis_after": after,
    }


def _rss(pids: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "pid": pid,
            "rss_mb": round(procs.status_kb(pid) / 1024, 1),
            "peak_mb": round(procs.status_kb(pid, "VmHWM") / 1024, 1),
        }
        for pid in pids
    ]


def _redis_memory(client: redis.Redis) -> dict[str, int]:
    info = client.info("memory")
    return {"used_memory": int(info["used_memory"]), "keys": int(client.dbsize())}


async def _decide_direct(ctx: Ctx, n: int, batch: int = 500, parallel: int = 4) -> tuple[int, int]:
    """`n` Verify decisions to distinct numbers through the workers' decision code."""
    cfg = config_mod.load(ctx.stack.gateway.config_path, {})
    plan = LimitPlan(cfg)
    sub = procs.OTP_SUB
    route = Route("verify", Kind.VERIFY, sub, f"/api/v2/subaccounts/{sub}/sessions")
    store = RedisStore(AsyncRedis(port=ctx.stack.redis.port, socket_timeout=30))
    next_i, decided, refused = 0, 0, 0

    async def worker() -> None:
        nonlocal next_i, decided, refused
        while next_i < n:
            start, next_i = next_i, min(n, next_i + batch)
            checks = [
                plan.check(route, (MessageCheck(f"{DIRECT_PREFIX}{i:08d}", otp=True),), None)
                for i in range(start, next_i)
            ]
            for decision in await store.decide_many(checks):
                decided += 1
                refused += decision.refusal is not None

    try:
        await asyncio.gather(*(worker() for _ in range(parallel)))
    finally:
        await store.close()
    return decided, refused


def kind_of(key: str) -> str:
    """gw:{acme}:otp:+65... → otp; the egress and end-user buckets by their tag."""
    tag, _, rest = key.partition("}:")
    if tag.startswith("gw:{egress:"):
        return "egress_ip"
    if tag.startswith("gw:{eu:"):
        return "end_user_ip"
    return rest.split(":", 1)[0] if rest else key


def ttl_audit(client: redis.Redis) -> dict[str, Any]:
    """SCAN every key with its PTTL: which kinds exist, which have no TTL, and which of
    those are not allowed to (anything but opt-outs, consent and templates)."""
    kinds: Counter[str] = Counter()
    no_ttl: Counter[str] = Counter()
    violations: list[str] = []
    cursor = 0
    while True:
        cursor, found = client.scan(cursor, count=5_000)
        if found:
            pipe = client.pipeline(transaction=False)
            for key in found:
                pipe.pttl(key)
            for key, ttl in zip(found, pipe.execute(), strict=True):
                name = key.decode() if isinstance(key, bytes) else str(key)
                kind = kind_of(name)
                kinds[kind] += 1
                if ttl == -1:
                    no_ttl[kind] += 1
                    if kind not in NO_TTL_ALLOWED and len(violations) < 20:
                        violations.append(name)
        if cursor == 0:
            break
    bad = sum(v for k, v in no_ttl.items() if k not in NO_TTL_ALLOWED)
    return {
        "keys_by_kind": dict(kinds),
        "without_ttl": dict(no_ttl),
        "violations": {"count": bad, "examples": violations},
    }


def _sample_usage(client: redis.Redis, kind: str, n: int = 200) -> float | None:
    sizes = []
    for key in client.scan_iter(match=f"gw:*:{kind}:*", count=1_000):
        sizes.append(int(client.memory_usage(key) or 0))
        if len(sizes) >= n:
            break
    return median([float(s) for s in sizes]) if sizes else None
