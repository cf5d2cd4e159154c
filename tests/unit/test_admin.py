"""The admin API in process, on the memory store and on a real redis-server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.app import build_app
from gateway.store.base import ConsentRecord, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.gatewayproc import ADMIN_TOKEN, API_KEY, CLIENT_TOKEN, WEBHOOK_SECRET
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess
from tests.unit.test_webhooks import ENV, Client, make_config

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
A = "/admin/v1/accounts/acme"
NUMBER = "+6591234567"
CONSENT = {"source": "signup form /join, box ticked", "categories": ["MARKETING", "utility"],
           "timestamp": "2025-01-31T09:30:00+08:00"}  # fmt: skip


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(server.url)
    await client.flushall()
    yield RedisStore(client)


@pytest.fixture
async def client(aiohttp_client: Any, sim: SimProcess, tmp_path: Path, store: Store) -> Client:
    subs = {"acme_promo": {"rps": 200, "burst": 4}, "acme_main": {"rps": 3, "burst": 2}}
    cfg = make_config(sim.url, tmp_path, subaccounts=subs)
    made: Client = await aiohttp_client(build_app(cfg, API_KEY, ENV, store=store))
    return made


async def call(
    client: Client, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
    async with client.request(
        method, path, data=data, headers=AUTH if headers is None else headers
    ) as r:
        text = await r.text()
        return r.status, json.loads(text) if text and r.content_type == "application/json" else text


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "auth.missing"),
        ({"Authorization": "Bearer nope"}, "auth.invalid"),
        ({"Authorization": f"Bearer {WEBHOOK_SECRET}"}, "auth.invalid"),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, "auth.missing"),  # Bearer only
    ],
)
@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_admin_needs_the_admin_token(
    client: Client, headers: dict[str, str], code: str
) -> None:
    for method, path in (("PUT", f"{A}/optouts/{NUMBER}"), ("GET", f"{A}/optouts"),
                         ("GET", "/admin/v1/limits"), ("GET", f"{A}/consents")):  # fmt: skip
        status, body = await call(client, method, path, headers=headers)
        assert (status, body["gatewayCode"]) == (401, code)
    status, _ = await call(client, "GET", f"{A}/optouts/{NUMBER}?token={ADMIN_TOKEN}", headers={})
    assert status == 401
    assert (await call(client, "GET", f"{A}/optouts/{NUMBER}"))[0] == 404  # nothing was added


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_no_admin_token_configured_is_401(
    aiohttp_client: Any, sim: SimProcess, tmp_path: Path, store: Store
) -> None:
    app = build_app(make_config(sim.url, tmp_path), API_KEY, {}, store=store)
    client = await aiohttp_client(app)
    status, body = await call(
        client, "GET", "/admin/v1/limits", headers={"Authorization": "Bearer "}
    )
    assert (status, body["gatewayCode"]) == (401, "auth.invalid")


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_guessing_the_admin_token_is_429_but_the_token_still_works(client: Client) -> None:
    wrong = {"Authorization": "Bearer x"}
    for _ in range(10):
        assert (await call(client, "GET", "/admin/v1/limits", headers=wrong))[0] == 401
    status, body = await call(client, "GET", "/admin/v1/limits", headers=wrong)
    assert (status, body["gatewayCode"]) == (429, "rate_limited.auth")
    assert (await call(client, "PUT", f"{A}/optouts/{NUMBER}"))[0] == 204
    assert (await call(client, "GET", "/admin/v1/limits"))[0] == 200


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_other_admin_paths_and_methods_are_404(client: Client) -> None:
    for method, path in (("POST", f"{A}/optouts/{NUMBER}"), ("GET", "/admin/v1/nothing"),
                         ("DELETE", f"{A}/templates/promo/en"), ("PATCH", f"{A}/consents/1")):  # fmt: skip
        status, body = await call(client, method, path)
        assert (status, body["gatewayCode"]) == (404, "route.unknown")


# --- opt-outs ------------------------------------------------------------------------------


async def test_optout_put_get_delete(client: Client) -> None:
    status, body = await call(client, "GET", f"{A}/optouts/{NUMBER}")
    assert (status, body["gatewayCode"]) == (404, "not_found")
    assert (await call(client, "PUT", f"{A}/optouts/{NUMBER}"))[0] == 204
    for spelling in ("6591234567", "%2B6591234567", "+65%209123%204567", "9123%204567?country=SG"):
        assert await call(client, "GET", f"{A}/optouts/{spelling}") == (200, {"msisdn": NUMBER})
    assert (await call(client, "GET", f"/admin/v1/accounts/other/optouts/{NUMBER}"))[0] == 404
    assert (await call(client, "DELETE", f"{A}/optouts/6591234567"))[0] == 204
    assert (await call(client, "GET", f"{A}/optouts/{NUMBER}"))[0] == 404
    assert (await call(client, "DELETE", f"{A}/optouts/{NUMBER}"))[0] == 204  # absent: still 204


def inbound(words: str, at: str) -> dict[str, Any]:
    return {"namespace": "SMS", "eventType": "inbound_message_received",
            "payload": {"subAccountId": "acme_main", "source": NUMBER, "body": words,
                        "timestamp": at}}  # fmt: skip


async def hook(client: Client, event: Any) -> str:
    status, body = await call(client, "POST", "/webhooks/inbound", event,
                              {"Authorization": f"Bearer {WEBHOOK_SECRET}"})  # fmt: skip
    assert status == 200
    effect: str = body["effect"]
    return effect


async def test_admin_changes_count_as_now_against_older_events(client: Client) -> None:
    """8x8 retries reorder events: one stamped before the admin's change changes nothing."""
    assert (await call(client, "PUT", f"{A}/optouts/{NUMBER}"))[0] == 204
    assert await hook(client, inbound("START", "2025-01-01T00:00:00Z")) == "stale"
    assert (await call(client, "GET", f"{A}/optouts/{NUMBER}"))[0] == 200
    assert (await call(client, "DELETE", f"{A}/optouts/{NUMBER}"))[0] == 204
    assert await hook(client, inbound("STOP", "2025-01-01T00:00:00Z")) == "stale"
    assert (await call(client, "GET", f"{A}/optouts/{NUMBER}"))[0] == 404
    assert await hook(client, inbound("STOP", "2999-01-01T00:00:00Z")) == "opted_out"
    # a clock far ahead cannot freeze the number: the admin's change still applies
    assert (await call(client, "DELETE", f"{A}/optouts/{NUMBER}"))[0] == 204
    assert (await call(client, "GET", f"{A}/optouts/{NUMBER}"))[0] == 404


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"{A}/optouts/12", "msisdn"),
        (f"{A}/optouts/not-a-number", "msisdn"),
        (f"{A}/optouts/9123%204567?country=Singapore", "country"),
        ("/admin/v1/accounts/a%20b/optouts/6591234567", "account"),
        (f"{A}/optouts?limit=0", "limit"),
        (f"{A}/optouts?limit=1001", "limit"),
        (f"{A}/optouts?limit=ten", "limit"),
        (f"{A}/optouts?cursor=bogus", "cursor"),
        (f"{A}/optouts?cursor=%25%25", "cursor"),
    ],
)
async def test_bad_admin_input_is_400_naming_the_field(
    client: Client, path: str, field: str
) -> None:
    status, body = await call(client, "GET", path)
    assert (status, body["gatewayCode"], body["field"]) == (400, "request.invalid", field)


async def test_optout_list_pages_through_everything(client: Client) -> None:
    numbers = {f"+659000{i:04d}" for i in range(25)}
    for n in numbers:
        assert (await call(client, "PUT", f"{A}/optouts/{n}"))[0] == 204
    seen: list[str] = []
    cursor = ""
    for _ in range(30):
        status, page = await call(client, "GET", f"{A}/optouts?limit=10&cursor={cursor}")
        assert status == 200 and set(page) == {"items", "next"}
        assert len(page["items"]) <= 10
        seen += [item["msisdn"] for item in page["items"]]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert sorted(seen) == sorted(numbers)


async def test_optout_list_defaults_to_100(client: Client) -> None:
    for i in range(120):
        await call(client, "PUT", f"{A}/optouts/+659100{i:04d}")
    status, page = await call(client, "GET", f"{A}/optouts")
    assert status == 200 and len(page["items"]) == 100 and page["next"]
    status, page = await call(client, "GET", f"{A}/optouts?limit=1000")
    assert len(page["items"]) == 120 and page["next"] is None
    assert await call(client, "GET", "/admin/v1/accounts/nobody/optouts") == (
        200, {"items": [], "next": None},
    )  # fmt: skip


# --- consent -------------------------------------------------------------------------------


async def test_consent_put_get_delete(client: Client) -> None:
    assert (await call(client, "PUT", f"{A}/consents/6591234567", CONSENT))[0] == 204
    assert await call(client, "GET", f"{A}/consents/{NUMBER}") == (200, {
        "msisdn": NUMBER, "source": CONSENT["source"], "categories": ["MARKETING", "UTILITY"],
        "timestamp": CONSENT["timestamp"],
    })  # fmt: skip
    assert (await call(client, "DELETE", f"{A}/consents/{NUMBER}"))[0] == 204
    status, body = await call(client, "GET", f"{A}/consents/{NUMBER}")
    assert (status, body["gatewayCode"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "body"),
        ([CONSENT], "body"),
        ({**CONSENT, "source": ""}, "source"),
        ({k: v for k, v in CONSENT.items() if k != "source"}, "source"),
        ({**CONSENT, "categories": []}, "categories"),
        ({**CONSENT, "categories": "MARKETING"}, "categories"),
        ({**CONSENT, "categories": ["MARKETING", 3]}, "categories"),
        ({**CONSENT, "categories": ["NOT A CATEGORY!"]}, "categories"),
        ({**CONSENT, "timestamp": "yesterday"}, "timestamp"),
        ({**CONSENT, "timestamp": "2025-01-31"}, "timestamp"),
        ({**CONSENT, "timestamp": "2025-13-31T09:30:00Z"}, "timestamp"),
        ({**CONSENT, "timestamp": 1738287000}, "timestamp"),
        ({k: v for k, v in CONSENT.items() if k != "timestamp"}, "timestamp"),
    ],
)
async def test_consent_is_validated(client: Client, body: Any, field: str) -> None:
    status, answer = await call(client, "PUT", f"{A}/consents/{NUMBER}", body)
    assert (status, answer["gatewayCode"], answer["field"]) == (400, "request.invalid", field)
    assert (await call(client, "GET", f"{A}/consents/{NUMBER}"))[0] == 404


async def test_consent_export_is_ndjson_of_every_record(client: Client) -> None:
    async with client.get(f"{A}/consents", headers=AUTH) as resp:
        assert resp.status == 200 and await resp.text() == ""
    numbers = [f"+659200{i:04d}" for i in range(300)]
    for n in numbers:
        await call(client, "PUT", f"{A}/consents/{n}", {**CONSENT, "source": f"form {n}"})
    async with client.get(f"{A}/consents", headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        lines = (await resp.text()).splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["msisdn"] for r in records) == numbers
    assert all(set(r) == {"msisdn", "source", "categories", "timestamp"} for r in records)
    assert all(r["source"] == f"form {r['msisdn']}" for r in records)


@pytest.mark.parametrize("store", ["memory"], indirect=True)
async def test_export_failing_midway_is_cut_not_passed_off_as_complete(
    aiohttp_client: Any, sim: SimProcess, tmp_path: Path, store: Store
) -> None:
    class Flaky(MemoryStore):
        fail_after = 0

        async def consent_export(self, account: str) -> AsyncIterator[ConsentRecord]:
            for i in range(2000):
                if i == self.fail_after:
                    raise ConnectionError("redis went away")
                yield ConsentRecord(f"+6593{i:06d}", "form", ("MARKETING",), "2025-01-01T00:00:00Z")

    flaky = Flaky()
    client = await aiohttp_client(
        build_app(make_config(sim.url, tmp_path), API_KEY, ENV, store=flaky)
    )
    status, body = await call(client, "GET", f"{A}/consents")
    assert (status, body["gatewayCode"]) == (503, "store.unavailable")
    flaky.fail_after = 1500
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get(f"{A}/consents", headers=AUTH) as resp:
            assert resp.status == 200
            await resp.read()
    assert (await call(client, "GET", "/healthz", headers={}))[0] == 200  # still serving


# --- templates -----------------------------------------------------------------------------


async def test_template_put_get_and_merge(client: Client) -> None:
    path = f"{A}/templates/promo/en_US"
    assert (await call(client, "GET", path))[0] == 404
    body = {"status": "approved", "category": "MARKETING", "quality": "GREEN"}
    assert (await call(client, "PUT", path, body))[0] == 204
    status, got = await call(client, "GET", path)
    assert status == 200
    stamp = got.pop("updatedAt")
    assert stamp.endswith("Z")
    assert got == {"name": "promo", "language": "en_US", "status": "APPROVED",
                   "category": "MARKETING", "quality": "GREEN"}  # fmt: skip
    await call(client, "PUT", path, {"status": "PAUSED"})  # category and quality kept
    got = (await call(client, "GET", path))[1]
    assert (got["status"], got["category"], got["quality"]) == ("PAUSED", "MARKETING", "GREEN")
    await call(client, "PUT", path, {"status": "APPROVED", "quality": None})  # null clears
    got = (await call(client, "GET", path))[1]
    assert (got["status"], got["category"], got["quality"]) == ("APPROVED", "MARKETING", None)


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "status"), ({"status": ""}, "status"), ({"status": 1}, "status"),
     ({"status": "APPROVED", "category": 5}, "category"), ("nope", "body")],
)  # fmt: skip
async def test_template_put_is_validated(client: Client, body: Any, field: str) -> None:
    status, answer = await call(client, "PUT", f"{A}/templates/promo/en", body)
    assert (status, answer["field"]) == (400, field)


# --- limits --------------------------------------------------------------------------------


async def test_limits_shows_the_limits_and_the_buckets_in_use(client: Client) -> None:
    status, body = await call(client, "GET", "/admin/v1/limits")
    assert status == 200 and set(body) == {"limits", "buckets"}
    limits = body["limits"]
    assert limits["subaccount"] == {"limit": 1800, "window_s": 1, "burst": 36}
    assert limits["subaccount:acme_promo"] == {"limit": 200, "window_s": 1, "burst": 4}
    assert {"egress_ip", "otp_recipient", "end_user_ip"} <= set(limits)
    buckets = {(b["bucket"], b["id"]): b for b in body["buckets"]}
    assert set(buckets) == {("subaccount", s) for s in ("acme_main", "acme_otp", "acme_bills",
                                                       "acme_promo")} | {("egress_ip", "default")}  # fmt: skip
    for b in body["buckets"]:
        assert set(b) == {"bucket", "id", "remaining", "reset_s"}
    assert buckets[("subaccount", "acme_main")]["remaining"] == 2
    # one send through the proxy (to the simulator) takes one token from its buckets
    send = {"user": {"msisdn": NUMBER}, "type": "text", "content": {"text": "hi"}}
    async with client.post("/chatapps/api/v1/subaccounts/acme_main/messages", json=send,
                           headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}) as resp:  # fmt: skip
        assert resp.status == 200
    body = (await call(client, "GET", "/admin/v1/limits"))[1]
    buckets = {(b["bucket"], b["id"]): b for b in body["buckets"]}
    assert buckets[("subaccount", "acme_main")]["remaining"] == 1  # refills one a second
    assert 0.5 < buckets[("subaccount", "acme_main")]["reset_s"] <= 1
    assert buckets[("subaccount", "acme_promo")]["remaining"] == 4
    text = json.dumps(body)
    for secret in (ADMIN_TOKEN, WEBHOOK_SECRET, API_KEY):
        assert secret not in text
