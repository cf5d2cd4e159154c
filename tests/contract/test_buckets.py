"""GCRA buckets, shaping and cool-downs: the same cases on every store."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import pytest

from gateway.store import keys
from gateway.store.base import Rule, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.contract.conftest import (
    COOLDOWN,
    MS,
    US,
    egress_bucket,
    end_user_bucket,
    msg,
    pttl,
    send,
    spec,
    sub_bucket,
)


async def test_burst_goes_at_once_and_the_next_is_refused_until_one_interval(store: Store):
    bucket = sub_bucket(interval_us=10 * US, burst=3)
    ds = await store.decide_many([send(buckets=(bucket,))] * 4)
    assert [d.refusal for d in ds[:3]] == [None] * 3
    assert [d.wait_us for d in ds[:3]] == [0, 0, 0]
    assert [d.remaining for d in ds[:3]] == [((Rule.SUBACCOUNT, n),) for n in (2, 1, 0)]
    refusal = ds[3].refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT
    assert refusal.retry_after_us == 10 * US  # one decision call: one server instant
    assert refusal.bucket == bucket and refusal.remaining == 0


async def test_sequential_refusal_retry_after_counts_down(store: Store):
    bucket = sub_bucket(interval_us=10 * US, burst=1)
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None
    refusal = (await store.decide(send(buckets=(bucket,)))).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT
    assert 8 * US < refusal.retry_after_us <= 10 * US


async def test_bucket_refills_after_its_interval(store: Store):
    bucket = sub_bucket(interval_us=150 * MS, burst=1)
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None
    refusal = (await store.decide(send(buckets=(bucket,)))).refusal
    assert refusal is not None and 0 < refusal.retry_after_us <= 150 * MS
    await asyncio.sleep(refusal.retry_after_us / US + 0.02)
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None


@pytest.mark.parametrize("max_wait_us", [0, 200 * MS], ids=["refuse", "shape"])
async def test_sustained_offer_never_passes_rps_in_any_one_second_window(
    store: Store, max_wait_us: int
):
    rps, burst = 20, 2
    bucket = sub_bucket(interval_us=US // (rps - burst), burst=burst)
    c = send(buckets=(bucket,), max_wait_us=max_wait_us)
    slots: list[tuple[float, float]] = []  # bounds of each booked instant (call start, end)
    start = time.monotonic()
    while time.monotonic() - start < 1.3:
        t0 = time.monotonic()
        d = await store.decide(c)
        if d.refusal is None:
            assert d.wait_us <= max_wait_us
            slots.append((t0 + d.wait_us / US, time.monotonic() + d.wait_us / US))
        await asyncio.sleep(0.003)
    # Slots i..j surely fall in one window shorter than 1 s when end_j - start_i < 1 s.
    for i, (lo, _) in enumerate(slots):
        inside = [j for j in range(i, len(slots)) if slots[j][1] - lo < 1.0]
        assert len(inside) <= rps, f"{len(inside)} slots within 1 s from #{i}"
    assert len(slots) >= burst + 12  # the limiter lets the rate through, not less


async def test_every_bucket_key_expires_when_its_bucket_is_full_again(store: Store):
    eu, sub, egress = end_user_bucket(), sub_bucket(interval_us=2 * US), egress_bucket()
    d = await store.decide(send(msg(otp=True), buckets=(eu, sub, egress)))
    assert d.refusal is None
    otp_key = keys.otp_bucket("acme", "+6587654321")
    for key, refill_ms in ((eu.key, 6000), (sub.key, 2000), (egress.key, 10000),
                           (otp_key, 60000)):  # fmt: skip
        ttl = await pttl(store, key)
        assert refill_ms - 1500 < ttl <= refill_ms, key


async def test_tat_is_stored_with_every_microsecond_digit(store: Store):
    bucket = sub_bucket()
    await store.decide(send(buckets=(bucket,)))
    if isinstance(store, RedisStore):
        raw = (await store.client.get(bucket.key)).decode()
        assert re.fullmatch(r"\d{16}", raw), raw
        assert abs(int(raw) - time.time() * US - 10 * US) < 2 * US


async def test_refusal_by_one_bucket_consumes_no_other(store: Store):
    eu, sub, egress = end_user_bucket(burst=3), sub_bucket(burst=3), egress_bucket(burst=1)
    assert (await store.decide(send(buckets=(egress,)))).refusal is None
    d = await store.decide(send(msg(otp=True), buckets=(eu, sub, egress)))
    assert d.refusal is not None and d.refusal.rule is Rule.EGRESS_IP
    fills = await store.bucket_fill([eu, sub, egress])
    assert [f.remaining for f in fills] == [3, 3, 0]
    assert [f.reset_us == 0 for f in fills] == [True, True, False]
    assert await pttl(store, keys.otp_bucket("acme", "+6587654321")) == -2
    assert await pttl(store, sub.key) == -2
    # the OTP token is still there: the same send without the egress bucket passes
    assert (await store.decide(send(msg(otp=True), buckets=(eu, sub)))).refusal is None


async def test_batch_with_every_message_dropped_consumes_nothing(store: Store):
    await store.optout_add("acme", "+6511111111")
    await store.optout_add("acme", "+6522222222")
    eu, sub, egress = end_user_bucket(), sub_bucket(), egress_bucket()
    check = send(msg("+6511111111", otp=True), msg("+6522222222", otp=True),
                 buckets=(eu, sub, egress), batch=True)  # fmt: skip
    d = await store.decide(check)
    assert d.refusal is None
    assert d.dropped == ((0, Rule.OPTED_OUT), (1, Rule.OPTED_OUT))
    assert d.remaining == ()
    for key in (eu.key, sub.key, egress.key, keys.otp_bucket("acme", "+6511111111")):
        assert await pttl(store, key) == -2


async def test_end_user_ip_is_never_shaped(store: Store):
    eu = end_user_bucket(interval_us=30 * US, burst=2)
    c = send(buckets=(eu,), max_wait_us=120 * US)
    assert [(await store.decide(c)).refusal for _ in range(2)] == [None, None]
    refusal = (await store.decide(c)).refusal
    assert refusal is not None and refusal.rule is Rule.END_USER_IP
    assert 28 * US < refusal.retry_after_us <= 30 * US and refusal.bucket == eu
    other = end_user_bucket(interval_us=30 * US, burst=2, ip="203.0.113.9")
    assert (await store.decide(send(buckets=(other,)))).refusal is None


async def test_each_subaccount_has_its_own_limit(store: Store):
    small = sub_bucket(burst=2, sub="acme_marketing")
    large = sub_bucket(burst=4, sub="acme_main")
    small_ds = await store.decide_many([send(buckets=(small,))] * 6)
    large_ds = await store.decide_many([send(buckets=(large,))] * 6)
    assert sum(d.refusal is None for d in small_ds) == 2
    assert sum(d.refusal is None for d in large_ds) == 4


async def test_shaping_books_slots_one_interval_apart_until_max_wait(store: Store):
    t = 100 * MS
    bucket = sub_bucket(interval_us=t, burst=1)
    ds = await store.decide_many([send(buckets=(bucket,), max_wait_us=250 * MS)] * 4)
    assert [d.wait_us for d in ds[:3]] == [0, t, 2 * t]
    assert [d.refusal for d in ds[:3]] == [None] * 3
    refusal = ds[3].refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT
    assert refusal.retry_after_us == 3 * t - 250 * MS  # when the slot comes within max_wait


async def test_shaping_across_calls_waits_about_one_interval_more_each_time(store: Store):
    t = 300 * MS
    bucket = egress_bucket(interval_us=t, burst=1)
    waits = [(await store.decide(send(buckets=(bucket,), max_wait_us=2 * US))).wait_us
             for _ in range(3)]  # fmt: skip
    assert waits[0] == 0
    for before, after in itertools.pairwise(waits):
        assert t - 200 * MS < after - before <= t


async def test_a_request_books_all_its_buckets_at_one_instant(store: Store):
    sub, egress = sub_bucket(interval_us=US, burst=1), egress_bucket(10 * US, burst=3)
    first = await store.decide(send(buckets=(sub,)))
    both = await store.decide(send(buckets=(sub, egress), max_wait_us=2 * US))
    assert first.refusal is None and both.refusal is None and both.wait_us > 0
    # egress was booked at the subaccount's later slot: its TAT is that slot + T
    fill = (await store.bucket_fill([egress]))[0]
    assert 10 * US < fill.reset_us <= 11 * US


async def test_cooldown_refuses_or_shapes_as_subaccount(store: Store):
    sub = sub_bucket()
    await store.set_cooldown(COOLDOWN, 2 * US)
    refusal = (await store.decide(send(buckets=(sub, egress_bucket())))).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT and refusal.bucket == sub
    assert 1500 * MS < refusal.retry_after_us <= 2 * US
    d = await store.decide(send(buckets=(sub, egress_bucket()), max_wait_us=5 * US))
    assert d.refusal is None and 1500 * MS < d.wait_us <= 2 * US
    alone = (await store.decide(send(buckets=(egress_bucket(),)))).refusal
    assert alone is not None and alone.rule is Rule.SUBACCOUNT and alone.bucket is None


async def test_cooldown_is_never_shortened(store: Store):
    await store.set_cooldown(COOLDOWN, 5 * US)
    await store.set_cooldown(COOLDOWN, 100 * MS)
    assert 4000 < await pttl(store, COOLDOWN) <= 5000
    await store.set_cooldown(COOLDOWN, 8 * US)
    assert 7000 < await pttl(store, COOLDOWN) <= 8000


async def test_cooldown_ends(store: Store):
    await store.set_cooldown(COOLDOWN, 100 * MS)
    await asyncio.sleep(0.15)
    assert (await store.decide(send())).refusal is None
    assert await pttl(store, COOLDOWN) == -2


async def test_bucket_fill_reports_remaining_and_reset(store: Store):
    bucket = spec(Rule.SUBACCOUNT, keys.subaccount_bucket("acme", "x"), 10 * US, 4)
    assert [(f.remaining, f.reset_us) for f in await store.bucket_fill([bucket])] == [(4, 0)]
    await store.decide_many([send(buckets=(bucket,))] * 3)
    (fill,) = await store.bucket_fill([bucket])
    assert fill.rule is Rule.SUBACCOUNT and fill.key == bucket.key
    assert fill.remaining == 1 and 28 * US < fill.reset_us <= 30 * US


async def test_memory_store_purges_expired_keys(store: Store):
    if not isinstance(store, MemoryStore):
        return
    bucket = sub_bucket(interval_us=50 * MS, burst=1)
    await store.decide(send(buckets=(bucket,)))
    assert await pttl(store, bucket.key) > 0
    await asyncio.sleep(0.08)
    assert await pttl(store, bucket.key) == -2
    assert (await store.bucket_fill([bucket]))[0].remaining == 1


async def test_a_held_bucket_admits_only_after_the_hold(store: Store):
    bucket = sub_bucket(interval_us=100 * MS, burst=2)
    await store.hold_buckets([(bucket.key, 1 * US)])
    [d] = await store.decide_many([send(buckets=(bucket,))])
    assert d.refusal is not None and d.refusal.rule is Rule.SUBACCOUNT
    # held until now + 1 s, so the bucket is empty for the next 1 s - (burst - 1) x T
    assert 850 * MS <= d.refusal.retry_after_us <= 900 * MS
    assert 0 < await pttl(store, bucket.key) <= 1000


async def test_a_hold_never_shortens_a_later_booking(store: Store):
    bucket = sub_bucket(interval_us=1 * US, burst=1)
    [d] = await store.decide_many([send(buckets=(bucket,))])
    assert d.refusal is None  # booked: the bucket is busy for the next second
    await store.hold_buckets([(bucket.key, 10 * MS)])
    [d] = await store.decide_many([send(buckets=(bucket,))])
    assert d.refusal is not None and d.refusal.retry_after_us > 900 * MS


async def test_spent_sends_take_their_slots_in_the_shared_bucket(store: Store):
    bucket = sub_bucket(interval_us=100 * MS, burst=3)
    await store.spend_buckets([(bucket.key, bucket.interval_us, 2)])
    [d] = await store.decide_many([send(buckets=(bucket,))])
    assert d.refusal is None  # 2 of the 3 were spent elsewhere: one left
    [d] = await store.decide_many([send(buckets=(bucket,))])
    assert d.refusal is not None and d.refusal.rule is Rule.SUBACCOUNT
    assert 50 * MS <= d.refusal.retry_after_us <= 100 * MS
    assert 0 < await pttl(store, bucket.key) <= 300


async def test_spending_adds_to_what_is_booked_even_past_the_burst(store: Store):
    bucket = sub_bucket(interval_us=10 * MS, burst=1)
    [d] = await store.decide_many([send(buckets=(bucket,))])
    assert d.refusal is None
    await store.spend_buckets([(bucket.key, bucket.interval_us, 50)])  # never refused
    [d] = await store.decide_many([send(buckets=(bucket,))])
    assert d.refusal is not None and d.refusal.retry_after_us > 480 * MS
