"""Sending at the booked slot, and never much later.

A decision books a slot (`Decision.slot_us`, on the store's clock); 8x8 counts the send
when it arrives. The buckets leave room for a send to leave up to `limits.JITTER_S` after
its slot (gateway/policy/limits.py); a send this process comes round to later than LATE_S
after its slot (a saturated event loop, a slow reply) takes a fresh slot instead and goes
then, so what 8x8 sees in any one-second window stays within the limit whatever the
forwarding delay. The late slot stays spent: that costs goodput only when sends are late.

The sleep runs to the slot on this host's clock, not for `wait_us` after the reply came:
a reply that took long does not delay the send further. A late send is booked afresh
(`gateway_late_rebooks_total` counts it); a fresh slot that was free at once and left
tokens to spare then goes even when the busy loop delivers it a little late too (see
`until_slot`). A bulk send that got a ticket in its
laned buckets' queue (`Decision.ticket`, docs/lanes.md) claims its real slot at the
ticket's instant with the same `capacity` check, marked `claim`, and goes at that slot. The slot is on the store's clock
(Redis `TIME`); `SlotClock` maps it onto this host's by the smallest offset seen lately
(as NTP filters delay), so hosts whose clocks differ from Redis's by any amount pace alike.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from gateway.store.base import Decision, Refusal, Rule, SendCheck

LATE_S = 0.003  # later than this after its slot, a send takes a fresh one
REBOOKS = 3  # fresh slots tried before the send is refused as over the limit
OFFSET_WINDOW_S = 10.0  # the offset is the least seen in the last one or two windows


class SlotClock:
    """This host's time of a store-clock instant. Each decision tells the store's time when
    it was made (`slot_us - wait_us`); its arrival here minus that is the clocks' offset
    plus the reply's delay. The least of those seen lately is the best estimate of the
    offset: a slow reply only raises its own sample."""

    def __init__(self) -> None:
        self._cur = self._prev = math.inf
        self._since = 0.0

    def observe(self, decision: Decision, now_s: float) -> None:
        sample = now_s - (decision.slot_us - decision.wait_us) / 1e6
        if now_s - self._since > OFFSET_WINDOW_S:
            self._prev, self._cur, self._since = self._cur, sample, now_s
        elif sample < self._cur:
            self._cur = sample

    def local(self, slot_us: int) -> float:
        """The slot on this host's `time.time()`."""
        offset = min(self._cur, self._prev)
        return slot_us / 1e6 + (0.0 if math.isinf(offset) else offset)


class Decides(Protocol):
    async def decide(self, check: SendCheck) -> Decision: ...


async def until_slot(
    decision: Decision,
    decider: Decides,
    capacity: Callable[[], SendCheck],
    clock: SlotClock,
    on_rebook: Callable[[str], None] | None = None,
) -> Decision:
    """Wait for the decision's slot; the decision the send goes on (a fresh one of the
    `capacity` check when it was late, or its claim when it was a bulk queue's ticket), or a
    refusal when a fresh slot or a claim was refused (nothing more is booked then) or the
    process stayed late REBOOKS times (429, retry in 1 s). `on_rebook(outcome)` is told of
    each fresh booking of a late send: "booked" or "refused"."""
    check: SendCheck | None = None
    rebooks, fresh = 0, False
    while True:
        if not decision.slot_us:  # a store that gives no slot: the wait it told
            if decision.wait_us:
                await asyncio.sleep(decision.wait_us / 1e6)
            return decision
        clock.observe(decision, time.time())
        left = clock.local(decision.slot_us) - time.time()
        if left > 0:
            await asyncio.sleep(left)
            left = clock.local(decision.slot_us) - time.time()
        if decision.ticket:  # a bulk send's turn in its queue: claim its real slot now
            got = await decider.decide(replace(capacity(), claim=True))
            if got.refusal is not None:
                return got
            decision, fresh = replace_capacity(decision, got), True
            continue
        if -left <= LATE_S:
            return decision
        if fresh and not decision.wait_us and not at_edge(decision):
            # a fresh slot booked at once, with tokens to spare: its only lateness is the
            # reply's trip back through this (busy) loop, which another booking would
            # repeat; it goes (re-booking again would refuse sends far under the limit).
            # A first slot is always booked afresh when late: its lateness may be a stall
            # during which the rest of the fleet filled the bucket.
            return decision
        if rebooks == REBOOKS:
            break
        rebooks += 1
        check = check or capacity()
        got = await decider.decide(check)
        if on_rebook is not None:
            on_rebook("refused" if got.refusal is not None else "booked")
        if got.refusal is not None:
            return got
        decision, fresh = replace_capacity(decision, got), True
    bucket = check.buckets[0] if check is not None and check.buckets else None
    rule = bucket.rule if bucket is not None else Rule.SUBACCOUNT
    return Decision(refusal=Refusal(rule, 1_000_000, bucket=bucket))


CAPACITY = frozenset({Rule.SUBACCOUNT, Rule.EGRESS_IP})


def at_edge(decision: Decision) -> bool:
    """Whether the booking took a capacity bucket's last token."""
    return any(n <= 0 for rule, n in decision.remaining if rule in CAPACITY)


def replace_capacity(first: Decision, fresh: Decision) -> Decision:
    """The first decision (its dropped messages) at the fresh slot."""
    return Decision(fresh.wait_us, None, first.dropped, first.unconsented, fresh.remaining,
                    fresh.slot_us, ticket=fresh.ticket)  # fmt: skip
