"""WhatsApp's own limits (docs/whatsapp.md): sender, pair and messaging-tier buckets, the
marketing rules; the same cases on every store."""

from __future__ import annotations

import pytest

from gateway.store import keys
from gateway.store.base import (
    BucketSpec,
    MessageCheck,
    Rule,
    SendCheck,
    Store,
    TemplateRecord,
    WhatsAppCheck,
    WhatsAppMessage,
)
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.contract.conftest import ACCOUNT, MS, US, send

SENDER = "+6560000001"
PORTFOLIO = "retail"
DAY = 86_400 * US


def sender_bucket(interval_us: int = US // 80, burst: int = 80, sender: str = SENDER
                  ) -> BucketSpec:  # fmt: skip
    return BucketSpec(Rule.SENDER, keys.wa_sender(ACCOUNT, sender), interval_us, burst,
                      burst, 1, shapeable=True)  # fmt: skip


def wa(*messages: MessageCheck, tier: int = 3, pair_interval_us: int = 6 * US,
       pair_burst: int = 2, sender: BucketSpec | None = None, us_refuse: bool = True,
       quality_refuse: bool = True) -> WhatsAppCheck:  # fmt: skip
    return WhatsAppCheck(
        sender=sender or sender_bucket(), pair_interval_us=pair_interval_us,
        pair_burst=pair_burst, tier_key=keys.wa_tier(ACCOUNT, PORTFOLIO), tier=tier,
        tier_override_key=keys.wa_tier_set(ACCOUNT, PORTFOLIO), window_us=DAY,
        us_refuse=us_refuse, quality_refuse=quality_refuse,
        messages=tuple(
            WhatsAppMessage(keys.wa_pair(ACCOUNT, SENDER, m.msisdn),
                            keys.wa_window(ACCOUNT, m.msisdn), keys.wa_hold(ACCOUNT, m.msisdn),
                            keys.wa_suppressed(ACCOUNT, m.msisdn))
            for m in messages
        ),
    )  # fmt: skip


def wsend(*numbers: str, template: str | None = None, batch: bool = False,
          max_wait_us: int = 0, **kw: object) -> SendCheck:  # fmt: skip
    messages = tuple(MessageCheck(n, template) for n in numbers)
    check = send(*messages, batch=batch, buckets=(), opt_in="off", unknown_ok=True,
                 max_wait_us=max_wait_us)  # fmt: skip
    from dataclasses import replace

    return replace(check, whatsapp=wa(*messages, **kw))  # type: ignore[arg-type]


def n(i: int) -> str:
    return f"+65900{i:05d}"


async def test_tier_admits_unique_recipients_up_to_the_tier(store: Store):
    ds = await store.decide_many([wsend(n(i)) for i in range(4)])
    assert [d.refusal for d in ds[:3]] == [None] * 3
    refusal = ds[3].refusal
    assert refusal is not None and refusal.rule is Rule.MESSAGING_TIER
    assert DAY - 5 * MS <= refusal.retry_after_us <= DAY  # the oldest leaves the window
    # a recipient already counted is admitted and refreshed
    assert (await store.decide(wsend(n(0), pair_burst=5))).refusal is None
    assert await store.wa_tier_count(keys.wa_tier(ACCOUNT, PORTFOLIO), DAY) == 3


async def test_a_batch_drops_the_messages_over_the_tier(store: Store):
    d = await store.decide(wsend(*(n(i) for i in range(5)), batch=True))
    assert d.refusal is None
    assert d.dropped == ((3, Rule.MESSAGING_TIER), (4, Rule.MESSAGING_TIER))


async def test_recipient_inside_its_window_is_not_counted(store: Store):
    await store.set_cooldown(keys.wa_window(ACCOUNT, n(9)), DAY)
    ds = await store.decide_many([wsend(n(9)), *(wsend(n(i)) for i in range(3))])
    assert [d.refusal for d in ds] == [None] * 4
    assert await store.wa_tier_count(keys.wa_tier(ACCOUNT, PORTFOLIO), DAY) == 3


async def test_tier_set_from_webhook_applies_at_once(store: Store):
    await store.wa_tier_set(keys.wa_tier_set(ACCOUNT, PORTFOLIO), 1)
    ds = await store.decide_many([wsend(n(0)), wsend(n(1))])
    assert ds[0].refusal is None
    assert ds[1].refusal is not None and ds[1].refusal.rule is Rule.MESSAGING_TIER


async def test_removed_recipient_frees_its_place(store: Store):
    await store.decide_many([wsend(n(i)) for i in range(3)])
    await store.wa_tier_remove(keys.wa_tier(ACCOUNT, PORTFOLIO), n(1))
    assert (await store.decide(wsend(n(5)))).refusal is None


async def test_pair_burst_then_one_per_interval(store: Store):
    ds = await store.decide_many([wsend(n(1))] * 3)
    assert [d.refusal for d in ds[:2]] == [None, None]
    refusal = ds[2].refusal
    assert refusal is not None and refusal.rule is Rule.PAIR
    assert refusal.retry_after_us == 6 * US


async def test_sender_rate_shapes_then_refuses(store: Store):
    bucket = sender_bucket(interval_us=100 * MS, burst=2)
    c = wsend(n(1), sender=bucket, tier=0, pair_burst=10, max_wait_us=150 * MS)
    ds = await store.decide_many([c] * 5)
    assert [d.wait_us for d in ds[:3]] == [0, 0, 100 * MS]
    refusal = ds[4].refusal
    assert refusal is not None and refusal.rule is Rule.SENDER and refusal.bucket == bucket
    assert refusal.retry_after_us == 50 * MS


async def test_a_batch_books_one_sender_token_per_message(store: Store):
    bucket = sender_bucket(interval_us=100 * MS, burst=3)
    d = await store.decide(wsend(*(n(i) for i in range(3)), sender=bucket, tier=0, batch=True))
    assert d.refusal is None
    after = await store.decide(wsend(n(5), sender=bucket, tier=0))
    assert after.refusal is not None and after.refusal.rule is Rule.SENDER


async def test_marketing_rules(store: Store):
    for name, quality in (("promo", "RED"), ("promo2", "GREEN")):
        await store.template_put(
            ACCOUNT,
            TemplateRecord(name, "en", "APPROVED", "MARKETING", quality, "2026-01-01T00:00:00Z"),
        )
    us = await store.decide(wsend("+12025550100", template="promo2:en"))
    assert us.refusal is not None and us.refusal.rule is Rule.MARKETING_REGION
    allowed = await store.decide(wsend("+12025550100", template="promo2:en", us_refuse=False))
    assert allowed.refusal is None
    red = await store.decide(wsend(n(1), template="promo:en"))
    assert red.refusal is not None and red.refusal.rule is Rule.TEMPLATE_QUALITY
    await store.set_cooldown(keys.wa_hold(ACCOUNT, n(2)), 3600 * US)
    held = await store.decide(wsend(n(2), template="promo2:en"))
    assert held.refusal is not None and held.refusal.rule is Rule.SUPPRESSED
    assert 3599 * US < held.refusal.retry_after_us <= 3600 * US
    assert (await store.decide(wsend(n(2)))).refusal is None  # not marketing: not held


async def test_undeliverable_number_is_suppressed(store: Store):
    await store.set_cooldown(keys.wa_suppressed(ACCOUNT, n(3)), 60 * US)
    d = await store.decide(wsend(n(3)))
    assert d.refusal is not None and d.refusal.rule is Rule.SUPPRESSED


async def test_refusal_consumes_nothing(store: Store):
    await store.decide_many([wsend(n(i)) for i in range(3)])
    # a batch all of whose messages are dropped, and a send refused: nothing booked
    d = await store.decide(wsend(n(1), n(7), pair_burst=1))
    assert d.refusal is not None and d.refusal.rule is Rule.PAIR
    assert (await store.decide(wsend(n(2), pair_burst=2))).refusal is None


@pytest.mark.parametrize("kind", ["memory"])
async def test_a_send_without_whatsapp_touches_no_whatsapp_key(kind: str):
    store = MemoryStore()
    await store.decide(send())
    assert not vars(store).get("_wa_state")
    assert isinstance(store, MemoryStore) and not isinstance(store, RedisStore)


async def test_a_batch_waits_until_the_sender_takes_all_its_messages(store: Store):
    bucket = sender_bucket(interval_us=100 * MS, burst=2)
    first = wsend(n(8), n(9), sender=bucket, tier=0, batch=True)
    c = wsend(
        *(n(i) for i in range(4)),
        sender=bucket,
        tier=0,
        batch=True,
        max_wait_us=300 * MS,
        pair_burst=10,
    )
    ds = await store.decide_many([first, c, c])
    assert ds[0].refusal is None and ds[0].wait_us == 0
    assert ds[1].refusal is None and ds[1].wait_us == 200 * MS  # once the 2 before are out
    refusal = ds[2].refusal  # the bucket is busy until 600 ms
    assert refusal is not None and refusal.rule is Rule.SENDER


async def test_a_batch_over_a_chunk_keeps_the_tier_exact(store: Store):
    big = sender_bucket(interval_us=1, burst=10_000)
    c = wsend(*(n(i) for i in range(1500)), sender=big, tier=1200, batch=True)
    d = await store.decide(c)
    assert d.refusal is None
    assert len(d.dropped) == 300 and {rule for _, rule in d.dropped} == {Rule.MESSAGING_TIER}
    assert [i for i, _ in d.dropped] == list(range(1200, 1500))
    assert await store.wa_tier_count(keys.wa_tier(ACCOUNT, PORTFOLIO), DAY) == 1200


# --- with lanes, shadow rules and dry runs (docs/lanes.md, docs/whatsapp.md)


async def test_rule_codes_put_the_whatsapp_rules_after_the_deadline():
    from gateway.store.codec import CODE

    assert [CODE[r] for r in (Rule.DEADLINE, Rule.SENDER, Rule.PAIR, Rule.MESSAGING_TIER,
                              Rule.MARKETING_REGION, Rule.SUPPRESSED,
                              Rule.TEMPLATE_QUALITY)] == list(range(8, 15))  # fmt: skip


async def test_a_dry_run_books_nothing_whatsapp(store: Store):
    from dataclasses import replace

    dry = replace(wsend(n(1), n(2), tier=2, batch=True), dry_run=True)
    for _ in range(3):  # the same answer each time: nothing was counted or booked
        d = await store.decide(dry)
        assert d.refusal is None and d.dropped == ()
    assert await store.wa_tier_count(keys.wa_tier(ACCOUNT, PORTFOLIO), DAY) == 0
    # the pair buckets (burst 2) and the tier (2) are whole for real sends
    ds = await store.decide_many([wsend(n(1)), wsend(n(1)), wsend(n(2))])
    assert [d.refusal for d in ds] == [None] * 3


async def test_shadowed_whatsapp_rules_only_count(store: Store):
    from dataclasses import replace

    shadow = frozenset({Rule.PAIR, Rule.MESSAGING_TIER, Rule.MARKETING_REGION})
    us = "+12025550100"
    first = await store.decide(replace(wsend(us, template="promo:en", tier=1), shadow=shadow))
    assert first.refusal is None  # MARKETING to +1: shadowed
    await store.template_put(ACCOUNT, TemplateRecord("promo", "en", "APPROVED", "MARKETING",
                                                     None, "2024-01-01T00:00:00Z"))  # fmt: skip
    d = await store.decide(replace(wsend(us, template="promo:en", tier=1), shadow=shadow))
    assert d.refusal is None and d.shadowed == (Rule.MARKETING_REGION,)
    # the tier (1) is full: a second recipient is shadowed, not counted
    d = await store.decide(replace(wsend(n(1), tier=1), shadow=shadow))
    assert d.refusal is None and d.shadowed == (Rule.MESSAGING_TIER,)
    assert await store.wa_tier_count(keys.wa_tier(ACCOUNT, PORTFOLIO), DAY) == 1
    # the +1 pair (burst 2) is spent: shadowed, and books nothing more
    d = await store.decide(replace(wsend(us, tier=1), shadow=shadow))
    assert d.refusal is None and d.shadowed == (Rule.PAIR,)
    d = await store.decide(wsend(us, tier=1))
    assert d.refusal is not None and d.refusal.rule is Rule.PAIR
