"""Scheduled sends, and their cancellation when the person opts out.

A send accepted while its recipient could receive it may be scheduled for later (8x8's
`scheduled` field, a date-time, on single chat-apps and SMS sends). If the recipient says
STOP before then, 8x8 would still deliver it; so:

- `remember` (the proxy's hook after a 2xx answer): the `umid` 8x8 gave a scheduled send
  (a single send, or each SMS of a batch) is kept in the store per account and recipient (the E.164 number, or the channel user
  for a chat-apps send addressed by `channelUserId` only) until its scheduled time plus
  `MARGIN_US`. A recipient who opted out in between gets the cancel at once.
- `cancel_for` (webhook STOP, admin PUT, a blacklist add): queues the person; one worker
  per process lists what the store remembers for them and calls 8x8's cancel, `DELETE
  /api/v1/subaccounts/{sub}/messages/{umid}` on the send's product, at most
  `CANCELS_PER_S` a second (aiolimiter: the gateway's own calls share 8x8's limits with
  its callers' traffic). 2xx, 404 and 409 are done (404/409: already sent or cancelled)
  and the entry is forgotten; 408/425/429, 5xx and failures are retried with backoff up
  to `MAX_ATTEMPTS`; anything else is logged and forgotten.

SMS batches are tracked message by message: a batch with a `scheduled` message is
forwarded with `includeMessagesInResponse: true` (gateway/listing.py hides the list from a
caller who did not ask), so its answer lists a `umid` per message. Chat-apps batches (no
`scheduled` in 8x8's batch schema) are not tracked: 8x8 gives only a batch id, whose
cancel would hit every recipient. An entry outlives a process that dies mid-cancel (it stays in the store until its margin
passes) but is only retried by the person's next opt-out.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import quote, unquote

import orjson
from aiohttp import web
from aiolimiter import AsyncLimiter

from gateway import background, templatesync
from gateway.background import QueueWorker
from gateway.errors import GatewayError
from gateway.messages import normalise
from gateway.state import STATE, State
from gateway.store import keys
from gateway.store.gcra import instant_us
from gateway.upstream import Answer, UpstreamFailure

MARGIN_US = 3600 * 1_000_000  # kept this long after the scheduled time
CANCELS_PER_S = 10
MAX_ATTEMPTS = 5
BASE_DELAY_S = 1.0
DRAIN_S = 5.0
QUEUE_MAX = 100_000
_DONE = frozenset({404, 409})
_RETRY = frozenset({408, 425, 429})
_SEND = re.compile(r"/api/v1/subaccounts/(?P<sub>[^/]+)/messages(?P<batch>/batch)?")
_CHUNK = 200  # store calls in flight while remembering a batch
_PRODUCTS = frozenset({"chatapps", "sms"})
WHATSAPP = "whatsapp"  # chat-apps `user.channelUserId` is a WhatsApp user id (BSUID)

Job = tuple[str, tuple[str, ...]]  # (account, identities)


def entry(product: str, subaccount: str, umid: str) -> str:
    """What the store keeps for one scheduled send."""
    return orjson.dumps({"p": product, "s": subaccount, "u": umid}).decode()


def recipient(product: str, body: dict[str, Any]) -> str | None:
    """The identity a single send goes to: its E.164 number, or for chat apps without a
    number the WhatsApp channel user; None when the body names neither usably."""
    user = body.get("user") if product == "chatapps" else body
    if not isinstance(user, dict):
        return None
    raw = user.get("msisdn") if product == "chatapps" else user.get("destination")
    if raw is not None:
        try:
            return normalise(raw, user.get("country"), "msisdn")
        except GatewayError:
            return None
    cuid = user.get("channelUserId") if product == "chatapps" else None
    if isinstance(cuid, str) and cuid.strip():
        return keys.channel_user_id(WHATSAPP, cuid)
    return None


def scheduled_at_us(body: dict[str, Any], now_us: int) -> int | None:
    """The send's `scheduled` time in µs since the epoch when it is in the future."""
    when = templatesync.instant(body.get("scheduled"))
    if when is None:
        return None
    try:
        at = instant_us(when)
    except (ValueError, OverflowError):
        return None
    return at if at > now_us else None


Found = tuple[str, str, int]  # (recipient identity, umid, forget after: µs since the epoch)


def single_send(product: str, body: dict[str, Any], reply: dict[str, Any], now: int) -> list[Found]:
    """The scheduled single send 8x8 accepted, if it is one."""
    umid, at = reply.get("umid"), scheduled_at_us(body, now)
    who = recipient(product, body)
    if not isinstance(umid, str) or not umid or at is None or who is None:
        return []
    return [(who, umid, at + MARGIN_US)]


def sms_batch(body: dict[str, Any], reply: dict[str, Any], now: int) -> list[Found]:
    """The scheduled SMS of a batch 8x8 accepted with `includeMessagesInResponse`: its
    answer lists each message (with its `umid`) in the order of the batch's `messages`,
    then its `destinations`, each combined with the batch `template`."""
    shared = body.get("template")
    shared = shared if isinstance(shared, dict) else {}
    messages, destinations = body.get("messages"), body.get("destinations")
    sent: list[dict[str, Any]] = [
        {**shared, **m} for m in (messages if isinstance(messages, list) else ())
        if isinstance(m, dict)
    ]  # fmt: skip
    sent += [{**shared, "destination": d} for d in
             (destinations if isinstance(destinations, list) else ())]  # fmt: skip
    answered = reply.get("messages")
    if not isinstance(answered, list) or len(answered) != len(sent):
        return []
    found = []
    for message, answer in zip(sent, answered, strict=True):
        umid = answer.get("umid") if isinstance(answer, dict) else None
        at, who = scheduled_at_us(message, now), recipient("sms", message)
        if isinstance(umid, str) and umid and at is not None and who is not None:
            found.append((who, umid, at + MARGIN_US))
    return found


async def remember(
    app: web.Application, product: str, method: str, path: str, sent: bytes | None, answer: Answer
) -> None:
    """Keep the `umid`s of scheduled sends 8x8 accepted (the proxy's hook after it
    answered, given the body as forwarded). Never raises: a failure is logged, the
    caller's answer stands."""
    if method != "POST" or product not in _PRODUCTS or not 200 <= answer.status < 300:
        return
    m = _SEND.fullmatch(path)
    if m is None or not sent or b'"scheduled"' not in sent or (m["batch"] and product != "sms"):
        return
    state = app[STATE]
    try:
        body, reply = orjson.loads(sent), orjson.loads(answer.body)
        if not isinstance(body, dict) or not isinstance(reply, dict):
            return
        now = time.time_ns() // 1000
        read = sms_batch if m["batch"] else partial(single_send, product)
        found = read(body, reply, now)
        if not found:
            return
        sub = unquote(m["sub"])
        account = state.config.account_of(sub)
        store = state.store
        for i in range(0, len(found), _CHUNK):
            chunk = found[i : i + _CHUNK]
            await asyncio.gather(*(store.scheduled_add(account, who, entry(product, sub, umid), until)
                                   for who, umid, until in chunk))  # fmt: skip
            opted = await asyncio.gather(*(store.optout_contains(account, w) for w, _, _ in chunk))
            late = [who for (who, _, _), out in zip(chunk, opted, strict=True) if out]
            if late:  # a STOP came in while the send was on its way: cancel it now
                cancel_for(app, account, late)
    except Exception as exc:
        state.log.warning("scheduled.remember_failed", error=type(exc).__name__)


def cancel_for(app: web.Application, account: str, identities: Sequence[str]) -> bool:
    """Cancel the scheduled sends to these identities, in the background; False (logged)
    when there is no worker or its queue is full."""
    canceller = app.get(CANCELLER)
    if canceller is None or not identities:
        return False
    return canceller.enqueue((account, tuple(identities)))


class Canceller(QueueWorker[Job]):
    """One background worker per process calling 8x8's cancel at a bounded rate."""

    NAME = "scheduled-cancel"
    CRASHED = "scheduled.cancel_crashed"
    QUEUE_MAX = QUEUE_MAX

    def __init__(
        self,
        state: State,
        *,
        per_second: float = CANCELS_PER_S,
        base_delay_s: float = BASE_DELAY_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        super().__init__(state)
        self.limiter = AsyncLimiter(per_second, 1.0)
        self.base_delay_s = base_delay_s
        self.max_attempts = max_attempts

    async def work(self, item: Job) -> None:
        account, identities = item
        for identity in identities:
            for entry in await self.state.store.scheduled_list(account, identity):
                await self._cancel(account, identity, entry)

    def fields(self, item: Job) -> dict[str, Any]:
        return {"account": item[0]}

    def _log_left(self, effect: str, item: Job) -> None:
        if effect == "dropped":
            self.state.log.error(
                "scheduled.cancel_dropped", **self.fields(item), reason="queue full"
            )
        else:
            self.state.log.error("scheduled.cancel_abandoned", **self.fields(item))

    async def _cancel(self, account: str, identity: str, item: str) -> None:
        try:
            found = orjson.loads(item)
            product, sub, umid = found["p"], found["s"], found["u"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.state.store.scheduled_remove(account, identity, item)
            return
        detail = ""
        for attempt in range(1, self.max_attempts + 1):
            async with self.limiter:
                outcome, detail = await self._call(product, sub, umid)
            if outcome != "retry":
                break
            if attempt == self.max_attempts or self.closing:
                outcome = "failed"
                break
            await self.backoff(self.base_delay_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        self._count(outcome)
        log = self.state.log.info if outcome != "failed" else self.state.log.error
        log(f"scheduled.{outcome}", account=account, msisdn=identity, umid=umid, error=detail)
        if outcome != "failed" or not detail.startswith("retry"):
            await self.state.store.scheduled_remove(account, identity, item)

    async def _call(self, product: str, sub: str, umid: str) -> tuple[str, str]:
        """("cancelled" | "already_sent" | "retry" | "failed", detail)."""
        upstream = self.state.upstream
        path = f"/api/v1/subaccounts/{quote(sub, safe='')}/messages/{quote(umid, safe='')}"
        headers = upstream.request_headers({"Accept": "application/json"})
        try:
            answer = await upstream.forward(product, path, "DELETE", None, headers)
        except UpstreamFailure as exc:
            return "retry", f"retry: {exc.code}"
        if 200 <= answer.status < 300:
            return "cancelled", ""
        if answer.status in _DONE:
            return "already_sent", f"8x8 answered {answer.status}"
        if answer.status in _RETRY or answer.status >= 500:
            return "retry", f"retry: 8x8 answered {answer.status}"
        return "failed", f"8x8 answered {answer.status}"

    def _count(self, effect: str) -> None:
        self.state.metrics.webhooks.labels("scheduled_cancel", effect).inc()


CANCELLER = web.AppKey("scheduled_canceller", Canceller)


def install(app: web.Application) -> None:
    """Give `app` its canceller (needs `app[STATE]`) and run its worker with the app."""
    background.install(app, CANCELLER, Canceller, DRAIN_S)
