"""Wiring: config + key → an aiohttp application with its store, upstream and routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway import admin, logs, messages, proxy, webhooks
from gateway.config import Config
from gateway.errors import error_response
from gateway.metrics import Metrics
from gateway.policy.decider import Decider
from gateway.state import LOG, STATE, State
from gateway.store import refresh, tail
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.snapshot import Compliance
from gateway.upstream import Upstream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_store(cfg: Config) -> Store:
    if not cfg.redis.url and cfg.redis.mode == "standalone":
        return MemoryStore()
    from gateway.store.connect import redis_store

    return redis_store(cfg.redis)


def build_app(
    cfg: Config, api_key: str, environ: Mapping[str, str], *, store: Store | None = None
) -> web.Application:
    metrics = Metrics()
    store = store if store is not None else make_store(cfg)
    divisor = cfg.redis.local_divisor or cfg.server.workers
    snapshot = None
    if isinstance(store, RedisStore) and cfg.redis.on_failure == "local" and cfg.redis.snapshot_s:
        snapshot = Compliance()
    decider = Decider(
        store,
        on_failure=cfg.redis.on_failure,
        divisor=divisor,
        timeout_s=cfg.redis.timeout_ms / 1000,
        on_fallback=lambda mode, n: metrics.fallback.labels(mode).inc(n),
        snapshot=snapshot,
        log=logs.get("gateway"),
        otp_on_failure=cfg.redis.otp_on_failure,
    )
    state = State(
        config=cfg,
        store=store,
        decider=decider,
        upstream=Upstream(
            cfg.upstream.urls,
            api_key,
            cfg.upstream.timeout_s,
            cfg.upstream.breaker_failures,
            cfg.upstream.breaker_open_s,
        ),
        metrics=metrics,
        log=logs.get("gateway"),
        secrets={
            "admin": environ.get(cfg.admin.token_env, ""),
            "webhook": environ.get(cfg.webhooks.secret_env, ""),
        },
        snapshot=snapshot,
    )
    app = web.Application(
        client_max_size=cfg.server.max_body_bytes, middlewares=[observe], handler_args=None
    )
    app[STATE] = state
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    admin.setup(app)
    webhooks.setup(app)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    messages.preload()
    await state.upstream.start()
    loop = asyncio.get_running_loop()
    flusher = loop.create_task(_flush_logs_and_metrics(state.metrics))
    copiers = []
    if state.snapshot is not None and isinstance(state.store, RedisStore):
        copiers.append(loop.create_task(
            refresh.run(state.snapshot, state.store.client, state.config.redis.snapshot_s,
                        state.log),
            name="snapshot-refresh",
        ))  # fmt: skip
        copiers.append(loop.create_task(
            tail.run(state.snapshot, state.store.client, state.log), name="snapshot-tail"
        ))  # fmt: skip
    yield
    flusher.cancel()
    state.metrics.flush()
    for task in copiers:
        task.cancel()
    await asyncio.gather(*copiers, return_exceptions=True)
    logs.flush()
    await state.decider.close()
    await state.upstream.close()
    await state.store.close()


async def _flush_logs_and_metrics(metrics: Metrics) -> None:
    """Buffered request lines reach stdout within LineWriter.FLUSH_S even when idle, and
    per-request counts reach the exported metrics about once a second."""
    ticks = 0
    while True:
        await asyncio.sleep(logs.LineWriter.FLUSH_S)
        logs.flush()
        ticks += 1
        if ticks % 5 == 0:
            metrics.flush()


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One log line and one metric per request; an unexpected error becomes JSON, not a
    traceback."""
    started = time.perf_counter()
    info: dict[str, Any] = {}
    request[LOG] = info
    state = request.app[STATE]
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # aiohttp's own (e.g. 405 from the router)
        response = error_response("route.unknown", exc.reason) if exc.status >= 400 else exc
    except Exception:
        state.log.exception("request.failed", method=request.method, **info)
        response = error_response("internal.error", "unexpected gateway error")
    route = info.get("route")
    if route is None:
        route = info["route"] = request.path if request.path in _OPS else "unrouted"
    decision = info.get("decision")
    if decision is None:
        decision = info["decision"] = response.headers.get("X-Gateway-Reject") or "ok"
    state.metrics.request(route, response.status, decision)
    if route not in _OPS:
        state.log.info(
            "request",
            method=request.method,
            status=response.status,
            ms=round((time.perf_counter() - started) * 1000, 2),
            **info,
        )
    return response


_OPS = frozenset({"/healthz", "/readyz", "/metrics"})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    mode = await state.decider.probe()
    ready = not state.draining and mode != "closed"
    body: dict[str, Any] = {"store": mode, "draining": state.draining}
    if state.snapshot is not None:
        body["snapshot"] = state.snapshot.stats()
    return web.Response(
        status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    payload, ctype = request.app[STATE].metrics.render()
    return web.Response(body=payload, headers={"Content-Type": ctype})
