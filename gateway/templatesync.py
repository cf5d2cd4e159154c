"""The template registry kept in step with 8x8: the periodic read of 8x8's template lists,
and the merge that it, the template webhooks and the admin API use to update one record.

Every `templates.sync_s` seconds (0 = never; re-read each round, so a SIGHUP applies) each
`[accounts.X] whatsapp_channels` channel's list is read from 8x8 and stored with
`if_newer`, so a list older than what a webhook told us changes nothing. The first round
runs in the background as the process starts: serving never waits for 8x8. A failure is
logged and the next round tries again; the worker itself never dies of one.

A merge reads the stored record, overlays what the event changed and writes it back with
`if_newer`. The read-modify-write holds a per-process lock (`LOCK`); two workers merging
events for one template at the same instant can still lose one event's field.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from gateway.errors import now_rfc3339
from gateway.policy.decider import is_store_failure
from gateway.state import STATE, State
from gateway.store.base import Store, TemplateRecord
from gateway.upstream import UpstreamFailure

LOCK = web.AppKey("template_lock", asyncio.Lock)
IDLE_POLL_S = 5.0  # sync_s = 0: how often to look whether a reload turned syncing on

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_MS_FROM = 100_000_000_000  # epoch numbers from here on are ms (1e11 s is year 5138)
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


class SyncError(Exception):
    """8x8's template list could not be read."""


def install(app: web.Application) -> None:
    """Give `app` its template-merge lock (idempotent: admin and webhooks both call it)."""
    if LOCK not in app:
        app[LOCK] = asyncio.Lock()


def instant(value: Any) -> str | None:
    """RFC 3339 / ISO 8601 text, or epoch seconds or ms (number or digits), as RFC 3339
    UTC with a `Z`; None when it is none of these."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value) if "." in value else int(value)
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                return None
            ms = abs(value) >= _EPOCH_MS_FROM
            when = _EPOCH + (timedelta(milliseconds=value) if ms else timedelta(seconds=value))
        elif isinstance(value, str) and 0 < len(value) <= 64:
            text = value.strip()
            when = datetime.fromisoformat(
                text[:-1] + "+00:00" if text.endswith(("z", "Z")) else text
            )
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    spec = "milliseconds" if when.microsecond % 1000 == 0 else "microseconds"
    return when.isoformat(timespec=spec).replace("+00:00", "Z")


async def merge_put(
    store: Store,
    lock: asyncio.Lock,
    account: str,
    name: str,
    language: str,
    updated_at: str,
    *,
    status: str | None = None,
    category: str | None = None,
    quality: str | None = None,
    if_newer: bool = True,
) -> str:
    """Overlay the given fields on the stored record: "stored", "stale" (the stored record
    is newer) or "unknown_template" (no record and no status to start one with)."""
    async with lock:
        stored = await store.template_get(account, name, language)
        if stored is None:
            if status is None:
                return "unknown_template"
            record = TemplateRecord(name, language, status, category, quality, updated_at)
        else:
            record = TemplateRecord(
                name,
                language,
                status or stored.status,
                category or stored.category,
                quality or stored.quality,
                updated_at,
            )
        done = await store.template_put(account, record, if_newer=if_newer)
    return "stored" if done else "stale"


async def fetch(state: State, account: str, channel: str) -> list[dict[str, Any]]:
    """One channel's template list from 8x8 (the key injected by `state.upstream`)."""
    path = (
        f"/api/v1/accounts/{quote(account, safe='')}/channels/{quote(channel, safe='')}/templates"
    )
    headers = state.upstream.request_headers({"Accept": "application/json"})
    try:
        answer = await state.upstream.forward("chatapps", path, "GET", None, headers)
    except UpstreamFailure as exc:
        raise SyncError(exc.code) from exc
    if answer.status != 200:
        raise SyncError(f"8x8 answered {answer.status}")
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError as exc:
        raise SyncError("8x8 answered something other than JSON") from exc
    items = body.get("templates") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise SyncError("8x8's answer has no templates list")
    return [item for item in items if isinstance(item, dict)]


def _text(item: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = item.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


async def _store_list(
    state: State, lock: asyncio.Lock, account: str, items: list[dict[str, Any]]
) -> tuple[int, int]:
    """(stored, skipped) of one channel's list."""
    stored = skipped = 0
    for item in items:
        name = _text(item, "templateName", "name")
        language = _text(item, "language")
        status = _text(item, "status")
        updated = instant(item.get("updatedAt")) or instant(item.get("createdAt")) or now_rfc3339()
        if name is None or language is None or status is None or ":" in language:
            skipped += 1
            continue
        category = _text(item, "category")
        outcome = await merge_put(
            state.store,
            lock,
            account,
            name,
            language,
            updated,
            status=status.upper(),
            category=category.upper() if category else None,
            quality=(_text(item, "quality", "qualityScore") or "").upper() or None,
        )
        stored += outcome == "stored"
    return stored, skipped


async def sync_once(state: State, lock: asyncio.Lock) -> int:
    """One round over every configured channel; how many records were stored."""
    total = 0
    for account, settings in state.config.accounts.items():
        for channel in settings.whatsapp_channels:
            try:
                items = await fetch(state, account, channel)
                stored, skipped = await _store_list(state, lock, account, items)
            except SyncError as exc:
                state.log.warning(
                    "templates.sync_failed", account=account, channel=channel, error=str(exc)
                )
                continue
            except Exception as exc:
                if not is_store_failure(exc):
                    raise
                state.log.warning(
                    "templates.sync_failed", account=account, channel=channel,
                    error=f"store: {type(exc).__name__}",
                )  # fmt: skip
                return total
            total += stored
            state.log.info(
                "templates.synced", account=account, channel=channel, listed=len(items),
                stored=stored, skipped=skipped,
            )  # fmt: skip
    return total


async def run(state: State, lock: asyncio.Lock) -> None:
    """Sync now and every `templates.sync_s` seconds until cancelled."""
    while True:
        period = state.config.templates.sync_s
        if period <= 0:
            await asyncio.sleep(IDLE_POLL_S)
            continue
        try:
            await sync_once(state, lock)
        except Exception:  # a bug must not stop the syncing for good
            state.log.exception("templates.sync_crashed")
        await asyncio.sleep(period)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the sync worker runs while the app does."""
    task = asyncio.create_task(run(app[STATE], app[LOCK]), name="template-sync")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
