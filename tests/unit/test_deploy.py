"""The shipped deployment files stay valid as the config grows."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_validates_once_its_token_placeholder_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EIGHTX8_API_KEY", "k")
    shipped = ROOT / "deploy" / "gateway.toml"
    assert main(["check-config", "--config", str(shipped)]) == 1
    assert capsys.readouterr().err.startswith("clients.orders.token_sha256: 'REPLACE-with")
    real = tmp_path / "gateway.toml"
    digest = hashlib.sha256(b"a token of your own").hexdigest()
    text = shipped.read_text().replace("REPLACE-with-the-output-of-gateway-hash-token", digest)
    real.write_text(text)
    assert main(["check-config", "--config", str(real)]) == 0


def test_compose_mounts_the_example_config_and_runs_redis_with_aof() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    assert "./deploy/gateway.toml:/etc/gateway/gateway.toml" in compose
    assert '"--appendonly", "yes"' in compose and "noeviction" in compose


def test_the_dockerfile_runs_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in dockerfile and "HEALTHCHECK" in dockerfile
