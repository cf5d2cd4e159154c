"""Deciding on Redis Cluster: a send's decision split by slot, still all-or-nothing.

One script call on a Cluster may only touch keys of one slot, and a send's keys live in
up to three: its account's (`gw:{account}:...`: opt-outs, consent, templates, OTP and
subaccount buckets, cool-down), the end-user IP's (`gw:{eu:IP}:ip`) and the egress IP's
(`gw:{egress:NAME}:ip`). A micro-batch is decided in three steps, in this fixed order;
each step is one EVALSHA per slot, the slots of a step called at once (asyncio.gather
across nodes):

1. peek (lua/peek.lua): read the TATs and cool-downs the batch needs from every slot
   that is not an account's.
2. decide (lua/decide.lua with ARGV[2]), on each account's slot: every rule exactly as the
   single-call script applies it (opt-out, consent, template, OTP, then the buckets in
   refusal priority, the cool-down), and one common instant s per request, the latest of
   all its buckets' earliest slots, using the peeked values for the other slots' buckets.
   The account's keys are booked at s; the others only in the script's memory. The reply
   gives each request's s and what it booked (TAT before and after).
3. confirm (lua/confirm.lua), on each other slot: book the request's buckets there at that
   same s, only if each still admits a send at s. s is a floor and a ceiling: a confirm
   never books at another instant; if a bucket's earliest slot is now later than s it
   books nothing and answers that slot.

A confirm fails only if someone booked that bucket between the peek and the confirm (another
gateway process). Such a request is undone everywhere it booked (lua/refund.lua): a key that
still holds the TAT this booking wrote gets back the TAT it held before, which undoes it
exactly; a key that a later booking has moved since is left alone, so that slot stays
spent: a refund can make a bucket stricter than it needs to be, never laxer. The request is
then decided again from step 1 (seeing the new bookings). After three passes it is refused by
the bucket that could not take it, with retry-after until that bucket's slot.

What holds, as on standalone Redis:
- All-or-nothing: a request is booked in every bucket it touches at one instant (the wait it
  is told), or its bookings are refunded and it is refused. Each bucket's own GCRA bound, and
  with it DESIGN's "each rate holds in every one-second window", is therefore kept.
- Without concurrent writers a confirm never fails, and the decisions equal the
  single-call script's for the same requests in the same order, to the microsecond and
  with the same refusal priority (step 2 sees every bucket).
- That order: within a micro-batch, requests in order per account; accounts that share a
  bucket (the egress IP) take turns in order of first appearance, each account's call
  seeing the bookings of those before; accounts that share nothing go in parallel.
- Clocks: a slot's keys are compared with its own node's clock, and s comes from the
  account's node, so the nodes' clocks must agree (NTP): a skew of d shifts a booking by d.
"""

from __future__ import annotations

import asyncio
from binascii import crc_hqx
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway.store import gcra, keys, lanes
from gateway.store.base import BucketFill, BucketSpec, Decision, Refusal, SendCheck
from gateway.store.channel import Channel, fixed
from gateway.store.codec import decode_from, encode_split
from gateway.store.journal import (
    JOURNAL_MS,
    Canceller,
    DecisionCancelled,
    Journals,
    reply_cancelled,
)
from gateway.store.scripts import script

T = TypeVar("T")
MAX_PASSES = 3
_SLOTS: dict[str, int] = {}
_SLOT_CACHE = 100_000


def slot_of(key: str) -> int:
    """A key's Redis Cluster hash slot (its `{tag}` if it has one)."""
    tag = key
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            tag = key[start + 1 : end]
    slot = _SLOTS.get(tag)
    if slot is None:
        slot = crc_hqx(tag.encode(), 0) % 16384
        if len(_SLOTS) < _SLOT_CACHE:
            _SLOTS[tag] = slot
    return slot


@dataclass(slots=True)
class _Request:
    """One request during one pass."""

    index: int  # in the micro-batch
    check: SendCheck
    home: int  # its account's slot
    decision: Decision = field(default_factory=Decision)
    at: int = 0  # the instant it booked (0: nothing booked)
    booked: list[tuple[str, int, int]] = field(default_factory=list)  # key, before, after
    failed: tuple[BucketSpec, int] | None = None  # a bucket that could not book, its slot

    def away(self) -> list[BucketSpec]:
        """What it books on other slots than its account's: its buckets there, but a
        shadowed one that would have refused, and a laned one's real TAT on a bulk queue's
        ticket; a laned one's queue, but on a claim (docs/lanes.md). A queue is admitted
        whatever its slot (burst 0): only the real TAT is the upstream's envelope."""
        gone, check = self.decision.shadowed, self.check
        out = []
        for b in check.buckets:
            if slot_of(b.key) == self.home or b.rule in gone:
                continue
            laned = lanes.laned(b, check)
            if not (laned and self.decision.ticket):
                out.append(b)
            if laned and not check.claim:
                out.append(replace(b, key=keys.queue(b.key), burst=0))
        return out


# replies that mean "ask the cluster client": it follows the redirect, waits out a failover
# and refreshes its slot map
_REROUTE = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


class NodeChannels:
    """Script calls on a Cluster, sent straight to the primary serving the first key's slot
    over one lean Channel per node (gateway/store/channel.py). redis-py's cluster client
    keeps the slot map and loads scripts on every primary; a call that meets a redirect or
    cluster error (MOVED, ASK, TRYAGAIN, CLUSTERDOWN), a broken connection or a slot the map
    does not know yet is made again through that client, once."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._channels: dict[str, Channel] = {}

    async def execute_command(self, *args: Any) -> Any:
        try:  # EVALSHA sha numkeys key ...: the first key picks the node
            node = self.client.nodes_manager.get_node_from_slot(slot_of(args[3]))
        except (RedisError, LookupError):
            return await self.client.execute_command(*args)
        channel = self._channels.get(node.name)
        if channel is None:
            channel = self._channels[node.name] = _node_channel(node)
        try:
            return await channel.execute_command(*args)
        except NoScriptError:
            raise  # the script is loaded (on every primary) and the call repeated
        except ResponseError as exc:
            if not str(exc).startswith(_REROUTE):
                raise
        except ConnectionError:
            pass
        return await self.client.execute_command(*args)

    async def script_load(self, source: str) -> Any:
        return await self.client.script_load(source)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def _node_channel(node: ClusterNode) -> Channel:
    kw = node.connection_kwargs
    return Channel(
        fixed(node.host, int(node.port)),
        username=kw.get("username"),
        password=kw.get("password"),
        connect_timeout_s=float(kw.get("socket_connect_timeout") or 0.25),
    )


class SlotSplit:
    """`decide_many` and `bucket_fill` of RedisStore on a RedisCluster client; the script
    calls go over per-node channels (NodeChannels)."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self.calls = NodeChannels(client)
        self._decide = script("decide")
        self._confirm = script("confirm")
        self._refund = script("refund")
        self._peek = script("peek")
        self._canceller = Canceller(self.calls)

    async def decide_many(self, checks: Sequence[SendCheck]) -> list[Decision]:
        """Every call journals its bookings on its slot (gateway/store/journal.py): a
        decision this fails or gives up on is undone in the background."""
        out: list[Decision | None] = [None] * len(checks)
        todo = list(range(len(checks)))
        journals = Journals()
        try:
            for attempt in range(MAX_PASSES):
                todo = await self._pass(checks, todo, out, attempt == MAX_PASSES - 1, journals)
                if not todo:
                    break
        except BaseException:
            self._canceller.later(list(journals.by_key.values()))
            raise
        return [_decided(d) for d in out]

    async def _pass(
        self, checks: Sequence[SendCheck], todo: list[int], out: list[Decision | None],
        last: bool, journals: Journals,
    ) -> list[int]:  # fmt: skip
        """Decide the requests `todo`; fill `out` for the final ones, return the others."""
        reqs = [_Request(i, checks[i], slot_of(keys.optouts(checks[i].account))) for i in todo]
        values = await self._peek_away(reqs)
        groups: dict[int, list[_Request]] = {}
        for r in reqs:
            groups.setdefault(r.home, []).append(r)
        ordered = list(groups.values())
        if _share_buckets(ordered):
            for group in ordered:  # each sees the bookings of those before
                await self._decide_home(group, values, journals)
                _book_in_memory(group, values)
        else:
            await _all([self._decide_home(g, values, journals) for g in ordered])
        await self._confirm_away([r for g in ordered for r in g], journals)
        failed = [r for r in reqs if r.failed is not None]
        if failed:
            await self._refund_all(failed)
        retry = []
        for r in reqs:
            if r.failed is None:
                out[r.index] = r.decision
            elif last:
                bucket, slot = r.failed
                refusal = Refusal(bucket.rule, max(1, slot - r.at), bucket=bucket)
                out[r.index] = Decision(refusal=refusal, dropped=r.decision.dropped,
                                        unconsented=r.decision.unconsented,
                                        shadowed=r.decision.shadowed,
                                        priority=r.decision.priority)  # fmt: skip
            else:
                retry.append(r.index)
        return retry

    async def _peek_away(self, reqs: list[_Request]) -> dict[str, int]:
        """What step 2 needs from other slots: key -> TAT (buckets) or PTTL (cool-downs)."""
        wanted: dict[int, dict[str, str]] = {}
        for r in reqs:
            for b in r.check.buckets:
                slot = slot_of(b.key)
                if slot != r.home:
                    wanted.setdefault(slot, {})[b.key] = "t"
                    if lanes.laned(b, r.check):  # its bulk queue, under the same tag
                        wanted[slot][keys.queue(b.key)] = "t"
            cool = r.check.cooldown_key
            if cool and slot_of(cool) != r.home:
                wanted.setdefault(slot_of(cool), {}).setdefault(cool, "c")
        if not wanted:
            return {}
        replies = await _all([self._peek_slot(kinds) for kinds in wanted.values()])
        values: dict[str, int] = {}
        for kinds, (_, found) in zip(wanted.values(), replies, strict=True):
            values.update(zip(kinds, found, strict=True))
        return values

    async def _peek_slot(self, kinds: dict[str, str]) -> tuple[int, list[int]]:
        """(now, values) of keys of one slot."""
        names = list(kinds)
        reply = await self._peek(self.calls, names, ("".join(kinds.values()),))
        return int(reply[0]), [int(v) for v in reply[1:]]

    async def _decide_home(
        self, group: list[_Request], values: dict[str, int], journals: Journals
    ) -> None:
        """Step 2 for the requests of one account slot."""
        home = group[0].home
        checks = [r.check for r in group]
        names, away, blob = encode_split(checks, lambda key: slot_of(key) == home)
        if not names:  # nothing of the account's: still run on its slot
            names = [keys.optouts(group[0].check.account)]
        given = orjson.dumps([values[k] for k in away])
        call_keys, ix = journals.on_slot_of(names[0]).call_keys(names)
        reply = await self._decide(self.calls, call_keys, (blob, given, ix, JOURNAL_MS))
        if reply_cancelled(reply):
            raise DecisionCancelled("the decision was cancelled before it ran")
        decisions, i = decode_from(checks, reply)
        i += 1  # now
        for r, decision in zip(group, decisions, strict=True):
            r.decision, r.at, n = decision, int(reply[i]), int(reply[i + 1])
            i += 2
            for j in range(i, i + 3 * n, 3):
                r.booked.append((names[int(reply[j]) - 1], int(reply[j + 1]), int(reply[j + 2])))
            i += 3 * n

    async def _confirm_away(self, reqs: list[_Request], journals: Journals) -> None:
        """Step 3: book every booked request's other-slot buckets at its instant."""
        by_slot: dict[int, list[tuple[_Request, list[BucketSpec]]]] = {}
        for r in reqs:
            if not r.at:
                continue
            for b in r.away():
                slot = slot_of(b.key)
                entries = by_slot.setdefault(slot, [])
                if not entries or entries[-1][0] is not r:
                    entries.append((r, []))
                entries[-1][1].append(b)
        await _all([self._confirm_slot(entries, journals) for entries in by_slot.values()])

    async def _confirm_slot(
        self, entries: list[tuple[_Request, list[BucketSpec]]], journals: Journals
    ) -> None:
        index: dict[str, int] = {}
        flat: list[int] = []
        for r, buckets in entries:
            flat += (r.at, len(buckets))
            for b in buckets:
                k = index.setdefault(b.key, len(index) + 1)
                # a shadowed bucket never delays the send: booked whatever its slot (0)
                flat += (k, b.interval_us, 0 if b.rule in r.check.shadow else b.burst)
        names = list(index)
        call_keys, ix = journals.on_slot_of(names[0]).call_keys(names)
        reply = await self._confirm(self.calls, call_keys, (orjson.dumps(flat), ix, JOURNAL_MS))
        if reply_cancelled(reply):
            raise DecisionCancelled("the decision was cancelled before it ran")
        i = 0
        for r, buckets in entries:
            if reply[i] == 0:
                for j, b in enumerate(buckets):
                    r.booked.append((b.key, int(reply[i + 1 + 2 * j]), int(reply[i + 2 + 2 * j])))
                i += 1 + 2 * len(buckets)
            else:
                bucket, slot = buckets[int(reply[i + 1])], int(reply[i + 2])
                if r.failed is None or slot > r.failed[1]:
                    r.failed = (bucket, slot)
                i += 3

    async def _refund_all(self, failed: list[_Request]) -> None:
        """Undo what the failed requests booked, per slot the latest booking first."""
        by_slot: dict[int, list[tuple[str, int, int]]] = {}
        for r in failed:
            for key, before, after in r.booked:
                by_slot.setdefault(slot_of(key), []).append((key, after, before))
        await _all([self._refund_slot(undo[::-1]) for undo in by_slot.values()])

    async def _refund_slot(self, undo: list[tuple[str, int, int]]) -> None:
        index: dict[str, int] = {}
        flat: list[int] = []
        for key, wrote, before in undo:
            flat += (index.setdefault(key, len(index) + 1), wrote, before)
        await self._refund(self.calls, list(index), (orjson.dumps(flat),))

    def close(self) -> None:
        self.calls.close()

    async def aclose(self) -> None:
        """Cancels under way get a moment, then the node channels close."""
        await self._canceller.close()
        self.close()

    async def bucket_fill(self, buckets: Sequence[BucketSpec]) -> list[BucketFill]:
        """Each bucket's fill, read on its own node with that node's clock."""
        slots: dict[int, dict[str, str]] = {}
        for b in buckets:
            slots.setdefault(slot_of(b.key), {})[b.key] = "t"
        replies = await _all([self._peek_slot(kinds) for kinds in slots.values()])
        seen: dict[str, tuple[int, int]] = {}
        for kinds, (now, tats) in zip(slots.values(), replies, strict=True):
            seen.update((k, (now, tat)) for k, tat in zip(kinds, tats, strict=True))
        out = []
        for b in buckets:
            now, tat = seen[b.key]
            left, reset = gcra.fill(tat, b.interval_us, b.burst, now)
            out.append(BucketFill(b.rule, b.key, left, reset))
        return out


def _decided(decision: Decision | None) -> Decision:
    if decision is None:  # every pass decides or retries each of its requests
        raise RuntimeError("a request left undecided")
    return decision


async def _all(calls: list[Awaitable[T]]) -> list[T]:
    """Await calls to several nodes at once (one alone: no task needed)."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))


def _share_buckets(groups: list[list[_Request]]) -> bool:
    """Do requests of different account slots touch a common bucket?"""
    if len(groups) < 2:
        return False
    seen: set[str] = set()
    for group in groups:
        mine = {b.key for r in group for b in r.check.buckets}
        if seen & mine:
            return True
        seen |= mine
    return False


def _book_in_memory(group: list[_Request], values: dict[str, int]) -> None:
    """Move the peeked TATs past this group's bookings, for the next group's call: the
    other-slot ones as decide.lua did in memory, any of its own slot it wrote."""
    for r in group:
        if r.at:
            for key, _, after in r.booked:
                if key in values:  # another account's other-slot key (a slot collision)
                    values[key] = after
            for b in r.away():
                values[b.key] = max(values[b.key], r.at) + b.interval_us
