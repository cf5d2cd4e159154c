"""The rules hold under stress (INTERFACE.md): real gateway processes, a real redis-server
and the simulator. Redis "stops answering" by CLIENT PAUSE WRITE: every decision script
waits (and then runs, late), while reads go on, as when Redis answers a worker too slowly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_compliance import (
    BATCH,
    CHAT,
    admin,
    eventually,
    send,
    set_template,
    templated,
    text,
)
from tests.support.gatewayproc import GatewayProcess
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess

VERIFY = "/verify/api/v2/subaccounts/acme_otp/sessions"
OTP_CHAT = "/chatapps/api/v1/subaccounts/acme_otp/messages"  # the Verify subaccount
OPTED = "+6591110000"
WITHDRAWN = "+6592220000"
CONSENTED = "+6593330000"
X, Y = "+6594440000", "+6595550000"
SPARE = "+6596660000"  # an ordinary recipient
CONSENT = {"source": "form", "categories": ["MARKETING"], "timestamp": "2025-01-01T00:00:00Z"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def sections(server: RedisServer, policy: str = "enforce", **redis: Any) -> dict[str, Any]:
    return {"redis": {"url": server.url, "on_failure": "local", **redis},
            "policy": {"opt_in": policy}}  # fmt: skip


def pause(server: RedisServer, ms: int) -> None:
    """Every decision script waits `ms` (and then runs); reads still answer."""
    server.cli("CLIENT", "PAUSE", str(ms), "WRITE")


async def copy_of(gw: GatewayProcess) -> dict[str, Any]:
    status, _, body = await _ready(gw)
    assert status == 200, body
    snap: dict[str, Any] = body["snapshot"]
    return snap


async def _ready(gw: GatewayProcess) -> tuple[int, dict[str, str], Any]:
    from tests.integration.test_compliance import call

    return await call(gw, "GET", "/readyz")


async def deciding_locally(gw: GatewayProcess) -> None:
    """Redis paused: ordinary sends go once the local buckets have started (they start busy
    for a burst plus max_wait, so the switch cannot overflow a second)."""

    for path in (CHAT, OTP_CHAT):

        async def sent(path: str = path) -> bool:
            return (await send(gw, text(SPARE), path))[0] == 200

        await eventually(sent, timeout=2.0)


async def loaded(gw: GatewayProcess) -> None:
    async def done() -> bool:
        snap = await copy_of(gw)
        return bool(snap["loaded"] and snap.get("synced_s", 0) is not None)

    await eventually(done)


def batch_of(n: int, template: str = "login_code") -> dict[str, Any]:
    return {"messages": [templated(f"+65800{i:05d}", template) for i in range(n)]}


async def test_largest_batch_of_otps_is_decided_in_redis_not_refused_for_its_size(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(**sections(redis_server, policy="off", timeout_ms=10))
    await set_template(gw, "login_code", "AUTHENTICATION")
    status, headers, body = await send(gw, batch_of(10_000), BATCH)
    assert (status, headers.get("X-Gateway-Reject")) == (200, None), body
    assert len(sim.requests()[-1]["body"]["messages"]) == 10_000
    assert body["acceptedCount"] == 10_000
    # every one booked in Redis (not on a local fallback): a second OTP to each is refused
    status, headers, body = await send(gw, batch_of(10_000), BATCH)
    # every message dropped: the answer is the first one's refusal, listing all (contract)
    assert (status, headers["X-Gateway-Reject"], len(body["gatewayRejected"])) == (
        429, "rate_limited.otp_recipient", 10_000,
    )  # fmt: skip
    assert len(sim.requests()) == 1


async def test_otp_sends_are_refused_while_deciding_locally_by_default(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(**sections(redis_server, policy="off"))
    await set_template(gw, "login_code", "AUTHENTICATION")
    await loaded(gw)
    pause(redis_server, 3000)
    await deciding_locally(gw)
    status, _, body = await send(gw, {"destination": X}, VERIFY)
    assert (status, body["gatewayCode"]) == (503, "store.unavailable")
    status, _, body = await send(gw, templated(Y, "login_code"))
    assert (status, body["gatewayCode"]) == (503, "store.unavailable")
    assert [r["body"]["user"]["msisdn"] for r in sim.requests()] == [SPARE, SPARE]  # no OTP


async def test_local_otp_decisions_know_redis_otps_and_are_handed_back(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    a = start_gateway(name="a", **sections(redis_server, policy="off", otp_on_failure="local"))
    b = start_gateway(name="b", **sections(redis_server, policy="off", otp_on_failure="local"))
    await loaded(b)
    assert (await send(a, {"destination": X}, VERIFY))[0] == 200  # through Redis

    async def copied() -> bool:
        return bool((await copy_of(b)).get("otp", 1) >= 1)

    await eventually(copied)
    pause(redis_server, 2000)
    await deciding_locally(b)
    status, _, body = await send(b, {"destination": X}, VERIFY)  # decided locally
    assert (status, body["gatewayCode"]) == (429, "rate_limited.otp_recipient")
    assert (await send(b, {"destination": Y}, VERIFY))[0] == 200  # decided locally

    def handed_back() -> bool:
        return int(redis_server.cli("PTTL", f"gw:{{acme}}:otp:{Y}")) > 0

    await eventually(handed_back)
    status, _, body = await send(a, {"destination": Y}, VERIFY)
    assert (status, body["gatewayCode"]) == (429, "rate_limited.otp_recipient")
    assert [r["body"].get("destination") for r in sim.requests()] == [X, None, None, Y]


async def test_changes_through_one_worker_hold_on_another_deciding_locally(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    a = start_gateway(name="a", **sections(redis_server))
    await set_template(a, "promo", "MARKETING")
    await set_template(a, "promo2", "MARKETING")
    for msisdn in (WITHDRAWN, CONSENTED):
        assert (await admin(a, "PUT", f"/consents/{msisdn}", CONSENT))[0] == 204
    b = start_gateway(name="b", **sections(redis_server))
    await loaded(b)  # the full load has all of the above; the changes below come after it
    assert (await admin(a, "PUT", f"/optouts/{OPTED}"))[0] == 204
    assert (await admin(a, "DELETE", f"/consents/{WITHDRAWN}"))[0] == 204
    await set_template(a, "promo2", "MARKETING", status="PAUSED")
    await asyncio.sleep(1.0)  # the contract's second
    pause(redis_server, 3000)
    await deciding_locally(b)
    status, _, body = await send(b, text(OPTED))
    assert (status, body["gatewayCode"]) == (403, "recipient.opted_out")
    status, _, body = await send(b, templated(WITHDRAWN, "promo"))
    assert (status, body["gatewayCode"]) == (403, "recipient.no_consent")
    status, _, body = await send(b, templated(CONSENTED, "promo2"))
    assert (status, body["gatewayCode"], body["status"]) == (409, "template.not_active", "PAUSED")
    assert (await send(b, templated(CONSENTED, "promo")))[0] == 200
    assert [r["body"]["user"]["msisdn"] for r in sim.requests()] == [SPARE, SPARE, CONSENTED]
    assert (await copy_of(b))["loaded"]  # the copy b decided on, not a fresh full load


async def test_template_names_are_one_template_whatever_their_case(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(**sections(redis_server, policy="off"))
    await set_template(gw, "Order_Update", "UTILITY", status="PAUSED")
    status, _, body = await send(gw, templated(X, "order_update"))
    assert (status, body["gatewayCode"], body["status"]) == (409, "template.not_active", "PAUSED")
    await set_template(gw, "ORDER_UPDATE", "UTILITY")  # the same template, approved
    assert (await send(gw, templated(X, "order_update")))[0] == 200
    status, answer = await admin(gw, "GET", "/templates/order_update/en")
    assert (status, answer["status"]) == (200, "APPROVED")
