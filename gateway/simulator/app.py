"""The 8x8-facing side: routes under one product prefix each, and the per-request path
(drop, auth, injected failure, limits, answer, record, delay).

Order of checks, each consuming nothing when it refuses: a `drop` closes the connection;
no or a wrong key is 401; `fail_status` answers that status; a full window is 429; a bad
body is 400 (it still counted as a request, as at 8x8); else 8x8's success answer.
"""

from __future__ import annotations

import asyncio
import hmac
import re
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
from .meta import Meta
from .record import Recorder
from .schema import Spec, check
from .shapes import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON = "application/json"
_SUBACCOUNT_ID = re.compile(r"[A-Za-z0-9\-._&]{3,50}")  # 8x8's subAccountId pattern


@dataclass(frozen=True, slots=True)
class Call:
    """One API request as an answer function sees it."""

    request: web.Request
    raw: bytes
    body: Any  # the decoded JSON when the route has a spec, else None
    sub: str | None
    account: str | None

    def param(self, name: str) -> str:
        return self.request.match_info[name]


#: an answer: (status, JSON body or None for an empty one), or a ready response
Answer = Callable[["Simulator", Call], "tuple[int, Any] | web.Response"]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    product: str
    kind: str
    answer: Answer
    api: bool = True  # False: not 8x8's API (unknown paths): no auth, faults or limits
    per_subaccount: bool = True  # counts toward the subaccount's window (else IP only)
    spec: Spec | None = None  # the JSON body 8x8's schema wants (required when set)
    body_optional: bool = False  # with a spec: an empty body is allowed


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
        self.sessions: dict[str, dict[str, Any]] = {}  # Verify sessions by id
        self.jobs: dict[str, dict[str, Any]] = {}  # Contacts batch jobs by id
        self.meta = Meta()  # WhatsApp's limits behind 8x8 (gateway/simulator/meta.py)

    def reset(self) -> None:
        """Forget what arrived (records, counters, windows, contacts); keep the settings."""
        self.limiter.clear()
        self.recorder = Recorder(self.config.record_limit)
        self.contacts.clear()
        self.sessions.clear()
        self.jobs.clear()
        self.meta.reset()

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
        if (
            route.product == "chatapps"
            and route.kind in ("send", "batch")
            and response.status < 300
        ):
            self.meta.saw(sub, parse_json(raw), route.kind == "batch")
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
            answer = route.answer(self, Call(request, raw, _read(route, raw, sub), sub, account))
        except ApiError as exc:
            return self._error(exc.status, exc.code, exc.message)
        if isinstance(answer, web.Response):
            return answer
        status, body = answer
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
            request.rel_url.raw_path,
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


def _read(route: Route, raw: bytes, sub: str | None) -> Any:
    """The body as 8x8's schema reads it, or the ApiError (400) it answers."""
    if sub is not None and not _SUBACCOUNT_ID.fullmatch(sub):
        raise ApiError(shapes.INVALID_PARAMETER, "Invalid parameter: subAccountId")
    if route.spec is None or (route.body_optional and not raw.strip()):
        return None
    if not raw.strip():
        raise ApiError(shapes.INVALID_PARAMETER, "Invalid parameter: the body is required")
    body = parse_json(raw)
    problem = check(route.spec, body)
    if problem is not None:
        code = shapes.INVALID_MSISDN if problem.msisdn else shapes.INVALID_PARAMETER
        message = shapes.MSG_MSISDN if problem.msisdn else "Invalid parameter"
        raise ApiError(code, f"{message}: {problem.field} {problem.reason}")
    return body


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(shapes.INVALID_PARAMETER, "Invalid parameter: malformed JSON") from None
