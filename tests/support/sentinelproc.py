"""A real Sentinel setup for tests: one primary, one replica, three sentinels.

    setup = SentinelSetup().start()     # waits until the sentinels agree on a quorum
    setup.sentinels                     # ["127.0.0.1:P1", ...] for [redis] sentinels
    setup.service_name                  # "mymaster"
    port = setup.kill_primary()         # SIGKILL the current primary; returns its port
    setup.wait_for_failover(port)       # until the sentinels name the promoted replica
    setup.stop()

Sentinels run as `redis-server sentinel.conf --sentinel` with a generated config (they
rewrite it, so each has its own in the temp dir): quorum 2, down after 1 s, failover
timeout 3 s. Never touches any other Redis (for instance one on 6379).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tests.support.redisproc import RedisServer, free_port, redis_server_binary

SERVICE = "mymaster"


class Sentinel:
    def __init__(self, binary: str, root: Path, index: int, primary_port: int) -> None:
        self.binary = binary
        self.dir = root / f"sentinel{index}"
        self.dir.mkdir()
        self.port = free_port()
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\n"
            f"dir {self.dir}\nlogfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [self.binary, str(self.conf), "--sentinel"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cli(self, *args: Any) -> Any:
        with redis.Redis(port=self.port, socket_timeout=5, decode_responses=True) as client:
            return client.execute_command(*args)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class SentinelSetup:
    def __init__(self) -> None:
        self.binary = redis_server_binary()
        self.root = Path(tempfile.mkdtemp(prefix="gw-sentinel-"))
        self.service_name = SERVICE
        self.primary = RedisServer()
        self.replica = RedisServer(args=("--replicaof", "127.0.0.1", str(self.primary.port)))
        self.servers = [self.primary, self.replica]
        self.sentinel_procs = [Sentinel(self.binary, self.root, i, self.primary.port)
                               for i in range(3)]  # fmt: skip

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinel_procs]

    def start(self, timeout: float = 30.0) -> SentinelSetup:
        try:
            self.primary.start()
            self.replica.start()
            for sentinel in self.sentinel_procs:
                sentinel.start()
            deadline = time.monotonic() + timeout
            self._until(deadline, self._ready, "sentinels to see the replica and each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        for sentinel in self.sentinel_procs:
            if len(sentinel.cli("SENTINEL", "REPLICAS", SERVICE)) < 1:
                return False
            if not str(sentinel.cli("SENTINEL", "CKQUORUM", SERVICE)).startswith("OK 3"):
                return False
        return bool(self.replica.cli("INFO", "replication").get("master_link_status") == "up")

    def primary_port(self) -> int:
        """The primary's port as the first live sentinel names it."""
        for sentinel in self.sentinel_procs:
            with contextlib.suppress(redis.RedisError, OSError):
                _, port = sentinel.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                return int(port)
        raise RuntimeError("no sentinel answers")

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.primary_port()
        self.server(port).stop(kill=True)
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Until every sentinel names a new primary and it accepts writes; its port."""
        deadline = time.monotonic() + timeout

        def promoted() -> bool:
            ports = {int(s.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])
                     for s in self.sentinel_procs}  # fmt: skip
            if len(ports) != 1 or old_port in ports:
                return False
            role = self.server(ports.pop()).cli("INFO", "replication").get("role")
            return bool(role == "master")

        self._until(deadline, promoted, f"failover away from {old_port}")
        return self.primary_port()

    def restart(self, port: int) -> None:
        """Start a killed server again; the sentinels turn it into a replica."""
        self.server(port).start()

    def _until(self, deadline: float, ready: Any, what: str) -> None:
        while True:
            with contextlib.suppress(redis.RedisError, OSError, ValueError, TypeError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for sentinel in self.sentinel_procs:
            sentinel.stop()
        for server in self.servers:
            server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SentinelSetup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
