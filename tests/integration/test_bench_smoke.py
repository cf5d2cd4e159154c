"""The benchmark's smoke mode runs end to end, so the bench cannot rot: every scenario,
scaled down to a few seconds, through the same code as a full run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((out / "report.json").read_text()), out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_reports_every_scenario_with_plots(smoke: tuple[dict[str, Any], Path]) -> None:
    report, out = smoke
    assert report["errors"] == {}
    assert sorted(report["scenarios"]) == ["1", "2", "3", "4", "5", "6", "7"]
    for n in range(1, 8):
        assert (out / f"scenario{n}.png").stat().st_size > 1000
    assert report["summary"] and report["meta"]["smoke"] is True


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_figures_are_sane(smoke: tuple[dict[str, Any], Path]) -> None:
    s = {k: v["figures"] for k, v in smoke[0]["scenarios"].items()}
    assert all(s["1"]["throughput_rps"][t] > 0 for t in ("gateway", "bare", "direct"))
    assert s["1"]["refused"]["gateway"] == 0  # limits high: nothing refused
    assert 0 < s["1"]["gateway_over_bare"] < 3
    for rate in ("500", "1000", "2000"):
        assert s["2"]["gateway_p99_ms"][rate] > 0
    assert 0 < s["3"]["max_window"] <= s["3"]["limit_rps"]
    assert 0 < s["3"]["goodput"] <= 1.0 and s["3"]["refused"] > 0
    assert s["4"]["exactly_one_each"] and s["4"]["reached_simulator"] == s["4"]["numbers"]
    assert s["5"]["throughput_rps"]["big"] > 0 and s["5"]["optouts"] >= 100_000
    assert s["6"]["fallback_batches"] > 0
    assert s["7"]["distinct_recipients"] >= 20_000
    assert 0 < s["7"]["rss_mb_max"] < 1000 and s["7"]["redis_bytes_per_key"] > 0
    # HTTP-phase decisions the gateway took without Redis (a slow, busy box) leave no key
    assert s["7"]["keys_by_kind"]["otp"] >= s["7"]["through_decision_path"]
    assert s["7"]["ttl_violations"]["count"] == 0
