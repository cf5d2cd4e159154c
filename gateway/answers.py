"""Turning a decision into what the caller sees: refusals with their headers, and the
`gatewayRejected` report of a filtered batch."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import error_response
from gateway.logs import mask
from gateway.messages import ParsedSend
from gateway.store.base import Refusal, Rule

MESSAGES = {
    Rule.OPTED_OUT: "the recipient has opted out",
    Rule.NO_CONSENT: "no consent on record covers this template's category",
    Rule.TEMPLATE: "the template is not active",
    Rule.OTP: "an OTP was sent to this recipient too recently",
    Rule.END_USER_IP: "too many sends for this end-user IP",
    Rule.SUBACCOUNT: "subaccount send rate exceeded",
    Rule.EGRESS_IP: "egress IP send rate exceeded",
}


def seconds_up(us: int) -> int:
    return max(1, math.ceil(us / 1_000_000))


def refusal(r: Refusal) -> web.Response:
    if r.rule is Rule.TEMPLATE:
        return error_response(r.rule.value, MESSAGES[r.rule], status=r.status)
    if r.bucket is None:
        return error_response(r.rule.value, MESSAGES[r.rule])
    b = r.bucket
    retry = seconds_up(r.retry_after_us)
    headers = {
        "Retry-After": str(retry),
        "RateLimit-Limit": str(b.limit),
        "RateLimit-Remaining": str(max(0, r.remaining)),
        "RateLimit-Reset": str(retry),
        "RateLimit-Policy": f"{b.limit};w={b.window_s}",
    }
    return error_response(r.rule.value, MESSAGES[r.rule], headers=headers)


def rejected(parsed: ParsedSend, dropped: tuple[tuple[int, Rule], ...]) -> list[dict[str, Any]]:
    return [
        {"index": i, "msisdn": mask(parsed.messages[i].msisdn), "code": rule.value}
        for i, rule in dropped
    ]


def all_dropped(parsed: ParsedSend, dropped: tuple[tuple[int, Rule], ...]) -> web.Response:
    body = {
        "batchId": None,
        "acceptedCount": 0,
        "rejectedCount": len(parsed.messages),
        "messages": [],
        "gatewayRejected": rejected(parsed, dropped),
    }
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"X-Gateway-Reject": dropped[0][1].value},
    )


def with_rejected(payload: bytes, report: list[dict[str, Any]]) -> bytes:
    """8x8's batch answer with `gatewayRejected` added (unchanged if it is not an object)."""
    try:
        answer = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    if not isinstance(answer, dict):
        return payload
    answer["gatewayRejected"] = report
    return orjson.dumps(answer)
