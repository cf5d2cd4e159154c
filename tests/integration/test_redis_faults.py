"""Redis misbehaving in ways other than dying: slow, out of memory, connections reset.
The gateway answers within its timeout with the documented on_failure behaviour and
comes back by itself."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import SEND, call
from tests.support.gatewayproc import ADMIN_TOKEN
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def _ready_store(url: str, want: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await call(url, "/readyz", None, method="GET"))[2]["store"] != want:
        assert time.monotonic() < deadline, f"readyz never said {want}"
        await asyncio.sleep(0.1)


async def test_a_sleeping_redis_costs_a_timeout_not_a_hang(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(redis={"url": redis_server.url, "on_failure": "local", "timeout_ms": 50})
    assert (await call(gw.url, SEND))[0] == 200
    await _ready_store(gw.url, "redis")  # the snapshot may still be loading; fine either way

    def sleep_redis() -> None:
        with contextlib.suppress(Exception):  # its own connection may time out: fine
            redis_server.cli("DEBUG", "SLEEP", "2")

    sleeper = threading.Thread(target=sleep_redis)
    sleeper.start()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    statuses = [(await call(gw.url, SEND))[0] for _ in range(5)]
    elapsed = time.monotonic() - started
    sleeper.join()
    assert statuses == [200] * 5  # decided locally
    assert elapsed < 1.0, f"5 sends took {elapsed:.2f} s while Redis slept"
    await _ready_store(gw.url, "redis")  # back without a restart
    assert (await call(gw.url, SEND))[0] == 200


async def test_redis_out_of_memory_falls_back_and_recovers(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(redis={"url": redis_server.url, "on_failure": "closed"})
    assert (await call(gw.url, SEND))[0] == 200
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    used = int(redis_server.cli("INFO", "memory")["used_memory"])
    redis_server.cli("CONFIG", "SET", "maxmemory", str(used + 200_000))
    for i in range(100):  # fill it up: Redis now refuses every write
        try:
            redis_server.cli("SET", f"junk:{i}", "x" * 10_000)
        except Exception:
            break
    # Redis 7 still runs the decision script (its writes are tiny) and may refuse plain
    # writes: every answer is a documented one, never a 500 or a hang
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    sends = [(await call(gw.url, SEND))[0] for _ in range(3)]
    status, _, _ = await call(
        gw.url, "/admin/v1/accounts/acme/optouts/+6591230000", None, method="PUT", headers=admin
    )
    assert set(sends) <= {200, 503} and status in (204, 503), (sends, status)
    redis_server.cli("CONFIG", "SET", "maxmemory", "0")
    await asyncio.sleep(1.1)  # the store is retried at most once a second
    assert (await call(gw.url, SEND))[0] == 200


async def test_connections_reset_by_redis_are_reopened(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(redis={"url": redis_server.url, "on_failure": "closed"})
    assert (await call(gw.url, SEND))[0] == 200
    statuses = []
    for _ in range(3):
        redis_server.cli("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        statuses.append((await call(gw.url, SEND))[0])
        await asyncio.sleep(1.1)
    assert set(statuses) <= {200, 503}  # a reset may cost one decision, nothing worse
    assert (await call(gw.url, SEND))[0] == 200
