"""Forwarding to 8x8: one pooled keep-alive session per process, the real key injected.

Only the configured 8x8 base URLs are ever contacted. The caller's Authorization, Host,
hop-by-hop and any unlisted headers stay behind; 8x8's status, body and the headers that
matter come back unchanged. Sends read 8x8's answer whole (`forward`); other operations
stream it (`stream`), so a download or an export costs no memory for its size.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

# request headers a caller may pass on to 8x8; everything else is dropped
FORWARD_REQUEST = (
    "Content-Type",
    "Accept",
    "Accept-Language",
    "User-Agent",
    "X-Request-Id",
    "Idempotency-Key",
)
# 8x8 answer headers passed back to the caller
FORWARD_RESPONSE = frozenset(
    h.lower()
    for h in (
        "Content-Type",
        "Content-Disposition",
        "Cache-Control",
        "ETag",
        "Last-Modified",
        "Expires",
        "Retry-After",
        "Location",
        "X-Request-Id",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "RateLimit-Policy",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    )
)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    seconds: float


@dataclass(frozen=True, slots=True)
class Streamed:
    """8x8's answer whose body is still arriving: read `body` in chunks."""

    status: int
    headers: CIMultiDict[str]
    body: aiohttp.StreamReader
    seconds: float  # until the answer's head arrived


class UpstreamFailure(Exception):
    """8x8 could not be reached (`upstream.error`) or did not answer in time (`.timeout`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Breaker:
    """Stops hammering a dead 8x8: after `threshold` failures in a row (unreachable,
    timeout, 5xx) the product's circuit opens for `open_s`; then one request probes it
    and its outcome closes or re-opens it."""

    def __init__(self, threshold: int = 20, open_s: float = 5.0) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self.failures = 0
        self.open_until = 0.0

    def allow(self) -> bool:
        if self.failures < self.threshold:
            return True
        now = time.monotonic()
        if now < self.open_until:
            return False
        self.open_until = now + self.open_s  # this request is the probe; others wait
        return True

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
        else:
            self.failures += 1
            if self.failures >= self.threshold:
                self.open_until = time.monotonic() + self.open_s


class Upstream:
    def __init__(
        self,
        urls: Mapping[str, str],
        api_key: str,
        timeout_s: float,
        breaker_failures: int = 20,
        breaker_open_s: float = 5.0,
    ) -> None:
        self.urls = dict(urls)
        self.breakers = {p: Breaker(breaker_failures, breaker_open_s) for p in self.urls}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0))
        # a download may take longer than timeout_s in all; each read may not
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=min(timeout_s, 5.0), sock_read=timeout_s
        )
        self._auth = ""
        self.set_key(api_key)
        self._session: aiohttp.ClientSession | None = None

    def set_key(self, api_key: str) -> None:
        self._auth = f"Bearer {api_key}"

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=1000, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def request_headers(
        self, incoming: Mapping[str, str], request_id: str | None = None
    ) -> dict[str, str]:
        headers = {"Authorization": self._auth}
        for name in FORWARD_REQUEST:
            value = incoming.get(name)
            if value is not None:
                headers[name] = value
        if request_id is not None:  # the caller's, or the one the gateway made for it
            headers["X-Request-Id"] = request_id
        return headers

    async def forward(
        self,
        product: str,
        path_qs: str,
        method: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> Answer:
        breaker = self.breakers[product]
        if not breaker.allow():
            raise UpstreamFailure("upstream.unavailable", "8x8 is failing; not retried for now")
        try:
            answer = await self._send(product, path_qs, method, body, headers)
        except UpstreamFailure:
            breaker.record(ok=False)
            raise
        breaker.record(ok=answer.status < 500)
        return answer

    @asynccontextmanager
    async def stream(
        self,
        product: str,
        path_qs: str,
        method: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> AsyncIterator[Streamed]:
        """8x8's answer, its body streamed; the connection is released on exit."""
        breaker = self.breakers[product]
        if not breaker.allow():
            raise UpstreamFailure("upstream.unavailable", "8x8 is failing; not retried for now")
        started = time.perf_counter()
        try:
            resp = await self._open(product, path_qs, method, body, headers, self.stream_timeout)
        except UpstreamFailure:
            breaker.record(ok=False)
            raise
        breaker.record(ok=resp.status < 500)
        try:
            yield Streamed(resp.status, _kept(resp), resp.content, time.perf_counter() - started)
        finally:
            resp.release()

    async def _send(
        self,
        product: str,
        path_qs: str,
        method: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> Answer:
        started = time.perf_counter()
        resp = await self._open(product, path_qs, method, body, headers, None)
        try:
            payload = await resp.read()
        except TimeoutError as exc:
            raise UpstreamFailure("upstream.timeout", "8x8 did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure("upstream.error", "8x8 connection failed") from exc
        finally:
            resp.release()
        return Answer(resp.status, _kept(resp), payload, time.perf_counter() - started)

    async def _open(
        self,
        product: str,
        path_qs: str,
        method: str,
        body: bytes | None,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        assert self._session is not None, "Upstream.start() was not awaited"
        # encoded: the path goes out byte for byte as the caller wrote it (no re-quoting)
        url = URL(self.urls[product] + path_qs, encoded=True)
        for attempt in (1, 2):
            try:
                return await self._session.request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=limits or self.timeout,
                )
            except aiohttp.ClientConnectorError as exc:
                # nothing was sent: trying again once cannot deliver twice
                if attempt == 2:
                    raise UpstreamFailure("upstream.error", "8x8 is unreachable") from exc
            except TimeoutError as exc:
                raise UpstreamFailure("upstream.timeout", "8x8 did not answer in time") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamFailure("upstream.error", "8x8 connection failed") from exc
        raise UpstreamFailure("upstream.error", "8x8 is unreachable")  # pragma: no cover


def _kept(resp: aiohttp.ClientResponse) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() in FORWARD_RESPONSE)


def retry_after_s(value: str | None, low: float, high: float) -> float:
    """8x8's `Retry-After` (delta-seconds) within [low, high]; 1 s when absent or not a
    number."""
    try:
        seconds = float(value) if value else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, low), high)
