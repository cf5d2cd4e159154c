"""SIGHUP: config and key file re-read in place, without a restart or a dropped request."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import AUTH, SEND, TEXT, call
from tests.support.gatewayproc import sha
from tests.support.simproc import SimProcess

NEW_TOKEN = "rotated-client-token"


async def test_sighup_applies_new_clients_without_dropping_requests(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    status, _, _ = await call(gw.url, SEND, headers={"Authorization": f"Bearer {NEW_TOKEN}"})
    assert status == 401
    results: list[int] = []
    stop = asyncio.Event()

    async def load(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.post(gw.url + SEND, json=TEXT, headers=AUTH) as r:
                await r.read()
                results.append(r.status)

    async with aiohttp.ClientSession() as session:
        workers = [asyncio.create_task(load(session)) for _ in range(8)]
        await asyncio.sleep(0.3)
        cfg = gw.cfg
        cfg["clients"][0]["token_sha256"] = [sha("orders-client-token"), sha(NEW_TOKEN)]
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        await asyncio.to_thread(gw.wait_for_log, "reload.applied")
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
    assert results and set(results) == {200}, set(results)
    status, _, _ = await call(gw.url, SEND, headers={"Authorization": f"Bearer {NEW_TOKEN}"})
    assert status == 200
    status, _, _ = await call(gw.url, SEND)  # the old token still works during rotation
    assert status == 200


async def test_sighup_with_a_broken_config_keeps_the_old_one(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    gw.config_path.write_text(gw.config_path.read_text() + "\n[limits]\nbogus = 1\n")
    gw.signal(signal.SIGHUP)
    await asyncio.to_thread(gw.wait_for_log, "reload.refused")
    assert "limits.bogus: unknown key" in gw.log_text()
    status, _, _ = await call(gw.url, SEND)
    assert status == 200


async def test_sighup_rereads_the_8x8_key_file(
    start_gateway: GatewayFactory, sim: SimProcess, tmp_path: Path
) -> None:
    key_file = tmp_path / "8x8.key"
    key_file.write_text("first-key\n")
    sim.configure(api_key=None)
    gw = start_gateway(upstream={"api_key_file": str(key_file)})
    await call(gw.url, SEND)
    key_file.write_text("second-key\n")
    gw.signal(signal.SIGHUP)
    await asyncio.to_thread(gw.wait_for_log, "reload.applied")
    await call(gw.url, SEND)
    seen = [r["headers"]["authorization"] for r in sim.requests()]
    assert seen == ["Bearer first-key", "Bearer second-key"]
    assert "first-key" not in gw.log_text() and "second-key" not in gw.log_text()
