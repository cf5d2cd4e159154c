"""Opt-outs, consent, templates, OTP per recipient, batches and which refusal wins."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.store import keys
from gateway.store.base import ConsentRecord, OtpSpec, Rule, Store, TemplateRecord
from tests.contract.conftest import (
    ACCOUNT,
    US,
    egress_bucket,
    end_user_bucket,
    msg,
    send,
    sub_bucket,
)

X, Y, Z = "+6587654321", "+6591234567", "+6580000000"
NOW = "2024-05-01T10:00:00Z"


async def put_template(store: Store, name: str, status: str = "APPROVED",
                       category: str | None = "MARKETING", when: str = NOW) -> str:  # fmt: skip
    await store.template_put(ACCOUNT, TemplateRecord(name, "en", status, category, "GREEN", when))
    return f"{name}:en"


async def consent(store: Store, msisdn: str, *categories: str) -> None:
    await store.consent_put(ACCOUNT, ConsentRecord(msisdn, "web", categories, NOW))


async def test_opted_out_recipient_is_refused_on_every_product(store: Store):
    await store.optout_add(ACCOUNT, X)
    for m in (msg(X), msg(X, otp=True), msg(X, template="any:en")):
        refusal = (await store.decide(send(m))).refusal
        assert refusal is not None and refusal.rule is Rule.OPTED_OUT
    assert (await store.decide(send(msg(Y)))).refusal is None


@pytest.mark.parametrize("status", ["PAUSED", "DISABLED", "REJECTED", "PENDING"])
async def test_only_an_approved_template_may_be_sent(store: Store, status: str):
    bad = await put_template(store, "promo", status)
    good = await put_template(store, "welcome", "APPROVED")
    refusal = (await store.decide(send(msg(X, bad), opt_in="off"))).refusal
    assert refusal is not None and refusal.rule is Rule.TEMPLATE and refusal.status == status
    assert (await store.decide(send(msg(X, good), opt_in="off"))).refusal is None


async def test_unknown_template_follows_policy(store: Store):
    refusal = (await store.decide(send(msg(X, "nope:en"), opt_in="off"))).refusal
    assert refusal is not None and refusal.rule is Rule.TEMPLATE and refusal.status is None
    allowed = send(msg(X, "nope:en"), opt_in="off", unknown_ok=True)
    assert (await store.decide(allowed)).refusal is None


async def test_consent_enforce_needs_a_record_covering_the_category(store: Store):
    tpl = await put_template(store, "promo", category="MARKETING")
    refusal = (await store.decide(send(msg(X, tpl)))).refusal
    assert refusal is not None and refusal.rule is Rule.NO_CONSENT
    await consent(store, X, "UTILITY")
    refusal = (await store.decide(send(msg(X, tpl)))).refusal
    assert refusal is not None and refusal.rule is Rule.NO_CONSENT
    await consent(store, X, "UTILITY", "marketing")
    d = await store.decide(send(msg(X, tpl)))
    assert d.refusal is None and d.unconsented == ()


async def test_consent_any_record_covers_a_template_of_unknown_category(store: Store):
    tpl = await put_template(store, "plain", category=None)
    await consent(store, X, "UTILITY")
    assert (await store.decide(send(msg(X, tpl)))).refusal is None
    unknown = send(msg(X, "nope:en"), unknown_ok=True)
    assert (await store.decide(unknown)).refusal is None
    refusal = (await store.decide(send(msg(Y, "nope:en"), unknown_ok=True))).refusal
    assert refusal is not None and refusal.rule is Rule.NO_CONSENT


async def test_consent_warn_forwards_and_reports_off_ignores(store: Store):
    tpl = await put_template(store, "promo")
    d = await store.decide(send(msg(X, tpl), opt_in="warn"))
    assert d.refusal is None and d.unconsented == (0,)
    d = await store.decide(send(msg(X, tpl), opt_in="off"))
    assert d.refusal is None and d.unconsented == ()
    await consent(store, Y, "MARKETING")
    d = await store.decide(send(msg(X, tpl), msg(Y, tpl), msg(Z, tpl), batch=True,
                                opt_in="warn"))  # fmt: skip
    assert d.refusal is None and d.unconsented == (0, 2) and d.dropped == ()


async def test_a_send_without_template_needs_no_consent(store: Store):
    assert (await store.decide(send(msg(X)))).refusal is None
    assert (await store.decide(send(msg(Y, otp=True)))).refusal is None


async def test_otp_one_per_recipient_per_window_and_never_shaped(store: Store):
    c = send(msg(X, otp=True), max_wait_us=3600 * US)
    assert (await store.decide(c)).refusal is None
    refusal = (await store.decide(c)).refusal
    assert refusal is not None and refusal.rule is Rule.OTP
    assert 58 * US < refusal.retry_after_us <= 60 * US
    assert refusal.bucket is not None and refusal.bucket.key == keys.otp_bucket(ACCOUNT, X)
    assert refusal.bucket.limit == 1 and refusal.bucket.window_s == 60
    assert (await store.decide(send(msg(Y, otp=True)))).refusal is None


async def test_authentication_template_shares_the_otp_bucket(store: Store):
    tpl = await put_template(store, "code", category="AUTHENTICATION")
    await consent(store, X, "AUTHENTICATION")
    assert (await store.decide(send(msg(X, tpl)))).refusal is None
    refusal = (await store.decide(send(msg(X, otp=True)))).refusal
    assert refusal is not None and refusal.rule is Rule.OTP
    promo = await put_template(store, "promo", category="MARKETING")
    await consent(store, Y, "AUTHENTICATION", "MARKETING")
    assert [(await store.decide(send(msg(Y, promo)))).refusal for _ in range(2)] == [None] * 2


async def test_otp_to_one_number_twice_in_a_batch_drops_the_second(store: Store):
    c = send(msg(X, otp=True), msg(X, otp=True), msg(Y, otp=True), batch=True)
    d = await store.decide(c)
    assert d.refusal is None and d.dropped == ((1, Rule.OTP),)
    two = send(msg(Z, otp=True), msg(Z, otp=True))
    refusal = (await store.decide(two)).refusal
    assert refusal is not None and refusal.rule is Rule.OTP


async def test_otp_burst_allows_that_many_in_one_batch(store: Store):
    two_a_minute = OtpSpec(interval_us=30 * US, burst=2, limit=2, window_s=60)
    c = send(*[msg(X, otp=True)] * 3, batch=True, otp=two_a_minute)
    assert (await store.decide(c)).dropped == ((2, Rule.OTP),)


async def test_batch_drops_refused_messages_and_books_once(store: Store):
    paused = await put_template(store, "promo", "PAUSED")
    ok = await put_template(store, "welcome")
    for n in (X, Y, Z):
        await consent(store, n, "MARKETING")
    await store.optout_add(ACCOUNT, Y)
    sub = sub_bucket(burst=5)
    c = send(msg(X, ok), msg(Y, ok), msg(Z, paused), msg(X, "nope:en"), msg(Z, ok),
             buckets=(sub,), batch=True)  # fmt: skip
    d = await store.decide(c)
    assert d.refusal is None
    assert d.dropped == ((1, Rule.OPTED_OUT), (2, Rule.TEMPLATE), (3, Rule.TEMPLATE))
    assert d.remaining == ((Rule.SUBACCOUNT, 4),)


async def test_batch_refused_by_a_request_bucket_consumes_no_otp(store: Store):
    egress = egress_bucket(burst=1)
    await store.decide(send(buckets=(egress,)))
    d = await store.decide(send(msg(X, otp=True), msg(Y), buckets=(egress,), batch=True))
    assert d.refusal is not None and d.refusal.rule is Rule.EGRESS_IP
    assert (await store.decide(send(msg(X, otp=True), buckets=()))).refusal is None


async def test_refusal_priority_order(store: Store):
    eu = end_user_bucket(burst=1)
    sub, egress = sub_bucket(burst=1), egress_bucket(burst=1)
    for bucket in (eu, sub, egress):  # drain every bucket
        assert (await store.decide(send(msg(Z), buckets=(bucket,)))).refusal is None
    assert (await store.decide(send(msg(X, otp=True), buckets=()))).refusal is None
    tpl = await put_template(store, "code", "PAUSED", category="AUTHENTICATION")
    await store.optout_add(ACCOUNT, X)
    everything = send(msg(X, tpl), buckets=(eu, sub, egress), max_wait_us=0)

    async def rule() -> Rule | None:
        refusal = (await store.decide(everything)).refusal
        return None if refusal is None else refusal.rule

    assert await rule() is Rule.OPTED_OUT
    await store.optout_remove(ACCOUNT, X)
    assert await rule() is Rule.NO_CONSENT
    await consent(store, X, "AUTHENTICATION")
    assert await rule() is Rule.TEMPLATE
    await put_template(store, "code", "APPROVED", category="AUTHENTICATION")
    assert await rule() is Rule.OTP
    everything = send(msg(Y), buckets=(eu, sub, egress))
    assert await rule() is Rule.END_USER_IP
    everything = send(msg(Y), buckets=(sub, egress))
    assert await rule() is Rule.SUBACCOUNT
    everything = send(msg(Y), buckets=(egress,))
    assert await rule() is Rule.EGRESS_IP


async def test_no_consent_wins_over_an_unknown_template(store: Store):
    refusal = (await store.decide(send(msg(X, "nope:en")))).refusal
    assert refusal is not None and refusal.rule is Rule.NO_CONSENT


async def test_template_names_are_one_template_whatever_their_case(store: Store):
    record = TemplateRecord("Order_Update", "en_US", "PAUSED", "UTILITY", None, NOW)
    await store.template_put(ACCOUNT, record)
    assert (await store.template_get(ACCOUNT, "order_update", "en_us")) is not None
    refused = (await store.decide(send(msg(X, "ORDER_UPDATE:EN_US"), opt_in="off"))).refusal
    assert refused is not None and (refused.rule, refused.status) == (Rule.TEMPLATE, "PAUSED")
    await store.template_put(ACCOUNT, replace(record, name="order_update", status="APPROVED"))
    assert (await store.decide(send(msg(X, "Order_Update:en_US"), opt_in="off"))).refusal is None


async def test_a_batch_larger_than_one_script_call_is_still_all_or_nothing(store: Store):
    """2,500 messages (several calls on Redis): per-message drops counted across the calls;
    a refusal by the request's bucket leaves none of its OTP slots booked."""
    numbers = [f"+65810{i:05d}" for i in range(2_500)]
    await store.optout_add(ACCOUNT, numbers[1_500])
    full = sub_bucket(interval_us=60 * US, burst=1)
    await store.decide(send(msg(Z), buckets=(full,)))  # the bucket's one slot taken
    batch = send(*(msg(n, otp=True) for n in numbers), batch=True, opt_in="off",
                 buckets=(full,))  # fmt: skip
    refused = await store.decide(batch)
    assert refused.refusal is not None and refused.refusal.rule is Rule.SUBACCOUNT
    assert refused.dropped == ((1_500, Rule.OPTED_OUT),)
    roomy = sub_bucket(interval_us=1, burst=10, sub="other")
    allowed = await store.decide(replace(batch, buckets=(roomy,)))
    assert (allowed.refusal, allowed.dropped) == (None, ((1_500, Rule.OPTED_OUT),))
    again = await store.decide(replace(batch, buckets=(roomy,)))
    assert len(again.dropped) == 2_500 and again.dropped[0] == (0, Rule.OTP)
