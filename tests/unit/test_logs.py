"""Log scrubbing: numbers masked to their last four digits, secret and content fields
dropped, IPs/dates/durations left alone, and the configured pipeline writing no secret."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from gateway import logs
from gateway.logs import mask, scrub

NUMBER = "+6587654321"
TOKEN = "tok-3f9a7c1e-client-secret"


def scrubbed(**event: Any) -> dict[str, Any]:
    return dict(scrub(None, "info", dict(event)))


# --- mask ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+6587654321", "+******4321"),
        ("6587654321", "******4321"),
        ("+65 8765-4321", "+******4321"),
        ("+447700900123", "+********0123"),
        ("12345", "*2345"),
        ("1234", "****"),
        ("12", "**"),
        ("", ""),
    ],
)
def test_mask_keeps_only_the_last_four_digits(number: str, expected: str) -> None:
    assert mask(number) == expected


# --- scrub ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "authorization",
        "Authorization",
        "token",
        "api_key",
        "apikey",
        "secret",
        "password",
        "body",
        "text",
        "content",
        "key",
    ],
)
def test_secret_and_content_fields_are_dropped(key: str) -> None:
    event = scrubbed(event="request", status=200, **{key: TOKEN})
    assert event == {"event": "request", "status": 200}


@pytest.mark.parametrize("key", ["msisdn", "destination", "recipient", "source", "to", "from"])
def test_number_fields_are_masked(key: str) -> None:
    assert scrubbed(**{key: NUMBER})[key] == "+******4321"


def test_number_field_holding_an_int_is_masked() -> None:
    assert "87654321" not in str(scrubbed(msisdn=6587654321)["msisdn"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"send to {NUMBER} failed", "send to +******4321 failed"),
        ("send to 6587654321 failed", "send to ******4321 failed"),
        ("call +65 8765 4321 now", "call +******4321 now"),
        ("numbers: +6587654321,+447700900123", "numbers: +******4321,+********0123"),
        ("msisdn=6587654321", "msisdn=******4321"),
    ],
)
def test_phone_numbers_inside_free_text_are_masked(text: str, expected: str) -> None:
    assert scrubbed(event=text)["event"] == expected
    assert scrubbed(message=text)["message"] == expected


@pytest.mark.parametrize(
    "text",
    [
        "from 203.0.113.45 via 10.0.0.1:8080",
        "2001:db8::1234:5678",
        "at 2024-01-15T10:20:30.123Z",
        "on 2024-01-15",
        "took 12.5ms",
        "took 1234567890ms",  # a long duration with its unit
        "waited 0.123456789 s",
        "rate 1800/s burst 36",
        "status 429 after 3 retries",
        "abc12345678def",  # digits inside an identifier
    ],
)
def test_ips_dates_and_durations_are_left_alone(text: str) -> None:
    assert scrubbed(event=text)["event"] == text


def test_timestamp_is_left_alone() -> None:
    assert scrubbed(timestamp="20240115102030")["timestamp"] == "20240115102030"


def test_other_fields_and_values_pass_through() -> None:
    event = {"event": "request", "status": 200, "ms": 12.5, "route": "sms.send", "client": "orders"}
    assert scrubbed(**event) == event


# --- the configured pipeline ---------------------------------------------------------------


@pytest.fixture
def configured(capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Logs configured to write into capfd, and structlog's defaults back afterwards."""
    yield capfd
    structlog.reset_defaults()


def log() -> Any:
    # structlog binds sys.stdout.buffer when configured: do it inside the test, under capfd
    logs.configure()
    return logs.get("gateway")


def lines(out: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def _read(capture: pytest.CaptureFixture[str]) -> Any:
    logs.flush()  # request lines are buffered; warnings and errors are written at once
    return capture.readouterr()


def test_configured_logs_write_neither_token_nor_number(
    configured: pytest.CaptureFixture[str],
) -> None:
    log().info("request", authorization=f"Bearer {TOKEN}", token=TOKEN, msisdn=NUMBER, status=200)
    out = _read(configured).out
    assert TOKEN not in out
    assert "87654321" not in out
    [line] = lines(out)
    assert line["event"] == "request"
    assert line["msisdn"] == "+******4321"
    assert line["status"] == 200
    assert line["level"] == "info"
    assert "timestamp" in line


def test_configured_logs_mask_numbers_in_messages(
    configured: pytest.CaptureFixture[str],
) -> None:
    log().warning(f"no consent for {NUMBER}", text="hello, your code is 123456")
    out = _read(configured).out
    assert "87654321" not in out
    assert "123456" not in out
    assert lines(out)[0]["event"] == "no consent for +******4321"


def test_configured_logs_mask_numbers_in_exceptions(
    configured: pytest.CaptureFixture[str],
) -> None:
    try:
        raise ValueError(f"bad recipient {NUMBER}")
    except ValueError:
        log().exception("request.failed")
    out = _read(configured).out
    assert "request.failed" in out
    assert "87654321" not in out


def test_a_subaccount_id_that_looks_like_a_number_is_masked() -> None:
    assert scrubbed(subaccount="6587654321")["subaccount"] == "******4321"
    assert scrubbed(subaccount="acme_main")["subaccount"] == "acme_main"


def test_request_lines_are_written_when_logged_without_a_flush(
    configured: pytest.CaptureFixture[str],
) -> None:
    log().info("request", status=200)
    [line] = lines(configured.readouterr().out)  # no logs.flush()
    assert line["event"] == "request" and isinstance(line["pid"], int)


def test_the_direct_request_line_writes_what_the_pipeline_writes(
    configured: pytest.CaptureFixture[str],
) -> None:
    fields = {"status": 200, "msisdn": NUMBER, "token": TOKEN, "request_id": "6587654321"}
    log().info("request", **fields)
    logs.info_line(logs.get("gateway"), "request", fields)
    piped, direct = lines(_read(configured).out)
    assert piped.pop("timestamp") and direct.pop("timestamp")
    assert list(direct.items()) == list(piped.items())
    assert TOKEN not in str(direct) and "87654321" not in str(direct)


def test_the_direct_request_line_follows_the_level(
    configured: pytest.CaptureFixture[str],
) -> None:
    logs.configure("warning")
    logs.info_line(logs.get("gateway"), "request", {"status": 200})
    assert lines(configured.readouterr().out) == []


def test_the_level_comes_from_the_config(configured: pytest.CaptureFixture[str]) -> None:
    logs.configure("warning")
    logs.get("gateway").info("quiet")
    logs.get("gateway").warning("loud")
    assert [line["event"] for line in lines(configured.readouterr().out)] == ["loud"]


def test_aiohttps_own_errors_become_json_without_the_offending_bytes(
    configured: pytest.CaptureFixture[str],
) -> None:
    import logging

    from aiohttp.http_exceptions import BadHttpMessage

    log()
    try:
        raise BadHttpMessage(f"Invalid header value char: b'Authorization: Bearer {TOKEN}'")
    except BadHttpMessage:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "10.1.2.3")
    out = configured.readouterr().out
    assert TOKEN not in out and "Traceback" not in out
    [line] = lines(out)
    assert line["event"] == "http.bad_request" and line["remote"] == "10.1.2.3"
    assert (line["error"], line["status"]) == ("BadHttpMessage", 400)


def test_known_secrets_are_redacted_from_free_text(
    configured: pytest.CaptureFixture[str],
) -> None:
    logs.redact("admin-secret-value")
    try:
        log().error("odd", detail="header was admin-secret-value")
    finally:
        logs.redact()
    out = configured.readouterr().out
    assert "admin-secret-value" not in out and "[redacted]" in out
