"""The Decider: micro-batches with one in flight; its patience (a slow shared store is a
failure, a saturated worker is not)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

from gateway.policy.decider import Decider
from gateway.store.base import Decision, SendCheck
from gateway.store.memory import MemoryStore
from tests.contract.conftest import send, sub_bucket


class SlowShared(MemoryStore):
    """A shared store (kind "redis") that answers after `delay_s`."""

    kind = "redis"

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.calls = 0
        self.batches: list[int] = []

    async def decide_many(self, checks: Sequence[SendCheck]) -> list[Decision]:
        self.calls += 1
        self.batches.append(len(checks))
        await asyncio.sleep(self.delay_s)
        return await super().decide_many(checks)


def _decider(store: SlowShared) -> tuple[Decider, list[int]]:
    fallbacks: list[int] = []
    decider = Decider(
        store, on_failure="open", timeout_s=0.05, on_fallback=lambda mode, n: fallbacks.append(n)
    )
    return decider, fallbacks


async def test_a_slow_store_on_an_idle_worker_falls_back() -> None:
    store = SlowShared(delay_s=0.2)
    decider, fallbacks = _decider(store)
    await decider.decide(send(buckets=(sub_bucket(),)))
    assert fallbacks == [1]
    assert decider.mode == "open"
    await decider.close()


async def test_a_saturated_worker_waits_for_the_store_instead_of_falling_back() -> None:
    store = SlowShared(delay_s=0.0)
    decider, fallbacks = _decider(store)
    stop = asyncio.Event()

    async def hog() -> None:  # the worker's own loop runs 30 ms late, again and again
        while not stop.is_set():
            time.sleep(0.03)
            await asyncio.sleep(0)

    store.delay_s = 0.2
    hogging = asyncio.create_task(hog())
    await asyncio.sleep(0.2)
    decision = await decider.decide(send(buckets=(sub_bucket(),)))
    stop.set()
    await hogging
    assert fallbacks == [] and decision.refusal is None
    assert decider.mode == "redis"
    await decider.close()


async def test_checks_arriving_while_two_batches_are_out_go_together_in_the_next() -> None:
    store = SlowShared(delay_s=0.03)
    decider, fallbacks = _decider(store)
    check = send(buckets=(sub_bucket(),))
    first = asyncio.ensure_future(decider.decide(check))
    await asyncio.sleep(0.005)
    second = asyncio.ensure_future(decider.decide(check))  # one out: this goes at once
    await asyncio.sleep(0.005)
    rest = [asyncio.ensure_future(decider.decide(check)) for _ in range(8)]
    await asyncio.sleep(0.005)
    assert store.batches == [1, 1]  # two out: the rest wait for the first answer
    await asyncio.gather(first, second, *rest)
    assert store.batches == [1, 1, 8]
    assert fallbacks == []
    await decider.close()


async def test_a_lone_check_is_sent_at_once() -> None:
    store = SlowShared(delay_s=0.0)
    decider, _ = _decider(store)
    for _ in range(3):
        await decider.decide(send(buckets=(sub_bucket(),)))
    assert store.batches == [1, 1, 1]
    await decider.close()


async def test_sends_let_through_locally_are_booked_into_the_shared_bucket() -> None:
    """A store that answers this process too late (but others in time) still learns of the
    sends it let through on its own, so the processes deciding there leave room for them."""
    store = SlowShared(delay_s=0.2)
    fallbacks: list[int] = []
    decider = Decider(store, on_failure="local", divisor=2, timeout_s=0.05,
                      on_fallback=lambda mode, n: fallbacks.append(n))  # fmt: skip
    bucket = sub_bucket(interval_us=100_000, burst=2)  # locally: 1 per 200 ms, burst 1
    read = replace(send(buckets=(bucket,)), messages=())  # limits only: no snapshot needed
    first = await decider.decide(read)  # too late: local now; the local bucket starts held
    assert first.refusal is not None and fallbacks == [1]
    assert store.tat(bucket.key, store.now()) == 0  # nothing booked in the shared bucket
    await asyncio.sleep(0.25)  # past the local start's hold (burst x local interval)
    assert (await decider.decide(read)).refusal is None
    ahead = 0
    for _ in range(20):
        await asyncio.sleep(0.005)
        ahead = store.tat(bucket.key, store.now()) - store.now()
        if ahead > 0:
            break
    # the local send took its slot in the shared bucket: one interval (100 ms) ahead
    assert 50_000 < ahead <= 100_000, ahead
    await decider.close()
