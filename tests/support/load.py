"""Small load generators for integration tests: open-loop at a fixed arrival rate, and
closed-loop callers that send again as soon as they are answered."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp


def body_of(i: int) -> dict[str, Any]:
    return {
        "user": {"msisdn": "+6591234567"},
        "type": "text",
        "content": {"text": f"m{i}"},
        "clientMessageId": f"m{i}",
    }


async def _one(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, str]:
    try:
        async with session.post(url, json=body, headers=headers) as r:
            await r.read()
            return r.status, r.headers.get("X-Gateway-Reject", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, type(exc).__name__


async def open_loop(
    urls: Sequence[str],
    headers: dict[str, str],
    rate: float,
    duration_s: float,
    body: Callable[[int], dict[str, Any]] = body_of,
    during: Callable[[float], None] | None = None,
) -> Counter[tuple[int, str]]:
    """Send at `rate` per second for `duration_s`, round-robin over `urls`; count
    (status, X-Gateway-Reject) pairs. `during(elapsed)` is called between sends."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        tasks = []
        start = time.monotonic()
        targets = itertools.cycle(urls)
        for i in range(int(rate * duration_s)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if during is not None:
                during(time.monotonic() - start)
            tasks.append(asyncio.create_task(_one(session, next(targets), headers, body(i))))
        return Counter(await asyncio.gather(*tasks))


async def warm_up(urls: Sequence[str], headers: dict[str, str], rate: float) -> None:
    """Exercise fresh gateways for a second, then let their buckets refill: the first
    requests of a new process open connections and load scripts, and the stall bunches
    the sends behind them, which is not what an accuracy test measures."""
    await open_loop(urls, headers, rate=rate, duration_s=1.0)
    await asyncio.sleep(1.2)


async def closed_loop(
    urls: Sequence[str], headers: dict[str, str], callers: int, duration_s: float
) -> Counter[tuple[int, str]]:
    """`callers` concurrent callers, each sending again once answered, for `duration_s`."""
    results: Counter[tuple[int, str]] = Counter()
    deadline = time.monotonic() + duration_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def caller(n: int) -> None:
            i = n
            while time.monotonic() < deadline:
                results[await _one(session, urls[n % len(urls)], headers, body_of(i))] += 1
                i += callers

        await asyncio.gather(*(caller(n) for n in range(callers)))
    return results
