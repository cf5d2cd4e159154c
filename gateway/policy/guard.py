"""Shared-secret checks for the admin API and the webhooks, with a per-caller-address limit
on failed attempts so a secret cannot be guessed by brute force.

Two rules keep a STOP from ever being lost to a lock-out:
- the right secret is always accepted: only a wrong or missing secret is refused 429
  `rate_limited.auth` once its caller is over the limit (everyone behind one load balancer
  is one address, 8x8's webhook senders included, so a lock-out of the address would
  bounce 8x8's events while someone else guesses);
- admin and webhook failures are counted apart: guessing at the admin token does not
  use up the webhooks' budget, and the other way round.

So the limit slows guessing and bounds the work a guesser causes; what makes a guess
hopeless is the secret's length (32 random bytes or more). Failures are counted
in-process (each worker on its own): the guess budget is `auth_failures_per_minute` x
workers x instances per minute, and the check keeps working when Redis does not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal

from aiohttp import web

from gateway.errors import GatewayError, error_response, from_exception

Kind = Literal["admin", "webhook"]
WINDOW_S = 60.0
_MAX_TRACKED = 10_000  # callers remembered; the oldest is forgotten first


class LockedOut(GatewayError):
    """429 `rate_limited.auth`: a wrong secret from a caller over the limit."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("rate_limited.auth", "too many failed attempts; wait a minute")
        self.retry_after_s = retry_after_s


def refusal(exc: GatewayError) -> web.Response:
    """The answer to a refusal; a lock-out also carries `Retry-After`."""
    if isinstance(exc, LockedOut):
        headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(exc.code, exc.message, headers=headers)
    return from_exception(exc)


class FailureCounter:
    """Failed attempts per caller in a sliding window, for one kind of secret."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def over(self, caller: str) -> bool:
        """Whether `caller` already failed `limit` times within the window."""
        times = self._failures.get(caller)
        if not times:
            return False
        cutoff = self._clock() - WINDOW_S
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[caller]
            return False
        return len(times) >= self.limit

    def retry_after_s(self, caller: str) -> int:
        """Whole seconds (at least 1) until `caller`'s oldest counted failure expires."""
        times = self._failures.get(caller)
        left = times[0] + WINDOW_S - self._clock() if times else 0.0
        return max(1, -int(-left // 1))

    def fail(self, caller: str) -> None:
        times = self._failures.setdefault(caller, deque(maxlen=max(1, self.limit)))
        self._failures.move_to_end(caller)
        times.append(self._clock())
        if len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)


class SecretGuard:
    def __init__(
        self, failures_per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = failures_per_minute
        self._counters: dict[Kind, FailureCounter] = {
            "admin": FailureCounter(failures_per_minute, clock),
            "webhook": FailureCounter(failures_per_minute, clock),
        }

    def check(self, request: web.Request, secret: str, *, webhook: bool = False) -> None:
        """Return when the request carries `secret`, else raise GatewayError: 401, or 429
        `rate_limited.auth` when its caller is over the limit for this kind of secret.

        Admin: `Authorization: Bearer`. Webhooks also take the Basic-auth password or
        `?token=`, since 8x8's webhook settings can be configured with any of them.
        """
        presented = _presented(request, webhook)
        if not secret:
            raise GatewayError("auth.invalid", "no secret is configured for this endpoint")
        if presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogatepass"), secret.encode("utf-8")
        ):
            return
        counter = self._counters["webhook" if webhook else "admin"]
        caller = request.remote or "-"
        if counter.over(caller):
            raise LockedOut(counter.retry_after_s(caller))
        counter.fail(caller)
        if presented is None:
            raise GatewayError("auth.missing", "a secret is required")
        raise GatewayError("auth.invalid", "wrong secret")


def _presented(request: web.Request, webhook: bool) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if not webhook:
        return None
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return request.query.get("token") or None
