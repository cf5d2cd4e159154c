"""The webhooks in process: auth, STOP/START keywords, template events, the opt-out push
and the template sync (8x8 calls go to the real simulator)."""

from __future__ import annotations

import asyncio
import base64
import copy
import inspect
import io
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import config, logs, optoutpush, templatesync
from gateway.app import build_app
from gateway.config import Config
from gateway.policy.guard import FailureCounter
from gateway.state import STATE
from gateway.store import keys
from gateway.store.base import Store, TemplateRecord
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.gatewayproc import ADMIN_TOKEN, API_KEY, WEBHOOK_SECRET, base_config, to_toml
from tests.support.simproc import SimProcess

ENV = {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET}
INBOUND = "/webhooks/inbound"
TEMPLATES = "/webhooks/templates"
BEARER = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
NUMBER = "+6591234567"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


def make_config(sim_url: str, tmp_path: Path, **sections: Any) -> Config:
    """A validated config whose upstream URLs all point at the simulator."""
    path = tmp_path / "gw.toml"
    path.write_text(to_toml(base_config(sim_url, **sections)))
    return config.load(path, environ={})


@pytest.fixture
def make_client(aiohttp_client: Any, sim: SimProcess, tmp_path: Path) -> MakeClient:
    async def make(
        store: Store | None = None, env: dict[str, str] | None = None, **sections: Any
    ) -> Client:
        cfg = make_config(sim.url, tmp_path, **sections)
        app = build_app(cfg, API_KEY, ENV if env is None else env, store=store or MemoryStore())
        client: Client = await aiohttp_client(app)
        return client

    return make


def store_of(client: Client) -> Store:
    return client.app[STATE].store


async def post(
    client: Client, path: str, body: Any, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any]:
    hdrs = BEARER if headers is None else headers
    kwargs = {"data": body} if isinstance(body, str | bytes) else {"json": body}
    async with client.post(path, headers=hdrs, **kwargs, **kw) as resp:
        return resp.status, await resp.json()


def chat(text: Any, msisdn: Any = NUMBER, sub: str = "acme_main", **extra: Any) -> dict[str, Any]:
    return {
        "namespace": "ChatApps",
        "eventType": "inbound_message_received",
        "description": "ChatApps inbound message",
        "payload": {
            "umid": "6f0c4d1e-0000-0000-0000-000000000001",
            "subAccountId": sub,
            "channel": "whatsapp",
            "user": {"msisdn": msisdn, "channelUserId": "6591234567", "name": "Ann"},
            "recipient": {"channel": "whatsapp", "channelId": "ch1"},
            "type": "Text",
            "content": {"text": text},
            "timestamp": "2025-01-01T00:00:00.000Z",
            **extra,
        },
    }


def no_channel_user(event: dict[str, Any]) -> dict[str, Any]:
    del event["payload"]["user"]["channelUserId"]
    return event


def sms(text: str, source: str = "6591234567", sub: str = "acme_main") -> dict[str, Any]:
    return {
        "namespace": "SMS",
        "eventType": "inbound_message_received",
        "description": "SMS inbound message",
        "payload": {"umid": "x", "subAccountId": sub, "timestamp": "2025-01-01T00:00:00Z",
                    "source": source, "destination": "+4534735477", "body": text,
                    "encoding": "GSM7"},
    }  # fmt: skip


def tpl_event(
    event_type: str, meta: dict[str, Any], timestamp: Any, name: str = "promo",
    language: str = "en", account: Any = "acme",
) -> dict[str, Any]:  # fmt: skip
    return {
        "eventId": "0f88f5c4-fae7-4dcf-8ff2-b2990133edea",
        "timestamp": timestamp,
        "provider": "WhatsApp",
        "businessAccountId": "waba-1",
        "accountId": account,
        "eventType": event_type,
        "eventDetails": {"templateId": 123, "templateName": name,
                         "templateLanguage": language, "meta": meta},
    }  # fmt: skip


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check` (a function, or one returning an awaitable) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        (BEARER, ""),
        ({"Authorization": "Basic " + base64.b64encode(f"8x8:{WEBHOOK_SECRET}".encode()).decode()}, ""),
        ({}, f"?token={WEBHOOK_SECRET}"),
    ],
    ids=["bearer", "basic", "query"],
)  # fmt: skip
async def test_secret_is_accepted_three_ways(
    make_client: MakeClient, headers: dict[str, str], query: str
) -> None:
    client = await make_client()
    status, body = await post(client, INBOUND + query, chat("STOP"), headers)
    assert (status, body) == (200, {"status": "ok", "effect": "opted_out"})
    assert await store_of(client).optout_contains("acme", NUMBER)


@pytest.mark.parametrize(
    ("headers", "query", "code"),
    [
        ({}, "", "auth.missing"),
        ({"Authorization": "Bearer wrong"}, "", "auth.invalid"),
        ({"Authorization": "Basic " + base64.b64encode(b"8x8:wrong").decode()}, "", "auth.invalid"),
        ({}, "?token=wrong", "auth.invalid"),
    ],
)  # fmt: skip
async def test_forged_events_are_refused_and_change_nothing(
    make_client: MakeClient, headers: dict[str, str], query: str, code: str
) -> None:
    client = await make_client()
    for path, event in ((INBOUND, chat("STOP")), (TEMPLATES, tpl_event(
            "template_status_update", {"status": "APPROVED"}, "2025-01-01T00:00:00Z"))):  # fmt: skip
        status, body = await post(client, path + query, event, headers)
        assert (status, body["gatewayCode"]) == (401, code)
    assert not await store_of(client).optout_contains("acme", NUMBER)
    assert await store_of(client).template_get("acme", "promo", "en") is None


async def test_no_secret_configured_refuses_everything(make_client: MakeClient) -> None:
    client = await make_client(env={"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN})
    for headers in ({}, BEARER, {"Authorization": "Bearer "}):
        status, body = await post(client, INBOUND, chat("STOP"), headers)
        assert (status, body["gatewayCode"]) == (401, "auth.invalid")
    assert not await store_of(client).optout_contains("acme", NUMBER)


async def test_wrong_secrets_get_429_but_the_right_one_always_passes(
    make_client: MakeClient,
) -> None:
    client = await make_client(admin={"auth_failures_per_minute": 3})
    guess = {"Authorization": "Bearer guess"}
    for _ in range(3):
        assert (await post(client, INBOUND, chat("STOP"), guess))[0] == 401
    async with client.post(INBOUND, headers=guess, json=chat("STOP")) as resp:
        body = await resp.json()
        assert (resp.status, body["gatewayCode"]) == (429, "rate_limited.auth")
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert (await post(client, INBOUND, chat("STOP"), {}))[1]["gatewayCode"] == "rate_limited.auth"
    # 8x8's STOP from the same address (one load balancer) still takes effect
    assert await post(client, INBOUND, chat("STOP")) == (
        200,
        {"status": "ok", "effect": "opted_out"},
    )
    assert await store_of(client).optout_contains("acme", NUMBER)
    assert (await post(client, INBOUND + "?token=" + WEBHOOK_SECRET, chat("START"), {}))[0] == 200
    assert (await post(client, INBOUND, chat("STOP"), guess))[0] == 429  # still locked out


async def test_admin_and_webhook_failures_are_counted_apart(make_client: MakeClient) -> None:
    client = await make_client(admin={"auth_failures_per_minute": 2})
    wrong = {"Authorization": "Bearer guess"}
    for expected in (401, 401, 429):
        async with client.get("/admin/v1/accounts/acme/optouts", headers=wrong) as resp:
            assert resp.status == expected
    # the admin guesses used up nothing of the webhooks' budget
    assert (await post(client, INBOUND, chat("STOP"), wrong))[0] == 401
    assert (await post(client, INBOUND, chat("STOP"), wrong))[0] == 401
    assert (await post(client, INBOUND, chat("STOP"), wrong))[0] == 429
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with client.get(f"/admin/v1/accounts/acme/optouts/{NUMBER}", headers=admin) as resp:
        assert resp.status == 404  # the right token passes while its address is locked out


def test_failures_leave_the_window_after_a_minute() -> None:
    now = [1000.0]
    counter = FailureCounter(2, clock=lambda: now[0])
    counter.fail("a")
    now[0] += 30
    counter.fail("a")
    assert counter.over("a") and not counter.over("b")
    assert counter.retry_after_s("a") == 30
    now[0] += 30.5
    assert not counter.over("a")  # the first failure left the window
    now[0] += 60
    assert not counter.over("a")


# --- inbound keywords ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["STOP", "  stop ", "Stop\n", "\tsToP", "unsubscribe", "UnSubscribe"]
)
async def test_stop_keywords_match_trimmed_and_case_insensitively(
    make_client: MakeClient, text: str
) -> None:
    client = await make_client()
    assert await post(client, INBOUND, chat(text)) == (200, {"status": "ok", "effect": "opted_out"})
    assert await store_of(client).optout_contains("acme", NUMBER)


@pytest.mark.parametrize("text", ["Un  Subscribe", " un\tsubscribe ", "UN SUBSCRIBE"])
async def test_inner_whitespace_collapses_to_one_space(make_client: MakeClient, text: str) -> None:
    client = await make_client(policy={"opt_in": "off", "stop_keywords": ["STOP", "un  subscribe"]})
    assert (await post(client, INBOUND, chat(text)))[1]["effect"] == "opted_out"


@pytest.mark.parametrize("text", ["stop please", "STOP.", "S T O P", "Un  Subscribe", "", "hi"])
async def test_other_texts_change_nothing(make_client: MakeClient, text: str) -> None:
    client = await make_client()  # default keywords: "UN SUBSCRIBE" is not "UNSUBSCRIBE"
    assert await post(client, INBOUND, chat(text)) == (
        200,
        {"status": "ok", "effect": "no_keyword"},
    )
    assert not await store_of(client).optout_contains("acme", NUMBER)


async def test_start_removes_the_opt_out(make_client: MakeClient) -> None:
    client = await make_client()
    await post(client, INBOUND, chat("STOP"))
    assert await post(client, INBOUND, sms(" start ")) == (
        200,
        {"status": "ok", "effect": "opted_in"},
    )
    assert not await store_of(client).optout_contains("acme", NUMBER)
    # START for someone who never opted out is harmless
    assert (await post(client, INBOUND, chat("START", "+6598765432")))[1]["effect"] == "opted_in"


async def test_sms_spellings_and_text_fields(make_client: MakeClient) -> None:
    client = await make_client()
    await post(client, INBOUND, sms("STOP", source="6591234567"))
    other = sms("", source="+44 7700 900123")
    del other["payload"]["body"]
    other["payload"]["text"] = "Stop"
    assert (await post(client, INBOUND, other))[1]["effect"] == "opted_out"
    items, _ = await store_of(client).optout_list("acme", None, 10)
    assert sorted(items) == ["+447700900123", NUMBER]


async def test_whatsapp_reply_button_titled_stop_counts(make_client: MakeClient) -> None:
    client = await make_client()
    event = chat(None)
    event["payload"]["type"] = "Interactive"
    event["payload"]["content"] = {"interactive": {"type": "button_reply",
                                                   "button_reply": {"id": "b1", "title": "STOP"}}}  # fmt: skip
    assert (await post(client, INBOUND, event))[1]["effect"] == "opted_out"


async def test_the_subaccount_names_the_account(make_client: MakeClient) -> None:
    client = await make_client(subaccounts={"beta_main": {"account": "beta"}})
    await post(client, INBOUND, chat("STOP", sub="beta_main"))
    await post(client, INBOUND, chat("STOP", msisdn="+6590000001", sub="unmapped_sub"))
    event = chat("STOP", msisdn="+6590000002")
    del event["payload"]["subAccountId"]
    await post(client, INBOUND, event)
    store = store_of(client)
    assert await store.optout_contains("beta", NUMBER)
    assert not await store.optout_contains("acme", NUMBER)
    assert await store.optout_contains("acme", "+6590000001")
    assert await store.optout_contains("acme", "+6590000002")


# --- ordering and identities ---------------------------------------------------------------


def at(event: dict[str, Any], timestamp: Any) -> dict[str, Any]:
    event["payload"]["timestamp"] = timestamp
    return event


async def test_an_older_start_does_not_undo_a_stop(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await post(client, INBOUND, at(chat("STOP"), "2025-01-01T00:00:10Z")))[0] == 200
    late = at(sms("START"), "2025-01-01T00:00:05Z")  # 8x8 retried it after the STOP
    assert await post(client, INBOUND, late) == (200, {"status": "ok", "effect": "stale"})
    assert await store_of(client).optout_contains("acme", NUMBER)
    newer = at(sms("START"), 1735689611000)  # epoch ms: 2025-01-01T00:00:11Z
    assert (await post(client, INBOUND, newer))[1]["effect"] == "opted_in"
    assert not await store_of(client).optout_contains("acme", NUMBER)
    older = at(sms("STOP"), "1735689610")  # epoch seconds, as text: the first STOP again
    assert (await post(client, INBOUND, older))[1]["effect"] == "stale"
    assert not await store_of(client).optout_contains("acme", NUMBER)


async def test_events_without_a_readable_time_count_as_now(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await post(client, INBOUND, at(chat("STOP"), "2999-01-01T00:00:00Z")))[0] == 200
    for stamp in (None, "yesterday", [1], {"t": 1}, True):  # now: later than the clamped STOP?
        event = at(sms("START"), stamp)
        assert (await post(client, INBOUND, event))[0] == 200
    assert await store_of(client).optout_contains("acme", NUMBER)  # the STOP is 5 min ahead
    plain = sms("STOP", source="6590000001")
    del plain["payload"]["timestamp"]
    assert (await post(client, INBOUND, plain))[1]["effect"] == "opted_out"
    assert (await post(client, INBOUND, at(sms("START", "6590000001"), "2025-01-01T00:00:00Z")))[1][
        "effect"
    ] == "stale"


async def test_stop_records_the_number_and_the_channel_user(make_client: MakeClient) -> None:
    client = await make_client()
    event = chat("STOP", channel="WhatsApp")
    assert (await post(client, INBOUND, event))[1]["effect"] == "opted_out"
    store = store_of(client)
    assert await store.optout_contains("acme", NUMBER)
    assert await store.optout_contains("acme", "cu:whatsapp:6591234567")
    assert keys.channel_user_id("WhatsApp", "US.1349") == "cu:whatsapp:US.1349"
    viber = chat("STOP", msisdn=None, channel=None)
    viber["payload"]["recipient"]["channel"] = "Viber"
    assert (await post(client, INBOUND, viber))[1]["effect"] == "opted_out"
    assert await store.optout_contains("acme", "cu:viber:6591234567")
    only_user = no_channel_user(chat("START", msisdn=None))
    only_user["payload"]["user"]["channelUserId"] = "6591234567"
    assert (await post(client, INBOUND, only_user))[1]["effect"] == "opted_in"
    assert not await store.optout_contains("acme", "cu:whatsapp:6591234567")
    assert await store.optout_contains("acme", NUMBER)  # the number said nothing new


@pytest.mark.parametrize("kind", ["memory", "fakeredis"])
async def test_store_applies_each_identity_in_order(kind: str) -> None:
    store: Store = (
        MemoryStore()
        if kind == "memory"
        else RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    )
    a, b = NUMBER, "cu:whatsapp:x"
    assert await store.optout_event("acme", [a], True, 2_000) == [True]
    assert await store.optout_event("acme", [a, b], False, 1_000) == [False, True]
    assert await store.optout_contains("acme", a) and not await store.optout_contains("acme", b)
    assert await store.optout_event("acme", [a, b], True, 1_000) == [False, True]
    assert await store.optout_event("acme", [a], False, 2_000) == [True]  # same time: applies
    assert await store.optout_event("other", [a], True, 1) == [True]  # per account
    assert await store.optout_event("acme", [b], False, None) == [True]  # now: always
    assert not await store.optout_contains("acme", b)
    assert await store.optout_event("acme", [b], True, 10_000) == [False]  # now is later
    assert await store.optout_event("acme", [], True, None) == []


@pytest.mark.parametrize(
    "event",
    [
        {**chat("STOP"), "eventType": "outbound_message_status_changed"},
        {**chat("STOP"), "namespace": "Voice"},
        {**chat("STOP"), "namespace": 7},
        {**chat("STOP"), "payload": "STOP"},
        {"hello": "world"},
        no_channel_user(chat("STOP", msisdn="not-a-number")),
        no_channel_user(chat("STOP", msisdn=None)),
        no_channel_user(chat("STOP", msisdn=["+6591234567"])),
        chat({"text": "STOP"}),
        {**chat("x"), "payload": {**chat("x")["payload"], "content": "STOP", "user": "me"}},
    ],
    ids=["receipt", "namespace", "namespace-type", "payload-type", "no-envelope", "bad-number",
         "no-number", "number-type", "text-type", "content-type"],
)  # fmt: skip
async def test_odd_events_are_200_and_ignored(make_client: MakeClient, event: Any) -> None:
    client = await make_client()
    status, body = await post(client, INBOUND, event)
    assert (status, body["status"]) == (200, "ok")
    assert body["effect"] in ("ignored", "no_keyword")
    assert (await store_of(client).optout_list("acme", None, 10))[0] == []


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"STOP"', ""])
async def test_malformed_json_is_400(make_client: MakeClient, raw: str) -> None:
    client = await make_client()
    for path in (INBOUND, TEMPLATES):
        status, body = await post(client, path, raw)
        assert (status, body["gatewayCode"], body["field"]) == (400, "request.invalid", "body")


_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63 - 1, 1.5, -1e308, "", " ", "STOP", "+6591234567",
    "9999999999999999999999", "2025-01-01T00:00:00Z", "\u0000", "\U0001f600" * 3, "x" * 5000,
    [], [None], ["STOP"], {}, {"text": "STOP"}, {"msisdn": 6591234567},
]  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from _paths(inner, (*prefix, key))


def _mutated(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """`event` with a few fields replaced by values of other types, or removed."""
    event = copy.deepcopy(event)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(event)))
        holder = event
        for key in path[:-1]:
            holder = holder[key] if isinstance(holder, dict) else {}
        if isinstance(holder, dict) and path[-1] in holder:
            if rng.random() < 0.2:
                del holder[path[-1]]
            else:
                holder[path[-1]] = copy.deepcopy(rng.choice(_ODD_VALUES))
    return event


async def test_events_of_any_shape_are_answered_never_500(make_client: MakeClient) -> None:
    """Inbound: any JSON object is a well-formed event (200); template events: 200, or 400
    when they lack what they need. Never a 500, whatever the types."""
    client = await make_client()
    rng = random.Random(20261201)
    seeds = [chat("STOP"), sms("START"),
             tpl_event("template_status_update", {"status": "PAUSED"}, "2025-01-01T00:00:00Z"),
             tpl_event("template_quality_update", {"newQualityScore": "RED"}, 1)]  # fmt: skip
    for _ in range(300):
        event = _mutated(rng.choice(seeds), rng)
        for path, allowed in ((INBOUND, {200}), (TEMPLATES, {200, 400})):
            status, body = await post(client, path, event)
            assert status in allowed, (path, event, body)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{}", b'{"a": ' * 2000 + b"1" + b"}" * 2000, b'{"a": NaN}',
     b"{}" + b" " * 10 + b"{}"],
    ids=["not-utf8", "deep", "nan", "two-objects"],
)  # fmt: skip
async def test_unreadable_bodies_are_400(make_client: MakeClient, raw: bytes) -> None:
    client = await make_client()
    for path in (INBOUND, TEMPLATES):
        async with client.post(path, headers=BEARER, data=raw) as resp:
            assert resp.status == 400
            assert (await resp.json())["gatewayCode"] == "request.invalid"


async def test_a_failing_store_is_503_so_8x8_retries(make_client: MakeClient) -> None:
    class Down(MemoryStore):
        async def optout_event(
            self, account: str, identities: Sequence[str], opted_out: bool, at_us: int | None
        ) -> list[bool]:
            raise ConnectionError("redis is gone")

    client = await make_client(store=Down())
    status, body = await post(client, INBOUND, chat("STOP"))
    assert (status, body["gatewayCode"]) == (503, "store.unavailable")


@pytest.fixture
def log_lines() -> Iterator[io.BytesIO]:
    """The gateway's masking log pipeline (logs.scrub + JSON), writing into a buffer."""
    saved = structlog.get_config()
    out = io.BytesIO()
    structlog.configure(
        processors=[logs.scrub, structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        logger_factory=structlog.BytesLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    yield out
    structlog.configure(**saved)


async def test_effects_are_counted_and_logged_masked(
    make_client: MakeClient, log_lines: io.BytesIO
) -> None:
    client = await make_client()
    await post(client, INBOUND, chat(" StOp  "))
    await post(client, INBOUND, chat("my secret words"))
    async with client.get("/metrics") as resp:
        metrics = await resp.text()
    assert 'gateway_webhook_events_total{effect="opted_out",kind="inbound"} 1.0' in metrics
    assert 'gateway_webhook_events_total{effect="no_keyword",kind="inbound"} 1.0' in metrics
    out = log_lines.getvalue().decode()
    assert "+******4567" in out and "webhooks.inbound" in out
    for secret in ("91234567", "StOp", "secret words", WEBHOOK_SECRET):
        assert secret not in out


# --- template events -----------------------------------------------------------------------


async def template(client: Client, name: str = "promo", language: str = "en") -> TemplateRecord:
    found = await store_of(client).template_get("acme", name, language)
    assert found is not None
    return found


async def test_status_quality_and_category_updates_merge(make_client: MakeClient) -> None:
    client = await make_client()
    steps = [
        ("template_status_update", {"status": "APPROVED", "reason": "NONE"}, "2025-01-01T00:00:00Z"),
        ("template_category_update", {"previousCategory": "UTILITY", "newCategory": "MARKETING"},
         "2025-01-01T00:00:01.5+00:00"),
        ("template_quality_update", {"previousQualityScore": "UNKNOWN", "newQualityScore": "GREEN"},
         "2025-01-01T08:00:02+08:00"),
    ]  # fmt: skip
    for event_type, meta, ts in steps:
        assert await post(client, TEMPLATES, tpl_event(event_type, meta, ts)) == (
            200, {"status": "ok", "effect": "stored"},
        )  # fmt: skip
    assert await template(client) == TemplateRecord(
        "promo", "en", "APPROVED", "MARKETING", "GREEN", "2025-01-01T00:00:02.000Z"
    )


async def test_an_older_event_is_200_and_ignored(make_client: MakeClient) -> None:
    client = await make_client()
    paused = tpl_event("template_status_update", {"status": "PAUSED"}, "2025-01-01T00:00:10Z")
    approved = tpl_event("template_status_update", {"status": "APPROVED"}, "2025-01-01T00:00:05Z")
    assert (await post(client, TEMPLATES, paused))[1]["effect"] == "stored"
    assert await post(client, TEMPLATES, approved) == (200, {"status": "ok", "effect": "stale"})
    assert (await template(client)).status == "PAUSED"


@pytest.mark.parametrize(
    ("meta", "stored"),
    [
        ({"status": "PAUSED", "otherInfo": {"title": "DISABLED", "description": "x"}}, "DISABLED"),
        ({"status": "APPROVED", "otherInfo": {"title": "DISABLED"}}, "DISABLED"),
        ({"status": "PAUSED", "otherInfo": {"title": "FIRST_PAUSE"}}, "PAUSED"),
        ({"otherInfo": {"title": "second_pause"}}, "PAUSED"),
        ({"otherInfo": {"title": "RATE_LIMITING_PAUSE"}}, "PAUSED"),
        ({"status": "APPROVED", "otherInfo": {"title": "UNPAUSE"}}, "APPROVED"),
        ({"status": "FLAGGED", "disableInfo": {"disableDate": "DATE"}}, "FLAGGED"),
        ({"status": "rejected", "reason": "SCAM"}, "REJECTED"),
        ({"status": "PENDING_DELETION", "otherInfo": {"title": "SOMETHING_NEW"}}, "PENDING_DELETION"),
    ],
)  # fmt: skip
async def test_status_words(make_client: MakeClient, meta: dict[str, Any], stored: str) -> None:
    client = await make_client()
    event = tpl_event("template_status_update", meta, "2025-01-01T00:00:00Z")
    assert (await post(client, TEMPLATES, event))[1]["effect"] == "stored"
    assert (await template(client)).status == stored


async def test_category_detection_changes_nothing(make_client: MakeClient) -> None:
    client = await make_client()
    await post(client, TEMPLATES, tpl_event("template_status_update", {"status": "APPROVED"}, 1))
    hint = tpl_event("template_correct_category_detection",
                     {"category": "UTILITY", "correctCategory": "MARKETING"}, 2)  # fmt: skip
    assert await post(client, TEMPLATES, hint) == (200, {"status": "ok", "effect": "ignored"})
    assert await template(client) == TemplateRecord(
        "promo", "en", "APPROVED", None, None, "1970-01-01T00:00:01.000Z"
    )


async def test_quality_of_an_unknown_template_stores_nothing(make_client: MakeClient) -> None:
    client = await make_client()
    event = tpl_event("template_quality_update", {"newQualityScore": "RED"}, "2025-01-01T00:00:00Z")
    assert (await post(client, TEMPLATES, event))[1]["effect"] == "unknown_template"
    assert await store_of(client).template_get("acme", "promo", "en") is None


@pytest.mark.parametrize(
    ("ts", "stored"),
    [
        (1735689600, "2025-01-01T00:00:00.000Z"),
        (1735689600123, "2025-01-01T00:00:00.123Z"),
        ("1735689600", "2025-01-01T00:00:00.000Z"),
        (1735689600.5, "2025-01-01T00:00:00.500Z"),
        ("2025-01-01T08:00:00.00+08:00", "2025-01-01T00:00:00.000Z"),
        ("2025-01-01T00:00:00", "2025-01-01T00:00:00.000Z"),
        ("2025-01-01T00:00:00.123456Z", "2025-01-01T00:00:00.123456Z"),
    ],
)
async def test_timestamps_are_normalised_to_rfc3339_utc(
    make_client: MakeClient, ts: Any, stored: str
) -> None:
    client = await make_client()
    event = tpl_event("template_status_update", {"status": "APPROVED"}, ts)
    assert (await post(client, TEMPLATES, event))[1]["effect"] == "stored"
    assert (await template(client)).updated_at == stored


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"accountId": None}, "accountId"),
        ({"accountId": "a{b}"}, "accountId"),
        ({"eventDetails": "x"}, "eventDetails"),
        ({"eventDetails": {"templateLanguage": "en", "meta": {"status": "APPROVED"}}},
         "eventDetails.templateName"),
        ({"eventDetails": {"templateName": "p", "templateLanguage": "e:n", "meta": {}}},
         "eventDetails.templateLanguage"),
        ({"eventDetails": {"templateName": "p", "templateLanguage": "en", "meta": []}},
         "eventDetails.meta"),
        ({"eventDetails": {"templateName": "p", "templateLanguage": "en", "meta": {"status": 3}}},
         "eventDetails.meta.status"),
    ],
)  # fmt: skip
async def test_template_events_missing_what_they_need_are_400(
    make_client: MakeClient, change: dict[str, Any], field: str
) -> None:
    client = await make_client()
    event = {**tpl_event("template_status_update", {"status": "APPROVED"}, 1), **change}
    status, body = await post(client, TEMPLATES, event)
    assert (status, body["gatewayCode"], body["field"]) == (400, "request.invalid", field)
    assert await store_of(client).template_get("acme", "promo", "en") is None


async def test_unknown_template_event_types_are_ignored(make_client: MakeClient) -> None:
    client = await make_client()
    for event_type in ("account_update", None, 5):
        event = tpl_event(event_type, {"status": "APPROVED"}, 1)  # type: ignore[arg-type]
        assert await post(client, TEMPLATES, event) == (200, {"status": "ok", "effect": "ignored"})


# --- the opt-out push ----------------------------------------------------------------------


def blacklist(sim: SimProcess, account: str = "acme") -> list[str]:
    return list(sim.contacts().get(account, {}).get("blacklist", []))


async def test_push_optouts_adds_a_stop_to_8x8s_blacklist(
    make_client: MakeClient, sim: SimProcess
) -> None:
    client = await make_client(policy={"opt_in": "off", "push_optouts": True})
    await post(client, INBOUND, chat("STOP"))
    assert await store_of(client).optout_contains("acme", NUMBER)  # before any push
    await eventually(lambda: blacklist(sim) == [NUMBER])
    [seen] = sim.requests(product="contacts")
    assert seen["path"] == f"/contacts/api/v1/accounts/acme/contacts/blacklist/{NUMBER}"
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"


async def test_no_push_unless_configured(make_client: MakeClient, sim: SimProcess) -> None:
    client = await make_client()
    await post(client, INBOUND, chat("STOP"))
    await asyncio.sleep(0.2)
    assert sim.requests(product="contacts") == []


async def test_push_retries_until_8x8_answers(make_client: MakeClient, sim: SimProcess) -> None:
    client = await make_client(policy={"opt_in": "off", "push_optouts": True})
    pusher = client.app[optoutpush.PUSHER]
    pusher.base_delay_s = 0.05
    sim.configure(fail_status=503)
    status, _ = await post(client, INBOUND, chat("STOP"))
    assert status == 200  # the local opt-out does not wait for 8x8
    await eventually(lambda: len(sim.requests(product="contacts")) >= 2)
    sim.configure(fail_status=None)
    await eventually(lambda: blacklist(sim) == [NUMBER])
    assert pusher.pending == 0


async def test_push_gives_up_on_a_permanent_refusal(
    make_client: MakeClient, sim: SimProcess
) -> None:
    client = await make_client(policy={"opt_in": "off", "push_optouts": True})
    sim.configure(fail_status=400)
    await post(client, INBOUND, chat("STOP"))
    pusher = client.app[optoutpush.PUSHER]
    await eventually(lambda: pusher.pending == 0)
    assert len(sim.requests(product="contacts")) == 1


async def test_shutdown_drains_the_push_queue(make_client: MakeClient, sim: SimProcess) -> None:
    client = await make_client(policy={"opt_in": "off", "push_optouts": True})
    client.app[optoutpush.PUSHER].base_delay_s = 30  # would wait long after a failure
    sim.configure(fail_status=503)
    await post(client, INBOUND, chat("STOP"))
    await eventually(lambda: sim.requests(product="contacts"))
    await post(client, INBOUND, chat("STOP", msisdn="+6590000001"))
    sim.configure(fail_status=None)
    started = time.monotonic()
    await client.close()  # shutdown: no more backoff, one more try each
    assert time.monotonic() - started < 5
    assert sorted(blacklist(sim)) == ["+6590000001", NUMBER]


# --- template sync -------------------------------------------------------------------------


async def test_sync_on_start_fills_the_registry(make_client: MakeClient, sim: SimProcess) -> None:
    sim.set_templates(
        [
            {"templateName": "otp_code", "language": "en_US", "category": "AUTHENTICATION",
             "status": "APPROVED", "updatedAt": "2025-01-02T00:00:00Z"},
            {"templateName": "promo", "language": "en", "category": "MARKETING", "status": "PAUSED"},
            {"templateName": "broken"},
        ],
        account="unit-acct", channel="unit-ch",
    )  # fmt: skip
    client = await make_client(accounts={"unit-acct": {"whatsapp_channels": ["unit-ch"]}})
    store = store_of(client)
    record = await eventually(lambda: store.template_get("unit-acct", "otp_code", "en_US"))
    assert record == TemplateRecord(
        "otp_code", "en_US", "APPROVED", "AUTHENTICATION", None, "2025-01-02T00:00:00.000Z"
    )
    promo = await store.template_get("unit-acct", "promo", "en")
    assert promo is not None and (promo.status, promo.category) == ("PAUSED", "MARKETING")
    [seen] = sim.requests(product="chatapps")
    assert seen["path"] == "/chatapps/api/v1/accounts/unit-acct/channels/unit-ch/templates"


async def test_sync_never_goes_back_in_time_and_survives_8x8_failures(
    make_client: MakeClient, sim: SimProcess
) -> None:
    client = await make_client(
        templates={"sync_s": 0}, accounts={"unit-acct2": {"whatsapp_channels": ["c1"]}}
    )
    state = client.app[STATE]
    lock = client.app[templatesync.LOCK]
    store = state.store
    newer = TemplateRecord("promo", "en", "PAUSED", "MARKETING", "RED", "2025-06-01T00:00:00.000Z")
    await store.template_put("unit-acct2", newer)
    sim.set_templates([{"templateName": "promo", "language": "en", "category": "MARKETING",
                        "status": "APPROVED", "updatedAt": "2025-05-01T00:00:00Z"},
                       {"templateName": "welcome", "language": "en", "category": "UTILITY",
                        "status": "APPROVED", "updatedAt": "2025-05-01T00:00:00Z"}],
                      account="unit-acct2")  # fmt: skip
    sim.configure(fail_status=500)
    assert await templatesync.sync_once(state, lock) == 0  # logged, not raised
    sim.configure(fail_status=None)
    assert await templatesync.sync_once(state, lock) == 1  # welcome; promo is older
    assert await store.template_get("unit-acct2", "promo", "en") == newer
    welcome = await store.template_get("unit-acct2", "welcome", "en")
    assert welcome is not None and welcome.status == "APPROVED"
