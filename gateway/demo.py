"""`gateway demo`: the 8x8 simulator and a gateway pointed at it, on the in-process store,
with a dummy 8x8 key and fresh client, admin and webhook tokens printed for the newcomer."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import signal

from gateway import logs
from gateway.config import ClientConfig, Config, ServerConfig, UpstreamConfig
from gateway.simulator import server as simulator

DEMO_KEY = "demo-8x8-key"
SUBACCOUNT = "demo_main"


def demo_config(port: int, sim_url: str, token: str) -> Config:
    urls = {p: f"{sim_url}/{p}" for p in ("chatapps", "sms", "verify", "contacts")}
    return Config(
        server=ServerConfig(host="127.0.0.1", port=port, shutdown_delay_s=0),
        upstream=UpstreamConfig(account_id="demo", urls=urls, timeout_s=5),
        clients=(
            ClientConfig(
                name="demo",
                token_sha256=(hashlib.sha256(token.encode()).hexdigest(),),
                subaccounts=("*",),
            ),
        ),
    )


def run(port: int, sim_port: int) -> int:
    from gateway.server import run_async

    return run_async(_run(port, sim_port))


async def _run(port: int, sim_port: int) -> int:
    from aiohttp import web

    from gateway.app import build_app
    from gateway.front import FrontRunner

    logs.configure()
    sim_runner, sim_port = await simulator.start(
        simulator.SimConfig(api_key=DEMO_KEY), "127.0.0.1", sim_port
    )
    sim_url = f"http://127.0.0.1:{sim_port}"
    token, admin, webhook = (secrets.token_urlsafe(18) for _ in range(3))
    cfg = demo_config(port, sim_url, token)
    env = {
        "EIGHTX8_API_KEY": DEMO_KEY,
        "GATEWAY_ADMIN_TOKEN": admin,
        "GATEWAY_WEBHOOK_SECRET": webhook,
    }
    runner = FrontRunner(build_app(cfg, DEMO_KEY, env), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    print(
        f"""
8x8 simulator: {sim_url}   (what arrived: {sim_url}/_sim/requests)
gateway:       {base}      (in-process store, dummy 8x8 key)
client token:  {token}
admin token:   {admin}
webhook secret:{webhook}

Send a WhatsApp text through the gateway:
  curl -s {base}/chatapps/api/v1/subaccounts/{SUBACCOUNT}/messages \\
    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\
    -d '{{"user": {{"msisdn": "+6591234567"}}, "type": "text", "content": {{"text": "hi"}}}}'

Ctrl-C stops both.
""",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await sim_runner.cleanup()
    return 0
