"""Run the gateway as a real process (`python -m gateway serve --config FILE`) for tests.

with GatewayProcess(tmp_path, base_config(sim.url)) as gw:
    requests to gw.url ...; gw.log_text() holds every log line it wrote
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.simproc import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "real-8x8-key-for-tests"
CLIENT_TOKEN = "orders-client-token"
OTHER_TOKEN = "billing-client-token"
ADMIN_TOKEN = "admin-secret-for-tests"
WEBHOOK_SECRET = "webhook-secret-for-tests"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def base_config(sim_url: str, port: int | None = None, **sections: Any) -> dict[str, Any]:
    """A config dict for a gateway in front of the simulator; `sections` override tables."""
    cfg: dict[str, Any] = {
        "server": {
            "host": "127.0.0.1",
            "port": port or free_port(),
            "drain_s": 10,
            "shutdown_delay_s": 0,
        },  # tests stop at once; test_fleet tests the delay
        "upstream": {
            "account_id": "acme",
            "timeout_s": 2,
            "urls": {p: f"{sim_url}/{p}" for p in ("chatapps", "sms", "verify", "contacts")},
        },
        "policy": {"opt_in": "off"},
        "clients": [
            {
                "name": "orders",
                "token_sha256": sha(CLIENT_TOKEN),
                "subaccounts": ["acme_main", "acme_otp"],
            },
            {"name": "billing", "token_sha256": sha(OTHER_TOKEN), "subaccounts": ["acme_bills"]},
        ],
    }
    for name, table in sections.items():
        if isinstance(table, dict) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **table}
        else:
            cfg[name] = table
    return cfg


def to_toml(cfg: dict[str, Any]) -> str:
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(v)

    def table(prefix: str, t: dict[str, Any]) -> None:
        subtables = []
        for k, v in t.items():
            if isinstance(v, dict):
                subtables.append((k, v))
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{prefix}{k}]]")
                    for ik, iv in item.items():
                        lines.append(f"{ik} = {scalar(iv)}")
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in subtables:
            lines.append(f"[{prefix}{k}]")
            table(f"{prefix}{k}.", v)

    scalars = {
        k: v for k, v in cfg.items() if not (isinstance(v, list) and v and isinstance(v[0], dict))
    }
    arrays = {k: v for k, v in cfg.items() if k not in scalars}
    table("", scalars)
    table("", arrays)
    return "\n".join(lines) + "\n"


class GatewayProcess:
    def __init__(
        self,
        tmp_path: Path,
        cfg: dict[str, Any],
        env: dict[str, str] | None = None,
        name: str = "gw",
    ) -> None:
        self.cfg = cfg
        self.port = int(cfg["server"]["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp_path / f"{name}.toml"
        self.log_path = tmp_path / f"{name}.log"
        self.env = {
            "EIGHTX8_API_KEY": API_KEY,
            "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, cfg: dict[str, Any] | None = None) -> None:
        if cfg is not None:
            self.cfg = cfg
        self.config_path.write_text(to_toml(self.cfg))

    def start(self, timeout_s: float = 20.0) -> GatewayProcess:
        self.write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(self.env)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not become healthy:\n{self.log_text()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def wait_for_log(self, needle: str, timeout_s: float = 5.0) -> str:
        """The log once `needle` is in it (request lines reach it within ~0.2 s)."""
        deadline = time.monotonic() + timeout_s
        while needle not in (text := self.log_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never logged:\n{text[-3000:]}")
            time.sleep(0.05)
        return text

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
