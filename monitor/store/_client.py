"""Redis clients for one URL, standalone or any node of a Redis Cluster (detected)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from ..config import redact  # re-exported: store was its home, callers still import it here

__all__ = [
    "STORE_ERRORS",
    "AsyncClient",
    "SyncClient",
    "connect",
    "connect_async",
    "connect_node_async",
    "is_cluster",
    "node_url",
    "redact",
]

SyncClient = redis.Redis | RedisCluster
AsyncClient = aioredis.Redis | AsyncRedisCluster

# What a read of the store raises when Redis fails (standalone or cluster): callers outside
# store/ catch these without importing redis.
STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)

# Bounded waits: an unreachable or stalled Redis is an error to retry, never a hang.
_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 15.0}


def node_url(url: str, host: str, port: int) -> str:
    """``url`` with another node's address: same scheme, credentials, database, options."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a node of a Redis Cluster (``INFO cluster``)."""
    client = redis.Redis.from_url(url, **_TIMEOUTS)
    try:
        info = client.info("cluster")
    finally:
        client.close()
    return bool(info.get("cluster_enabled"))


def connect(url: str, cluster: bool | None = None) -> SyncClient:
    """A blocking client; a cluster client when ``url`` names a cluster node."""
    if cluster is None:
        cluster = is_cluster(url)
    if cluster:
        return RedisCluster.from_url(url, **_TIMEOUTS)
    return redis.Redis.from_url(url, **_TIMEOUTS)


def connect_node_async(url: str, host: str, port: int) -> aioredis.Redis:
    """An asyncio client of one node of the cluster that ``url`` names."""
    return aioredis.from_url(node_url(url, host, port), **_TIMEOUTS)


def connect_async(url: str, cluster: bool) -> AsyncClient:
    """An asyncio client (``cluster`` from :func:`is_cluster`, asked once at start-up)."""
    if cluster:
        return AsyncRedisCluster.from_url(url, **_TIMEOUTS)
    return aioredis.from_url(url, **_TIMEOUTS)
