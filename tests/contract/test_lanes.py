"""Lanes, deadlines, shadow rules and dry runs (docs/lanes.md): the same cases on every
store, memory twin and lua/decide.lua alike."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from redis.asyncio import Redis, RedisCluster

from gateway.policy import pacing
from gateway.store import keys
from gateway.store.base import (
    BULK,
    PRIORITY,
    ConsentRecord,
    Decision,
    MessageCheck,
    Rule,
    SendCheck,
    Store,
    TemplateRecord,
)
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.contract.conftest import ACCOUNT, MS, US, egress_bucket, msg, send, sub_bucket

X, Y = "+6587654321", "+6591234567"
NOW = "2024-05-01T10:00:00Z"


async def template(store: Store, name: str, category: str, status: str = "APPROVED") -> str:
    await store.template_put(ACCOUNT, TemplateRecord(name, "en", status, category, None, NOW))
    await store.consent_put(ACCOUNT, ConsentRecord(X, "web", (category,), NOW))
    return f"{name}:en"


# --- dry run


async def test_dry_run_decides_as_a_send_would_and_books_nothing(store: Store):
    bucket = sub_bucket(interval_us=10 * US, burst=1)
    dry = replace(send(buckets=(bucket,)), dry_run=True)
    first, second = await store.decide_many([dry, dry])
    assert first.refusal is None and second.refusal is None  # the first booked nothing
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None
    refusal = (await store.decide(dry)).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT


async def test_dry_run_in_a_micro_batch_leaves_the_next_request_alone(store: Store):
    bucket = sub_bucket(interval_us=10 * US, burst=1)
    dry = replace(send(msg(X, otp=True), buckets=(bucket,)), dry_run=True)
    ds = await store.decide_many([dry, send(msg(X, otp=True), buckets=(bucket,))])
    assert ds[0].refusal is None and ds[1].refusal is None
    refusal = (await store.decide(dry)).refusal
    assert refusal is not None and refusal.rule is Rule.OTP


async def _every_key(store: RedisStore) -> dict[bytes, bytes | None]:
    client = store.client
    if isinstance(client, RedisCluster):
        names = await client.keys(target_nodes=RedisCluster.PRIMARIES)
    else:
        assert isinstance(client, Redis)
        names = await client.keys()
    return {name: await client.dump(name) for name in names}


async def test_dry_run_leaves_every_redis_key_byte_identical(store: Store):
    if not isinstance(store, RedisStore):
        return  # the memory store has no keys to dump; its twin is checked above
    tpl = await template(store, "welcome", "MARKETING")
    await store.optout_add(ACCOUNT, Y)
    bucket = sub_bucket(interval_us=100 * MS, burst=2)
    real = send(msg(X, otp=True), buckets=(bucket, egress_bucket()), max_wait_us=1 * US)
    await store.decide_many([real, send(msg(X, template=tpl), buckets=(bucket,))])
    before = await _every_key(store)
    assert before
    checks = [
        send(msg(X, template=tpl), buckets=(bucket, egress_bucket()), max_wait_us=1 * US),
        send(msg("+6580000001", otp=True), buckets=(bucket,), max_wait_us=1 * US),
        send(
            msg(X, template=tpl),
            msg(Y),
            msg("+6580000002", otp=True),
            batch=True,
            buckets=(bucket, egress_bucket()),
            max_wait_us=1 * US,
        ),
        send(msg(X, otp=True), buckets=(bucket,)),  # refused: OTP
        send(buckets=(bucket,)),  # refused: subaccount, no wait allowed
    ]
    ds = await store.decide_many([replace(c, dry_run=True) for c in checks])
    assert ds[0].refusal is None and ds[0].wait_us > 0
    assert ds[3].refusal is not None and ds[3].refusal.rule is Rule.OTP
    assert ds[4].refusal is not None and ds[4].refusal.rule is Rule.SUBACCOUNT
    assert await _every_key(store) == before


# --- shadow rules


async def test_shadowed_opt_out_counts_and_the_send_goes(store: Store):
    await store.optout_add(ACCOUNT, X)
    check = replace(send(msg(X)), shadow=frozenset({Rule.OPTED_OUT}))
    decision = await store.decide(check)
    assert decision.refusal is None and decision.shadowed == (Rule.OPTED_OUT,)
    refusal = (await store.decide(send(msg(X)))).refusal
    assert refusal is not None and refusal.rule is Rule.OPTED_OUT


async def test_shadowed_template_and_consent_count_each(store: Store):
    await store.template_put(ACCOUNT, TemplateRecord("promo", "en", "PAUSED", "MARKETING",
                                                     None, NOW))  # fmt: skip
    shadow = frozenset({Rule.NO_CONSENT, Rule.TEMPLATE})
    decision = await store.decide(replace(send(msg(X, template="promo:en")), shadow=shadow))
    assert decision.refusal is None
    assert decision.shadowed == (Rule.NO_CONSENT, Rule.TEMPLATE)


async def test_shadowed_subaccount_never_refuses_and_books_nothing_over_it(store: Store):
    bucket = sub_bucket(interval_us=10 * US, burst=1)
    check = replace(send(buckets=(bucket,)), shadow=frozenset({Rule.SUBACCOUNT}))
    ds = await store.decide_many([check, check, check])
    assert [d.refusal for d in ds] == [None] * 3
    assert [d.wait_us for d in ds] == [0] * 3
    assert [d.shadowed for d in ds] == [(), (Rule.SUBACCOUNT,), (Rule.SUBACCOUNT,)]
    # only the first was booked: an enforced send now waits one interval, not three
    refusal = (await store.decide(send(buckets=(bucket,)))).refusal
    assert refusal is not None and 9 * US < refusal.retry_after_us <= 10 * US


async def test_shadowed_otp_goes_without_booking_again(store: Store):
    shadow = frozenset({Rule.OTP})
    ds = await store.decide_many([replace(send(msg(X, otp=True)), shadow=shadow)] * 2)
    assert [d.refusal for d in ds] == [None, None]
    assert [d.shadowed for d in ds] == [(), (Rule.OTP,)]


async def test_shadowed_rule_in_a_batch_keeps_the_message(store: Store):
    await store.optout_add(ACCOUNT, Y)
    check = replace(send(msg(X), msg(Y), batch=True), shadow=frozenset({Rule.OPTED_OUT}))
    decision = await store.decide(check)
    assert decision.dropped == () and decision.shadowed == (Rule.OPTED_OUT,)


# --- deadlines


async def test_deadline_refuses_at_once_before_max_wait_is_considered(store: Store):
    bucket = sub_bucket(interval_us=100 * MS, burst=1)
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None
    late = replace(send(buckets=(bucket,), max_wait_us=10 * US), deadline_us=50 * MS)
    refusal = (await store.decide(late)).refusal
    assert refusal is not None and refusal.rule is Rule.DEADLINE
    assert 50 * MS < refusal.retry_after_us <= 100 * MS and refusal.bucket == bucket
    in_time = replace(late, deadline_us=1 * US)  # the refusal booked nothing
    decision = await store.decide(in_time)
    assert decision.refusal is None and 50 * MS < decision.wait_us <= 100 * MS


async def test_deadline_wins_over_max_wait(store: Store):
    bucket = sub_bucket(interval_us=1 * US, burst=1)
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None
    check = replace(send(buckets=(bucket,), max_wait_us=100 * MS), deadline_us=200 * MS)
    refusal = (await store.decide(check)).refusal
    assert refusal is not None and refusal.rule is Rule.DEADLINE


async def test_deadline_of_the_lane_applies(store: Store):
    bucket = sub_bucket(interval_us=100 * MS, burst=1)
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None
    check = replace(send(msg(X, otp=True), buckets=(bucket,), max_wait_us=1 * US),
                    deadline_us=10 * MS, priority_deadline_us=1 * US)  # fmt: skip
    decision = await store.decide(check)
    assert decision.refusal is None and decision.priority
    bulk = replace(check, messages=(msg(Y),))
    refusal = (await store.decide(bulk)).refusal
    assert refusal is not None and refusal.rule is Rule.DEADLINE


async def test_shadowed_deadline_lets_the_send_wait(store: Store):
    bucket = sub_bucket(interval_us=100 * MS, burst=1)
    assert (await store.decide(send(buckets=(bucket,)))).refusal is None
    check = replace(send(buckets=(bucket,), max_wait_us=1 * US), deadline_us=10 * MS,
                    shadow=frozenset({Rule.DEADLINE}))  # fmt: skip
    decision = await store.decide(check)
    assert decision.refusal is None and decision.wait_us > 10 * MS
    assert decision.shadowed == (Rule.DEADLINE,)


# --- lanes


def _flood(n: int, reserve_pm: int) -> list[SendCheck]:
    # burst 10 x 10 ms + 100 ms of wait: a 200 ms horizon, 20 % of it is 40 ms
    bucket = sub_bucket(interval_us=10 * MS, burst=10)
    return [replace(send(msg(Y), buckets=(bucket,), max_wait_us=100 * MS),
                    reserve_pm=reserve_pm)] * n  # fmt: skip


async def test_bulk_may_not_book_the_reserved_share(store: Store):
    ds = await store.decide_many(_flood(30, 200))
    allowed = [d for d in ds if d.refusal is None]
    assert len(allowed) == 16  # the TAT reaches 160 ms of the 200 ms horizon
    assert not any(d.priority for d in allowed)
    otp = replace(_flood(1, 200)[0], messages=(msg(X, otp=True),))
    decision = await store.decide(otp)
    assert decision.refusal is None and decision.priority and decision.wait_us <= 70 * MS


async def test_without_a_reserve_bulk_books_the_whole_horizon(store: Store):
    ds = await store.decide_many(_flood(30, 0))
    assert sum(d.refusal is None for d in ds) == 20
    otp = replace(_flood(1, 0)[0], messages=(msg(X, otp=True),))
    refusal = (await store.decide(otp)).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT


async def test_lane_follows_the_messages_categories(store: Store):
    utility = await template(store, "receipt", "UTILITY")
    auth = await template(store, "code", "AUTHENTICATION")
    marketing = await template(store, "promo", "MARKETING")
    direct = MessageCheck(X, None, False, "UTILITY")

    async def lane(*messages: MessageCheck, batch: bool = False) -> bool:
        check = replace(send(*messages, batch=batch, opt_in="off"), reserve_pm=200)
        decision = await store.decide(replace(check, dry_run=True))
        assert decision.refusal is None
        return decision.priority

    assert await lane(msg(X, template=utility))
    assert await lane(msg(X, template=auth))
    assert await lane(msg(X, otp=True))
    assert await lane(direct)
    assert not await lane(msg(X, template=marketing))
    assert not await lane(msg(X))  # plain text: bulk
    assert not await lane(msg(X, template=utility), msg(Y), batch=True)


async def test_a_given_lane_wins_over_the_messages(store: Store):
    ds = await store.decide_many(_flood(30, 200))
    assert sum(d.refusal is None for d in ds) == 16
    forced = replace(_flood(1, 200)[0], lane=PRIORITY)
    assert (await store.decide(forced)).refusal is None
    bulk = replace(_flood(1, 200)[0], messages=(msg(X, otp=True),), lane=BULK)
    refusal = (await store.decide(bulk)).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT


async def test_reserve_applies_to_egress_ip_too_but_not_to_end_users(store: Store):
    egress = replace(egress_bucket(), interval_us=10 * MS, burst=10)
    check = replace(send(msg(Y), buckets=(egress,), max_wait_us=100 * MS), reserve_pm=200)
    ds = await store.decide_many([check] * 30)
    assert sum(d.refusal is None for d in ds) == 16
    assert keys.egress_bucket("default") == egress.key


# --- the bulk queue: tickets and claims (docs/lanes.md)


def _laned(*messages: MessageCheck, interval_us: int = 10 * MS, burst: int = 10,
           max_wait_us: int = 100 * MS, egress: bool = False) -> SendCheck:  # fmt: skip
    buckets = (sub_bucket(interval_us=interval_us, burst=burst),)
    if egress:
        buckets += (replace(egress_bucket(), interval_us=interval_us, burst=burst),)
    check = send(*messages, buckets=buckets, max_wait_us=max_wait_us)
    return replace(check, reserve_pm=200)


def _claim(check: SendCheck) -> SendCheck:
    return replace(check, messages=(), lane=BULK, claim=True)


async def test_a_bulk_flood_cannot_delay_a_priority_send_past_the_lead(store: Store):
    # burst 10 x 10 ms, max_wait 100 ms: the lead is min(burst, 20 % of 200 ms) = 40 ms
    bulk = _laned(msg(Y))
    ds = await store.decide_many([bulk] * 30)
    tickets = [d for d in ds if d.refusal is None and d.ticket]
    assert len(tickets) == 2 and sum(d.refusal is None for d in ds) == 16
    assert all(d.wait_us <= 40 * MS for d in ds if d.refusal is None and not d.ticket)
    otp = await store.decide(_laned(msg(X, otp=True)))
    assert otp.refusal is None and otp.priority and not otp.ticket
    assert otp.wait_us <= 50 * MS  # the lead and one interval, not bulk's whole queue
    # more bulk only queues: the next priority send waits one more interval, no more
    await store.decide_many([bulk] * 10)
    otp = await store.decide(_laned(msg("+6580000003", otp=True)))
    assert otp.refusal is None and otp.wait_us <= 60 * MS


async def test_a_ticket_books_the_queue_only_and_its_claim_the_real_slot(store: Store):
    # burst 1 x 1 s, max_wait 10 s: the lead is 1 s (seconds: calls apart take no part)
    bulk = _laned(msg(Y), interval_us=1 * US, burst=1, max_wait_us=10 * US)
    first, second, third = await store.decide_many([bulk] * 3)
    assert not first.ticket and not second.ticket and second.wait_us == 1 * US
    # a ticket half the lead before its queue's slot (2 s)
    assert third.refusal is None and third.ticket and third.wait_us == 1500 * MS
    assert third.slot_us > 0
    # the ticket left the real TAT alone: a priority send waits 2 s, not 3
    otp = await store.decide(replace(bulk, messages=(msg(X, otp=True),)))
    assert otp.refusal is None and 1 * US < otp.wait_us <= 2 * US
    # claimed now, the real slot is 3 s away, past the lead: refused, nothing booked
    refusal = (await store.decide(_claim(bulk))).refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT
    assert 1 * US < refusal.retry_after_us <= 2 * US
    again = (await store.decide(_claim(bulk))).refusal
    assert again is not None and again.retry_after_us <= refusal.retry_after_us


async def test_a_claim_within_the_lead_goes_and_honours_its_deadline(store: Store):
    bulk = _laned(msg(Y), interval_us=1 * US, burst=1, max_wait_us=10 * US)
    claim = await store.decide(_claim(bulk))
    assert claim.refusal is None and claim.wait_us == 0 and not claim.ticket
    late = replace(_claim(bulk), deadline_us=500 * MS)  # the next slot is 1 s away
    refusal = (await store.decide(late)).refusal
    assert refusal is not None and refusal.rule is Rule.DEADLINE
    claim = await store.decide(_claim(bulk))
    assert claim.refusal is None and 500 * MS < claim.wait_us <= 1 * US


async def test_a_ticket_is_refused_at_once_when_its_queue_passes_the_deadline(store: Store):
    # burst 10 x 1 s, max_wait 10 s: the lead is 4 s
    bulk = _laned(msg(Y), interval_us=1 * US, burst=10, max_wait_us=10 * US)
    await store.decide_many([bulk] * 14)  # the real TAT and the queue 14 s ahead
    refusal = (await store.decide(replace(bulk, deadline_us=3 * US))).refusal
    assert refusal is not None and refusal.rule is Rule.DEADLINE  # its queue's slot: 5 s
    ticket = await store.decide(replace(bulk, deadline_us=6 * US))
    assert ticket.refusal is None and ticket.ticket and ticket.wait_us <= 3 * US


async def test_forwarded_sends_stay_within_each_buckets_envelope(store: Store):
    """A flood of bulk sends and a few priority ones, each paced to its slot, the tickets
    claiming theirs: the slots forwarded never pass burst + W / T in any window W."""
    interval, burst = 10 * MS, 3
    bulk = _laned(msg(Y), interval_us=interval, burst=burst, egress=True)
    prio = replace(bulk, messages=(msg(X, otp=True),))
    first = await store.decide_many([bulk] * 25 + [prio] + [bulk] * 5)
    assert any(d.ticket for d in first)
    clock = pacing.SlotClock()

    async def went(d: Decision) -> Decision:
        if d.refusal is not None:
            return d
        lane = PRIORITY if d.priority else BULK
        return await pacing.until_slot(d, store, lambda: replace(bulk, messages=(), lane=lane),
                                       clock)  # fmt: skip

    late = await store.decide(replace(prio, messages=(msg("+6580000004", otp=True),)))
    gone = await asyncio.gather(*(went(d) for d in [*first, late]))
    claimed = [g for d, g in zip(first, gone, strict=False) if d.ticket and g.refusal is None]
    assert claimed and not any(d.ticket for d in gone)
    slots = sorted(d.slot_us for d in gone if d.refusal is None)
    for i in range(len(slots)):
        for j in range(i + 1, len(slots)):
            assert slots[j] - slots[i] >= (j - i + 1 - burst) * interval, (i, j)


async def test_dry_run_of_a_ticket_and_a_claim_leaves_every_key_alone(store: Store):
    if not isinstance(store, RedisStore):
        return  # the memory twin's overlay is checked above
    bulk = _laned(msg(Y), egress=True)
    await store.decide_many([bulk] * 14)  # the next bulk send takes a ticket
    before = await _every_key(store)
    assert any(k.endswith(b":q") for k in before)
    checks = [bulk, replace(bulk, messages=(msg(X, otp=True),)), _claim(bulk)]
    ds = await store.decide_many([replace(c, dry_run=True) for c in checks])
    assert ds[0].ticket and ds[1].priority
    assert await _every_key(store) == before


# --- fairness between the clients of one subaccount (docs/lanes.md)

# burst 1 x 1 s, max_wait 10 s, reserve 20 %: an 11 s horizon, bulk's reach 8.8 s, a 1 s
# lead (seconds: the calls of one test take no part)
HORIZON_US = 11 * US


def _fair(client: str, sub: str = "acme_main", *messages: MessageCheck) -> SendCheck:
    check = _laned(*(messages or (msg(Y),)), interval_us=1 * US, burst=1, max_wait_us=10 * US)
    bucket = sub_bucket(interval_us=1 * US, burst=1, sub=sub)
    return replace(check, buckets=(bucket,), client=client)


async def test_a_lone_client_keeps_the_whole_queue(store: Store):
    alone = await store.decide_many([_fair("a")] * 12)
    unfair = await store.decide_many([_fair("", "acme_other")] * 12)
    assert [d.refusal is None for d in alone] == [d.refusal is None for d in unfair]
    assert sum(d.refusal is None for d in alone) == 8  # the queue reaches 8 s of 8.8 s
    assert [d.wait_us for d in alone] == [d.wait_us for d in unfair]


async def test_a_flood_from_one_client_does_not_refuse_another(store: Store):
    a, b = _fair("a"), _fair("b")
    ds = await store.decide_many([a] * 12 + [b, a, b, b, a])
    flood, (b1, a1, b2, b3, a2) = ds[:12], ds[12:]
    assert sum(d.refusal is None for d in flood) == 8  # a alone: the whole of bulk's reach
    for d in (b1, b2, b3):  # b keeps to its share: past the full queue, to the horizon
        assert d.refusal is None and d.ticket and d.wait_us <= HORIZON_US
    for d in (a1, a2):  # a is past its share: refused, as a full queue refuses
        assert d.refusal is not None and d.refusal.rule is Rule.SUBACCOUNT
        assert 0 < d.refusal.retry_after_us <= HORIZON_US
    # held to 1/k of bulk's reach (4.4 s) while b sends: the queue would reach 10 s
    assert a1.refusal is not None and a1.refusal.retry_after_us == 5_600_000
    over = (await store.decide(b)).refusal  # the horizon is the bound, share or not
    assert over is not None and over.rule is Rule.SUBACCOUNT


async def test_without_fairness_the_flood_takes_the_queue(store: Store):
    a, b = _fair(""), _fair("")  # limits.fair_clients = false: no client in the check
    ds = await store.decide_many([a] * 12 + [b])
    refusal = ds[-1].refusal
    assert refusal is not None and refusal.rule is Rule.SUBACCOUNT


async def test_fairness_leaves_priority_sends_their_bound(store: Store):
    await store.decide_many([_fair("a")] * 12 + [_fair("b")] * 3)
    otp = await store.decide(_fair("b", "acme_main", msg(X, otp=True)))
    assert otp.refusal is None and otp.priority and not otp.ticket
    assert otp.wait_us <= 2 * US  # the lead and one interval


async def test_a_clients_share_expires_with_the_bucket(store: Store):
    await store.decide_many([_fair("a")] * 12 + [_fair("b")])
    key = keys.fair(sub_bucket(interval_us=1 * US, burst=1).key)
    if isinstance(store, RedisStore):
        client = store.client
        members = dict(await client.zrange(key, 0, -1, withscores=True))
        ttl = await client.pttl(key)
        assert 0 < ttl <= 2 * HORIZON_US // MS  # a horizon after the fair TAT
        assert set(members) == {b"a", b"b"}
    else:
        assert isinstance(store, MemoryStore)
        assert set(store.fair_members(key)) == {"a", "b"}


async def test_dry_run_of_fair_sends_leaves_every_key_alone(store: Store):
    if not isinstance(store, RedisStore):
        return  # the memory twin's overlay is checked above
    await store.decide_many([_fair("a")] * 12 + [_fair("b")])
    before = await _every_key(store)
    assert any(k.endswith(b":c") for k in before)
    checks = [_fair("b"), _fair("a"), _fair("c")]
    ds = await store.decide_many([replace(c, dry_run=True) for c in checks])
    assert ds[0].refusal is None and ds[1].refusal is not None and ds[2].refusal is None
    assert await _every_key(store) == before


async def test_a_client_gone_for_a_horizon_is_pruned_and_not_counted(store: Store):
    key = keys.fair(sub_bucket(interval_us=1 * US, burst=1).key)
    if isinstance(store, RedisStore):
        await store.client.zadd(key, {"gone": 1})  # a fair TAT long past
    else:
        assert isinstance(store, MemoryStore)
        store.fair_set(key, "gone", 1, 0, 2**62)
    ds = await store.decide_many([_fair("a")] * 12)
    assert sum(d.refusal is None for d in ds) == 8  # alone: "gone" is not a peer
    if isinstance(store, RedisStore):
        members = {m for m, _ in await store.client.zrange(key, 0, -1, withscores=True)}
        assert members == {b"a"}
    else:
        assert isinstance(store, MemoryStore)
        assert set(store.fair_members(key)) == {"a"}


async def test_a_ticket_never_comes_before_the_whatsapp_senders_slot(store: Store):
    """The claim does not see the sender bucket again (it has no messages), so a ticket is
    set no earlier than the sender's slot: the send never leaves before the sender would
    admit it."""
    from tests.contract.test_whatsapp import sender_bucket, wsend

    sender = sender_bucket(interval_us=2 * US, burst=1)
    sub = sub_bucket(interval_us=1 * US, burst=1)  # lead: min(1 s, 20 % of 11 s) = 1 s

    def one(number: str) -> SendCheck:
        check = wsend(number, sender=sender, tier=0, pair_burst=10, max_wait_us=10 * US)
        return replace(check, buckets=(sub,), reserve_pm=200)

    first, second = await store.decide_many([one(X), one(Y)])
    assert first.refusal is None and first.wait_us == 0
    # the subaccount alone would ticket it at 1.5 s; the sender's slot is 2 s away
    assert second.refusal is None and second.ticket and second.wait_us == 2 * US
