"""Soak run: mixed traffic for a long time while Redis and 8x8 fail on a schedule.

    python -m bench.soak --duration 600 --out bench/out/soak

Ends with a verdict on four questions: did the gateway answer only documented statuses
(no 5xx but 502/503/504), was any send both refused to its caller and delivered to 8x8,
was any send delivered to a number opted out more than OPTOUT_GRACE_S earlier, and did
worker memory stay flat. Writes `soak.json` (and `soak.png` with matplotlib).

Besides the mixed sends, every BIG_EVERY_S a batch of BIG_BATCH messages (the largest
8x8 takes), and every OPTOUT_EVERY_S an opt-out of a number still being sent to, made
through a second gateway process on the same Redis (one worker records it, another
enforces it). Redis runs with AOF (fsync always), as the README asks, so a restart keeps
the opt-outs.

Fault cycle (every 60 s, from second 10 of the cycle): Redis killed for 8 s then
restarted; 8x8 answering 503 for 5 s; 8x8 dropping connections for 3 s; 8x8 slower
than the gateway's upstream timeout for 4 s; 8x8 answering 429 for 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from tests.support.gatewayproc import (
    ADMIN_TOKEN,
    API_KEY,
    CLIENT_TOKEN,
    GatewayProcess,
    base_config,
)
from tests.support.redisproc import RedisServer, free_port
from tests.support.simproc import SimProcess

LIMIT, BURST, RATE = 200, 5, 150  # the subaccount's limit, and the offered rate
BIG_BATCH, BIG_EVERY_S = 10_000, 15.0
OPTOUT_EVERY_S, OPTOUT_GRACE_S = 0.5, 1.0
ADMIN_OPTOUTS = "/admin/v1/accounts/acme/optouts/"
UNKNOWN_OUTCOME = {"upstream.timeout", "upstream.error"}  # 8x8 may have taken these
PATHS = {
    "text": "/chatapps/api/v1/subaccounts/acme_main/messages",
    "sms": "/sms/api/v1/subaccounts/acme_main/messages",
    "otp": "/verify/api/v2/subaccounts/acme_otp/sessions",
}


def number_of(i: int) -> str:
    return f"+659{i % 5000:07d}"


def body(kind: str, i: int) -> dict[str, Any]:
    number = number_of(i)
    cmid = f"soak-{i}"
    if kind == "text":
        return {"user": {"msisdn": number}, "type": "text", "content": {"text": "x"},
                "clientMessageId": cmid}  # fmt: skip
    if kind == "sms":
        return {"destination": number, "text": "x", "clientMessageId": cmid}
    return {"destination": f"+658{i % 50_000:07d}", "channel": "sms", "clientMessageId": cmid}


def fault_schedule(sim: SimProcess, redis: RedisServer) -> list[tuple[float, str, Any]]:
    return [
        (10, "redis down", lambda: redis.stop(kill=True)),
        (18, "redis up", redis.start),
        (25, "8x8 503", lambda: sim.configure(fail_status=503)),
        (30, "8x8 ok", lambda: sim.configure(fail_status=None)),
        (35, "8x8 drops", lambda: sim.configure(drop=True)),
        (38, "8x8 ok", lambda: sim.configure(drop=False)),
        (42, "8x8 slow", lambda: sim.configure(delay_ms=2500)),
        (46, "8x8 ok", lambda: sim.configure(delay_ms=0)),
        (50, "8x8 429", lambda: sim.configure(fail_status=429, retry_after_s=1)),
        (53, "8x8 ok", lambda: sim.configure(fail_status=None)),
    ]


def big_batch(n: int) -> dict[str, Any]:
    """BIG_BATCH texts to the same numbers as the mixed sends (so opt-outs hit them too)."""
    return {"messages": [
        {"user": {"msisdn": number_of(n * BIG_BATCH + j)}, "type": "text",
         "content": {"text": "x"}, "clientMessageId": f"big-{n}-{j}"}
        for j in range(BIG_BATCH)
    ]}  # fmt: skip


async def drive(url: str, admin_url: str, duration_s: float,
                faults: list[tuple[float, str, Any]], workers: list[int]) -> dict[str, Any]:  # fmt: skip
    results: dict[str, tuple[int, str]] = {}
    optouts: dict[str, float] = {}  # number -> epoch seconds its opt-out was acknowledged
    events: list[tuple[float, str]] = []
    rss: list[tuple[float, list[int]]] = []
    headers = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    kinds = itertools.cycle(["text"] * 6 + ["sms"] * 3 + ["otp"])
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:  # fmt: skip

        async def one(kind: str, i: int) -> None:
            payload = body(kind, i)
            try:
                async with session.post(url + PATHS[kind], json=payload, headers=headers) as r:
                    await r.read()
                    results[payload["clientMessageId"]] = (
                        r.status,
                        r.headers.get("X-Gateway-Reject", ""),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                results[payload["clientMessageId"]] = (0, type(exc).__name__)

        async def big(n: int) -> None:
            payload = big_batch(n)
            ids = [m["clientMessageId"] for m in payload["messages"]]
            path = PATHS["text"] + "/batch"
            try:
                async with session.post(url + path, json=payload, headers=headers) as r:
                    answer = await r.json(content_type=None)
                    status, code = r.status, r.headers.get("X-Gateway-Reject", "")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                results.update((cmid, (0, type(exc).__name__)) for cmid in ids)
                return
            dropped = {}
            if status == 200 and isinstance(answer, dict):
                dropped = {x["index"]: x["code"] for x in answer.get("gatewayRejected") or ()}
            for j, cmid in enumerate(ids):
                results[cmid] = (status, dropped.get(j, code if status != 200 else ""))

        async def opt_out(k: int) -> None:
            number = number_of(k * 997)  # spread over the pool
            try:
                async with session.put(admin_url + ADMIN_OPTOUTS + number,
                                       headers=admin_headers) as r:  # fmt: skip
                    if r.status == 204:
                        optouts.setdefault(number, time.time())
            except (aiohttp.ClientError, TimeoutError):
                pass  # not recorded: not counted

        admin_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        start = time.monotonic()
        next_big, next_optout, n_big, n_optout = 5.0, 1.0, 0, 0
        tasks, next_rss = [], 0.0
        for i in itertools.count():
            now = time.monotonic() - start
            if now >= duration_s:
                break
            cycle = now % 60
            for at, name, act in faults:
                key = f"{int(now // 60)}:{at}"
                if cycle >= at and key not in {e[1].split("|")[0] for e in events}:
                    events.append((now, f"{key}|{name}"))
                    threading.Thread(target=act, daemon=True).start()
            if now >= next_big:
                tasks.append(asyncio.create_task(big(n_big)))
                n_big, next_big = n_big + 1, next_big + BIG_EVERY_S
            if now >= next_optout:
                tasks.append(asyncio.create_task(opt_out(n_optout)))
                n_optout, next_optout = n_optout + 1, next_optout + OPTOUT_EVERY_S
            if now >= next_rss:
                rss.append((now, [procs.status_kb(pid) for pid in workers]))
                next_rss += 10
            tasks.append(asyncio.create_task(one(next(kinds), i)))
            await asyncio.sleep(max(0.0, start + (i + 1) / RATE - time.monotonic()))
        await asyncio.gather(*tasks)
    return {"results": results, "events": events, "rss": rss, "optouts": optouts,
            "big_batches": n_big}  # fmt: skip


def verdict(run: dict[str, Any], sim: SimProcess) -> dict[str, Any]:
    results: dict[str, tuple[int, str]] = run["results"]
    optouts: dict[str, float] = run["optouts"]
    delivered: set[str] = set()
    after_optout: list[str] = []
    for r in sim.requests(limit=10**7):
        if r["status"] != 200 or not isinstance(r.get("body"), dict):
            continue
        for m in r["body"].get("messages") or [r["body"]]:
            if not isinstance(m, dict) or "clientMessageId" not in m:
                continue
            delivered.add(m["clientMessageId"])
            user = m.get("user")
            number = user.get("msisdn") if isinstance(user, dict) else m.get("destination")
            since = optouts.get(number) if isinstance(number, str) else None
            if since is not None and r["time"] > since + OPTOUT_GRACE_S:
                after_optout.append(m["clientMessageId"])
    statuses = Counter(f"{s} {code}".strip() for s, code in results.values())
    bad_5xx = {k: n for k, n in statuses.items()
               if k[:1] == "5" and int(k[:3]) not in (502, 503, 504)}  # fmt: skip
    refused_and_delivered = [
        cmid for cmid, (status, code) in results.items()
        if code and code not in UNKNOWN_OUTCOME and cmid in delivered
    ]  # fmt: skip
    first, last = run["rss"][min(6, len(run["rss"]) - 1)][1], run["rss"][-1][1]
    growth = max((b - a) / a for a, b in zip(first, last, strict=True))
    return {
        "sends": len(results),
        "statuses": dict(statuses),
        "undocumented_5xx": bad_5xx,
        "refused_and_delivered": len(refused_and_delivered),
        "optouts": len(optouts),
        "big_batches": run["big_batches"],
        "delivered_after_optout": len(after_optout),
        "rss_kb_first_minute": first,
        "rss_kb_end": last,
        "rss_growth": round(growth, 4),
        "upstream_max_window": sim.stats()["max_window"].get("acme_main"),
        "faults": len(run["events"]),
        "ok": not bad_5xx and not refused_and_delivered and not after_optout and growth < 0.10,
    }


def draw(result: dict[str, Any], path: Path) -> None:
    """soak.png beside soak.json (skipped, saying so, without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from bench import charts
    except ImportError:
        print("soak.png not drawn: matplotlib is missing (pip install -e '.[bench]')")
        return
    charts.soak(result, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=f"bench/out/soak-{time.strftime('%Y%m%d-%H%M%S')}")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    with RedisServer(appendonly=True, args=("--appendfsync", "always")) as redis, \
            SimProcess(api_key=API_KEY, subaccount_rps=LIMIT, record_limit=10**7) as sim:  # fmt: skip
        cfg = base_config(
            sim.url, redis={"url": redis.url, "on_failure": "local"},
            server={"workers": args.workers}, upstream={"timeout_s": 2},
            limits={"subaccount_rps": LIMIT, "subaccount_burst": BURST, "max_wait_ms": 100},
        )  # fmt: skip
        other = {**cfg, "server": {**cfg["server"], "workers": 1, "port": free_port()}}
        with GatewayProcess(tmp, cfg) as gw, GatewayProcess(tmp, other, name="admin") as gw2:
            time.sleep(1.0)
            assert gw.proc is not None
            workers = procs.children(gw.proc.pid) if args.workers > 1 else [gw.proc.pid]
            faults = fault_schedule(sim, redis)
            run = asyncio.run(drive(gw.url, gw2.url, args.duration, faults, workers))
            result = {"command": "python -m bench.soak " + " ".join(sys.argv[1:]),
                      "duration_s": args.duration, "rate": RATE, "limit": LIMIT,
                      **verdict(run, sim), "events": run["events"], "rss": run["rss"]}  # fmt: skip
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    draw(result, out / "soak.png")
    summary = {k: v for k, v in result.items() if k not in ("events", "rss")}
    print(json.dumps(summary, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
