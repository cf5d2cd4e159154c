"""Compliance end to end: real gateway processes, the simulator, and (where it matters) a
real redis-server with appendonly. Opt-outs, consent and templates are fed through the
webhooks and the admin API, and what reaches the simulator is what the test asserts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory
from tests.support.gatewayproc import (
    ADMIN_TOKEN,
    API_KEY,
    CLIENT_TOKEN,
    WEBHOOK_SECRET,
    GatewayProcess,
)
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess

NUMBER = "+6591234567"
OTHER = "+6598765432"
CHAT = "/chatapps/api/v1/subaccounts/acme_main/messages"
BATCH = CHAT + "/batch"
ADMIN = "/admin/v1/accounts/acme"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOOK = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


async def call(
    gw: GatewayProcess, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    data = None if body is None else json.dumps(body).encode()
    hdrs = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    async with aiohttp.ClientSession() as s, s.request(method, gw.url + path, data=data,
                                                       headers=hdrs) as r:  # fmt: skip
        raw = await r.read()
        return r.status, dict(r.headers), json.loads(raw) if raw else None


def text(msisdn: str = NUMBER) -> dict[str, Any]:
    return {"user": {"msisdn": msisdn}, "type": "text", "content": {"text": "hello"}}


def templated(msisdn: str = NUMBER, name: str = "promo", language: str = "en") -> dict[str, Any]:
    return {"user": {"msisdn": msisdn}, "type": "template",
            "content": {"template": {"name": name, "language": language, "components": []}}}  # fmt: skip


def inbound(words: str, msisdn: str = NUMBER) -> dict[str, Any]:
    return {"namespace": "ChatApps", "eventType": "inbound_message_received",
            "payload": {"subAccountId": "acme_main", "user": {"msisdn": msisdn.lstrip("+")},
                        "type": "Text", "content": {"text": words}}}  # fmt: skip


def status_event(status: str, at: str, title: str | None = None, name: str = "promo") -> Any:
    meta: dict[str, Any] = {"status": status}
    if title:
        meta["otherInfo"] = {"title": title, "description": "quality"}
    return {"eventId": "e", "timestamp": at, "provider": "WhatsApp", "accountId": "acme",
            "eventType": "template_status_update", "businessAccountId": "waba",
            "eventDetails": {"templateId": 1, "templateName": name, "templateLanguage": "en",
                             "meta": meta}}  # fmt: skip


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def send(gw: GatewayProcess, body: Any, path: str = CHAT) -> tuple[int, dict[str, str], Any]:
    return await call(gw, "POST", path, body, CLIENT)


async def hook(gw: GatewayProcess, path: str, event: Any, **kw: Any) -> tuple[int, Any]:
    status, _, body = await call(gw, "POST", path, event, kw.get("headers", HOOK))
    return status, body


async def admin(gw: GatewayProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, answer = await call(gw, method, ADMIN + path, body, ADMIN_AUTH)
    return status, answer


async def set_template(
    gw: GatewayProcess, name: str, category: str, status: str = "APPROVED"
) -> None:
    assert (await admin(gw, "PUT", f"/templates/{name}/en",
                        {"status": status, "category": category}))[0] == 204  # fmt: skip


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


# --- opt-outs ------------------------------------------------------------------------------


async def test_stop_keyword_blocks_next_send_and_start_unblocks(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(**backend)
    assert (await hook(gw, "/webhooks/inbound", inbound("  StOp "))) == (
        200, {"status": "ok", "effect": "opted_out"},
    )  # fmt: skip
    status, headers, body = await send(gw, text())
    assert (status, body["gatewayCode"], headers["X-Gateway-Reject"]) == (
        403, "recipient.opted_out", "recipient.opted_out",
    )  # fmt: skip
    sms = {"destination": "9123 4567", "country": "SG", "text": "hi"}
    assert (await send(gw, sms, "/sms/api/v1/subaccounts/acme_main/messages"))[0] == 403
    verify = {"destination": "6591234567"}
    assert (await send(gw, verify, "/verify/api/v2/subaccounts/acme_otp/sessions"))[0] == 403
    assert sim.requests() == []
    assert (await send(gw, text(OTHER)))[0] == 200  # others are unaffected
    assert (await hook(gw, "/webhooks/inbound", inbound("START")))[1]["effect"] == "opted_in"
    assert (await send(gw, text()))[0] == 200
    assert [r["body"]["user"]["msisdn"] for r in sim.requests()] == [OTHER, NUMBER]
    log = gw.log_text()
    assert "StOp" not in log and "91234567" not in log and WEBHOOK_SECRET not in log


async def test_forged_webhooks_are_refused_and_change_nothing(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    await set_template(gw, "promo", "MARKETING")
    for headers in ({}, {"Authorization": "Bearer forged"}, {"Authorization": f"Bearer {API_KEY}"}):
        status, body = await hook(gw, "/webhooks/inbound", inbound("STOP"), headers=headers)
        assert (status, body["gatewayCode"]) == (
            401,
            "auth.missing" if not headers else "auth.invalid",
        )
        status, _ = await hook(gw, "/webhooks/templates", status_event("PAUSED", later(60)),
                               headers=headers)  # fmt: skip
        assert status == 401
    assert (await send(gw, text()))[0] == 200
    assert (await send(gw, templated()))[0] == 200


async def test_push_optouts_reaches_the_contacts_blacklist(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(policy={"opt_in": "off", "push_optouts": True})
    assert (await hook(gw, "/webhooks/inbound", inbound("UNSUBSCRIBE")))[0] == 200
    assert (await admin(gw, "PUT", f"/optouts/{OTHER}"))[0] == 204

    def listed() -> bool:
        return sorted(sim.contacts().get("acme", {}).get("blacklist", [])) == [NUMBER, OTHER]

    await eventually(listed)
    assert (await send(gw, text()))[0] == 403


# --- consent -------------------------------------------------------------------------------


@pytest.mark.parametrize(("opt_in", "unconsented"), [("enforce", 403), ("warn", 200), ("off", 200)])
async def test_consent_policy_for_template_sends(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any], opt_in: str,
    unconsented: int,
) -> None:  # fmt: skip
    gw = start_gateway(policy={"opt_in": opt_in}, **backend)
    await set_template(gw, "promo", "MARKETING")
    status, _, body = await send(gw, templated())
    assert status == unconsented
    if status == 403:
        assert body["gatewayCode"] == "recipient.no_consent"
    consent = {"source": "web form", "categories": ["UTILITY"], "timestamp": "2025-01-01T00:00:00Z"}
    assert (await admin(gw, "PUT", f"/consents/{NUMBER}", consent))[0] == 204
    assert (await send(gw, templated()))[0] == unconsented  # UTILITY does not cover MARKETING
    consent["categories"] = ["UTILITY", "MARKETING"]
    assert (await admin(gw, "PUT", f"/consents/{NUMBER}", consent))[0] == 204
    assert (await send(gw, templated()))[0] == 200
    assert (await send(gw, text(OTHER)))[0] == 200  # consent is about templates only
    forwarded = 2 if unconsented == 403 else 4
    assert len(sim.requests()) == forwarded
    if opt_in == "warn":
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
            assert "gateway_unconsented_sends_total 2.0" in await r.text()


# --- templates -----------------------------------------------------------------------------


async def test_paused_template_is_409_until_approved_again(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(**backend)
    await set_template(gw, "promo", "MARKETING")
    assert (await send(gw, templated()))[0] == 200
    event = status_event("PAUSED", later(2), title="FIRST_PAUSE")
    assert await hook(gw, "/webhooks/templates", event) == (
        200,
        {"status": "ok", "effect": "stored"},
    )
    status, headers, body = await send(gw, templated())
    assert (status, body["gatewayCode"], body["status"]) == (409, "template.not_active", "PAUSED")
    assert headers["X-Gateway-Reject"] == "template.not_active"
    # a retried older event arrives late: ignored
    stale = status_event("APPROVED", later(1))
    assert await hook(gw, "/webhooks/templates", stale) == (
        200,
        {"status": "ok", "effect": "stale"},
    )
    assert (await send(gw, templated()))[0] == 409
    unpause = status_event("APPROVED", later(3), title="UNPAUSE")
    assert (await hook(gw, "/webhooks/templates", unpause))[1]["effect"] == "stored"
    assert (await send(gw, templated()))[0] == 200
    disabled = status_event("PAUSED", later(4), title="DISABLED")
    await hook(gw, "/webhooks/templates", disabled)
    assert (await send(gw, templated()))[2]["status"] == "DISABLED"
    assert len(sim.requests()) == 2
    assert (await admin(gw, "GET", "/templates/promo/en"))[1]["status"] == "DISABLED"


@pytest.mark.parametrize("policy", ["reject", "allow"])
async def test_unknown_template_follows_policy(
    start_gateway: GatewayFactory, sim: SimProcess, policy: str
) -> None:
    gw = start_gateway(policy={"opt_in": "off", "unknown_template": policy})
    status, _, body = await send(gw, templated(name="never_registered"))
    if policy == "reject":
        assert (status, body["gatewayCode"], body["status"]) == (409, "template.not_active", None)
        assert sim.requests() == []
    else:
        assert status == 200 and len(sim.requests()) == 1


async def test_authentication_template_counts_as_an_otp(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(**backend)
    await set_template(gw, "login_code", "AUTHENTICATION")
    await set_template(gw, "promo", "MARKETING")
    code = templated(name="login_code")
    assert (await send(gw, code))[0] == 200
    status, headers, body = await send(gw, code)
    assert (status, body["gatewayCode"]) == (429, "rate_limited.otp_recipient")
    assert int(headers["Retry-After"]) >= 1
    verify = "/verify/api/v2/subaccounts/acme_otp/sessions"
    assert (await send(gw, {"destination": NUMBER}, verify))[0] == 429  # one shared bucket
    assert (await send(gw, templated()))[0] == 200  # MARKETING is no OTP
    assert (await send(gw, templated(OTHER, name="login_code")))[0] == 200


async def test_template_sync_fills_the_registry(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    sim.set_templates(
        [{"templateName": "order_update", "language": "en", "category": "UTILITY",
          "status": "APPROVED", "updatedAt": "2025-03-01T00:00:00Z"}],
        account="acme", channel="ch1",
    )  # fmt: skip
    gw = start_gateway(accounts={"acme": {"whatsapp_channels": ["ch1"]}}, templates={"sync_s": 1},
                       **backend)  # fmt: skip

    async def synced() -> Any:
        status, body = await admin(gw, "GET", "/templates/order_update/en")
        return body if status == 200 else None

    found = await eventually(synced)
    assert (found["status"], found["category"]) == ("APPROVED", "UTILITY")
    assert (await send(gw, templated(name="order_update")))[0] == 200
    sim.set_templates(
        [{"templateName": "order_update", "language": "en", "category": "UTILITY",
          "status": "PAUSED", "updatedAt": later(0)}],
        account="acme", channel="ch1",
    )  # fmt: skip

    async def paused() -> bool:
        return (await send(gw, templated(name="order_update")))[0] == 409

    await eventually(paused, timeout=10)


# --- batches -------------------------------------------------------------------------------


async def test_batch_drops_refused_messages_and_reports_them(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(**backend)
    assert (await admin(gw, "PUT", f"/optouts/{OTHER}"))[0] == 204
    batch = {"messages": [text(), text("6598765432"), templated("+6590000003", "unknown_tpl"),
                          text("+6590000004")]}  # fmt: skip
    status, headers, body = await send(gw, batch, BATCH)
    assert status == 200 and "X-Gateway-Reject" not in headers
    assert body["batchId"] and body["acceptedCount"] == 2
    assert body["gatewayRejected"] == [
        {"index": 1, "msisdn": "+******5432", "code": "recipient.opted_out"},
        {"index": 2, "msisdn": "+******0003", "code": "template.not_active"},
    ]
    [seen] = sim.requests()
    assert [m["user"]["msisdn"] for m in seen["body"]["messages"]] == [NUMBER, "+6590000004"]
    sms = {"destinations": ["+6598765432", "+6590000005"], "template": {"text": "hi"}}
    status, _, body = await send(gw, sms, "/sms/api/v1/subaccounts/acme_main/messages/batch")
    assert status == 200 and body["gatewayRejected"][0]["index"] == 0
    assert sim.requests()[-1]["body"]["destinations"] == ["+6590000005"]


async def test_batch_with_every_message_dropped_forwards_nothing(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(**backend)
    for n in (NUMBER, OTHER):
        assert (await hook(gw, "/webhooks/inbound", inbound("STOP", n)))[0] == 200
    status, headers, body = await send(gw, {"messages": [text(), text(OTHER)]}, BATCH)
    # contract Version 2: the first message's refusal, as for a single send (8x8's batch
    # answer needs a batchId that only 8x8 gives), with gatewayRejected listing all
    assert status == 403
    assert headers["X-Gateway-Reject"] == "recipient.opted_out"
    assert (body["code"], body["gatewayCode"]) == (403, "recipient.opted_out")
    assert body["gatewayRejected"] == [
        {"index": 0, "msisdn": "+******4567", "code": "recipient.opted_out"},
        {"index": 1, "msisdn": "+******5432", "code": "recipient.opted_out"},
    ]
    assert sim.requests() == []


# --- durability ----------------------------------------------------------------------------


async def test_optouts_and_consent_survive_gateway_and_redis_restarts(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    redis_server.cli("FLUSHALL")
    sections: dict[str, Any] = {"redis": {"url": redis_server.url}, "policy": {"opt_in": "enforce"}}
    gw = start_gateway(**sections)
    await hook(gw, "/webhooks/inbound", inbound("STOP"))
    consent = {
        "source": "checkout",
        "categories": ["MARKETING"],
        "timestamp": "2025-01-01T00:00:00Z",
    }
    assert (await admin(gw, "PUT", f"/consents/{OTHER}", consent))[0] == 204
    await set_template(gw, "promo", "MARKETING")
    gw.stop()
    redis_server.stop(kill=True)  # no SHUTDOWN save: only the append-only file brings it back
    redis_server.start()
    gw = start_gateway(name="gw2", **sections)
    assert (await send(gw, text()))[2]["gatewayCode"] == "recipient.opted_out"
    assert (await send(gw, templated(OTHER)))[0] == 200
    assert (await admin(gw, "GET", f"/consents/{OTHER}")) == (200, {"msisdn": OTHER, **consent})
    assert (await admin(gw, "GET", f"/optouts/{NUMBER}")) == (200, {"msisdn": NUMBER})


# --- lock-outs, ordering, scheduled sends (2 workers sharing one Redis) ----------------------


def stamped(words: str, at: datetime, msisdn: str = NUMBER) -> dict[str, Any]:
    event = inbound(words, msisdn)
    event["payload"]["timestamp"] = at.isoformat().replace("+00:00", "Z")
    return event


async def test_the_right_secret_is_never_locked_out(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    """Everyone behind one load balancer is one address: guesses from it must not bounce
    8x8's STOPs, on any worker."""
    redis_server.cli("FLUSHALL")
    gw = start_gateway(server={"workers": 2}, redis={"url": redis_server.url},
                       admin={"auth_failures_per_minute": 3})  # fmt: skip
    wrong = {"Authorization": "Bearer guess"}
    answers = [(await hook(gw, "/webhooks/inbound", inbound("STOP"), headers=wrong))[0]
               for _ in range(30)]  # fmt: skip
    assert set(answers) == {401, 429} and answers[:3] == [401] * 3
    numbers = [f"+659000{i:04d}" for i in range(10)]
    for n in numbers:  # new connections: both workers answer some
        assert await hook(gw, "/webhooks/inbound", inbound("STOP", n)) == (
            200, {"status": "ok", "effect": "opted_out"},
        )  # fmt: skip
        assert (await admin(gw, "GET", f"/optouts/{n}"))[0] == 200
    for n in numbers[:3]:
        assert (await send(gw, text(n)))[2]["gatewayCode"] == "recipient.opted_out"
    assert sim.requests() == []
    assert WEBHOOK_SECRET not in gw.log_text()


async def test_an_older_start_does_not_undo_a_stop_across_workers(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    redis_server.cli("FLUSHALL")
    gw = start_gateway(server={"workers": 2}, redis={"url": redis_server.url})
    now = datetime.now(UTC)
    assert (await hook(gw, "/webhooks/inbound", stamped("STOP", now)))[1]["effect"] == "opted_out"
    for _ in range(4):  # 8x8 retrying a START sent before the STOP, to either worker
        late = stamped("START", now - timedelta(seconds=10))
        assert await hook(gw, "/webhooks/inbound", late) == (
            200,
            {"status": "ok", "effect": "stale"},
        )
    assert (await send(gw, text()))[2]["gatewayCode"] == "recipient.opted_out"
    newer = stamped("START", now + timedelta(seconds=1))
    assert (await hook(gw, "/webhooks/inbound", newer))[1]["effect"] == "opted_in"
    assert (await send(gw, text()))[0] == 200
    assert (await admin(gw, "PUT", f"/optouts/{NUMBER}"))[0] == 204  # the admin's now wins
    assert (await hook(gw, "/webhooks/inbound", stamped("START", now)))[1]["effect"] == "stale"
    assert (await send(gw, text()))[0] == 403
    assert len(sim.requests()) == 1


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_stop_cancels_the_persons_scheduled_send(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer, workers: int
) -> None:
    redis_server.cli("FLUSHALL")
    gw = start_gateway(server={"workers": workers}, redis={"url": redis_server.url})
    body = {**text(), "scheduled": later(3600)}
    status, _, answer = await send(gw, body)
    assert status == 200
    assert (await send(gw, {**text(OTHER), "scheduled": later(3600)}))[0] == 200
    assert (await hook(gw, "/webhooks/inbound", inbound("STOP")))[1]["effect"] == "opted_out"

    def cancelled() -> list[str]:
        return [r["path"] for r in sim.requests(product="chatapps") if r["method"] == "DELETE"]

    await eventually(lambda: cancelled() == [f"{CHAT}/{answer['umid']}"])
    [seen] = [r for r in sim.requests(product="chatapps") if r["method"] == "DELETE"]
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"
    await asyncio.sleep(0.3)
    assert len(cancelled()) == 1  # the other person's send stays scheduled
