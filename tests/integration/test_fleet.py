"""Running a fleet: the process model (respawn, bind errors, SIGHUP during start-up, SIGTERM's
shutdown delay), reloads that say what changed, a rotated key file, log lines written at
once, the metrics directory, and what a request's log line carries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import SEND, call
from tests.support.gatewayproc import (
    ADMIN_TOKEN,
    OTHER_TOKEN,
    WEBHOOK_SECRET,
    GatewayProcess,
    base_config,
)
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess, free_port

BILLS = "/chatapps/api/v1/subaccounts/acme_bills/messages"
OTHER = {"Authorization": f"Bearer {OTHER_TOKEN}"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _lines(log: str) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _events(log: str, event: str) -> list[dict[str, Any]]:
    return [line for line in _lines(log) if line.get("event") == event]


async def _wait_events(gw: GatewayProcess, event: str, n: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_events(gw.log_text(), event)) < n:
        assert time.monotonic() < deadline, gw.log_text()[-3000:]
        await asyncio.sleep(0.05)


def _popen(gw: GatewayProcess) -> subprocess.Popen[bytes]:
    """Start the process without waiting for it to become healthy."""
    gw.write_config()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(gw.env)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with gw.log_path.open("ab") as log:
        gw.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(gw.config_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    return gw.proc


# --- process model -------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_restarted_worker_runs_the_config_in_force_not_the_startup_one(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    gw = start_gateway(server={"workers": 2}, redis={"url": redis_server.url})
    await _wait_events(gw, "listening", 2)
    assert (await call(gw.url, BILLS, headers=OTHER))[0] == 200
    cfg = gw.cfg
    cfg["clients"] = cfg["clients"][:1]  # the billing client's token is revoked
    gw.write_config(cfg)
    gw.signal(signal.SIGHUP)
    await _wait_events(gw, "reload.applied", 2)
    first = _events(gw.log_text(), "listening")[0]["pid"]
    os.kill(first, signal.SIGKILL)
    await _wait_events(gw, "listening", 3)  # the replacement
    results = await asyncio.gather(*(call(gw.url, BILLS, headers=OTHER) for _ in range(20)))
    assert {r[0] for r in results} == {401}


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_busy_port_exits_1_within_10_s_naming_the_port(
    tmp_path: Path, sim: SimProcess, redis_server: RedisServer, workers: int
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = base_config(sim.url, port, server={"workers": workers},
                          redis={"url": redis_server.url})  # fmt: skip
        gw = GatewayProcess(tmp_path, cfg)
        proc = _popen(gw)
        try:
            code = await asyncio.to_thread(proc.wait, 10)
        finally:
            gw.stop(5)
    assert code == 1
    failed = _events(gw.log_text(), "server.bind_failed")
    assert failed and failed[0]["port"] == port, gw.log_text()
    assert str(port) in failed[0]["message"]


async def test_a_sighup_while_workers_start_does_not_kill_them(
    tmp_path: Path, sim: SimProcess, redis_server: RedisServer
) -> None:
    cfg = base_config(sim.url, server={"workers": 2}, redis={"url": redis_server.url})
    gw = GatewayProcess(tmp_path, cfg)
    _popen(gw)
    try:
        await _wait_events(gw, "supervisor", 1)  # the parent is up; its workers are starting
        for _ in range(3):
            gw.signal(signal.SIGHUP)
            await asyncio.sleep(0.05)
        await _wait_events(gw, "listening", 2)
        await asyncio.sleep(0.5)
        assert not _events(gw.log_text(), "worker.died"), gw.log_text()
        assert len(_events(gw.log_text(), "listening")) == 2
        assert (await call(gw.url, SEND))[0] == 200
    finally:
        assert gw.stop() == 0


async def test_a_sighup_during_start_up_of_a_single_process_does_not_kill_it(
    tmp_path: Path, sim: SimProcess
) -> None:
    gw = GatewayProcess(tmp_path, base_config(sim.url))
    proc = _popen(gw)
    try:
        await _wait_events(gw, "store.memory", 1)  # logged before the app is built
        gw.signal(signal.SIGHUP)
        await _wait_events(gw, "listening", 1)
        assert proc.poll() is None
        assert (await call(gw.url, SEND))[0] == 200
    finally:
        assert gw.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_keeps_serving_with_readyz_503_for_the_shutdown_delay_then_exits_0(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer, workers: int
) -> None:
    gw = start_gateway(
        server={"workers": workers, "shutdown_delay_s": 2, "drain_s": 2},
        redis={"url": redis_server.url},
    )
    await _wait_events(gw, "listening", workers)
    gw.signal(signal.SIGTERM)
    await _wait_events(gw, "draining", workers)
    status, _, body = await call(gw.url, "/readyz", None, method="GET")
    assert (status, body["draining"]) == (503, True)
    assert (await call(gw.url, SEND))[0] == 200  # still served during the delay
    assert await asyncio.to_thread(gw.wait, 15) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(gw.url, "/healthz", None, method="GET")
    closing = _events(gw.log_text(), "listener.closing")
    assert len(closing) == workers


async def test_sighup_logs_what_changed_names_restart_keys_and_counts_reloads(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    cfg = gw.cfg
    cfg["limits"] = {"subaccount_rps": 900, "subaccount_burst": 18}
    cfg["server"] = {**cfg["server"], "drain_s": 3}
    gw.write_config(cfg)
    gw.signal(signal.SIGHUP)
    await _wait_events(gw, "reload.applied", 1)
    applied = _events(gw.log_text(), "reload.applied")[0]
    assert applied["changed"] == ["limits.subaccount_burst", "limits.subaccount_rps"]
    restart = _events(gw.log_text(), "reload.needs_restart")[0]
    assert restart["level"] == "warning" and restart["keys"] == ["server.drain_s"]
    _, _, metrics = await call(gw.url, "/metrics", None, method="GET")
    assert 'gateway_reloads_total{outcome="applied"} 1.0' in metrics.decode()


# --- key file, log lines, metrics directory ------------------------------------------------


async def test_a_rotated_key_file_takes_effect_without_a_signal(
    start_gateway: GatewayFactory, sim: SimProcess, tmp_path: Path
) -> None:
    key_dir = tmp_path / "secret"
    key_dir.mkdir()
    (key_dir / "key-1").write_text("first-key\n")
    (key_dir / "key").symlink_to("key-1")  # as a Kubernetes Secret volume swaps a link
    sim.configure(api_key=None)
    gw = start_gateway(upstream={"api_key_file": str(key_dir / "key")})
    await call(gw.url, SEND)
    (key_dir / "key-2").write_text("second-key\n")
    (key_dir / "key.new").symlink_to("key-2")
    (key_dir / "key.new").rename(key_dir / "key")
    await _wait_events(gw, "key.reloaded", 1, timeout_s=10)
    await call(gw.url, SEND)
    seen = [r["headers"]["authorization"] for r in sim.requests()]
    assert seen == ["Bearer first-key", "Bearer second-key"]
    assert "second-key" not in gw.log_text()


async def test_the_parents_lines_are_written_when_they_happen_and_metrics_dir_is_configurable(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prom"
    gw = start_gateway(
        server={"workers": 2, "metrics_dir": str(metrics_dir)}, redis={"url": redis_server.url}
    )
    await _wait_events(gw, "supervisor", 1, timeout_s=5)  # not held until the parent exits
    await _wait_events(gw, "listening", 2)
    await call(gw.url, SEND)
    deadline = time.monotonic() + 5
    while not list(metrics_dir.glob("*.db")):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert _events(gw.log_text(), "supervisor")[0]["metrics_dir"] == str(metrics_dir)


# --- what a request's log line carries -----------------------------------------------------


def _rid(headers: dict[str, str]) -> str:
    return {k.lower(): v for k, v in headers.items()}["x-request-id"]


async def test_request_id_is_made_passed_to_8x8_returned_and_logged_with_the_error_id(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(server={"log_level": "debug"})
    status, headers, _ = await call(gw.url, SEND, headers={"X-Request-Id": "caller-id-1"})
    assert status == 200 and _rid(headers) == "caller-id-1"
    status, headers, _ = await call(gw.url, SEND)
    made = _rid(headers)
    assert status == 200 and len(made) >= 16
    assert [r["headers"].get("x-request-id") for r in sim.requests()] == ["caller-id-1", made]
    status, headers, body = await call(gw.url, SEND, headers={"Authorization": "Bearer nope"})
    assert status == 401
    status404, _, _ = await call(gw.url, "/nowhere/6591234567", None, method="GET")
    assert status404 == 404
    gw.stop()
    lines = _events(gw.log_text(), "request")
    refused = next(line for line in lines if line.get("status") == 401)
    assert refused["error_id"] == body["errorId"]
    assert refused["request_id"] == _rid(headers)
    assert refused["remote"] == "127.0.0.1" and refused["pid"] == gw.proc.pid  # type: ignore[union-attr]
    missing = next(line for line in lines if line.get("status") == 404)
    assert missing["path"] == "/nowhere/******4567"
    assert [line["request_id"] for line in lines[:2]] == ["caller-id-1", made]


async def test_malformed_requests_are_logged_as_json_without_the_offending_header(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    for secret in (ADMIN_TOKEN, WEBHOOK_SECRET, "client-token-xyz"):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /admin/v1/limits HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {secret}\x01\r\n".encode()
            + b"Content-Length: abc\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read(2000)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400" and secret.encode() not in answer
        assert json.loads(body)["gatewayCode"] == "request.invalid"  # 8x8's shape
    gw.stop()
    log = gw.log_text()
    for secret in (ADMIN_TOKEN, WEBHOOK_SECRET, "client-token-xyz"):
        assert secret not in log
    assert "Traceback" not in log
    for line in log.splitlines():
        assert line.startswith("{"), line


async def test_metrics_on_their_own_port_leave_the_proxy_port(
    start_gateway: GatewayFactory, sim: SimProcess, redis_server: RedisServer
) -> None:
    metrics_port = free_port()
    gw = start_gateway(
        server={"workers": 2, "metrics_port": metrics_port}, redis={"url": redis_server.url}
    )
    await _wait_events(gw, "listening", 2)
    assert (await call(gw.url, SEND))[0] == 200
    assert (await call(gw.url, "/metrics", None, method="GET"))[0] == 404
    deadline = time.monotonic() + 10
    while True:  # each worker hands its counts over about once a second
        status, _, text = await call(
            f"http://127.0.0.1:{metrics_port}", "/metrics", None, method="GET"
        )
        assert status == 200
        if b'route="chatapps.send"' in text or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert b'gateway_requests_total{decision="forwarded",route="chatapps.send"' in text
