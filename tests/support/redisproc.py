"""A real redis-server for tests: its own free port, temp dir and config.

    server = RedisServer(appendonly=True)
    server.start()
    server.cli("SET", "k", "v")
    server.stop(kill=True)   # SIGKILL; stop() sends SHUTDOWN
    server.start()           # same port, same dir: the AOF is replayed
    server.cleanup()

Never touches any other Redis (for instance one on 6379).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

INSTALL_HINT = "install redis-server (Debian: apt-get install -y redis-server)"


def redis_server_binary() -> str:
    """The path of redis-server; installs it with apt-get when running as root."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env,
                           timeout=300, check=True, capture_output=True)  # fmt: skip
        except (subprocess.SubprocessError, OSError) as exc:
            raise RuntimeError(f"redis-server not found and apt-get failed ({exc}): "
                               f"{INSTALL_HINT}") from exc  # fmt: skip
        found = shutil.which("redis-server")
        if found:
            return found
    raise RuntimeError(f"redis-server is not on PATH: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; `start()` again after `stop()` reuses port and dir."""

    def __init__(self, *, appendonly: bool = False, args: tuple[str, ...] = ()) -> None:
        self.binary = redis_server_binary()
        self.appendonly = appendonly
        self.args = tuple(args)
        self.dir = Path(tempfile.mkdtemp(prefix="gw-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        for attempt in range(3):
            if self._launch(timeout):
                return self
            if attempt < 2 and self.proc is not None and self.proc.poll() is not None:
                self.port = free_port()  # lost a race for the port: take another
        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")

    def _launch(self, timeout: float) -> bool:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.dir), "--save", "", "--daemonize", "no",
               "--appendonly", "yes" if self.appendonly else "no",
               "--logfile", str(self.dir / "redis.log"), *self.args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.cli("PING"):
                    return True
            except redis.RedisError:
                pass
            time.sleep(0.02)
        self.stop(kill=True)
        return False

    def cli(self, *args: Any) -> Any:
        """Run one command on a fresh synchronous connection."""
        with redis.Redis(port=self.port, socket_timeout=5, decode_responses=True) as client:
            return client.execute_command(*args)

    def stop(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.send_signal(signal.SIGKILL)
        else:
            with contextlib.suppress(redis.RedisError):  # the connection drops as it exits
                self.cli("SHUTDOWN")
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def cleanup(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
