"""CAPTCHA before a public-form send, end to end: a real gateway and the simulator, whose
`/captcha/siteverify` stands in for the provider (gateway/simulator/captcha.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import call
from tests.support.gatewayproc import CLIENT_TOKEN, OTHER_TOKEN, GatewayProcess, sha
from tests.support.simproc import SimProcess

FORM_TOKEN = "signup-form-client-token"
SMS = "/sms/api/v1/subaccounts/acme_form/messages"
BODY = {"destination": "+6591234567", "text": "your code is 1234"}
SECRET = "captcha-secret-for-tests"


def provider(sim: SimProcess, **change: Any) -> dict[str, Any]:
    return dict(sim._call("POST", "/_sim/captcha", change))


def start(start_gateway: GatewayFactory, sim: SimProcess, on_failure: str) -> GatewayProcess:
    provider(sim, mode="ok", clear=True)
    clients = [
        {"name": "orders", "token_sha256": sha(CLIENT_TOKEN), "subaccounts": ["acme_main"]},
        {"name": "billing", "token_sha256": sha(OTHER_TOKEN), "subaccounts": ["acme_bills"]},
        {"name": "signup", "token_sha256": sha(FORM_TOKEN), "subaccounts": ["acme_form"],
         "public_form": True},
    ]  # fmt: skip
    captcha = {"verify_url": f"{sim.url}/captcha/siteverify", "on_failure": on_failure,
               "timeout_s": 0.5}  # fmt: skip
    return start_gateway(captcha=captcha, clients=clients, env={"GATEWAY_CAPTCHA_SECRET": SECRET})


async def send(gw: GatewayProcess, token: str | None, **headers: str) -> tuple[int, Any]:
    hdrs = {"Authorization": f"Bearer {FORM_TOKEN}", **headers}
    if token is not None:
        hdrs["X-Captcha-Token"] = token
    status, _, body = await call(gw.url, SMS, BODY, headers=hdrs)
    return status, body


def sent(sim: SimProcess) -> int:
    return sum(1 for r in sim.requests() if r["path"] == SMS)


async def test_public_form_send_needs_a_good_captcha_token_once(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start(start_gateway, sim, "closed")
    status, body = await send(gw, None)
    assert (status, body["gatewayCode"], body["code"]) == (403, "captcha.missing", 403)
    status, body = await send(gw, "fail-123")
    assert (status, body["gatewayCode"]) == (403, "captcha.invalid")
    assert sent(sim) == 0
    status, body = await send(gw, "pass-abc", **{"X-End-User-IP": "203.0.113.9"})
    assert status == 200 and body["umid"]
    assert sent(sim) == 1
    calls = provider(sim)["calls"]
    assert calls[-1] == {"response": "pass-abc", "remoteip": "203.0.113.9", "secret_set": True}
    status, body = await send(gw, "pass-abc")  # reused: refused without asking the provider
    assert (status, body["gatewayCode"]) == (403, "captcha.invalid")
    assert len(provider(sim)["calls"]) == len(calls) and sent(sim) == 1
    assert "pass-abc" not in gw.log_text() and SECRET not in gw.log_text()


async def test_a_client_without_public_form_needs_no_token(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start(start_gateway, sim, "closed")
    path = "/sms/api/v1/subaccounts/acme_main/messages"
    status, _, _ = await call(gw.url, path, BODY)
    assert status == 200
    assert provider(sim)["calls"] == []


@pytest.mark.parametrize("mode", ["error", "hang"])
async def test_provider_down_refuses_when_closed(
    start_gateway: GatewayFactory, sim: SimProcess, mode: str
) -> None:
    gw = start(start_gateway, sim, "closed")
    provider(sim, mode=mode)
    try:
        status, body = await send(gw, "pass-down")
    finally:
        provider(sim, mode="ok")
    assert (status, body["gatewayCode"]) == (503, "captcha.unavailable")
    assert sent(sim) == 0
    status, _ = await send(gw, "pass-down")  # the claim was handed back: usable once up
    assert status == 200


async def test_provider_down_decides_without_it_when_open(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start(start_gateway, sim, "open")
    provider(sim, mode="error")
    try:
        status, body = await send(gw, "pass-open")
    finally:
        provider(sim, mode="ok")
    assert status == 200 and body["umid"]
    assert sent(sim) == 1
    status, body = await send(gw, None)  # open covers the provider, not a missing token
    assert (status, body["gatewayCode"]) == (403, "captcha.missing")
    gw.wait_for_log('"captcha.unavailable"')
    _, _, metrics = await call(gw.url, "/metrics", None, method="GET")
    assert 'gateway_captcha_checks_total{outcome="open"} 1.0' in metrics.decode()


async def test_an_idempotent_retry_replays_instead_of_spending_the_token_again(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start(start_gateway, sim, "closed")
    first = await send(gw, "pass-once", **{"Idempotency-Key": "signup-42"})
    again = await send(gw, "pass-once", **{"Idempotency-Key": "signup-42"})
    assert first[0] == again[0] == 200 and first[1]["umid"] == again[1]["umid"]
    assert sent(sim) == 1 and len(provider(sim)["calls"]) == 1
