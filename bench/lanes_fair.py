"""Fairness between the clients of one subaccount (docs/lanes.md): two MARKETING clients
share one subaccount, one flooding at `--flood` x its rate, one steady at `--steady` x,
with OTP sends at a low rate beside them; run with `limits.fair_clients` on and off.
Reports each client's refused share (at its decision or at its claim) and added wait
(p50, p99), the OTPs' p99 wait and refusals, the capacity used and the GCRA envelope.

The same path and pacing as bench/lanes.py (LimitPlan -> Decider -> RedisStore ->
lua/decide.lua on a real redis-server, open loop, Poisson arrivals, every send paced to
its slot, tickets claiming theirs).

    MPLBACKEND=Agg .venv/bin/python -m bench.lanes_fair --out docs/lanes-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import charts
from bench.lanes import NOW, PATH, SUB, _pct, overshoot
from gateway.configschema import Config, LimitsConfig, PolicyConfig
from gateway.policy import pacing
from gateway.policy.decider import Decider
from gateway.policy.limits import LimitPlan
from gateway.routes import match
from gateway.store.base import BULK, PRIORITY, Decision, MessageCheck, Store, TemplateRecord
from gateway.store.redis import RedisStore
from tests.support.redisproc import RedisServer

KINDS = ("flood", "steady", "otp")


async def run_once(store: Store, fair: bool, args: argparse.Namespace, seed: int
                   ) -> dict[str, Any]:  # fmt: skip
    """One run: client "flood" at args.flood x rps, "steady" at args.steady x rps, both
    MARKETING, and OTPs (client "steady") at args.otp_rate, for args.duration."""
    rps = args.rps
    cfg = Config(
        limits=LimitsConfig(subaccount_rps=rps, subaccount_burst=max(1, rps // 50),
                            reserved_share=args.share, max_wait_ms=args.max_wait_ms,
                            fair_clients=fair),
        policy=PolicyConfig(opt_in="off"),
    )  # fmt: skip
    plan = LimitPlan(cfg)
    route = match("POST", PATH)
    assert route is not None
    await store.template_put("acme", TemplateRecord("promo", "en", "APPROVED", "MARKETING",
                                                    None, NOW))  # fmt: skip
    decider = Decider(store, timeout_s=1.0)
    clock = pacing.SlotClock()
    rng = random.Random(seed)
    results: dict[str, list[tuple[Decision, int]]] = {k: [] for k in KINDS}
    late = dict.fromkeys(KINDS, 0)
    tasks: list[asyncio.Task[None]] = []

    async def one(kind: str, n: int) -> None:
        client = "flood" if kind == "flood" else "steady"
        number = f"+65{KINDS.index(kind) + 7}{seed:02d}{n:05d}"
        m = MessageCheck(number, otp=True) if kind == "otp" else MessageCheck(number, "promo:en")
        first = await decider.decide(plan.check(route, (m,), None, client=client))
        if first.refusal is not None:
            results[kind].append((first, 0))
            return
        lane = PRIORITY if first.priority else BULK
        went = await pacing.until_slot(
            first, decider, lambda: plan.check(route, (), None, lane=lane, client=client), clock
        )
        if went.refusal is not None:  # refused after waiting: its claim (or a fresh slot)
            late[kind] += 1
            results[kind].append((went, 0))
            return
        results[kind].append((went, went.slot_us - (first.slot_us - first.wait_us)))

    async def arrivals(kind: str, rate: float) -> None:
        start = time.monotonic()
        at, n = 0.0, 0
        while True:
            at += rng.expovariate(rate)
            if at >= args.duration:
                return
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(kind, n)))
            n += 1

    started = time.monotonic()
    await asyncio.gather(arrivals("flood", args.flood * rps),
                         arrivals("steady", args.steady * rps),
                         arrivals("otp", args.otp_rate))  # fmt: skip
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    await decider.close()
    bucket = plan.subaccount(SUB)[1]
    capacity = 1e6 / bucket.interval_us
    out: dict[str, Any] = {"fair_clients": fair}
    went_all = []
    for kind in KINDS:
        gone = [(d, w) for d, w in results[kind] if d.refusal is None]
        waits = [w / 1000 for _, w in gone]
        went_all += [d.slot_us for d, _ in gone]
        offered = len(results[kind])
        out[kind] = {
            "offered": offered,
            "sent": len(gone),
            "refused": offered - len(gone),
            "refused_after_waiting": late[kind],
            "refused_share": round((offered - len(gone)) / offered, 3) if offered else 0.0,
            "wait_ms": {"p50": _pct(waits, 0.5), "p99": _pct(waits, 0.99)},
            "share_of_capacity": round(len(gone) / (capacity * elapsed), 3),
            "waits_ms": waits,
        }
    out["capacity_used"] = round(len(went_all) / (capacity * elapsed), 3)
    out["envelope_overshoot"] = overshoot(sorted(went_all), bucket.interval_us, bucket.burst)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with RedisServer() as server:
        for fair in (False, True):
            client = Redis.from_url(server.url)
            await client.flushall()
            store = RedisStore(client)
            run = await run_once(store, fair, args, seed=len(runs))
            await store.close()
            brief = {k: ({x: y for x, y in v.items() if x != "waits_ms"} if isinstance(v, dict)
                         else v) for k, v in run.items()}  # fmt: skip
            print(json.dumps(brief))
            runs.append(run)
    return {
        "rps": args.rps, "flood": args.flood, "steady": args.steady, "otp_rate": args.otp_rate,
        "share": args.share, "duration_s": args.duration, "max_wait_ms": args.max_wait_ms,
        "runs": runs,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.lanes_fair", description=__doc__)
    p.add_argument("--rps", type=int, default=200, help="the subaccount's rps")
    p.add_argument("--flood", type=float, default=2.0, help="the flooding client, x rps")
    p.add_argument("--steady", type=float, default=0.3, help="the steady client, x rps")
    p.add_argument("--otp-rate", type=float, default=20.0, help="OTP sends per second")
    p.add_argument("--share", type=float, default=0.2, help="limits.reserved_share")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--max-wait-ms", type=int, default=100)
    p.add_argument("--out", default="bench/out/lanes")
    args = p.parse_args(argv)
    result = asyncio.run(main_async(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fair.json").write_text(json.dumps(result, indent=1))
    charts.lanes_fair(result, out / "fair.png")
    print(f"wrote {out / 'fair.json'} and {out / 'fair.png'}")


if __name__ == "__main__":
    main()
