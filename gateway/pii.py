"""PII retention: 8x8's PII removal called once for each SMS the gateway forwarded.

With `[pii] retain_days` above 0:

- `remember` (the proxy's hook after a 2xx SMS send): every `umid` in 8x8's answer (a
  single send's, each listed message of a batch) is queued in the store with its
  subaccount, due `retain_days` from now. Redis keeps the queue (one sorted set for the
  fleet, scored by due time), so it outlives restarts.
- `Remover`: one background worker per process claims due entries atomically under a
  lease (lua/pii_claim.lua: two workers never hold the same entry; one that dies mid-call
  loses it to another when the lease passes) and calls `DELETE
  /api/v1/subaccounts/{sub}/messages/{umid}/pii` on SMS, at most `deletes_per_s` a second
  per host (aiolimiter; each of the host's workers takes its share). 202 (removed) and 404
  (nothing to remove) finish the entry; 429 retries after 8x8's Retry-After; 408, 5xx and
  no answer retry with exponential backoff (capped at `MAX_BACKOFF_S`, never given up:
  retention is a legal duty); any other 4xx is logged as an error and dropped.
  An idle worker looks again within `POLL_S`, so removal starts within a few seconds of
  the due time (the contract allows 60).

SMS batches are forwarded with `includeMessagesInResponse: true` while retention is on
(gateway/listing.py hides the list from a caller who did not ask), so their umids are
known; an answer without umids all the same is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from typing import Any
from urllib.parse import quote, unquote

import orjson
from aiohttp import web
from aiolimiter import AsyncLimiter
from prometheus_client import Counter

from gateway import background
from gateway.state import STATE, State
from gateway.upstream import Answer, UpstreamFailure, retry_after_s

DAY_US = 86_400 * 1_000_000
LEASE_US = 60 * 1_000_000  # a claimed entry is due again after this (its worker died)
POLL_S = 1.0  # an idle worker looks for due entries at least this often
POLL_OFF_S = 30.0  # ... and this often when retention is off and the queue is empty
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
DRAIN_S = 5.0
_SEND = re.compile(r"/api/v1/subaccounts/(?P<sub>[^/]+)(?:/surveys/[^/]+)?/messages(?:/batch)?")
_RETRY = frozenset({408, 425, 429})


def entry(subaccount: str, umid: str, attempt: int = 0) -> str:
    """What the queue keeps for one SMS (`n`: failed attempts so far)."""
    return orjson.dumps({"s": subaccount, "u": umid, "n": attempt}).decode()


def umids(reply: Any) -> list[str]:
    """The umids of an SMS send's answer: a single send's, or each listed batch message's."""
    if not isinstance(reply, dict):
        return []
    found = [reply.get("umid")]
    listed = reply.get("messages")
    if isinstance(listed, list):
        found += [m.get("umid") for m in listed if isinstance(m, dict)]
    return [u for u in found if isinstance(u, str) and u]


async def remember(
    app: web.Application, product: str, method: str, path: str, answer: Answer
) -> None:
    """Queue the PII removal of the SMS 8x8 just accepted. Never raises: a failure is
    logged and counted, the caller's answer stands."""
    state = app[STATE]
    retain_days = state.config.pii.retain_days
    if retain_days <= 0 or product != "sms" or method != "POST" or answer.status >= 300:
        return
    m = _SEND.fullmatch(path)
    if m is None or answer.status < 200:
        return
    remover = app[REMOVER]
    try:
        found = umids(orjson.loads(answer.body))
        if not found:
            remover.count("unknown")
            state.log.warning("pii.no_umid", path=path)
            return
        sub = unquote(m["sub"])
        due = time.time_ns() // 1000 + int(retain_days * DAY_US)
        await state.store.pii_add([(entry(sub, u), due) for u in found])
        remover.count("queued", len(found))
    except Exception as exc:
        remover.count("queue_failed")
        state.log.error("pii.remember_failed", error=type(exc).__name__)


class Remover:
    """One background worker per process calling 8x8's PII removal at a bounded rate."""

    def __init__(self, state: State, *, base_backoff_s: float = BASE_BACKOFF_S) -> None:
        self.state = state
        self.base_backoff_s = base_backoff_s
        self._rate = 0.0
        self.limiter = self._limiter()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held: set[str] = set()  # claimed, not yet finished or moved
        self.effects = Counter(
            "gateway_pii_removals",
            "PII removal queue events, by effect",
            ["effect"],
            registry=state.metrics.registry,
        )

    def count(self, effect: str, n: int = 1) -> None:
        self.effects.labels(effect).inc(n)

    def _limiter(self) -> AsyncLimiter:
        """This process' share of `deletes_per_s` (renewed when a reload changes it)."""
        cfg = self.state.config
        rate = cfg.pii.deletes_per_s / max(1, cfg.server.workers)
        if rate != self._rate:
            self._rate = rate
            # aiolimiter takes whole acquisitions: below 1/s, one per 1/rate seconds
            self.limiter = AsyncLimiter(max(1.0, rate), max(1.0, rate) / rate)
        return self.limiter

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pii-removal")

    async def stop(self, drain_s: float) -> None:
        """Finish the calls in flight for up to `drain_s`; hand back the rest at once."""
        self._closing.set()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), drain_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for item in list(self._held):  # due again now, for another worker
            with contextlib.suppress(Exception):
                await self.state.store.pii_move(item, item, time.time_ns() // 1000)
        self._held.clear()

    async def _run(self) -> None:
        while not self._closing.is_set():
            wait_s = POLL_S
            try:
                batch = max(1, int(self._limiter().max_rate))
                claimed, next_us = await self.state.store.pii_claim(batch, LEASE_US)
                if claimed:
                    self._held.update(claimed)
                    await asyncio.gather(*(self._remove(item) for item in claimed))
                    continue
                if next_us is not None:
                    wait_s = min(POLL_S, max(0.01, next_us / 1e6))
                elif self.state.config.pii.retain_days <= 0:
                    wait_s = POLL_OFF_S
            except Exception:  # a store failure or a bug must not stop the worker
                self.state.log.exception("pii.worker_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), wait_s)

    async def _remove(self, item: str) -> None:
        try:
            found = orjson.loads(item)
            sub, umid, attempt = str(found["s"]), str(found["u"]), int(found.get("n", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            await self._finish(item, None, 0)
            return
        async with self.limiter:
            outcome, delay_s, detail = await self._call(sub, umid, attempt)
        self.count(outcome)
        log = self.state.log.error if outcome == "failed" else self.state.log.info
        log(f"pii.{outcome}", subaccount=sub, umid=umid, attempt=attempt + 1, error=detail)
        if outcome == "retry":
            due = time.time_ns() // 1000 + int(delay_s * 1_000_000)
            await self._finish(item, entry(sub, umid, attempt + 1), due)
        else:
            await self._finish(item, None, 0)

    async def _finish(self, item: str, retry: str | None, due_us: int) -> None:
        await self.state.store.pii_move(item, retry, due_us)
        self._held.discard(item)

    async def _call(self, sub: str, umid: str, attempt: int) -> tuple[str, float, str]:
        """("removed" | "absent" | "retry" | "failed", retry delay s, detail)."""
        upstream = self.state.upstream
        path = f"/api/v1/subaccounts/{quote(sub, safe='')}/messages/{quote(umid, safe='')}/pii"
        headers = upstream.request_headers({"Accept": "application/json"})
        backoff = min(MAX_BACKOFF_S, self.base_backoff_s * 2**attempt)
        backoff *= random.uniform(0.5, 1.0)
        try:
            answer = await upstream.forward("sms", path, "DELETE", None, headers)
        except UpstreamFailure as exc:
            return "retry", backoff, exc.code
        status = answer.status
        self.state.metrics.upstream("sms", status, answer.seconds)
        if 200 <= status < 300:
            return "removed", 0.0, ""
        if status == 404:
            return "absent", 0.0, "8x8 answered 404"
        if status == 429:
            return (
                "retry",
                retry_after_s(answer.headers.get("Retry-After"), 0.1, MAX_BACKOFF_S),
                "8x8 answered 429",
            )
        if status in _RETRY or status >= 500 or status in (401, 403):
            return "retry", backoff, f"8x8 answered {status}"  # 401/403: a key being rotated
        return "failed", 0.0, f"8x8 answered {status}"


REMOVER = web.AppKey("pii_remover", Remover)


def install(app: web.Application) -> None:
    """Give `app` its remover (needs `app[STATE]`) and run its worker with the app."""
    background.install(app, REMOVER, Remover, DRAIN_S)
