"""Scheduled sends: remembered after 8x8 accepts them, cancelled when the person opts out
(the gateway in process, 8x8 calls to the real simulator)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway import scheduled
from gateway.app import build_app
from gateway.state import STATE
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.upstream import Answer
from tests.support.gatewayproc import ADMIN_TOKEN, API_KEY, CLIENT_TOKEN
from tests.support.simproc import SimProcess
from tests.unit.test_webhooks import ENV, Client, chat, eventually, make_config, post

NUMBER = "+6591234567"
CHAT = "/chatapps/api/v1/subaccounts/acme_main/messages"
SMS = "/sms/api/v1/subaccounts/acme_main/messages"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def chat_send(when: str | None, msisdn: str = NUMBER) -> dict[str, Any]:
    body: dict[str, Any] = {"user": {"msisdn": msisdn}, "type": "text", "content": {"text": "hi"}}
    if when is not None:
        body["scheduled"] = when
    return body


@pytest.fixture
async def client(aiohttp_client: Any, sim: SimProcess, tmp_path: Path) -> Client:
    cfg = make_config(sim.url, tmp_path)
    app = build_app(cfg, API_KEY, ENV, store=MemoryStore())
    made: Client = await aiohttp_client(app)
    made.app[scheduled.CANCELLER].base_delay_s = 0.01
    return made


async def send(client: Client, path: str, body: Any) -> dict[str, Any]:
    async with client.post(path, json=body, headers=CLIENT) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
        return answer


def store_of(client: Client) -> Store:
    return client.app[STATE].store


def cancels(sim: SimProcess, product: str = "chatapps") -> list[str]:
    return [r["path"] for r in sim.requests(product=product) if r["method"] == "DELETE"]


async def test_a_stop_cancels_the_persons_scheduled_sends(client: Client, sim: SimProcess) -> None:
    first = await send(client, CHAT, chat_send(later(3600)))
    second = await send(client, CHAT, chat_send(later(7200)))
    await send(client, CHAT, chat_send(later(3600), "+6598765432"))  # someone else's
    remembered = await store_of(client).scheduled_list("acme", NUMBER)
    assert len(remembered) == 2
    assert (await post(client, "/webhooks/inbound", chat("STOP")))[1]["effect"] == "opted_out"
    expected = sorted(f"{CHAT}/{a['umid']}" for a in (first, second))
    await eventually(lambda: sorted(cancels(sim)) == expected)
    # the simulator answers 404 (as 8x8 does for a message already sent): done, forgotten
    await eventually(lambda: client.app[scheduled.CANCELLER].pending == 0)
    assert await store_of(client).scheduled_list("acme", NUMBER) == []
    assert len(await store_of(client).scheduled_list("acme", "+6598765432")) == 1


async def test_an_admin_opt_out_cancels_scheduled_sms(client: Client, sim: SimProcess) -> None:
    sms = {"destination": "9123 4567", "country": "SG", "text": "hi", "scheduled": later(600)}
    answer = await send(client, SMS, sms)
    async with client.put(f"/admin/v1/accounts/acme/optouts/{NUMBER}", headers=ADMIN) as resp:
        assert resp.status == 204
    await eventually(lambda: cancels(sim, "sms") == [f"{SMS}/{answer['umid']}"])
    [seen] = [r for r in sim.requests(product="sms") if r["method"] == "DELETE"]
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"


async def test_scheduled_sms_of_a_batch_are_cancelled_one_by_one(
    client: Client, sim: SimProcess
) -> None:
    batch = {"messages": [{"destination": "9123 4567", "country": "SG", "text": "a"},
                          {"destination": "+6590000001", "text": "now", "scheduled": None}],
             "destinations": ["+6598765432"], "includeMessagesInResponse": True,
             "template": {"text": "hi", "scheduled": later(600)}}  # fmt: skip
    answer = await send(client, SMS + "/batch", batch)
    umids = [m["umid"] for m in answer["messages"]]
    store = store_of(client)
    assert len(await store.scheduled_list("acme", NUMBER)) == 1
    assert await store.scheduled_list("acme", "+6590000001") == []  # not scheduled
    assert len(await store.scheduled_list("acme", "+6598765432")) == 1
    stop = {"namespace": "SMS", "eventType": "inbound_message_received",
            "payload": {"subAccountId": "acme_main", "source": "6598765432", "body": "STOP"}}  # fmt: skip
    assert (await post(client, "/webhooks/inbound", stop))[1]["effect"] == "opted_out"
    await eventually(lambda: cancels(sim, "sms") == [f"{SMS}/{umids[2]}"])
    without = {**batch, "includeMessagesInResponse": False}
    answer = await send(client, SMS + "/batch", without)
    # the gateway asked 8x8 for the umids (gateway/listing.py) and hid them from the caller
    assert "messages" not in answer
    assert len(await store.scheduled_list("acme", NUMBER)) == 2


@pytest.mark.parametrize(
    "body",
    [chat_send(None), chat_send(later(-60)), chat_send("tomorrow"), chat_send(12)],
    ids=["not-scheduled", "past", "unreadable", "wrong-type"],
)
async def test_only_future_scheduled_sends_are_remembered(client: Client, body: Any) -> None:
    async with client.post(CHAT, json=body, headers=CLIENT) as resp:
        assert resp.status in (200, 400)  # 8x8 refuses a `scheduled` of the wrong type
    assert await store_of(client).scheduled_list("acme", NUMBER) == []


def _answer(status: int, body: Any) -> Answer:
    return Answer(status, CIMultiDict(), orjson.dumps(body), 0.01)


async def test_remember_reads_only_accepted_single_sends(client: Client) -> None:
    app, raw = client.app, orjson.dumps(chat_send(later(600)))
    path = "/api/v1/subaccounts/acme_main/messages"
    for product, method, where, answer in (
        ("chatapps", "POST", path, _answer(400, {"code": 1000})),
        ("chatapps", "POST", path + "/batch", _answer(200, {"umid": "u1"})),
        ("verify", "POST", path, _answer(200, {"umid": "u1"})),
        ("chatapps", "GET", path, _answer(200, {"umid": "u1"})),
        ("chatapps", "POST", path, _answer(200, {"noumid": 1})),
        ("chatapps", "POST", path, _answer(200, "not an object")),
    ):
        await scheduled.remember(app, product, method, where, raw, answer)
    assert await store_of(client).scheduled_list("acme", NUMBER) == []
    await scheduled.remember(app, "chatapps", "POST", path, b"{not json", _answer(200, {}))


async def test_a_send_accepted_after_the_stop_is_cancelled_at_once(
    client: Client, sim: SimProcess
) -> None:
    """The decision let it through just before the STOP was stored: cancel it anyway."""
    await store_of(client).optout_event("acme", [NUMBER], True, None)
    raw = orjson.dumps(chat_send(later(600)))
    path = "/api/v1/subaccounts/acme_main/messages"
    await scheduled.remember(
        client.app, "chatapps", "POST", path, raw, _answer(200, {"umid": "u9"})
    )
    await eventually(lambda: cancels(sim) == [f"{CHAT}/u9"])


class Scripted:
    """8x8's answers to the gateway's cancels, in order (the last one repeats)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(
        self, product: str, path: str, method: str, body: bytes | None, headers: dict[str, str]
    ) -> Answer:
        self.calls.append((product, method, path))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return _answer(status, {"cancelledCount": 1} if status == 200 else {"code": status})


async def test_cancels_are_retried_while_8x8_fails(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = await send(client, CHAT, chat_send(later(600)))
    upstream = Scripted(503, 429, 200)
    monkeypatch.setattr(client.app[STATE].upstream, "forward", upstream)
    assert (await post(client, "/webhooks/inbound", chat("STOP")))[0] == 200
    canceller = client.app[scheduled.CANCELLER]
    await eventually(lambda: len(upstream.calls) == 3 and canceller.pending == 0)
    path = f"/api/v1/subaccounts/acme_main/messages/{answer['umid']}"
    assert upstream.calls == [("chatapps", "DELETE", path)] * 3
    assert await store_of(client).scheduled_list("acme", NUMBER) == []


async def test_cancels_that_never_succeed_stay_for_the_next_opt_out(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    canceller = client.app[scheduled.CANCELLER]
    canceller.max_attempts = 2
    await send(client, CHAT, chat_send(later(600)))
    upstream = Scripted(503)
    monkeypatch.setattr(client.app[STATE].upstream, "forward", upstream)
    assert (await post(client, "/webhooks/inbound", chat("STOP")))[0] == 200
    await eventually(lambda: len(upstream.calls) == 2 and canceller.pending == 0)
    assert len(await store_of(client).scheduled_list("acme", NUMBER)) == 1
    upstream.statuses = [400]  # a refusal that will not pass: logged and forgotten
    scheduled.cancel_for(client.app, "acme", [NUMBER])
    await eventually(lambda: len(upstream.calls) == 3 and canceller.pending == 0)
    assert await store_of(client).scheduled_list("acme", NUMBER) == []


def test_the_recipient_of_a_send() -> None:
    assert scheduled.recipient("chatapps", chat_send(None, "6591234567")) == NUMBER
    by_user = {"user": {"channelUserId": "US.1349120865"}}
    assert scheduled.recipient("chatapps", by_user) == "cu:whatsapp:US.1349120865"
    both = {"user": {"msisdn": "+6591234567", "channelUserId": "US.1"}}
    assert scheduled.recipient("chatapps", both) == NUMBER  # 8x8: msisdn takes precedence
    sms = {"destination": "91234567", "country": "SG"}
    assert scheduled.recipient("sms", sms) == NUMBER
    for product, body in (("chatapps", {"user": "x"}), ("chatapps", {"user": {"msisdn": "no"}}),
                          ("sms", {"destination": 1.5}), ("chatapps", {})):  # fmt: skip
        assert scheduled.recipient(product, body) is None


@pytest.fixture(params=["memory", "fakeredis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        yield RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))


async def test_store_keeps_scheduled_sends_per_person_until_their_time(store: Store) -> None:
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    one, two = scheduled.entry("chatapps", "s", "u1"), scheduled.entry("sms", "s", "u2")
    await store.scheduled_add("acme", NUMBER, one, now + 60_000_000)
    await store.scheduled_add("acme", NUMBER, two, now + 120_000_000)
    await store.scheduled_add("acme", NUMBER, "gone", now - 1_000_000)  # its time has passed
    await store.scheduled_add("other", NUMBER, one, now + 60_000_000)
    assert sorted(await store.scheduled_list("acme", NUMBER)) == sorted([one, two])
    await store.scheduled_remove("acme", NUMBER, one)
    assert await store.scheduled_list("acme", NUMBER) == [two]
    assert await store.scheduled_list("acme", "+6500000000") == []
    assert await store.scheduled_list("other", NUMBER) == [one]


def test_cancels_are_paced_by_aiolimiter(sim: SimProcess, tmp_path: Path) -> None:
    app = build_app(make_config(sim.url, tmp_path), API_KEY, ENV, store=MemoryStore())
    assert isinstance(app, web.Application)
    limiter = app[scheduled.CANCELLER].limiter
    assert limiter.max_rate == scheduled.CANCELS_PER_S and limiter.time_period == 1.0
