"""`POST /admin/v1/decide`: what would happen to a send, booking nothing (docs/lanes.md).

The body names a request as the caller would send it, `{"method", "path", "headers",
"body"}` (`path` with the product prefix, `headers` with the caller's `Authorization`);
it goes through the proxy's own route, authentication, body reading and limit plan, and
its decision runs in the store as a dry run (`SendCheck.dry_run`: lua/decide.lua and its
memory twin compute everything and write nothing). The answer:
`{"decision": "allow|wait|refuse", "gatewayCode", "wait_ms", "retry_after_s"}`, plus
`shadowed` (rules in `limits.shadow` that would have refused) and `lane`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway import messages, routes
from gateway.errors import GatewayError
from gateway.policy import lanes
from gateway.policy.decider import StoreUnavailable
from gateway.policy.enduser import end_users
from gateway.routes import Kind
from gateway.state import State
from gateway.store.base import Decision
from gateway.webhooks import read_object


def _answer(
    decision: str,
    code: str | None = None,
    wait_us: int = 0,
    retry_us: int | None = None,
    **extra: Any,
) -> web.Response:
    retry_s = None if retry_us is None else max(1, math.ceil(retry_us / 1_000_000))
    body = {
        "decision": decision,
        "gatewayCode": code,
        "wait_ms": math.ceil(wait_us / 1000),
        "retry_after_s": retry_s,
        **extra,
    }
    return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())


def _request(body: dict[str, Any]) -> tuple[str, str, CIMultiDict[str], Any, str | None]:
    method, path, headers = body.get("method", "POST"), body.get("path"), body.get("headers", {})
    remote = body.get("remote")
    if not isinstance(method, str) or not method:
        raise GatewayError("request.invalid", "method must be a string", field="method")
    if not isinstance(path, str) or not path.startswith("/"):
        raise GatewayError("request.invalid", "path must be the gateway path", field="path")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise GatewayError("request.invalid", "headers must map names to strings", field="headers")
    if remote is not None and not isinstance(remote, str):
        raise GatewayError("request.invalid", "remote must be an address", field="remote")
    return method.upper(), path, CIMultiDict(headers), body.get("body"), remote


async def decide(request: web.Request, state: State) -> web.StreamResponse:
    """The admin action: a dry run of the request in the body."""
    method, path, headers, payload, remote = _request(await read_object(request))
    route = routes.match(method, path)
    if route is None:
        return _answer("refuse", "route.unknown")
    try:
        client = state.clients.authenticate(
            headers.get("Authorization"), remote, check_address=remote is not None
        )
        client.authorize(route)
        header_ms = lanes.header_deadline_ms(headers.get(lanes.DEADLINE_HEADER))
        deadlines = lanes.deadlines_us(header_ms, client.deadlines_ms, state.plan.deadlines_ms)
        if route.kind is Kind.OTHER:
            check = state.plan.check(route, (), None, client=client.name)
        else:
            if payload is None:
                raise GatewayError("request.invalid", "a send needs a JSON body", field="body")
            parsed = messages.parse(route, orjson.dumps(payload))
            eu_ips = end_users(
                headers.get("X-End-User-IP"),
                parsed.client_ips,
                from_xff=False,
                remote=remote,
                xff=(),
                trusted=state.trusted,
                v6_prefix=state.config.limits.end_user_ipv6_prefix,
            )
            if parsed.invalid and not parsed.messages:
                return _answer("refuse", parsed.invalid[0][1].code)
            check = state.plan.check(
                route, parsed.messages, eu_ips, deadlines, body=payload, client=client.name
            )
    except GatewayError as exc:
        return _answer("refuse", exc.code)
    try:
        decision = await state.decider.decide(replace(check, dry_run=True))
    except StoreUnavailable:
        return _answer("refuse", "store.unavailable")
    return _decided(decision, len(check.messages))


def _decided(d: Decision, n_messages: int) -> web.Response:
    extra: dict[str, Any] = {
        "shadowed": [lanes.rule_name(r) for r in d.shadowed],
        "lane": "priority" if d.priority else "bulk",
    }
    if d.refusal is not None:
        retry = d.refusal.retry_after_us or None
        return _answer("refuse", d.refusal.rule.value, 0, retry, **extra)
    if n_messages and len(d.dropped) == n_messages:
        return _answer("refuse", d.dropped[0][1].value, **extra)
    if d.wait_us > 0:
        return _answer("wait", None, d.wait_us, **extra)
    return _answer("allow", **extra)
