"""What only a real redis-server can show: script reloads, persistence, key hygiene."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store import codec, keys
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


async def test_a_decision_given_up_on_leaves_nothing_booked(real: RedisStore) -> None:
    """The caller stops waiting while the script runs (the Decider's timeout): the bookings
    it made are undone (lua/cancel.lua), so a retry finds every OTP slot free."""
    numbers = [f"+65800{i:05d}" for i in range(10_000)]
    check = send(*(msg(n, otp=True) for n in numbers), batch=True, opt_in="off",
                 buckets=(sub_bucket(interval_us=1, burst=100),))  # fmt: skip
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.005):
            await real.decide(check)

    async def undone() -> bool:
        return not [k async for k in real.client.scan_iter(match=keys.otp_bucket(ACCOUNT, "*"))]

    deadline = time.monotonic() + 5
    while not await undone():
        assert time.monotonic() < deadline, "bookings of a cancelled decision left behind"
        await asyncio.sleep(0.05)
    assert await real.client.get(sub_bucket().key) is None
    decision = await real.decide(check)
    assert (decision.refusal, decision.dropped) == (None, ())


async def test_a_cancelled_decision_that_reaches_redis_later_books_nothing(
    real: RedisStore,
) -> None:
    journal = keys.decision("late")
    await script("cancel")(real.client, [journal], [10_000])  # the cancel came first
    names, blob = codec.encode([send(msg(X, otp=True))])
    reply = await script("decide")(real.client, [*names, journal], [blob, "", len(names) + 1, 1000])
    assert reply == [-1]
    assert await real.client.get(keys.otp_bucket(ACCOUNT, X)) is None
