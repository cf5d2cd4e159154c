"""WhatsApp's own limits in process: the twin of decide.lua's WHATSAPP block (the memory
store's decision, gateway/store/gcra.py). docs/whatsapp.md says what they enforce.

Per message: a suppressed number (131026 receipt), then for MARKETING the +1 region, the
marketing hold (131049 receipt) and a template rated RED, then the pair's GCRA bucket, then
the portfolio's messaging tier (a recipient outside its customer-service window that is not
yet counted needs room under the tier). Per request: the sender number's bucket, one token
per message forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.store.base import Rule, WhatsAppCheck


class TierView(Protocol):
    """The WhatsApp state the decision reads and writes beyond buckets and cool-downs."""

    def tat(self, key: str, now: int) -> int: ...
    def set_tat(self, key: str, tat: int, now: int) -> None: ...
    def cooldown_end(self, key: str, now: int) -> int: ...
    def template_quality(self, account: str, template: str) -> str | None: ...
    def tier_override(self, key: str) -> int | None: ...
    def tier_trim(self, key: str, upto: int) -> int:
        """Drop members scored at or before `upto`; how many are left."""
        ...

    def tier_score(self, key: str, member: str) -> int | None: ...
    def tier_oldest(self, key: str) -> int | None: ...
    def tier_add(self, key: str, member: str, score: int) -> None: ...


@dataclass(slots=True)
class Pending:
    """What one message would book: its pair bucket's TAT, its tier membership."""

    pair: str | None  # None: a shadowed pair refusal, nothing to book
    pair_tat: int
    member: str | None
    new: bool


@dataclass(slots=True)
class Tentative:
    """One request's WhatsApp bookings to be, in message order."""

    pair: dict[str, int] = field(default_factory=dict)
    tier: set[str] = field(default_factory=set)
    n_new: int = 0
    booked: list[Pending] = field(default_factory=list)

    def keep(self, p: Pending) -> None:
        if p.pair is not None:
            self.pair[p.pair] = p.pair_tat
        self.booked.append(p)
        if p.member is not None:
            self.tier.add(p.member)
        if p.new:
            self.n_new += 1


class Tiers:
    """Tier state per decision call: (tier in force, members counted), trimmed once."""

    def __init__(self) -> None:
        self.state: dict[str, list[int]] = {}

    def of(self, view: TierView, w: WhatsAppCheck, now: int) -> list[int]:
        st = self.state.get(w.tier_key)
        if st is None:
            eff = w.tier
            if w.tier_override_key:
                found = view.tier_override(w.tier_override_key)
                if found is not None:
                    eff = found
            n = view.tier_trim(w.tier_key, now - w.window_us) if eff > 0 else 0
            st = self.state[w.tier_key] = [eff, n]
        return st


def message_rule(
    view: TierView,
    tiers: Tiers,
    w: WhatsAppCheck,
    index: int,
    msisdn: str,
    record: tuple[str | None, str | None] | None,
    tent: Tentative,
    now: int,
    shadow: frozenset[Rule] = frozenset(),
    shadowed: list[Rule] | None = None,
) -> tuple[Rule | None, int, Pending | None]:
    """(rule or None, retry_after, what it would book) of message `index`; `record` is
    (category, quality) of its template, None without a template. A rule in `shadow` that
    would refuse is added to `shadowed` instead (docs/lanes.md); a shadowed pair or tier
    books nothing for the rule it broke."""

    def enforced(rule: Rule) -> bool:
        if rule in shadow:
            if shadowed is not None:
                shadowed.append(rule)
            return False
        return True

    keys = w.messages[index]
    till = view.cooldown_end(keys.suppressed, now)
    if till > now and enforced(Rule.SUPPRESSED):
        return Rule.SUPPRESSED, till - now, None
    if record is not None and record[0] == "MARKETING":
        if w.us_refuse and msisdn.startswith("+1") and enforced(Rule.MARKETING_REGION):
            return Rule.MARKETING_REGION, 0, None
        till = view.cooldown_end(keys.hold, now)
        if till > now and enforced(Rule.SUPPRESSED):
            return Rule.SUPPRESSED, till - now, None
        if w.quality_refuse and record[1] == "RED" and enforced(Rule.TEMPLATE_QUALITY):
            return Rule.TEMPLATE_QUALITY, 0, None
    cur = tent.pair.get(keys.pair)
    if cur is None:
        cur = view.tat(keys.pair, now)
    slot = cur + w.pair_interval_us - w.pair_burst * w.pair_interval_us
    pair: str | None = keys.pair
    if slot > now:
        if enforced(Rule.PAIR):
            return Rule.PAIR, slot - now, None
        pair = None
    member, new = None, False
    if view.cooldown_end(keys.window, now) == 0:
        st = tiers.of(view, w, now)
        if st[0] > 0:
            member = msisdn
            if msisdn not in tent.tier and view.tier_score(w.tier_key, msisdn) is None:
                if st[1] + tent.n_new >= st[0]:
                    if enforced(Rule.MESSAGING_TIER):
                        oldest = view.tier_oldest(w.tier_key)
                        retry = w.window_us if oldest is None else oldest + w.window_us - now
                        return Rule.MESSAGING_TIER, retry, None
                    member = None
                else:
                    new = True
    return None, 0, Pending(pair, max(cur, now) + w.pair_interval_us, member, new)


def sender_slot(
    view: TierView, w: WhatsAppCheck, forwarded: int, now: int
) -> tuple[int | None, int]:
    """(earliest instant the sender bucket takes the `forwarded` messages at once (a GCRA of
    n cells; over the burst: once the bucket is idle), or None; tokens it books)."""
    spec = w.sender
    if spec is None:
        return None, 0
    cost = w.sender_n or forwarded
    if cost == 0:
        return None, 0
    tat = view.tat(spec.key, now)
    return max(now, tat + (min(cost, spec.burst) - spec.burst) * spec.interval_us), cost


def book(
    view: TierView,
    tiers: Tiers,
    w: WhatsAppCheck,
    tent: Tentative,
    slot: int,
    cost: int,
    now: int,
    dry: bool = False,
) -> None:
    """Book the sender, the pairs and the tier members at `slot` (a dry run: `view` keeps
    the TATs to itself, no tier member is added or counted)."""
    if cost > 0 and w.sender is not None:
        key = w.sender.key
        view.set_tat(key, max(view.tat(key, now), slot) + cost * w.sender.interval_us, now)
    added = 0
    for p in tent.booked:
        if p.pair is not None:
            view.set_tat(p.pair, max(view.tat(p.pair, now), slot) + w.pair_interval_us, now)
        if p.member is not None and not dry:
            view.tier_add(w.tier_key, p.member, slot)
            added += p.new
    st = tiers.state.get(w.tier_key)
    if st is not None:
        st[1] += added
