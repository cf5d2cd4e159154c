"""What the gateway's front handler (gateway/front.py) saves per request, on its own.

    python -m bench.front [--rounds 3] [--seconds 6]

Serves one trivial handler (read the body, answer a small JSON) three ways, each in its own
process on uvloop, and drives each with wrk (32 connections, a POST with a JSON body):

- `application`: a `web.Application` with one middleware, an `on_response_prepare` hook,
  an own route and the catch-all route, as the gateway was served before issue 17;
- `front`: the same application behind `gateway.front`'s shape (the catch-all's
  match-info built once, the middleware called directly, own paths to the router);
- `server`: aiohttp's low-level `web.Server` with one handler and no application at all.

It prints the server process's CPU µs per request (user + system over the measured run),
the variants alternating round by round: ratios of one run, as everywhere in bench/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = r"""
import asyncio, sys
import uvloop
from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

variant, port = sys.argv[1], int(sys.argv[2])
ANSWER = b'{"umid":"x","status":{"state":"queued"}}'

@web.middleware
async def observe(request, handler):
    request["log"] = {"route": "x"}
    return await handler(request)

async def hook(request, response):
    response.headers["X-Request-Id"] = "abc"

async def handle(request):
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")

async def main():
    app = web.Application(middlewares=[observe])
    app.on_response_prepare.append(hook)
    app.router.add_get("/healthz", handle)
    route = app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if variant == "front":
        match = UrlMappingMatchInfo({"tail": ""}, route)
        match.add_app(app)
        match.freeze()
        fallback = runner.server.request_handler
        async def front(request):
            if request.rel_url.raw_path[1:].partition("/")[0] == "healthz":
                return await fallback(request)
            request._match_info = match
            return await observe(request, handle)
        runner.server.request_handler = front
    elif variant == "server":
        async def bare(request):
            await request.read()
            response = web.Response(body=ANSWER, content_type="application/json")
            response.headers["X-Request-Id"] = "abc"
            return response
        runner = web.ServerRunner(web.Server(bare, access_log=None))
        await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()

uvloop.run(main())
"""

WRK = """wrk.method = "POST"
wrk.body = '{"destination":"+6591234567","text":"hi"}'
wrk.headers["Content-Type"] = "application/json"
"""
VARIANTS = ("application", "front", "server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(variant: str, seconds: int, wrk: str, work: Path) -> tuple[int, float]:
    port = free_port()
    (work / "srv.py").write_text(SERVER)
    (work / "post.lua").write_text(WRK)
    proc = subprocess.Popen([sys.executable, str(work / "srv.py"), variant, str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api/v1/subaccounts/x/messages"
        script = str(work / "post.lua")
        subprocess.run([wrk, "-t1", "-c32", "-d2s", "-s", script, url], capture_output=True)
        before = cpu_s(proc.pid)
        out = subprocess.run(
            [wrk, "-t1", "-c32", f"-d{seconds}s", "-s", script, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        used = cpu_s(proc.pid) - before
        done = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
        return done, used * 1e6 / done
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 1
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for variant in VARIANTS:
                n, us = one(variant, args.seconds, wrk, Path(tmp))
                results[variant].append(us)
                print(f"round {r + 1} {variant}: {n} requests, {us:.1f} µs CPU/request")
    print("| variant | CPU µs/request, median of rounds | all rounds |")
    print("| --- | --- | --- |")
    for variant, values in results.items():
        mid = sorted(values)[len(values) // 2]
        print(f"| {variant} | {mid:.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
