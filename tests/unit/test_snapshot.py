"""The compliance snapshot: compact lookups, the overlay of this process's changes, loading
from Redis (fakeredis for the semantics, a real redis-server for a million opt-outs), and
the Decider's local fallback deciding on it."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import orjson
import pytest
import redis
from redis.asyncio import Redis

from gateway.config import AccountConfig, Config, SubaccountConfig, UpstreamConfig
from gateway.policy.decider import Decider, StoreUnavailable
from gateway.store import keys, refresh, tail
from gateway.store.base import (
    ConsentRecord,
    MessageCheck,
    OtpSpec,
    Rule,
    SendCheck,
    TemplateRecord,
)
from gateway.store.redis import RedisStore
from gateway.store.snapshot import Compliance, IndexBuilder, SnapshotStore, number
from tests.support.redisproc import RedisServer

A = "acme"
OUT = "+6591234567"
IN = "+6591234568"
STAMP = "2025-01-31T09:30:00Z"
OTP = OtpSpec(60_000_000, 1, 1, 60)


def fake() -> RedisStore:
    return RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))


def send(*messages: MessageCheck, opt_in: str = "enforce", account: str = A) -> SendCheck:
    return SendCheck(account, messages, (), OTP, keys.cooldown(account, "s"), opt_in=opt_in)


def tpl(msisdn: str, template: str) -> MessageCheck:
    return MessageCheck(msisdn, template)


async def loaded(store: RedisStore, accounts: tuple[str, ...] = (A,)) -> Compliance:
    compliance = Compliance()
    await refresh.reload(compliance, store.client, accounts)
    return compliance


async def seed(store: RedisStore) -> None:
    await store.optout_add(A, OUT)
    await store.optout_add(A, "not-a-number")
    await store.consent_put(A, ConsentRecord(IN, "form", ("MARKETING",), STAMP))
    await store.consent_put(A, ConsentRecord(OUT, "form", ("UTILITY", "MARKETING"), STAMP))
    for name, status, category in (("promo", "APPROVED", "MARKETING"),
                                   ("paused", "PAUSED", "MARKETING"),
                                   ("bill", "APPROVED", "utility")):  # fmt: skip
        await store.template_put(A, TemplateRecord(name, "en", status, category, None, STAMP))


class DownStore:
    """A shared store that is down: every call fails as a dropped connection does."""

    kind = "redis"

    def __getattr__(self, name: str) -> Any:
        async def fail(*_: Any, **__: Any) -> Any:
            raise ConnectionError("redis went away")

        return fail


# --- the compact index -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("+6591234567", 6591234567), (b"+14155550100", 14155550100), ("+0123", None),
     ("6591234567", None), ("+65 9123", None), ("+", None), ("+1" + "2" * 19, None),
     ("+\uff16\uff15", None), (b"+12a", None)],
)  # fmt: skip
def test_number_is_the_digits_of_an_e164_number_and_nothing_else(
    text: str | bytes, expected: int | None
) -> None:
    assert number(text) == expected


@pytest.mark.parametrize("expected", [0, 1, 300, 5000])
async def test_index_finds_exactly_what_was_added_even_when_scan_repeats_some(
    expected: int,
) -> None:
    added = [10_000_000 + 7919 * i for i in range(3000)]
    builder = IndexBuilder(expected, with_values=True)
    for n in added + added[:50]:  # SCAN may return an element twice
        builder.add(n, n % 64)
    index = await builder.build()
    assert len(index) == len(added)
    assert index.values is not None and len(index.values) == len(added)
    for n in added:
        i = index.find(n)
        assert i >= 0 and index.values[i] == n % 64
    assert all(index.find(n + 1) == -1 for n in added[:500])
    assert index.find(0) == -1 and index.find(2**63) == -1


# --- lookups after a load --------------------------------------------------------------------


async def test_loaded_opt_outs_consent_and_templates_are_found() -> None:
    store = fake()
    await seed(store)
    c = await loaded(store)
    assert c.covers(A) and not c.covers("other")
    assert c.opted_out(A, OUT) and c.opted_out(A, "not-a-number")
    assert not c.opted_out(A, IN) and not c.opted_out("other", OUT)
    assert c.consent_categories(A, IN) == ("MARKETING",)
    assert set(c.consent_categories(A, OUT) or ()) == {"UTILITY", "MARKETING"}
    assert c.consent_categories(A, "+6500000000") is None
    assert c.template_state(A, "promo:en") == ("APPROVED", "MARKETING")
    assert c.template_state(A, "paused:en") == ("PAUSED", "MARKETING")
    assert c.template_state(A, "bill:en") == ("APPROVED", "UTILITY")
    assert c.template_state(A, "promo:fr") is None
    stats = c.stats()
    assert stats["loaded"] and stats["age_s"] < 5
    assert (stats["optouts"], stats["consents"], stats["templates"]) == (2, 2, 3)


async def test_consent_with_more_category_names_than_a_mask_holds_is_kept_whole() -> None:
    store = fake()
    for i in range(70):
        msisdn = f"+659000{i:04d}"
        await store.consent_put(A, ConsentRecord(msisdn, "f", (f"C{i}", "MARKETING"), STAMP))
    c = await loaded(store)
    for i in range(70):
        assert set(c.consent_categories(A, f"+659000{i:04d}") or ()) == {f"C{i}", "MARKETING"}


async def test_overlay_changes_beat_the_base() -> None:
    store = fake()
    await seed(store)
    c = await loaded(store)
    c.note_optout(A, OUT, False)
    c.note_optout(A, IN, True)
    c.note_consent(A, IN, None)
    c.note_consent(A, "+6500000000", ["utility"])
    c.note_template(A, "promo:en", ("PAUSED", "MARKETING"))
    c.merge_template(A, "bill:en", None, "MARKETING")
    c.merge_template(A, "new:en", None, "UTILITY")  # no status, unknown: nothing
    assert not c.opted_out(A, OUT) and c.opted_out(A, IN)
    assert c.consent_categories(A, IN) is None
    assert c.consent_categories(A, "+6500000000") == ("UTILITY",)
    assert c.template_state(A, "promo:en") == ("PAUSED", "MARKETING")
    assert c.template_state(A, "bill:en") == ("APPROVED", "MARKETING")
    assert c.template_state(A, "new:en") is None


async def test_a_change_made_during_a_load_survives_its_swap_and_older_ones_expire() -> None:
    store = fake()
    c = await loaded(store)
    c.note_optout(A, OUT, True)  # noted, but never written to Redis
    c.begin()
    c.note_optout(A, IN, True)  # a STOP while the load runs (its write may be missed)
    c.install(await refresh.load(store.client, [A]))
    assert c.opted_out(A, IN)  # the load began before it: kept
    assert not c.opted_out(A, OUT)  # the load began after it: Redis is the truth again
    await refresh.reload(c, store.client, [A])
    assert not c.opted_out(A, IN) and len(c.overlay) == 0


async def test_a_failed_load_keeps_the_last_snapshot_and_every_change() -> None:
    store = fake()
    await seed(store)
    c = await loaded(store)
    c.note_optout(A, IN, True)
    with pytest.raises(ConnectionError):
        await refresh.reload(c, DownStore(), [A])  # type: ignore[arg-type]
    assert c.opted_out(A, OUT) and c.opted_out(A, IN)
    assert c.stats()["loaded"] and c.stats()["changes"] == 1


def test_config_accounts_are_every_account_a_send_can_name() -> None:
    cfg = Config(
        upstream=UpstreamConfig(account_id="acme"),
        subaccounts={"s1": SubaccountConfig(account="beta"), "s2": SubaccountConfig()},
        accounts={"gamma": AccountConfig()},
    )
    assert refresh.config_accounts(cfg) == {"acme", "beta", "gamma"}


# --- the snapshot decides as Redis does ------------------------------------------------------


async def test_snapshot_store_refuses_what_the_lua_decision_refuses() -> None:
    store = fake()
    await seed(store)
    local = SnapshotStore(await loaded(store))
    checks = [send(MessageCheck(m, t), opt_in=o)
              for m in (OUT, IN, "+6500000000")
              for t in (None, "promo:en", "paused:en", "bill:en", "gone:en")
              for o in ("enforce", "warn", "off")]  # fmt: skip
    remote = await store.decide_many(checks)
    here = await local.decide_many(checks)
    outcome = [(d.refusal and (d.refusal.rule, d.refusal.status), d.unconsented) for d in here]
    assert outcome == [
        (d.refusal and (d.refusal.rule, d.refusal.status), d.unconsented) for d in remote
    ]
    assert {o[0][0] for o in outcome if o[0]} == {Rule.OPTED_OUT, Rule.NO_CONSENT, Rule.TEMPLATE}


async def test_fallback_decides_compliance_on_the_snapshot() -> None:
    store = fake()
    await seed(store)
    decider = Decider(DownStore(), on_failure="local", snapshot=await loaded(store))  # type: ignore[arg-type]
    out = await decider.decide(send(MessageCheck(OUT)))
    paused = await decider.decide(send(tpl(IN, "paused:en")))
    no_consent = await decider.decide(send(tpl(IN, "bill:en")))
    fine = await decider.decide(send(tpl(IN, "promo:en")))
    assert out.refusal is not None and out.refusal.rule is Rule.OPTED_OUT
    assert paused.refusal is not None and paused.refusal.status == "PAUSED"
    assert no_consent.refusal is not None and no_consent.refusal.rule is Rule.NO_CONSENT
    assert fine.refusal is None and decider.mode == "local"


@pytest.mark.parametrize("snapshot", ["never_loaded", "none"])
async def test_fallback_without_a_snapshot_refuses_sends_but_not_reads(snapshot: str) -> None:
    compliance = Compliance() if snapshot == "never_loaded" else None
    decider = Decider(DownStore(), on_failure="local", snapshot=compliance)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await decider.decide(send(MessageCheck(IN)))
    read = await decider.decide(send())
    assert read.refusal is None
    loaded_other = await loaded(fake(), ("other",))
    decider.snapshot = loaded_other  # an account the snapshot does not cover is no better
    with pytest.raises(StoreUnavailable):
        await decider.decide(send(MessageCheck(IN)))


# --- a million opt-outs from a real redis-server ---------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def fill(server: RedisServer, count: int, consents: int) -> list[str]:
    numbers = [f"+{6580000000 + 7 * i}" for i in range(count)]
    record = orjson.dumps({"source": "web form", "categories": ["MARKETING", "UTILITY"],
                           "timestamp": STAMP})  # fmt: skip
    with redis.Redis(port=server.port) as client:
        client.flushall()
        pipe = client.pipeline(transaction=False)
        for i in range(0, count, 1000):
            pipe.sadd(keys.optouts(A), *numbers[i : i + 1000])
        for i in range(0, consents, 1000):
            pipe.hset(keys.consents(A), mapping=dict.fromkeys(numbers[i : i + 1000], record))
        pipe.execute()
    return numbers


async def test_a_million_opt_outs_and_many_consents_load_small_without_holding_the_loop(
    redis_server: RedisServer,
) -> None:
    numbers = fill(redis_server, 1_000_000, consents=200_000)
    client = Redis.from_url(redis_server.url, socket_timeout=0.05)  # as the gateway's
    compliance = Compliance()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await refresh.reload(compliance, client, [A])
    took = time.perf_counter() - started
    done.set()
    await ticking
    await client.aclose()
    index = compliance.base.accounts[A].optouts if compliance.base else None
    assert index is not None and len(index) == 1_000_000
    size = sum(sys.getsizeof(a) for a in (index.keys, index.offsets))
    assert size < 20 * 2**20, size
    assert compliance.nbytes < 20 * 2**20
    assert max(gaps) < 0.05, (max(gaps), took)
    assert all(compliance.opted_out(A, n) for n in numbers[::997])
    assert not compliance.opted_out(A, "+6580000001")
    assert compliance.stats()["optouts"] == 1_000_000
    assert compliance.consent_categories(A, numbers[123_456]) == ("MARKETING", "UTILITY")
    assert compliance.consent_categories(A, numbers[234_567]) is None


# --- the change stream's tail ------------------------------------------------------------------


async def test_the_tail_brings_changes_made_anywhere_into_the_copy() -> None:
    """Changes written by another process after the full load reach this copy by the
    account's change stream, and so do OTPs booked in Redis."""
    store = fake()
    await seed(store)
    compliance = await loaded(store)
    compliance.want(frozenset({A}))
    follower = tail.Tail(compliance, store.client)
    await follower.start()
    await store.optout_add(A, IN)
    await store.optout_remove(A, OUT)
    await store.consent_delete(A, IN)
    await store.template_put(A, TemplateRecord("Promo", "en", "PAUSED", "marketing", None, STAMP))
    otp = MessageCheck("+6599990000", otp=True)
    assert (await store.decide(send(otp, opt_in="off"))).refusal is None
    assert await follower.step() == 5
    assert compliance.opted_out(A, IN) and not compliance.opted_out(A, OUT)
    assert compliance.consent_categories(A, IN) is None
    assert compliance.template_state(A, "promo:en") == ("PAUSED", "MARKETING")
    local = SnapshotStore(compliance)  # a local decision knows Redis's OTP
    refused = (await local.decide(send(otp, opt_in="off"))).refusal
    assert refused is not None and refused.rule is Rule.OTP
    assert await follower.step() == 0
    await store.close()


async def test_otp_sends_are_refused_on_the_fallback_unless_allowed() -> None:
    store = fake()
    await seed(store)
    compliance = await loaded(store)
    verify = send(MessageCheck("+6599990001", otp=True), opt_in="off")
    plain = send(MessageCheck("+6599990002"), opt_in="off")
    closed = Decider(DownStore(), snapshot=compliance)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await closed.decide(verify)
    assert (await closed.decide(plain)).refusal is None
    allowed = Decider(DownStore(), snapshot=compliance, otp_on_failure="local")  # type: ignore[arg-type]
    assert (await allowed.decide(verify)).refusal is None
    await closed.close()
    await allowed.close()
    await store.close()


def test_the_copy_of_redis_otp_bookings_stays_near_the_ones_still_alive() -> None:
    # 100 bookings a second for 1,000 s, each alive 60 s: about 6,000 alive at any time.
    # The copy may hold twice the live ones (it is swept when it has doubled), never all
    # 100,000 it was sent.
    now = [1_700_000_000_000_000]
    snap = Compliance(clock=lambda: now[0])
    largest = 0
    for i in range(100_000):
        now[0] += 10_000
        snap.note_otp(keys.otp_bucket(A, f"+6580{i:07d}"), now[0] + 60_000_000)
        largest = max(largest, len(snap.otp))
    assert largest <= 2 * 6_001
    alive = [k for k, tat in snap.otp.items() if tat > now[0]]
    assert len(alive) == 6_000  # and every booking still alive is kept
    assert snap.otp_tat(keys.otp_bucket(A, "+65800099999")) == now[0] + 60_000_000
