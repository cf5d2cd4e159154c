"""CAPTCHA before a public-form send: the `X-Captcha-Token` a client with `public_form`
must carry, verified with the provider's siteverify before anything is decided.

reCAPTCHA, hCaptcha and Cloudflare Turnstile share one shape: POST form fields `secret`,
`response` (the token) and `remoteip` (the end user's address, when the send names one)
to `[captcha] verify_url`; the JSON answer's `success` says yes or no.

- A token is good once, fleet-wide: its SHA-256 is claimed in the store (SET NX, kept
  `token_ttl_s`, the providers' token life) before the provider is asked; a token seen
  before is `captcha.invalid` without a call. The token itself is never stored or logged.
- The provider down (no answer within `timeout_s`, a 5xx, an unreadable answer) or the
  store down: `on_failure = "closed"` refuses 503 `captcha.unavailable` (and releases the
  claim, so the person may retry with the same token); `"open"` lets the send be decided
  without the check, logged and counted (`gateway_captcha_checks_total{outcome="open"}`).

Clients without `public_form` never reach this module: the proxy tests one bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import Counter

from gateway.errors import error_response
from gateway.policy.enduser import address
from gateway.state import LOG, STATE, State

HEADER = "X-Captcha-Token"
MAX_TOKEN = 4096  # reCAPTCHA tokens are ~2 kB; anything longer is not a token
_MESSAGES = {
    "captcha.missing": f"this client's sends need a CAPTCHA token ({HEADER})",
    "captcha.invalid": "the CAPTCHA token is not valid (or was used before)",
    "captcha.unavailable": "the CAPTCHA provider could not be reached",
}


class Unavailable(Exception):
    """The provider (or the store) could not give an answer."""


class Captcha:
    """One per process: the HTTP session to the provider, the secret and a counter."""

    def __init__(self, state: State, secret: str) -> None:
        self.state = state
        self.secret = secret
        self.session: aiohttp.ClientSession | None = None
        self.checks = Counter(
            "gateway_captcha_checks",
            "CAPTCHA checks of public-form sends, by outcome",
            ["outcome"],
            registry=state.metrics.registry,
        )

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=60),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def check(self, token: str | None, remote_ip: str | None) -> str | None:
        """The refusal code for this token, or None when the send may be decided."""
        if token is None or not token.strip():
            return self._outcome("captcha.missing")
        token = token.strip()
        if len(token) > MAX_TOKEN:
            return self._outcome("captcha.invalid")
        cfg = self.state.config.captcha
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        store = self.state.store
        try:
            if not await store.captcha_use(digest, cfg.token_ttl_s * 1000):
                return self._outcome("captcha.invalid")  # used before: no provider call
        except Exception as exc:
            return self._unavailable("store", exc)
        try:
            ok = await self.verify(token, remote_ip)
        except Unavailable as exc:
            try:
                await store.captcha_release(digest)
            except Exception as again:
                self.state.log.warning("captcha.release_failed", error=type(again).__name__)
            return self._unavailable("provider", exc)
        if not ok:
            return self._outcome("captcha.invalid")
        self.checks.labels("passed").inc()
        return None

    async def verify(self, token: str, remote_ip: str | None) -> bool:
        """The provider's `success`; Unavailable when it gives no usable answer in time."""
        cfg = self.state.config.captcha
        if self.session is None:
            raise Unavailable("not started")
        form = {"secret": self.secret, "response": token}
        if remote_ip:
            form["remoteip"] = remote_ip
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        try:
            async with self.session.post(cfg.verify_url, data=form, timeout=timeout) as answer:
                if answer.status >= 300:
                    raise Unavailable(f"provider answered {answer.status}")
                body = orjson.loads(await answer.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise Unavailable(type(exc).__name__) from exc
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise Unavailable("answer without a boolean success")
        if not body["success"]:
            self.state.log.info("captcha.refused", errors=body.get("error-codes"))
        return bool(body["success"])

    def _unavailable(self, what: str, exc: Exception) -> str | None:
        mode = self.state.config.captcha.on_failure
        self.state.log.warning(
            "captcha.unavailable", source=what, error=str(exc) or type(exc).__name__, mode=mode
        )
        if mode == "open":
            self.checks.labels("open").inc()
            return None
        return self._outcome("captcha.unavailable")

    def _outcome(self, code: str) -> str:
        self.checks.labels(code.removeprefix("captcha.")).inc()
        return code


def remote_ip(header: str | None, client_ips: Iterable[str]) -> str | None:
    """The end user's address for `remoteip`: X-End-User-IP, else the body's clientIp."""
    for value in (header, *client_ips):
        found = address(value) if value else None
        if found is not None:
            return str(found)
    return None


async def check(request: web.Request, client_ips: Iterable[str]) -> web.Response | None:
    """The proxy's hook for a public-form client's send: None, or the refusal to answer."""
    captcha = request.app[CAPTCHA]
    ip = remote_ip(request.headers.get("X-End-User-IP"), client_ips)
    code = await captcha.check(request.headers.get(HEADER), ip)
    if code is None:
        return None
    request[LOG]["decision"] = code
    return error_response(code, _MESSAGES[code])


CAPTCHA = web.AppKey("captcha", Captcha)


def install(app: web.Application, secret: str) -> None:
    """Give `app` its verifier (needs `app[STATE]`), started and closed with the app."""
    app[CAPTCHA] = Captcha(app[STATE], secret)
    app.cleanup_ctx.append(_lifecycle)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    await app[CAPTCHA].start()
    yield
    await app[CAPTCHA].close()
