"""MemoryStore: the store contract in one process (development, demos, tests).

The same semantics as RedisStore: the decision is gcra.decide (the twin of
lua/decide.lua), bucket keys expire when their bucket is full again (purged lazily), and
compliance records live until deleted. Nothing is shared between processes.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator, Callable, Sequence

from gateway.store import gcra, keys, wacheck
from gateway.store.base import (
    BucketFill,
    BucketSpec,
    ConsentRecord,
    Decision,
    SendCheck,
    TemplateRecord,
)

_SWEEP_EVERY = 4096  # decisions between sweeps of expired bucket keys


def _now_us() -> int:
    return time.time_ns() // 1000


def _page(items: list[str], cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """Page through sorted `items`; the cursor is ">" + the last item of the page before."""
    start = 0
    if cursor and cursor != "0":
        if not cursor.startswith(">"):
            raise ValueError(f"bad cursor {cursor!r}")
        start = bisect.bisect_right(items, cursor[1:])
    page = items[start : start + max(1, limit)]
    more = start + len(page) < len(items)
    return page, (">" + page[-1] if more and page else None)


class MemoryStore:
    """The in-process store. `clock` returns µs since the epoch (injectable for tests)."""

    kind = "memory"

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or _now_us
        self._tats: dict[str, tuple[int, int]] = {}  # key -> (TAT, expires at)
        self._cools: dict[str, int] = {}  # key -> expires at
        # subaccount -> (client -> fair TAT, expires at)
        self._fairs: dict[str, tuple[dict[str, int], int]] = {}
        self._optouts: dict[str, set[str]] = {}
        self._consents: dict[str, dict[str, ConsentRecord]] = {}
        self._templates: dict[str, dict[str, tuple[TemplateRecord, int]]] = {}
        self._ops = 0

    # --- gcra.View: what the decision reads and writes
    def opted_out(self, account: str, msisdn: str) -> bool:
        return msisdn in self._optouts.get(account, ())

    def consent_categories(self, account: str, msisdn: str) -> tuple[str, ...] | None:
        record = self._consents.get(account, {}).get(msisdn)
        return None if record is None else record.categories

    def template_state(self, account: str, template: str) -> tuple[str, str | None] | None:
        found = self._templates.get(account, {}).get(template.lower())
        return None if found is None else (found[0].status, found[0].category)

    def now(self) -> int:
        """µs since the epoch on this store's clock."""
        return self._clock()

    def tat(self, key: str, now: int) -> int:
        found = self._tats.get(key)
        if found is None:
            return 0
        if found[1] <= now:
            del self._tats[key]
            return 0
        return found[0]

    def set_tat(self, key: str, tat: int, now: int) -> None:
        self._tats[key] = (tat, now + gcra.ttl_ms(tat, now) * 1000)

    async def hold_buckets(self, holds: Sequence[tuple[str, int]]) -> None:
        now = self._clock()
        for key, busy_for_us in holds:
            if self.tat(key, now) < now + busy_for_us:
                self.set_tat(key, now + busy_for_us, now)

    async def spend_buckets(self, spends: Sequence[tuple[str, int, int]]) -> None:
        now = self._clock()
        for key, interval_us, n in spends:
            self.set_tat(key, max(self.tat(key, now), now) + interval_us * n, now)

    def cooldown_end(self, key: str, now: int) -> int:
        until = self._cools.get(key, 0)
        if until and until <= now:
            del self._cools[key]
            return 0
        # Redis reports the cool-down's TTL in whole ms: the same rounding here
        return now + (until - now) // 1000 * 1000 if until else 0

    # --- fairness between a subaccount's clients (gateway/store/lanes.py): a ZSET whose
    # members go when their fair TAT is past `since`, the key when it expires
    def fair_score(self, key: str, member: str, since: int) -> int:
        score = self._fairs.get(key, ({}, 0))[0].get(member, 0)
        return score if score > since else 0

    def fair_count(self, key: str, since: int) -> int:
        return sum(1 for v in self._fairs.get(key, ({}, 0))[0].values() if v > since)

    def fair_set(self, key: str, member: str, score: int, since: int, until: int) -> None:
        members, expires = self._fairs.get(key, ({}, 0))
        kept = {m: v for m, v in members.items() if v > since}
        kept[member] = score
        self._fairs[key] = (kept, max(expires, until))

    def fair_members(self, key: str) -> dict[str, int]:
        """A subaccount's clients and their fair TATs (tests)."""
        return dict(self._fairs.get(key, ({}, 0))[0])

    # --- WhatsApp's limits (wacheck.TierView): a portfolio's ZSET as member -> score
    def _wa(self) -> _WhatsApp:
        found: _WhatsApp = vars(self).setdefault("_wa_state", _WhatsApp())
        return found

    def template_quality(self, account: str, template: str) -> str | None:
        found = self._templates.get(account, {}).get(template.lower())
        quality = None if found is None else found[0].quality
        return quality.upper() if quality else None

    def tier_override(self, key: str) -> int | None:
        return self._wa().tiers_set.get(key)

    def tier_trim(self, key: str, upto: int) -> int:
        members = self._wa().zsets.get(key)
        if not members:
            return 0
        for gone in [m for m, score in members.items() if score <= upto]:
            del members[gone]
        return len(members)

    def tier_score(self, key: str, member: str) -> int | None:
        return self._wa().zsets.get(key, {}).get(member)

    def tier_oldest(self, key: str) -> int | None:
        members = self._wa().zsets.get(key)
        return min(members.values()) if members else None

    def tier_add(self, key: str, member: str, score: int) -> None:
        self._wa().zsets.setdefault(key, {})[member] = score

    async def wa_tier_set(self, key: str, tier: int) -> None:
        self._wa().tiers_set[key] = tier

    async def wa_tier_remove(self, key: str, member: str) -> None:
        self._wa().zsets.get(key, {}).pop(member, None)

    async def wa_tier_count(self, key: str, window_us: int) -> int:
        return self.tier_trim(key, self._clock() - window_us)

    # --- decisions
    async def decide(self, check: SendCheck) -> Decision:
        return (await self.decide_many((check,)))[0]

    async def decide_many(self, checks: Sequence[SendCheck]) -> list[Decision]:
        now = self._clock()
        self._ops += len(checks)
        if self._ops >= _SWEEP_EVERY:
            self._sweep(now)
        tiers = wacheck.Tiers()  # one call's tier state, as decide.lua keeps it per call
        return [gcra.decide(self, check, now, tiers) for check in checks]

    async def set_cooldown(self, key: str, duration_us: int) -> None:
        now = self._clock()
        until = now + max(1, -(-duration_us // 1000)) * 1000
        if self._cools.get(key, 0) < until:
            self._cools[key] = until

    async def bucket_fill(self, buckets: Sequence[BucketSpec]) -> list[BucketFill]:
        now = self._clock()
        out = []
        for spec in buckets:
            left, reset = gcra.fill(self.tat(spec.key, now), spec.interval_us, spec.burst, now)
            out.append(BucketFill(spec.rule, spec.key, left, reset))
        return out

    def pttl(self, key: str) -> int:
        """A bucket or cool-down key's TTL in ms, as Redis' PTTL answers it (-2: none)."""
        now = self._clock()
        until = self._tats[key][1] if key in self._tats else self._cools.get(key, 0)
        return -((now - until) // 1000) if until > now else -2

    def _sweep(self, now: int) -> None:
        self._ops = 0
        self._tats = {k: v for k, v in self._tats.items() if v[1] > now}
        self._cools = {k: v for k, v in self._cools.items() if v > now}
        self._fairs = {k: v for k, v in self._fairs.items() if v[1] > now}

    # --- opt-outs
    async def optout_add(self, account: str, msisdn: str) -> bool:
        members = self._optouts.setdefault(account, set())
        added = msisdn not in members
        members.add(msisdn)
        return added

    async def optout_remove(self, account: str, msisdn: str) -> bool:
        members = self._optouts.get(account, set())
        found = msisdn in members
        members.discard(msisdn)
        return found

    async def optout_contains(self, account: str, msisdn: str) -> bool:
        return self.opted_out(account, msisdn)

    async def optout_list(
        self, account: str, cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        return _page(sorted(self._optouts.get(account, ())), cursor, limit)

    # --- consent
    async def consent_put(self, account: str, record: ConsentRecord) -> None:
        self._consents.setdefault(account, {})[record.msisdn] = record

    async def consent_get(self, account: str, msisdn: str) -> ConsentRecord | None:
        return self._consents.get(account, {}).get(msisdn)

    async def consent_delete(self, account: str, msisdn: str) -> bool:
        return self._consents.get(account, {}).pop(msisdn, None) is not None

    async def consent_export(self, account: str) -> AsyncIterator[ConsentRecord]:
        records = self._consents.get(account, {})
        for msisdn in sorted(records):
            record = records.get(msisdn)
            if record is not None:
                yield record

    # --- templates
    async def template_put(
        self, account: str, record: TemplateRecord, *, if_newer: bool = False
    ) -> bool:
        ts = gcra.instant_us(record.updated_at)
        records = self._templates.setdefault(account, {})
        field = keys.template_id(record.name, record.language)
        stored = records.get(field)
        if if_newer and stored is not None and stored[1] > ts:
            return False
        records[field] = (record, ts)
        return True

    async def template_get(self, account: str, name: str, language: str) -> TemplateRecord | None:
        found = self._templates.get(account, {}).get(keys.template_id(name, language))
        return None if found is None else found[0]

    async def template_list(
        self, account: str, cursor: str | None, limit: int
    ) -> tuple[list[TemplateRecord], str | None]:
        records = self._templates.get(account, {})
        fields, cursor = _page(sorted(records), cursor, limit)
        return [records[f][0] for f in fields], cursor

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    # --- opt-out ordering and scheduled sends (state created on first use)
    def _later(self) -> _Later:
        found: _Later = vars(self).setdefault("_later_state", _Later())
        return found

    async def optout_event(
        self, account: str, identities: Sequence[str], opted_out: bool, at_us: int | None
    ) -> list[bool]:
        times = self._later().optout_at.setdefault(account, {})
        members = self._optouts.setdefault(account, set())
        out = []
        for identity in identities:
            stored = times.get(identity)
            if at_us is None:
                when: int | None = max(self._clock(), stored or 0)
            else:
                when = at_us if stored is None or at_us >= stored else None
            if when is not None:
                if opted_out:
                    members.add(identity)
                else:
                    members.discard(identity)
                times[identity] = when
            out.append(when is not None)
        return out

    async def scheduled_add(self, account: str, identity: str, entry: str, until_us: int) -> None:
        entries = self._later().scheduled.setdefault((account, identity), {})
        entries[entry] = max(until_us, entries.get(entry, 0))
        now = self._clock()
        for gone in [e for e, until in entries.items() if until <= now]:
            del entries[gone]

    async def scheduled_list(self, account: str, identity: str) -> list[str]:
        now = self._clock()
        entries = self._later().scheduled.get((account, identity), {})
        return sorted(e for e, until in entries.items() if until > now)

    async def scheduled_remove(self, account: str, identity: str, entry: str) -> None:
        self._later().scheduled.get((account, identity), {}).pop(entry, None)

    # --- privacy (state created on first use)
    def _privacy(self) -> _Privacy:
        found: _Privacy = vars(self).setdefault("_privacy_state", _Privacy())
        return found

    async def captcha_use(self, digest: str, ttl_ms: int) -> bool:
        tokens, now = self._privacy().tokens, self._clock()
        if tokens.get(digest, 0) > now:
            return False
        if len(tokens) > 100_000:
            for gone in [d for d, until in tokens.items() if until <= now]:
                del tokens[gone]
        tokens[digest] = now + ttl_ms * 1000
        return True

    async def captcha_release(self, digest: str) -> None:
        self._privacy().tokens.pop(digest, None)

    async def pii_add(self, items: Sequence[tuple[str, int]]) -> None:
        queue = self._privacy().pii
        for entry, due_us in items:
            queue.setdefault(entry, due_us)

    async def pii_claim(self, limit: int, lease_us: int) -> tuple[list[str], int | None]:
        queue, now = self._privacy().pii, self._clock()
        due = sorted((at, e) for e, at in queue.items() if at <= now)[: max(0, limit)]
        for _, entry in due:
            queue[entry] = now + lease_us
        nxt = min(queue.values(), default=None)
        return [e for _, e in due], None if nxt is None else max(0, nxt - now)

    async def pii_move(self, old: str, new: str | None, due_us: int) -> None:
        queue = self._privacy().pii
        if queue.pop(old, None) is not None and new is not None:
            queue[new] = due_us

    async def person_erase(self, account: str, msisdn: str, tombstone: str) -> bool:
        found = self._consents.get(account, {}).pop(msisdn, None) is not None
        self._privacy().erased.setdefault(account, []).append(tombstone)
        return found

    async def erasures(self, account: str) -> AsyncIterator[str]:
        for tombstone in list(self._privacy().erased.get(account, ())):
            yield tombstone


class _WhatsApp:
    """MemoryStore's WhatsApp tier state: portfolio ZSETs and tiers learned from webhooks."""

    def __init__(self) -> None:
        self.zsets: dict[str, dict[str, int]] = {}
        self.tiers_set: dict[str, int] = {}


class _Later:
    """MemoryStore's opt-out change times and scheduled sends."""

    def __init__(self) -> None:
        self.optout_at: dict[str, dict[str, int]] = {}
        self.scheduled: dict[tuple[str, str], dict[str, int]] = {}


class _Privacy:
    """MemoryStore's used CAPTCHA tokens, PII removal queue and erasure tombstones."""

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}  # digest -> forget at (µs)
        self.pii: dict[str, int] = {}  # entry -> due (µs)
        self.erased: dict[str, list[str]] = {}  # account -> tombstones
