"""The hot path: route → authenticate → parse → decide (one store call) → forward → answer."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web

from gateway import (
    answers,
    captcha,
    citizen,
    idempotency,
    listing,
    messages,
    pii,
    routes,
    scheduled,
    shield,
)
from gateway.bodies import read_body
from gateway.errors import GatewayError, error_response, from_exception
from gateway.messages import ParsedSend
from gateway.policy import lanes, pacing
from gateway.policy.decider import StoreUnavailable, is_store_failure
from gateway.policy.enduser import end_users
from gateway.routes import Kind, Route
from gateway.state import LOG, STATE, State
from gateway.store.base import BULK, PRIORITY, Decision, Refusal, Rule, SendCheck
from gateway.upstream import Answer, Streamed, UpstreamFailure, retry_after_s

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
        client.authorize(route)
        server = state.config.server
        if route.kind is Kind.OTHER:
            raw = await read_body(request, server.max_body_bytes, server.body_timeout_s)
            refused = citizen.check(request.app, request.method, route.product, route.path, raw)
            if refused is not None:  # a template Meta would reject: nothing booked or sent
                return refused
            return await _pass_through(request, state, route, raw)
        raw = await _read_send_body(request, server.max_body_bytes, server.body_timeout_s)
        parsed = messages.parse(route, raw)
        eu_ips = end_users(
            request.headers.get("X-End-User-IP"),
            parsed.client_ips,
            from_xff=client.end_user_ip_from_xff,
            remote=request.remote,
            xff=request.headers.getall("X-Forwarded-For", ()),
            trusted=state.trusted,
            v6_prefix=state.config.limits.end_user_ipv6_prefix,
        )
        header_ms = lanes.header_deadline_ms(request.headers.get(lanes.DEADLINE_HEADER))
        deadlines = lanes.deadlines_us(header_ms, client.deadlines_ms, state.plan.deadlines_ms)
        idem = state.config.idempotency
        key = idempotency.request_key(
            request, client.name, raw, client_message_id=idem.client_message_id
        )
    except GatewayError as exc:
        return from_exception(exc)
    if parsed.messages:
        info["msisdn"] = parsed.messages[0].msisdn
        info["messages"] = len(parsed.messages)
    if parsed.invalid and not parsed.messages:  # a batch 8x8 would reject entry by entry
        info["decision"] = "all_dropped"
        return answers.all_dropped(parsed, ())
    send = partial(_send, request, state, route, parsed, raw, eu_ips, client.public_form, deadlines)
    if key is None:
        return await send()
    return await request.app[idempotency.IDEMPOTENCY].once(
        key,
        send,
        ttl_s=idem.ttl_s,
        lease_s=2 * state.config.upstream.timeout_s + 60,
        max_answer_bytes=idem.max_answer_bytes,
    )


async def _send(
    request: web.Request,
    state: State,
    route: Route,
    parsed: ParsedSend,
    raw: bytes,
    eu_ips: tuple[str, ...],
    public_form: bool,
    deadlines: tuple[int, int] = (0, 0),
) -> web.StreamResponse:
    """Decide a parsed send (one store call) and forward it, or refuse it. A public-form
    client's CAPTCHA comes first (gateway/captcha.py); inside an idempotent attempt, so a
    retry with the same key replays the answer instead of spending the token again."""
    if public_form:
        refused = await captcha.check(request, parsed.client_ips)
        if refused is not None:
            return refused
    refused = await shield.check(request, route, parsed.messages)  # OTPs only: docs/otp-shield.md
    if refused is not None:
        return refused
    started = time.monotonic()
    client = request[LOG].get("client") or ""  # fairness between clients: docs/lanes.md
    check = state.plan.check(
        route, parsed.messages, eu_ips, deadlines, body=parsed.body, client=client
    )
    decision = await _decide(request, state, check)
    if not isinstance(decision, Decision):
        return decision
    await _warn_red(request, state, check)
    deadline = deadlines[1] if decision.priority else deadlines[0]
    due = started + deadline / 1e6 if deadline else 0.0
    return await _forward(request, state, route, parsed, raw, decision, due)


async def _warn_red(request: web.Request, state: State, check: SendCheck) -> None:
    """quality_red = "warn" (docs/whatsapp.md): log the RED templates of an allowed
    WhatsApp MARKETING send; a store that fails does not stop the send."""
    try:
        red = await state.plan.whatsapp.red_marketing(state.store, check)
    except Exception as exc:
        if not is_store_failure(exc):
            raise
        red = []
    if red:
        request[LOG]["quality_red"] = red
        state.log.warning("whatsapp.quality_red", templates=red, account=check.account)


async def _decide(request: web.Request, state: State, check: SendCheck) -> Decision | web.Response:
    """The one store call: the decision to act on, or the answer that refuses the request."""
    try:
        decision = await state.decider.decide(check)
    except StoreUnavailable:
        return error_response("store.unavailable", "the shared store is unavailable")
    _note_shadow(request, state, decision)
    answers.note_limits(request, check, decision)
    if decision.refusal is not None:
        request[LOG]["decision"] = decision.refusal.rule.value
        return answers.refusal(decision.refusal)
    return decision


def _note_shadow(request: web.Request, state: State, decision: Decision) -> None:
    """Count and log what a rule in `limits.shadow` would have refused (docs/lanes.md)."""
    if not decision.shadowed:
        return
    names = [lanes.rule_name(rule) for rule in decision.shadowed]
    for name in names:
        state.metrics.shadow_refusals.labels(name).inc()
    info = request[LOG]
    info["shadowed"] = names
    state.log.info(
        "shadow.would_refuse",
        rules=names,
        codes=[rule.value for rule in decision.shadowed],
        route=info.get("route"),
        client=info.get("client"),
        subaccount=info.get("subaccount"),
        msisdn=info.get("msisdn"),
        request_id=info.get("request_id"),
    )


async def _read_send_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """A send's body: JSON (415 otherwise), and present (400 without one, as 8x8 says)."""
    if not request.body_exists:
        raise GatewayError("request.invalid", "a send needs a JSON body", field="body")
    ctype = request.content_type
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise GatewayError("request.content_type", "the body must be application/json")
    raw = await read_body(request, limit, timeout_s)
    if not raw:
        raise GatewayError("request.invalid", "a send needs a JSON body", field="body")
    return raw


async def _forward(
    request: web.Request,
    state: State,
    route: Route,
    parsed: ParsedSend,
    raw: bytes,
    decision: Decision,
    due: float = 0.0,
) -> web.StreamResponse:
    info = request[LOG]
    if decision.unconsented:
        state.metrics.unconsented.inc(len(decision.unconsented))
        info["unconsented"] = len(decision.unconsented)
    body = raw
    report = None
    if decision.dropped or parsed.invalid:
        gone = answers.dropped_entries(parsed, decision.dropped)
        for _, _, why in gone:
            state.metrics.dropped.labels(why.value if isinstance(why, Rule) else why.code).inc()
        info["dropped"] = len(gone)
        if len(gone) == parsed.total:
            info["decision"] = "all_dropped"
            otp_s = state.config.limits.otp_window_s
            return answers.all_dropped(parsed, decision.dropped, otp_s)
        body = messages.without(parsed, {index for index, _, _ in gone})
        report = answers.rejected(parsed, decision.dropped)
    hidden = listing.wanted(state.config, route, parsed.body, body)
    if hidden:  # 8x8 lists the batch's umids for the gateway; the caller's answer hides them
        body = listing.ask(body)  # before the slot: the send leaves when its slot comes
    late = await _at_slot(request, state, route, decision, due)
    if late is not None:
        return late
    path_qs = _path_qs(request, route)
    headers = state.upstream.request_headers(request.headers, info.get("request_id"))
    try:
        answer = await state.upstream.forward(route.product, path_qs, request.method, body, headers)
        if answer.status == 429:
            lane = PRIORITY if decision.priority else BULK
            answer = await _after_upstream_429(
                state, route, path_qs, request, body, headers, answer, lane
            )
    except UpstreamFailure as exc:
        info["decision"] = exc.code
        return error_response(exc.code, exc.message)
    _forwarded(info, state, route, answer)
    await scheduled.remember(request.app, route.product, request.method, route.path, body, answer)
    await pii.remember(request.app, route.product, request.method, route.path, answer)
    payload = answer.body
    if 200 <= answer.status < 300:
        if hidden:
            payload = listing.hide(payload, report)
        elif report is not None:
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
    lane: int = BULK,
) -> Answer:
    """8x8 said 429: cool the subaccount down fleet-wide, and retry once if the cool-down
    ends within max_wait_ms (after booking a fresh slot in the send's own lane), else pass
    8x8's 429 on."""
    retry_s = await _cool_down(state, route, answer.headers.get("Retry-After"))
    if retry_s * 1000 > state.config.limits.max_wait_ms:
        return answer
    await asyncio.sleep(retry_s)

    def capacity() -> SendCheck:
        return state.plan.check(route, (), None, lane=lane)

    try:
        decision = await state.decider.decide(capacity())
    except StoreUnavailable:
        return answer
    if decision.refusal is not None:
        return answer
    try:
        decision = await pacing.until_slot(decision, state.decider, capacity, state.slot_clock)
    except StoreUnavailable:
        return answer
    if decision.refusal is not None:
        return answer
    request[LOG]["upstream_retry"] = True
    return await state.upstream.forward(route.product, path_qs, request.method, body, headers)


async def _cool_down(state: State, route: Route, retry_after: str | None) -> float:
    """Start the fleet-wide cool-down of the subaccount 8x8 answered 429 for; its length."""
    retry_s = retry_after_s(retry_after, 0.001, 3600.0)
    key = state.plan.check(route, (), None).cooldown_key
    if key:
        try:
            await state.decider.cooldown(key, int(retry_s * 1_000_000))
        except Exception:
            state.log.warning("cooldown.failed", subaccount=route.subaccount)
    return retry_s


async def _at_slot(
    request: web.Request, state: State, route: Route, decision: Decision, due: float = 0.0
) -> web.Response | None:
    """Wait for the decision's slot, or take a fresh one when this process comes round to
    it late (gateway/policy/pacing.py); None when the request may go now, else the answer
    that refuses it. `due` (time.monotonic(), 0: none) is the send's deadline: a fresh
    slot must fall before it, and a send that comes round to it past it does not go."""
    if decision.wait_us:  # shaped: the wait the booking asked for
        request[LOG]["waited_ms"] = decision.wait_us // 1000
        state.metrics.shaped_seconds.observe(decision.wait_us / 1e6)
    lane = PRIORITY if decision.priority else BULK

    def capacity() -> SendCheck:
        # no client: a fresh slot or a claim is the same send, already counted in its
        # client's fair share (docs/lanes.md)
        left = max(1, round((due - time.monotonic()) * 1e6)) if due else 0
        return state.plan.check(route, (), None, (left, left), lane)

    try:
        decision = await pacing.until_slot(
            decision, state.decider, capacity, state.slot_clock, state.metrics.rebooked
        )
    except StoreUnavailable:
        return error_response("store.unavailable", "the shared store is unavailable")
    if decision.refusal is None and due and time.monotonic() > due + pacing.LATE_S:
        decision = Decision(refusal=Refusal(Rule.DEADLINE, 1_000_000))
    if decision.refusal is not None:
        request[LOG]["decision"] = decision.refusal.rule.value
        return answers.refusal(decision.refusal)
    return None


def _forwarded(info: dict[str, Any], state: State, route: Route, answer: Answer | Streamed) -> None:
    """8x8 answered: the request's log fields and the upstream metric."""
    info["decision"] = "forwarded"
    info["upstream_status"] = answer.status
    state.metrics.upstream(route.product, answer.status, answer.seconds)


def _path_qs(request: web.Request, route: Route) -> str:
    """8x8's path and query, exactly as the caller wrote them."""
    query = request.rel_url.raw_query_string
    return f"{route.path}?{query}" if query else route.path


async def _pass_through(
    request: web.Request, state: State, route: Route, raw: bytes
) -> web.StreamResponse:
    """Any operation that is not a send: book the buckets, forward the body with its own
    content type, stream 8x8's answer back."""
    info = request[LOG]
    decision = await _decide(request, state, state.plan.check(route, (), None))
    if not isinstance(decision, Decision):
        return decision
    late = await _at_slot(request, state, route, decision)
    if late is not None:
        return late
    headers = state.upstream.request_headers(request.headers, request[LOG].get("request_id"))
    body = raw if raw else None
    if citizen.watches(request.method, route.product, route.path) or shield.watches(request, route):
        return await _forward_watched(request, state, route, body, headers)
    upstream = state.upstream.stream(
        route.product, _path_qs(request, route), request.method, body, headers
    )
    try:
        async with upstream as answer:
            _forwarded(info, state, route, answer)
            if answer.status == 429:
                await _cool_down(state, route, answer.headers.get("Retry-After"))
            response = web.StreamResponse(status=answer.status, headers=answer.headers)
            await response.prepare(request)
            try:
                async for chunk in answer.body.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError):
                # 8x8 broke off mid-answer: the caller must not take a cut body as whole
                info["decision"] = "upstream.error"
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
    except UpstreamFailure as exc:
        info["decision"] = exc.code
        return error_response(exc.code, exc.message)


async def _forward_watched(
    request: web.Request,
    state: State,
    route: Route,
    body: bytes | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    """A call whose answer the gateway learns from (gateway/citizen.py): read whole, then
    handed to `citizen.after` (a created template, a blacklisted number)."""
    info = request[LOG]
    try:
        answer = await state.upstream.forward(
            route.product, _path_qs(request, route), request.method, body, headers
        )
    except UpstreamFailure as exc:
        info["decision"] = exc.code
        return error_response(exc.code, exc.message)
    _forwarded(info, state, route, answer)
    if answer.status == 429:
        await _cool_down(state, route, answer.headers.get("Retry-After"))
    await citizen.after(request.app, request.method, route.product, route.path, body, answer)
    await shield.after(request, route, answer)
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
