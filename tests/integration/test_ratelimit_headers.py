"""RateLimit fields (IETF httpapi draft 09+ structured fields) on every answer to a decided
request, next to the draft-06 headers a 429 has always carried."""

from __future__ import annotations

import re

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import SEND, call
from tests.support.simproc import SimProcess

VERIFY = "/verify/api/v2/subaccounts/acme_otp/sessions"
BUCKETS = ("subaccount", "egress_ip", "end_user_ip", "otp_recipient")
_ITEM = re.compile(r'^"([a-z_]+)"((?:;[a-z]+=\d+)+)$')


def parse_item(value: str) -> tuple[str, dict[str, int]]:
    """One structured-field list item `"name";k=v;...` with integer parameters."""
    found = _ITEM.match(value.strip())
    assert found, f"not a structured-field item: {value!r}"
    params = dict(p.split("=") for p in found.group(2).split(";")[1:])
    return found.group(1), {k: int(v) for k, v in params.items()}


async def test_a_forwarded_send_carries_the_nearest_bucket(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(subaccounts={"acme_main": {"rps": 50, "burst": 5}})
    status, headers, _ = await call(gw.url, SEND)
    assert status == 200
    name, policy = parse_item(headers["RateLimit-Policy"])
    same, current = parse_item(headers["RateLimit"])
    # the subaccount (5 at once) is nearer to refusing than the egress IP (60 at once)
    assert name == same == "subaccount"
    assert policy == {"q": 50, "w": 1}
    assert set(current) == {"r", "t"} and 0 <= current["r"] < 5 and current["t"] >= 0
    assert "RateLimit-Limit" not in headers  # the draft-06 trio is for 429s


async def test_a_gateway_429_keeps_its_headers_and_adds_ratelimit(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    body = {"destination": "+6587654321", "channel": "sms"}
    status, headers, _ = await call(gw.url, VERIFY, body)
    assert status == 200 and parse_item(headers["RateLimit"])[0] in BUCKETS
    status, headers, answer = await call(gw.url, VERIFY, body)
    assert (status, answer["gatewayCode"]) == (429, "rate_limited.otp_recipient")
    assert headers["RateLimit-Policy"] == "1;w=60"  # the contract's 429 form, unchanged
    assert headers["RateLimit-Limit"] == "1" and headers["RateLimit-Remaining"] == "0"
    name, current = parse_item(headers["RateLimit"])
    assert name == "otp_recipient" and current["r"] == 0
    assert current["t"] == int(headers["Retry-After"]) == int(headers["RateLimit-Reset"])


async def test_other_operations_and_8x8_errors_carry_them_too(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    path = "/chatapps/api/v1/subaccounts/acme_main/messages/some-umid"
    status, headers, _ = await call(gw.url, path, None, method="GET")
    assert parse_item(headers["RateLimit-Policy"])[0] in BUCKETS, status
    sim.configure(fail_status=500)
    status, headers, _ = await call(gw.url, SEND)
    assert status == 500 and parse_item(headers["RateLimit"])[0] in BUCKETS


async def test_answers_never_decided_carry_none(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    status, headers, _ = await call(gw.url, SEND, headers={"Authorization": "Bearer wrong"})
    assert status == 401
    assert "RateLimit" not in headers and "RateLimit-Policy" not in headers
