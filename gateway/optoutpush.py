"""Pushing opt-outs to 8x8's blacklist (Contacts API), in the background.

With `policy.push_optouts`, a STOP (webhook or admin PUT) queues the number here after the
local opt-out is stored; the local record is what blocks sends at once, and it never waits
for or depends on this push (8x8 syncs its blacklist only hourly anyway).

One worker per process sends `POST {contacts}/api/v1/accounts/{account}/contacts/blacklist/
{msisdn}` one number at a time. A failure that may pass (connection error, timeout, 408,
429, 5xx) is retried with exponential backoff and jitter (1 s doubling, capped at 60 s, at
most MAX_ATTEMPTS tries); while one number backs off the queue waits behind it, which is
what a rate-limited or failing Contacts API wants. Any other answer (400 bad number, 401
bad key, ...) is logged and the number dropped. On shutdown the queue is drained for up to
`min(DRAIN_S, server.drain_s)` seconds, each number tried once more at most; whatever is
left is logged (masked) so ops can push it by hand.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway import background
from gateway.background import QueueWorker
from gateway.state import STATE, State
from gateway.upstream import UpstreamFailure

BASE_DELAY_S = 1.0
MAX_DELAY_S = 60.0
MAX_ATTEMPTS = 12  # about 8 minutes of trying
DRAIN_S = 5.0
QUEUE_MAX = 100_000
_RETRY_STATUSES = frozenset({408, 425, 429})

Item = tuple[str, str]  # (account, E.164 number)


class OptoutPusher(QueueWorker[Item]):
    NAME = "optout-push"
    CRASHED = "optout.push_crashed"
    QUEUE_MAX = QUEUE_MAX

    def __init__(
        self,
        state: State,
        *,
        base_delay_s: float = BASE_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        super().__init__(state)
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_attempts = max_attempts

    async def work(self, item: Item) -> None:
        await self._deliver(*item)

    def fields(self, item: Item) -> dict[str, Any]:
        return {"account": item[0], "msisdn": item[1]}

    def _log_left(self, effect: str, item: Item) -> None:
        if effect == "dropped":
            self.state.log.error("optout.push_dropped", **self.fields(item), reason="queue full")
        else:
            self.state.log.error("optout.push_abandoned", **self.fields(item))

    async def _deliver(self, account: str, msisdn: str) -> None:
        for attempt in range(1, self.max_attempts + 1):
            outcome, detail = await self._push(account, msisdn)
            if outcome == "pushed":
                self._count("pushed")
                self.state.log.info("optout.pushed", account=account, msisdn=msisdn)
                return
            if outcome == "failed" or attempt == self.max_attempts or self.closing:
                break
            delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
            self._count("retry")
            self.state.log.warning(
                "optout.push_retry", account=account, msisdn=msisdn, attempt=attempt,
                error=detail, delay_s=round(delay, 2),
            )  # fmt: skip
            await self.backoff(delay)
        self._count("failed")
        self.state.log.error("optout.push_failed", account=account, msisdn=msisdn, error=detail)

    async def _push(self, account: str, msisdn: str) -> tuple[str, str]:
        """("pushed" | "retry" | "failed", detail)."""
        upstream = self.state.upstream
        path = (
            f"/api/v1/accounts/{quote(account, safe='')}"
            f"/contacts/blacklist/{quote(msisdn, safe='+')}"
        )
        headers = upstream.request_headers({"Accept": "application/json"})
        try:
            answer = await upstream.forward("contacts", path, "POST", None, headers)
        except UpstreamFailure as exc:
            return "retry", exc.code
        if 200 <= answer.status < 300:
            return "pushed", ""
        detail = f"8x8 answered {answer.status}"
        if answer.status in _RETRY_STATUSES or answer.status >= 500:
            return "retry", detail
        return "failed", detail

    def _count(self, effect: str) -> None:
        self.state.metrics.webhooks.labels("optout_push", effect).inc()


PUSHER = web.AppKey("optout_pusher", OptoutPusher)


def install(app: web.Application) -> None:
    """Give `app` its pusher (needs `app[STATE]`) and run its worker with the app."""
    background.install(app, PUSHER, OptoutPusher, DRAIN_S)


def push(app: web.Application, account: str, msisdn: str) -> bool:
    """Queue a number when `policy.push_optouts` is on; True when queued."""
    pusher = app.get(PUSHER)
    if pusher is None or not app[STATE].config.policy.push_optouts:
        return False
    return pusher.enqueue((account, msisdn))
