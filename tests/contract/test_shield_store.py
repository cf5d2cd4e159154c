"""The OTP shield store's contract, the same cases on memory, fakeredis and a real Redis
(and, marked slow, a Redis Cluster):
velocity without conversion holds a prefix, validations keep it open (once per session),
the ladder escalates to a hold until release, and every Redis key has a TTL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store.shield import MANUAL, Held, MemoryShield, RedisShield, Rules, ShieldStore
from tests.contract.conftest import fresh_client
from tests.support.redisproc import RedisServer

MIN = 60_000
RULES = Rules(
    window_ms=10 * MIN,
    min_sends=4,
    min_conversion=0.5,
    holds_ms=(15 * MIN, 120 * MIN, 720 * MIN),
    reset_ms=1440 * MIN,
)
T0 = 1_800_000_000_000 - 1_800_000_000_000 % RULES.window_ms  # a window's start
PUMPED, OTHER = "+44790010", "+44791120"


@pytest.fixture(
    params=["memory", "fakeredis", "redis", pytest.param("cluster", marks=pytest.mark.slow)]
)
async def shield(request: pytest.FixtureRequest) -> AsyncIterator[ShieldStore]:
    if request.param == "memory":
        yield MemoryShield()
        return
    client = await fresh_client(request, request.param)
    yield RedisShield(client)
    await client.aclose()


async def pump(shield: ShieldStore, prefix: str, n: int, at: int) -> list[int]:
    return [(await shield.sends([prefix], at + i, RULES))[0].retry_ms for i in range(n)]


async def test_sends_without_validations_hold_the_prefix_after_min_sends(
    shield: ShieldStore,
) -> None:
    assert await pump(shield, PUMPED, 4, T0) == [0, 0, 0, 0]
    verdict = await shield.sends([PUMPED, OTHER], T0 + 10, RULES)
    assert verdict[0].retry_ms == 15 * MIN and verdict[0].level == 1
    assert verdict[1].retry_ms == 0
    later = (await shield.sends([PUMPED], T0 + 60_010, RULES))[0]
    assert later.retry_ms == 14 * MIN and later.level == 1
    assert await shield.held(T0 + 60_010) == [Held(PUMPED, T0 + 10 + 15 * MIN, 1)]


async def test_validations_keep_a_prefix_open_once_per_session(shield: ShieldStore) -> None:
    assert await shield.validated(PUMPED, "s1", T0, RULES)
    assert not await shield.validated(PUMPED, "s1", T0 + 1, RULES)  # the same session
    assert await shield.validated(PUMPED, "s2", T0 + 2, RULES)
    assert await pump(shield, PUMPED, 5, T0 + 10) == [0, 0, 0, 0, 0]  # 2/4 is 50 %
    assert (await shield.sends([PUMPED], T0 + 20, RULES))[0].retry_ms > 0  # 2/5 is not


async def test_old_sends_slide_out_of_the_window(shield: ShieldStore) -> None:
    assert await pump(shield, PUMPED, 4, T0) == [0, 0, 0, 0]
    # just before half-way through the next window, the previous one weighs a bit over
    # half (2 sends): 2 more are judged on 3.x, the next on 4.x
    assert await pump(shield, PUMPED, 2, T0 + 15 * MIN - 10) == [0, 0]
    assert (await shield.sends([PUMPED], T0 + 15 * MIN - 5, RULES))[0].retry_ms > 0
    # two windows on, nothing is left of them
    assert await pump(shield, PUMPED, 4, T0 + 40 * MIN) == [0, 0, 0, 0]


async def test_the_ladder_escalates_then_holds_until_released(shield: ShieldStore) -> None:
    at = T0
    for level, hold in enumerate((*RULES.holds_ms, MANUAL), start=1):
        assert await pump(shield, PUMPED, 4, at) == [0, 0, 0, 0]
        verdict = (await shield.sends([PUMPED], at + 10, RULES))[0]
        assert (verdict.retry_ms, verdict.level) == (hold, level)
        at += 10 + max(hold, 0)
    much_later = at + 7 * 1440 * MIN
    assert (await shield.sends([PUMPED], much_later, RULES))[0].retry_ms == MANUAL
    assert await shield.held(much_later) == [Held(PUMPED, MANUAL, 4)]
    assert await shield.release(PUMPED, much_later)
    assert await shield.held(much_later) == []
    verdict = (await shield.sends([PUMPED], much_later + 1, RULES))[0]
    assert (verdict.retry_ms, verdict.level) == (0, 0)  # released: a fresh start


async def test_the_ladder_step_is_forgotten_after_the_reset(shield: ShieldStore) -> None:
    await pump(shield, PUMPED, 5, T0)
    after = T0 + 15 * MIN + RULES.reset_ms + RULES.window_ms
    assert await pump(shield, PUMPED, 4, after) == [0, 0, 0, 0]
    verdict = (await shield.sends([PUMPED], after + 10, RULES))[0]
    assert (verdict.retry_ms, verdict.level) == (15 * MIN, 1)


async def test_releasing_a_prefix_not_held_is_harmless(shield: ShieldStore) -> None:
    assert not await shield.release(PUMPED, T0)
    await pump(shield, PUMPED, 2, T0)
    assert not await shield.release(PUMPED, T0 + 5)


async def test_every_redis_key_has_a_ttl(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    shield = RedisShield(client)
    now = int(time.time() * 1000)
    await pump(shield, PUMPED, 5, now)
    await shield.validated(OTHER, "s1", now, RULES)
    names = await client.keys("*")
    assert len(names) == 4  # the index, two prefixes, a session marker
    for name in names:
        assert name.startswith(b"gw:{otpshield}:")
        assert await client.pttl(name) > 0, name
    await client.aclose()


async def test_the_ladder_step_is_forgotten_even_while_sends_go_on(shield: ShieldStore) -> None:
    await pump(shield, PUMPED, 5, T0)  # held at T0 + 4, for 15 min
    forget = T0 + 4 + 15 * MIN + RULES.reset_ms
    assert await pump(shield, PUMPED, 3, forget - 10) == [0, 0, 0]
    assert await pump(shield, PUMPED, 1, forget + 10) == [0]
    verdict = (await shield.sends([PUMPED], forget + 20, RULES))[0]
    assert (verdict.retry_ms, verdict.level) == (15 * MIN, 1)
