"""Building the Redis client for `[redis]`: standalone, Cluster or Sentinel.

Every call has a short timeout (`redis.timeout_ms`): the gateway never hangs on Redis.
The clients reconnect by themselves; the Decider decides what a failed call means.

- Cluster (`mode = "cluster"`, `url` names any node): redis-py's RedisCluster learns the
  slot map from that node, follows MOVED/ASK and re-reads the map after a failover. The
  store splits each decision by slot (gateway/store/cluster.py).
- Sentinel (`mode = "sentinel"`, `sentinels` = host:port list, `service_name`): the client
  asks the sentinels for the primary on every new connection, so after a failover (or a
  READONLY answer from a demoted primary) its next connection goes to the promoted one. The
  single-call decision path applies, as on standalone.
"""

from __future__ import annotations

from typing import Any

from gateway.config import RedisConfig
from gateway.store.redis import RedisStore


def redis_store(cfg: RedisConfig) -> RedisStore:
    timeout = cfg.timeout_ms / 1000
    common: dict[str, Any] = {
        "socket_timeout": max(timeout, 0.05),
        "socket_connect_timeout": max(timeout, 0.25),
        "health_check_interval": 15,
    }
    mode = cfg.mode
    if mode == "cluster" or cfg.url.startswith("redis+cluster"):
        from redis.asyncio.cluster import RedisCluster

        url = cfg.url.replace("redis+cluster", "redis", 1)
        return RedisStore(RedisCluster.from_url(url, **common))
    if mode == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        hosts = [(h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in cfg.sentinels]
        sentinel = Sentinel(hosts, **common)  # type: ignore[no-untyped-call]
        primary = sentinel.master_for(cfg.service_name, max_connections=256, **common)
        return RedisStore(primary, also_close=(sentinel,))
    from redis.asyncio import Redis

    return RedisStore(Redis.from_url(cfg.url, max_connections=256, **common))
