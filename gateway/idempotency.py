"""Idempotent sends: a send with an `Idempotency-Key` (or, opted in, a `clientMessageId`)
reaches 8x8 at most once per key per client while the key is kept (docs/idempotency.md).

The proxy asks `request_key` for a send's key (400 for a bad header; None: no key, and no
cost), then runs the decision and the forwarding through `Idempotency.once`. A key's record
lives in a keeper (gateway/store/idempotency.py: Redis, shared by every worker and kept
over restarts, or this process's memory). The first attempt claims the key with a pending
mark and a lease; duplicates wait for it (in-process ones on a future, others poll the
keeper) and replay its answer, marked `Idempotent-Replayed: true`. An attempt that sent
nothing releases the key; one that 8x8 may have acted on keeps it with its answer; one that
never finished (a crash) leaves a lapsed mark, answered as an unknown outcome (504) until
the key expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import GatewayError, error_response
from gateway.store.base import Store
from gateway.store.idempotency import Keeper, Key, MemoryKeeper, RedisKeeper, State
from gateway.store.redis import RedisStore

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
OMITTED = "Idempotent-Body-Omitted"  # a replay whose first answer was too large to keep
MAX_KEY = 255
#: answer headers not kept with a stored answer (the replay gets its own)
_NOT_KEPT = frozenset({"content-length", "date", "server", "transfer-encoding", "connection"})
_POLL_FIRST_S, _POLL_MAX_S = 0.01, 0.25


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


def for_store(store: Store, timeout_ms: int, log: Any = None) -> Idempotency:
    """Keys beside the store's data: in its Redis (each call given a few times the
    store's timeout: a keyed send waits on it rather than risk a second send), else in
    this process."""
    if isinstance(store, RedisStore):
        return Idempotency(RedisKeeper(store.client, max(0.25, timeout_ms / 250)), log)
    return Idempotency(MemoryKeeper(), log)


IDEMPOTENCY = web.AppKey("idempotency", Idempotency)
