"""Wiring: config + key → an aiohttp application with its store, upstream and routes."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from gateway import (
    admin,
    answers,
    captcha,
    idempotency,
    logs,
    messages,
    pii,
    proxy,
    shield,
    wareceipts,
    webhooks,
)
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
    if store.kind != "memory":
        _time_redis_calls(store, metrics)
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
        client_max_size=cfg.server.max_body_bytes,
        middlewares=[observe],
        handler_args={"auto_decompress": False},  # gateway/bodies.py decodes, within limits
    )
    app[STATE] = state
    app[idempotency.IDEMPOTENCY] = idempotency.for_store(store, cfg.redis.timeout_ms, state.log)
    app.cleanup_ctx.append(_lifecycle)
    app.on_response_prepare.append(_on_prepare)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if not cfg.server.metrics_port:
        app.router.add_get("/metrics", metrics_endpoint)
    admin.setup(app)
    webhooks.setup(app)
    wareceipts.setup(app)
    captcha.install(app, environ.get(cfg.captcha.secret_env, ""))
    pii.install(app)
    shield.install(app)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    messages.preload()
    await state.upstream.start()
    loop = asyncio.get_running_loop()
    flusher = loop.create_task(_flush_metrics(state))
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


async def _flush_metrics(state: State) -> None:
    """Per-request counts reach the exported metrics about once a second, with the state
    on-call watches (breakers, Redis health); the buckets' fill every few seconds."""
    ticks = 0
    while True:
        await asyncio.sleep(METRICS_FLUSH_S)
        state.metrics.flush()
        _sample(state)
        if ticks % BUCKETS_EVERY == 0:
            try:
                await _sample_buckets(state)
            except Exception as exc:  # Redis down: the Redis metrics say so already
                state.log.debug("metrics.buckets_failed", error=type(exc).__name__)
        ticks += 1


METRICS_FLUSH_S = 1.0
BUCKETS_EVERY = 5  # flushes between two reads of the buckets' fill


def _sample(state: State) -> None:
    m = state.metrics
    now = time.monotonic()
    for product, breaker in state.upstream.breakers.items():
        is_open = breaker.failures >= breaker.threshold and now < breaker.open_until
        m.breaker_open.labels(product).set(1 if is_open else 0)
    if state.store.kind != "memory":
        m.redis_healthy.set(1 if state.decider.healthy else 0)
    m.max_wait_seconds.set(state.config.limits.max_wait_ms / 1000)


async def _sample_buckets(state: State) -> None:
    cfg, plan = state.config, state.plan
    named = [("subaccount", sub, plan.subaccount(sub)[1]) for sub in sorted(state.metric_subs)]
    named.append(("egress_ip", cfg.limits.egress_ip, plan.egress))
    fills = await state.store.bucket_fill([spec for _, _, spec in named])
    for (kind, ident, spec), fill in zip(named, fills, strict=True):
        state.metrics.bucket_remaining.labels(kind, ident).set(fill.remaining)
        state.metrics.bucket_burst.labels(kind, ident).set(spec.burst)


def _time_redis_calls(store: Store, metrics: Metrics) -> None:
    """Count the time and failures of the store's Redis round trips. Wraps the bound
    methods on this one instance (the store stays a RedisStore for isinstance checks)."""
    for op in ("decide_many", "ping", "bucket_fill", "hold_buckets"):
        method = getattr(store, op, None)
        if method is not None:
            setattr(store, op, _timed(op, method, metrics))
            metrics.redis_errors.labels(op)  # a 0 series from the start, for rate()


def _timed(
    op: str, method: Callable[..., Awaitable[Any]], metrics: Metrics
) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            result = await method(*args, **kwargs)
            ok = True
            return result
        finally:
            metrics.redis_call(op, time.perf_counter() - started, ok)

    return call


# a caller's X-Request-Id is kept when it is this plain; anything else is replaced by one of
# ours (it goes into headers to 8x8 and into log lines)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


def request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id")
    if given is not None and _REQUEST_ID.match(given):
        return given
    return os.urandom(16).hex()  # as unique as a uuid4, a third of the cost


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One log line and one metric per request; an unexpected error becomes JSON, not a
    traceback. The line carries the request id (the caller's X-Request-Id, or one made
    here), the caller's address and, for the gateway's own errors, the errorId."""
    started = time.perf_counter()
    info: dict[str, Any] = {"request_id": request_id(request), "remote": request.remote}
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
    reject = response.headers.get("X-Gateway-Reject")
    decision = info.get("decision")
    if decision is None:
        decision = info["decision"] = reject or "ok"
    if reject is not None:
        info["error_id"] = _error_id(response)
        if response.status == 404:
            info["path"] = request.path  # scrubbed like any free text (numbers masked)
    seconds = time.perf_counter() - started
    state.metrics.request(route, response.status, decision, seconds)
    if "subaccount" in info:  # a proxied request: its outcome by (bounded) subaccount
        state.metrics.decision(decision, state.subaccount_label(info["subaccount"]))
    if route not in _OPS:
        logs.info_line(
            state.log,
            "request",
            {"method": request.method, "status": response.status,
             "ms": round(seconds * 1000, 2), **info},
        )  # fmt: skip
    return response


def _error_id(response: web.StreamResponse) -> str | None:
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = parsed.get("errorId") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp `on_response_prepare`, one hook (one coroutine per answer, not two): the
    RateLimit fields of a decided request, and on every answer, streamed ones too, the
    request's X-Request-Id."""
    answers.ratelimit_headers(request, response)
    info = request.get(LOG)
    if info is not None and "request_id" in info:
        response.headers["X-Request-Id"] = info["request_id"]


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


def metrics_app(state: State) -> web.Application:
    """`server.metrics_port`: /metrics alone, away from the port callers reach."""
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/metrics", metrics_endpoint)
    return app
