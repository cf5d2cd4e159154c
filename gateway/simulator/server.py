"""An 8x8 CPaaS stand-in for integration tests and benchmarks.

One aiohttp server answers every operation of 8x8's chat-apps, SMS, Verify and Contacts
APIs under a product prefix (`/chatapps`, `/sms`, `/verify`, `/contacts`) with 8x8's answer
and error shapes, checks bodies as 8x8's schemas do, enforces 8x8's limits exactly
(per subaccount and per source IP, in any sliding one-second window), records what arrived,
injects faults on request, and is driven through `/_sim/` (see gateway/simulator/control.py).

    python -m gateway.simulator --host 127.0.0.1 --port 0 --subaccount-rps 1800 --api-key K

prints one line `{"event": "listening", "url": "http://127.0.0.1:PORT"}` once it listens,
then serves until SIGTERM or SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import orjson
from aiohttp import web

from gateway.simulator import captcha
from gateway.simulator.app import Simulator
from gateway.simulator.config import SimConfig
from gateway.simulator.control import SIM, add_control_routes
from gateway.simulator.routes import ROUTES, UNKNOWN

__all__ = ["SIM", "SimConfig", "Simulator", "build_app", "main", "start"]

MAX_BODY_BYTES = 64 * 1024 * 1024  # 10,000-message batches are several MB


def build_app(config: SimConfig) -> web.Application:
    """The simulator as an aiohttp app; its state is `app[SIM]`."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    sim = Simulator(config)
    app[SIM] = sim
    add_control_routes(app)
    captcha.setup(app)  # a CAPTCHA provider's siteverify (gateway/simulator/captcha.py)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, sim.handler(route))
    app.router.add_route(UNKNOWN.method, UNKNOWN.path, sim.handler(UNKNOWN))
    return app


async def start(
    config: SimConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve the simulator in the running loop; port 0 picks a free port, returned."""
    runner = web.AppRunner(build_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)


def _parse(argv: Sequence[str] | None) -> tuple[SimConfig, str, int]:
    parser = argparse.ArgumentParser(prog="python -m gateway.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--subaccount-rps", type=int, default=1800)
    parser.add_argument("--ip-rps", type=int, default=3000)
    parser.add_argument("--api-key", default=None, help="require 'Bearer KEY' when set")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--record-limit", type=int, default=10000)
    parser.add_argument("--retry-after-s", type=int, default=1)
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--fail-status", type=int, default=None)
    parser.add_argument("--drop", action="store_true")
    args = parser.parse_args(argv)
    config = SimConfig(
        subaccount_rps=args.subaccount_rps,
        ip_rps=args.ip_rps,
        api_key=args.api_key,
        delay_ms=args.delay_ms,
        record_limit=args.record_limit,
        fail_status=args.fail_status,
        drop=args.drop,
        retry_after_s=args.retry_after_s,
        window_s=args.window_s,
    )
    return config, args.host, args.port


async def _serve(config: SimConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner, bound = await start(config, host, port)
    shown = f"[{host}]" if ":" in host else host
    line = orjson.dumps({"event": "listening", "url": f"http://{shown}:{bound}"})
    sys.stdout.write(line.decode() + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    config, host, port = _parse(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(config, host, port))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(config, host, port))
    return 0
