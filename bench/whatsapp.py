"""WhatsApp campaign at the sender-rate limit (docs/whatsapp.md): two sender numbers of one
portfolio (tier 2,000) offered more than their 80 msg/s each, some recipients sent to again
and again; the simulator plays Meta behind 8x8. Then the tier ZSET's Redis memory for
100,000 recipients, and the cost of a decision against it.

    .venv/bin/python -m bench.whatsapp [--duration 20] [--rate 100] [--out DIR]

Writes report.json and whatsapp.png (per-second sends Meta received by sender number,
pair-rate refusals, tier budget left) into DIR (default bench/out/whatsapp-<time>).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from redis import Redis

from gateway.store import keys
from tests.support.gatewayproc import (
    API_KEY,
    CLIENT_TOKEN,
    WEBHOOK_SECRET,
    GatewayProcess,
    base_config,
)
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess

SENDERS = {"wa_a": "+6560000001", "wa_b": "+6560000002"}
TIER = 2000
CHATTY = [f"+6593{i:06d}" for i in range(20)]  # sent to again and again: pair refusals
AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.whatsapp")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--rate", type=int, default=100, help="sends/s offered per sender number")
    p.add_argument("--members", type=int, default=100_000, help="tier ZSET size measured")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


async def offer(gw: str, args: argparse.Namespace, redis: Redis) -> dict[str, Any]:
    """Open loop: each sender `rate` sends/s; 10% to the chatty recipients."""
    rng = random.Random(7)
    codes: dict[str, dict[int, int]] = {}
    budget: list[tuple[float, int]] = []
    tier_key = keys.wa_tier("acme", "retail")
    fresh = iter(range(10**6))
    start = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, sub: str, msisdn: str) -> None:
        path = f"{gw}/chatapps/api/v1/subaccounts/{sub}/messages"
        body = {"user": {"msisdn": msisdn}, "type": "text", "content": {"text": "sale"}}
        async with session.post(path, data=json.dumps(body), headers=AUTH) as r:
            answer = await r.json(content_type=None)
            code = "forwarded" if r.status < 300 else answer.get("gatewayCode", str(r.status))
        second = int(time.monotonic() - start)
        by = codes.setdefault(code, {})
        by[second] = by.get(second, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        tick = 1.0 / args.rate
        n = 0
        while (elapsed := time.monotonic() - start) < args.duration:
            for sub in SENDERS:
                chatty = rng.random() < 0.1
                msisdn = rng.choice(CHATTY) if chatty else f"+6591{next(fresh):06d}"
                task = asyncio.create_task(one(session, sub, msisdn))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            n += 1
            if n % max(1, args.rate // 4) == 0:
                counted = int(redis.zcard(tier_key))
                budget.append((round(elapsed, 2), TIER - counted))
            await asyncio.sleep(max(0.0, start + n * tick - time.monotonic()))
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"codes": codes, "budget": budget}


def zset_memory(redis: Redis, members: int) -> dict[str, Any]:
    """MEMORY USAGE of a tier ZSET of `members` E.164 recipients scored in µs."""
    key = keys.wa_tier("acme", "bench-memory")
    redis.delete(key)
    now = int(time.time() * 1_000_000)
    pipe = redis.pipeline(transaction=False)
    for start in range(0, members, 1000):
        pipe.zadd(key, {f"+6599{i:07d}": now - i for i in range(start, start + 1000)})
    pipe.execute()
    used = int(redis.memory_usage(key, samples=0) or 0)
    return {"members": members, "bytes": used, "bytes_per_member": round(used / members, 1)}


def decision_cost(redis_url: str, members: int) -> dict[str, Any]:
    """µs per decide.lua call (one new recipient, tier check against a full ZSET), next to
    the same send without WhatsApp, measured sequentially from this process."""
    from redis.asyncio import Redis as AsyncRedis

    from gateway.store.base import (
        BucketSpec,
        MessageCheck,
        OtpSpec,
        Rule,
        SendCheck,
        WhatsAppCheck,
        WhatsAppMessage,
    )
    from gateway.store.redis import RedisStore

    def wa(m: MessageCheck, tier: int) -> WhatsAppCheck:
        sender = "+6560000009"
        bucket = BucketSpec(Rule.SENDER, keys.wa_sender("acme", sender), 1, 10**6, 10**6, 1,
                            shapeable=True)  # fmt: skip
        return WhatsAppCheck(
            sender=bucket, pair_interval_us=6_000_000, pair_burst=45,
            tier_key=keys.wa_tier("acme", "bench-memory"), tier=tier, tier_override_key="",
            window_us=86_400_000_000, us_refuse=True, quality_refuse=True,
            messages=(WhatsAppMessage(keys.wa_pair("acme", sender, m.msisdn),
                                      keys.wa_window("acme", m.msisdn),
                                      keys.wa_hold("acme", m.msisdn),
                                      keys.wa_suppressed("acme", m.msisdn)),),
        )  # fmt: skip

    async def run() -> dict[str, Any]:
        store = RedisStore(AsyncRedis.from_url(redis_url))
        otp = OtpSpec(60_000_000, 1, 1, 60)
        out: dict[str, Any] = {}
        for label, with_wa in (("plain", False), ("whatsapp", True)):
            t0 = time.perf_counter()
            calls = 2000
            for i in range(calls):
                m = MessageCheck(f"+6598{i:07d}")
                check = SendCheck("acme", (m,), (), otp, "", opt_in="off",
                                  whatsapp=wa(m, tier=members * 2) if with_wa else None)  # fmt: skip
                await store.decide(check)
            out[f"{label}_us_per_call"] = round((time.perf_counter() - t0) / calls * 1e6, 1)
        await store.close()
        return out

    return asyncio.run(run())


def chart(result: dict[str, Any], path: Path) -> None:
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    for sender, by in result["meta"]["per_second"].items():
        xs = sorted(int(s) for s in by)
        top.plot(xs, [by[str(x)] if str(x) in by else by.get(x, 0) for x in xs], label=sender)
    top.axhline(80, color="grey", ls="--", lw=1, label="sender_mps 80")
    top.set_ylabel("sends/s Meta received")
    top.legend(fontsize=8)
    for code in ("rate_limited.pair", "rate_limited.sender", "rate_limited.messaging_tier"):
        by = result["offer"]["codes"].get(code, {})
        xs = sorted(by)
        mid.plot(xs, [by[x] for x in xs], label=code)
    mid.set_ylabel("refusals/s")
    mid.legend(fontsize=8)
    points = result["offer"]["budget"]
    low.plot([p[0] for p in points], [p[1] for p in points])
    low.set_ylabel("tier budget left")
    low.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = args.out or Path("bench/out") / time.strftime("whatsapp-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer() as redis_proc,
        SimProcess(api_key=API_KEY, record_limit=0) as sim,
    ):
        cfg = base_config(
            sim.url, server={"workers": 2, "host": "127.0.0.1"},
            redis={"url": redis_proc.url}, limits={"max_wait_ms": 100},
            whatsapp={"sender_mps": 80, "pair_burst": 3, "pair_interval_s": 6},
            subaccounts={s: {"whatsapp_senders": [n]} for s, n in SENDERS.items()},
            portfolios={"retail": {"tier": TIER, "subaccounts": list(SENDERS)}},
            clients=[{"name": "bench", "token_sha256": [_sha(CLIENT_TOKEN)],
                      "subaccounts": list(SENDERS)}],
        )  # fmt: skip
        with GatewayProcess(Path(tmp), cfg, env={"EIGHTX8_API_KEY": API_KEY}) as gw:
            sim.meta(webhook_url=gw.url, webhook_secret=WEBHOOK_SECRET, senders=SENDERS,
                     sender_mps=80, pair_burst=3, tier=TIER)  # fmt: skip
            redis = Redis.from_url(redis_proc.url)
            offered = asyncio.run(offer(gw.url, args, redis))
            meta = sim.meta(wait=True)
        result = {
            "command": "python -m bench.whatsapp " + " ".join(argv or []),
            "offer": offered,
            "meta": {k: meta[k] for k in ("delivered", "receipts", "over_tier", "per_second")},
            "totals": {c: sum(by.values()) for c, by in offered["codes"].items()},
            "peak_sender_second": {
                s: max(by.values(), default=0) for s, by in meta["per_second"].items()
            },
            "memory": zset_memory(redis, args.members),
        }
        result["decision"] = decision_cost(redis_proc.url, args.members)
    (out / "report.json").write_text(json.dumps(result, indent=1))
    chart(result, out / "whatsapp.png")
    print(json.dumps({k: result[k] for k in ("totals", "peak_sender_second", "memory",
                                              "decision")}, indent=1))  # fmt: skip
    print(f"meta: delivered {meta['delivered']}, receipts {meta['receipts']}, "
          f"over_tier {meta['over_tier']}; written to {out}")  # fmt: skip
    return 0


def _sha(token: str) -> str:
    from tests.support.gatewayproc import sha

    return sha(token)


if __name__ == "__main__":
    raise SystemExit(main())
