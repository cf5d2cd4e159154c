"""The OTP pumping shield end to end: a real gateway (on a real redis-server, and on the
in-process store) in front of the simulator's Verify. OTPs to sequential numbers of one
prefix with no validations are held; validations through the gateway keep a prefix open;
shadow mode forwards everything and counts; countries, the safe list, admin release."""

from __future__ import annotations

import urllib.request
from typing import Any

import aiohttp

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import call
from tests.support.gatewayproc import ADMIN_TOKEN, GatewayProcess
from tests.support.simproc import SimProcess

VERIFY = "/verify/api/v2/subaccounts/acme_otp/sessions"
SMS = "/sms/api/v1/subaccounts/acme_main/messages"
SHIELD = "/admin/v1/otp-shield/prefixes"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PUMPED = "+44790010"  # +44 7900 10xxxx: the prefix of the default prefix_digits (6)


def start(start_gateway: GatewayFactory, backend: dict[str, Any], **shield: Any) -> GatewayProcess:
    section = {"mode": "enforce", "min_sends": 5, "min_conversion": 0.3, **shield}
    return start_gateway(otp_shield=section, **backend)


def number(prefix: str, i: int) -> str:
    return f"{prefix}{i:04d}"


async def otp(gw: GatewayProcess, msisdn: str) -> tuple[int, dict[str, str], Any]:
    return await call(gw.url, VERIFY, {"destination": msisdn})


async def validate(gw: GatewayProcess, session: str) -> int:
    status, _, body = await call(gw.url, f"{VERIFY}/{session}?code=1234", None, method="GET")
    assert body["status"] == "VERIFIED"
    return status


def sessions_sent(sim: SimProcess) -> int:
    return sum(1 for r in sim.requests() if r["path"] == VERIFY)


async def shield_admin(gw: GatewayProcess, method: str, path: str = "") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gw.url + SHIELD + path, headers=ADMIN_AUTH) as r,
    ):
        return r.status, (await r.json() if r.status == 200 else None)


def metric(gw: GatewayProcess, outcome: str) -> float:
    with urllib.request.urlopen(gw.url + "/metrics") as r:
        text = r.read().decode()
    needle = f'gateway_otp_shield_total{{outcome="{outcome}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line[len(needle) :])
    return 0.0


async def test_pumping_one_prefix_is_quarantined_while_other_prefixes_pass(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start(start_gateway, backend)
    for i in range(5):
        assert (await otp(gw, number(PUMPED, i)))[0] == 200
    status, headers, body = await otp(gw, number(PUMPED, 5))
    assert (status, body["gatewayCode"]) == (403, "otp.prefix_quarantined")
    assert headers["Retry-After"] == "900"
    assert (await otp(gw, number("+44791120", 0)))[0] == 200  # another prefix
    assert (await call(gw.url, SMS, {"destination": number(PUMPED, 6), "text": "hi"}))[0] == 200
    assert sessions_sent(sim) == 6
    status, listed = await shield_admin(gw, "GET")
    assert status == 200
    [held] = listed["prefixes"]
    assert (held["prefix"], held["level"]) == (PUMPED, 1) and held["until"].endswith("Z")
    assert (await shield_admin(gw, "DELETE", "/" + PUMPED.lstrip("+")))[0] == 204
    assert (await shield_admin(gw, "GET"))[1] == {"prefixes": []}
    assert (await otp(gw, number(PUMPED, 7)))[0] == 200  # released


async def test_a_prefix_validated_through_the_gateway_is_not_quarantined(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start(start_gateway, backend)
    for i in range(10):
        status, _, body = await otp(gw, number(PUMPED, i))
        assert status == 200, body
        if i % 2 == 0:  # half the people type their code in
            assert await validate(gw, body["sessionId"]) == 200
    assert sessions_sent(sim) == 10


async def test_shadow_mode_forwards_everything_and_counts_what_it_would_refuse(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(otp_shield={"min_sends": 5, "countries": ["SG"]})  # mode: shadow
    for i in range(8):
        assert (await otp(gw, number(PUMPED, i)))[0] == 200
    assert sessions_sent(sim) == 8
    assert metric(gw, "country") == 8
    gw.stop()
    gw = start_gateway(otp_shield={"min_sends": 5}, name="gw2")
    for i in range(8):
        assert (await otp(gw, number(PUMPED, i)))[0] == 200
    assert sessions_sent(sim) == 16
    assert metric(gw, "quarantined") == 3 and metric(gw, "passed") == 5
    assert "otp_shield.would_refuse" in gw.log_text()


async def test_countries_outside_the_allow_list_are_refused_for_otps_only(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(otp_shield={"mode": "enforce", "countries": ["SG"]})
    assert (await otp(gw, "+6591234567"))[0] == 200
    status, _, body = await otp(gw, number(PUMPED, 0))
    assert (status, body["gatewayCode"]) == (403, "otp.country")
    assert (await call(gw.url, SMS, {"destination": number(PUMPED, 0), "text": "hi"}))[0] == 200
    assert sessions_sent(sim) == 1


async def test_the_safe_list_is_never_quarantined(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start(start_gateway, {}, safe_list=[PUMPED])
    for i in range(8):
        assert (await otp(gw, number(PUMPED, i)))[0] == 200
    assert sessions_sent(sim) == 8
