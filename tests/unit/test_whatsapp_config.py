"""`[whatsapp]`, `[portfolios.*]` and `whatsapp_senders`: defaults, validation at the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load
from tests.unit.test_config import CLIENT as BASE

WA = """
[whatsapp]
sender_mps = 1000
us_marketing = "allow"

[subaccounts.acme_main]
whatsapp_senders = ["+6560000001", "+6560000002"]

[portfolios.retail]
tier = "unlimited"
subaccounts = ["acme_main"]
"""


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "gw.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return load(path, {})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return info.value.problems


def test_defaults_and_a_portfolio_load(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, WA)
    wa = cfg.whatsapp
    assert (wa.sender_mps, wa.pair_interval_s, wa.pair_burst) == (1000, 6.0, 45)
    assert (wa.marketing_hold_h, wa.us_marketing, wa.quality_red) == (24.0, "allow", "refuse")
    assert cfg.portfolio_of("ACME_MAIN") == "retail"
    assert cfg.portfolios["retail"].tier_value() == 0  # unlimited
    sub = cfg.subaccount("acme_main")
    assert sub is not None and sub.whatsapp_senders == ("+6560000001", "+6560000002")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[portfolios.p]\ntier = 0\nsubaccounts = ["acme_main"]\n', "portfolios.p.tier"),
        ('[portfolios.p]\ntier = "lots"\n', "portfolios.p.tier"),
        ('[subaccounts.acme_main]\nwhatsapp_senders = ["6560000001"]\n',
         "subaccounts.acme_main.whatsapp_senders"),
        ("[whatsapp]\nsender_mps = 0\n", "whatsapp.sender_mps"),
        ('[whatsapp]\nquality_red = "pause"\n', "whatsapp.quality_red"),
        ('[subaccounts.acme_b]\naccount = "other"\n[portfolios.p]\n'
         'subaccounts = ["acme_main", "acme_b"]\n', "portfolios.p.subaccounts"),
        ('[portfolios.p]\nsubaccounts = ["acme_main"]\n[portfolios.q]\n'
         'subaccounts = ["acme_main"]\n', "portfolios.q.subaccounts"),
    ],
)  # fmt: skip
def test_bad_values_are_reported_at_their_key(tmp_path: Path, text: str, where: str) -> None:
    found = problems(tmp_path, text)
    assert any(p.startswith(where) for p in found), found


async def test_sighup_applies_new_whatsapp_limits(tmp_path: Path) -> None:
    from gateway.app import build_app
    from gateway.server import reload
    from gateway.state import STATE
    from gateway.store.memory import MemoryStore

    path = tmp_path / "gw.toml"
    path.write_text(BASE + WA, encoding="utf-8")
    app = build_app(load(path, {}), "key", {}, store=MemoryStore())
    state = app[STATE]
    assert state.plan.whatsapp.senders("acme_main") == ("+6560000001", "+6560000002")
    path.write_text(BASE + WA.replace("1000", "20").replace('"unlimited"', "250"))
    reload(state, str(path), {"EIGHTX8_API_KEY": "key"})
    assert state.config.whatsapp.sender_mps == 20
    assert state.config.portfolios["retail"].tier_value() == 250
