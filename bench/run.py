"""Orchestration: parse the command line, start the stack, run the chosen scenarios,
write report.json and the plots, print the summary table."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import failure, memory, procs, profile, report, scenarios, wrk
from bench.measure import Ctx

ALL = (1, 2, 3, 4, 5, 6, 7)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway against a bare proxy and the 8x8 simulator (issue 5).",
    )
    p.add_argument("--scenarios", default=",".join(map(str, ALL)), help="e.g. 1,2,3")
    p.add_argument("--workers", type=int, default=2, help="gateway and bare proxy processes")
    p.add_argument("--rounds", type=int, default=3, help="medians of this many rounds")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="closed loop: seconds unmeasured")
    p.add_argument("--connections", type=int, default=64, help="closed loop: connections")
    p.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="closed loop generator (open loop is always the Python one)",
    )
    p.add_argument("--out", default=None, help="report folder (default bench/out/<time>)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy a gateway worker during scenario 1 (needs py-spy)",
    )
    p.add_argument("--smoke", action="store_true", help="every scenario, a few seconds")
    p.add_argument(
        "--redis",
        choices=("standalone", "cluster"),
        default="standalone",
        help="the gateway's Redis: one server, or a local 3+3 Cluster (scenarios 1-4)",
    )
    args = p.parse_args(argv)
    args.chosen = sorted({int(x) for x in args.scenarios.split(",") if x.strip()})
    if args.redis == "cluster" and not set(args.chosen) <= {1, 2, 3, 4}:
        p.error("--redis cluster runs scenarios 1-4 (5-7 drive redis-server itself)")
    if not set(args.chosen) <= set(ALL):
        p.error(f"--scenarios: choose from {ALL}")
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.5
    return args


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    redis_v = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_v,
        "load_average_at_start": os.getloadavg(),
    }


def source_state() -> dict[str, Any]:
    """Which code was measured: the commit and any uncommitted gateway/lua changes."""

    def git(*args: str) -> str:
        found = subprocess.run(["git", *args], cwd=procs.REPO_ROOT, capture_output=True,
                               text=True, check=False)  # fmt: skip
        return found.stdout.strip()

    changed = git("status", "--porcelain", "--", "gateway", "lua").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else procs.REPO_ROOT / "bench" / "out" / stamp
    out.mkdir(parents=True, exist_ok=True)
    wrk_path = None if args.loadgen == "python" else wrk.ensure_wrk()
    if args.loadgen == "wrk" and wrk_path is None:
        print("bench: wrk is not installed and could not be installed", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {
        "command": command.strip(),
        "started": stamp,
        "machine": machine(),
        "workers": args.workers,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "smoke": args.smoke,
        "redis": args.redis,
        "closed_loop_generator": "wrk" if wrk_path else "python",
        "open_loop_generator": "python",
        "source": source_state(),
    }
    result: dict[str, Any] = {"meta": meta, "scenarios": {}, "errors": {}}
    stack = procs.Stack(workdir, args.workers, args.redis)
    ctx = Ctx(
        stack,
        workdir,
        out,
        args.rounds,
        args.duration,
        args.warmup,
        args.connections,
        args.smoke,
        wrk_path,
    )
    runners: dict[int, Callable[[], dict[str, Any]]] = {
        1: lambda: _with_profile(ctx, args.profile),
        2: lambda: scenarios.s2_latency(ctx),
        3: lambda: scenarios.s3_accuracy(ctx),
        4: lambda: scenarios.s4_otp_storm(ctx),
        5: lambda: scenarios.s5_compliance_scale(ctx, result["scenarios"].get("1")),
        6: lambda: failure.s6_redis_failure(ctx),
        7: lambda: memory.s7_memory(ctx),
    }
    started = time.monotonic()
    try:
        ctx.log(
            f"stack up: gateway {stack.gateway.url} ({args.workers} workers), bare "
            f"{stack.bare.url}, simulator {stack.sim.url}, redis :{stack.redis.port}; "
            f"closed loop: {meta['closed_loop_generator']}"
        )
        for n in args.chosen:
            t0 = time.monotonic()
            try:
                result["scenarios"][str(n)] = runners[n]()
            except Exception:
                result["errors"][str(n)] = traceback.format_exc()
                ctx.log(f"scenario {n} failed:\n{result['errors'][str(n)]}")
            ctx.log(f"scenario {n} took {time.monotonic() - t0:.1f}s")
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    rows = report.summary_rows(result)
    result["summary"] = [
        dict(zip(("figure", "value", "target", "met"), r, strict=True)) for r in rows
    ]
    report.write_json(result, out)
    try:
        meta["plots"] = report.plots(result, out)
    except Exception:
        result["errors"]["plots"] = traceback.format_exc()
    report.write_json(result, out)
    (out / "summary.md").write_text(report.markdown(result, rows), encoding="utf-8")
    print(report.table(rows))
    print(f"\nreport: {out / 'report.json'} ({meta['elapsed_s']}s)")
    for name, text in result["errors"].items():
        print(f"\nERROR in {name}:\n{text}", file=sys.stderr)
    return 1 if result["errors"] else 0


def _with_profile(ctx: Ctx, enabled: bool) -> dict[str, Any]:
    if not enabled:
        return scenarios.s1_throughput(ctx)
    stack = ctx.stack
    with (
        profile.PySpy(stack.gateway_workers()[0], ctx.out, "gateway") as gw,
        profile.PySpy(stack.bare_workers()[0], ctx.out, "bare") as bare,
    ):
        found = scenarios.s1_throughput(ctx)
    found["profile"] = {"gateway": gw.summary, "bare": bare.summary}
    return found
