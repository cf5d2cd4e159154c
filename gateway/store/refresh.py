"""Loading the compliance snapshot (gateway/store/snapshot.py) from Redis, and the task
that reloads it every `redis.snapshot_s`.

The accounts are those the config names (`upstream.account_id`, `[subaccounts.*].account`,
`[accounts.*]`): every send is decided for one of them, and naming them needs no SCAN of
the whole keyspace (which a Cluster would need node by node). Each account's set and
hashes are read with SSCAN/HSCAN (`BATCH` members, `HASH_BATCH` entries a call), the event
loop let go between calls and between stretches of sorting, so serving never stalls for
long (~20 ms at most, measured); nothing waits for the first load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from gateway.config import Config
from gateway.store import keys
from gateway.store.snapshot import (
    BATCH,
    AccountData,
    Compliance,
    IndexBuilder,
    NumberIndex,
    Snapshot,
    TemplateState,
    number,
)

HASH_BATCH = 2_000  # entries per HSCAN call: a consent record costs ~5x a set member to read
FAILED_RETRY_S = 5.0  # a failed load is tried again after this (or snapshot_s if shorter)
TAIL_WAIT_S = 2.0  # the first load waits this long for the tail to take its positions
_TRIES = 3  # tries of one Redis call before the load gives up
_MAX_BITS = 64  # category names a consent bitmask can hold; records with more stay as text

Client = Redis | RedisCluster


def config_accounts(cfg: Config) -> frozenset[str]:
    """Every account a send can be decided for."""
    subs = {s.account for s in cfg.subaccounts.values() if s.account}
    return frozenset({cfg.upstream.account_id, *subs, *cfg.accounts})


async def run(compliance: Compliance, client: Client, period_s: float, log: Any) -> None:
    """Load now and every `period_s` (at once when a config reload names new accounts);
    a failed load is logged and tried again after `FAILED_RETRY_S`. Runs until cancelled."""
    with contextlib.suppress(TimeoutError):  # the change stream's tail starts first
        async with asyncio.timeout(TAIL_WAIT_S):
            await compliance.tailing.wait()
    while True:
        compliance.accounts_changed.clear()
        started = time.monotonic()
        try:
            snap = await reload(compliance, client, compliance.accounts)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("snapshot.load_failed", error=type(exc).__name__)
            wait = min(period_s, FAILED_RETRY_S)
        except Exception:  # a bug: logged in full, and the old snapshot kept serving
            log.exception("snapshot.load_crashed")
            wait = min(period_s, FAILED_RETRY_S)
        else:
            log.info("snapshot.loaded", accounts=len(snap.accounts), **snap.counts(),
                     bytes=compliance.nbytes, ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
            wait = period_s
        stop_if_cancelled()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await compliance.accounts_changed.wait()


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled: redis-py can turn a cancellation
    during a call into another error, which a loop that catches errors would outlive."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def reload(compliance: Compliance, client: Client, accounts: Iterable[str]) -> Snapshot:
    """Load every account and swap the result in; raises what Redis raised."""
    compliance.begin()
    try:
        snap = await load(client, accounts)
    except BaseException:
        compliance.abandon()
        raise
    compliance.install(snap)
    return snap


async def load(client: Client, accounts: Iterable[str]) -> Snapshot:
    """Every account's records, read in batches."""
    started = time.monotonic()
    categories: dict[str, int] = {}
    out: dict[str, AccountData] = {}
    for account in sorted(set(accounts)):
        optouts, optout_text = await _optouts(client, account)
        consents, consent_text = await _consents(client, account, categories)
        templates = await _templates(client, account)
        out[account] = AccountData(optouts, optout_text, consents, consent_text, templates)
    return Snapshot(out, tuple(categories), started)


async def _optouts(client: Client, account: str) -> tuple[NumberIndex, frozenset[str]]:
    key = keys.optouts(account)
    builder = IndexBuilder(int(await _call(client.scard, key)))
    text: set[str] = set()
    async for members in _scan(client, key, hash_=False):
        for member in members:
            n = number(member)
            if n is not None:
                builder.add(n)
            else:
                text.add(_text(member))
    return await builder.build(), frozenset(text)


async def _consents(
    client: Client, account: str, bits: dict[str, int]
) -> tuple[NumberIndex, dict[str, tuple[str, ...]]]:
    key = keys.consents(account)
    builder = IndexBuilder(int(await _call(client.hlen, key)), with_values=True)
    text: dict[str, tuple[str, ...]] = {}
    async for pairs in _scan(client, key, hash_=True):
        for msisdn, raw in pairs:
            cats = _categories(raw)
            mask = 0
            for cat in cats:
                bit = bits.setdefault(cat, len(bits)) if len(bits) < _MAX_BITS else bits.get(cat)
                if bit is None:
                    mask = -1
                    break
                mask |= 1 << bit
            n = number(msisdn)
            if n is not None and mask >= 0:
                builder.add(n, mask)
            else:
                text[_text(msisdn)] = cats
    return await builder.build(), text


async def _templates(client: Client, account: str) -> dict[str, TemplateState]:
    out: dict[str, TemplateState] = {}
    async for pairs in _scan(client, keys.templates(account), hash_=True):
        for name, raw in pairs:
            try:
                d = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # unreadable: an unknown template
            status, cat = d.get("status"), d.get("category")
            out[_text(name).lower()] = (status if isinstance(status, str) else "",
                                cat.upper() if isinstance(cat, str) else None)  # fmt: skip
    return out


def _categories(raw: bytes | str) -> tuple[str, ...]:
    """A consent record's categories, upper-cased; () when it has none usable (such a
    record covers only templates of unknown category, as in lua/decide.lua)."""
    try:
        cats = orjson.loads(raw).get("categories")
    except (orjson.JSONDecodeError, AttributeError):
        return ()
    if not isinstance(cats, list):
        return ()
    return tuple(dict.fromkeys(c.upper() for c in cats if isinstance(c, str)))


async def _scan(client: Client, key: str, *, hash_: bool) -> AsyncIterator[list[Any]]:
    """SSCAN members or HSCAN (field, value) pairs of `key`, one batch at a time, the event
    loop let go between batches."""
    cursor = 0
    while True:
        if hash_:
            nxt, found = await _call(client.hscan, key, cursor, count=HASH_BATCH)
            yield list(found.items()) if isinstance(found, dict) else _pairs(found)
        else:
            nxt, found = await _call(client.sscan, key, cursor, count=BATCH)
            yield list(found)
        cursor = int(nxt)
        if cursor == 0:
            return
        await asyncio.sleep(0)


async def _call(command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One Redis call, tried again a couple of times (a SCAN cursor is stateless: the same
    cursor answers again), so one slow reply does not cost the whole load."""
    for attempt in range(_TRIES - 1):
        try:
            return await command(*args, **kwargs)
        except Exception:
            await asyncio.sleep(0.05 * (attempt + 1))
    return await command(*args, **kwargs)


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
