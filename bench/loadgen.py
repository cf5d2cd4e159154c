"""The load generator: a lean HTTP/1.1 client on uvloop, run as its own process.

    python -m bench.loadgen SPEC.json OUT.json

SPEC: {"mode": "open" | "closed", "host", "port", "duration", "rate" (open), "connections"
(closed), "warmup" (closed), "workload": {...} (bench/workload.py's `build`), "slot_base",
"raw": path for every send's record (.npz) or null}.

- open: sends at `rate` per second whatever the answers do; each send's latency counts
  from its scheduled instant (no coordinated omission): a busy server makes latency grow,
  not the send rate drop. Idle keep-alive connections are reused; more are opened when all
  are busy.
- closed: `connections` callers, each sending again as soon as it is answered.

No aiohttp on the send path: requests are pre-encoded bytes (one slot filled per send),
answers are parsed just enough (status, Content-Length or chunked), completion is a
callback, not a task, so a send costs a few µs of CPU. Its own CPU time is reported.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
from array import array
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any, cast

import orjson

from bench import stats, workload
from bench.workload import Template

Done = Callable[["Conn", int], None]


class Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, on_done: Done, on_lost: Callable[[Conn], None]) -> None:
        self.on_done = on_done
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.started = 0.0  # the scheduled instant of the request in flight
        self.index = -1  # which send it is (open loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes, started: float, index: int) -> None:
        self.busy = True
        self.started = started
        self.index = index
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while self.busy:
            status, used = _parse(buf)
            if used == 0:
                return
            del buf[:used]
            self.busy = False
            self.on_done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.on_done(self, 0)
        self.on_lost(self)


def _parse(buf: bytearray) -> tuple[int, int]:
    """(status, bytes used) of the first complete answer in `buf`, else (0, 0)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0, 0
    status = int(buf[9:12])
    head = bytes(buf[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 17)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        return (status, total) if len(buf) >= total else (0, 0)
    if b"\r\ntransfer-encoding: chunked" in head:
        pos = end + 4
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return 0, 0
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2 + size + 2
            if len(buf) < pos:
                return 0, 0
            if size == 0:
                return status, pos
    return status, end + 4  # no body (204, 304)


class Generator:
    def __init__(self, spec: dict[str, Any], templates: list[Template]) -> None:
        self.spec = spec
        self.templates = templates
        self.loop = asyncio.get_running_loop()
        self.slot_next = int(spec.get("slot_base", 0))
        self.rng = random.Random(self.slot_next)
        self.rand = {
            t.slot: (int(t.slot.split(":")[1]), int(t.slot.split(":")[2]))
            for t in templates
            if t.slot.startswith("rand:")
        }
        self.idle: list[Conn] = []
        self.all: set[Conn] = set()
        self.waiting: deque[tuple[float, int]] = deque()  # open loop: no connection yet
        self.connecting = 0
        self.sched = array("d")
        self.lat = array("d")
        self.status = array("h")
        self.lag = array("d")  # open loop: how late each tick sent what was due
        self.count = 0
        self.record = True
        self.stopping = False
        self.outstanding = 0
        self.t0 = 0.0
        self.elapsed = 0.0
        self.cpu_measured = 0.0

    def payload(self, i: int) -> bytes:
        t = self.templates[i % len(self.templates)]
        slot = t.slot
        if not slot:
            return t.pre
        if slot[0] == "r":  # rand:N:W
            below, width = self.rand[slot]
            return t.pre + b"%0*d" % (width, self.rng.randrange(below)) + t.post
        n = self.slot_next
        self.slot_next = n + 1
        if slot == "ip":
            fill = b"%04x:%04x" % ((n >> 16) & 0xFFFF, n & 0xFFFF)
        else:
            fill = b"%09d" % (n % 1_000_000_000)
        return t.pre + fill + t.post

    async def connect(self) -> Conn:
        _, conn = await self.loop.create_connection(
            lambda: Conn(self.done, self.lost), self.spec["host"], int(self.spec["port"])
        )
        self.all.add(conn)
        return conn

    def lost(self, conn: Conn) -> None:
        self.all.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def done(self, conn: Conn, status: int) -> None:
        now = perf_counter()
        self.outstanding -= 1
        if self.record:
            self.sched.append(conn.started - self.t0)
            self.lat.append(now - conn.started)
            self.status.append(status)
        if conn.transport is None:
            return
        if self.spec["mode"] == "closed":
            if not self.stopping:
                self.fire(conn, now)
            return
        if self.waiting:
            started, i = self.waiting.popleft()
            self._send(conn, started, i)
        else:
            self.idle.append(conn)

    def fire(self, conn: Conn, started: float) -> None:
        i = self.count
        self.count = i + 1
        self._send(conn, started, i)

    def _send(self, conn: Conn, started: float, i: int) -> None:
        self.outstanding += 1
        conn.send(self.payload(i), started, i)

    async def run_open(self) -> None:
        rate = float(self.spec["rate"])
        total = int(rate * float(self.spec["duration"]))
        cap = int(self.spec.get("max_connections", 2000))
        for _ in range(min(cap, int(self.spec.get("connections", 16)))):
            self.idle.append(await self.connect())
        self.t0 = perf_counter()
        sent = 0
        while sent < total:
            now = perf_counter()
            due = min(total, int((now - self.t0) * rate) + 1)
            self.lag.append(now - (self.t0 + (due - 1) / rate))
            while sent < due:
                if self.idle:
                    self.count += 1
                    self._send(self.idle.pop(), now, sent)
                else:
                    self.waiting.append((now, sent))
                    if len(self.all) + self.connecting < cap:
                        self.loop.create_task(self._grow())
                sent += 1
            # uvloop's timers tick in whole ms: sleep at least one tick, send what is due
            await asyncio.sleep(max(0.001, self.t0 + sent / rate - perf_counter()))
        await self._drain(float(self.spec.get("drain_s", 10)))

    async def _grow(self) -> None:
        self.connecting += 1
        try:
            conn = await self.connect()
        except OSError:
            if self.waiting:  # that send never went: a connection error
                started, _ = self.waiting.popleft()
                self.sched.append(started - self.t0)
                self.lat.append(perf_counter() - started)
                self.status.append(0)
            return
        finally:
            self.connecting -= 1
        if self.waiting:
            started, i = self.waiting.popleft()
            self._send(conn, started, i)
        else:
            self.idle.append(conn)

    async def run_closed(self) -> None:
        conns = [await self.connect() for _ in range(int(self.spec["connections"]))]
        warmup = float(self.spec.get("warmup", 1.0))
        self.record = False
        self.t0 = perf_counter()
        for conn in conns:
            self.fire(conn, perf_counter())
        await asyncio.sleep(warmup)
        self.sched, self.lat, self.status = array("d"), array("d"), array("h")
        self.t0 = perf_counter()
        self.record = True
        self.cpu_measured = -_cpu()
        await asyncio.sleep(float(self.spec["duration"]))
        self.cpu_measured += _cpu()
        self.record = False
        self.stopping = True
        self.elapsed = perf_counter() - self.t0
        await self._drain(5.0)

    async def _drain(self, timeout: float) -> None:
        deadline = perf_counter() + timeout
        while (self.outstanding > 0 or self.waiting) and perf_counter() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.all):
            if conn.transport is not None:
                conn.transport.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    gen = Generator(spec, workload.build(spec["workload"]))
    if spec["mode"] == "open":
        cpu = -_cpu()
        await gen.run_open()
        cpu += _cpu()
        elapsed = float(spec["duration"])
    else:
        await gen.run_closed()  # CPU counted while measuring, not warming up
        cpu, elapsed = gen.cpu_measured, gen.elapsed
    out = stats.summarize(gen.sched, gen.lat, gen.status, gen.lag, elapsed, cpu)
    raw = spec.get("raw")
    if raw:
        import numpy as np

        np.savez_compressed(raw, sent_s=gen.sched, latency_s=gen.lat, status=gen.status)
    return out


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    with open(spec_path, "rb") as f:
        spec = orjson.loads(f.read())
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(spec))
    with open(out_path, "wb") as f:
        f.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
