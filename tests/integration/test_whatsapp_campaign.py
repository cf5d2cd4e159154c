"""A WhatsApp campaign through 2 workers on a real Redis, the simulator playing Meta behind
8x8: the portfolio's messaging tier holds exactly, recipients who wrote in are not counted,
a downgrade applies at once, and Meta never has to refuse or throttle (docs/whatsapp.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import call
from tests.support.gatewayproc import WEBHOOK_SECRET, GatewayProcess
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess

SENDER = "+6560000001"
SEND = "/chatapps/api/v1/subaccounts/acme_main/messages"
BATCH = SEND + "/batch"
TIER = 2000
DAY_S = 86_400


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def text(msisdn: str) -> dict[str, Any]:
    return {"user": {"msisdn": msisdn}, "type": "text", "content": {"text": "hi"}}


def n(i: int) -> str:
    return f"+6591{i:06d}"


def campaign(start_gateway: GatewayFactory, sim: SimProcess, redis: RedisServer,
             tier: int = TIER) -> GatewayProcess:  # fmt: skip
    gw = start_gateway(
        server={"workers": 2}, redis={"url": redis.url}, limits={"max_wait_ms": 200},
        whatsapp={"sender_mps": 1000},
        subaccounts={"acme_main": {"whatsapp_senders": [SENDER]}},
        portfolios={"retail": {"tier": tier, "subaccounts": ["acme_main"]}},
    )  # fmt: skip
    sim.meta(webhook_url=gw.url, webhook_secret=WEBHOOK_SECRET,
             senders={"acme_main": SENDER}, sender_mps=1000, tier=tier)  # fmt: skip
    return gw


async def batch(gw: GatewayProcess, numbers: list[str]) -> tuple[int, dict[str, str], Any]:
    return await call(gw.url, BATCH, {"messages": [text(m) for m in numbers]})


async def test_campaign_over_the_tier_forwards_exactly_the_tier(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = campaign(start_gateway, sim, redis_server)
    wrote_in = [f"+6592{i:06d}" for i in range(50)]
    for m in wrote_in:  # inside their 24 h window: not counted by the gateway nor by Meta
        assert sim.meta_event(kind="inbound", subaccount="acme_main", msisdn=m) == 200
    forwarded = refused = 0
    started = time.monotonic()
    for start in range(0, 2100, 100):  # 21 batches of 100 new recipients
        status, _, body = await batch(gw, [n(i) for i in range(start, start + 100)])
        rejected = body.get("gatewayRejected", [])
        assert {r["code"] for r in rejected} <= {"rate_limited.messaging_tier"}
        forwarded += 100 - len(rejected) if status == 200 else 0
        refused += len(rejected)
        assert status in (200, 429), body
    answers = await asyncio.gather(*(call(gw.url, SEND, text(n(i))) for i in range(2100, 2400)))
    elapsed = time.monotonic() - started
    for status, headers, body in answers:
        assert (status, body["gatewayCode"]) == (429, "rate_limited.messaging_tier")
        # when the oldest counted recipient leaves the moving 24 h
        assert DAY_S - elapsed - 1 <= int(headers["Retry-After"]) <= DAY_S
    refused += len(answers)
    assert (forwarded, refused) == (TIER, 400)
    status, _, body = await batch(gw, wrote_in)
    assert status == 200 and not body.get("gatewayRejected")
    meta = sim.meta(wait=True)
    assert meta["delivered"] == TIER + len(wrote_in)
    assert meta["over_tier"] == 0
    assert not set(meta["receipts"]) & {"130429", "131056", "131049"}


async def test_downgrade_webhook_takes_effect_at_once(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = campaign(start_gateway, sim, redis_server)
    assert sim.meta_event(kind="tier", number=SENDER, tier="TIER_250") == 200
    sim.meta(tier=250)
    forwarded = 0
    for start in range(0, 300, 100):
        status, _, body = await batch(gw, [n(i) for i in range(start, start + 100)])
        forwarded += 100 - len(body.get("gatewayRejected", [])) if status == 200 else 0
    assert forwarded == 250
    meta = sim.meta(wait=True)
    assert meta["delivered"] == 250 and meta["over_tier"] == 0


async def test_meta_pair_receipt_cools_the_pair_on_every_worker(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(
        server={"workers": 2}, redis={"url": redis_server.url},
        whatsapp={"pair_burst": 10},  # laxer than Meta: Meta's receipt must teach the gateway
        subaccounts={"acme_main": {"whatsapp_senders": [SENDER]}},
    )  # fmt: skip
    sim.meta(webhook_url=gw.url, webhook_secret=WEBHOOK_SECRET,
             senders={"acme_main": SENDER}, pair_burst=2)  # fmt: skip
    for _ in range(3):
        status, _, _ = await call(gw.url, SEND, text(n(1)))
        assert status == 200
    meta = sim.meta(wait=True)  # the third broke Meta's pair rate: a 131056 receipt came back
    assert meta["receipts"] == {"131056": 1}
    answers = [await call(gw.url, SEND, text(n(1))) for _ in range(4)]  # both workers
    assert {(s, b["gatewayCode"]) for s, _, b in answers} == {(429, "rate_limited.pair")}
    assert (await call(gw.url, SEND, text(n(2))))[0] == 200  # another pair is untouched
