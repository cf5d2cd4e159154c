"""Compliance while Redis is gone (`on_failure = "local"`): real gateway processes decide on
their compliance snapshot, so opt-outs, paused templates and consent still hold; with no
snapshot, sends are refused 503 rather than sent unchecked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_compliance import (
    NUMBER,
    OTHER,
    admin,
    call,
    eventually,
    hook,
    inbound,
    send,
    set_template,
    templated,
    text,
)
from tests.support.gatewayproc import GatewayProcess
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess

STOPPED = "+6591110000"  # says STOP just before Redis dies
CONSENTED = "+6592220000"
FRESH = "+6593330000"  # no record of any kind
CONSENT = {"source": "web form", "categories": ["MARKETING"], "timestamp": "2025-01-01T00:00:00Z"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def sections(server: RedisServer, **redis: Any) -> dict[str, Any]:
    return {"redis": {"url": server.url, "on_failure": "local", **redis},
            "policy": {"opt_in": "enforce"}}  # fmt: skip


async def ready(gw: GatewayProcess) -> dict[str, Any]:
    status, _, body = await call(gw, "GET", "/readyz")
    assert status == 200, body
    answer: dict[str, Any] = body
    return answer


async def load_records(gw: GatewayProcess) -> None:
    """An opt-out, a paused and an approved template, a consent: through the admin API."""
    assert (await admin(gw, "PUT", f"/optouts/{NUMBER}"))[0] == 204
    await set_template(gw, "paused", "MARKETING", status="PAUSED")
    await set_template(gw, "promo", "MARKETING")
    assert (await admin(gw, "PUT", f"/consents/{CONSENTED}", CONSENT))[0] == 204


async def assert_enforced_without_redis(gw: GatewayProcess, sim: SimProcess) -> None:
    sim.reset()
    for msisdn in (NUMBER, STOPPED):
        status, _, body = await send(gw, text(msisdn))
        assert (status, body["gatewayCode"]) == (403, "recipient.opted_out"), msisdn
    status, _, body = await send(gw, templated(CONSENTED, "paused"))
    assert (status, body["gatewayCode"], body["status"]) == (409, "template.not_active", "PAUSED")
    status, _, body = await send(gw, templated(FRESH, "promo"))
    assert (status, body["gatewayCode"]) == (403, "recipient.no_consent")
    assert (await send(gw, templated(CONSENTED, "promo")))[0] == 200
    assert (await send(gw, text(OTHER)))[0] == 200  # local limits let ordinary sends go
    assert [r["body"]["user"]["msisdn"] for r in sim.requests()] == [CONSENTED, OTHER]
    assert (await ready(gw))["store"] == "local"


async def test_records_written_by_another_gateway_reach_the_snapshot_and_hold_without_redis(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(name="a", **sections(redis_server, snapshot_s=1))
    other = start_gateway(name="b", **sections(redis_server))
    await load_records(other)  # gw learns them only from its snapshot reloads
    assert (await hook(gw, "/webhooks/inbound", inbound("STOP", STOPPED)))[0] == 200

    async def has_them() -> bool:
        snap = (await ready(gw))["snapshot"]
        return bool(snap["optouts"] == 2 and snap["templates"] == 2 and snap["consents"] == 1)

    await eventually(has_them)
    redis_server.stop(kill=True)
    await assert_enforced_without_redis(gw, sim)
    status, body = await hook(gw, "/webhooks/inbound", inbound("STOP", OTHER))
    assert (status, body["gatewayCode"]) == (503, "store.unavailable")  # 8x8 retries it
    status, _, body = await send(gw, text(OTHER))  # meanwhile this gateway honours it
    assert (status, body["gatewayCode"]) == (403, "recipient.opted_out")


async def test_changes_made_through_this_gateway_hold_at_once_when_redis_dies(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(**sections(redis_server))  # snapshot_s = 300: no reload in this test

    async def loaded() -> bool:
        return bool((await ready(gw))["snapshot"]["loaded"])

    await eventually(loaded)
    await load_records(gw)
    assert (await hook(gw, "/webhooks/inbound", inbound("STOP", STOPPED)))[0] == 200
    redis_server.stop(kill=True)  # a moment later
    snap = (await ready(gw))["snapshot"]
    assert (snap["optouts"], snap["changes"]) == (0, 5)  # all of it from the overlay
    await assert_enforced_without_redis(gw, sim)


@pytest.mark.parametrize("case", ["redis_down_since_start", "snapshot_off"])
async def test_without_a_snapshot_local_mode_refuses_sends_with_503(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer, case: str
) -> None:
    if case == "redis_down_since_start":
        redis_server.stop(kill=True)
        gw = start_gateway(**sections(redis_server))
    else:
        gw = start_gateway(**sections(redis_server, snapshot_s=0))
        assert (await send(gw, text()))[0] == 200
        redis_server.stop(kill=True)
    forwarded = len(sim.requests())
    status, _, body = await send(gw, text(OTHER))
    assert (status, body["gatewayCode"]) == (503, "store.unavailable")
    assert len(sim.requests()) == forwarded
    body = await ready(gw)  # still ready: reads need no compliance data
    assert body["store"] == "local"
    assert body.get("snapshot", {"loaded": False})["loaded"] is False
