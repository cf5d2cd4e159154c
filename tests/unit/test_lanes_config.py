"""Lanes, deadlines and shadow rules in config and headers (docs/lanes.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load
from gateway.errors import GatewayError
from gateway.policy import lanes
from gateway.policy.limits import LimitPlan
from gateway.routes import match
from gateway.store.base import Rule
from tests.unit.test_config import CLIENT, HASH_B


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return load(path, {})


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return info.value.problems


def test_defaults_reserve_a_fifth_and_shadow_nothing() -> None:
    cfg = load(None, {})
    assert (cfg.limits.reserved_share, cfg.limits.shadow) == (0.2, ())
    assert (cfg.limits.deadline_ms, cfg.limits.priority_deadline_ms) == (0, 0)
    plan = LimitPlan(cfg)
    route = match("POST", "/chatapps/api/v1/subaccounts/acme_main/messages")
    assert route is not None
    check = plan.check(route, (), None)
    assert (check.reserve_pm, check.shadow, check.deadline_us) == (200, frozenset(), 0)


def test_shadow_names_every_rule_and_only_rules(tmp_path: Path) -> None:
    names = sorted(lanes.RULE_NAMES)
    assert set(names) >= {"subaccount", "egress_ip", "otp_recipient", "end_user_ip",
                          "opted_out", "no_consent", "template", "deadline"}  # fmt: skip
    cfg = _load(tmp_path, f"[limits]\nshadow = {names!r}\n")
    assert LimitPlan(cfg).shadow == frozenset(Rule)  # type: ignore[arg-type]
    problems = _problems(tmp_path, "[limits]\nshadow = ['subacount']\n")
    assert any(p.startswith("limits.shadow: 'subacount'") for p in problems), problems


@pytest.mark.parametrize("share", ["1.0", "-0.1", "2"])
def test_reserved_share_must_be_a_fraction_below_one(tmp_path: Path, share: str) -> None:
    problems = _problems(tmp_path, f"[limits]\nreserved_share = {share}\n")
    assert any(p.startswith("limits.reserved_share: ") for p in problems), problems


def test_client_deadlines_are_checked_and_default_per_lane(tmp_path: Path) -> None:
    text = f"[limits]\ndeadline_ms = 500\npriority_deadline_ms = 30000\n{CLIENT}"
    text += f'\n[[clients]]\nname = "b"\ntoken_sha256 = "{HASH_B}"\nsubaccounts = ["x_b"]\n'
    text += "deadline_ms = -1\n"
    problems = _problems(tmp_path, text)
    assert any(p.startswith("clients.b.deadline_ms: ") for p in problems), problems
    assert lanes.deadlines_us(None, (0, 0), (500, 30_000)) == (500_000, 30_000_000)
    assert lanes.deadlines_us(None, (200, 0), (500, 30_000)) == (200_000, 30_000_000)
    assert lanes.deadlines_us(40, (200, 0), (500, 30_000)) == (40_000, 40_000)


@pytest.mark.parametrize("value", ["", "0", "-5", "1.5", "soon", "86400001"])
def test_a_bad_deadline_header_is_a_request_error(value: str) -> None:
    with pytest.raises(GatewayError) as info:
        lanes.header_deadline_ms(value)
    assert info.value.code == "request.invalid"
    assert info.value.extra["field"] == "X-Send-Deadline-Ms"


def test_a_deadline_header_is_whole_ms() -> None:
    assert lanes.header_deadline_ms(" 250 ") == 250
    assert lanes.header_deadline_ms(None) is None


def test_fair_clients_is_on_by_default_and_names_the_client(tmp_path: Path) -> None:
    route = match("POST", "/chatapps/api/v1/subaccounts/acme_main/messages")
    assert route is not None
    plan = LimitPlan(load(None, {}))
    assert plan.check(route, (), None, client="orders").client == "orders"
    off = LimitPlan(_load(tmp_path, "[limits]\nfair_clients = false\n"))  # type: ignore[arg-type]
    assert off.check(route, (), None, client="orders").client == ""
    problems = _problems(tmp_path, '[limits]\nfair_clients = "yes"\n')
    assert any(p.startswith("limits.fair_clients") for p in problems), problems
