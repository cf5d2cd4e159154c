"""Several workers on one port: shared metrics, a dead worker restarted, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import SEND, call
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _worker_pids(log: str) -> list[int]:
    return [
        json.loads(line)["pid"]
        for line in log.splitlines()
        if line.startswith("{") and '"event":"listening"' in line
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_workers_share_the_port_metrics_and_survive_a_crash(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(server={"workers": 2}, redis={"url": redis_server.url})
    deadline = time.monotonic() + 10
    while len(_worker_pids(gw.log_text())) < 2:
        assert time.monotonic() < deadline, gw.log_text()
        await asyncio.sleep(0.05)
    first = _worker_pids(gw.log_text())[0]
    results = await asyncio.gather(*(call(gw.url, SEND) for _ in range(40)))
    assert {r[0] for r in results} == {200}
    counted = 0
    for _ in range(30):  # each worker hands its counts over about once a second
        _, _, metrics = await call(gw.url, "/metrics", None, method="GET")
        total = re.search(
            r'gateway_requests_total\{decision="forwarded",route="chatapps.send",status="200"\} '
            r"(\d+)",
            metrics.decode(),
        )
        counted = int(total.group(1)) if total else 0
        if counted == 40:
            break
        await asyncio.sleep(0.1)
    assert counted == 40  # summed over both workers

    os.kill(first, signal.SIGKILL)
    while len(_worker_pids(gw.log_text())) < 3:  # the parent starts a replacement
        assert time.monotonic() < deadline + 10, gw.log_text()
        await asyncio.sleep(0.05)
    assert "worker.died" in gw.log_text()
    results = await asyncio.gather(*(call(gw.url, SEND) for _ in range(20)))
    assert {r[0] for r in results} == {200}

    gw.signal(signal.SIGTERM)
    assert gw.wait(30) == 0
    assert not any(_alive(pid) for pid in _worker_pids(gw.log_text()) if pid != first)
