"""The contract suite's stores: every test runs on memory, fakeredis and a real Redis,
and (marked slow: `pytest -m slow`) on a real Redis Cluster and a Sentinel-managed Redis.

The real servers are started once per session on free ports (never the one on 6379) and
flushed before each test (the Cluster on every primary). Helpers here build checks with
the suite's defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel

from gateway.store import keys
from gateway.store.base import (
    BucketSpec,
    MessageCheck,
    OtpSpec,
    Rule,
    SendCheck,
    Store,
)
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.clusterproc import RedisCluster as ClusterProcess
from tests.support.redisproc import RedisServer
from tests.support.sentinelproc import SentinelSetup

US = 1_000_000
MS = 1_000
ACCOUNT = "acme"
SUB = "acme_main"
OTP = OtpSpec(interval_us=60 * US, burst=1, limit=1, window_s=60)
COOLDOWN = keys.cooldown(ACCOUNT, SUB)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterProcess]:
    with ClusterProcess() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSetup]:
    with SentinelSetup() as setup:
        yield setup


async def cluster_store(cluster: ClusterProcess) -> RedisStore:
    """A store on the Cluster, every primary flushed."""
    client = RedisCluster.from_url(cluster.url)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    return RedisStore(client)


async def sentinel_store(setup: SentinelSetup) -> RedisStore:
    """A store on the primary the sentinels name, flushed."""
    hosts = [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in setup.sentinels]
    sentinel = Sentinel(hosts, socket_timeout=2)
    client = sentinel.master_for(setup.service_name, socket_timeout=2)
    await client.flushall()
    return RedisStore(client, also_close=(sentinel,))


async def fresh_client(request: pytest.FixtureRequest, kind: str) -> Redis | RedisCluster:
    """An empty Redis of `kind` ("fakeredis", "cluster" or "redis") for a store-contract
    fixture: a new fakeredis server, or the session's Cluster or redis-server flushed."""
    if kind == "fakeredis":
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    if kind == "cluster":
        cluster = RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
        await cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
        return cluster
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(server.url)
    await client.flushall()
    return client


@pytest.fixture(
    params=[
        "memory",
        "fakeredis",
        "redis",
        pytest.param("cluster", marks=pytest.mark.slow),
        pytest.param("sentinel", marks=pytest.mark.slow),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sentinel":
        made = await sentinel_store(request.getfixturevalue("redis_sentinel"))
    else:
        made = RedisStore(await fresh_client(request, request.param))
    yield made
    await made.close()


async def pttl(store: Store, key: str) -> int:
    """A key's TTL in ms as Redis' PTTL answers (-2: no key, -1: no TTL)."""
    if isinstance(store, MemoryStore):
        return store.pttl(key)
    assert isinstance(store, RedisStore)
    return int(await store.client.pttl(key))


def spec(rule: Rule, key: str, interval_us: int, burst: int, limit: int | None = None,
         window_s: int = 1, shapeable: bool | None = None) -> BucketSpec:  # fmt: skip
    if shapeable is None:
        shapeable = rule in (Rule.SUBACCOUNT, Rule.EGRESS_IP)
    return BucketSpec(rule, key, interval_us, burst, limit or burst, window_s, shapeable)


def sub_bucket(interval_us: int = 10 * US, burst: int = 5, sub: str = SUB) -> BucketSpec:
    return spec(Rule.SUBACCOUNT, keys.subaccount_bucket(ACCOUNT, sub), interval_us, burst)


def egress_bucket(interval_us: int = 10 * US, burst: int = 5) -> BucketSpec:
    return spec(Rule.EGRESS_IP, keys.egress_bucket("default"), interval_us, burst)


def end_user_bucket(interval_us: int = 6 * US, burst: int = 10, ip: str = "198.51.100.7"
                    ) -> BucketSpec:  # fmt: skip
    return spec(Rule.END_USER_IP, keys.end_user_bucket(ip), interval_us, burst, window_s=60)


def msg(msisdn: str = "+6587654321", template: str | None = None, otp: bool = False
        ) -> MessageCheck:  # fmt: skip
    return MessageCheck(msisdn, template, otp)


def send(*messages: MessageCheck, buckets: tuple[BucketSpec, ...] | None = None,
         batch: bool = False, opt_in: str = "enforce", unknown_ok: bool = False,
         max_wait_us: int = 0, otp: OtpSpec = OTP, cooldown_key: str = COOLDOWN,
         account: str = ACCOUNT) -> SendCheck:  # fmt: skip
    return SendCheck(
        account=account, messages=messages or (msg(),),
        buckets=(sub_bucket(), egress_bucket()) if buckets is None else buckets, otp=otp,
        cooldown_key=cooldown_key, batch=batch, opt_in=opt_in,
        unknown_template_allowed=unknown_ok, max_wait_us=max_wait_us,
    )  # fmt: skip
