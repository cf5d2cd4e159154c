"""The OTP shield's judgement with a fake clock: the escalation ladder 15 min → 2 h → 12 h
→ until released, the country allow-list, the safe list, prefixes, a store failure."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.config import Config, ConfigError, OtpShieldConfig, load
from gateway.metrics import Metrics
from gateway.shield import Shield, otp_numbers, read
from gateway.state import State
from gateway.store.base import MessageCheck, TemplateRecord
from gateway.store.memory import MemoryStore
from gateway.store.shield import MemoryShield

HELD = "otp.prefix_quarantined"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def shield(clock: Clock, store: Any = None, **cfg: Any) -> Shield:
    section = OtpShieldConfig(**{"mode": "enforce", "min_sends": 3, **cfg})
    state = SimpleNamespace(
        config=replace(Config(), otp_shield=section),
        store=MemoryStore(),
        metrics=Metrics(),
        log=SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None),
    )
    return Shield(cast(State, state), store or MemoryShield(), clock)


def numbers(first: int, n: int) -> list[str]:
    return [f"+44790010{first + i:04d}" for i in range(n)]


def outcome(s: Shield, name: str) -> float:
    value = s.state.metrics.registry.get_sample_value("gateway_otp_shield_total", {"outcome": name})
    return value or 0.0


async def test_the_ladder_is_15_minutes_2_hours_12_hours_then_until_released() -> None:
    clock = Clock()
    s = shield(clock)
    for hold_s in (900, 7200, 43200, None):
        for msisdn in numbers(0, 3):
            assert await s.check([msisdn]) is None
        found = await s.check(numbers(3, 1))
        assert found is not None
        code, retry_s, prefix = found
        assert (code, prefix) == (HELD, "+44790010")
        assert retry_s == (hold_s or 43200)  # until released: the longest step as a hint
        clock.now += 60
        assert (await s.check(numbers(4, 1)) or ("",))[0] == HELD
        clock.now += (hold_s or 10 * 86400) - 60
    assert (await s.check(numbers(5, 1)) or ("",))[0] == HELD  # still held, days later
    assert await s.store.release("+44790010", s.now_ms())
    assert await s.check(numbers(6, 1)) is None
    assert outcome(s, "quarantined") == 9 and outcome(s, "passed") == 13


async def test_validations_credited_keep_the_prefix_open() -> None:
    s = shield(Clock(), min_conversion=0.3)
    for msisdn in numbers(0, 3):
        assert await s.check([msisdn]) is None
    await s.credit("session-1", "+447900100000")
    await s.credit("session-1", "+447900100000")  # the same session: once
    assert await s.check(numbers(3, 1)) is None  # 1 of 3 validated: 33 %
    assert (await s.check(numbers(4, 1)) or ("",))[0] == HELD  # 1 of 4: 25 %


async def test_countries_allow_list_and_safe_list() -> None:
    s = shield(Clock(), countries=("SG", "GB"), safe_list=("+4479001",))
    assert await s.check(["+12025550123"]) == ("otp.country", 0, None)
    assert await s.check(["+6591234567"]) is None
    for msisdn in numbers(0, 10):  # safe: never counted nor held
        assert await s.check([msisdn]) is None
    assert outcome(s, "safe_list") == 10 and outcome(s, "country") == 1


async def test_a_store_failure_lets_the_send_on() -> None:
    class Down(MemoryShield):
        async def sends(self, *args: Any) -> Any:
            raise ConnectionError("down")

    s = shield(Clock(), store=Down())
    assert await s.check(numbers(0, 1)) is None
    assert outcome(s, "error") == 1


@pytest.mark.parametrize(
    ("msisdn", "region", "prefix"),
    [
        ("+447900100123", "GB", "+44790010"),
        ("+12025550123", "US", "+1202555"),
        ("+6591234567", "SG", "+659123"),  # 8 digits: at most all but the last 4
        ("+999", None, None),
    ],
)
def test_a_prefix_is_the_country_code_and_leading_digits(
    msisdn: str, region: str | None, prefix: str | None
) -> None:
    assert read(msisdn, 6) == (region, prefix)


async def test_otp_messages_are_verify_sessions_and_authentication_templates() -> None:
    store = MemoryStore()
    login = TemplateRecord(
        "login", "en", "APPROVED", "AUTHENTICATION", None, "2026-12-01T00:00:00Z"
    )
    await store.template_put("acme", login)
    await store.template_put("acme", replace(login, name="promo", category="MARKETING"))
    state = cast(State, SimpleNamespace(store=store, snapshot=None))
    msgs = (
        MessageCheck("+6591234567", otp=True),
        MessageCheck("+6591234568", template="login:en"),
        MessageCheck("+6591234569", template="promo:en"),
        MessageCheck("+6591234560"),
        MessageCheck("cu:whatsapp:abc", otp=True),
    )
    assert otp_numbers(state, "acme", msgs) == ["+6591234567", "+6591234568"]


def test_config_names_the_bad_keys(tmp_path: Any) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[otp_shield]\nmode = "enforce"\ncountries = ["XX"]\nsafe_list = ["4479"]\n'
        "min_conversion = 1.5\nquarantine_s = [900, 0]\n"
    )
    with pytest.raises(ConfigError) as err:
        load(path, {})
    text = str(err.value)
    for key in ("countries", "safe_list", "min_conversion", "quarantine_s"):
        assert f"otp_shield.{key}" in text
