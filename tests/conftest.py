"""Shared fixtures: the simulator and gateway as real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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
