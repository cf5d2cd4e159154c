"""The 8x8-facing side: routes under one product prefix each, and the per-request path
(drop, auth, injected failure, limits, answer, record, delay).

Order of checks, each consuming nothing when it refuses: a `drop` closes the connection;
no or a wrong key is 401; `fail_status` answers that status; a full window is 429; a bad
body is 400 (it still counted as a request, as at 8x8); else 8x8's success answer.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from . import shapes
from .accounts import Contacts, Templates
from .config import SimConfig
from .limits import Limiter
from .record import Recorder
from .shapes import ApiError

Answer = Callable[["Simulator", web.Request, bytes, str | None, str | None], tuple[int, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    product: str
    kind: str
    answer: Answer
    api: bool = True  # False: not 8x8's API (unknown paths): no auth, faults or limits
    per_subaccount: bool = True  # counts toward the subaccount's window (else IP only)


class Simulator:
    """All the simulator's state; one per app (`SIM` on the app)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.ids = shapes.Ids()
        self.clock = shapes.Clock()
        self.limiter = Limiter(config)
        self.recorder = Recorder(config.record_limit)
        self.templates = Templates(self.clock)
        self.contacts = Contacts(self.clock)

    def reset(self) -> None:
        """Forget what arrived (records, counters, windows, contacts); keep the settings."""
        self.limiter.clear()
        self.recorder = Recorder(self.config.record_limit)
        self.contacts.clear()

    def handler(self, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, route)

        return handle

    async def handle(self, request: web.Request, route: Route) -> web.StreamResponse:
        raw = await request.read()
        now = time.monotonic()
        config = self.config
        info = request.match_info
        sub = info.get("sub")
        account = info.get("account")
        ip = request.remote or ""
        if config.drop:
            self._keep(request, route, now, sub, account, ip, raw, None)
            if config.delay_ms > 0:
                await asyncio.sleep(config.delay_ms / 1000)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)  # never sent: the transport is closed
        response = self._respond(request, route, raw, now, sub, account, ip)
        self._keep(request, route, now, sub, account, ip, raw, response.status)
        if config.delay_ms > 0:
            await asyncio.sleep(config.delay_ms / 1000)
        return response

    def _respond(
        self,
        request: web.Request,
        route: Route,
        raw: bytes,
        now: float,
        sub: str | None,
        account: str | None,
        ip: str,
    ) -> web.Response:
        config = self.config
        if route.api:
            if config.api_key is not None and not _authorized(request, config.api_key):
                return self._error(401, shapes.UNAUTHORIZED, shapes.MSG_UNAUTHORIZED)
            if config.fail_status is not None:
                return self._fault(config.fail_status)
            scoped = sub if route.per_subaccount else None
            refused = self.limiter.admit(scoped, ip, now)
            if refused is not None:
                self.recorder.refused_by(refused, scoped, now)
                return self._quota()
            self.recorder.admitted(scoped, now)
        try:
            status, body = route.answer(self, request, raw, sub, account)
        except ApiError as exc:
            return self._error(exc.status, exc.code, exc.message)
        if body is None:
            return web.Response(status=status)
        return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON)

    def _keep(
        self,
        request: web.Request,
        route: Route,
        now: float,
        sub: str | None,
        account: str | None,
        ip: str,
        raw: bytes,
        status: int | None,
    ) -> None:
        recorder = self.recorder
        recorder.answered(status)
        recorder.keep(
            now - recorder.start,
            time.time(),
            request.method,
            request.path,
            request.query_string,
            route.product or request.path.split("/", 2)[1],
            route.kind,
            sub,
            account,
            ip,
            request.headers,
            raw,
            status,
        )

    def _error(self, status: int, code: int, message: str) -> web.Response:
        body = shapes.error(self.ids, self.clock, code, message)
        return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON)

    def _quota(self) -> web.Response:
        retry = self.config.retry_after_s
        body = shapes.quota_error(self.ids, self.clock, retry)
        return web.Response(
            body=orjson.dumps(body),
            status=429,
            content_type=_JSON,
            headers={"Retry-After": str(retry)},
        )

    def _fault(self, status: int) -> web.Response:
        if status == 429:
            return self._quota()
        body = shapes.fault_error(self.ids, self.clock, status)
        return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON)


def _authorized(request: web.Request, key: str) -> bool:
    given = request.headers.get("Authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {key}".encode())


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(shapes.INVALID_PARAMETER, "Invalid parameter: malformed JSON") from None
