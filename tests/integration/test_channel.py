"""The lean decision channel (gateway/store/channel.py) against a real redis-server:
pipelined replies reach their own callers, errors map to redis-py's exceptions, a dead
server fails the calls in flight and a restarted one is reconnected to, a cancelled call
drops the connection, credentials and database come from the redis-py client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from gateway.store.channel import Channel, channel_for
from tests.support.redisproc import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _channel(server: RedisServer, **extra: object) -> Channel:
    client = Redis.from_url(server.url, **extra)  # type: ignore[arg-type]
    channel = channel_for(client)
    assert channel is not None
    return channel


async def test_pipelined_calls_each_get_their_own_reply(redis_server: RedisServer) -> None:
    channel = _channel(redis_server)
    replies = await asyncio.gather(*(channel.execute_command("ECHO", str(i)) for i in range(500)))
    assert replies == [str(i).encode() for i in range(500)]
    channel.close()


async def test_error_replies_raise_redis_py_exceptions(redis_server: RedisServer) -> None:
    channel = _channel(redis_server)
    with pytest.raises(NoScriptError):
        await channel.execute_command("EVALSHA", "0" * 40, 0)
    with pytest.raises(ResponseError, match="unknown command"):
        await channel.execute_command("NO_SUCH_COMMAND")
    sha = await channel.script_load("return {1, 'two', false}")
    assert await channel.execute_command("EVALSHA", sha, 0) == [1, b"two", None]
    channel.close()


async def test_a_dead_server_fails_calls_and_a_restarted_one_is_reconnected(
    redis_server: RedisServer,
) -> None:
    channel = _channel(redis_server)
    assert await channel.execute_command("PING") == b"PONG"
    await asyncio.to_thread(redis_server.stop, kill=True)
    with pytest.raises(ConnectionError):
        await channel.execute_command("PING")
    with pytest.raises(OSError):  # refused while it is down
        await channel.execute_command("PING")
    await asyncio.to_thread(redis_server.start)
    assert await channel.execute_command("PING") == b"PONG"
    channel.close()


async def test_a_call_given_up_on_drops_the_connection() -> None:
    with RedisServer(args=("--enable-debug-command", "yes")) as server:
        await _given_up(server)


async def _given_up(redis_server: RedisServer) -> None:
    channel = _channel(redis_server)
    await channel.execute_command("SET", "k", "before")
    first_id = await channel.execute_command("CLIENT", "ID")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await channel.execute_command("DEBUG", "SLEEP", "0.3")
    # a new connection: the late reply to the abandoned call cannot be read as another's
    assert await channel.execute_command("CLIENT", "ID") != first_id
    assert await channel.execute_command("GET", "k") == b"before"
    channel.close()


async def test_credentials_and_database_come_from_the_client(redis_server: RedisServer) -> None:
    redis_server.cli("CONFIG", "SET", "requirepass", "s3cret")
    url = redis_server.url.replace("redis://", "redis://:s3cret@").replace("/0", "/3")
    channel = _channel_url(url)
    await channel.execute_command("SET", "where", "db3")
    check = Redis.from_url(url)
    assert await check.get("where") == b"db3"
    wrong = _channel_url(redis_server.url)
    with pytest.raises(ResponseError, match="NOAUTH"):
        await wrong.execute_command("PING")
    await check.config_set("requirepass", "")  # so the fixture can stop it
    await check.aclose()
    channel.close()
    wrong.close()


def _channel_url(url: str) -> Channel:
    channel = channel_for(Redis.from_url(url))
    assert channel is not None
    return channel


def test_tls_and_unix_socket_clients_get_no_channel() -> None:
    assert channel_for(Redis.from_url("rediss://127.0.0.1:6380/0")) is None
    assert channel_for(Redis.from_url("unix:///tmp/redis.sock")) is None
