"""Run the 8x8 simulator (gateway/simulator/) as a real subprocess for integration tests.

    with SimProcess(subaccount_rps=20, api_key="k") as sim:
        sim.url            # http://127.0.0.1:PORT; upstream.urls.<product> = url + "/<product>"
        sim.stats()["max_window"]

Keyword arguments become command-line flags (`subaccount_rps=20` -> `--subaccount-rps 20`,
`drop=True` -> `--drop`, None is left out). The helpers talk to `/_sim/` with urllib only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free at the time of asking (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SimProcess:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 10.0,
        env: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self._env = env
        self._args = ["--host", host, "--port", str(port), *_flags(options)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._url: str | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> SimProcess:
        if self._proc is not None:
            raise RuntimeError("simulator already started")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        env = {**os.environ, **(self._env or {})}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.simulator", *self._args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        line = self._first_line()
        try:
            event = json.loads(line)
            assert event["event"] == "listening"
            self._url = str(event["url"])
        except (ValueError, KeyError, AssertionError, TypeError):
            self._fail(f"printed {line!r} instead of the listening line")
        return self

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; returns the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._stderr is not None:
            self._stderr.close()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("simulator not started")
        return self._url

    @property
    def port(self) -> int:
        port = urllib.parse.urlsplit(self.url).port
        assert port is not None
        return port

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return str(self._stderr.read().decode("utf-8", errors="replace"))

    # --- control API ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_sim/stats"))

    def requests(
        self, limit: int | None = None, product: str | None = None, subaccount: str | None = None
    ) -> list[dict[str, Any]]:
        """Recorded requests, oldest first (the newest `limit` of them)."""
        query = {"limit": limit, "product": product, "subaccount": subaccount}
        given = {k: v for k, v in query.items() if v is not None}
        path = "/_sim/requests" + (f"?{urllib.parse.urlencode(given)}" if given else "")
        return list(self._call("GET", path))

    def reset(self) -> None:
        self._call("POST", "/_sim/reset")

    def meta(self, wait: bool = False, **settings: Any) -> dict[str, Any]:
        """Meta's settings and what it judged (gateway/simulator/meta.py); `wait`: after
        every receipt was POSTed."""
        path = "/_sim/meta" + ("?wait=1" if wait else "")
        return dict(self._call("POST", path, settings))

    def meta_event(self, **event: Any) -> int:
        """Have the simulator POST a webhook to the gateway (tier, quality, inbound)."""
        return int(self._call("POST", "/_sim/meta/event", event)["status"])

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings (delay_ms, fail_status, drop, retry_after_s, subaccount_rps,
        ip_rps, api_key, record_limit, window_s, subaccount_rps_by_id); returns them all."""
        return dict(self._call("POST", "/_sim/config", settings))

    def set_templates(
        self,
        templates: list[dict[str, Any]],
        account: str | None = None,
        channel: str | None = None,
    ) -> None:
        """The template list 8x8 answers for (account, channel); None means any."""
        given = {k: v for k, v in {"account": account, "channel": channel}.items() if v}
        path = "/_sim/templates" + (f"?{urllib.parse.urlencode(given)}" if given else "")
        self._call("PUT", path, templates)

    def contacts(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_sim/contacts"))

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_sim/health"))

    # --- internals -----------------------------------------------------------------------

    def _first_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        found: list[bytes] = []
        reader = threading.Thread(target=lambda: found.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout_s)
        if not found or not found[0]:
            status = self._proc.poll()
            self._fail("timed out" if status is None else f"exited with {status}")
        return found[0].decode("utf-8", errors="replace").strip()

    def _fail(self, why: str) -> NoReturn:
        self.stop()
        stderr = self.stderr().strip()
        self._stderr.close()
        self._stderr = None
        raise RuntimeError(f"simulator {why} before listening; stderr: {stderr}")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        url = self.url + path  # always our own http:// URL
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise RuntimeError(f"{method} {path}: {exc.code} {detail}") from None
        return json.loads(raw) if raw else None


def _flags(options: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        out.extend([flag] if value is True else [flag, str(value)])
    return out
