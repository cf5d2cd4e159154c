"""Priority lanes in the laned buckets (docs/lanes.md): the in-process twin of the lanes
block of lua/decide.lua, for gateway/store/gcra.py.

A laned bucket (a shapeable subaccount or egress-IP bucket, with a reserve) keeps two TATs:
the real one, which every forwarded send books at the slot it goes at (the upstream's GCRA
envelope), and the bulk queue (`keys.queue`), which counts every send too, the bulk sends
still waiting for their turn included. A priority send books both, at its slot, as far as
the whole horizon. A bulk send books both at once when its queue and the real TAT put it
within the *lead* (it goes at once or nearly); otherwise it takes a ticket in the queue,
`lead` before the slot the queue gives it, and at the ticket's instant claims its real slot
(`SendCheck.claim`, gateway/policy/pacing.py), which must fall within the lead again. So
the real TAT only ever holds bulk sends about to go, and a priority send waits behind a
bulk flood at most the lead plus one interval.

Fairness between the clients of one subaccount (`SendCheck.client`): each client keeps a
fair-share TAT in the subaccount's ZSET (`keys.fair`), booked by its bulk sends at now with
`k` intervals each, `k` the clients that sent within the last horizon (their fair TAT is
less than a horizon behind now; itself included): how far ahead of now its sends would
reach if it were served its 1/k of the rate. Alone (k = 1) a client has bulk's whole
reach, as without fairness. With others (k >= 2) a client within its share (its fair TAT
within bulk's reach) may move the queue as far as the horizon, and one past its share only
to 1/k of bulk's reach: a flood keeps the queue full enough for the bucket to stay busy,
and leaves the rest of it to the clients within their shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.store import keys
from gateway.store.base import BucketSpec, Refusal, Rule, SendCheck

#: the buckets with lanes (the contract's `reserved_share` applies to nothing else)
LANED = frozenset({Rule.SUBACCOUNT, Rule.EGRESS_IP})
_RANK = {rule: i for i, rule in enumerate(Rule)}


def laned(spec: BucketSpec, check: SendCheck) -> bool:
    """Whether the bucket has a bulk queue in this check."""
    return bool(check.reserve_pm) and spec.shapeable and spec.rule in LANED


def lead_us(check: SendCheck, specs: Sequence[BucketSpec]) -> int:
    """How far ahead of now a bulk send may book the real TAT of laned buckets: a burst,
    and never more than the reserved share of the bucket's horizon (burst x interval +
    max_wait); the least over `specs`."""
    out = None
    for b in specs:
        full = b.burst * b.interval_us
        lead = min(full, check.reserve_pm * (full + check.max_wait_us) // 1000)
        out = lead if out is None else min(out, lead)
    return out or 0


def bulk_reach(spec: BucketSpec, check: SendCheck, now: int) -> int:
    """The furthest a bulk send may move a laned bucket's queue: its horizon (burst x
    interval + max_wait, the furthest any booking may reach) less the reserved share."""
    horizon = spec.burst * spec.interval_us + check.max_wait_us
    return now + horizon - check.reserve_pm * horizon // 1000


class FairView(Protocol):
    """The clients' fair-share TATs of a subaccount (a ZSET: client name -> TAT); members
    whose TAT is not after `since` count as gone."""

    def fair_score(self, key: str, member: str, since: int) -> int: ...
    def fair_count(self, key: str, since: int) -> int: ...
    def fair_set(self, key: str, member: str, score: int, since: int, until: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Fair:
    """A bulk send's place among its subaccount's clients."""

    key: str  # the subaccount's ZSET of clients
    score: int  # the client's fair TAT after this send (what is booked)
    since: int  # members not after this are gone (a horizon before now)
    limit: int  # the furthest this send may move the subaccount's queue


def fair_of(view: FairView, spec: BucketSpec, check: SendCheck, now: int) -> Fair:
    """The client's fair TAT in the subaccount bucket `spec` after one more bulk send
    (booked at now with k intervals, no further than the horizon), and how far its queue
    may go for it: bulk's reach alone; with others, the horizon within its share, 1/k of
    bulk's reach past it."""
    key = keys.fair(spec.key)
    horizon = spec.burst * spec.interval_us + check.max_wait_us
    since = now - horizon
    own = view.fair_score(key, check.client, since)
    k = view.fair_count(key, since) + (0 if own > since else 1)
    after = max(own, now) + k * spec.interval_us
    reach = bulk_reach(spec, check, now)
    limit = reach
    if k > 1:
        limit = now + horizon if after <= reach else now + (reach - now) // k
    return Fair(key, min(after, now + horizon), since, limit)


def _earliest(tat: int, spec: BucketSpec, now: int) -> int:
    return max(now, tat + spec.interval_us - spec.burst * spec.interval_us)


@dataclass(frozen=True, slots=True)
class BulkSlot:
    """Where a bulk send books its laned buckets."""

    at: int  # the instant it books: its slot, or its ticket's
    ticket: bool  # only the queues are booked; the real slot is claimed at `at`
    expect: int  # when it should go (the deadline is checked against it)
    refusal: Refusal | None  # a queue moved past bulk's reach
    fair: Fair | None = None  # the client's fair TAT to book (SendCheck.client)


def _live(check: SendCheck, skip: set[str]) -> list[BucketSpec]:
    """The laned buckets that may delay the send (not shadowed, not skipped)."""
    return [
        b
        for b in check.buckets
        if laned(b, check) and b.key not in skip and b.rule not in check.shadow
    ]


def bulk_slot(
    tat: Callable[[str], int],
    check: SendCheck,
    now: int,
    slot: int,
    shadowed: list[Rule],
    skip: set[str],
    view: FairView | None = None,
    floor: int = 0,
) -> BulkSlot:
    """A bulk send's place in its laned buckets, `slot` being the common slot of the real
    TATs. A laned bucket whose queue it would move past bulk's reach refuses it (shadowed:
    counted, and the bucket neither refuses nor is booked: added to `skip`), but the
    subaccount's, with `view` (the fair TATs) and `check.client`, as far as `fair_of`
    lets this client move it. A ticket is never before `floor`."""
    live = _live(check, skip)
    expect = slot
    for b in live:
        expect = max(expect, _earliest(tat(keys.queue(b.key)), b, now))
    lead = lead_us(check, live)
    ticket = bool(live) and expect - now > lead
    # half the lead: the claim's slack; never before `floor`, the slot of a bucket the
    # claim does not see again (the WhatsApp sender's)
    at = max(expect - lead // 2, floor) if ticket else slot
    best, fair = None, None
    for b in check.buckets:
        if not laned(b, check) or b.key in skip:
            continue
        after = max(tat(keys.queue(b.key)), at) + b.interval_us
        reach = bulk_reach(b, check, now)
        if b.rule is Rule.SUBACCOUNT and check.client and view is not None:
            fair = fair_of(view, b, check, now)
            reach = fair.limit
        if after > reach:
            if b.rule in check.shadow:
                shadowed.append(b.rule)
                skip.add(b.key)
            elif best is None or _RANK[b.rule] < _RANK[best.rule]:
                best = Refusal(b.rule, after - reach, bucket=b)
    return BulkSlot(at, ticket, expect, best, fair)


def claim_refusal(
    check: SendCheck, now: int, slot: int, slot_spec: BucketSpec | None, skip: set[str]
) -> Refusal | None:
    """A claim's refusal: its real slot is further than the lead (priority sends took the
    slots its ticket counted on)."""
    live = _live(check, skip)
    lead = lead_us(check, live)
    if not live or slot - now <= lead:
        return None
    spec = slot_spec if slot_spec is not None and slot_spec in live else live[0]
    return Refusal(spec.rule, slot - now - lead, bucket=spec)
