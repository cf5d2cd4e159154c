"""Soak run: mixed traffic for a long time while Redis and 8x8 fail on a schedule.

    python -m bench.soak --duration 600 --out bench/out/soak

Ends with a verdict on four questions: did the gateway answer only documented statuses
(no 5xx but 502/503/504), was any send both refused to its caller and delivered to 8x8,
was any send delivered to a number opted out more than OPTOUT_GRACE_S earlier, and did
worker memory stay flat after the warm-up (`memory_verdict`). Writes `soak.json` (and
`soak.png` with matplotlib).

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
import os
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
# Memory (memory_verdict): judged from the end of the warm-up, two full fault cycles
# (every fault twice, Redis restarted twice with the full snapshot reload that follows,
# 8 batches of BIG_BATCH, 240 opt-outs), to the end; runs shorter than 2 x WARMUP_S are
# not judged. PROBE_S: how often each worker's probe (bench/memtrace.py) reads its heap.
WARMUP_S, MEMORY_BOUND, RSS_TARGET_MB, PROBE_S = 120.0, 0.10, 120, 10.0
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
    hwm: list[tuple[float, list[int]]] = []  # the peak RSS so far
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
        start, started_at = time.monotonic(), time.time()
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
                hwm.append((now, [procs.status_kb(pid, "VmHWM") for pid in workers]))
                next_rss += 10
            tasks.append(asyncio.create_task(one(next(kinds), i)))
            await asyncio.sleep(max(0.0, start + (i + 1) / RATE - time.monotonic()))
        await asyncio.gather(*tasks)
    return {"results": results, "events": events, "rss": rss, "hwm": hwm, "optouts": optouts,
            "big_batches": n_big, "started_at": started_at}  # fmt: skip


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
    return {
        "sends": len(results),
        "statuses": dict(statuses),
        "undocumented_5xx": bad_5xx,
        "refused_and_delivered": len(refused_and_delivered),
        "optouts": len(optouts),
        "big_batches": run["big_batches"],
        "delivered_after_optout": len(after_optout),
        "upstream_max_window": sim.stats()["max_window"].get("acme_main"),
        "faults": len(run["events"]),
        "ok": not bad_5xx and not refused_and_delivered and not after_optout,
    }


def memory_verdict(run: dict[str, Any], heaps: list[list[dict[str, Any]]],
                   duration_s: float) -> dict[str, Any]:  # fmt: skip
    """Is worker memory flat once warm? Two checks, each within MEMORY_BOUND:

    - the heap in use (what the worker's objects hold, from its probe): its lowest reading
      in the last minute against its lowest in the minute after the warm-up (the lowest:
      a batch in flight holds ~10 MB for a moment). A leak grows it; allocator slack not.
    - RSS at the end against the peak RSS the warm-up reached (VmHWM at WARMUP_S). After a
      peak (a 10,000-message batch) pymalloc keeps arenas that a few surviving objects
      pin and glibc keeps freed pages, so RSS climbs for minutes towards the warm-up's peak
      footprint without anything being live in it; it must not go past it.

    RSS against the first minute (the old check) and the RSS slope over the run's second
    half are reported too, not judged."""
    rss, hwm = run["rss"], run["hwm"]
    first = rss[min(6, len(rss) - 1)][1]
    warm_i = next((i for i, (t, _) in enumerate(rss) if t >= WARMUP_S), len(rss) - 1)
    warm_peak, end = hwm[warm_i][1], rss[-1][1]
    rss_growth = max((b - a) / a for a, b in zip(warm_peak, end, strict=True))
    heap_warm, heap_end = [], []
    for samples in heaps:
        times = [(x["time"] - run["started_at"], x["heap_kb"]) for x in samples]
        warm = [kb for t, kb in times if WARMUP_S <= t < WARMUP_S + 60]
        last = [kb for t, kb in times if t >= duration_s - 60]
        heap_warm.append(min(warm, default=0))
        heap_end.append(min(last, default=0))
    probed = len(heaps) == len(end) and all(heap_warm) and all(heap_end)
    heap_growth = (max((b - a) / a for a, b in zip(heap_warm, heap_end, strict=True))
                   if probed else None)  # fmt: skip
    judged = duration_s >= 2 * WARMUP_S
    ok = (not judged) or (probed and heap_growth is not None and heap_growth < MEMORY_BOUND
                          and rss_growth < MEMORY_BOUND
                          and max(end) / 1024 < RSS_TARGET_MB)  # fmt: skip
    return {
        "memory_judged": judged,
        "memory_ok": ok,
        "warmup_s": WARMUP_S,
        "rss_kb_first_minute": first,
        "rss_kb_warm": rss[warm_i][1],
        "rss_kb_warm_peak": warm_peak,
        "rss_kb_end": end,
        "rss_growth": round(rss_growth, 4),
        "rss_growth_from_first_minute": round(
            max((b - a) / a for a, b in zip(first, end, strict=True)), 4
        ),
        "rss_slope_mb_per_min_second_half": _slope(rss, duration_s / 2),
        "heap_kb_warm": heap_warm,
        "heap_kb_end": heap_end,
        "heap_growth": None if heap_growth is None else round(heap_growth, 4),
        "arenas_end": [s[-1]["arenas"] if s else None for s in heaps],
    }


def _slope(series: list[tuple[float, list[int]]], since_s: float) -> list[float]:
    """Least-squares slope of each worker's RSS from `since_s` on, in MB a minute."""
    points = [(t, kb) for t, kb in series if t >= since_s]
    if len(points) < 2:
        return []
    n, mt = len(points), sum(t for t, _ in points) / len(points)
    out = []
    for w in range(len(points[0][1])):
        my = sum(kb[w] for _, kb in points) / n
        num = sum((t - mt) * (kb[w] - my) for t, kb in points)
        den = sum((t - mt) ** 2 for t, _ in points)
        out.append(round(num / den * 60 / 1024, 3) if den else 0.0)
    return out


def read_probes(folder: Path, workers: list[int]) -> list[list[dict[str, Any]]]:
    """Each worker's probe readings (bench/memtrace.py), in `workers` order."""
    out = []
    for pid in workers:
        path = folder / f"{pid}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        out.append([json.loads(line) for line in lines if line.strip()])
    return out


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


def memtrace_env(out: Path, every_s: float) -> dict[str, str]:
    """The environment that starts bench/memtrace.py in every worker: the probe always, the
    full reports every `every_s` seconds when asked."""
    root = str(Path(__file__).resolve().parents[1])
    traced = {"PYTHONTRACEMALLOC": "1"} if os.environ.get("GW_MEMTRACE_TRACEMALLOC") else {}
    trim = {"GW_MEMTRACE_TRIM": "1"} if os.environ.get("GW_MEMTRACE_TRIM") else {}
    return {**traced, **trim, "GW_MEMTRACE_ROOT": root,
            "PYTHONPATH": f"{root}/bench/memtrace_site",
            "GW_MEMTRACE_DIR": str((out / "memtrace").resolve()),
            "GW_MEMTRACE_PROBE_S": str(PROBE_S), "GW_MEMTRACE_EVERY_S": str(every_s)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=f"bench/out/soak-{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--memtrace", type=float, default=0, metavar="SECONDS",
                   help="a full memory report from each worker into OUT/memtrace every "
                        "SECONDS (bench/memtrace.py; GW_MEMTRACE_TRACEMALLOC=1 in the "
                        "environment adds tracemalloc, which inflates RSS)")  # fmt: skip
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "memtrace").mkdir(parents=True, exist_ok=True)
    for old in (out / "memtrace").iterdir():  # an earlier run's probes into the same folder
        old.unlink()
    tmp = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    with RedisServer(appendonly=True, args=("--appendfsync", "always")) as redis, \
            SimProcess(api_key=API_KEY, subaccount_rps=LIMIT, record_limit=10**7) as sim:  # fmt: skip
        cfg = base_config(
            sim.url, redis={"url": redis.url, "on_failure": "local"},
            server={"workers": args.workers}, upstream={"timeout_s": 2},
            limits={"subaccount_rps": LIMIT, "subaccount_burst": BURST, "max_wait_ms": 100},
        )  # fmt: skip
        other = {**cfg, "server": {**cfg["server"], "workers": 1, "port": free_port()}}
        with (
            GatewayProcess(tmp, cfg, env=memtrace_env(out, args.memtrace)) as gw,
            GatewayProcess(tmp, other, name="admin") as gw2,
        ):
            time.sleep(1.0)
            assert gw.proc is not None
            workers = procs.children(gw.proc.pid) if args.workers > 1 else [gw.proc.pid]
            faults = fault_schedule(sim, redis)
            run = asyncio.run(drive(gw.url, gw2.url, args.duration, faults, workers))
            heaps = read_probes(out / "memtrace", workers)
            checks = verdict(run, sim)
            memory = memory_verdict(run, heaps, args.duration)
            checks["ok"] = checks["ok"] and memory["memory_ok"]
            result = {"command": "python -m bench.soak " + " ".join(sys.argv[1:]),
                      "duration_s": args.duration, "rate": RATE, "limit": LIMIT,
                      **checks, **memory, "events": run["events"], "rss": run["rss"],
                      "hwm": run["hwm"], "started_at": run["started_at"],
                      "heap": heaps}  # fmt: skip
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    draw(result, out / "soak.png")
    summary = {k: v for k, v in result.items() if k not in ("events", "rss", "hwm", "heap")}
    print(json.dumps(summary, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
