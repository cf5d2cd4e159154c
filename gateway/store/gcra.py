"""The arithmetic both stores share: GCRA slots and fills, key TTLs, RFC 3339 instants,
and the in-process decision (the twin of lua/decide.lua, for the memory store).

A bucket with emission interval T and burst B keeps its theoretical arrival time (TAT,
µs). It admits a send at the earliest instant `max(now, tat + T - B*T)`; booking a send
at instant s moves the TAT to `max(tat, s) + T`. A missing TAT (0 here) is a full bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from gateway.store import keys, lanes, wacheck
from gateway.store.base import (
    PRIORITY,
    PRIORITY_CATEGORIES,
    BucketSpec,
    Decision,
    Refusal,
    Rule,
    SendCheck,
)
from gateway.store.lanes import LANED

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
    # fairness between a subaccount's clients (gateway/store/lanes.py)
    def fair_score(self, key: str, member: str, since: int) -> int: ...
    def fair_count(self, key: str, since: int) -> int: ...
    def fair_set(self, key: str, member: str, score: int, since: int, until: int) -> None: ...


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
    shadowed: list[Rule],
    wa: _Wa | None = None,
) -> tuple[Rule | None, int, str | None, bool, str | None, bool]:
    """(rule or None, retry_after, status, unconsented, OTP key to book, priority) of one
    message. A rule in `check.shadow` that would refuse is added to `shadowed` instead
    (WhatsApp's rules too)."""
    msg = check.messages[index]
    account = check.account
    shadow = check.shadow
    if view.opted_out(account, msg.msisdn):
        if Rule.OPTED_OUT not in shadow:
            return Rule.OPTED_OUT, 0, None, False, None, False
        shadowed.append(Rule.OPTED_OUT)
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
                if check.opt_in == "enforce" and Rule.NO_CONSENT not in shadow:
                    return Rule.NO_CONSENT, 0, None, False, None, False
                if check.opt_in == "enforce":
                    shadowed.append(Rule.NO_CONSENT)
                else:
                    warned = True
        inactive = state[0] != APPROVED if state else not check.unknown_template_allowed
        if inactive:
            if Rule.TEMPLATE not in shadow:
                status = state[0] if state else None
                return Rule.TEMPLATE, 0, status, False, None, False
            shadowed.append(Rule.TEMPLATE)
    pending = None
    w = check.whatsapp
    if w is not None and wa is not None:  # WhatsApp's own limits
        record = None
        if msg.template or msg.category:
            quality = view.template_quality(account, msg.template) if msg.template else None
            record = (category, quality)
        rule, retry, pending = wacheck.message_rule(
            view, wa.tiers, w, index, msg.msisdn, record, wa.tent, now, shadow, shadowed
        )
        if rule is not None:
            return rule, retry, None, False, None, False
    otp_key = None
    if msg.otp or category == AUTHENTICATION:
        key = keys.otp_bucket(account, msg.msisdn)
        interval = check.otp.interval_us
        cur = otp_tent.get(key)
        if cur is None:
            cur = view.tat(key, now)
        slot = earliest(cur, interval, check.otp.burst, now)
        if slot > now and Rule.OTP not in shadow:
            return Rule.OTP, slot - now, None, False, None, False
        if slot > now:  # shadowed: goes, books nothing for the rule it broke
            shadowed.append(Rule.OTP)
        else:
            otp_tent[key] = max(cur, now) + interval
            otp_key = key
    if pending is not None and wa is not None:
        wa.tent.keep(pending)
    priority = msg.otp or category in PRIORITY_CATEGORIES
    return None, 0, None, warned, otp_key, priority


#: the refusals a deadline refusal replaces: the capacity buckets a send waits on
_LATE = LANED | {Rule.SENDER}


def _spec_refusal(spec: BucketSpec, sb: int, check: SendCheck, now: int) -> Refusal | None:
    if not spec.shapeable:
        return Refusal(spec.rule, sb - now, bucket=spec) if sb > now else None
    if sb - now > check.max_wait_us:
        return Refusal(spec.rule, max(1, sb - now - check.max_wait_us), bucket=spec)
    return None


def _bucket_refusal(
    view: View,
    check: SendCheck,
    now: int,
    priority: bool,
    shadowed: list[Rule],
    forwarded: int = 0,
) -> tuple[int, Refusal | None, frozenset[str], int, bool, lanes.Fair | None]:
    """(common booking instant, refusal or None, keys of shadowed buckets that would have
    refused: not booked, WhatsApp sender tokens to book, a bulk queue's ticket: the laned
    buckets' real TATs not booked, the client's fair TAT to book) of the request-level
    buckets."""
    cool = view.cooldown_end(check.cooldown_key, now) if check.cooldown_key else 0
    slot, best, has_sub = now, None, False
    slot_spec: BucketSpec | None = None
    skip: set[str] = set()
    for spec in check.buckets:
        sb = earliest(view.tat(spec.key, now), spec.interval_us, spec.burst, now)
        if spec.rule is Rule.SUBACCOUNT:
            has_sub, sb = True, max(sb, cool)
        over = _spec_refusal(spec, sb, check, now)
        if spec.rule in check.shadow:
            if over is not None:
                shadowed.append(spec.rule)
                skip.add(spec.key)
            continue
        if sb > slot:
            slot, slot_spec = sb, spec
        if over is not None and (best is None or RANK[spec.rule] < RANK[best.rule]):
            best = over
    cost, sender_floor = 0, 0
    w = check.whatsapp
    if w is not None and w.sender is not None:  # the sender number's bucket, shapeable
        sb_or_none, cost = wacheck.sender_slot(view, w, forwarded, now)
        if sb_or_none is not None:
            late = sb_or_none - now > check.max_wait_us
            if Rule.SENDER in check.shadow:
                if late:  # shadowed: goes, books nothing for the rule it broke
                    shadowed.append(Rule.SENDER)
                    cost = 0
            else:
                if sb_or_none > slot:
                    slot, slot_spec = sb_or_none, w.sender
                sender_floor = sb_or_none
                if best is None and late:
                    wait = max(1, sb_or_none - now - check.max_wait_us)
                    best = Refusal(Rule.SENDER, wait, bucket=w.sender)
    if not has_sub and cool > now:
        if Rule.SUBACCOUNT in check.shadow:
            if cool - now > check.max_wait_us:
                shadowed.append(Rule.SUBACCOUNT)
        else:
            slot = max(slot, cool)
            late = best is None or RANK[best.rule] > RANK[Rule.SUBACCOUNT]
            if cool - now > check.max_wait_us and late:
                best = Refusal(Rule.SUBACCOUNT, max(1, cool - now - check.max_wait_us))
    # lanes (laned buckets only, docs/lanes.md); a late sender bucket is its own refusal
    at, ticket, expect, fair = slot, False, slot, None
    if check.reserve_pm and (best is None or best.rule is not Rule.SENDER):
        over = None
        if check.claim:
            over = lanes.claim_refusal(check, now, slot, slot_spec, skip)
        elif not priority:
            bulk = lanes.bulk_slot(
                lambda k: view.tat(k, now),
                check,
                now,
                slot,
                shadowed,
                skip,
                view,
                sender_floor,
            )
            at, ticket, expect, over = bulk.at, bulk.ticket, bulk.expect, bulk.refusal
            fair = bulk.fair
        if over is not None and (best is None or RANK[over.rule] < RANK[best.rule]):
            best = over
    deadline = check.priority_deadline_us if priority else check.deadline_us
    if deadline and expect - now > deadline and (best is None or best.rule in _LATE):
        if Rule.DEADLINE in check.shadow:
            shadowed.append(Rule.DEADLINE)
        else:
            best = Refusal(Rule.DEADLINE, expect - now, bucket=slot_spec)
    return at, best, frozenset(skip), cost, ticket, fair


class _DryView:
    """A View that reads through to another and keeps its own writes (a dry run)."""

    def __init__(self, view: View) -> None:
        self._view = view
        self._tats: dict[str, int] = {}

    def opted_out(self, account: str, msisdn: str) -> bool:
        return self._view.opted_out(account, msisdn)

    def consent_categories(self, account: str, msisdn: str) -> tuple[str, ...] | None:
        return self._view.consent_categories(account, msisdn)

    def template_state(self, account: str, template: str) -> tuple[str, str | None] | None:
        return self._view.template_state(account, template)

    def tat(self, key: str, now: int) -> int:
        found = self._tats.get(key)
        return self._view.tat(key, now) if found is None else found

    def set_tat(self, key: str, tat: int, now: int) -> None:
        self._tats[key] = tat

    def cooldown_end(self, key: str, now: int) -> int:
        return self._view.cooldown_end(key, now)

    def template_quality(self, account: str, template: str) -> str | None:
        return self._view.template_quality(account, template)

    def tier_override(self, key: str) -> int | None:
        return self._view.tier_override(key)

    def tier_trim(self, key: str, upto: int) -> int:  # expired members only: no booking
        return self._view.tier_trim(key, upto)

    def tier_score(self, key: str, member: str) -> int | None:
        return self._view.tier_score(key, member)

    def tier_oldest(self, key: str) -> int | None:
        return self._view.tier_oldest(key)

    def tier_add(self, key: str, member: str, score: int) -> None:
        pass  # a dry run counts no recipient in the messaging tier

    def fair_score(self, key: str, member: str, since: int) -> int:
        return self._view.fair_score(key, member, since)

    def fair_count(self, key: str, since: int) -> int:
        return self._view.fair_count(key, since)

    def fair_set(self, key: str, member: str, score: int, since: int, until: int) -> None:
        pass  # a dry run books no client's share


def decide(view: View, check: SendCheck, now: int, tiers: wacheck.Tiers | None = None) -> Decision:
    """One request, atomically: refuse (nothing consumed) or book every bucket at once.
    A dry run decides the same and writes nothing. `tiers`: the WhatsApp tier state of the
    decision call this request is part of."""
    if check.dry_run:
        view = _DryView(view)
    wa = _Wa(tiers or wacheck.Tiers()) if check.whatsapp is not None else None
    dropped: list[tuple[int, Rule]] = []
    unconsented: list[int] = []
    otp_tent: dict[str, int] = {}
    otp_keys: list[str] = []
    shadowed: list[Rule] = []
    all_priority = True  # every message kept so far is a priority one
    for index in range(len(check.messages)):
        rule, retry, status, warned, otp_key, prio = _message_rule(
            view, check, index, otp_tent, now, shadowed, wa
        )
        if rule is not None:
            if not check.batch:
                bucket = None
                if rule is Rule.OTP:
                    bucket = otp_bucket_spec(check, check.messages[index].msisdn)
                refusal = Refusal(rule, retry, status, bucket)
                return Decision(
                    refusal=refusal, unconsented=tuple(unconsented), shadowed=tuple(shadowed)
                )
            dropped.append((index, rule))
            continue
        all_priority = all_priority and prio
        if warned:
            unconsented.append(index)
        if otp_key is not None:
            otp_keys.append(otp_key)
    if check.messages and len(dropped) == len(check.messages):
        return Decision(dropped=tuple(dropped), shadowed=tuple(shadowed))
    # no messages (not a send): bulk; a lane given (pacing's fresh slot) wins
    priority = check.lane == PRIORITY if check.lane else bool(check.messages) and all_priority
    forwarded = len(check.messages) - len(dropped)
    slot, over, skip, cost, ticket, fair = _bucket_refusal(
        view, check, now, priority, shadowed, forwarded
    )
    if over is not None:
        return Decision(
            refusal=over,
            dropped=tuple(dropped),
            unconsented=tuple(unconsented),
            shadowed=tuple(shadowed),
            priority=priority,
        )
    remaining = []
    for spec in check.buckets:
        tat = view.tat(spec.key, now)
        if spec.key not in skip:
            _book(view, check, spec, slot, ticket, now)
            tat = view.tat(spec.key, now)
        tat = max(tat, now)  # a ticket's or a shadowed bucket may be empty: full
        left = (spec.burst * spec.interval_us - (tat - now)) // spec.interval_us
        remaining.append((spec.rule, max(0, left)))
    if fair is not None and not any(keys.fair(k) == fair.key for k in skip):
        until = fair.score + (now - fair.since)  # a horizon after its fair TAT
        view.fair_set(fair.key, check.client, fair.score, fair.since, until)
    for key in otp_keys:
        view.set_tat(key, max(view.tat(key, now), slot) + check.otp.interval_us, now)
    if wa is not None and check.whatsapp is not None:
        wacheck.book(view, wa.tiers, check.whatsapp, wa.tent, slot, cost, now, check.dry_run)
    return Decision(
        slot_us=slot,
        wait_us=slot - now,
        dropped=tuple(dropped),
        unconsented=tuple(unconsented),
        remaining=tuple(remaining),
        shadowed=tuple(shadowed),
        priority=priority,
        ticket=ticket,
    )


def _book(view: View, check: SendCheck, spec: BucketSpec, at: int, ticket: bool, now: int) -> None:
    """Book one request-level bucket at `at`: a laned one's real TAT unless this is a bulk
    queue's ticket, its queue unless this is a claim (docs/lanes.md)."""
    lane = lanes.laned(spec, check)
    if not (lane and ticket):
        view.set_tat(spec.key, max(view.tat(spec.key, now), at) + spec.interval_us, now)
    if lane and not check.claim:
        q = keys.queue(spec.key)
        view.set_tat(q, max(view.tat(q, now), at) + spec.interval_us, now)
