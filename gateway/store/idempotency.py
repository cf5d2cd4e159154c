"""Where the records of idempotency keys live (gateway/idempotency.py uses them): the
`Keeper` protocol, `RedisKeeper` (lua/idem_*.lua: one hash per key, shared by every worker
and kept over restarts) and `MemoryKeeper` (one process). The contract suite
tests/contract/test_idempotency_store.py runs the same cases on both.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from gateway.store.scripts import ScriptClient, script


class State(IntEnum):
    """What a claim found (the codes of lua/idem_claim.lua)."""

    CLAIMED = 0
    DONE = 1
    PENDING = 2
    MISMATCH = 3
    LAPSED = 4


@dataclass(frozen=True, slots=True)
class Key:
    """A send's idempotency key: `id` names the record (client and key hashed together),
    `fingerprint` the request it was first used for (method, path, body)."""

    id: str
    fingerprint: str


class Keeper(Protocol):
    """Where key records live. Times are the keeper's own (Redis: its clock)."""

    async def claim(
        self, key: Key, token: str, lease_ms: int, ttl_ms: int
    ) -> tuple[State, bytes | None]:
        """Claim `key` for attempt `token` (pending, lease, TTL), or what holds it: the
        stored answer when DONE."""
        ...

    async def finish(self, key: Key, token: str, answer: bytes, ttl_ms: int) -> None:
        """Keep `answer` for `ttl_ms`, if `token` still holds the key."""
        ...

    async def release(self, key: Key, token: str) -> None:
        """Forget the key, if `token` still holds it."""
        ...


class RedisKeeper:
    """Key records in Redis, one hash per key (lua/idem_*.lua): every worker and every
    restart sees the same records."""

    def __init__(self, client: ScriptClient, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._claim = script("idem_claim")
        self._finish = script("idem_finish")
        self._release = script("idem_release")

    async def claim(
        self, key: Key, token: str, lease_ms: int, ttl_ms: int
    ) -> tuple[State, bytes | None]:
        async with asyncio.timeout(self.timeout_s):
            reply = await self._claim(
                self.client, (key.id,), (key.fingerprint, token, lease_ms, ttl_ms)
            )
        state = State(int(reply[0]))
        stored = reply[1] if state is State.DONE else None
        return state, stored.encode() if isinstance(stored, str) else stored

    async def finish(self, key: Key, token: str, answer: bytes, ttl_ms: int) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self._finish(self.client, (key.id,), (token, answer, ttl_ms))

    async def release(self, key: Key, token: str) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self._release(self.client, (key.id,), (token,))


@dataclass(slots=True)
class _Record:
    fingerprint: str
    token: str
    lease_end: float
    expires: float
    answer: bytes | None = None


class MemoryKeeper:
    """Key records in this process (no Redis): the same rules, nothing shared, nothing
    kept over a restart. At most `max_keys` records: past that the oldest goes first."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.max_keys = max_keys
        self.clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    async def claim(
        self, key: Key, token: str, lease_ms: int, ttl_ms: int
    ) -> tuple[State, bytes | None]:
        now = self.clock()
        self._sweep(now)
        rec = self._records.get(key.id)
        if rec is None or rec.expires <= now:
            self._records.pop(key.id, None)
            self._records[key.id] = _Record(
                key.fingerprint, token, now + lease_ms / 1000, now + ttl_ms / 1000
            )
            while len(self._records) > self.max_keys:
                self._records.popitem(last=False)
            return State.CLAIMED, None
        if rec.fingerprint != key.fingerprint:
            return State.MISMATCH, None
        if rec.answer is not None:
            return State.DONE, rec.answer
        return (State.PENDING if rec.lease_end > now else State.LAPSED), None

    async def finish(self, key: Key, token: str, answer: bytes, ttl_ms: int) -> None:
        rec = self._records.get(key.id)
        if rec is not None and rec.token == token:
            rec.answer = answer
            rec.expires = self.clock() + ttl_ms / 1000
            self._records.move_to_end(key.id)

    async def release(self, key: Key, token: str) -> None:
        rec = self._records.get(key.id)
        if rec is not None and rec.token == token:
            del self._records[key.id]

    def _sweep(self, now: float) -> None:
        """Drop expired records from the front (records are kept in expiry order: one TTL
        for all, moved to the end when finished; a TTL changed by a reload only delays)."""
        while self._records:
            first = next(iter(self._records.values()))
            if first.expires > now:
                return
            self._records.popitem(last=False)
