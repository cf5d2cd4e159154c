"""PII retention end to end: every SMS a gateway forwarded gets 8x8's PII removal exactly
once after `[pii] retain_days`, with two workers sharing a real redis-server, a gateway
restart in between, and 8x8's 429s retried."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_forwarding import call
from tests.support.gatewayproc import GatewayProcess, base_config
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess

SMS = "/sms/api/v1/subaccounts/acme_main/messages"
RETAIN_DAYS = 0.00002  # about 1.7 s
PII = {"retain_days": RETAIN_DAYS, "deletes_per_s": 50}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def gateway(
    tmp_path: Path, sim: SimProcess, redis_url: str, name: str, **server: Any
) -> GatewayProcess:
    cfg = base_config(sim.url, server=server, redis={"url": redis_url}, pii=PII)
    return GatewayProcess(tmp_path, cfg, name=name)


async def send_sms(gw: GatewayProcess, n: int, first: int) -> list[str]:
    umids = []
    for i in range(first, first + n):
        status, _, body = await call(gw.url, SMS, {"destination": f"+659100{i:04d}", "text": "hi"})
        assert status == 200, body
        umids.append(body["umid"])
    return umids


async def send_batch(gw: GatewayProcess) -> list[str]:
    batch = {"messages": [{"destination": f"+659200{i:04d}", "text": "hi"} for i in range(4)],
             "destinations": ["+6593000001"], "includeMessagesInResponse": True}  # fmt: skip
    status, _, body = await call(gw.url, SMS + "/batch", batch)
    assert status == 200, body
    return [m["umid"] for m in body["messages"]]


def removals(sim: SimProcess) -> list[tuple[str, int | None]]:
    """(umid, status) of every PII removal call the simulator received, in order."""
    return [
        (r["path"].split("/")[-2], r["status"])
        for r in sim.requests(product="sms")
        if r["method"] == "DELETE" and r["path"].endswith("/pii")
    ]


async def removed_once_each(sim: SimProcess, umids: list[str], timeout_s: float = 15) -> None:
    """Eventually every umid has one 202 (then a moment more: no second call comes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = Counter(u for u, status in removals(sim) if status == 202)
        if all(done[u] for u in umids):
            break
        assert time.monotonic() < deadline, f"not removed: {set(umids) - set(done)}"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # a double call would come within the workers' poll period
    done = Counter(u for u, status in removals(sim) if status == 202)
    assert sorted(done) == sorted(umids)
    assert set(done.values()) == {1}, done


async def test_every_forwarded_sms_gets_its_pii_removed_once_across_workers_and_a_restart(
    tmp_path: Path, sim: SimProcess, redis_server: RedisServer
) -> None:
    first = gateway(tmp_path, sim, redis_server.url, "first", workers=2)
    with first:
        umids = await send_sms(first, 8, 0) + await send_batch(first)
    second = gateway(tmp_path, sim, redis_server.url, "second", workers=2)
    with second:
        umids += await send_sms(second, 6, 100)
        assert len(set(umids)) == 19
        await removed_once_each(sim, umids)
        assert redis_server.cli("ZCARD", "gw:{pii}:due") == 0
        seen = {r["subaccount"] for r in sim.requests(product="sms") if r["method"] == "DELETE"}
        assert seen == {"acme_main"}


async def test_pii_removal_retries_after_8x8_answers_429(
    tmp_path: Path, sim: SimProcess, redis_server: RedisServer
) -> None:
    with gateway(tmp_path, sim, redis_server.url, "gw") as gw:
        umids = await send_sms(gw, 3, 0)
        sim.configure(fail_status=429, retry_after_s=1)
        try:
            deadline = time.monotonic() + 10
            while not any(status == 429 for _, status in removals(sim)):
                assert time.monotonic() < deadline, "no PII removal was attempted"
                await asyncio.sleep(0.1)
        finally:
            sim.configure(fail_status=None)
        await removed_once_each(sim, umids)
        gw.wait_for_log('"pii.retry"')


async def test_retention_off_calls_nothing(tmp_path: Path, sim: SimProcess) -> None:
    cfg = base_config(sim.url)
    with GatewayProcess(tmp_path, cfg) as gw:
        await send_sms(gw, 2, 0)
        await asyncio.sleep(0.5)
    assert removals(sim) == []


async def test_a_batch_sent_without_its_list_still_gets_every_message_removed(
    tmp_path: Path, sim: SimProcess, redis_server: RedisServer
) -> None:
    """The gateway asks 8x8 for the batch's umids (gateway/listing.py) and answers the
    caller without them, as 8x8 would have; each message's PII is removed once."""
    batch = {"messages": [{"destination": f"+659400{i:04d}", "text": "hi"} for i in range(3)],
             "destinations": ["+6593000002", "+6593000003"], "template": {"text": "hi"}}  # fmt: skip
    with gateway(tmp_path, sim, redis_server.url, "gw") as gw:
        status, _, body = await call(gw.url, SMS + "/batch", batch)
        assert status == 200, body
        assert "messages" not in body and body["acceptedCount"] == 5
        sent = [r for r in sim.requests(product="sms") if r["path"].endswith("/batch")]
        assert [r["body"]["includeMessagesInResponse"] for r in sent] == [True]
        deadline = time.monotonic() + 15
        while len({u for u, status in removals(sim) if status == 202}) < 5:
            assert time.monotonic() < deadline, removals(sim)
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a double call would come within the workers' poll period
        done = Counter(u for u, status in removals(sim) if status == 202)
        assert len(done) == 5 and set(done.values()) == {1}, done


async def test_a_batch_is_forwarded_as_sent_when_no_duty_needs_its_list(
    tmp_path: Path, sim: SimProcess
) -> None:
    batch = {"messages": [{"destination": "+6594000001", "text": "hi"}]}
    with GatewayProcess(tmp_path, base_config(sim.url)) as gw:
        status, _, body = await call(gw.url, SMS + "/batch", batch)
        assert status == 200 and "messages" not in body, body
    sent = [r for r in sim.requests(product="sms") if r["path"].endswith("/batch")]
    assert [set(r["body"]) for r in sent] == [{"messages"}]
