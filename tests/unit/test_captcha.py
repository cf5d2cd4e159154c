"""The CAPTCHA check against the simulator's siteverify, served in this loop: one call per
token, single use, the fail modes, and which address goes as `remoteip`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.captcha import MAX_TOKEN, Captcha, remote_ip
from gateway.config import CaptchaConfig, Config
from gateway.metrics import Metrics
from gateway.simulator.captcha import PROVIDER, Provider
from gateway.simulator.config import SimConfig
from gateway.simulator.server import start
from gateway.state import State
from gateway.store.memory import MemoryStore

Sim = tuple[str, Provider]


@pytest.fixture
async def provider() -> AsyncIterator[Sim]:
    runner, port = await start(SimConfig())
    found = runner.app[PROVIDER]
    yield f"http://127.0.0.1:{port}/captcha/siteverify", found
    found.mode = "ok"
    found.changed.set()
    await runner.cleanup()


async def verifier(url: str, on_failure: str = "closed", store: Any = None) -> Captcha:
    cfg = CaptchaConfig(verify_url=url, on_failure=on_failure, timeout_s=0.3)  # type: ignore[arg-type]
    warnings: list[str] = []
    state = SimpleNamespace(
        config=replace(Config(), captcha=cfg),
        store=store or MemoryStore(),
        metrics=Metrics(),
        log=SimpleNamespace(info=lambda *a, **k: None,
                            warning=lambda event, **k: warnings.append(event)),
    )  # fmt: skip
    captcha = Captcha(cast(State, state), "s3cret")
    await captcha.start()
    return captcha


async def test_a_token_is_verified_once_and_then_refused_without_a_call(provider: Sim) -> None:
    url, sim = provider
    captcha = await verifier(url)
    try:
        assert await captcha.check(None, None) == "captcha.missing"
        assert await captcha.check("  ", None) == "captcha.missing"
        assert await captcha.check("x" * (MAX_TOKEN + 1), None) == "captcha.invalid"
        assert sim.calls == []
        assert await captcha.check("pass-1", "198.51.100.7") is None
        assert sim.calls == [{"response": "pass-1", "remoteip": "198.51.100.7", "secret_set": True}]
        assert await captcha.check("pass-1", None) == "captcha.invalid"
        assert await captcha.check("nope", None) == "captcha.invalid"
        assert [c["response"] for c in sim.calls] == ["pass-1", "nope"]
        assert sim.calls[-1]["remoteip"] is None
    finally:
        await captcha.close()


@pytest.mark.parametrize("mode", ["error", "hang"])
async def test_provider_down_follows_the_fail_mode(provider: Sim, mode: str) -> None:
    url, sim = provider
    sim.mode = mode
    closed, opened = await verifier(url, "closed"), await verifier(url, "open")
    try:
        assert await closed.check("pass-2", None) == "captcha.unavailable"
        assert await opened.check("pass-3", None) is None
    finally:
        await closed.close()
        await opened.close()


async def test_an_unreadable_answer_or_a_dead_store_is_unavailable(provider: Sim) -> None:
    url, _ = provider
    wrong = await verifier(url.replace("/captcha/siteverify", "/_sim/health"))

    class DeadStore(MemoryStore):
        async def captcha_use(self, digest: str, ttl_ms: int) -> bool:
            raise ConnectionError("down")

    dead = await verifier(url, store=DeadStore())
    try:
        assert await wrong.check("pass-4", None) == "captcha.unavailable"
        assert await dead.check("pass-5", None) == "captcha.unavailable"
    finally:
        await wrong.close()
        await dead.close()


def test_remoteip_is_the_end_user_address() -> None:
    assert remote_ip("203.0.113.5", ["198.51.100.1"]) == "203.0.113.5"
    assert remote_ip(None, ["not an ip", "[2001:db8::1]:443"]) == "2001:db8::1"
    assert remote_ip("", ["::ffff:192.0.2.1"]) == "192.0.2.1"
    assert remote_ip(None, []) is None
