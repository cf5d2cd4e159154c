"""WhatsApp's own limits through the app in process: sends refused with their codes, and
the webhooks that feed the limits (inbound windows, receipts, the account's tier)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import config
from gateway.app import build_app
from gateway.state import STATE
from gateway.store import keys
from gateway.store.base import TemplateRecord
from gateway.store.memory import MemoryStore
from tests.support.gatewayproc import (
    ADMIN_TOKEN,
    API_KEY,
    CLIENT_TOKEN,
    WEBHOOK_SECRET,
    base_config,
    to_toml,
)
from tests.support.simproc import SimProcess

ENV = {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET}
HOOK = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
SEND = "/chatapps/api/v1/subaccounts/acme_main/messages"
BATCH = SEND + "/batch"
SENDER = "+6560000001"
Client = TestClient[web.Request, web.Application]


def wa_sections(tier: int | str = 3, **whatsapp: Any) -> dict[str, Any]:
    return {
        "whatsapp": {"pair_burst": 2, **whatsapp},
        "subaccounts": {"acme_main": {"whatsapp_senders": [SENDER]}},
        "portfolios": {"retail": {"tier": tier, "subaccounts": ["acme_main"]}},
    }


@pytest.fixture
def make(aiohttp_client: Any, sim: SimProcess, tmp_path: Path) -> Callable[..., Awaitable[Client]]:
    async def start(**sections: Any) -> Client:
        path = tmp_path / "gw.toml"
        path.write_text(to_toml(base_config(sim.url, **(sections or wa_sections()))))
        cfg = config.load(path, environ={})
        store = MemoryStore()
        await store.template_put(
            "acme",
            TemplateRecord("promo", "en", "APPROVED", "MARKETING", "GREEN", "2026-01-01T00:00:00Z"),
        )
        await store.template_put(
            "acme",
            TemplateRecord("bad", "en", "APPROVED", "MARKETING", "RED", "2026-01-01T00:00:00Z"),
        )
        client: Client = await aiohttp_client(build_app(cfg, API_KEY, ENV, store=store))
        return client

    return start


def text(msisdn: str) -> dict[str, Any]:
    return {"user": {"msisdn": msisdn}, "type": "text", "content": {"text": "hi"}}


def template(msisdn: str, name: str = "promo") -> dict[str, Any]:
    return {"user": {"msisdn": msisdn}, "type": "template",
            "content": {"template": {"name": name, "language": "en"}}}  # fmt: skip


def n(i: int) -> str:
    return f"+6590{i:06d}"


async def send(client: Client, body: Any, path: str = SEND) -> tuple[int, Any, Any]:
    async with client.post(path, json=body, headers=AUTH) as resp:
        return resp.status, await resp.json(), resp.headers


async def hook(client: Client, path: str, body: Any) -> str:
    async with client.post(path, json=body, headers=HOOK) as resp:
        assert resp.status == 200, await resp.text()
        effect: str = (await resp.json())["effect"]
        return effect


def receipt(msisdn: str, meta: str | None, code: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"state": "undelivered", "timestamp": "2026-01-01T00:00:00Z"}
    if code is not None:
        status["errorCode"] = code
    return {"namespace": "ChatApps", "eventType": "outbound_message_status_changed",
            "payload": {"umid": "u1", "subAccountId": "acme_main", "channel": "whatsapp",
                        "user": {"msisdn": msisdn}, "status": status,
                        "whatsapp": {"providerErrorCode": meta} if meta else {}}}  # fmt: skip


def inbound(msisdn: str) -> dict[str, Any]:
    return {"namespace": "ChatApps", "eventType": "inbound_message_received",
            "payload": {"umid": "i1", "subAccountId": "acme_main", "channel": "whatsapp",
                        "user": {"msisdn": msisdn}, "type": "Text",
                        "content": {"text": "hello"}}}  # fmt: skip


def quality(tier: str, number: str = SENDER.lstrip("+")) -> dict[str, Any]:
    return {"eventId": "e1", "provider": "WhatsApp", "accountId": "acme",
            "eventType": "phone_number_quality_update",
            "eventDetails": {"displayPhoneNumber": number, "meta": {"event": "DOWNGRADE"},
                             "maxDailyConversationsPerBusiness": tier}}  # fmt: skip


async def test_new_recipient_over_the_tier_is_refused_until_the_oldest_leaves(make: Any):
    client = await make()
    for i in range(3):
        assert (await send(client, text(n(i))))[0] == 200
    status, body, headers = await send(client, text(n(3)))
    assert (status, body["gatewayCode"]) == (429, "rate_limited.messaging_tier")
    assert 86_399 <= int(headers["Retry-After"]) <= 86_400


async def test_recipient_who_wrote_in_is_not_counted(make: Any):
    client = await make()
    assert await hook(client, "/webhooks/inbound", inbound(n(9))) == "no_keyword"
    for i in (9, 0, 1, 2):
        assert (await send(client, text(n(i))))[0] == 200


async def test_batch_drops_recipients_over_the_tier(make: Any):
    client = await make()
    status, body, _ = await send(client, {"messages": [text(n(i)) for i in range(5)]}, BATCH)
    assert status == 200
    assert [r["code"] for r in body["gatewayRejected"]] == ["rate_limited.messaging_tier"] * 2


async def test_tier_webhook_downgrade_applies_at_once(make: Any):
    client = await make(**wa_sections(tier=2000))
    assert await hook(client, "/webhooks/account", quality("TIER_250")) == "tier_set"
    status, body, _ = await send(client, {"messages": [text(n(i)) for i in range(300)]}, BATCH)
    assert status == 200 and len(body["gatewayRejected"]) == 50


async def test_sms_and_subaccounts_without_sender_cost_nothing_extra(make: Any):
    client = await make()
    store = client.app[STATE].store
    for i in range(5):
        body = {"destination": n(i), "text": "x"}
        async with client.post("/sms/api/v1/subaccounts/acme_main/messages", json=body,
                               headers=AUTH) as resp:  # fmt: skip
            assert resp.status == 200
    assert isinstance(store, MemoryStore) and not vars(store).get("_wa_state")


async def test_marketing_rules(make: Any):
    client = await make()
    status, body, _ = await send(client, template("+12025550100"))
    assert (status, body["gatewayCode"]) == (403, "recipient.marketing_region")
    status, body, _ = await send(client, template(n(1), "bad"))
    assert (status, body["gatewayCode"]) == (409, "template.quality")
    client2 = await make(**wa_sections(us_marketing="allow", quality_red="off"))
    assert (await send(client2, template("+12025550100")))[0] == 200
    assert (await send(client2, template(n(1), "bad")))[0] == 200


async def test_receipt_131049_holds_marketing_to_that_user(make: Any):
    client = await make()
    assert await hook(client, "/webhooks/receipts", receipt(n(1), "131049")) == "marketing_held"
    status, body, headers = await send(client, template(n(1)))
    assert (status, body["gatewayCode"]) == (403, "recipient.suppressed")
    assert 86_399 <= int(headers["Retry-After"]) <= 86_400
    assert (await send(client, text(n(1))))[0] == 200  # not marketing


async def test_receipt_1018_suppresses_and_frees_the_tier(make: Any):
    client = await make()
    for i in range(3):
        assert (await send(client, text(n(i))))[0] == 200
    assert await hook(client, "/webhooks/receipts", receipt(n(1), None, 1018)) == "suppressed"
    status, body, _ = await send(client, text(n(1)))
    assert (status, body["gatewayCode"]) == (403, "recipient.suppressed")
    assert (await send(client, text(n(5))))[0] == 200  # n(1)'s place is free


async def test_receipt_131050_opts_the_user_out(make: Any):
    client = await make()
    assert await hook(client, "/webhooks/receipts", receipt(n(1), "131050")) == "opted_out"
    status, body, _ = await send(client, text(n(1)))
    assert (status, body["gatewayCode"]) == (403, "recipient.opted_out")


async def test_receipt_131056_cools_the_pair(make: Any):
    client = await make()
    assert (await send(client, text(n(1))))[0] == 200
    assert await hook(client, "/webhooks/receipts", receipt(n(1), "131056")) == "pair_cooled"
    status, body, headers = await send(client, text(n(1)))
    assert (status, body["gatewayCode"]) == (429, "rate_limited.pair")
    assert int(headers["Retry-After"]) >= 4 * 6
    assert (await send(client, text(n(2))))[0] == 200  # another pair


async def test_receipt_130429_cools_the_sender(make: Any):
    client = await make()
    assert await hook(client, "/webhooks/receipts", receipt(n(1), None, 1009)) == "sender_cooled"
    status, body, headers = await send(client, text(n(2)))
    assert (status, body["gatewayCode"]) == (429, "rate_limited.sender")
    assert headers["Retry-After"] == "1"


async def test_pair_rate_refuses_after_the_burst(make: Any):
    client = await make()
    assert [(await send(client, text(n(1))))[0] for _ in range(2)] == [200, 200]
    status, body, headers = await send(client, text(n(1)))
    assert (status, body["gatewayCode"]) == (429, "rate_limited.pair")
    assert headers["Retry-After"] == "6"


async def test_account_webhook_for_an_unknown_number_changes_nothing(make: Any):
    client = await make()
    assert await hook(client, "/webhooks/account", quality("TIER_250", "4599999999")) == (
        "unknown_sender"
    )
    assert keys.wa_tier("acme", "retail")  # the key layout the docs describe


async def test_template_rated_red_by_webhook_holds_its_marketing_sends(make: Any):
    client = await make()
    assert (await send(client, template(n(1))))[0] == 200
    event = {"eventId": "q1", "timestamp": "2026-06-01T00:00:00Z", "provider": "WhatsApp",
             "accountId": "acme", "eventType": "template_quality_update",
             "eventDetails": {"templateName": "promo", "templateLanguage": "en",
                              "meta": {"newQualityScore": "RED"}}}  # fmt: skip
    assert await hook(client, "/webhooks/templates", event) == "stored"
    status, body, _ = await send(client, template(n(2)))
    assert (status, body["gatewayCode"]) == (409, "template.quality")


@pytest.mark.parametrize("path", ["/webhooks/receipts", "/webhooks/account"])
async def test_webhooks_need_the_secret(make: Any, path: str):
    client = await make()
    async with client.post(path, json=receipt(n(1), "131049")) as resp:
        assert resp.status == 401
    async with client.post(f"{path}?token={WEBHOOK_SECRET}", json=quality("TIER_2K")) as resp:
        assert resp.status == 200


async def test_receipt_of_another_channel_or_without_a_code_changes_nothing(make: Any):
    client = await make()
    other = receipt(n(1), "131049")
    other["payload"]["channel"] = "viber"
    assert await hook(client, "/webhooks/receipts", other) == "ignored"
    assert await hook(client, "/webhooks/receipts", receipt(n(1), None)) == "no_action"
    assert (await send(client, template(n(1))))[0] == 200


async def test_quality_red_warn_forwards_and_logs(make: Any, capsys: pytest.CaptureFixture[str]):
    client = await make(**wa_sections(quality_red="warn"))
    assert (await send(client, template(n(1), "bad")))[0] == 200
    assert "whatsapp.quality_red" in capsys.readouterr().out
