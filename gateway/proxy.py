"""The hot path: route → authenticate → parse → decide (one store call) → forward → answer."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway import answers, messages, routes
from gateway.bodies import read_body
from gateway.errors import GatewayError, error_response, from_exception
from gateway.messages import ParsedSend
from gateway.policy import pacing
from gateway.policy.auth import end_user_ip
from gateway.policy.decider import StoreUnavailable
from gateway.routes import Kind, Route
from gateway.state import LOG, STATE, State
from gateway.store.base import Decision
from gateway.upstream import Answer, UpstreamFailure

JSON_TYPES = ("application/json",)


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    info = request[LOG]
    route = routes.match(request.method, request.rel_url.raw_path)
    if route is None:
        return error_response("route.unknown", "this path and method are not proxied")
    info["route"] = route.name
    info["subaccount"] = route.subaccount
    try:
        client = state.clients.authenticate(request.headers.get("Authorization"), request.remote)
        info["client"] = client.name
        if not client.may_use(route.subaccount):
            raise GatewayError("auth.subaccount", "this client may not use this subaccount")
        server = state.config.server
        raw = await _read_body(request, route, server.max_body_bytes, server.body_timeout_s)
        parsed = messages.parse(route, raw)
        eu_ip = end_user_ip(
            request.headers.get("X-End-User-IP"),
            parsed.client_ip,
            client,
            request.remote,
            request.headers.get("X-Forwarded-For"),
            state.trusted,
        )
    except GatewayError as exc:
        return from_exception(exc)
    if parsed.messages:
        info["msisdn"] = parsed.messages[0].msisdn
        info["messages"] = len(parsed.messages)
    check = state.plan.check(route, parsed.messages, eu_ip)
    try:
        decision = await state.decider.decide(check)
    except StoreUnavailable:
        return error_response("store.unavailable", "the shared store is unavailable")
    if decision.refusal is not None:
        info["decision"] = decision.refusal.rule.value
        return answers.refusal(decision.refusal)
    return await _forward(request, state, route, parsed, raw, decision)


async def _read_body(request: web.Request, route: Route, limit: int, timeout_s: float) -> bytes:
    if route.kind is Kind.READ:
        return b""
    ctype = request.content_type
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise GatewayError("request.content_type", "the body must be application/json")
    return await read_body(request, limit, timeout_s)


async def _forward(
    request: web.Request,
    state: State,
    route: Route,
    parsed: ParsedSend,
    raw: bytes,
    decision: Decision,
) -> web.StreamResponse:
    info = request[LOG]
    if decision.unconsented:
        state.metrics.unconsented.inc(len(decision.unconsented))
        info["unconsented"] = len(decision.unconsented)
    body: bytes | None = raw if route.kind is not Kind.READ else None
    report = None
    if decision.dropped:
        for _, rule in decision.dropped:
            state.metrics.dropped.labels(rule.value).inc()
        info["dropped"] = len(decision.dropped)
        if len(decision.dropped) == len(parsed.messages):
            info["decision"] = "all_dropped"
            return answers.all_dropped(parsed, decision.dropped)
        body = messages.without(parsed, {i for i, _ in decision.dropped})
        report = answers.rejected(parsed, decision.dropped)
    if decision.wait_us:
        info["waited_ms"] = decision.wait_us // 1000
        state.metrics.shaped_seconds.observe(decision.wait_us / 1e6)
    try:  # leave at the booked slot, or take a fresh one when this process is late
        decision = await pacing.until_slot(
            decision, state.decider, lambda: state.plan.check(route, (), None)
        )
    except StoreUnavailable:
        return error_response("store.unavailable", "the shared store is unavailable")
    if decision.refusal is not None:
        info["decision"] = decision.refusal.rule.value
        return answers.refusal(decision.refusal)
    path_qs = route.path + (
        f"?{request.rel_url.raw_query_string}" if request.rel_url.raw_query_string else ""
    )
    headers = state.upstream.request_headers(request.headers)
    try:
        answer = await state.upstream.forward(route.product, path_qs, request.method, body, headers)
        if answer.status == 429:
            answer = await _after_upstream_429(
                state, route, path_qs, request, body, headers, answer
            )
    except UpstreamFailure as exc:
        info["decision"] = exc.code
        return error_response(exc.code, exc.message)
    info["decision"] = "forwarded"
    info["upstream_status"] = answer.status
    state.metrics.upstream(route.product, answer.status, answer.seconds)
    payload = answer.body
    if report is not None and 200 <= answer.status < 300:
        payload = answers.with_rejected(payload, report)
    return web.Response(status=answer.status, body=payload, headers=answer.headers)


async def _after_upstream_429(
    state: State,
    route: Route,
    path_qs: str,
    request: web.Request,
    body: bytes | None,
    headers: dict[str, str],
    answer: Answer,
) -> Answer:
    """8x8 said 429: cool the subaccount down fleet-wide, and retry once if the cool-down
    ends within max_wait_ms (after booking a fresh slot), else pass 8x8's 429 on."""
    retry_s = _retry_after_s(answer.headers.get("Retry-After"))
    _, _, cooldown_key = state.plan.subaccount(route.subaccount)
    try:
        await state.decider.cooldown(cooldown_key, int(retry_s * 1_000_000))
    except Exception:
        state.log.warning("cooldown.failed", subaccount=route.subaccount)
    if retry_s * 1000 > state.config.limits.max_wait_ms:
        return answer
    await asyncio.sleep(retry_s)
    check = state.plan.check(route, (), None)
    try:
        decision = await state.decider.decide(check)
    except StoreUnavailable:
        return answer
    if decision.refusal is not None:
        return answer
    if decision.wait_us:
        await asyncio.sleep(decision.wait_us / 1e6)
    request[LOG]["upstream_retry"] = True
    return await state.upstream.forward(route.product, path_qs, request.method, body, headers)


def _retry_after_s(value: str | None) -> float:
    try:
        seconds = float(value) if value else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.001), 3600.0)
