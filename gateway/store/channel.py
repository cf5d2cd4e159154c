"""A lean, pipelined Redis connection for the hot path's script calls.

Every micro-batch of decisions is one EVALSHA. Through redis-py's asyncio client such a call
costs about 100 µs of gateway CPU beyond the command itself (pool checkout, locks, timeout
and retry wrappers), three to four times what writing the packed command and parsing the
reply with hiredis costs (figures in the README, Performance). So the
decision calls go over a `Channel` instead: one connection per Redis node per process,
commands pipelined on it (Redis answers in order, so replies are matched to calls first in,
first out), hiredis packing and parsing. Everything else (admin, webhooks, the snapshot,
Sentinel discovery, Cluster topology) stays on redis-py, and so does every call on a
connection the channel cannot make (TLS, unix sockets): `channel_for` returns None.

Failure behaviour:
- a broken connection fails every call in flight with ConnectionError; the next call
  connects again (to the address `address()` gives then: Sentinel's current primary);
- a call whose caller gives up (cancelled: the Decider's timeout) closes the connection, as
  redis-py does on a timeout, so a stuck or silent connection is never reused;
- error replies raise redis-py's exceptions (NoScriptError for NOSCRIPT, else
  ResponseError), so NOSCRIPT reloads and OOM/READONLY/LOADING count as store failures
  exactly as through redis-py; READONLY (a demoted primary) also drops the connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import NoScriptError, ResponseError

Address = Callable[[], Awaitable[tuple[str, int]]]


def _error(reply: ResponseError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return reply


class _Protocol(asyncio.Protocol):
    """One TCP connection: calls in flight, oldest first, and the reply parser."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Write one command; the future gets its reply (or ConnectionError)."""
        if self.transport is None:
            raise ConnectionError("Redis connection lost")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.transport.write(hiredis.pack_command(args))
        return fut

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                fut = waiting.popleft()
                if fut.done():  # its caller gave up; the connection is being closed
                    continue
                if isinstance(reply, ResponseError):
                    fut.set_exception(_error(reply))
                else:
                    fut.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # garbage, or a reply nobody asked for
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError("Redis connection lost"))

    def _fail(self, err: Exception) -> None:
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(err)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # connection_lost fails what is still waiting
        else:
            self._fail(ConnectionError("Redis connection closed"))

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class Channel:
    """Calls to one Redis server over one pipelined connection, (re)opened on demand."""

    def __init__(
        self,
        address: Address,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connect_timeout_s: float = 0.25,
    ) -> None:
        self._address = address
        self._hello: list[tuple[Any, ...]] = []
        if password:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self.connect_timeout_s = connect_timeout_s
        self._proto: _Protocol | None = None
        self._lock = asyncio.Lock()

    async def execute_command(self, *args: Any) -> Any:
        proto = self._proto
        if proto is None or not proto.open:
            proto = await self._connect()
        try:
            return await proto.send(args)
        except asyncio.CancelledError:
            proto.close()
            raise
        except ResponseError as exc:
            if str(exc).startswith("READONLY"):
                proto.close()
            raise

    async def script_load(self, source: str) -> Any:
        return await self.execute_command("SCRIPT", "LOAD", source)

    async def _connect(self) -> _Protocol:
        async with self._lock:
            if self._proto is not None and self._proto.open:
                return self._proto
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.connect_timeout_s):
                host, port = await self._address()
                _, proto = await loop.create_connection(_Protocol, host, port)
                try:
                    for command in self._hello:
                        await proto.send(command)
                except BaseException:
                    proto.close()
                    raise
            self._proto = proto
            return proto

    def close(self) -> None:
        if self._proto is not None:
            self._proto.close()
            self._proto = None


def fixed(host: str, port: int) -> Address:
    async def address() -> tuple[str, int]:
        return host, port

    return address


def channel_for(client: Redis) -> Channel | None:
    """A channel to the server `client` talks to, with its credentials and database; None
    when its connections are not plain TCP (TLS, unix socket): those stay on redis-py."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    address: Address
    if pool.connection_class is Connection:
        address = fixed(kw.get("host", "localhost"), int(kw.get("port", 6379)))
    elif pool.connection_class is SentinelManagedConnection:  # wherever the primary is now
        address = pool.get_master_address  # type: ignore[attr-defined]
    else:
        return None
    return Channel(
        address,
        username=kw.get("username"),
        password=kw.get("password"),
        db=int(kw.get("db", 0) or 0),
        connect_timeout_s=float(kw.get("socket_connect_timeout") or 0.25),
    )
