"""Structured JSON logs (structlog + orjson), one line per request at least.

A processor masks phone numbers and drops secret or content fields wherever they appear,
so no call site has to remember to.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

# fields never written, whatever their value
SECRET_FIELDS = frozenset(
    {
        "authorization",
        "token",
        "api_key",
        "apikey",
        "secret",
        "password",
        "body",
        "text",
        "content",
        "key",
    }
)
# fields holding phone numbers
NUMBER_FIELDS = frozenset({"msisdn", "destination", "recipient", "source", "to", "from"})
# a phone number inside free text: '+' and 7+ digits, or 8-15 digits in a row (not IPs,
# dates or durations)
_DIGITS = re.compile(r"\+\d[\d\s()-]{5,}\d|(?<![\w.-])\d{8,15}(?![\w.-])")


def mask(number: str) -> str:
    """`+6587654321` → `+******4321`: only the last four digits stay."""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 4:
        return "*" * len(digits)
    return ("+" if number.startswith("+") else "") + "*" * (len(digits) - 4) + "".join(digits[-4:])


def _mask_match(m: re.Match[str]) -> str:
    return mask(m.group(0))


def scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        lowered = key.lower()
        value = event[key]
        if lowered in SECRET_FIELDS:
            del event[key]
        elif (
            lowered in NUMBER_FIELDS
            and isinstance(value, str | int)
            and not isinstance(value, bool)
        ):
            event[key] = mask(str(value))
        elif isinstance(value, str) and key != "timestamp" and _DIGITS.search(value):
            event[key] = _DIGITS.sub(_mask_match, value)
    return event


def configure(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub,  # after format_exc_info, so tracebacks are scrubbed too
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def get(name: str) -> Any:
    return structlog.get_logger(name)
