"""Idempotent sends: a send with an `Idempotency-Key` (or, opted in, a `clientMessageId`)
reaches 8x8 at most once per key per client while the key is kept (docs/idempotency.md).

The proxy asks `request_key` for a send's key (400 for a bad header; None: no key, and no
cost), then runs the decision and the forwarding through `Idempotency.once`. A key's record
lives in a `Keeper`: `RedisKeeper` (shared by every worker, survives restarts: lua/idem_*)
or `MemoryKeeper` (one process). The first attempt claims the key with a pending mark and a
lease; duplicates wait for it (in-process ones on a future, others poll the keeper) and
replay its answer, marked `Idempotent-Replayed: true`. An attempt that sent nothing releases
the key; one that 8x8 may have acted on keeps it with its answer; one that never finished
(a crash) leaves a lapsed mark, answered as an unknown outcome (504) until the key expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import GatewayError, error_response
from gateway.store.scripts import ScriptClient, script

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
OMITTED = "Idempotent-Body-Omitted"  # a replay whose first answer was too large to keep
MAX_KEY = 255
#: answer headers not kept with a stored answer (the replay gets its own)
_NOT_KEPT = frozenset({"content-length", "date", "server", "transfer-encoding", "connection"})
_POLL_FIRST_S, _POLL_MAX_S = 0.01, 0.25


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


def request_key(
    request: web.Request, client: str, raw: bytes, *, client_message_id: bool
) -> Key | None:
    """The send's key, scoped to `client`: the header, else (opted in) the body's top-level
    `clientMessageId` when it is a usable key; None without either (nothing else is read)."""
    values = request.headers.getall(HEADER, ())
    if values:
        if len(values) > 1 or not _usable(values[0]):
            raise GatewayError(
                "request.invalid",
                f"{HEADER} must be one value of 1 to {MAX_KEY} printable characters",
                field=HEADER,
            )
        return _key(request, client, "h", values[0], raw)
    if client_message_id:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        found = body.get("clientMessageId") if isinstance(body, dict) else None
        if isinstance(found, str) and _usable(found):
            return _key(request, client, "m", found, raw)
    return None


def _usable(value: str) -> bool:
    return 0 < len(value) <= MAX_KEY and all(" " <= c <= "~" for c in value)


def _key(request: web.Request, client: str, kind: str, value: str, raw: bytes) -> Key:
    named = hashlib.sha256(f"{client}\0{kind}\0{value}".encode()).hexdigest()
    made = hashlib.sha256(f"{request.method}\0{request.rel_url.raw_path_qs}\0".encode())
    made.update(raw)
    return Key(f"gw:idem:{named}", made.hexdigest())


class Idempotency:
    """Runs a keyed send once: `once(key, run)` runs `run` for the first attempt and
    answers duplicates from it. One per process, on the app (`IDEMPOTENCY`)."""

    def __init__(self, keeper: Keeper, log: Any = None) -> None:
        self.keeper = keeper
        self.log = log
        # first attempts running in this process: duplicates here wait on these
        self._running: dict[str, tuple[str, asyncio.Future[None]]] = {}

    async def once(
        self,
        key: Key,
        run: Callable[[], Awaitable[web.StreamResponse]],
        *,
        ttl_s: int,
        lease_s: float,
        max_answer_bytes: int,
    ) -> web.StreamResponse:
        pause = _POLL_FIRST_S
        while True:
            running = self._running.get(key.id)
            if running is not None:
                if running[0] != key.fingerprint:
                    return _mismatch()
                await asyncio.shield(running[1])
                continue
            token = uuid.uuid4().hex
            try:
                state, stored = await self.keeper.claim(
                    key, token, int(lease_s * 1000), ttl_s * 1000
                )
            except Exception:
                return error_response("store.unavailable", "the idempotency store is unavailable")
            if state is State.CLAIMED:
                return await self._first(key, token, run, ttl_s, max_answer_bytes)
            if state is State.DONE and stored is not None:
                return replay(stored)
            if state is State.MISMATCH:
                return _mismatch()
            if state is State.LAPSED:
                return error_response(
                    "upstream.timeout",
                    "the first request with this key did not finish; whether 8x8 sent it "
                    "is unknown",
                    headers={REPLAYED: "true"},
                )
            await asyncio.sleep(pause)  # pending in another process
            pause = min(pause * 2, _POLL_MAX_S)

    async def _first(
        self,
        key: Key,
        token: str,
        run: Callable[[], Awaitable[web.StreamResponse]],
        ttl_s: int,
        max_answer_bytes: int,
    ) -> web.StreamResponse:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running[key.id] = (key.fingerprint, done)
        try:
            response = await run()  # an exception leaves the key pending: it lapses
            try:
                if may_have_sent(response):
                    answer = encode(response, max_answer_bytes)
                    await self.keeper.finish(key, token, answer, ttl_s * 1000)
                else:
                    await self.keeper.release(key, token)
            except Exception:  # the caller still gets its answer; the key lapses
                if self.log is not None:
                    self.log.warning("idempotency.store_failed", status=response.status)
            return response
        finally:
            del self._running[key.id]
            done.set_result(None)


def _mismatch() -> web.Response:
    return error_response(
        "request.idempotency_mismatch",
        f"this {HEADER} was used for another request (method, path or body differ)",
    )


def may_have_sent(response: web.StreamResponse) -> bool:
    """Whether 8x8 may have acted on the request this answers (then the key is kept):
    any 2xx or 5xx of 8x8's, a timeout, a connection lost after the request went out.
    Nothing was sent after a gateway refusal, a store outage, an open circuit, 8x8
    unreachable, or a 4xx of 8x8's (429 included): the key is released."""
    code = response.headers.get("X-Gateway-Reject")
    if code is None:
        return not 400 <= response.status < 500
    if code == "upstream.timeout":
        return True
    if code == "upstream.error" and isinstance(response, web.Response):
        body = response.body if isinstance(response.body, bytes) else b""
        return b"unreachable" not in body  # connect failed twice: nothing went out
    return False


def encode(response: web.StreamResponse, max_answer_bytes: int) -> bytes:
    """An answer as kept: a JSON head (status, headers, body omitted?), a newline, the body
    (left out when larger than `max_answer_bytes`)."""
    body = response.body if isinstance(response, web.Response) else None
    kept = isinstance(body, bytes) and len(body) <= max_answer_bytes
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _NOT_KEPT]
    if not kept:
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
    head = orjson.dumps([response.status, headers, not kept])
    return head + b"\n" + (body if kept and isinstance(body, bytes) else b"")


def replay(stored: bytes) -> web.Response:
    """A kept answer, marked as replayed."""
    head, _, body = stored.partition(b"\n")
    status, headers, omitted = orjson.loads(head)
    out: CIMultiDict[str] = CIMultiDict((str(k), str(v)) for k, v in headers)
    out[REPLAYED] = "true"
    if omitted:
        out[OMITTED] = "true"
    return web.Response(status=int(status), body=body, headers=out)


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


IDEMPOTENCY = web.AppKey("idempotency", Idempotency)
