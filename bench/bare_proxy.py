"""The baseline: a bare aiohttp pass-through proxy with no checks at all.

    EIGHTX8_API_KEY=K python -m bench.bare_proxy --port P --upstream http://sim --workers N

It does what the gateway does minus the policy: read the body, swap the caller's
Authorization for the 8x8 key, keep the same request headers, forward over one pooled
keep-alive session per process (the gateway's session settings), pass 8x8's status, body
and the same answer headers back. N processes share the port with SO_REUSEPORT, as the
gateway's workers do, and each runs on uvloop. It logs nothing and counts nothing: what
the gateway costs beyond this is the price of its checks, logs and metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.upstream import FORWARD_REQUEST, FORWARD_RESPONSE

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


def build_app(upstream: str, api_key: str, timeout_s: float = 10.0) -> web.Application:
    auth = f"Bearer {api_key}"
    base = upstream.rstrip("/")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        # the same settings as gateway/upstream.py's session
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=1000, ttl_dns_cache=300, keepalive_timeout=30
        )
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0))
        app[SESSION] = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
        )
        yield
        await app[SESSION].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {"Authorization": auth}
        for name in FORWARD_REQUEST:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        body = await request.read() if request.method != "GET" else None
        url = base + request.rel_url.raw_path_qs
        try:
            async with request.app[SESSION].request(
                request.method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                payload = await resp.read()
                kept = CIMultiDict(
                    (k, v) for k, v in resp.headers.items() if k.lower() in FORWARD_RESPONSE
                )
                return web.Response(status=resp.status, body=payload, headers=kept)
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502, body=b'{"error":"upstream"}')

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _serve(host: str, port: int, upstream: str, api_key: str, reuse: bool) -> None:
    runner = web.AppRunner(build_app(upstream, api_key), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse, backlog=2048).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def _run(host: str, port: int, upstream: str, api_key: str, reuse: bool) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(host, port, upstream, api_key, reuse))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the 8x8 (simulator) base URL")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--api-key-env", default="EIGHTX8_API_KEY")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env, "")
    if args.workers <= 1:
        _run(args.host, args.port, args.upstream, api_key, False)
        return 0
    children: list[int] = []

    def forward(signum: int, _: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                _run(args.host, args.port, args.upstream, api_key, True)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    for child in children:
        os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
