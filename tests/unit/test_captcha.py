"""The CAPTCHA check against the simulator's siteverify, served in this loop: one call per
token, single use, the fail modes, and which address goes as `remoteip`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.captcha import MAX_TOKEN, Captcha, remote_ip
from gateway.config import CaptchaConfig, Config, ConfigError, load
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


def _problems(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    try:
        load(path, environ or {})
    except ConfigError as exc:
        return exc.problems
    return []


def test_config_of_captcha_and_pii(tmp_path: Path) -> None:
    client = '[[clients]]\nname = "f"\ntoken_sha256 = "' + "a" * 64 + '"\nsubaccounts = ["s_1"]\n'
    form = client + "public_form = true\n"
    assert _problems(form, tmp_path) == ["captcha.verify_url: required, clients.f has public_form"]
    good = '[captcha]\nverify_url = "https://challenges.cloudflare.com/turnstile/v0/siteverify"\n'
    assert _problems(good + "[pii]\nretain_days = 0.5\n" + form, tmp_path) == []
    cfg = load(None, {"GATEWAY_PII_RETAIN_DAYS": "30", "GATEWAY_CAPTCHA_ON_FAILURE": "open"})
    assert (cfg.pii.retain_days, cfg.captcha.on_failure) == (30.0, "open")
    assert (cfg.pii.deletes_per_s, cfg.captcha.timeout_s, cfg.captcha.token_ttl_s) == (10, 1.5, 300)
    bad = '[captcha]\nverify_url = "ftp://x"\ntimeout_s = 0\n[pii]\nretain_days = -1\n'
    assert _problems(bad + "deletes_per_s = 0\n", tmp_path) == [
        "captcha.verify_url: 'ftp://x' is not an http(s) URL",
        "captcha.timeout_s: must be above 0, got 0.0",
        "pii.retain_days: must be 0 or more, got -1.0",
        "pii.deletes_per_s: must be above 0, got 0.0",
    ]
