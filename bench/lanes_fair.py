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
from typing import Any

from redis.asyncio import Redis

from bench import charts
from bench.lanes import SUB, _pct, overshoot, paced, parser, poisson, prepare, write
from gateway.configschema import LimitsConfig
from gateway.policy import pacing
from gateway.store.base import Decision, MessageCheck, Store
from gateway.store.redis import RedisStore
from tests.support.redisproc import RedisServer

KINDS = ("flood", "steady", "otp")


async def run_once(store: Store, fair: bool, args: argparse.Namespace, seed: int
                   ) -> dict[str, Any]:  # fmt: skip
    """One run: client "flood" at args.flood x rps, "steady" at args.steady x rps, both
    MARKETING, and OTPs (client "steady") at args.otp_rate, for args.duration."""
    rps = args.rps
    limits = LimitsConfig(subaccount_rps=rps, subaccount_burst=max(1, rps // 50),
                          reserved_share=args.share, max_wait_ms=args.max_wait_ms,
                          fair_clients=fair)  # fmt: skip
    plan, route, decider = await prepare(store, limits)
    clock = pacing.SlotClock()
    rng = random.Random(seed)
    results: dict[str, list[tuple[Decision, int]]] = {k: [] for k in KINDS}
    late = dict.fromkeys(KINDS, 0)
    tasks: list[asyncio.Task[None]] = []

    async def one(kind: str, n: int) -> None:
        client = "flood" if kind == "flood" else "steady"
        number = f"+65{KINDS.index(kind) + 7}{seed:02d}{n:05d}"
        m = MessageCheck(number, otp=True) if kind == "otp" else MessageCheck(number, "promo:en")
        went, waited, refused_late, _ = await paced(decider, plan, route, m, clock, client)
        results[kind].append((went, waited))
        late[kind] += refused_late

    def arrivals(kind: str, rate: float) -> Any:
        return poisson(rng, rate, args.duration, lambda n: one(kind, n), tasks)

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
    p = parser("python -m bench.lanes_fair", __doc__, "the flooding client, x rps")
    p.add_argument("--steady", type=float, default=0.3, help="the steady client, x rps")
    p.add_argument("--share", type=float, default=0.2, help="limits.reserved_share")
    args = p.parse_args(argv)
    write(args.out, "fair", asyncio.run(main_async(args)), charts.lanes_fair)


if __name__ == "__main__":
    main()
