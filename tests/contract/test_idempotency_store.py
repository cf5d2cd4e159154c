"""The idempotency keepers' contract, the same cases on memory, fakeredis and a real Redis
(and, marked slow, a Redis Cluster): claim, wait, keep, release, lapse, expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.store.idempotency import Keeper, Key, MemoryKeeper, RedisKeeper, State
from tests.contract.conftest import fresh_client

KEY = Key("gw:idem:" + "ab" * 32, "f" * 64)
OTHER_BODY = Key(KEY.id, "e" * 64)
LEASE_MS, TTL_MS = 5_000, 60_000


@pytest.fixture(
    params=["memory", "fakeredis", "redis", pytest.param("cluster", marks=pytest.mark.slow)]
)
async def keeper(request: pytest.FixtureRequest) -> AsyncIterator[Keeper]:
    if request.param == "memory":
        yield MemoryKeeper()
        return
    client = await fresh_client(request, request.param)
    yield RedisKeeper(client, timeout_s=2.0)
    await client.aclose()


async def test_the_first_claim_wins_and_the_others_see_it_pending(keeper: Keeper) -> None:
    assert await keeper.claim(KEY, "t1", LEASE_MS, TTL_MS) == (State.CLAIMED, None)
    assert await keeper.claim(KEY, "t2", LEASE_MS, TTL_MS) == (State.PENDING, None)


async def test_a_kept_answer_is_returned_byte_for_byte(keeper: Keeper) -> None:
    await keeper.claim(KEY, "t1", LEASE_MS, TTL_MS)
    answer = b'[200,[["Content-Type","application/json"]],false]\n{"umid":"u-1"}\x00\xff'
    await keeper.finish(KEY, "t1", answer, TTL_MS)
    assert await keeper.claim(KEY, "t2", LEASE_MS, TTL_MS) == (State.DONE, answer)


async def test_another_request_under_the_key_is_a_mismatch_pending_or_done(
    keeper: Keeper,
) -> None:
    await keeper.claim(KEY, "t1", LEASE_MS, TTL_MS)
    assert (await keeper.claim(OTHER_BODY, "t2", LEASE_MS, TTL_MS))[0] is State.MISMATCH
    await keeper.finish(KEY, "t1", b"answer", TTL_MS)
    assert (await keeper.claim(OTHER_BODY, "t3", LEASE_MS, TTL_MS))[0] is State.MISMATCH


async def test_a_release_frees_the_key_but_only_for_the_attempt_holding_it(
    keeper: Keeper,
) -> None:
    await keeper.claim(KEY, "t1", LEASE_MS, TTL_MS)
    await keeper.release(KEY, "someone-else")
    await keeper.finish(KEY, "someone-else", b"not mine", TTL_MS)
    assert (await keeper.claim(KEY, "t2", LEASE_MS, TTL_MS))[0] is State.PENDING
    await keeper.release(KEY, "t1")
    assert (await keeper.claim(KEY, "t3", LEASE_MS, TTL_MS))[0] is State.CLAIMED


async def test_a_pending_claim_past_its_lease_is_lapsed_until_its_owner_finishes(
    keeper: Keeper,
) -> None:
    await keeper.claim(KEY, "t1", 20, TTL_MS)
    await asyncio.sleep(0.05)
    assert (await keeper.claim(KEY, "t2", LEASE_MS, TTL_MS))[0] is State.LAPSED
    await keeper.finish(KEY, "t1", b"late answer", TTL_MS)
    assert await keeper.claim(KEY, "t3", LEASE_MS, TTL_MS) == (State.DONE, b"late answer")


async def test_records_expire_after_their_ttl(keeper: Keeper) -> None:
    await keeper.claim(KEY, "t1", LEASE_MS, 60)
    await keeper.finish(KEY, "t1", b"answer", 60)
    await asyncio.sleep(0.1)
    assert (await keeper.claim(KEY, "t2", LEASE_MS, TTL_MS))[0] is State.CLAIMED


async def test_keys_are_independent(keeper: Keeper) -> None:
    other = Key("gw:idem:" + "cd" * 32, KEY.fingerprint)
    await keeper.claim(KEY, "t1", LEASE_MS, TTL_MS)
    assert (await keeper.claim(other, "t2", LEASE_MS, TTL_MS))[0] is State.CLAIMED
