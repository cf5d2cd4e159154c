"""The gateway's own error answers: one JSON shape, one status per code (INTERFACE.md)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

STATUS: dict[str, int] = {
    "request.invalid": 400,
    "auth.missing": 401,
    "auth.invalid": 401,
    "auth.subaccount": 403,
    "auth.account": 403,
    "auth.address": 403,
    "recipient.opted_out": 403,
    "recipient.no_consent": 403,
    "captcha.missing": 403,
    "captcha.invalid": 403,
    "otp.country": 403,
    "otp.prefix_quarantined": 403,
    "route.unknown": 404,
    "not_found": 404,
    "template.not_active": 409,
    "request.timeout": 408,
    "request.too_large": 413,
    "request.content_type": 415,
    "request.idempotency_mismatch": 422,
    "rate_limited.subaccount": 429,
    "rate_limited.egress_ip": 429,
    "rate_limited.otp_recipient": 429,
    "rate_limited.end_user_ip": 429,
    "rate_limited.auth": 429,
    "rate_limited.deadline": 429,
    # WhatsApp's own limits (docs/whatsapp.md)
    "rate_limited.sender": 429,
    "rate_limited.pair": 429,
    "rate_limited.messaging_tier": 429,
    "recipient.marketing_region": 403,
    "recipient.suppressed": 403,
    "template.quality": 409,
    "internal.error": 500,
    "upstream.error": 502,
    "store.unavailable": 503,
    "upstream.unavailable": 503,
    "captcha.unavailable": 503,
    "upstream.timeout": 504,
}


#: 8x8's own numbers where one fits (its error schema's `code`); any other refusal carries
#: its HTTP status there, as 8x8's own 429 does.
INVALID_PARAMETER = 1000
INVALID_MSISDN = 1002


class GatewayError(Exception):
    """A refusal found while reading the request (route, auth, body): answered, not raised on."""

    def __init__(self, code: str, message: str, *, number: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.number = number
        self.extra = extra


def numeric_code(code: str, number: int | None = None) -> int:
    """The integer `code` of 8x8's error schema for a gateway refusal."""
    if number is not None:
        return number
    if code == "request.invalid":
        return INVALID_PARAMETER
    return STATUS[code]


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_response(
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    number: int | None = None,
    **extra: Any,
) -> web.Response:
    """8x8's error shape (integer `code`, `message`, `errorId`, `timestamp`) with the
    gateway's dotted `gatewayCode` beside it, and the `X-Gateway-Reject` header."""
    body = {
        "code": numeric_code(code, number),
        "message": message,
        "errorId": str(uuid.uuid4()),
        "timestamp": now_rfc3339(),
        "gatewayCode": code,
        **extra,
    }
    hdrs = {"X-Gateway-Reject": code}
    if headers:
        hdrs.update(headers)
    return web.Response(
        status=STATUS[code],
        body=orjson.dumps(body),
        content_type="application/json",
        headers=hdrs,
    )


def from_exception(exc: GatewayError) -> web.Response:
    return error_response(exc.code, exc.message, number=exc.number, **exc.extra)
