"""Turning a decision into what the caller sees: refusals with their headers, and the
answer to a batch the gateway filtered: `gatewayRejected` (entries dropped by a rule or
because 8x8 would reject them alone), counted in 8x8's `rejectedCount`; or, when nothing
is left to send, the first entry's refusal."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import GatewayError, error_response
from gateway.logs import mask
from gateway.messages import ParsedSend
from gateway.store.base import BucketSpec, Decision, Refusal, Rule, SendCheck

MESSAGES = {
    Rule.OPTED_OUT: "the recipient has opted out",
    Rule.NO_CONSENT: "no consent on record covers this template's category",
    Rule.TEMPLATE: "the template is not active",
    Rule.OTP: "an OTP was sent to this recipient too recently",
    Rule.END_USER_IP: "too many sends for this end-user IP",
    Rule.SUBACCOUNT: "subaccount send rate exceeded",
    Rule.EGRESS_IP: "egress IP send rate exceeded",
    Rule.DEADLINE: "no slot within the send's deadline",
    Rule.SENDER: "WhatsApp sender number send rate exceeded",
    Rule.PAIR: "too many WhatsApp messages from this sender to this recipient",
    Rule.MESSAGING_TIER: "the business portfolio's WhatsApp messaging limit is reached",
    Rule.MARKETING_REGION: "WhatsApp does not deliver marketing templates to this region",
    Rule.SUPPRESSED: "WhatsApp sends to this recipient are held",
    Rule.TEMPLATE_QUALITY: "the template is rated RED: its marketing sends are held",
}


_HELD = frozenset({Rule.PAIR, Rule.MESSAGING_TIER, Rule.SUPPRESSED})


def seconds_up(us: int) -> int:
    return max(1, math.ceil(us / 1_000_000))


def refusal(r: Refusal) -> web.Response:
    if r.rule is Rule.TEMPLATE:
        return error_response(r.rule.value, MESSAGES[r.rule], status=r.status)
    if r.bucket is None:
        # a deadline set by a cool-down (the wait still counts), or a WhatsApp pair, tier or
        # hold: when a retry could pass
        if r.rule is Rule.DEADLINE or r.rule in _HELD:
            retry_after = {"Retry-After": str(seconds_up(r.retry_after_us))}
            return error_response(r.rule.value, MESSAGES[r.rule], headers=retry_after)
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


def dropped_entries(
    parsed: ParsedSend, dropped: tuple[tuple[int, Rule], ...]
) -> list[tuple[int, str | None, GatewayError | Rule]]:
    """Every entry of a batch left out, by body index: (index, recipient or None, why).
    `dropped` indexes `parsed.messages` (the decision's), `parsed.invalid` the body."""
    out: list[tuple[int, str | None, GatewayError | Rule]] = [
        (parsed.entries[i] if parsed.entries else i, parsed.messages[i].msisdn, rule)
        for i, rule in dropped
    ]
    out.extend((i, None, exc) for i, exc in parsed.invalid)
    out.sort(key=lambda e: e[0])
    return out


def rejected(parsed: ParsedSend, dropped: tuple[tuple[int, Rule], ...]) -> list[dict[str, Any]]:
    """The `gatewayRejected` report: `{index, msisdn (masked), code}` per entry left out, and
    the `field` 8x8's reading stumbled on for an entry that is invalid."""
    report: list[dict[str, Any]] = []
    for index, msisdn, why in dropped_entries(parsed, dropped):
        item: dict[str, Any] = {"index": index, "msisdn": mask(msisdn) if msisdn else None}
        if isinstance(why, GatewayError):
            item.update(code=why.code, field=why.extra.get("field"))
        else:
            item["code"] = why.value
        report.append(item)
    return report


def all_dropped(
    parsed: ParsedSend, dropped: tuple[tuple[int, Rule], ...], otp_window_s: int = 60
) -> web.Response:
    """Every entry of a batch left out: nothing goes to 8x8, and the answer is the first
    entry's refusal as for a single send (8x8's batch answer needs a `batchId`, which only
    8x8 can give), with `gatewayRejected` listing all."""
    report = rejected(parsed, dropped)
    _, _, first = dropped_entries(parsed, dropped)[0]
    if isinstance(first, GatewayError):
        return error_response(
            first.code, first.message, number=first.number, **first.extra, gatewayRejected=report
        )
    headers = {"Retry-After": str(otp_window_s)} if first is Rule.OTP else None
    return error_response(first.value, MESSAGES[first], headers=headers, gatewayRejected=report)


def with_rejected(payload: bytes, report: list[dict[str, Any]]) -> bytes:
    """8x8's batch answer with `gatewayRejected` added and counted in `rejectedCount`
    (unchanged if it is not an object)."""
    try:
        answer = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    if not isinstance(answer, dict):
        return payload
    add_rejected(answer, report)
    return orjson.dumps(answer)


def add_rejected(answer: dict[str, Any], report: list[dict[str, Any]]) -> None:
    """`gatewayRejected` added to a decoded batch answer, counted in `rejectedCount`."""
    counted = answer.get("rejectedCount")
    if type(counted) is int:
        answer["rejectedCount"] = counted + len(report)
    answer["gatewayRejected"] = report


#: a decided request's RateLimit fields (RateLimit-Policy, RateLimit), added as its answer
#: is sent, whichever way it ends (`ratelimit_on_prepare`)
RATELIMIT = web.RequestKey("ratelimit", tuple[str, str])


def note_limits(request: web.Request, check: SendCheck, decision: Decision) -> None:
    """Remember, for the answer, the bucket of `check` nearest to refusing."""
    fields = ratelimit_fields(check, decision)
    if fields is not None:
        request[RATELIMIT] = fields


def ratelimit_fields(check: SendCheck, decision: Decision) -> tuple[str, str] | None:
    """(RateLimit-Policy, RateLimit) values, IETF httpapi draft 09+ structured fields, for
    the bucket nearest to refusing: the refusing one, else the one with the smallest share
    of its burst left after booking. None when the decision measured no bucket (a refusal
    by opt-out, consent or template, or a batch whose every message was dropped)."""
    refused = decision.refusal
    if refused is not None:
        bucket = refused.bucket
        if bucket is None and refused.rule is Rule.SUBACCOUNT:  # a cool-down
            bucket = next((b for b in check.buckets if b.rule is Rule.SUBACCOUNT), None)
        if bucket is None:
            return None
        return _fields(bucket, max(0, refused.remaining), seconds_up(refused.retry_after_us))
    if len(decision.remaining) != len(check.buckets) or not check.buckets:
        return None
    best, left = min(
        zip(check.buckets, (n for _, n in decision.remaining), strict=True),
        key=lambda pair: pair[1] / max(1, pair[0].burst),
    )
    reset_us = max(0, best.burst - left) * best.interval_us + decision.wait_us
    return _fields(best, left, math.ceil(reset_us / 1_000_000))


def _fields(bucket: BucketSpec, remaining: int, reset_s: int) -> tuple[str, str]:
    name = bucket.rule.value.removeprefix("rate_limited.")
    return (
        f'"{name}";q={bucket.limit};w={bucket.window_s}',
        f'"{name}";r={remaining};t={reset_s}',
    )


async def ratelimit_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp `on_response_prepare`: put a decided request's RateLimit fields on its
    answer. The gateway's own 429 keeps its draft-06 `RateLimit-Policy` (`<n>;w=<s>`,
    INTERFACE.md "Rate-limit answers") and gains `RateLimit`."""
    ratelimit_headers(request, response)


def ratelimit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`ratelimit_on_prepare`'s work, for a hook that does more than this."""
    fields = request.get(RATELIMIT)
    if fields is None:
        return
    headers = response.headers
    if not ("X-Gateway-Reject" in headers and "RateLimit-Policy" in headers):
        headers["RateLimit-Policy"] = fields[0]
    headers["RateLimit"] = fields[1]
