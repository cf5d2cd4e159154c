"""Reading bodies as 8x8 does, end to end: a real gateway process in front of the
simulator (and a real redis-server where the store matters). What reaches the simulator,
and the answer's status and codes, are what each test asserts."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.conftest import GatewayFactory
from tests.support.gatewayproc import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    WEBHOOK_SECRET,
    GatewayProcess,
    sha,
)
from tests.support.simproc import SimProcess

NUMBER = "+6591234567"
CHAT = "/chatapps/api/v1/subaccounts/acme_main/messages"
CHAT_BATCH = CHAT + "/batch"
SMS = "/sms/api/v1/subaccounts/acme_main/messages"
SMS_BATCH = SMS + "/batch"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
ADMIN = "/admin/v1/accounts/acme"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DIRECT = {"whatsApp": {"directSend": {"category": "utility"}}}


async def post(
    gw: GatewayProcess,
    path: str,
    body: Any,
    headers: Any = None,
    auth: dict[str, str] = CLIENT,
    method: str = "POST",
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = CIMultiDict(auth)
    hdrs["Content-Type"] = "application/json"
    hdrs.extend(headers or {})
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gw.url + path, data=data, headers=hdrs) as r,
    ):
        raw = await r.read()
        return r.status, dict(r.headers), json.loads(raw) if raw else None


async def admin(gw: GatewayProcess, method: str, path: str, body: Any = None) -> int:
    return (await post(gw, ADMIN + path, body or {}, auth=ADMIN_AUTH, method=method))[0]


def text(msisdn: Any = NUMBER, **content: Any) -> dict[str, Any]:
    return {"user": {"msisdn": msisdn}, "type": "text", "content": {"text": "hi", **content}}


def templated(name: str, language: str = "en", **user: Any) -> dict[str, Any]:
    return {
        "user": user or {"msisdn": NUMBER},
        "type": "template",
        "content": {"template": {"name": name, "language": language, "components": []}},
    }


# --- one strict reader ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "code"),
    [
        (b'{"user": {"msisdn": "+6591234567", "msisdn": "+6598765432"}, "type": "text",'
         b' "content": {"text": "hi"}}', "msisdn", 1000),
        (json.dumps(text(6591234567)).encode(), "user.msisdn", 1002),
        (json.dumps({**templated("promo"), "type": " template"}).encode(), "type", 1000),
        (json.dumps({"user": {"msisdn": NUMBER}, "content": {"text": "hi"}}).encode(), "type", 1000),
    ],
)  # fmt: skip
async def test_bodies_8x8_could_read_another_way_are_refused_and_never_forwarded(
    start_gateway: GatewayFactory, sim: SimProcess, raw: bytes, field: str, code: int
) -> None:
    gw = start_gateway()
    status, _, body = await post(gw, CHAT, raw)
    assert (status, body["code"], body["gatewayCode"]) == (400, code, "request.invalid")
    assert body["field"] == field
    assert sim.requests() == []


@pytest.mark.parametrize(
    "number", ["+65 9123 4567 ext 2", "+6591234567/x2", "1-800-FLOWERS", "091234567"]
)
async def test_numbers_with_letters_extensions_or_a_bare_leading_0_are_1002(
    start_gateway: GatewayFactory, sim: SimProcess, number: str
) -> None:
    gw = start_gateway()
    status, _, body = await post(gw, SMS, {"destination": number, "text": "hi"})
    assert (status, body["code"], body["field"]) == (400, 1002, "destination")
    assert sim.requests() == []


@pytest.mark.parametrize("number", ["1000000", "+1000000", "999999999999999"])
async def test_every_number_8x8s_pattern_accepts_is_forwarded(
    start_gateway: GatewayFactory, sim: SimProcess, number: str
) -> None:
    gw = start_gateway()
    _, headers, _ = await post(gw, SMS, {"destination": number, "text": "hi"})
    assert "X-Gateway-Reject" not in headers
    assert sim.requests()[-1]["body"]["destination"] == number


async def test_a_client_ip_that_is_no_address_is_forwarded_as_8x8_takes_it(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    body = {"destination": NUMBER, "text": "hi", "clientIp": "web-form-7"}
    _, headers, _ = await post(gw, SMS, body)
    assert "X-Gateway-Reject" not in headers
    assert sim.requests()[-1]["body"] == body


# --- recipients, templates and Direct Send -------------------------------------------------


async def test_a_recipient_by_channel_user_id_is_forwarded_and_needs_consent_for_templates(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(policy={"opt_in": "enforce", "unknown_template": "allow"}, **backend)
    user = {"channelUserId": "US.13491208655302741918"}
    plain = {"user": user, "type": "text", "content": {"text": "hi"}}
    _, headers, _ = await post(gw, CHAT, plain)
    assert "X-Gateway-Reject" not in headers
    assert sim.requests()[-1]["body"] == plain
    status, _, body = await post(gw, CHAT, templated("promo", **user))
    assert (status, body["gatewayCode"]) == (403, "recipient.no_consent")
    assert len(sim.requests()) == 1


async def test_a_stop_from_a_channel_user_blocks_sends_addressed_by_that_channel_user_id(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(**backend)
    user = {"channelUserId": "US.13491208655302741918"}
    stop = {"namespace": "ChatApps", "eventType": "inbound_message_received",
            "payload": {"subAccountId": "acme_main", "channel": "WhatsApp",
                        "user": {"msisdn": NUMBER.lstrip("+"), **user},
                        "type": "Text", "content": {"text": "STOP"}}}  # fmt: skip
    hook = {"Authorization": f"Bearer {WEBHOOK_SECRET}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s, s.post(
        gw.url + "/webhooks/inbound", data=json.dumps(stop), headers=hook
    ) as r:  # fmt: skip
        assert r.status == 200
    status, _, body = await post(gw, CHAT, {"user": user, "type": "text", "content": {"text": "x"}})
    assert (status, body["gatewayCode"]) == (403, "recipient.opted_out")
    assert sim.requests() == []


async def test_whatsapp_direct_send_is_a_template_send_of_its_category(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(policy={"opt_in": "enforce"}, **backend)
    status, _, body = await post(gw, CHAT, text(**DIRECT))
    assert (status, body.get("gatewayCode")) == (403, "recipient.no_consent"), body
    consent = {"source": "signup form", "timestamp": "2026-01-01T00:00:00Z"}
    assert (
        await admin(gw, "PUT", f"/consents/{NUMBER}", {**consent, "categories": ["MARKETING"]})
        == 204
    )
    assert (await post(gw, CHAT, text(**DIRECT)))[0] == 403
    assert sim.requests() == []
    assert (
        await admin(gw, "PUT", f"/consents/{NUMBER}", {**consent, "categories": ["UTILITY"]}) == 204
    )
    _, headers, _ = await post(gw, CHAT, text(**DIRECT))
    assert "X-Gateway-Reject" not in headers
    assert len(sim.requests()) == 1


async def test_template_names_match_the_registry_whatever_their_case(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(policy={"unknown_template": "allow"}, **backend)
    assert (
        await admin(gw, "PUT", "/templates/promo/en", {"status": "PAUSED", "category": "MARKETING"})
        == 204
    )
    for name, language in (("promo", "en"), ("Promo", "EN"), ("PROMO", "en")):
        status, _, body = await post(gw, CHAT, templated(name, language))
        assert (status, body["gatewayCode"], body["status"]) == (
            409,
            "template.not_active",
            "PAUSED",
        )
    assert sim.requests() == []


# --- batches -------------------------------------------------------------------------------


async def test_invalid_batch_entries_are_dropped_and_counted_like_8x8s_own_rejections(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    batch = {
        "messages": [
            {"destination": NUMBER, "text": "a"},
            {"destination": "12", "text": "b"},
            {"destination": 6598765432, "text": "c"},
            {"destination": "+6598765432", "text": "d"},
        ],
        "destinations": ["", "+6590000001"],
        "template": {"text": "t"},
    }
    status, headers, body = await post(gw, SMS_BATCH, batch)
    assert status == 200 and "X-Gateway-Reject" not in headers
    assert [(r["index"], r["code"]) for r in body["gatewayRejected"]] == [
        (1, "request.invalid"), (2, "request.invalid"), (4, "request.invalid")
    ]  # fmt: skip
    assert body["gatewayRejected"][0]["field"] == "messages[1].destination"
    assert (body["acceptedCount"], body["rejectedCount"]) == (3, 3)
    assert isinstance(body["batchId"], str)
    seen = sim.requests()[-1]["body"]
    assert [m["destination"] for m in seen["messages"]] == [NUMBER, "+6598765432"]
    assert seen["destinations"] == ["+6590000001"]


async def test_a_batch_whose_every_entry_is_invalid_is_400_and_nothing_is_forwarded(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    batch = {"messages": [text("12"), {**text(), "type": " text"}]}
    status, _, body = await post(gw, CHAT_BATCH, batch)
    assert (status, body["code"], body["gatewayCode"]) == (400, 1002, "request.invalid")
    assert body["field"] == "messages[0].user.msisdn"
    assert [r["index"] for r in body["gatewayRejected"]] == [0, 1]
    assert sim.requests() == []


async def test_sms_batch_template_country_is_not_read_as_8x8_does_not(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    # 8x8 reads "87654321" as +87654321 (its batch template has no country): that number's
    # opt-out applies, not +6587654321's
    assert await admin(gw, "PUT", "/optouts/87654321") == 204
    batch = {
        "messages": [{"destination": "87654321"}, {"destination": NUMBER}],
        "template": {"text": "hi", "country": "SG"},
    }
    status, _, body = await post(gw, SMS_BATCH, batch)
    assert status == 200
    assert [(r["index"], r["code"]) for r in body["gatewayRejected"]] == [
        (0, "recipient.opted_out")
    ]
    assert [m["destination"] for m in sim.requests()[-1]["body"]["messages"]] == [NUMBER]


# --- end-user IPs --------------------------------------------------------------------------


async def test_one_person_is_one_end_user_bucket_whatever_the_spelling(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(limits={"end_user_ip_per_minute": 3}, **backend)
    sms = {"destination": NUMBER, "text": "hi"}
    for spelling in ("::ffff:192.0.2.7", "192.0.2.7:5678", "[::ffff:192.0.2.7]:443"):
        assert (await post(gw, SMS, sms, {"X-End-User-IP": spelling}))[0] == 200
    status, _, body = await post(gw, SMS, {**sms, "clientIp": "192.0.2.7"})
    assert (status, body["gatewayCode"]) == (429, "rate_limited.end_user_ip")
    for v6 in ("2001:db8::1", "2001:db8::2", "fe80::1%0"):
        await post(gw, SMS, {**sms, "clientIp": v6.replace("fe80::1", "2001:db8::3")})
    status, _, body = await post(gw, SMS, sms, {"X-End-User-IP": "[2001:db8::ffff]:80"})
    assert (status, body["gatewayCode"]) == (429, "rate_limited.end_user_ip")
    assert len(sim.requests()) == 6


async def test_each_message_client_ip_of_an_sms_batch_counts(
    start_gateway: GatewayFactory, sim: SimProcess, backend: dict[str, Any]
) -> None:
    gw = start_gateway(limits={"end_user_ip_per_minute": 1}, **backend)
    assert (await post(gw, SMS, {"destination": NUMBER, "text": "hi", "clientIp": "192.0.2.9"}))[
        0
    ] == 200
    batch = {
        "messages": [
            {"destination": NUMBER, "text": "a", "clientIp": "198.51.100.1"},
            {"destination": "+6598765432", "text": "b", "clientIp": "192.0.2.9"},
        ]
    }
    status, _, body = await post(gw, SMS_BATCH, batch)
    assert (status, body["gatewayCode"]) == (429, "rate_limited.end_user_ip")
    assert len(sim.requests()) == 1
    # the refused batch booked nothing: 198.51.100.1 still has its one send
    assert (await post(gw, SMS, {"destination": NUMBER, "text": "c", "clientIp": "198.51.100.1"}))[
        0
    ] == 200


async def test_every_x_forwarded_for_line_is_read_from_a_trusted_proxy(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    xff_client = {"name": "web", "token_sha256": sha(CLIENT_TOKEN), "subaccounts": ["acme_main"],
                  "end_user_ip_from_xff": True}  # fmt: skip
    gw = start_gateway(
        server={"trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"]},
        clients=[xff_client],
        limits={"end_user_ip_per_minute": 1},
    )
    sms = {"destination": NUMBER, "text": "hi"}
    assert (await post(gw, SMS, sms, {"X-End-User-IP": "203.0.113.5"}))[0] == 200
    # the second line holds the right-most untrusted hop: the person already counted
    lines = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.5, 10.0.0.7")]
    status, _, body = await post(gw, SMS, sms, lines)
    assert (status, body["gatewayCode"]) == (429, "rate_limited.end_user_ip")
    status, _, body = await post(gw, SMS, sms, [("X-Forwarded-For", "203.0.113.5, unknown")])
    assert (status, body["gatewayCode"], body["field"]) == (
        400,
        "request.invalid",
        "X-Forwarded-For",
    )
    assert len(sim.requests()) == 1


# --- compressed bodies ---------------------------------------------------------------------


async def test_a_gzip_bomb_is_refused_413_and_a_gzip_send_is_forwarded_decoded(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(server={"max_body_bytes": 1 << 20})
    enc = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    data = b"".join([*(enc.compress(zeros) for _ in range(200)), enc.flush()])  # 200 MB
    status, _, body = await post(gw, SMS, data, {"Content-Encoding": "gzip"})
    assert (status, body["gatewayCode"]) == (413, "request.too_large")
    send = {"destination": NUMBER, "text": "hi"}
    raw = gzip.compress(json.dumps(send).encode())
    _, headers, _ = await post(gw, SMS, raw, {"Content-Encoding": "gzip"})
    assert "X-Gateway-Reject" not in headers
    assert sim.requests()[-1]["body"] == send


async def test_a_send_without_a_body_is_400_not_415(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    async with aiohttp.ClientSession() as s, s.post(gw.url + SMS, headers=CLIENT) as r:
        body = await r.json()
    assert (r.status, body["gatewayCode"], body["field"]) == (400, "request.invalid", "body")
    assert sim.requests() == []
