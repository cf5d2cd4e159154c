"""RedisStore: the store contract on Redis, one script call per micro-batch of decisions.

`decide_many` sends every request of a micro-batch to lua/decide.lua in ONE EVALSHA: the
keys it may touch go once each in KEYS, the requests as one JSON blob in ARGV[1] naming
keys by index, and the answer comes back as a flat array of integers (see the script's
header). Compliance records are a set (opt-outs) and two hashes (consent, templates) per
account, JSON values, no TTL. Works with clients built with or without decode_responses.

Standalone and Sentinel clients take that single-call path. On a Redis Cluster client a
decision's keys span several slots, so `decide_many` and `bucket_fill` go through
gateway/store/cluster.py instead (one call per slot, same guarantees); everything else is
one key per command and works on any client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.asyncio import Redis, RedisCluster

from gateway.store import gcra, keys
from gateway.store.base import (
    BucketFill,
    BucketSpec,
    ConsentRecord,
    Decision,
    Refusal,
    Rule,
    SendCheck,
    TemplateRecord,
)
from gateway.store.channel import Channel, channel_for
from gateway.store.scripts import ScriptClient, script

if TYPE_CHECKING:
    from gateway.store.cluster import SlotSplit

#: Rule codes of lua/decide.lua (1-based, in the order refusals win)
_RULES: tuple[Rule, ...] = tuple(Rule)
_CODE = {rule: i + 1 for i, rule in enumerate(_RULES)}
_OPT_IN = {"off": 0, "warn": 1, "enforce": 2}
_NONE: tuple[tuple[Rule, int], ...] = ()


class Closable(Protocol):
    async def aclose(self) -> None: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode(checks: Sequence[SendCheck]) -> tuple[list[str], bytes]:
    """(KEYS, ARGV[1]) of lua/decide.lua for these requests."""
    names, _, blob = encode_split(checks, None)
    return names, blob


def encode_split(
    checks: Sequence[SendCheck], local: Callable[[str], bool] | None
) -> tuple[list[str], list[str], bytes]:
    """(KEYS, other-slot keys, ARGV[1]) of lua/decide.lua. With `local`, a key it rejects
    is named by a negative index into the other-slot keys (Redis Cluster: ARGV[2])."""
    names: list[str] = []
    others: list[str] = []
    index: dict[str, int] = {}

    def ix(key: str) -> int:
        i = index.get(key)
        if i is None:
            if local is None or local(key):
                names.append(key)
                i = index[key] = len(names)
            else:
                others.append(key)
                i = index[key] = -len(others)
        return i

    payload = []
    for c in checks:
        account = c.account
        msgs: list[object] = []
        any_template = False
        for m in c.messages:
            if m.template or m.category:  # "\x01CATEGORY": no registry entry (Direct Send)
                any_template = True
                tpl = m.template or "\x01" + (m.category or "")
                msgs += (m.msisdn, tpl, int(m.otp), ix(keys.otp_bucket(account, m.msisdn)))
            elif m.otp:
                msgs += (m.msisdn, "", 1, ix(keys.otp_bucket(account, m.msisdn)))
            else:
                msgs += (m.msisdn, "", 0, 0)
        bks: list[int] = []
        for b in c.buckets:
            bks += (_CODE[b.rule], ix(b.key), b.interval_us, b.burst, int(b.shapeable))
        payload.append((
            int(c.batch), _OPT_IN.get(c.opt_in, 2), int(c.unknown_template_allowed),
            c.max_wait_us, ix(keys.optouts(account)) if c.messages else 0,
            ix(keys.consents(account)) if any_template else 0,
            ix(keys.templates(account)) if any_template else 0,
            ix(c.cooldown_key) if c.cooldown_key else 0,
            c.otp.interval_us, c.otp.burst, bks, msgs,
        ))  # fmt: skip
    return names, others, orjson.dumps(payload)


def decode(checks: Sequence[SendCheck], reply: Sequence[Any]) -> list[Decision]:
    """Decisions from lua/decide.lua's flat reply."""
    return decode_from(checks, reply)[0]


def decode_from(checks: Sequence[SendCheck], reply: Sequence[Any]) -> tuple[list[Decision], int]:
    """Decisions from lua/decide.lua's flat reply, and where the decisions end in it."""
    out: list[Decision] = []
    i = 0
    for c in checks:
        code = reply[i]
        refusal, wait, remaining = None, 0, _NONE
        if code == 0:
            n = len(c.buckets)
            wait = reply[i + 1]
            remaining = tuple(
                zip((b.rule for b in c.buckets), reply[i + 2 : i + 2 + n], strict=True)
            )
            i += 2 + n
        elif code == 1:
            refusal = _refusal(c, _RULES[reply[i + 1] - 1], reply[i + 2], reply[i + 3],
                               reply[i + 4])  # fmt: skip
            i += 5
        else:
            i += 1
        n = reply[i]
        dropped = tuple((reply[j], _RULES[reply[j + 1] - 1]) for j in range(i + 1, i + 2 * n, 2))
        i += 1 + 2 * n
        n = reply[i]
        unconsented = tuple(reply[i + 1 : i + 1 + n])
        i += 1 + n
        out.append(Decision(wait, refusal, dropped, unconsented, remaining))
    return out, i


def _refusal(c: SendCheck, rule: Rule, retry: int, status: Any, ref: int) -> Refusal:
    if rule is Rule.OTP:
        return Refusal(rule, retry, bucket=gcra.otp_bucket_spec(c, c.messages[ref].msisdn))
    if rule is Rule.TEMPLATE:
        return Refusal(rule, status=None if status is None else _text(status))
    if rule in (Rule.OPTED_OUT, Rule.NO_CONSENT):
        return Refusal(rule)
    return Refusal(rule, retry, bucket=c.buckets[ref] if ref >= 0 else None)


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
        self._split: SlotSplit | None = None
        self._channel: Channel | None = None
        if isinstance(client, RedisCluster):
            from gateway.store.cluster import SlotSplit

            self._split = SlotSplit(client)
        else:
            self._channel = channel_for(client)
        # the decision call: over a lean pipelined channel (gateway/store/channel.py) when
        # the connection allows one, else through the redis-py client
        self._calls: ScriptClient = self._channel if self._channel is not None else client

    async def decide(self, check: SendCheck) -> Decision:
        return (await self.decide_many((check,)))[0]

    async def decide_many(self, checks: Sequence[SendCheck]) -> list[Decision]:
        if not checks:
            return []
        if self._split is not None:
            return await self._split.decide_many(checks)
        names, blob = encode(checks)
        return decode(checks, await self._decide(self._calls, names, (blob,)))

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

    async def hold_buckets(self, holds: Sequence[tuple[str, int]]) -> None:
        hold = script("hold")
        await asyncio.gather(*(hold(self.client, [key], [busy]) for key, busy in holds))

    async def spend_buckets(self, spends: Sequence[tuple[str, int, int]]) -> None:
        spend = script("spend")
        await asyncio.gather(*(spend(self.client, [key], [iv, n]) for key, iv, n in spends))

    # --- opt-outs: a set per account
    async def optout_add(self, account: str, msisdn: str) -> bool:
        return bool(await self.client.sadd(keys.optouts(account), msisdn))

    async def optout_remove(self, account: str, msisdn: str) -> bool:
        return bool(await self.client.srem(keys.optouts(account), msisdn))

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
        await self.client.hset(keys.consents(account), record.msisdn, orjson.dumps(value))

    async def consent_get(self, account: str, msisdn: str) -> ConsentRecord | None:
        raw = await self.client.hget(keys.consents(account), msisdn)
        return None if raw is None else _consent(msisdn, raw)

    async def consent_delete(self, account: str, msisdn: str) -> bool:
        return bool(await self.client.hdel(keys.consents(account), msisdn))

    async def consent_export(self, account: str) -> AsyncIterator[ConsentRecord]:
        async for msisdn, raw in self.client.hscan_iter(keys.consents(account), count=500):
            yield _consent(_text(msisdn), raw)

    # --- templates: a hash per account, "name:language" -> JSON (+ "ts": updatedAt in µs)
    async def template_put(
        self, account: str, record: TemplateRecord, *, if_newer: bool = False
    ) -> bool:
        ts = gcra.instant_us(record.updated_at)
        value = orjson.dumps({"status": record.status, "category": record.category,
                              "quality": record.quality, "updatedAt": record.updated_at,
                              "ts": ts})  # fmt: skip
        field = f"{record.name}:{record.language}"
        args = (field, value, ts, int(if_newer))
        return bool(await self._template_put(self.client, (keys.templates(account),), args))

    async def template_get(self, account: str, name: str, language: str) -> TemplateRecord | None:
        field = f"{name}:{language}"
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
            self._split.close()
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
        names = (keys.optouts(account), keys.optout_changes(account))
        args = ("1" if opted_out else "0", "" if at_us is None else str(at_us), *identities)
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
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(keys.consents(account), msisdn)
        pipe.rpush(f"gw:{{{account}}}:erased", tombstone)
        removed, _ = await pipe.execute()
        return bool(removed)

    async def erasures(self, account: str) -> AsyncIterator[str]:
        key, start = f"gw:{{{account}}}:erased", 0
        while True:
            page = await self.client.lrange(key, start, start + 499)
            for item in page:
                yield _text(item)
            if len(page) < 500:
                return
            start += 500


def _consent(msisdn: str, raw: bytes | str) -> ConsentRecord:
    d = orjson.loads(raw)
    return ConsentRecord(msisdn, d.get("source", ""), tuple(d.get("categories") or ()),
                         d.get("timestamp", ""))  # fmt: skip


def _template(field: str, raw: bytes | str) -> TemplateRecord:
    d = orjson.loads(raw)
    name, _, language = field.rpartition(":")
    return TemplateRecord(name, language, d["status"], d.get("category"), d.get("quality"),
                          d.get("updatedAt", ""))  # fmt: skip
