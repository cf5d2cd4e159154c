"""The Decider: micro-batches with one in flight; its patience (a slow shared store is a
failure, a saturated worker is not, nor a large batch); pacing sends to their slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from gateway.policy import pacing
from gateway.policy.decider import Decider
from gateway.store.base import Decision, Refusal, Rule, SendCheck
from gateway.store.memory import MemoryStore
from tests.contract.conftest import msg, send, sub_bucket


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


# --- pacing: leave at the slot, or take a fresh one --------------------------------------------


def in_step() -> pacing.SlotClock:
    """A slot clock that has seen a timely decision: this host and the store agree."""
    clock = pacing.SlotClock()
    now = time.time()
    clock.observe(Decision(slot_us=int(now * 1e6)), now)
    return clock


class Rebook:
    """A decider whose every decision is `answer`, counting the calls."""

    def __init__(self, answer: Decision) -> None:
        self.answer, self.calls = answer, 0

    async def decide(self, check: SendCheck) -> Decision:
        self.calls += 1
        return self.answer

    def check(self) -> SendCheck:
        return send(buckets=(sub_bucket(),))


async def test_a_send_leaves_at_its_slot_without_a_fresh_booking() -> None:
    rebook = Rebook(Decision())
    slot = time.time_ns() // 1000 + 20_000
    first = Decision(wait_us=20_000, slot_us=slot, dropped=((1, Rule.OPTED_OUT),))
    went = await pacing.until_slot(first, rebook, rebook.check, in_step())
    assert went is first and rebook.calls == 0
    assert time.time_ns() // 1000 >= slot


async def test_a_send_later_than_its_slot_takes_a_fresh_one_keeping_its_drops() -> None:
    now = time.time_ns() // 1000
    fresh = Decision(wait_us=0, slot_us=now, remaining=((Rule.SUBACCOUNT, 3),))
    rebook = Rebook(fresh)
    late = Decision(wait_us=10_000, slot_us=now - 50_000, dropped=((0, Rule.OTP),))
    went = await pacing.until_slot(late, rebook, rebook.check, in_step())
    assert rebook.calls == 1
    assert (went.slot_us, went.dropped, went.remaining) == (now, ((0, Rule.OTP),), fresh.remaining)


async def test_a_late_send_whose_fresh_slot_is_refused_is_refused() -> None:
    refusal = Decision(refusal=Refusal(Rule.SUBACCOUNT, 5_000))
    rebook = Rebook(refusal)
    late = Decision(wait_us=10_000, slot_us=time.time_ns() // 1000 - 50_000)
    assert await pacing.until_slot(late, rebook, rebook.check, in_step()) is refusal


async def test_a_send_late_every_time_is_refused_with_its_bucket() -> None:
    # late again, each time having taken the bucket's last token
    last = ((Rule.SUBACCOUNT, 0),)
    rebook = Rebook(Decision(slot_us=time.time_ns() // 1000 - 50_000, remaining=last))
    went = await pacing.until_slot(rebook.answer, rebook, rebook.check, in_step())
    assert rebook.calls == pacing.REBOOKS
    assert went.refusal is not None and went.refusal.bucket == sub_bucket()


async def test_a_late_send_whose_fresh_slot_has_room_goes_even_if_the_loop_is_late_again() -> None:
    """A saturated loop delivers the fresh decision late too; with tokens to spare it goes
    rather than being re-booked until refused."""
    spare = ((Rule.SUBACCOUNT, 20), (Rule.EGRESS_IP, 40))
    rebook = Rebook(Decision(slot_us=time.time_ns() // 1000 - 50_000, remaining=spare))
    late = Decision(slot_us=time.time_ns() // 1000 - 50_000)
    went = await pacing.until_slot(late, rebook, rebook.check, in_step())
    assert rebook.calls == 1 and went.refusal is None and went.remaining == spare


async def test_a_late_first_slot_is_booked_afresh_even_with_tokens_to_spare() -> None:
    """Its lateness may be a stall (a GC pause, a busy loop) during which the rest of the
    fleet filled the bucket: only a fresh booking tells."""
    fresh = Decision(slot_us=time.time_ns() // 1000, remaining=((Rule.SUBACCOUNT, 5),))
    rebook = Rebook(fresh)
    spare = ((Rule.SUBACCOUNT, 20), (Rule.EGRESS_IP, 40))
    late = Decision(slot_us=time.time_ns() // 1000 - 50_000, remaining=spare)
    went = await pacing.until_slot(late, rebook, rebook.check, in_step())
    assert rebook.calls == 1 and went.slot_us == fresh.slot_us


@pytest.mark.parametrize(
    "remaining",
    [
        ((Rule.SUBACCOUNT, 0), (Rule.EGRESS_IP, 40)),
        ((Rule.SUBACCOUNT, 20), (Rule.EGRESS_IP, 0)),
        (),
    ],
)
async def test_a_late_first_send_at_a_buckets_edge_or_unknown_takes_a_fresh_slot(
    remaining: tuple[tuple[Rule, int], ...],
) -> None:
    fresh = Decision(slot_us=time.time_ns() // 1000, remaining=((Rule.SUBACCOUNT, 5),))
    rebook = Rebook(fresh)
    late = Decision(slot_us=time.time_ns() // 1000 - 50_000, remaining=remaining)
    told: list[str] = []
    went = await pacing.until_slot(late, rebook, rebook.check, in_step(), told.append)
    assert rebook.calls == 1 and went.slot_us == fresh.slot_us
    assert told == ["booked"]  # gateway_late_rebooks_total{outcome="booked"}


class Claims(Rebook):
    """A decider that records the checks it is asked."""

    def __init__(self, answer: Decision) -> None:
        super().__init__(answer)
        self.checks: list[SendCheck] = []

    async def decide(self, check: SendCheck) -> Decision:
        self.checks.append(check)
        return await super().decide(check)


async def test_a_bulk_queue_ticket_claims_its_real_slot_at_the_tickets_instant() -> None:
    now = time.time_ns() // 1000
    claimed = Decision(wait_us=0, slot_us=now + 10_000, remaining=((Rule.SUBACCOUNT, 2),))
    claims = Claims(claimed)
    ticket = Decision(wait_us=10_000, slot_us=now + 10_000, dropped=((1, Rule.OPTED_OUT),),
                      ticket=True)  # fmt: skip
    went = await pacing.until_slot(ticket, claims, claims.check, in_step())
    assert claims.calls == 1 and claims.checks[0].claim
    assert not went.ticket and went.slot_us == claimed.slot_us
    assert went.dropped == ticket.dropped and time.time_ns() // 1000 >= now + 10_000


async def test_a_refused_claim_refuses_the_send() -> None:
    refusal = Decision(refusal=Refusal(Rule.SUBACCOUNT, 5_000))
    claims = Claims(refusal)
    ticket = Decision(wait_us=0, slot_us=time.time_ns() // 1000, ticket=True)
    assert await pacing.until_slot(ticket, claims, claims.check, in_step()) is refusal


@pytest.mark.parametrize("skew_s", [2.0, -2.0])
async def test_a_host_whose_clock_differs_from_the_stores_paces_alike(skew_s: float) -> None:
    """Slots are on Redis's clock; a host 2 s ahead (or behind) still leaves at the slot,
    with no fresh booking, once it has seen a timely decision."""
    clock = pacing.SlotClock()
    store_now = int((time.time() - skew_s) * 1e6)
    clock.observe(Decision(slot_us=store_now), time.time())
    rebook = Rebook(Decision())
    start = time.monotonic()
    first = Decision(wait_us=20_000, slot_us=store_now + 20_000)
    assert await pacing.until_slot(first, rebook, rebook.check, clock) is first
    assert rebook.calls == 0 and time.monotonic() - start >= 0.015


# --- a decision's time grows with its size -----------------------------------------------------


async def test_a_large_batch_gets_time_for_its_size_and_does_not_fall_back() -> None:
    store = SlowShared(delay_s=0.2)  # 10,000 messages: 50 ms + 10,000 x 50 µs = 550 ms
    decider, fallbacks = _decider(store)
    big = send(*(msg(f"+65800{i:05d}") for i in range(10_000)), batch=True, opt_in="off",
               buckets=(sub_bucket(),))  # fmt: skip
    assert (await decider.decide(big)).refusal is None
    assert fallbacks == [] and decider.mode == "redis"
    await decider.close()
