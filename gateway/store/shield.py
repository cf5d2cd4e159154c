"""The OTP pumping shield's shared state: per number prefix, the sends and Verify
validations in a sliding window, the quarantine and its ladder step (gateway/shield.py
decides what to do with them; docs/otp-shield.md states the algorithm).

`RedisShield` runs lua/shield.lua (one call per OTP send, one per credited validation),
every key under the hash tag `{otpshield}` so a call touches one Cluster slot, each with a
TTL: counts 2 windows, a hold its length plus `reset_ms` (the ladder step's memory), a
hold until release MANUAL_KEEP_MS after the last attempt. `MemoryShield` is its in-process
twin, same arithmetic. Time is the caller's (ms since the epoch), so one clock judges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from redis.asyncio import Redis, RedisCluster

from gateway.store.scripts import script

TAG = "gw:{otpshield}"
INDEX = f"{TAG}:held"
MANUAL_KEEP_MS = 30 * 86_400_000  # a hold until release, after its last attempt
PRUNE_AT = 10_000  # MemoryShield drops expired entries when it holds this many
MANUAL = -1  # retry_ms / until of a hold that ends only when ops release it


@dataclass(frozen=True, slots=True)
class Rules:
    window_ms: int
    min_sends: int
    min_conversion: float
    holds_ms: tuple[int, ...]  # the ladder; past its end, held until released
    reset_ms: int  # a ladder step is forgotten this long after its hold ends


class Verdict(NamedTuple):
    retry_ms: int  # 0: pass; > 0: held this long; MANUAL: held until released
    level: int  # the prefix's ladder step (0: never held, or forgotten)


class Held(NamedTuple):
    prefix: str
    until_ms: int  # MANUAL: until released
    level: int


class ShieldStore(Protocol):
    async def sends(self, prefixes: Sequence[str], now_ms: int, rules: Rules) -> list[Verdict]:
        """Judge one OTP send to each prefix (in order) and count the ones that pass."""
        ...

    async def validated(self, prefix: str, session: str, now_ms: int, rules: Rules) -> bool:
        """Credit a validation to `prefix`, once per `session`; whether it was credited."""
        ...

    async def release(self, prefix: str, now_ms: int) -> bool:
        """Forget the prefix's hold, ladder step and counts; whether it was held."""
        ...

    async def held(self, now_ms: int) -> list[Held]:
        """The prefixes held now, by prefix."""
        ...


def prefix_key(prefix: str) -> str:
    return f"{TAG}:p:{prefix}"


def session_key(session: str) -> str:
    digest = hashlib.sha256(session.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{TAG}:v:{digest}"


class RedisShield:
    def __init__(self, client: Redis | RedisCluster) -> None:
        self.client = client
        self._script = script("shield")

    async def sends(self, prefixes: Sequence[str], now_ms: int, rules: Rules) -> list[Verdict]:
        keys = [INDEX, *(prefix_key(p) for p in prefixes)]
        args: list[str | int] = [
            "send", now_ms, rules.window_ms, rules.min_sends, repr(rules.min_conversion),
            rules.reset_ms, MANUAL_KEEP_MS, len(rules.holds_ms), *rules.holds_ms, *prefixes,
        ]  # fmt: skip
        flat = await self._script(self.client, keys, args)
        return [Verdict(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def validated(self, prefix: str, session: str, now_ms: int, rules: Rules) -> bool:
        keys = [INDEX, prefix_key(prefix), session_key(session)]
        args: list[str | int] = ["verify", now_ms, rules.window_ms, 2 * rules.window_ms]
        return bool(await self._script(self.client, keys, args))

    async def release(self, prefix: str, now_ms: int) -> bool:
        keys = [INDEX, prefix_key(prefix)]
        return bool(await self._script(self.client, keys, ["release", now_ms, 1, prefix]))

    async def held(self, now_ms: int) -> list[Held]:
        await self.client.zremrangebyscore(INDEX, 0, now_ms)
        found: list[Held] = []
        entries: list[Any] = await self.client.zrange(INDEX, 0, -1, withscores=True)
        for member, score in entries:
            prefix = member.decode() if isinstance(member, bytes) else str(member)
            level = await self.client.hget(prefix_key(prefix), "lvl")
            if level is None:  # the hold's record expired: no longer held
                await self.client.zrem(INDEX, prefix)
                continue
            found.append(Held(prefix, int(score), int(level)))
        return sorted(found)


@dataclass(slots=True)
class _Prefix:
    window: int = 0
    sent: int = 0
    validated: int = 0
    prev_sent: int = 0
    prev_validated: int = 0
    until: int = 0
    level: int = 0
    forget: int | None = None  # when the ladder step is forgotten (a timed hold's end + reset)
    expires: int = 0

    def roll(self, now_ms: int, window_ms: int) -> None:
        current = now_ms // window_ms
        if current == self.window + 1:
            self.prev_sent, self.prev_validated = self.sent, self.validated
            self.sent = self.validated = 0
        elif current != self.window:
            self.prev_sent = self.prev_validated = self.sent = self.validated = 0
        self.window = current

    def keep(self, now_ms: int, ms: int) -> None:
        self.expires = max(self.expires, now_ms + ms)


class MemoryShield:
    """The twin of lua/shield.lua for one process (no Redis)."""

    def __init__(self) -> None:
        self._prefixes: dict[str, _Prefix] = {}
        self._sessions: dict[str, int] = {}  # session marker -> expiry (ms)
        self._prune_at = PRUNE_AT

    def _get(self, prefix: str, now_ms: int) -> _Prefix:
        found = self._prefixes.get(prefix)
        if found is None or found.expires <= now_ms:
            found = self._prefixes[prefix] = _Prefix()
        if found.forget is not None and now_ms >= found.forget:
            found.level, found.forget = 0, None
        return found

    async def sends(self, prefixes: Sequence[str], now_ms: int, rules: Rules) -> list[Verdict]:
        self._prune(now_ms)
        window = rules.window_ms
        frac = (now_ms % window) / window
        out = []
        for prefix in prefixes:
            p = self._get(prefix, now_ms)
            if p.until == MANUAL:
                p.keep(now_ms, MANUAL_KEEP_MS)
                out.append(Verdict(MANUAL, p.level))
                continue
            if p.until > now_ms:
                out.append(Verdict(p.until - now_ms, p.level))
                continue
            p.roll(now_ms, window)
            sent = p.prev_sent * (1 - frac) + p.sent
            validated = p.prev_validated * (1 - frac) + p.validated
            if sent >= rules.min_sends and validated < rules.min_conversion * sent:
                level = p.level + 1
                hold = rules.holds_ms[level - 1] if level <= len(rules.holds_ms) else None
                until = MANUAL if hold is None else now_ms + hold
                keep = MANUAL_KEEP_MS if hold is None else hold + rules.reset_ms
                forget = None if hold is None else until + rules.reset_ms
                self._prefixes[prefix] = _Prefix(
                    window=p.window, until=until, level=level, forget=forget, expires=now_ms + keep
                )
                out.append(Verdict(MANUAL if hold is None else hold, level))
                continue
            p.sent += 1
            p.keep(now_ms, 2 * window)
            out.append(Verdict(0, p.level))
        return out

    async def validated(self, prefix: str, session: str, now_ms: int, rules: Rules) -> bool:
        self._prune(now_ms)
        marker = session_key(session)
        if self._sessions.get(marker, 0) > now_ms:
            return False
        self._sessions[marker] = now_ms + 2 * rules.window_ms
        p = self._get(prefix, now_ms)
        p.roll(now_ms, rules.window_ms)
        p.validated += 1
        p.keep(now_ms, 2 * rules.window_ms)
        return True

    async def release(self, prefix: str, now_ms: int) -> bool:
        found = self._prefixes.pop(prefix, None)
        if found is None or found.expires <= now_ms:
            return False
        return found.until == MANUAL or found.until > now_ms

    async def held(self, now_ms: int) -> list[Held]:
        self._prune(now_ms)
        return sorted(
            Held(prefix, p.until, p.level)
            for prefix, p in self._prefixes.items()
            if p.until == MANUAL or p.until > now_ms
        )

    def _prune(self, now_ms: int) -> None:
        """Drop what Redis would have expired (amortised: only when it has grown)."""
        if len(self._prefixes) + len(self._sessions) < self._prune_at:
            return
        self._prefixes = {k: p for k, p in self._prefixes.items() if p.expires > now_ms}
        self._sessions = {k: t for k, t in self._sessions.items() if t > now_ms}
        self._prune_at = max(PRUNE_AT, 2 * (len(self._prefixes) + len(self._sessions)))
