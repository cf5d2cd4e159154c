"""Fixtures shared by the integration tests: one real redis-server per module, and the
store a test runs on (none: the in-process store; or that Redis, flushed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.redisproc import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A module's redis-server (a module may override it, e.g. with appendonly)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Config sections selecting the store: none (in-process) or a flushed real Redis."""
    if request.param == "memory":
        return {}
    server: RedisServer = request.getfixturevalue("redis_server")
    server.cli("FLUSHALL")
    return {"redis": {"url": server.url}}


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The module's redis-server, flushed for this test."""
    redis_server.cli("FLUSHALL")
    return redis_server.url
