"""Idempotent sends end to end: real gateway processes, real simulator, real redis-server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import SEND, TEXT, call
from tests.support.gatewayproc import OTHER_TOKEN
from tests.support.simproc import SimProcess

KEY = "Idempotency-Key"
BILLS = "/chatapps/api/v1/subaccounts/acme_bills/messages"


def _workers_up(log: str) -> int:
    return log.count('"event":"listening"')


async def _burst(
    url: str, n: int, key: str, body: Any = TEXT
) -> list[tuple[int, dict[str, str], Any]]:
    return list(
        await asyncio.gather(*(call(url, SEND, body, headers={KEY: key}) for _ in range(n)))
    )


def _umids(results: list[tuple[int, dict[str, str], Any]]) -> set[str]:
    return {body["umid"] for _, _, body in results}


async def test_twenty_concurrent_sends_with_one_key_reach_8x8_once_on_two_workers_and_after_a_restart(
    start_gateway: GatewayFactory, sim: SimProcess, redis_url: str
) -> None:
    sim.configure(delay_ms=300)  # the first is still at 8x8 while the others arrive
    gw = start_gateway(server={"workers": 2}, redis={"url": redis_url})
    deadline = time.monotonic() + 10
    while _workers_up(gw.log_text()) < 2:
        assert time.monotonic() < deadline, gw.log_text()
        await asyncio.sleep(0.05)
    results = await _burst(gw.url, 20, "order-17")
    assert {status for status, _, _ in results} == {200}
    assert len(_umids(results)) == 1
    assert len(sim.requests()) == 1
    replayed = [h.get("Idempotent-Replayed") for _, h, _ in results]
    assert replayed.count("true") == 19 and replayed.count(None) == 1

    gw.stop()
    gw.start()
    after = await _burst(gw.url, 3, "order-17")
    assert {status for status, _, _ in after} == {200}
    assert _umids(after) == _umids(results)
    assert all(h["Idempotent-Replayed"] == "true" for _, h, _ in after)
    assert len(sim.requests()) == 1


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_same_key_with_another_body_is_422_and_sends_nothing(
    start_gateway: GatewayFactory, sim: SimProcess, redis_url: str, store: str
) -> None:
    gw = start_gateway(redis={"url": redis_url} if store == "redis" else {})
    assert (await call(gw.url, SEND, headers={KEY: "k-1"}))[0] == 200
    other = {**TEXT, "content": {"text": "another text"}}
    status, headers, body = await call(gw.url, SEND, other, headers={KEY: "k-1"})
    assert (status, body["code"], body["gatewayCode"]) == (422, 422, "request.idempotency_mismatch")
    assert headers["X-Gateway-Reject"] == "request.idempotency_mismatch"
    assert len(sim.requests()) == 1


async def test_memory_store_sends_concurrent_duplicates_once(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    sim.configure(delay_ms=200)
    gw = start_gateway()
    results = await _burst(gw.url, 10, "one-process")
    assert {status for status, _, _ in results} == {200}
    assert len(_umids(results)) == 1
    assert len(sim.requests()) == 1
    status, headers, body = await call(gw.url, SEND, headers={KEY: "one-process"})
    assert (status, headers["Idempotent-Replayed"]) == (200, "true")
    assert _umids([(status, headers, body)]) == _umids(results)


async def test_keys_are_scoped_per_client_and_sends_without_a_key_always_go(
    start_gateway: GatewayFactory, sim: SimProcess, redis_url: str
) -> None:
    gw = start_gateway(redis={"url": redis_url})
    first = await call(gw.url, SEND, headers={KEY: "shared-name"})
    billing = {"Authorization": f"Bearer {OTHER_TOKEN}", KEY: "shared-name"}
    second = await call(gw.url, BILLS, headers=billing)
    assert first[0] == second[0] == 200
    assert first[2]["umid"] != second[2]["umid"]
    assert "Idempotent-Replayed" not in second[1]
    plain = [await call(gw.url, SEND) for _ in range(2)]
    assert len(_umids(plain)) == 2
    assert len(sim.requests()) == 4


@pytest.mark.parametrize(
    "headers",
    [{KEY: ""}, {KEY: "x" * 256}, {KEY: "caf\u00e9"}],
    ids=["empty", "too-long", "not-printable-ascii"],
)
async def test_a_bad_idempotency_key_is_400_and_sends_nothing(
    start_gateway: GatewayFactory, sim: SimProcess, headers: dict[str, str]
) -> None:
    gw = start_gateway()
    status, _, body = await call(gw.url, SEND, headers=headers)
    assert (status, body["gatewayCode"], body["field"]) == (400, "request.invalid", KEY)
    assert sim.requests() == []
    assert (await call(gw.url, SEND, headers={KEY: "x" * 255}))[0] == 200


async def test_a_refused_first_attempt_releases_the_key_so_a_retry_goes(
    start_gateway: GatewayFactory, sim: SimProcess, redis_url: str
) -> None:
    gw = start_gateway(redis={"url": redis_url})
    sim.configure(fail_status=400)  # 8x8 refused it: nothing was sent
    assert (await call(gw.url, SEND, headers={KEY: "retry-me"}))[0] == 400
    sim.configure(fail_status=None)
    status, headers, body = await call(gw.url, SEND, headers={KEY: "retry-me"})
    assert status == 200 and body["umid"] and "Idempotent-Replayed" not in headers
    assert len(sim.requests()) == 2


async def test_an_8x8_server_error_is_kept_and_replayed_not_sent_again(
    start_gateway: GatewayFactory, sim: SimProcess, redis_url: str
) -> None:
    gw = start_gateway(redis={"url": redis_url})
    sim.configure(fail_status=500)  # 8x8 may have sent it
    assert (await call(gw.url, SEND, headers={KEY: "maybe-sent"}))[0] == 500
    sim.configure(fail_status=None)
    status, headers, _ = await call(gw.url, SEND, headers={KEY: "maybe-sent"})
    assert (status, headers["Idempotent-Replayed"]) == (500, "true")
    assert len(sim.requests()) == 1


async def test_client_message_id_is_the_key_when_the_client_opts_in(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(idempotency={"client_message_id": True})
    body = {**TEXT, "clientMessageId": "cm-1"}
    first = await call(gw.url, SEND, body)
    again = await call(gw.url, SEND, body)
    assert first[2]["umid"] == again[2]["umid"] and again[1]["Idempotent-Replayed"] == "true"
    assert len(sim.requests()) == 1
