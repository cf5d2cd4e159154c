"""Shared-secret checks for the admin API and the webhooks, with a per-caller-IP limit on
failed attempts so a secret cannot be guessed by brute force.

Failures are counted in-process (each worker on its own): the guess budget of an attacker
is `auth_failures_per_minute` x workers x instances per minute, far below what guessing a
random secret needs, and the check keeps working when Redis does not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections import OrderedDict

from aiohttp import web

from gateway.errors import GatewayError

_MAX_TRACKED = 10_000


class SecretGuard:
    def __init__(self, failures_per_minute: int) -> None:
        self.limit = failures_per_minute
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def check(self, request: web.Request, secret: str, *, webhook: bool = False) -> None:
        """Raise GatewayError unless the request carries `secret`.

        Admin: `Authorization: Bearer`. Webhooks also take the Basic-auth password or
        `?token=`, since 8x8's webhook settings can be configured with any of them.
        """
        caller = request.remote or "-"
        if self._blocked(caller):
            raise GatewayError("rate_limited.auth", "too many failed attempts; wait a minute")
        presented = _presented(request, webhook)
        if not secret:
            raise GatewayError("auth.invalid", "no secret is configured for this endpoint")
        if presented is None:
            self._fail(caller)
            raise GatewayError("auth.missing", "a secret is required")
        if not hmac.compare_digest(
            presented.encode("utf-8", "surrogatepass"), secret.encode("utf-8")
        ):
            self._fail(caller)
            raise GatewayError("auth.invalid", "wrong secret")

    def _blocked(self, caller: str) -> bool:
        times = self._failures.get(caller)
        if not times:
            return False
        cutoff = time.monotonic() - 60
        while times and times[0] < cutoff:
            times.pop(0)
        return len(times) >= self.limit

    def _fail(self, caller: str) -> None:
        times = self._failures.setdefault(caller, [])
        self._failures.move_to_end(caller)
        times.append(time.monotonic())
        if len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)


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
