"""RedisStore: the store contract on Redis, one script call per micro-batch of decisions.

`decide_many` sends every request of a micro-batch to lua/decide.lua in ONE EVALSHA: the
keys it may touch go once each in KEYS, the requests as one JSON blob in ARGV[1] naming
keys by index, and the answer comes back as a flat array of integers (see the script's
header; the wire format is gateway/store/codec.py's). A batch over CHUNK messages is decided
in several calls of at most CHUNK messages, then one for its buckets, so no call's work is
unbounded. Every call is journaled, so a decision this fails or gives up on is undone
(gateway/store/journal.py). Compliance records are a set (opt-outs) and two hashes
(consent, templates; fields `keys.template_id`) per account, JSON values, no TTL; every
write also appends to the account's change stream (lua/change.lua), which every worker's
copy follows. Works with clients built with or without decode_responses.

Standalone and Sentinel clients take that single-call path. On a Redis Cluster client a
decision's keys span several slots, so `decide_many` and `bucket_fill` go through
gateway/store/cluster.py instead (one call per slot, same guarantees); everything else is
one key per command and works on any client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis, RedisCluster

from gateway.store import gcra, keys
from gateway.store.base import (
    BULK,
    PRIORITY,
    BucketFill,
    BucketSpec,
    ConsentRecord,
    Decision,
    SendCheck,
    TemplateRecord,
    WhatsAppCheck,
)
from gateway.store.channel import Channel, channel_for
from gateway.store.cluster import SlotSplit
from gateway.store.codec import decode, encode
from gateway.store.codec import text as _text
from gateway.store.journal import (
    JOURNAL_MS,
    Canceller,
    DecisionCancelled,
    Journal,
    Journals,
    reply_cancelled,
)
from gateway.store.scripts import ScriptClient, script

CHUNK = 1_000  # messages per script call: a larger batch is decided in several calls
STREAM_LEN = 100_000  # entries kept (roughly) in an account's change stream


class Closable(Protocol):
    async def aclose(self) -> None: ...


class RedisStore:
    """The store on a Redis client the caller built (timeouts, pool, fallback are theirs).

    `close()` closes that client, and `also_close` (a Sentinel's own connections).
    """

    kind = "redis"

    def __init__(
        self, client: Redis | RedisCluster, *, also_close: Sequence[Closable] = ()
    ) -> None:
        self.client = client
        self._also_close = tuple(also_close)
        self._decide = script("decide")
        self._cooldown = script("cooldown")
        self._template_put = script("template_put")
        self._change = script("change")
        self._split: SlotSplit | None = None
        self._channel: Channel | None = None
        if isinstance(client, RedisCluster):
            self._split = SlotSplit(client)
        else:
            self._channel = channel_for(client)
        # the decision call: over a lean pipelined channel (gateway/store/channel.py) when
        # the connection allows one, else through the redis-py client
        self._calls: ScriptClient = self._channel if self._channel is not None else client
        self._canceller = Canceller(client)

    async def decide(self, check: SendCheck) -> Decision:
        return (await self.decide_many((check,)))[0]

    async def decide_many(self, checks: Sequence[SendCheck]) -> list[Decision]:
        """Decide `checks`; a batch over CHUNK messages in several bounded calls. Every call
        journals its bookings under a decision id: when this fails or is cancelled (the
        Decider's timeout), the decisions are undone in the background (lua/cancel.lua),
        so a decision nobody heard the answer of leaves nothing booked."""
        if not checks:
            return []
        if self._split is not None:
            return await self._split.decide_many(checks)
        journals: list[Journal] = []
        try:
            return await self._decide_journaled(checks, journals)
        except BaseException:
            self._canceller.later(journals)
            raise

    async def _decide_journaled(
        self, checks: Sequence[SendCheck], journals: list[Journal]
    ) -> list[Decision]:
        out: list[Decision | None] = [None] * len(checks)
        small = [i for i, c in enumerate(checks) if not _chunked(c)]
        if small:  # first, so that no small request waits behind a large batch
            part = [checks[i] for i in small]
            journal = _journal(journals)
            for i, decision in zip(small, await self._call(part, journal), strict=True):
                out[i] = decision
        for i, c in enumerate(checks):
            if out[i] is None:
                out[i] = await self._decide_large(c, _journal(journals))
        return [d for d in out if d is not None]

    async def _call(self, checks: Sequence[SendCheck], journal: Journal) -> list[Decision]:
        names, blob = encode(checks)
        call_keys, ix = journal.call_keys(names)
        reply = await self._decide(self._calls, call_keys, (blob, "", ix, JOURNAL_MS))
        if reply_cancelled(reply):
            raise DecisionCancelled("the decision was cancelled before it ran")
        return decode(checks, reply)

    async def _decide_large(self, check: SendCheck, journal: Journal) -> Decision:
        """A batch over CHUNK messages: the message rules chunk by chunk (each chunk books
        its OTP buckets), then the request's buckets; a refusal there cancels the chunks'
        bookings, so the whole request is still all-or-nothing."""
        dropped: list[tuple[int, Any]] = []
        uncons: list[int] = []
        shadowed: list[Any] = []
        priority = True  # every chunk's kept messages are priority ones (docs/lanes.md)
        n = len(check.messages)
        for start in range(0, n, CHUNK):
            part = replace(check, messages=check.messages[start : start + CHUNK], buckets=(),
                           cooldown_key="", batch=True,
                           whatsapp=_wa_part(check, start))  # fmt: skip
            (found,) = await self._call((part,), journal)
            dropped += ((start + i, rule) for i, rule in found.dropped)
            uncons += (start + i for i in found.unconsented)
            shadowed += found.shadowed
            if len(found.dropped) < len(part.messages):
                priority = priority and found.priority
        if len(dropped) == n:
            return Decision(dropped=tuple(dropped), shadowed=tuple(shadowed))
        lane = check.lane or (PRIORITY if priority else BULK)
        wa = _wa_last(check, n - len(dropped))
        (found,) = await self._call((replace(check, messages=(), lane=lane, whatsapp=wa),), journal)
        if found.refusal is not None:
            await self._canceller.cancel(journal)
        return Decision(found.wait_us, found.refusal, tuple(dropped), tuple(uncons),
                        found.remaining, found.slot_us, (*shadowed, *found.shadowed),
                        found.priority, found.ticket)  # fmt: skip

    async def set_cooldown(self, key: str, duration_us: int) -> None:
        await self._cooldown(self.client, (key,), (max(1, -(-duration_us // 1000)),))

    async def bucket_fill(self, buckets: Sequence[BucketSpec]) -> list[BucketFill]:
        if self._split is not None:
            return await self._split.bucket_fill(buckets)
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        for spec in buckets:
            pipe.get(spec.key)
        (seconds, micros), *tats = await pipe.execute()
        now = int(seconds) * 1_000_000 + int(micros)
        out = []
        for spec, tat in zip(buckets, tats, strict=True):
            left, reset = gcra.fill(int(tat or 0), spec.interval_us, spec.burst, now)
            out.append(BucketFill(spec.rule, spec.key, left, reset))
        return out

    # --- WhatsApp's limits: a portfolio's tier from 8x8's account webhook, its ZSET
    async def wa_tier_set(self, key: str, tier: int) -> None:
        await self.client.set(key, str(tier), px=30 * 86_400_000)

    async def wa_tier_remove(self, key: str, member: str) -> None:
        await self.client.zrem(key, member)

    async def wa_tier_count(self, key: str, window_us: int) -> int:
        """Recipients counted now (members of the moving window)."""
        seconds, micros = await self.client.time()
        now = int(seconds) * 1_000_000 + int(micros)
        return int(await self.client.zcount(key, f"({now - window_us}", "+inf"))

    async def hold_buckets(self, holds: Sequence[tuple[str, int]]) -> None:
        hold = script("hold")
        await asyncio.gather(*(hold(self.client, [key], [busy]) for key, busy in holds))

    async def spend_buckets(self, spends: Sequence[tuple[str, int, int]]) -> None:
        spend = script("spend")
        await asyncio.gather(*(spend(self.client, [key], [iv, n]) for key, iv, n in spends))

    # --- opt-outs: a set per account
    async def optout_add(self, account: str, msisdn: str) -> bool:
        return bool(
            await self._changed(account, keys.optouts(account), "SADD", msisdn, "", "o", "1")
        )

    async def optout_remove(self, account: str, msisdn: str) -> bool:
        return bool(
            await self._changed(account, keys.optouts(account), "SREM", msisdn, "", "o", "0")
        )

    async def optout_contains(self, account: str, msisdn: str) -> bool:
        return bool(await self.client.sismember(keys.optouts(account), msisdn))

    async def optout_list(
        self, account: str, cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        return await self._scan_page(keys.optouts(account), cursor, limit, 1)

    # --- consent: a hash per account, msisdn -> JSON
    async def consent_put(self, account: str, record: ConsentRecord) -> None:
        value = {"source": record.source, "categories": list(record.categories),
                 "timestamp": record.timestamp}  # fmt: skip
        cats = orjson.dumps([c.upper() for c in record.categories if isinstance(c, str)])
        await self._changed(account, keys.consents(account), "HSET", record.msisdn,
                            orjson.dumps(value), "c", cats)  # fmt: skip

    async def consent_get(self, account: str, msisdn: str) -> ConsentRecord | None:
        raw = await self.client.hget(keys.consents(account), msisdn)
        return None if raw is None else _consent(msisdn, raw)

    async def consent_delete(self, account: str, msisdn: str) -> bool:
        return bool(
            await self._changed(account, keys.consents(account), "HDEL", msisdn, "", "c", "")
        )

    async def _changed(
        self, account: str, key: str, command: str, member: str, value: bytes | str,
        kind: str, change: bytes | str,
    ) -> Any:  # fmt: skip
        """One compliance write and its entry in the account's change stream, atomically
        (lua/change.lua): every worker's copy follows it (gateway/store/tail.py)."""
        args = (command, member, value, kind, change, STREAM_LEN)
        return await self._change(self.client, (key, keys.changes(account)), args)

    async def consent_export(self, account: str) -> AsyncIterator[ConsentRecord]:
        async for msisdn, raw in self.client.hscan_iter(keys.consents(account), count=500):
            yield _consent(_text(msisdn), raw)

    # --- templates: a hash per account, "name:language" -> JSON (+ "ts": updatedAt in µs)
    async def template_put(
        self, account: str, record: TemplateRecord, *, if_newer: bool = False
    ) -> bool:
        ts = gcra.instant_us(record.updated_at)
        value = orjson.dumps({"name": record.name, "language": record.language,
                              "status": record.status, "category": record.category,
                              "quality": record.quality, "updatedAt": record.updated_at,
                              "ts": ts})  # fmt: skip
        field = keys.template_id(record.name, record.language)
        cat = record.category.upper() if record.category else None
        change = orjson.dumps([record.status, cat])
        args = (field, value, ts, int(if_newer), change, STREAM_LEN)
        names = (keys.templates(account), keys.changes(account))
        return bool(await self._template_put(self.client, names, args))

    async def template_get(self, account: str, name: str, language: str) -> TemplateRecord | None:
        field = keys.template_id(name, language)
        raw = await self.client.hget(keys.templates(account), field)
        return None if raw is None else _template(field, raw)

    async def template_list(
        self, account: str, cursor: str | None, limit: int
    ) -> tuple[list[TemplateRecord], str | None]:
        page, nxt = await self._scan_page(keys.templates(account), cursor, limit, 2)
        return [_template(page[j], page[j + 1]) for j in range(0, len(page), 2)], nxt

    async def _scan_page(
        self, key: str, cursor: str | None, limit: int, width: int
    ) -> tuple[list[str], str | None]:
        """One page of at most `limit` items of SSCAN (width 1) or HSCAN (width 2, flat).

        The cursor is "<scan cursor>:<items of that scan step already returned>": a step
        may answer more than `limit` items, and the same step repeated on an unchanged key
        answers the same ones. A malformed cursor raises ValueError.
        """
        limit = max(1, limit)
        scan_text, _, skip_text = (cursor or "0").partition(":")
        scan, skip = int(scan_text), int(skip_text or 0)
        items: list[str] = []
        while True:
            nxt, flat = await self._scan_step(key, scan, max(limit, 10), width)
            step = flat[skip * width :]
            room = (limit - len(items) // width) * width
            if len(step) > room:
                return items + step[:room], f"{scan}:{skip + room // width}"
            items += step
            if nxt == 0:
                return items, None
            scan, skip = nxt, 0
            if len(items) >= limit * width:
                return items, str(scan)

    async def _scan_step(
        self, key: str, scan: int, count: int, width: int
    ) -> tuple[int, list[str]]:
        if width == 1:
            nxt, members = await self.client.sscan(key, scan, count=count)
            return int(nxt), [_text(x) for x in members]
        nxt, pairs = await self.client.hscan(key, scan, count=count)
        flat = [x for kv in pairs.items() for x in kv] if isinstance(pairs, dict) else pairs
        return int(nxt), [_text(x) for x in flat]

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._split is not None:
            await self._split.aclose()
        await self._canceller.close()
        await self.client.aclose()
        for other in self._also_close:
            await other.aclose()

    # --- opt-out ordering (lua/optout_event.lua) and scheduled sends (a sorted set per
    # person, scored by when to forget each send)
    async def optout_event(
        self, account: str, identities: Sequence[str], opted_out: bool, at_us: int | None
    ) -> list[bool]:
        if not identities:
            return []
        names = (keys.optouts(account), keys.optout_changes(account), keys.changes(account))
        args = (
            "1" if opted_out else "0", "" if at_us is None else str(at_us), STREAM_LEN,
            *identities,
        )  # fmt: skip
        applied = await script("optout_event")(self.client, names, args)
        return [bool(int(x)) for x in applied]

    async def scheduled_add(self, account: str, identity: str, entry: str, until_us: int) -> None:
        key = keys.scheduled(account, identity)
        until_ms = -(-until_us // 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(key, {entry: until_us}, gt=True)
        pipe.zremrangebyscore(key, "-inf", time.time_ns() // 1000)
        pipe.pexpireat(key, until_ms, nx=True)  # a new key: its first deadline
        pipe.pexpireat(key, until_ms, gt=True)  # else only ever later
        await pipe.execute()

    async def scheduled_list(self, account: str, identity: str) -> list[str]:
        key = keys.scheduled(account, identity)
        found = await self.client.zrangebyscore(key, f"({time.time_ns() // 1000}", "+inf")
        return [_text(x) for x in found if isinstance(x, bytes | str)]

    async def scheduled_remove(self, account: str, identity: str, entry: str) -> None:
        await self.client.zrem(keys.scheduled(account, identity), entry)

    # --- privacy: used CAPTCHA tokens (a key each, with TTL), the PII removal queue (one
    # sorted set for the fleet, entry -> due µs; lua/pii_claim.lua and pii_move.lua) and
    # erasure tombstones (a list per account)
    PII_QUEUE = "gw:{pii}:due"

    async def captcha_use(self, digest: str, ttl_ms: int) -> bool:
        return bool(await self.client.set(f"gw:captcha:{digest}", 1, nx=True, px=ttl_ms))

    async def captcha_release(self, digest: str) -> None:
        await self.client.delete(f"gw:captcha:{digest}")

    async def pii_add(self, items: Sequence[tuple[str, int]]) -> None:
        for i in range(0, len(items), 1000):
            chunk = items[i : i + 1000]
            await self.client.zadd(self.PII_QUEUE, dict(chunk), nx=True)

    async def pii_claim(self, limit: int, lease_us: int) -> tuple[list[str], int | None]:
        reply = await script("pii_claim")(self.client, (self.PII_QUEUE,), (limit, lease_us))
        wait = int(reply[0])
        return [_text(x) for x in reply[1:]], None if wait < 0 else wait

    async def pii_move(self, old: str, new: str | None, due_us: int) -> None:
        args = (old, new or "", due_us)
        await script("pii_move")(self.client, (self.PII_QUEUE,), args)

    async def person_erase(self, account: str, msisdn: str, tombstone: str) -> bool:
        # the deletion enters the change stream like any consent withdrawal (lua/change.lua),
        # so every worker's compliance copy drops it within a second; then the tombstone (a
        # retried erasure after a failure in between adds the tombstone then)
        removed = await self.consent_delete(account, msisdn)
        await self.client.rpush(keys.erased(account), tombstone)
        return removed

    async def erasures(self, account: str) -> AsyncIterator[str]:
        key, start = keys.erased(account), 0
        while True:
            page = await self.client.lrange(key, start, start + 499)
            for item in page:
                yield _text(item)
            if len(page) < 500:
                return
            start += 500


def _wa_part(check: SendCheck, start: int) -> WhatsAppCheck | None:
    """A chunk's WhatsApp limits: its messages' keys, no sender bucket (the last call's)."""
    w = check.whatsapp
    if w is None:
        return None
    return replace(w, sender=None, messages=w.messages[start : start + CHUNK])


def _wa_last(check: SendCheck, forwarded: int) -> WhatsAppCheck | None:
    """The last call's WhatsApp limits: the sender bucket, for the messages forwarded."""
    w = check.whatsapp
    if w is None or w.sender is None:
        return None
    return replace(w, messages=(), sender_n=forwarded)


def _chunked(check: SendCheck) -> bool:
    return check.batch and len(check.messages) > CHUNK


def _journal(journals: list[Journal]) -> Journal:
    """A new decision's journal (standalone: one slot), noted for a cancel."""
    journal = Journals().on_slot_of("")
    journals.append(journal)
    return journal


def _consent(msisdn: str, raw: bytes | str) -> ConsentRecord:
    d = orjson.loads(raw)
    return ConsentRecord(msisdn, d.get("source", ""), tuple(d.get("categories") or ()),
                         d.get("timestamp", ""))  # fmt: skip


def _template(field: str, raw: bytes | str) -> TemplateRecord:
    d = orjson.loads(raw)
    name, _, language = field.rpartition(":")
    name, language = d.get("name") or name, d.get("language") or language
    return TemplateRecord(name, language, d["status"], d.get("category"), d.get("quality"),
                          d.get("updatedAt", ""))  # fmt: skip
