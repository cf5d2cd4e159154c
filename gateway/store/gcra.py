"""The arithmetic both stores share: GCRA slots and fills, key TTLs, RFC 3339 instants,
and the in-process decision (the twin of lua/decide.lua, for the memory store).

A bucket with emission interval T and burst B keeps its theoretical arrival time (TAT,
µs). It admits a send at the earliest instant `max(now, tat + T - B*T)`; booking a send
at instant s moves the TAT to `max(tat, s) + T`. A missing TAT (0 here) is a full bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from gateway.store import keys, wacheck
from gateway.store.base import BucketSpec, Decision, Refusal, Rule, SendCheck

#: Rules in the order refusals win (Rule is a StrEnum: its own `<` compares text).
RANK = {rule: i for i, rule in enumerate(Rule)}
APPROVED = "APPROVED"
AUTHENTICATION = "AUTHENTICATION"


def earliest(tat: int, interval: int, burst: int, now: int) -> int:
    """The first instant a bucket holding `tat` admits one send."""
    return max(now, tat + interval - burst * interval)


def fill(tat: int, interval: int, burst: int, now: int) -> tuple[int, int]:
    """(remaining tokens, µs until full) of a bucket holding `tat` at `now`."""
    ahead = max(0, tat - now)
    return max(0, min(burst, (burst * interval - ahead) // interval)), ahead


def ttl_ms(tat: int, now: int) -> int:
    """A bucket key's TTL: until the bucket is full again, in whole ms, at least 1."""
    return max(1, -((now - tat) // 1000))


def instant_us(rfc3339: str) -> int:
    """An RFC 3339 timestamp as µs since the epoch (no offset given: UTC)."""
    text = rfc3339.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def otp_bucket_spec(check: SendCheck, msisdn: str) -> BucketSpec:
    """The OTP bucket of one recipient as a BucketSpec (for a refusal's headers)."""
    otp = check.otp
    return BucketSpec(
        Rule.OTP,
        keys.otp_bucket(check.account, msisdn),
        otp.interval_us,
        otp.burst,
        otp.limit,
        otp.window_s,
        shapeable=False,
    )


class View(Protocol):
    """What the in-process decision reads and writes (MemoryStore implements it)."""

    def opted_out(self, account: str, msisdn: str) -> bool: ...
    def consent_categories(self, account: str, msisdn: str) -> tuple[str, ...] | None: ...
    def template_state(self, account: str, template: str) -> tuple[str, str | None] | None: ...
    def tat(self, key: str, now: int) -> int: ...
    def set_tat(self, key: str, tat: int, now: int) -> None: ...
    def cooldown_end(self, key: str, now: int) -> int: ...
    # WhatsApp's limits (gateway/store/wacheck.py)
    def template_quality(self, account: str, template: str) -> str | None: ...
    def tier_override(self, key: str) -> int | None: ...
    def tier_trim(self, key: str, upto: int) -> int: ...
    def tier_score(self, key: str, member: str) -> int | None: ...
    def tier_oldest(self, key: str) -> int | None: ...
    def tier_add(self, key: str, member: str, score: int) -> None: ...


class _Wa:
    """One decision's WhatsApp state: the tier cache of the call, the request's bookings."""

    def __init__(self, tiers: wacheck.Tiers) -> None:
        self.tiers = tiers
        self.tent = wacheck.Tentative()


def _message_rule(
    view: View,
    check: SendCheck,
    index: int,
    otp_tent: dict[str, int],
    now: int,
    wa: _Wa | None = None,
) -> tuple[Rule | None, int, str | None, bool, str | None]:
    """(rule or None, retry_after, status, unconsented, OTP key to book) of one message."""
    msg = check.messages[index]
    account = check.account
    if view.opted_out(account, msg.msisdn):
        return Rule.OPTED_OUT, 0, None, False, None
    category, warned = None, False
    if msg.template or msg.category:
        # a category alone: 8x8 makes the template (Direct Send), no registry entry to read
        direct = (APPROVED, msg.category)
        state = view.template_state(account, msg.template) if msg.template else direct
        if state is not None and state[1] is not None:
            category = state[1].upper()
        if check.opt_in != "off":
            cats = view.consent_categories(account, msg.msisdn)
            if cats is None or (category is not None and category not in {c.upper() for c in cats}):
                if check.opt_in == "enforce":
                    return Rule.NO_CONSENT, 0, None, False, None
                warned = True
        if state is None:
            if not check.unknown_template_allowed:
                return Rule.TEMPLATE, 0, None, False, None
        elif state[0] != APPROVED:
            return Rule.TEMPLATE, 0, state[0], False, None
    pending = None
    w = check.whatsapp
    if w is not None and wa is not None:  # WhatsApp's own limits
        record = None
        if msg.template or msg.category:
            quality = view.template_quality(account, msg.template) if msg.template else None
            record = (category, quality)
        rule, retry, pending = wacheck.message_rule(
            view, wa.tiers, w, index, msg.msisdn, record, wa.tent, now
        )
        if rule is not None:
            return rule, retry, None, False, None
    otp_key = None
    if msg.otp or category == AUTHENTICATION:
        otp_key = keys.otp_bucket(account, msg.msisdn)
        interval = check.otp.interval_us
        cur = otp_tent.get(otp_key)
        if cur is None:
            cur = view.tat(otp_key, now)
        slot = earliest(cur, interval, check.otp.burst, now)
        if slot > now:
            return Rule.OTP, slot - now, None, False, None
        otp_tent[otp_key] = max(cur, now) + interval
    if pending is not None and wa is not None:
        wa.tent.keep(pending)
    return None, 0, None, warned, otp_key


def _bucket_refusal(
    view: View, check: SendCheck, now: int, forwarded: int = 0
) -> tuple[int, Refusal | None, int]:
    """(common booking instant, refusal or None, sender tokens) of the request-level
    buckets."""
    cool = view.cooldown_end(check.cooldown_key, now) if check.cooldown_key else 0
    slot, best, has_sub = now, None, False
    for spec in check.buckets:
        sb = earliest(view.tat(spec.key, now), spec.interval_us, spec.burst, now)
        if spec.rule is Rule.SUBACCOUNT:
            has_sub, sb = True, max(sb, cool)
        slot = max(slot, sb)
        if best is None or RANK[spec.rule] < RANK[best.rule]:
            if not spec.shapeable:
                if sb > now:
                    best = Refusal(spec.rule, sb - now, bucket=spec)
            elif sb - now > check.max_wait_us:
                best = Refusal(spec.rule, max(1, sb - now - check.max_wait_us), bucket=spec)
    cost = 0
    w = check.whatsapp
    if w is not None:  # the sender number's bucket, shapeable like capacity
        sb_or_none, cost = wacheck.sender_slot(view, w, forwarded, now)
        if sb_or_none is not None:
            slot = max(slot, sb_or_none)
            if best is None and sb_or_none - now > check.max_wait_us:
                wait = max(1, sb_or_none - now - check.max_wait_us)
                best = Refusal(Rule.SENDER, wait, bucket=w.sender)
    if not has_sub and cool > now:
        slot = max(slot, cool)
        late = best is None or RANK[best.rule] > RANK[Rule.SUBACCOUNT]
        if cool - now > check.max_wait_us and late:
            best = Refusal(Rule.SUBACCOUNT, max(1, cool - now - check.max_wait_us))
    return slot, best, cost


def decide(view: View, check: SendCheck, now: int, tiers: wacheck.Tiers | None = None) -> Decision:
    """One request, atomically: refuse (nothing consumed) or book every bucket at once.
    `tiers`: the WhatsApp tier state of the decision call this request is part of."""
    wa = _Wa(tiers or wacheck.Tiers()) if check.whatsapp is not None else None
    dropped: list[tuple[int, Rule]] = []
    unconsented: list[int] = []
    otp_tent: dict[str, int] = {}
    otp_keys: list[str] = []
    for index in range(len(check.messages)):
        rule, retry, status, warned, otp_key = _message_rule(view, check, index, otp_tent, now, wa)
        if rule is not None:
            if not check.batch:
                bucket = None
                if rule is Rule.OTP:
                    bucket = otp_bucket_spec(check, check.messages[index].msisdn)
                refusal = Refusal(rule, retry, status, bucket)
                return Decision(refusal=refusal, unconsented=tuple(unconsented))
            dropped.append((index, rule))
            continue
        if warned:
            unconsented.append(index)
        if otp_key is not None:
            otp_keys.append(otp_key)
    if check.messages and len(dropped) == len(check.messages):
        return Decision(dropped=tuple(dropped))
    slot, over, cost = _bucket_refusal(view, check, now, len(check.messages) - len(dropped))
    if over is not None:
        return Decision(refusal=over, dropped=tuple(dropped), unconsented=tuple(unconsented))
    remaining = []
    for spec in check.buckets:
        tat = max(view.tat(spec.key, now), slot) + spec.interval_us
        view.set_tat(spec.key, tat, now)
        left = (spec.burst * spec.interval_us - (tat - now)) // spec.interval_us
        remaining.append((spec.rule, max(0, left)))
    for key in otp_keys:
        view.set_tat(key, max(view.tat(key, now), slot) + check.otp.interval_us, now)
    if wa is not None and check.whatsapp is not None:
        wacheck.book(view, wa.tiers, check.whatsapp, wa.tent, slot, cost, now)
    return Decision(
        slot_us=slot,
        wait_us=slot - now,
        dropped=tuple(dropped),
        unconsented=tuple(unconsented),
        remaining=tuple(remaining),
    )
