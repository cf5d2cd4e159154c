"""The lanes scenario (docs/lanes.md): one subaccount flooded with MARKETING sends at twice
its rate while OTP sends arrive at a low rate. Reports, per `limits.reserved_share`, the
OTP sends' added wait (p50, p99, max) and refusals, the share of the subaccount's
capacity MARKETING still used, and whether the slots forwarded kept every bucket's GCRA
envelope (never more than burst + W / T in any window W).

Decisions go through the gateway's own path (LimitPlan -> Decider -> RedisStore ->
lua/decide.lua on a real redis-server) in real time, open loop (Poisson arrivals), and
every send is paced as the proxy paces it (gateway/policy/pacing.py: it sleeps to its
slot, a bulk queue's ticket claims its real slot then, a late send takes a fresh one). The
added wait is from the send's decision to the slot it finally goes at, on the store's
clock (its ticket's wait and its claim's together). HTTP and forwarding are left out: they
add the same to every lane.

    .venv/bin/python -m bench.lanes --out bench/out/lanes
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
from gateway.configschema import Config, LimitsConfig, PolicyConfig
from gateway.policy import pacing
from gateway.policy.decider import Decider
from gateway.policy.limits import LimitPlan
from gateway.routes import Route, match
from gateway.store.base import BULK, PRIORITY, Decision, MessageCheck, Store, TemplateRecord
from gateway.store.redis import RedisStore
from tests.support.redisproc import RedisServer

SUB = "acme_main"
PATH = f"/chatapps/api/v1/subaccounts/{SUB}/messages"
NOW = "2026-12-01T00:00:00Z"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def prepare(store: Store, limits: LimitsConfig) -> tuple[LimitPlan, Route, Decider]:
    """The plan, route and decider a lanes run decides with; the MARKETING template stored."""
    plan = LimitPlan(Config(limits=limits, policy=PolicyConfig(opt_in="off")))
    route = match("POST", PATH)
    assert route is not None
    await store.template_put("acme", TemplateRecord("promo", "en", "APPROVED", "MARKETING",
                                                    None, NOW))  # fmt: skip
    return plan, route, Decider(store, timeout_s=1.0)


async def paced(
    decider: Decider, plan: LimitPlan, route: Route, m: MessageCheck, clock: pacing.SlotClock,
    client: str = "",
) -> tuple[Decision, int, bool, Decision]:  # fmt: skip
    """A send decided and paced as the proxy paces it: (the decision it went on, or its
    refusal; the wait it added, µs on the store's clock, 0 when refused; whether it was
    refused after waiting: its claim or a fresh slot; its first decision)."""
    first = await decider.decide(plan.check(route, (m,), None, client=client))
    if first.refusal is not None:
        return first, 0, False, first
    lane = PRIORITY if first.priority else BULK
    went = await pacing.until_slot(
        first, decider, lambda: plan.check(route, (), None, lane=lane, client=client), clock
    )
    if went.refusal is not None:
        return went, 0, True, first
    return went, went.slot_us - (first.slot_us - first.wait_us), False, first


async def poisson(
    rng: random.Random, rate: float, duration_s: float, spawn: Any, tasks: list[Any]
) -> None:
    """Start `spawn(n)` as a task at Poisson arrivals of `rate` a second for `duration_s`."""
    start = time.monotonic()
    at, n = 0.0, 0
    while True:
        at += rng.expovariate(rate)
        if at >= duration_s:
            return
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(spawn(n)))
        n += 1


async def run_once(
    store: Store, share: float, rps: int, flood: float, otp_rate: float, duration_s: float,
    max_wait_ms: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """One run: MARKETING at `flood` x `rps`, OTP at `otp_rate`, for `duration_s`."""
    limits = LimitsConfig(subaccount_rps=rps, subaccount_burst=max(1, rps // 50),
                          reserved_share=share, max_wait_ms=max_wait_ms)  # fmt: skip
    plan, route, decider = await prepare(store, limits)
    clock = pacing.SlotClock()
    rng = random.Random(seed)
    # per send: the decision it went on (or its refusal), its added wait (µs, store clock)
    results: dict[str, list[tuple[Decision, int]]] = {"marketing": [], "otp": []}
    late = {"marketing": 0, "otp": 0}
    booked: dict[str, list[float]] = {"marketing": [], "otp": []}  # first decisions' waits
    tasks: list[asyncio.Task[None]] = []

    async def one(kind: str, n: int) -> None:
        number = f"+65{(8 if kind == 'otp' else 9)}{seed:02d}{n:05d}"
        m = MessageCheck(number, otp=True) if kind == "otp" else MessageCheck(number, "promo:en")
        went, waited, refused_late, first = await paced(decider, plan, route, m, clock)
        results[kind].append((went, waited))
        late[kind] += refused_late
        if went.refusal is None:
            booked[kind].append(first.wait_us / 1000)

    def arrivals(kind: str, rate: float) -> Any:
        return poisson(rng, rate, duration_s, lambda n: one(kind, n), tasks)

    started = time.monotonic()
    await asyncio.gather(arrivals("marketing", flood * rps), arrivals("otp", otp_rate))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    await decider.close()
    bucket = plan.subaccount(SUB)[1]
    capacity = 1e6 / bucket.interval_us  # sends per second the bucket emits, sustained
    gone = {k: [(d, w) for d, w in v if d.refusal is None] for k, v in results.items()}
    otp_waits = [w / 1000 for _, w in gone["otp"]]
    mkt_waits = [w / 1000 for _, w in gone["marketing"]]
    mkt_ok, otp_ok = len(mkt_waits), len(otp_waits)
    slots = sorted(d.slot_us for v in gone.values() for d, _ in v)
    return {
        "reserved_share": share,
        "otp_sent": len(results["otp"]),
        "otp_refused": len(results["otp"]) - otp_ok,
        "otp_wait_ms": {
            "p50": _pct(otp_waits, 0.5),
            "p99": _pct(otp_waits, 0.99),
            "max": max(otp_waits, default=0.0),
        },
        "otp_waits_ms": otp_waits,
        # the wait the OTP's decision booked; the one above adds this process's lateness
        # (a late send takes a fresh slot)
        "otp_booked_wait_ms": {"p50": _pct(booked["otp"], 0.5), "p99": _pct(booked["otp"], 0.99)},
        "marketing_offered": len(results["marketing"]),
        "marketing_allowed": mkt_ok,
        "marketing_refused_after_waiting": late["marketing"],
        "marketing_wait_ms": {"p50": _pct(mkt_waits, 0.5), "p99": _pct(mkt_waits, 0.99)},
        "marketing_share_of_capacity": round(mkt_ok / (capacity * elapsed), 3),
        "capacity_used": round((mkt_ok + otp_ok) / (capacity * elapsed), 3),
        "envelope_overshoot": overshoot(slots, bucket.interval_us, bucket.burst),
    }


def overshoot(slots: list[int], interval_us: int, burst: int) -> int:
    """The most sends the sorted slots put in any window beyond burst + W / T (0: the
    bucket's GCRA envelope held): slots i < j must be at least (j - i + 1 - burst) x T
    apart, i.e. s_j - j T >= max over i < j of (s_i - i T) - (burst - 1) T."""
    worst, top = 0, None
    for j, s in enumerate(slots):
        a = s - j * interval_us
        if top is not None:
            short = top - (burst - 1) * interval_us - a  # µs too early
            worst = max(worst, -(-short // interval_us))
        top = a if top is None else max(top, a)
    return worst


async def against(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every share of `args.shares` on the Redis at `url` (flushed before each run)."""
    runs: list[dict[str, Any]] = []
    for share in args.shares:
        client = Redis.from_url(url)
        await client.flushall()
        store = RedisStore(client)
        run = await run_once(store, share, args.rps, args.flood, args.otp_rate,
                             args.duration, args.max_wait_ms, seed=len(runs))  # fmt: skip
        await store.close()
        print(json.dumps({k: v for k, v in run.items() if k != "otp_waits_ms"}))
        runs.append(run)
    return {
        "rps": args.rps, "flood": args.flood, "otp_rate": args.otp_rate,
        "duration_s": args.duration, "max_wait_ms": args.max_wait_ms, "runs": runs,
    }  # fmt: skip


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as server:
        return await against(server.url, args)


def parser(prog: str, doc: str | None, flood_help: str) -> argparse.ArgumentParser:
    """The options bench/lanes.py and bench/lanes_fair.py share."""
    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--rps", type=int, default=200, help="the subaccount's rps")
    p.add_argument("--flood", type=float, default=2.0, help=flood_help)
    p.add_argument("--otp-rate", type=float, default=20.0, help="OTP sends per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--max-wait-ms", type=int, default=100)
    p.add_argument("--out", default="bench/out/lanes")
    return p


def write(out_dir: str, name: str, result: dict[str, Any], draw: Any) -> None:
    """`<name>.json` and `<name>.png` (drawn by `draw(result, path)`) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    draw(result, out / f"{name}.png")
    print(f"wrote {out / f'{name}.json'} and {out / f'{name}.png'}")


def main(argv: list[str] | None = None) -> None:
    p = parser("python -m bench.lanes", __doc__, "MARKETING offered, x rps")
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.2, 0.5])
    args = p.parse_args(argv)
    write(args.out, "lanes", asyncio.run(main_async(args)), charts.lanes)


if __name__ == "__main__":
    main()
