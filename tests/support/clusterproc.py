"""A real local Redis Cluster for tests: 3 primaries, 3 replicas, free ports, temp dirs.

    cluster = RedisCluster().start()    # waits for cluster_state:ok on every node
    cluster.url                         # redis://127.0.0.1:P (any node; the client finds the rest)
    port = cluster.kill_primary("gw:{acme}:sub:x")   # SIGKILL the primary serving that key
    cluster.wait_for_failover(port)     # until its replica serves its slots
    cluster.restart(port)               # it comes back as a replica
    cluster.stop()

A node's cluster bus port is set explicitly (`cluster-port`) to a second free port, so
nothing depends on port + 10000 being free. `cluster-node-timeout` is short (1 s) so a
failover takes a few seconds, not the default 15+. Never touches any other Redis (for
instance one on 6379).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from tests.support.redisproc import free_port, redis_server_binary

NODE_TIMEOUT_MS = 1000


class ClusterNode:
    """One redis-server with --cluster-enabled yes."""

    def __init__(self, binary: str, root: Path, index: int) -> None:
        self.binary = binary
        self.dir = root / f"node{index}"
        self.dir.mkdir()
        self.port = free_port()
        self.bus_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
               "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
               "--cluster-port", str(self.bus_port),
               "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--repl-diskless-sync-delay", "0",
               "--dir", str(self.dir), "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cli(self, *args: Any, timeout: float = 5) -> Any:
        """One command on a fresh synchronous connection to this node only."""
        with redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout,
                         decode_responses=True) as client:  # fmt: skip
            return client.execute_command(*args)

    def info(self, *command: str) -> dict[str, Any]:
        """CLUSTER INFO or INFO <section> as a dict (redis-py parses only some of them)."""
        raw = self.cli(*command)
        if isinstance(raw, dict):
            return raw
        pairs = (line.partition(":") for line in str(raw).splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, _, v in pairs}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""


class RedisCluster:
    """Six nodes, `redis-cli --cluster create ... --cluster-replicas 1`."""

    def __init__(self, primaries: int = 3) -> None:
        self.binary = redis_server_binary()
        cli = shutil.which("redis-cli") or str(Path(self.binary).with_name("redis-cli"))
        self.redis_cli = cli
        self.root = Path(tempfile.mkdtemp(prefix="gw-cluster-"))
        self.nodes = [ClusterNode(self.binary, self.root, i) for i in range(primaries * 2)]

    @property
    def url(self) -> str:
        live = next(n for n in self.nodes if n.alive())
        return f"redis://127.0.0.1:{live.port}"

    def start(self, timeout: float = 60.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                self._until(deadline, lambda n=node: n.cli("PING") is True, f"{node.addr} up")
            create = [self.redis_cli, "--cluster", "create", *(n.addr for n in self.nodes),
                      "--cluster-replicas", "1", "--cluster-yes"]  # fmt: skip
            done = subprocess.run(create, capture_output=True, text=True, timeout=timeout,
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"cluster create failed:\n{done.stdout}\n{done.stderr}")
            self.wait_ok(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and sees every slot served, and
        every replica's link to its primary is up."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.alive():
                self._until(deadline, lambda n=node: self._node_ok(n), f"{node.addr} ok")

    def _node_ok(self, node: ClusterNode) -> bool:
        info = node.info("CLUSTER", "INFO")
        if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
            return False
        repl = node.info("INFO", "replication")
        return bool(repl.get("role") == "master" or repl.get("master_link_status") == "up")

    def primary_of(self, slot_or_key: int | str) -> ClusterNode:
        """The live node serving a slot (or a key's slot) as its primary."""
        slot = slot_or_key if isinstance(slot_or_key, int) else key_slot(slot_or_key.encode())
        for node in self.nodes:
            if not node.alive():
                continue
            with contextlib.suppress(redis.RedisError):
                for start, end, primary, *_ in node.cli("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        found = next(n for n in self.nodes if n.port == port)
                        if found.alive():
                            return found
        raise RuntimeError(f"no live primary serves slot {slot}")

    def primaries(self) -> list[ClusterNode]:
        return [
            n for n in self.nodes if n.alive() and n.info("INFO", "replication")["role"] == "master"
        ]

    def kill_primary(self, slot_or_key: int | str) -> int:
        """SIGKILL the primary serving that slot (or key); returns its port."""
        node = self.primary_of(slot_or_key)
        node.kill()
        return node.port

    def wait_for_failover(self, port: int, timeout: float = 30.0) -> None:
        """Until the dead node's slots are served by another node and the cluster is ok."""
        deadline = time.monotonic() + timeout

        def moved() -> bool:
            live = [n for n in self.nodes if n.alive()]
            for node in live:
                slots = node.cli("CLUSTER", "SLOTS")
                if any(int(primary[1]) == port for _, _, primary, *_ in slots):
                    return False
                if node.info("CLUSTER", "INFO").get("cluster_state") != "ok":
                    return False
            return True

        self._until(deadline, moved, f"failover away from {port}")

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again (same dir, same nodes.conf): it rejoins as a replica."""
        node = next(n for n in self.nodes if n.port == port)
        node.start()
        deadline = time.monotonic() + timeout
        self._until(deadline, lambda: node.cli("PING") is True, f"{node.addr} up")
        self.wait_ok(deadline - time.monotonic())

    def _until(self, deadline: float, ready: Any, what: str) -> None:
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if ready():
                    return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.addr}\n{n.log()}" for n in self.nodes)
                raise RuntimeError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
