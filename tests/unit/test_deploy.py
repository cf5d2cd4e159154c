"""The shipped deployment files stay valid as the config grows."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_config_validates() -> None:
    assert main(["check-config", "--config", str(ROOT / "deploy" / "gateway.toml")]) == 0


def test_compose_mounts_the_example_config_and_runs_redis_with_aof() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    assert "./deploy/gateway.toml:/etc/gateway/gateway.toml" in compose
    assert '"--appendonly", "yes"' in compose and "noeviction" in compose


def test_the_dockerfile_runs_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in dockerfile and "HEALTHCHECK" in dockerfile
