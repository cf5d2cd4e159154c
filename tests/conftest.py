"""Shared fixtures: the simulator and gateway as real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.state import STATE
from tests.support.frontserver import FrontServer
from tests.support.gatewayproc import API_KEY, GatewayProcess, base_config
from tests.support.simproc import SimProcess


@pytest.fixture(scope="session")
def sim_session() -> Iterator[SimProcess]:
    with SimProcess(api_key=API_KEY) as sim:
        yield sim


@pytest.fixture
def sim(sim_session: SimProcess) -> SimProcess:
    """The shared simulator, reset and with default settings for each test."""
    sim_session.configure(
        delay_ms=0, fail_status=None, drop=False, subaccount_rps=1800, ip_rps=3000, api_key=API_KEY
    )
    sim_session.reset()
    return sim_session


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Any:
    """pytest-aiohttp's `aiohttp_client`, with a gateway application served through the
    port's own handler (`gateway/front.py`), as `gateway serve` serves it."""

    async def make(served: Any, **kwargs: Any) -> Any:
        if isinstance(served, web.Application) and STATE in served:
            served = FrontServer(served)
        return await aiohttp_client(served, **kwargs)

    return make


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(tmp_path: Path, sim: SimProcess) -> Iterator[GatewayFactory]:
    """Start gateways in front of `sim`: `start_gateway(limits={...}, env={...})`."""
    started: list[GatewayProcess] = []

    def start(
        env: dict[str, str] | None = None, name: str = "gw", **sections: Any
    ) -> GatewayProcess:
        gw = GatewayProcess(tmp_path, base_config(sim.url, **sections), env=env, name=name)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()
