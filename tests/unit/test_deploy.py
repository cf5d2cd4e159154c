"""The shipped deployment files stay valid as the config grows."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import load

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


# --- the deploy kit: Kubernetes, Grafana, Prometheus ---------------------------------------

METRIC = re.compile(r"\bgateway_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def _named_metrics() -> set[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "gateway-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((ROOT / "deploy" / "prometheus" / "gateway-rules.yaml").read_text())
    return {m for e in exprs for m in METRIC.findall(e)}


def _family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


async def test_every_metric_the_dashboard_and_rules_name_is_on_metrics(
    aiohttp_client: Any,
) -> None:
    from gateway.app import build_app
    from gateway.config import Config

    client = await aiohttp_client(build_app(Config(), "key", {}))
    text = await (await client.get("/metrics")).text()
    exported = {_family(m) for m in re.findall(r"^# TYPE (\S+)", text, re.M)}
    named = _named_metrics()
    assert len(named) >= 12
    assert {_family(m) for m in named} <= exported, sorted({_family(m) for m in named} - exported)


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is absent (Debian: apt-get install -y prometheus; scripts/setup does as root)"
        )
    rules = ROOT / "deploy" / "prometheus" / "gateway-rules.yaml"
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_kit_waits_for_readiness_and_matches_the_shutdown_delay(
    tmp_path: Path,
) -> None:
    kube = ROOT / "deploy" / "kubernetes"
    deployment = (kube / "deployment.yaml").read_text()
    config = re.search(r"gateway.toml: \|\n(.*)", (kube / "configmap.yaml").read_text(), re.S)
    assert config is not None
    delay = re.search(r"shutdown_delay_s = (\d+)", config.group(1))
    assert delay is not None
    assert f"time.sleep({delay.group(1)})" in deployment  # preStop = shutdown_delay_s
    assert "path: /readyz" in deployment and "kind: PodDisruptionBudget" in deployment
    assert "readOnlyRootFilesystem: true" in deployment and "metrics_dir" in config.group(1)
    assert "secretKeyRef" in deployment and "resources:" in deployment
    toml = textwrap.dedent(config.group(1)).replace(
        "REPLACE-with-the-output-of-gateway-hash-token", hashlib.sha256(b"t").hexdigest()
    )
    (tmp_path / "gateway.toml").write_text(toml)
    load(tmp_path / "gateway.toml", {})  # raises ConfigError on any problem
    redis = (kube / "redis.yaml").read_text()
    assert "kind: StatefulSet" in redis and '"--appendonly", "yes"' in redis
