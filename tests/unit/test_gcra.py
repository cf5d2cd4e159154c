"""GCRA arithmetic and the memory store on a hand-driven clock: exact numbers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.limits import JITTER_S, capacity_bucket
from gateway.store import gcra, keys
from gateway.store.base import BucketSpec, MessageCheck, OtpSpec, Rule, SendCheck
from gateway.store.memory import MemoryStore

US = 1_000_000
T0 = 1_714_557_600_000_000  # 2024-05-01T10:00:00Z in µs


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def sub(interval: int, burst: int) -> BucketSpec:
    return BucketSpec(Rule.SUBACCOUNT, keys.subaccount_bucket("a", "s"), interval, burst,
                      burst, 1, True)  # fmt: skip


def check(*buckets: BucketSpec, max_wait_us: int = 0, otp: bool = False) -> SendCheck:
    return SendCheck("a", (MessageCheck("+6580000001", otp=otp),), buckets,
                     OtpSpec(60 * US, 1, 1, 60), keys.cooldown("a", "s"),
                     max_wait_us=max_wait_us)  # fmt: skip


def test_earliest_and_fill():
    assert gcra.earliest(0, 100, 3, 1000) == 1000  # missing key: full bucket
    assert gcra.earliest(1250, 100, 3, 1000) == 1050
    assert gcra.fill(0, 100, 3, 1000) == (3, 0)
    assert gcra.fill(1150, 100, 3, 1000) == (1, 150)
    assert gcra.fill(5000, 100, 3, 1000) == (0, 4000)


def test_ttl_rounds_up_to_whole_ms_at_least_one():
    assert gcra.ttl_ms(1000, 1000) == 1
    assert gcra.ttl_ms(1001, 1000) == 1
    assert gcra.ttl_ms(2001, 1000) == 2
    assert gcra.ttl_ms(61_000_000 + 5, 1_000_000 + 5) == 60_000


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T10:00:00Z", T0),
    ("2024-05-01T10:00:00.5z", T0 + 500_000),
    ("2024-05-01T12:00:00+02:00", T0),
    ("2024-05-01T10:00:00", T0),
    ("2024-05-01T10:00:00.123456789Z", T0 + 123_456),
])  # fmt: skip
def test_instant_us(text: str, expected: int):
    assert gcra.instant_us(text) == expected


def test_instant_us_rejects_garbage():
    with pytest.raises(ValueError):
        gcra.instant_us("yesterday")


async def test_burst_retry_and_refill_exactly():
    clock = Clock()
    store = MemoryStore(clock)
    bucket = sub(100_000, 2)
    assert [(await store.decide(check(bucket))).refusal for _ in range(2)] == [None, None]
    refusal = (await store.decide(check(bucket))).refusal
    assert refusal is not None and refusal.retry_after_us == 100_000
    clock.now += 99_999
    assert (await store.decide(check(bucket))).refusal is not None
    clock.now += 1
    d = await store.decide(check(bucket))
    assert d.refusal is None and d.remaining == ((Rule.SUBACCOUNT, 0),)
    assert store.pttl(bucket.key) == 200


async def test_shaping_waits_and_refuses_past_max_wait_exactly():
    clock = Clock()
    store = MemoryStore(clock)
    bucket = sub(100_000, 1)
    waits = [(await store.decide(check(bucket, max_wait_us=250_000))).wait_us for _ in range(3)]
    assert waits == [0, 100_000, 200_000]
    clock.now += 10_000
    refusal = (await store.decide(check(bucket, max_wait_us=250_000))).refusal
    assert refusal is not None and refusal.retry_after_us == 300_000 - 10_000 - 250_000


async def test_cooldown_with_exact_clock():
    clock = Clock()
    store = MemoryStore(clock)
    await store.set_cooldown(keys.cooldown("a", "s"), 1_500_000)
    refusal = (await store.decide(check(sub(1000, 5), max_wait_us=1_000_000))).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT
    assert refusal.retry_after_us == 500_000
    clock.now += 600_000
    d = await store.decide(check(sub(1000, 5), max_wait_us=1_000_000))
    assert d.refusal is None and d.wait_us == 900_000
    assert store.pttl(keys.cooldown("a", "s")) == 900


async def test_expired_keys_are_swept():
    clock = Clock()
    store = MemoryStore(clock)
    for i in range(5000):
        await store.decide(check(BucketSpec(Rule.EGRESS_IP, f"k{i}", 1000, 1, 1, 1, True)))
        clock.now += 10
    assert len(store._tats) < 5000  # swept, not only purged on access


@settings(max_examples=150, deadline=None)
@given(
    rps=st.integers(min_value=2, max_value=50),
    burst_fraction=st.floats(min_value=0.0, max_value=0.9),
    gaps=st.lists(st.integers(min_value=0, max_value=80_000), min_size=1, max_size=300),
    max_wait_us=st.sampled_from([0, 50_000, 500_000]),
)
def test_no_one_second_window_passes_rps(rps, burst_fraction, gaps, max_wait_us):
    burst = max(1, min(rps - 1, int(rps * burst_fraction)))
    bucket = sub(US // (rps - burst), burst)
    clock = Clock()
    store = MemoryStore(clock)

    async def offer() -> list[int]:
        slots = []
        for gap in gaps:
            clock.now += gap
            d = await store.decide(check(bucket, max_wait_us=max_wait_us))
            if d.refusal is None:
                assert d.wait_us <= max_wait_us
                slots.append(clock.now + d.wait_us)
        return slots

    slots = sorted(asyncio.run(offer()))
    j = 0
    for i, start in enumerate(slots):  # every window [start, start + 1 s)
        j = max(j, i)
        while j < len(slots) and slots[j] < start + US:
            j += 1
        assert j - i <= rps
    assert len(slots) >= min(len(gaps), burst)


@pytest.mark.parametrize(
    ("rps", "burst"), [(3, 2), (100, 1), (200, 4), (200, 5), (500, 10), (1800, 36), (3000, 60)]
)
def test_capacity_buckets_leave_room_for_the_forwarding_jitter(rps: int, burst: int) -> None:
    """Bookings over 1 + JITTER_S seconds fit the limit (8x8 counts sends when they arrive,
    up to JITTER_S after their slot), and the sustained rate stays close to rps - burst."""
    spec = capacity_bucket(Rule.SUBACCOUNT, "k", rps, burst)
    window_us = 1_000_000 + round(JITTER_S * 1_000_000)
    assert 1 <= spec.burst <= burst
    assert spec.burst + window_us // spec.interval_us <= rps
    assert 1_000_000 / spec.interval_us >= (rps - burst) * 0.99
