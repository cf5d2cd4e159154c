"""Structured JSON logs (structlog + orjson), one line per request at least.

A processor masks phone numbers and drops secret or content fields wherever they appear,
so no call site has to remember to.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
        "unconsented", "pid", "store", "port", "account", "effect", "kind",
        "error_id", "remote",
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
        elif isinstance(value, str):
            for secret in _redacted:
                if secret in value:
                    value = event[key] = value.replace(secret, "[redacted]")
            if _DIGITS.search(value):
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
    """structlog's output: each JSON line written out when it is logged (a crash or a
    SIGKILL loses none, and the parent's lines are not held until it exits). One write
    system call per line, a few microseconds beside a request's cost."""

    def __init__(self, stream: BinaryIO) -> None:
        self._out = stream

    def _write(self, line: bytes) -> None:
        data = line + b"\n"
        with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
            while data:
                written = self._out.write(data)
                if written is None:  # a non-blocking stream that is full: drop, never block
                    return
                data = data[written:]

    def flush(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._out.flush()

    debug = info = msg = warning = warn = error = err = critical = exception = fatal = failure = (
        _write
    )


_writer: LineWriter | None = None
_clock: _Clock | None = None  # set by configure() when info lines are written
_processors: list[Any] = []  # configure()'s pipeline: info_line writes directly while it holds
_pid = os.getpid()
_redacted: tuple[str, ...] = ()  # literal secrets (admin token, webhook secret, 8x8 key)


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def add_pid(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["pid"] = _pid
    return event


def redact(*secrets: str) -> None:
    """Replace these exact values wherever they appear in a line (for text the gateway did
    not write itself, such as an exception's message)."""
    global _redacted
    _redacted = tuple(s for s in secrets if len(s) >= 4)


def configure(level: str = "info") -> None:
    global _writer, _clock, _processors
    _writer = LineWriter(
        sys.stdout.buffer.raw if hasattr(sys.stdout.buffer, "raw") else sys.stdout.buffer
    )
    writer = _writer
    clock = _Clock()
    _clock = clock if logging.getLevelName(level.upper()) <= logging.INFO else None
    _processors = [
        structlog.processors.add_log_level,
        clock,
        add_pid,
        structlog.processors.format_exc_info,
        scrub,  # after format_exc_info, so tracebacks are scrubbed too
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]
    structlog.configure(
        processors=_processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(level)


class _StdlibBridge(logging.Handler):
    """aiohttp's (and any library's) `logging` records as JSON lines through the scrubber.

    aiohttp's server logs a malformed request with its exception, whose message and
    traceback quote the offending bytes (an Authorization header, say): for its records
    only the exception's type and HTTP status are kept."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = get(record.name)
            fields: dict[str, Any] = {"logger": record.name}
            exc = record.exc_info[1] if record.exc_info else None
            if record.name.startswith("aiohttp"):
                event = "http.error"
                if record.msg.startswith("Error handling request"):
                    event = "http.bad_request"
                    args = record.args if isinstance(record.args, tuple) else ()
                    fields["remote"] = str(args[0]) if args else None
                if exc is not None:
                    fields["error"] = type(exc).__name__
                    status = getattr(exc, "status", None) or getattr(exc, "code", None)
                    if isinstance(status, int):
                        fields["status"] = status
            else:
                event = record.getMessage()
                if exc is not None:
                    fields["error"] = f"{type(exc).__name__}: {exc}"
            level = record.levelname.lower()
            getattr(log, level if level in ("debug", "info", "warning", "error") else "error")(
                event, **fields
            )
        except Exception:  # a log line must never break the server
            self.handleError(record)


def _route_stdlib_logging(level: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(logging.getLevelName(level.upper()))
    logging.getLogger("aiohttp.access").disabled = True  # the gateway writes its own line


def info_line(log: Any, event: str, fields: dict[str, Any]) -> None:
    """An info line on the hot path (the per-request line): the same bytes configure()'s
    pipeline writes (level, timestamp and pid added, then `scrub`, then orjson), without
    structlog's bound-logger and processor dispatch per call. Before configure(), when
    info lines are filtered out, or when structlog was configured otherwise since (tests),
    it goes through `log` as any other line."""
    clock, writer = _clock, _writer
    if clock is None or writer is None or structlog.get_config()["processors"] is not _processors:
        log.info(event, **fields)
        return
    line: dict[str, Any] = {**fields, "event": event, "level": "info"}
    clock(None, "info", line)
    line["pid"] = _pid
    writer._write(orjson.dumps(scrub(None, "info", line)))


def flush() -> None:
    """Write out buffered lines (the app calls this periodically and at shutdown)."""
    if _writer is not None:
        _writer.flush()


def get(name: str) -> Any:
    return structlog.get_logger(name)
