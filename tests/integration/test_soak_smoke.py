"""The soak run's code paths in a minute (the 10-minute run is `python -m bench.soak`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_soak_smoke_passes_its_verdict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "62", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    report = json.loads((tmp_path / "soak.json").read_text())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert report["ok"] and report["faults"] == 10
    assert report["undocumented_5xx"] == {} and report["refused_and_delivered"] == 0
    assert report["statuses"].get("200", 0) > report["sends"] // 3
