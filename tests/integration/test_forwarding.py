"""The forwarding gateway end to end: real gateway process, real simulator, HTTP only."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory
from tests.support.gatewayproc import API_KEY, CLIENT_TOKEN, OTHER_TOKEN, sha
from tests.support.simproc import SimProcess, free_port

SEND = "/chatapps/api/v1/subaccounts/acme_main/messages"
TEXT = {"user": {"msisdn": "+6591234567"}, "type": "text", "content": {"text": "hello"}}
AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


async def call(
    url: str,
    path: str,
    body: Any = TEXT,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    hdrs = {**AUTH, **(headers or {})}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url + path, data=data, headers=hdrs) as r,
    ):
        text = await r.read()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return r.status, dict(r.headers), parsed


async def test_send_reaches_8x8_with_the_real_key_and_not_the_client_token(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    status, headers, body = await call(
        gw.url,
        SEND,
        headers={
            "X-Request-Id": "r-1",
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "internal",
            "Cookie": "session=1",
        },
    )
    assert status == 200
    assert body["umid"]
    assert "X-Gateway-Reject" not in headers
    [seen] = sim.requests()
    assert seen["path"] == SEND
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert seen["headers"]["x-request-id"] == "r-1"
    assert "x-secret" not in seen["headers"] and "cookie" not in seen["headers"]
    assert CLIENT_TOKEN not in json.dumps(seen)
    assert seen["body"] == TEXT
    assert CLIENT_TOKEN not in gw.log_text() and API_KEY not in gw.log_text()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/chatapps/api/v1/subaccounts/acme_main/messages/batch",
            {
                "messages": [TEXT, {"user": {"msisdn": "8765 4321", "country": "SG"}}],
                "template": {"type": "text", "content": {"text": "x"}},
            },
        ),
        ("/sms/api/v1/subaccounts/acme_main/messages", {"destination": "6591234567", "text": "x"}),
        (
            "/sms/api/v1/subaccounts/acme_main/messages/batch",
            {
                "messages": [{"destination": "+6591234567", "text": "a"}],
                "destinations": ["+6591234568"],
                "template": {"text": "b"},
            },
        ),
        (
            "/verify/api/v2/subaccounts/acme_otp/sessions",
            {"destination": "+65(876)54321", "channel": "sms"},
        ),
    ],
)
async def test_every_send_path_is_forwarded_as_written(
    start_gateway: GatewayFactory, sim: SimProcess, path: str, body: dict[str, Any]
) -> None:
    gw = start_gateway()
    status, _, answer = await call(gw.url, path, body)
    assert status == 200, answer
    [seen] = sim.requests()
    assert seen["path"] == path and seen["body"] == body


async def test_get_under_a_subaccount_is_forwarded_with_its_query(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    path = "/sms/api/v1/subaccounts/acme_main/messages/abc-123?details=true"
    status, _, _ = await call(gw.url, path, None, method="GET")
    assert status == 200
    [seen] = sim.requests()
    assert seen["method"] == "GET" and seen["query"] == "details=true"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/chatapps/api/v1/subaccounts/acme_main/messages/other"),
        ("DELETE", SEND),
        ("PUT", SEND),
        ("GET", "/contacts/api/v1/accounts/acme/unknown"),
        ("GET", "/sms/api/v1/subaccounts/acme_main/messages/..;/x"),
        ("GET", "/sms/api/v1/subaccounts/acme_main/../../admin"),
        ("GET", "/sms/api/v1/subaccounts/acme_main/%2e%2e/x"),
        ("POST", "//evil.example.com/chatapps/api/v1/subaccounts/acme_main/messages"),
        ("GET", "/"),
    ],
)
async def test_unlisted_paths_are_404_and_never_forwarded(
    start_gateway: GatewayFactory, sim: SimProcess, method: str, path: str
) -> None:
    gw = start_gateway()
    status, headers, body = await call(gw.url, path, method=method)
    assert status == 404
    assert body["gatewayCode"] == "route.unknown" and headers["X-Gateway-Reject"] == "route.unknown"
    assert sim.requests() == []


@pytest.mark.parametrize(
    ("headers", "path", "status", "code"),
    [
        ({"Authorization": ""}, SEND, 401, "auth.missing"),
        ({"Authorization": "Basic b3JkZXJzOng="}, SEND, 401, "auth.missing"),
        ({"Authorization": "Bearer wrong-token"}, SEND, 401, "auth.invalid"),
        ({"Authorization": f"Bearer {OTHER_TOKEN}"}, SEND, 403, "auth.subaccount"),
        ({}, "/chatapps/api/v1/subaccounts/acme_other/messages", 403, "auth.subaccount"),
    ],
)
async def test_auth_refusals(
    start_gateway: GatewayFactory,
    sim: SimProcess,
    headers: dict[str, str],
    path: str,
    status: int,
    code: str,
) -> None:
    gw = start_gateway()
    got, hdrs, body = await call(gw.url, path, headers=headers)
    assert (got, body["gatewayCode"], hdrs["X-Gateway-Reject"]) == (status, code, code)
    assert set(body) >= {"code", "message", "errorId", "timestamp"}
    assert sim.requests() == []


async def test_client_outside_allowed_cidrs_is_403(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(
        clients=[
            {
                "name": "far",
                "token_sha256": sha(CLIENT_TOKEN),
                "subaccounts": ["acme_main"],
                "allowed_cidrs": ["10.0.0.0/8"],
            }
        ]
    )
    status, _, body = await call(gw.url, SEND)
    assert (status, body["gatewayCode"]) == (403, "auth.address")
    assert sim.requests() == []


@pytest.mark.parametrize(
    ("body", "raw", "ctype", "status", "code", "field"),
    [
        (None, b"{not json", None, 400, "request.invalid", "body"),
        (None, b"\xff\xfe\x00", None, 400, "request.invalid", "body"),
        ([1, 2], None, None, 400, "request.invalid", "body"),
        ({"type": "text"}, None, None, 400, "request.invalid", "user"),
        ({"user": {"msisdn": "12"}}, None, None, 400, "request.invalid", "user.msisdn"),
        (
            {"user": {"msisdn": "+65 9123 4567 8888 9999"}},
            None,
            None,
            400,
            "request.invalid",
            "user.msisdn",
        ),
        (
            {"user": {"msisdn": "+6591234567"}, "type": "template", "content": {"template": {}}},
            None,
            None,
            400,
            "request.invalid",
            "content.template.name",
        ),
        (TEXT, None, "text/plain", 415, "request.content_type", None),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(
    start_gateway: GatewayFactory,
    sim: SimProcess,
    body: Any,
    raw: bytes | None,
    ctype: str | None,
    status: int,
    code: str,
    field: str | None,
) -> None:
    gw = start_gateway()
    headers = {"Content-Type": ctype} if ctype else {}
    got, _, answer = await call(gw.url, SEND, body, raw=raw, headers=headers)
    assert (got, answer["gatewayCode"], answer.get("field")) == (status, code, field)
    assert sim.requests() == []


async def test_body_over_the_limit_is_413(start_gateway: GatewayFactory, sim: SimProcess) -> None:
    gw = start_gateway(server={"max_body_bytes": 1000})
    big = {**TEXT, "content": {"text": "x" * 2000}}
    status, _, body = await call(gw.url, SEND, big)
    assert (status, body["gatewayCode"]) == (413, "request.too_large")
    assert sim.requests() == []


async def test_batch_bad_number_names_its_index(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    batch = {"messages": [TEXT, {**TEXT, "user": {"msisdn": "abc"}}]}
    status, _, body = await call(gw.url, SEND + "/batch", batch)
    # contract Version 2: dropped alone, as 8x8 rejects it, not the whole batch
    assert status == 200
    [rejected] = body["gatewayRejected"]
    assert (rejected["index"], rejected["field"]) == (1, "messages[1].user.msisdn")
    assert sim.requests()[-1]["body"]["messages"] == [TEXT]


async def test_8x8_errors_pass_through_unchanged(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    sim.configure(fail_status=503)
    status, headers, body = await call(gw.url, SEND)
    assert status == 503
    assert isinstance(body["code"], int) and "gatewayCode" not in body  # 8x8's own error
    assert "X-Gateway-Reject" not in headers


async def test_8x8s_answer_to_any_operation_passes_through_with_its_headers(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    path = "/sms/api/v1/subaccounts/acme_main/messages/u-1"
    sim.configure(fail_status=429, retry_after_s=7)
    status, headers, body = await call(gw.url, path, None, method="GET")
    assert (status, headers["Retry-After"], body["code"]) == (429, "7", 429)
    assert "X-Gateway-Reject" not in headers and "gatewayCode" not in body
    sim.configure(fail_status=None)
    # 8x8's 429 cools the subaccount down for every operation, not only sends
    status, headers, body = await call(gw.url, path, None, method="DELETE")
    assert (status, headers["X-Gateway-Reject"]) == (429, "rate_limited.subaccount")
    path = "/sms/api/v1/subaccounts/acme_otp/messages/u-1"
    status, headers, body = await call(gw.url, path, None, method="DELETE")
    assert (status, body) == (200, {"cancelledCount": 0})
    assert headers["Content-Type"].startswith("application/json")


async def test_dead_upstream_is_502(start_gateway: GatewayFactory, sim: SimProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(upstream={"urls": {"chatapps": dead + "/chatapps"}})
    status, _, body = await call(gw.url, SEND)
    assert (status, body["gatewayCode"]) == (502, "upstream.error")


async def test_slow_upstream_is_504(start_gateway: GatewayFactory, sim: SimProcess) -> None:
    gw = start_gateway(upstream={"timeout_s": 0.3})
    sim.configure(delay_ms=1500)
    status, _, body = await call(gw.url, SEND)
    assert (status, body["gatewayCode"]) == (504, "upstream.timeout")
    await asyncio.sleep(1.5)  # the simulator records a request when it answers it
    assert len(sim.requests()) == 1  # never retried: 8x8 may have taken it


async def test_upstream_dropping_the_connection_is_502(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    sim.configure(drop=True)
    status, _, body = await call(gw.url, SEND)
    assert (status, body["gatewayCode"]) == (502, "upstream.error")


async def test_ops_endpoints(start_gateway: GatewayFactory, sim: SimProcess) -> None:
    gw = start_gateway()
    await call(gw.url, SEND)
    assert (await call(gw.url, "/healthz", None, method="GET"))[0] == 200
    status, _, ready = await call(gw.url, "/readyz", None, method="GET")
    assert (status, ready) == (200, {"store": "memory", "draining": False})
    status, _, metrics = await call(gw.url, "/metrics", None, method="GET")
    text = metrics.decode()
    assert (
        'gateway_requests_total{decision="forwarded",route="chatapps.send",status="200"} 1.0'
        in text
    )
    assert "gateway_upstream_seconds_bucket" in text


async def test_sigterm_with_requests_in_flight_loses_none(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    sim.configure(delay_ms=1000)
    n = 150
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one(i: int) -> int | str:
            body = {**TEXT, "clientMessageId": f"m{i}"}
            try:
                async with s.post(gw.url + SEND, json=body, headers=AUTH) as r:
                    await r.read()
                    return r.status
            except aiohttp.ClientError as exc:
                return type(exc).__name__

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0.5)  # all connected; the simulator holds each for 1 s
        gw.signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
    assert gw.wait(30) == 0
    answered = [r for r in results if r == 200]
    delivered = [r for r in sim.requests() if r["status"] == 200]
    assert len(answered) >= 100
    # every send 8x8 took was answered to its caller; the rest never reached 8x8
    assert len(delivered) == len(answered)
    assert all(r == 200 or isinstance(r, str) for r in results), results


async def test_a_failing_8x8_opens_the_circuit_and_a_probe_closes_it(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(upstream={"breaker_failures": 3, "breaker_open_s": 1})
    sim.configure(fail_status=503)
    statuses = [(await call(gw.url, SEND))[0] for _ in range(3)]
    assert statuses == [503, 503, 503]  # 8x8's own answers
    status, _, body = await call(gw.url, SEND)
    assert (status, body["gatewayCode"]) == (503, "upstream.unavailable")
    assert len(sim.requests()) == 3  # the open circuit sent nothing
    sim.configure(fail_status=None)
    await asyncio.sleep(1.1)
    assert (await call(gw.url, SEND))[0] == 200  # the probe
    assert (await call(gw.url, SEND))[0] == 200
