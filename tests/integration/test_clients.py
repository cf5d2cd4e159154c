"""Misbehaving callers: slow heads and bodies, pipelining, oversized headers, thousands of
idle keep-alive connections. Bounded time and memory, documented answers, no 500s."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import pytest

from tests.conftest import GatewayFactory
from tests.integration.test_forwarding import SEND, TEXT, call
from tests.support.gatewayproc import CLIENT_TOKEN, WEBHOOK_SECRET
from tests.support.simproc import SimProcess

BODY = json.dumps(TEXT).encode()
HEAD = (
    f"POST {SEND} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {CLIENT_TOKEN}\r\n"
    f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
).encode()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


async def test_a_slow_request_head_is_cut_off(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(server={"idle_timeout_s": 1.0})
    sock = _connect(gw.port)
    sock.setblocking(False)
    started = time.monotonic()
    closed = False
    for byte in HEAD:  # one byte every 0.1 s: the head would take 20 s
        try:
            sock.send(bytes([byte]))
            await asyncio.sleep(0.1)
            if sock.recv(1024) == b"":
                closed = True
        except BlockingIOError:
            pass
        except OSError:
            closed = True
        if closed or time.monotonic() - started > 5:
            break
    sock.close()
    assert closed, "the gateway kept a slow head open"
    assert time.monotonic() - started < 3
    assert sim.requests() == []


async def test_a_slow_body_gets_408_and_is_never_forwarded(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(server={"body_timeout_s": 0.5})
    sock = _connect(gw.port)
    sock.sendall(HEAD + BODY[:10])
    answer = await asyncio.to_thread(sock.recv, 65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request.timeout" in answer
    assert sim.requests() == []


async def test_a_caller_hanging_up_mid_body_costs_nothing(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    for _ in range(20):
        sock = _connect(gw.port)
        sock.sendall(HEAD + BODY[:10])
        sock.close()
    await asyncio.sleep(0.3)
    assert sim.requests() == []
    assert (await call(gw.url, SEND))[0] == 200
    assert "Traceback" not in gw.log_text()


async def test_a_webhook_caller_hanging_up_mid_body_costs_nothing(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    head = HEAD.replace(SEND.encode(), b"/webhooks/inbound").replace(
        f"Bearer {CLIENT_TOKEN}".encode(), f"Bearer {WEBHOOK_SECRET}".encode()
    )
    for _ in range(5):
        sock = _connect(gw.port)
        sock.sendall(head + BODY[:10])
        sock.close()
    await asyncio.sleep(0.3)
    assert (await call(gw.url, SEND))[0] == 200
    assert gw.stop() == 0
    log = gw.log_text()
    assert "Traceback" not in log
    assert "store.unavailable" not in log  # a hang-up is the caller's, not the store's


async def test_pipelined_requests_are_answered_in_order(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    sock = _connect(gw.port)
    bad = HEAD.replace(b"Bearer ", b"Bearer x")  # the middle one is refused
    last = HEAD.replace(b"Host: gw", b"Host: gw\r\nConnection: close")
    sock.sendall(HEAD + BODY + bad + BODY + last + BODY)
    data = await asyncio.to_thread(_read_all, sock)
    sock.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"401", b"200"]
    assert len(sim.requests()) == 2


async def test_oversized_headers_are_refused_not_crashed(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway()
    sock = _connect(gw.port)
    sock.sendall(HEAD.replace(b"Host: gw", b"Host: gw\r\nX-Big: " + b"a" * 20000) + BODY)
    data = await asyncio.to_thread(_read_all, sock)
    sock.close()
    assert data.split(b" ", 2)[1] == b"400", data[:100]  # from the HTTP parser
    assert sim.requests() == []
    assert (await call(gw.url, SEND))[0] == 200


@pytest.mark.slow
async def test_ten_thousand_idle_connections_cost_bounded_memory(
    start_gateway: GatewayFactory, sim: SimProcess
) -> None:
    gw = start_gateway(server={"idle_timeout_s": 30})
    assert gw.proc is not None
    before = _rss_kib(gw.proc.pid)
    socks = []
    for _ in range(10_000):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", gw.port))
        socks.append(s)
        if len(socks) % 500 == 0:
            await asyncio.sleep(0.05)  # let the gateway accept
    await asyncio.sleep(1.0)
    status, _, _ = await call(gw.url, SEND)  # still serving
    grown = _rss_kib(gw.proc.pid) - before
    for s in socks:
        s.close()
    assert status == 200
    assert grown < 150_000, f"RSS grew {grown} KiB for 10,000 idle connections"
