"""What only a real Redis Cluster (and Sentinel) can show: the decision split by slot keeps
all-or-nothing and every bucket's rate, one script call per slot per step, and decisions
come back after a primary fails over (errors in between are store failures, which the
Decider handles per `redis.on_failure`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import RedisCluster

from gateway.config import RedisConfig
from gateway.policy.decider import is_store_failure
from gateway.store import keys
from gateway.store.base import Decision, Rule, SendCheck, Store
from gateway.store.cluster import MAX_PASSES, NodeChannels, SlotSplit, slot_of
from gateway.store.connect import redis_store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.scripts import script
from tests.contract.conftest import (
    ACCOUNT,
    COOLDOWN,
    MS,
    US,
    cluster_store,
    egress_bucket,
    end_user_bucket,
    msg,
    send,
    spec,
    sub_bucket,
)
from tests.contract.test_equivalence import run
from tests.support.clusterproc import RedisCluster as ClusterProcess
from tests.support.sentinelproc import SentinelSetup

pytestmark = pytest.mark.slow

X, Y = "+6587654321", "+6591234567"


@pytest.fixture
async def cluster(redis_cluster: ClusterProcess) -> AsyncIterator[RedisStore]:
    store = await cluster_store(redis_cluster)
    yield store
    await store.close()


def split_of(store: RedisStore) -> SlotSplit:
    assert store._split is not None  # a RedisCluster client takes the split path
    return store._split


async def key_state(store: RedisStore, key: str) -> tuple[int | None, int]:
    """(TAT or None, when the key expires relative to its TAT in ms: 0 = at its TAT)."""
    raw = await store.client.get(key)
    if raw is None:
        return None, 0
    seconds, micros = await store.client.time()
    now = int(seconds) * US + int(micros)
    expires = now + int(await store.client.pttl(key)) * 1000
    return int(raw), round((expires - int(raw)) / 1000)


async def test_a_refusal_on_the_egress_slot_refunds_the_account_slot_exactly(
    cluster: RedisStore, redis_cluster: ClusterProcess, monkeypatch: pytest.MonkeyPatch
):
    sub, egress = sub_bucket(interval_us=10 * US, burst=3), egress_bucket(10 * US, burst=1)
    assert slot_of(sub.key) != slot_of(egress.key)
    assert (await cluster.decide(send(msg(Y, otp=True), buckets=(sub,)))).refusal is None
    account_keys = [sub.key, keys.otp_bucket(ACCOUNT, X), keys.otp_bucket(ACCOUNT, Y)]
    before = [await key_state(cluster, k) for k in account_keys]

    # another gateway takes the egress slot between this one's peek and its confirm
    rival = RedisStore(RedisCluster.from_url(redis_cluster.url))
    split = split_of(cluster)
    real_peek, real_refund = split._peek_slot, split._refund_slot
    refunds: list[Any] = []

    async def peek_then_rival_books(kinds: dict[str, str]) -> tuple[int, list[int]]:
        found = await real_peek(kinds)
        if egress.key in kinds and not refunds:
            rival_send = send(buckets=(egress,), account="rival")
            assert (await rival.decide(rival_send)).refusal is None
        return found

    async def counted_refund(undo: list[tuple[str, int, int]]) -> None:
        refunds.append(undo)
        await real_refund(undo)

    monkeypatch.setattr(split, "_peek_slot", peek_then_rival_books)
    monkeypatch.setattr(split, "_refund_slot", counted_refund)
    try:
        d = await cluster.decide(send(msg(X, otp=True), buckets=(sub, egress)))
    finally:
        await rival.close()
    assert d.refusal is not None and d.refusal.rule is Rule.EGRESS_IP
    assert [k for k, _, _ in refunds[0]] == [keys.otp_bucket(ACCOUNT, X), sub.key]  # it booked
    after = [await key_state(cluster, k) for k in account_keys]
    assert [tat for tat, _ in after] == [tat for tat, _ in before]  # every TAT as it was
    assert after[1] == (None, 0)  # X's OTP bucket was never there
    for (_, was), (_, now) in zip(before, after, strict=True):
        assert abs(was - now) <= 2  # each key still expires when its bucket is full


async def test_a_refund_leaves_a_bucket_a_later_booking_moved(
    cluster: RedisStore, redis_cluster: ClusterProcess, monkeypatch: pytest.MonkeyPatch
):
    t = 10 * US
    sub, egress = sub_bucket(interval_us=t, burst=3), egress_bucket(t, burst=1)
    rival = RedisStore(RedisCluster.from_url(redis_cluster.url))
    split = split_of(cluster)
    real_confirm = split._confirm_slot
    moved: list[bool] = []

    async def rival_books_both_first(entries: Any, journals: Any) -> None:
        if not moved:  # after this gateway booked the subaccount, before its confirm
            moved.append(True)
            assert (await rival.decide(send(buckets=(sub, egress)))).refusal is None
        await real_confirm(entries, journals)

    monkeypatch.setattr(split, "_confirm_slot", rival_books_both_first)
    try:
        d = await cluster.decide(send(buckets=(sub, egress)))
    finally:
        await rival.close()
    assert d.refusal is not None and d.refusal.rule is Rule.EGRESS_IP
    # the rival booked on top of this request's slot: that slot stays spent (2 of 3 used)
    fill = (await cluster.bucket_fill([sub]))[0]
    assert fill.remaining == 1 and 2 * t - US < fill.reset_us <= 2 * t


async def test_cross_slot_bookings_keep_every_bucket_within_its_rate_in_any_second(
    redis_cluster: ClusterProcess,
):
    """Three gateways, two accounts (two slots) sharing one egress IP (a third slot) that
    binds: confirms race, refunds happen, and still no bucket passes its rate."""
    rps, burst, egress_rps = 12, 2, 15
    subs = [spec(Rule.SUBACCOUNT, keys.subaccount_bucket(a, "s"), US // (rps - burst), burst)
            for a in ("a1", "a2")]  # fmt: skip
    egress = spec(Rule.EGRESS_IP, keys.egress_bucket("shared"), US // (egress_rps - burst), burst)
    assert len({slot_of(b.key) for b in (*subs, egress)}) == 3
    first = await cluster_store(redis_cluster)
    stores = [first, *(RedisStore(RedisCluster.from_url(redis_cluster.url)) for _ in range(2))]
    booked: dict[str, list[tuple[float, float]]] = {b.key: [] for b in (*subs, egress)}

    async def gateway(store: RedisStore, n: int) -> None:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            sub = subs[n % 2]
            check = send(msg(), buckets=(sub, egress), account=sub.key.split("{")[1][:2],
                         cooldown_key="", max_wait_us=300_000)  # fmt: skip
            t0 = time.monotonic()
            d = await store.decide(check)
            t1 = time.monotonic()
            if d.refusal is None:
                for key in (sub.key, egress.key):
                    booked[key].append((t0 + d.wait_us / US, t1 + d.wait_us / US))
            n += 1
            await asyncio.sleep(0.004)

    try:
        await asyncio.gather(*(gateway(s, i) for i, s in enumerate(stores)))
    finally:
        for s in stores:
            await s.close()
    for key, limit in ((subs[0].key, rps), (subs[1].key, rps), (egress.key, egress_rps)):
        slots = sorted(booked[key])
        for i, (lo, _) in enumerate(slots):  # slots i..j surely within 1 s: at most the rate
            inside = [j for j in range(i, len(slots)) if slots[j][1] - lo < 1.0]
            assert len(inside) <= limit, f"{key}: {len(inside)} slots within 1 s from #{i}"
    # the binding egress bucket is used, not starved by refunds: 2 s at 13/s + burst
    assert len(booked[egress.key]) >= 0.8 * (2 * (egress_rps - burst) + burst)


async def test_a_request_that_keeps_losing_the_race_is_refused_after_three_passes(
    cluster: RedisStore, redis_cluster: ClusterProcess, monkeypatch: pytest.MonkeyPatch
):
    sub, egress = sub_bucket(interval_us=10 * US, burst=3), egress_bucket(US, burst=1)
    rival = RedisStore(RedisCluster.from_url(redis_cluster.url))
    split = split_of(cluster)
    real_peek = split._peek_slot
    passes: list[int] = []

    async def rival_books_after_every_peek(kinds: dict[str, str]) -> tuple[int, list[int]]:
        found = await real_peek(kinds)
        passes.append(1)
        rival_send = send(buckets=(egress,), account="rival", max_wait_us=60 * US)
        assert (await rival.decide(rival_send)).refusal is None
        return found

    monkeypatch.setattr(split, "_peek_slot", rival_books_after_every_peek)
    try:
        d = await cluster.decide(send(buckets=(sub, egress), max_wait_us=30 * US))
    finally:
        await rival.close()
    assert len(passes) == MAX_PASSES
    assert d.refusal is not None and d.refusal.rule is Rule.EGRESS_IP
    assert d.refusal.bucket == egress and d.refusal.retry_after_us == US  # one slot later
    assert await cluster.client.get(sub.key) is None  # each pass's booking was undone


async def test_a_cooldown_under_another_slot_than_the_account_still_holds(cluster: RedisStore):
    other = "globex"  # the cool-down key is acme's, the send is globex's: two slots
    assert slot_of(keys.optouts(other)) != slot_of(COOLDOWN)
    await cluster.set_cooldown(COOLDOWN, 2 * US)
    check = send(buckets=(egress_bucket(),), account=other, cooldown_key=COOLDOWN)
    refusal = (await cluster.decide(check)).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT and refusal.bucket is None
    assert 1500 * MS < refusal.retry_after_us <= 2 * US
    shaped = await cluster.decide(replace(check, max_wait_us=5 * US))
    assert shaped.refusal is None and 1500 * MS < shaped.wait_us <= 2 * US


async def test_accounts_sharing_the_egress_slot_decide_in_turn_like_one_script(
    cluster: RedisStore, monkeypatch: pytest.MonkeyPatch
):
    egress = egress_bucket(interval_us=10 * US, burst=3)
    subs = {a: spec(Rule.SUBACCOUNT, keys.subaccount_bucket(a, "s"), 10 * US, 2)
            for a in ("a1", "a2")}  # fmt: skip

    def batch() -> list[SendCheck]:
        return [send(buckets=(subs[a], egress), account=a, cooldown_key=keys.cooldown(a, "s"))
                for a in ("a1", "a1", "a2", "a2")]  # fmt: skip

    refunds: list[Any] = []
    monkeypatch.setattr(split_of(cluster), "_refund_slot", refunds.append)
    got = await cluster.decide_many(batch())
    expected = await MemoryStore().decide_many(batch())

    def shape(d: Decision) -> tuple[Any, ...]:
        return (d.refusal and d.refusal.rule, d.wait_us, d.remaining, d.dropped)

    assert [shape(d) for d in got] == [shape(d) for d in expected]
    assert [d.refusal is None for d in got] == [True, True, True, False]
    assert refunds == []  # decided right the first time: nothing to undo


async def test_one_script_call_per_slot_per_step(
    cluster: RedisStore, monkeypatch: pytest.MonkeyPatch
):
    ips = ("198.51.100.1", "198.51.100.2", "198.51.100.3")
    checks = [send(msg(f"+658000000{i % 7}"),
                   buckets=(end_user_bucket(ip=ips[i % 3]), sub_bucket(burst=30),
                            egress_bucket(burst=30)))
              for i in range(24)]  # fmt: skip
    calls: Counter[tuple[str, int]] = Counter()
    real = NodeChannels.execute_command  # every script call goes through it
    names = {script(n).sha: n for n in ("decide", "peek", "confirm", "refund")}
    # the steady state: scripts loaded on every primary (as after any earlier decision).
    # Cold, each first call meets NOSCRIPT and is repeated after the load, which counted
    # twice whenever this test ran before any other on a fresh cluster (alone, -k, --lf)
    for n in names.values():
        await cluster.client.script_load(script(n).source)

    async def counting(self: NodeChannels, *args: Any) -> Any:
        if args[0] == "EVALSHA":
            calls[(names[args[1]], slot_of(args[3]))] += 1
        return await real(self, *args)

    monkeypatch.setattr(NodeChannels, "execute_command", counting)
    ds = await cluster.decide_many(checks)
    assert all(d.refusal is None for d in ds)
    away = {slot_of(end_user_bucket(ip=ip).key) for ip in ips} | {slot_of(egress_bucket().key)}
    home = slot_of(keys.optouts(ACCOUNT))
    assert len(away) == 4 and home not in away
    assert calls == Counter({("decide", home): 1, **{("peek", s): 1 for s in away},
                             **{("confirm", s): 1 for s in away}})  # fmt: skip


async def test_a_shadowed_bucket_on_another_slot_is_booked_without_delaying_the_send(
    cluster: RedisStore,
):
    """docs/lanes.md: a shadowed bucket that would not refuse is booked at the slot of the
    enforced ones, even before its own earliest slot; the confirm step on its slot must not
    refuse it (it did: three passes, then a refusal the single script never gives)."""
    egress = egress_bucket(interval_us=2 * US, burst=1)
    first = send(msg(X), buckets=(sub_bucket(), egress), max_wait_us=5 * US)
    second = replace(send(msg(Y), buckets=(sub_bucket(), egress), max_wait_us=5 * US),
                     shadow=frozenset({Rule.EGRESS_IP}))  # fmt: skip
    for store in (MemoryStore(), cluster):
        a, b = await store.decide_many([first, second])
        assert a.refusal is None and a.wait_us == 0
        assert b.refusal is None and b.wait_us == 0 and b.shadowed == ()
        assert dict(b.remaining)[Rule.EGRESS_IP] == 0
    tat, _ = await key_state(cluster, egress.key)
    assert tat is not None and tat - b.slot_us >= 3 * US  # booked twice (2 s each)


async def test_a_call_sent_to_the_wrong_node_is_redirected_through_the_client(
    cluster: RedisStore, monkeypatch: pytest.MonkeyPatch
):
    """A stale slot map (a resharding, a failover): the node answers MOVED and the call is
    made again through redis-py's cluster client, which follows it."""
    client = cluster.client
    assert isinstance(client, RedisCluster)
    await client.initialize()
    home = slot_of(keys.optouts(ACCOUNT))
    right = client.nodes_manager.get_node_from_slot(home)
    wrong = next(n for n in client.get_primaries() if n.name != right.name)
    manager = type(client.nodes_manager)
    real = manager.get_node_from_slot
    stale: list[str] = []

    def first_stale(self: Any, slot: int, *args: Any, **kwargs: Any) -> Any:
        if slot == home and not stale:
            stale.append(wrong.name)
            return wrong
        return real(self, slot, *args, **kwargs)

    monkeypatch.setattr(manager, "get_node_from_slot", first_stale)
    decision = await cluster.decide(send(msg(X), buckets=(sub_bucket(),)))
    assert stale == [wrong.name] and decision.refusal is None
    assert int(await client.get(sub_bucket().key) or 0) > 0  # booked on the right node


async def test_scripts_reload_on_every_node_after_script_flush(cluster: RedisStore):
    check = send(msg(X, otp=True), buckets=(end_user_bucket(), sub_bucket(), egress_bucket()))
    assert (await cluster.decide(check)).refusal is None
    await cluster.client.script_flush()  # on every primary
    assert await cluster.client.script_exists(script("confirm").sha) == [False]
    d = await cluster.decide(send(msg(Y), buckets=check.buckets))
    assert d.refusal is None and d.remaining == (
        (Rule.END_USER_IP, 8), (Rule.SUBACCOUNT, 3), (Rule.EGRESS_IP, 3))  # fmt: skip


@pytest.mark.parametrize("seed", range(40))
async def test_split_decisions_equal_the_single_script_to_the_microsecond(
    cluster: RedisStore, seed: int
):
    """test_equivalence's random scenarios (one account, end-user and egress buckets on
    other slots): the split decides exactly as memory (and so decide.lua) does."""
    assert await run(cluster, seed) == await run(MemoryStore(), seed)


# --- failover: each on its own servers, so the shared ones stay whole


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[ClusterProcess]:
    with ClusterProcess() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def own_sentinel() -> Iterator[SentinelSetup]:
    with SentinelSetup() as setup:
        yield setup


async def decide_through_a_failover(store: Store, kill: Any, check: SendCheck) -> list[str]:
    """Decide in a loop, kill the primary after 20 decisions, until 20 more come back.
    Returns what happened in order: "ok" or the failure's type name."""
    log: list[str] = []
    killed_at = 0.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(1.0):
                d = await store.decide(check)
            assert d.refusal is None, d
            log.append("ok")
        except Exception as exc:
            assert is_store_failure(exc), repr(exc)  # the Decider falls back on these
            log.append(type(exc).__name__)
        if not killed_at and log.count("ok") >= 20:
            kill()
            killed_at = time.monotonic()
            log.append("killed")
        if killed_at and log[-20:] == ["ok"] * 20:
            break
        await asyncio.sleep(0.02)
    return log


async def test_cluster_decisions_come_back_after_a_primary_fails_over(own_cluster):
    store = redis_store(RedisConfig(mode="cluster", url=own_cluster.url, timeout_ms=200))
    sub = sub_bucket(interval_us=US // 1000, burst=100)
    check = send(msg(X), buckets=(sub, egress_bucket(US // 1000, burst=100)))
    try:
        log = await decide_through_a_failover(
            store, lambda: own_cluster.kill_primary(sub.key), check
        )
    finally:
        await store.close()
    after = log[log.index("killed") + 1 :]
    assert after[-20:] == ["ok"] * 20, log  # decisions keep coming after the promotion
    assert set(after) - {"ok"}, log  # and the primary's death was seen in between


async def test_sentinel_decisions_come_back_after_the_primary_fails_over(own_sentinel):
    cfg = RedisConfig(mode="sentinel", sentinels=tuple(own_sentinel.sentinels),
                      service_name=own_sentinel.service_name, timeout_ms=200)  # fmt: skip
    store = redis_store(cfg)
    check = send(msg(X), buckets=(sub_bucket(US // 1000, 100), egress_bucket(US // 1000, 100)))
    try:
        log = await decide_through_a_failover(store, own_sentinel.kill_primary, check)
    finally:
        await store.close()
    after = log[log.index("killed") + 1 :]
    assert after[-20:] == ["ok"] * 20, log
    assert set(after) - {"ok"}, log


async def test_a_decision_given_up_on_leaves_nothing_booked_on_any_slot(cluster: RedisStore):
    """The caller stops waiting while the split is under way: what its calls booked, on the
    account's slot and the others', is undone (gateway/store/journal.py)."""
    t = 10 * US
    buckets = (end_user_bucket(), sub_bucket(interval_us=t, burst=5), egress_bucket(t, burst=5))
    split = split_of(cluster)
    real_confirm = split._confirm_slot

    async def slow_confirm(entries: Any, journals: Any) -> None:
        await real_confirm(entries, journals)
        await asyncio.sleep(1)  # booked on the other slots; the answer comes too late

    split._confirm_slot = slow_confirm  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await cluster.decide(send(msg(X, otp=True), buckets=buckets))
    split._confirm_slot = real_confirm  # type: ignore[method-assign]
    client = cluster.client
    watched = [b.key for b in buckets] + [keys.otp_bucket(ACCOUNT, X)]
    for _ in range(100):
        if not any([await client.exists(k) for k in watched]):
            break
        await asyncio.sleep(0.05)
    assert [k for k in watched if await client.exists(k)] == []
