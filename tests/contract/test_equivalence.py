"""lua/decide.lua and the memory store's decision agree exactly on random scenarios.

Each scenario is decided in ONE decide_many call on fresh stores, so every store decides
at a single instant of its own clock and every number (waits, retry-afters, remaining
tokens) must match to the microsecond.
"""

from __future__ import annotations

import random
from dataclasses import replace

import fakeredis
import pytest
from redis.asyncio import Redis

from gateway.store import keys
from gateway.store.base import (
    BucketSpec,
    ConsentRecord,
    Decision,
    MessageCheck,
    OtpSpec,
    Rule,
    SendCheck,
    Store,
    TemplateRecord,
    WhatsAppCheck,
    WhatsAppMessage,
)
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.contract.conftest import MS, US
from tests.support.redisproc import RedisServer

NUMBERS = ["+6580000001", "+6580000002", "+6580000003", "+6580000004", "+12025550100"]
STATUSES = ["APPROVED", "APPROVED", "APPROVED", "PAUSED", "REJECTED"]
CATEGORIES = ["MARKETING", "UTILITY", "AUTHENTICATION", None]


def bucket(rng: random.Random, rule: Rule, key: str) -> BucketSpec:
    interval = rng.choice([50 * MS, 300 * MS, 2 * US, 30 * US])
    burst = rng.randint(1, 3)
    return BucketSpec(rule, key, interval, burst, burst, 1, rule is not Rule.END_USER_IP)


def scenario(seed: int) -> tuple[list[tuple[str, object]], list[SendCheck]]:
    rng = random.Random(seed)
    setup: list[tuple[str, object]] = []
    for n in NUMBERS:
        if rng.random() < 0.2:
            setup.append(("optout", n))
        if rng.random() < 0.6:
            cats = tuple(rng.sample(["MARKETING", "UTILITY", "AUTHENTICATION"], rng.randint(0, 2)))
            setup.append(("consent", ConsentRecord(n, "web", cats, "2024-01-01T00:00:00Z")))
    for name in ("t0", "t1", "t2", "t3"):
        setup.append(("template", TemplateRecord(name, "en", rng.choice(STATUSES),
                                                 rng.choice(CATEGORIES),
                                                 rng.choice([None, "GREEN", "RED"]),
                                                 "2024-01-01T00:00:00Z")))  # fmt: skip
    for n in NUMBERS:  # WhatsApp: open windows, marketing holds, suppressed numbers
        for key in (keys.wa_window, keys.wa_hold, keys.wa_suppressed):
            if rng.random() < 0.15:
                setup.append(("cool", key("a", n)))
    if rng.random() < 0.3:
        setup.append(("tier", rng.randint(0, 3)))
    pool = {
        Rule.END_USER_IP: [bucket(rng, Rule.END_USER_IP, keys.end_user_bucket(ip))
                           for ip in ("198.51.100.1", "198.51.100.2")],
        Rule.SUBACCOUNT: [bucket(rng, Rule.SUBACCOUNT, keys.subaccount_bucket("a", s))
                          for s in ("s1", "s2")],
        Rule.EGRESS_IP: [bucket(rng, Rule.EGRESS_IP, keys.egress_bucket("default"))],
    }  # fmt: skip
    otp = OtpSpec(rng.choice([1 * US, 60 * US]), rng.randint(1, 2), 1, 60)
    lanes = random.Random(seed + 100_000)  # docs/lanes.md fields, apart from the draws above
    checks = []
    for _ in range(rng.randint(5, 25)):
        messages = tuple(
            MessageCheck(rng.choice(NUMBERS),
                         rng.choice([None, None, "t0:en", "t1:en", "t2:en", "t3:en", "zz:en"]),
                         rng.random() < 0.3)
            for _ in range(rng.randint(1, 4))
        )  # fmt: skip
        buckets = tuple(rng.choice(pool[r]) for r in pool if rng.random() < 0.7)
        whatsapp = whatsapp_check(rng, messages) if rng.random() < 0.5 else None
        checks.append(SendCheck(
            account="a", messages=messages, buckets=buckets, otp=otp,
            cooldown_key=keys.cooldown("a", "s1"), batch=rng.random() < 0.5,
            opt_in=rng.choice(["enforce", "warn", "off"]),
            unknown_template_allowed=rng.random() < 0.5,
            max_wait_us=rng.choice([0, 100 * MS, 5 * US]),
            reserve_pm=lanes.choice([0, 200, 500]), lane=lanes.choice([0, 0, 1, 2]),
            deadline_us=lanes.choice([0, 0, 100 * MS, 3 * US]),
            priority_deadline_us=lanes.choice([0, 50 * MS]),
            shadow=frozenset(r for r in Rule if lanes.random() < 0.15),
            dry_run=lanes.random() < 0.2,
            whatsapp=whatsapp,
            claim=lanes.random() < 0.15,
            client=lanes.choice(["", "c1", "c2", "c3"]),  # fairness (docs/lanes.md)
        ))  # fmt: skip
    return setup, checks


def whatsapp_check(rng: random.Random, messages: tuple[MessageCheck, ...]) -> WhatsAppCheck:
    sender = rng.choice(["+6560000001", "+6560000002"])
    spec = BucketSpec(Rule.SENDER, keys.wa_sender("a", sender), rng.choice([50 * MS, 2 * US]),
                      rng.randint(1, 3), 3, 1, True)  # fmt: skip
    return WhatsAppCheck(
        sender=spec if rng.random() < 0.8 else None,
        pair_interval_us=rng.choice([300 * MS, 6 * US]), pair_burst=rng.randint(1, 3),
        tier_key=keys.wa_tier("a", "p"), tier=rng.choice([0, 2, 3, 5]),
        tier_override_key=keys.wa_tier_set("a", "p"), window_us=rng.choice([US, 86_400 * US]),
        us_refuse=rng.random() < 0.7, quality_refuse=rng.random() < 0.7,
        messages=tuple(
            WhatsAppMessage(keys.wa_pair("a", sender, m.msisdn), keys.wa_window("a", m.msisdn),
                            keys.wa_hold("a", m.msisdn), keys.wa_suppressed("a", m.msisdn))
            for m in messages
        ),
        sender_n=rng.choice([0, 0, 0, 2]),
    )  # fmt: skip


async def run(store: Store, seed: int) -> list[Decision]:
    setup, checks = scenario(seed)
    for kind, item in setup:
        if kind == "optout":
            assert isinstance(item, str)
            await store.optout_add("a", item)
        elif kind == "cool":
            assert isinstance(item, str)
            await store.set_cooldown(item, 3600 * US)
        elif kind == "tier":
            assert isinstance(item, int)
            await store.wa_tier_set(keys.wa_tier_set("a", "p"), item)
        elif kind == "consent":
            assert isinstance(item, ConsentRecord)
            await store.consent_put("a", item)
        else:
            assert isinstance(item, TemplateRecord)
            await store.template_put("a", item)
    return [held_to_seconds(d) for d in await store.decide_many(checks)]


def held_to_seconds(d: Decision) -> Decision:
    """A hold's retry-after in whole seconds (as the answer's Retry-After): holds are set
    before the decision call, so the store's clock has moved on by a few µs between."""
    r = d.refusal
    if r is None or r.rule is not Rule.SUPPRESSED:
        return d
    return replace(d, refusal=replace(r, retry_after_us=-(-r.retry_after_us // US)))


@pytest.mark.parametrize("seed", range(60))
async def test_lua_and_memory_decide_alike(seed: int, redis_server: RedisServer):
    expected = await run(MemoryStore(), seed)
    fake = RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    real = RedisStore(Redis.from_url(redis_server.url))
    await real.client.flushall()
    try:
        assert await run(fake, seed) == expected
        assert await run(real, seed) == expected
    finally:
        await fake.close()
        await real.close()
    assert expected  # a scenario has decisions (and, over the seeds, every kind of them)
