"""docs/dashboard.png: the Grafana dashboard's panels with data, so a reader sees what
on-call sees. A short run (2 workers, Redis, the simulator) with faults on a timeline, a
real Prometheus (Debian's package) scraping it every second, and every panel drawn from the
dashboard's own PromQL through Prometheus' query API.

    .venv/bin/python scripts/dashboard.py [--duration 150] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.gatewayproc import (  # noqa: E402
    API_KEY,
    CLIENT_TOKEN,
    OTHER_TOKEN,
    WEBHOOK_SECRET,
    GatewayProcess,
    base_config,
)
from tests.support.redisproc import RedisServer  # noqa: E402
from tests.support.simproc import SimProcess, free_port  # noqa: E402

DASHBOARD = ROOT / "deploy" / "grafana" / "gateway-dashboard.json"
SENDS = [
    ("/chatapps/api/v1/subaccounts/acme_main/messages", CLIENT_TOKEN, "text"),
    ("/sms/api/v1/subaccounts/acme_bills/messages", OTHER_TOKEN, "sms"),
    ("/verify/api/v2/subaccounts/acme_otp/sessions", CLIENT_TOKEN, "otp"),
]


def body(kind: str, i: int) -> dict[str, Any]:
    if kind == "text":
        return {"user": {"msisdn": f"+659{i % 5000:07d}"}, "type": "text",
                "content": {"text": "x"}}  # fmt: skip
    if kind == "sms":
        return {"destination": f"+659{i % 5000:07d}", "text": "x"}
    return {"destination": f"+658{i % 40:07d}", "channel": "sms"}  # repeats: OTP refusals


def faults(sim: SimProcess, redis: RedisServer, gw: GatewayProcess, t0: float) -> list[Any]:
    import signal

    return [
        (40, "8x8 answers 503", lambda: sim.configure(fail_status=503)),
        (52, "8x8 ok", lambda: sim.configure(fail_status=None)),
        (70, "8x8 limit below ours", lambda: sim.configure(subaccount_rps=30)),
        (82, "8x8 ok", lambda: sim.configure(subaccount_rps=1800)),
        (95, "Redis down", lambda: redis.stop(kill=True)),
        (108, "Redis up", redis.start),
        (120, "SIGHUP", lambda: gw.signal(signal.SIGHUP)),
    ]


async def drive(url: str, duration_s: float, rate: float, schedule: list[Any]) -> list[Any]:
    done: list[tuple[float, str]] = []
    start = time.monotonic()
    sends = itertools.cycle(SENDS * 3 + [SENDS[0]] * 3)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one(path: str, token: str, kind: str, i: int) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            if i % 97 == 0:
                headers["Authorization"] = "Bearer wrong"  # the odd 401
            try:
                async with session.post(url + path, json=body(kind, i), headers=headers) as r:
                    await r.read()
            except (aiohttp.ClientError, TimeoutError):
                pass

        async def inbound(i: int) -> None:
            event = {"namespace": "SMS", "eventType": "inbound_message_received",
                     "payload": {"source": f"+659{i % 5000:07d}",
                                 "body": "STOP" if i % 80 else "START"}}  # fmt: skip
            headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
            try:
                async with session.post(url + "/webhooks/inbound", json=event,
                                        headers=headers) as r:  # fmt: skip
                    await r.read()
            except (aiohttp.ClientError, TimeoutError):
                pass

        tasks = []
        for i in itertools.count():
            now = time.monotonic() - start
            if now >= duration_s:
                break
            for at, name, act in schedule:
                if now >= at and name not in {n for _, n in done}:
                    done.append((now, name))
                    threading.Thread(target=act, daemon=True).start()
            path, token, kind = next(sends)
            tasks.append(asyncio.create_task(one(path, token, kind, i)))
            if i % 40 == 0:  # now and then an inbound STOP or START from 8x8's webhook
                tasks.append(asyncio.create_task(inbound(i)))
            await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return done


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    query = f"{prom}/api/v1/query_range?{params}"  # a local http:// URL of our own
    with urllib.request.urlopen(query, timeout=30) as r:  # noqa: S310
        answer = json.loads(r.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def legend(fmt: str, labels: dict[str, str]) -> str:
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def draw(panels: list[dict[str, Any]], data: list[list[Any]], events: list[Any],
         t0: float, path: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(15, 3.1 * rows), sharex=True)
    for ax, panel, targets in zip(axes.flat, panels, data, strict=False):
        for fmt, series in targets:
            for s in series:
                xs = [(float(t) - t0) for t, _ in s["values"]]
                ys = [float(v) for _, v in s["values"]]
                ax.plot(xs, ys, lw=1.2, label=legend(fmt, s["metric"])[:40])
        for at, _ in events:
            ax.axvline(at, color="grey", lw=0.6, ls="--")
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        ax.set_title(f"{panel['title']}  [{unit}]", fontsize=9)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", transform=ax.transAxes)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    top = axes.flat[0]
    for at, name in events:
        top.annotate(name, (at, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                     fontsize=6, va="top", ha="right", color="grey")  # fmt: skip
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the run")
    fig.suptitle("8x8 send gateway dashboard (deploy/grafana) over a short run: "
                 "dashed lines = injected faults", fontsize=11)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=150)
    p.add_argument("--rate", type=float, default=120)
    p.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    args = p.parse_args(argv)
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus is missing (Debian: apt-get install -y prometheus)", file=sys.stderr)
        return 1
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    tmp = Path(tempfile.mkdtemp(prefix="gw-dashboard-"))
    with RedisServer() as redis, SimProcess(api_key=API_KEY) as sim:
        cfg = base_config(
            sim.url,
            server={"workers": 2},
            redis={"url": redis.url, "on_failure": "local"},
            upstream={"timeout_s": 2, "breaker_failures": 10, "breaker_open_s": 3},
            limits={"subaccount_rps": 200, "subaccount_burst": 5, "max_wait_ms": 100},
            subaccounts={"acme_main": {"rps": 40, "burst": 2}, "acme_bills": {"rps": 100}},
        )
        with GatewayProcess(tmp, cfg) as gw:
            prom_port = free_port()
            (tmp / "prometheus.yml").write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "scrape_configs:\n  - job_name: gateway\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{gw.port}']}}]\n"
            )
            prom = subprocess.Popen(
                [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"),
            )  # fmt: skip
            try:
                time.sleep(3)
                t0 = time.time()
                events = asyncio.run(
                    drive(gw.url, args.duration, args.rate, faults(sim, redis, gw, t0))
                )
                time.sleep(3)
                end = time.time()
                url = f"http://127.0.0.1:{prom_port}"
                data = [
                    [(t.get("legendFormat", ""), query_range(url, t["expr"], t0, end))
                     for t in panel["targets"]]
                    for panel in panels
                ]  # fmt: skip
            finally:
                prom.terminate()
                prom.wait(10)
    draw(panels, data, events, t0, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
