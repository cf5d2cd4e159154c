"""The store contract: what the policy layer asks of any backing store.

A `Store` answers one question on the hot path (`decide`: may these sends go, now, later,
or not at all) and keeps the compliance records (opt-outs, consent, templates). The
in-process `MemoryStore` and the Redis-backed `RedisStore` implement the same semantics;
the contract suite in tests/contract runs the same cases against both.

Times inside a store are microseconds. Redis uses its own clock (`TIME`), never the
gateway's, so the clocks of gateway hosts never matter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Rule(StrEnum):
    """Why a send (or one message of a batch) is refused, in the order refusals win."""

    OPTED_OUT = "recipient.opted_out"
    NO_CONSENT = "recipient.no_consent"
    TEMPLATE = "template.not_active"
    OTP = "rate_limited.otp_recipient"
    END_USER_IP = "rate_limited.end_user_ip"
    SUBACCOUNT = "rate_limited.subaccount"
    EGRESS_IP = "rate_limited.egress_ip"
    # the send's slot is later than its deadline allows (X-Send-Deadline-Ms, docs/lanes.md)
    DEADLINE = "rate_limited.deadline"
    # WhatsApp's own limits (docs/whatsapp.md); after the others (DEADLINE too) so their
    # codes keep their numbers in lua/decide.lua (9..14)
    SENDER = "rate_limited.sender"
    PAIR = "rate_limited.pair"
    MESSAGING_TIER = "rate_limited.messaging_tier"
    MARKETING_REGION = "recipient.marketing_region"
    SUPPRESSED = "recipient.suppressed"
    TEMPLATE_QUALITY = "template.quality"


#: Rules that drop one message of a batch instead of refusing the whole request.
MESSAGE_RULES = frozenset({
    Rule.OPTED_OUT, Rule.NO_CONSENT, Rule.TEMPLATE, Rule.OTP, Rule.PAIR, Rule.MESSAGING_TIER,
    Rule.MARKETING_REGION, Rule.SUPPRESSED, Rule.TEMPLATE_QUALITY,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One GCRA token bucket.

    `interval_us` is the emission interval T (one token per T); `burst` tokens may go at
    once. In any window of length W at most `burst + W / T` sends pass. `limit` and
    `window_s` are what the RateLimit headers advertise (`limit;w=window_s`).
    """

    rule: Rule
    key: str
    interval_us: int
    burst: int
    limit: int
    window_s: int
    shapeable: bool  # capacity buckets may book a later slot and wait for it


@dataclass(frozen=True, slots=True)
class OtpSpec:
    """Parameters of the per-recipient OTP bucket (one bucket per account + E.164 number)."""

    interval_us: int
    burst: int
    limit: int
    window_s: int


@dataclass(frozen=True, slots=True)
class MessageCheck:
    """One message of a send: its recipient and what it is."""

    msisdn: str  # E.164 with leading '+'
    template: str | None = None  # "name:language" for a template send, else None
    otp: bool = False  # an OTP whatever its template (a Verify session)
    # a template send with no registry entry, of this category (WhatsApp Direct Send:
    # 8x8 makes the template); consent rules apply as to a template of that category
    category: str | None = None


@dataclass(frozen=True, slots=True)
class WhatsAppMessage:
    """The keys of one WhatsApp message's own limits (all under its account's hash tag)."""

    pair: str  # GCRA bucket of (sender, recipient)
    window: str  # present (TTL): the recipient wrote in, its customer-service window is open
    hold: str  # present (TTL): MARKETING held after a 131049/1024 receipt
    suppressed: str  # present (TTL): cannot receive WhatsApp (131026/1018 receipt)


@dataclass(frozen=True, slots=True)
class WhatsAppCheck:
    """WhatsApp's limits for a chat-apps send from a subaccount with a sender number
    (docs/whatsapp.md). `messages` parallels `SendCheck.messages`."""

    sender: BucketSpec | None  # per sender number; counts every message forwarded
    pair_interval_us: int
    pair_burst: int
    tier_key: str  # ZSET of the portfolio: recipient -> last business-initiated send (µs)
    tier: int  # unique recipients per moving window; 0: unlimited (no ZSET)
    tier_override_key: str  # a tier learned from 8x8's account webhook ("" none)
    window_us: int  # the tier's moving window (24 h)
    us_refuse: bool  # MARKETING to +1 numbers refused
    quality_refuse: bool  # MARKETING of a template rated RED refused
    messages: tuple[WhatsAppMessage, ...]
    sender_n: int = 0  # > 0: the sender books this many (a large batch's last call)


@dataclass(frozen=True, slots=True)
class SendCheck:
    """Everything `decide` needs for one request (one message, or one batch)."""

    account: str
    messages: tuple[MessageCheck, ...]
    # request-level buckets, any of end-user IP, subaccount, egress IP, in Rule order
    buckets: tuple[BucketSpec, ...]
    otp: OtpSpec
    cooldown_key: str  # the subaccount's fleet-wide cool-down after an upstream 429
    batch: bool = False  # True: message-level refusals drop the message, not the request
    opt_in: str = "enforce"  # enforce | warn | off
    unknown_template_allowed: bool = False
    max_wait_us: int = 0
    # --- docs/lanes.md: lanes, deadlines, shadow rules, dry runs
    # the part of each shapeable subaccount and egress-IP bucket's TAT horizon (burst *
    # interval + max_wait) that bulk sends may not book, in per mille (0: no lanes)
    reserve_pm: int = 0
    lane: int = 0  # 0: from the messages (priority when every one is), 1 priority, 2 bulk
    deadline_us: int = 0  # bulk sends: refuse when the slot is later than now + this (0: none)
    priority_deadline_us: int = 0  # likewise for priority sends
    shadow: frozenset[Rule] = frozenset()  # rules that only count (gateway_shadow_refusals)
    dry_run: bool = False  # decide, book nothing (POST /admin/v1/decide)
    # a bulk send's claim, at its ticket's instant, of its real slot in the laned buckets
    # (pacing, docs/lanes.md): booked only within the bulk lead, the bulk queue untouched
    claim: bool = False
    whatsapp: WhatsAppCheck | None = None  # None: not a WhatsApp send, nothing extra
    # fairness between the clients of one subaccount (docs/lanes.md): the caller's
    # `[[clients]]` name ("": none, or `limits.fair_clients = false`)
    client: str = ""


#: `SendCheck.lane`: 0 from the messages, PRIORITY or BULK forced
PRIORITY = 1
BULK = 2
#: template categories of the priority lane (with OTPs: Verify, AUTHENTICATION)
PRIORITY_CATEGORIES = frozenset({"AUTHENTICATION", "UTILITY"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal of the whole request; nothing was consumed."""

    rule: Rule
    retry_after_us: int = 0  # rate limits: when a retry could pass
    status: str | None = None  # template.not_active: the stored status (None: unknown)
    bucket: BucketSpec | None = None  # rate limits: the refusing bucket (for headers)
    remaining: int = 0  # tokens left in that bucket


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one `SendCheck`.

    - `refusal` set: refuse the request, nothing consumed.
    - otherwise the slots are booked: sleep `wait_us`, then forward the messages not in
      `dropped`. A batch whose every message is dropped consumed nothing.
    """

    wait_us: int = 0
    refusal: Refusal | None = None
    dropped: tuple[tuple[int, Rule], ...] = ()  # batch: (message index, rule)
    unconsented: tuple[int, ...] = ()  # opt_in = warn: forwarded without consent
    # request-level bucket fill after booking, for RateLimit headers on success
    remaining: tuple[tuple[Rule, int], ...] = field(default=())
    # the booked slot, µs since the epoch on the store's clock (0: unknown); the instant
    # the send should leave, whatever the round trip took (gateway/policy/pacing.py)
    slot_us: int = field(default=0, compare=False)
    # rules in `SendCheck.shadow` that would have refused the send or one of its messages
    shadowed: tuple[Rule, ...] = ()
    priority: bool = False  # decided in the priority lane (docs/lanes.md)
    # a bulk send's ticket in its laned buckets' queue: at the slot it claims its real slot
    # (a `SendCheck.claim`, gateway/policy/pacing.py) before it goes (docs/lanes.md)
    ticket: bool = False


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    msisdn: str
    source: str
    categories: tuple[str, ...]
    timestamp: str  # RFC 3339


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    name: str
    language: str
    status: str  # 8x8's words: APPROVED, PAUSED, DISABLED, REJECTED, PENDING, ...
    category: str | None
    quality: str | None
    updated_at: str  # RFC 3339


@dataclass(frozen=True, slots=True)
class BucketFill:
    rule: Rule
    key: str
    remaining: int
    reset_us: int  # until the bucket is full again


class Store(Protocol):
    """A backing store. `kind` is what /readyz reports: "redis" or "memory"."""

    kind: str

    async def decide(self, check: SendCheck) -> Decision: ...

    async def decide_many(self, checks: Sequence[SendCheck]) -> list[Decision]:
        """Decide several independent requests in one round trip, in order."""
        ...

    async def set_cooldown(self, key: str, duration_us: int) -> None:
        """Hold the bucket behind `key` for `duration_us` (never shortens a longer one)."""
        ...

    async def bucket_fill(self, buckets: Sequence[BucketSpec]) -> list[BucketFill]: ...

    async def hold_buckets(self, holds: Sequence[tuple[str, int]]) -> None:
        """Make each bucket count as booked for at least `busy_for_us` from now (never
        earlier than it already is): how an outage's local bookings are handed back."""
        ...

    async def spend_buckets(self, spends: Sequence[tuple[str, int, int]]) -> None:
        """Book (key, interval_us, n): n sends into each bucket, unconditionally, at its
        earliest free slot (TAT = max(TAT, now) + n * interval): how sends a process let
        through on its local fallback reach the shared buckets of the processes still
        deciding there."""
        ...

    # --- WhatsApp's limits (docs/whatsapp.md)
    async def wa_tier_set(self, key: str, tier: int) -> None:
        """Set a portfolio's tier (0: unlimited) learned from 8x8's account webhook."""
        ...

    async def wa_tier_remove(self, key: str, member: str) -> None:
        """Stop counting a recipient in a portfolio's tier (it was never delivered to)."""
        ...

    async def wa_tier_count(self, key: str, window_us: int) -> int:
        """Recipients a portfolio's tier counts now."""
        ...

    async def optout_add(self, account: str, msisdn: str) -> bool: ...
    async def optout_remove(self, account: str, msisdn: str) -> bool: ...
    async def optout_contains(self, account: str, msisdn: str) -> bool: ...
    async def optout_list(
        self, account: str, cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]: ...

    async def consent_put(self, account: str, record: ConsentRecord) -> None: ...
    async def consent_get(self, account: str, msisdn: str) -> ConsentRecord | None: ...
    async def consent_delete(self, account: str, msisdn: str) -> bool: ...
    def consent_export(self, account: str) -> AsyncIterator[ConsentRecord]: ...

    async def template_put(
        self, account: str, record: TemplateRecord, *, if_newer: bool = False
    ) -> bool:
        """Store `record`; with `if_newer`, only when it is not older than the stored one."""
        ...

    async def template_get(
        self, account: str, name: str, language: str
    ) -> TemplateRecord | None: ...
    async def template_list(
        self, account: str, cursor: str | None, limit: int
    ) -> tuple[list[TemplateRecord], str | None]: ...

    async def ping(self) -> bool: ...
    async def close(self) -> None: ...

    # --- opt-out ordering and scheduled sends

    async def optout_event(
        self, account: str, identities: Sequence[str], opted_out: bool, at_us: int | None
    ) -> list[bool]:
        """Opt each identity (an E.164 number or a `keys.channel_user_id`) out, or back
        in, unless the last change stored for it is later than `at_us` (the change's time,
        µs since the epoch; None: now, always applied, as an admin's change is). Stores
        the change's time with it. One atomic step; answers, per identity, whether the
        change was applied."""
        ...

    async def scheduled_add(self, account: str, identity: str, entry: str, until_us: int) -> None:
        """Remember a scheduled send (`entry`, opaque) to one person until `until_us` (µs
        since the epoch: its scheduled time plus a margin)."""
        ...

    async def scheduled_list(self, account: str, identity: str) -> list[str]:
        """The scheduled sends to one person still remembered."""
        ...

    async def scheduled_remove(self, account: str, identity: str, entry: str) -> None: ...

    # --- privacy: single-use CAPTCHA tokens, PII removal queue, consent erasure

    async def captcha_use(self, digest: str, ttl_ms: int) -> bool:
        """Claim a CAPTCHA token (its SHA-256) for `ttl_ms`: False when it was claimed
        before, fleet-wide (a token is good once)."""
        ...

    async def captcha_release(self, digest: str) -> None:
        """Forget a claim whose token the provider never judged (it was down)."""
        ...

    async def pii_add(self, items: Sequence[tuple[str, int]]) -> None:
        """Queue (entry, due µs since the epoch) for 8x8's PII removal; an entry already
        queued keeps its due time."""
        ...

    async def pii_claim(self, limit: int, lease_us: int) -> tuple[list[str], int | None]:
        """Atomically take up to `limit` due entries, each leased for `lease_us` (it comes
        due again then, unless finished or moved first: a worker that dies mid-call loses
        it to another); and the µs until the next entry is due (None: queue empty)."""
        ...

    async def pii_move(self, old: str, new: str | None, due_us: int) -> None:
        """Finish a claimed entry (`new` None), or replace it by `new` due at `due_us`
        (a retry), in one atomic step."""
        ...

    async def person_erase(self, account: str, msisdn: str, tombstone: str) -> bool:
        """Delete the person's consent record and append `tombstone` (no PII: it proves
        the erasure in the export), in one atomic step; whether a record was there."""
        ...

    def erasures(self, account: str) -> AsyncIterator[str]:
        """The account's tombstones, oldest first."""
        ...
