"""What only a real redis-server can show: script reloads, persistence, key hygiene."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store import keys
from gateway.store.base import ConsentRecord, Rule, TemplateRecord
from gateway.store.redis import RedisStore
from gateway.store.scripts import script
from tests.contract.conftest import (
    ACCOUNT,
    COOLDOWN,
    US,
    egress_bucket,
    end_user_bucket,
    msg,
    send,
    sub_bucket,
)
from tests.support.redisproc import RedisServer

X, Y = "+6587654321", "+6591234567"
CONSENT = ConsentRecord(X, "web", ("MARKETING",), "2024-05-01T10:00:00Z")
TEMPLATE = TemplateRecord("promo", "en", "PAUSED", "MARKETING", "RED", "2024-05-01T10:00:00Z")


@pytest.fixture
async def real(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    store = RedisStore(client)
    yield store
    await store.close()


async def test_scripts_reload_after_script_flush(real: RedisStore):
    assert (await real.decide(send())).refusal is None
    await real.client.script_flush()
    assert await real.client.script_exists(script("decide").sha) == [False]
    assert (await real.decide(send())).refusal is None
    await real.client.script_flush()
    await real.set_cooldown(COOLDOWN, US)
    await real.template_put(ACCOUNT, TEMPLATE, if_newer=True)
    shas = [script(name).sha for name in ("decide", "cooldown", "template_put")]
    assert await real.client.script_exists(*shas) == [False, True, True]


async def test_only_compliance_keys_live_without_ttl(real: RedisStore):
    await real.optout_add(ACCOUNT, Y)
    await real.consent_put(ACCOUNT, CONSENT)
    await real.template_put(ACCOUNT, TEMPLATE)
    await real.template_put(ACCOUNT, TemplateRecord("code", "en", "APPROVED", "AUTHENTICATION",
                                                    None, "2024-05-01T10:00:00Z"))  # fmt: skip
    await real.set_cooldown(COOLDOWN, 5 * US)
    buckets = (end_user_bucket(), sub_bucket(), egress_bucket())
    await real.decide_many([
        send(msg(X, "code:en"), msg(Y), msg(X, otp=True), batch=True, buckets=buckets,
             max_wait_us=10 * US),
        send(msg(X, "promo:en"), buckets=buckets),
        send(msg("+6500000001", otp=True), buckets=buckets, max_wait_us=10 * US),
    ])  # fmt: skip
    persistent, expiring = set(), set()
    async for key in real.client.scan_iter("*"):
        (persistent if await real.client.pttl(key) == -1 else expiring).add(key.decode())
    assert persistent == {keys.optouts(ACCOUNT), keys.consents(ACCOUNT), keys.templates(ACCOUNT)}
    assert {b.key for b in buckets} | {COOLDOWN, keys.otp_bucket(ACCOUNT, X)} <= expiring


async def test_a_client_decoding_responses_works_too(redis_server: RedisServer):
    store = RedisStore(Redis.from_url(redis_server.url, decode_responses=True))
    try:
        await store.client.flushall()
        await store.template_put(ACCOUNT, TEMPLATE)
        await store.consent_put(ACCOUNT, CONSENT)
        await store.optout_add(ACCOUNT, Y)
        refusal = (await store.decide(send(msg(X, "promo:en")))).refusal
        assert refusal is not None and refusal.rule is Rule.TEMPLATE and refusal.status == "PAUSED"
        assert await store.template_list(ACCOUNT, None, 10) == ([TEMPLATE], None)
        assert await store.optout_list(ACCOUNT, None, 10) == ([Y], None)
        assert [r async for r in store.consent_export(ACCOUNT)] == [CONSENT]
        assert (await store.bucket_fill([sub_bucket()]))[0].remaining == 5
    finally:
        await store.close()


async def write_records(store: RedisStore) -> None:
    await store.optout_add(ACCOUNT, Y)
    await store.consent_put(ACCOUNT, CONSENT)
    await store.template_put(ACCOUNT, TEMPLATE, if_newer=True)


async def read_records(server: RedisServer) -> None:
    store = RedisStore(Redis.from_url(server.url))
    try:
        assert await store.optout_contains(ACCOUNT, Y)
        assert await store.consent_get(ACCOUNT, X) == CONSENT
        assert await store.template_get(ACCOUNT, "promo", "en") == TEMPLATE
        refusal = (await store.decide(send(msg(Y)))).refusal
        assert refusal is not None and refusal.rule is Rule.OPTED_OUT
    finally:
        await store.close()


@pytest.mark.parametrize("kill", [False, True], ids=["shutdown", "sigkill"])
async def test_records_survive_a_redis_restart_with_aof(kill: bool):
    # appendfsync always: a SIGKILL right after the writes loses nothing
    with RedisServer(appendonly=True, args=("--appendfsync", "always")) as server:
        store = RedisStore(Redis.from_url(server.url))
        await write_records(store)
        await store.close()
        server.stop(kill=kill)
        server.start()
        await read_records(server)
