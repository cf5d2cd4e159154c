"""The processes a bench run starts — redis-server, the 8x8 simulator, the gateway, the bare
proxy, the load generator — and what the bench reads about them from /proc.

Everything runs on 127.0.0.1 on free ports; redis-server gets its own port and temp dir
(never the machine's Redis on 6379). tests/support has the same helpers for the tests; the
bench imports them but never pytest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.support.clusterproc import RedisCluster
from tests.support.gatewayproc import GatewayProcess, sha
from tests.support.redisproc import RedisServer
from tests.support.simproc import SimProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-8x8-key"
CLIENT_TOKEN = "bench-client-token"
HIGH = 1_000_000  # "no limit": limits this high never refuse on this box
HIGH_BURST = 1_000
LIMITED_SUB, LIMITED_RPS, LIMITED_BURST = "bench_lim", 500, 10
HIGH_SUB, BIG_SUB, OTP_SUB = "bench_hi", "bench_big", "bench_otp"
OTP_WINDOW_S = 600  # long enough that 1M OTP keys are all alive when counted


def gateway_config(sim_url: str, redis_url: str, workers: int) -> dict[str, Any]:
    """Every check on: opt-outs, consent enforced, templates, OTP, end-user IP, subaccount
    and egress-IP buckets. Limits high except `bench_lim` (500/s, burst 10)."""
    return {
        "server": {
            "host": "127.0.0.1",
            "port": free_port(),
            "workers": workers,
            "drain_s": 2,
            "shutdown_delay_s": 0,
        },
        "redis": {"url": redis_url, "on_failure": "local", "timeout_ms": 50},
        "upstream": {
            "account_id": "acme",
            "timeout_s": 5,
            "urls": {p: f"{sim_url}/{p}" for p in ("chatapps", "sms", "verify", "contacts")},
        },
        "limits": {
            "subaccount_rps": HIGH,
            "subaccount_burst": HIGH_BURST,
            "egress_ip_rps": HIGH,
            "egress_ip_burst": HIGH_BURST,
            "otp_per_recipient": 1,
            "otp_window_s": OTP_WINDOW_S,
            "end_user_ip_per_minute": 10,
            "max_wait_ms": 100,
        },
        "templates": {"sync_s": 0},
        "policy": {"opt_in": "enforce", "unknown_template": "reject"},
        "subaccounts": {
            LIMITED_SUB: {"rps": LIMITED_RPS, "burst": LIMITED_BURST},
            BIG_SUB: {"account": "bigco"},
        },
        "clients": [{"name": "bench", "token_sha256": [sha(CLIENT_TOKEN)], "subaccounts": ["*"]}],
    }


class BareProxy:
    def __init__(self, upstream: str, workers: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "bench.bare_proxy",
            "--port",
            str(self.port),
            "--upstream",
            upstream,
            "--workers",
            str(workers),
        ]
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env={**os.environ, "EIGHTX8_API_KEY": API_KEY},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_http(self.url + "/healthz", self.proc, accept_any=True)

    def stop(self) -> None:
        stop_proc(self.proc)


def wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20, accept_any: bool = False
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (our own http:// URL)
                return
        except urllib.error.HTTPError:
            if accept_any:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def stop_proc(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Stack:
    """redis-server + simulator + gateway (N workers) + bare proxy (N workers)."""

    def __init__(self, workdir: Path, workers: int, redis_mode: str = "standalone") -> None:
        self.workdir = workdir
        self.workers = workers
        self.redis_mode = redis_mode
        # scenarios 5-7 drive redis-server itself (load data, kill it, audit keys): they
        # run on standalone only; a Cluster stack serves scenarios 1-4
        self.cluster = RedisCluster().start() if redis_mode == "cluster" else None
        self.redis = RedisServer().start()
        self.sim = SimProcess(
            api_key=API_KEY, subaccount_rps=HIGH, ip_rps=HIGH, record_limit=0
        ).start()
        self.sim.configure(subaccount_rps_by_id={LIMITED_SUB: LIMITED_RPS})
        cfg = gateway_config(self.sim.url, self.redis.url, workers)
        if self.cluster is not None:
            cfg["redis"] = {**cfg["redis"], "mode": "cluster", "url": self.cluster.url}
        self.gateway = GatewayProcess(workdir, cfg, env={"EIGHTX8_API_KEY": API_KEY}).start()
        self.bare = BareProxy(self.sim.url, workers, workdir / "bare.log")
        self.targets = {"gateway": self.gateway.url, "bare": self.bare.url, "direct": self.sim.url}
        self.tokens = {"gateway": CLIENT_TOKEN, "bare": "ignored", "direct": API_KEY}

    def redis_pids(self) -> list[int]:
        """The processes that serve the gateway's Redis (every node of a Cluster)."""
        if self.cluster is not None:
            return [n.proc.pid for n in self.cluster.nodes if n.proc is not None]
        assert self.redis.proc is not None
        return [self.redis.proc.pid]

    def gateway_workers(self) -> list[int]:
        assert self.gateway.proc is not None
        return children(self.gateway.proc.pid) if self.workers > 1 else [self.gateway.proc.pid]

    def bare_workers(self) -> list[int]:
        return children(self.bare.proc.pid) if self.workers > 1 else [self.bare.proc.pid]

    def metrics(self) -> dict[str, float]:
        url = self.gateway.url + "/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
            return parse_metrics(resp.read().decode())

    def truncate_logs(self) -> None:
        """The gateway writes a line per request; keep the disk from filling up."""
        with contextlib.suppress(OSError):
            os.truncate(self.gateway.log_path, 0)

    def close(self) -> None:
        cluster_stop = self.cluster.stop if self.cluster is not None else (lambda: None)
        for stop in (
            self.bare.stop,
            self.gateway.stop,
            self.sim.stop,
            self.redis.cleanup,
            cluster_stop,
        ):
            with contextlib.suppress(Exception):
                stop()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} (samples only)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for k, v in metrics.items() if k.split("{", 1)[0] == name and all(w in k for w in want)
    )


def children(pid: int) -> list[int]:
    """Direct children of `pid` (the workers of a supervisor)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def status_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def run_loadgen(spec: dict[str, Any], workdir: Path, name: str) -> dict[str, Any]:
    """One `python -m bench.loadgen` process; its summary."""
    spec_path = workdir / f"{name}.spec.json"
    out_path = workdir / f"{name}.out.json"
    spec_path.write_bytes(orjson.dumps(spec))
    timeout = float(spec["duration"]) + float(spec.get("warmup", 0)) + 120
    proc = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", str(spec_path), str(out_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(out_path.read_bytes())
    spec_path.unlink(missing_ok=True)
    out_path.unlink(missing_ok=True)
    result.setdefault("loadgen", "python")
    return result
