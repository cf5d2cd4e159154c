"""Structured JSON logs (structlog + orjson), one line per request at least.

A processor masks phone numbers and drops secret or content fields wherever they appear,
so no call site has to remember to.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO

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
    digits = number if number.isdigit() else "".join(filter(str.isdigit, number))
    if len(digits) <= 4:
        return "*" * len(digits)
    return ("+" if number[:1] == "+" else "") + "*" * (len(digits) - 4) + digits[-4:]


def _mask_match(m: re.Match[str]) -> str:
    return mask(m.group(0))


# fields the gateway itself fills with values that hold neither numbers nor secrets:
# the hot path skips scanning them
SAFE_FIELDS = frozenset(
    {
        "level", "timestamp", "route", "method", "status", "decision", "client",
        "ms", "messages", "dropped", "waited_ms", "upstream_status", "upstream_retry",
        "unconsented", "pid", "store", "port", "subaccount", "account", "effect", "kind",
    }
)  # fmt: skip


def scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key in SAFE_FIELDS:
            continue
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
        elif isinstance(value, str) and _DIGITS.search(value):
            event[key] = _DIGITS.sub(_mask_match, value)
    return event


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds, the second's prefix formatted once."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event


class LineWriter:
    """structlog's output: JSON lines into a 64 KiB buffer, flushed at once for warnings
    and errors, else when 0.2 s have passed or the buffer fills (and at exit), so a busy
    gateway does not pay a write system call per request line."""

    FLUSH_S = 0.2

    def __init__(self, stream: BinaryIO) -> None:
        self._out = io.BufferedWriter(stream, buffer_size=65536)
        self._last = time.monotonic()
        atexit.register(self.flush)

    def _buffered(self, line: bytes) -> None:
        self._out.write(line + b"\n")
        now = time.monotonic()
        if now - self._last > self.FLUSH_S:
            self._last = now
            self._out.flush()

    def _urgent(self, line: bytes) -> None:
        self._out.write(line + b"\n")
        self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
            self._out.flush()

    debug = info = msg = _buffered
    warning = warn = error = err = critical = exception = fatal = failure = _urgent


_writer: LineWriter | None = None


def configure(level: str = "info") -> None:
    global _writer
    _writer = LineWriter(
        sys.stdout.buffer.raw if hasattr(sys.stdout.buffer, "raw") else sys.stdout.buffer
    )
    writer = _writer
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _Clock(),
            structlog.processors.format_exc_info,
            scrub,  # after format_exc_info, so tracebacks are scrubbed too
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )


def flush() -> None:
    """Write out buffered lines (the app calls this periodically and at shutdown)."""
    if _writer is not None:
        _writer.flush()


def get(name: str) -> Any:
    return structlog.get_logger(name)
