"""Redis connections, and the one place where redis-py's failures are sorted.

`connect` opens a client (a single server or a Redis Cluster) with short timeouts, so that
a frozen or partitioned Redis fails a command within seconds instead of hanging the writer
that called it, and with few client-side retries, because the callers (the outcome sink's
writer and reconnect loop) keep their own backoff and their writes are idempotent.

`REDIS_ERRORS` is what a store treats as "Redis is unavailable right now": spool, back off
and try again later, or raise `StoreUnavailable` to its caller (`gateway.stores.failures`):
callers outside `gateway.stores` never catch these exceptions. Any other `RedisError` means
Redis answered and refused (a script bug, a key of the wrong type); stores log it as an
error but may still choose to retry.

`reachable` tells whether Redis answers a PING in time (every primary of a cluster), for the
readiness check; `persistence` whether each server (each primary of a cluster) keeps its
data across a restart, for the start-up check of the outcome store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisClient: TypeAlias = Redis | RedisCluster

SOCKET_TIMEOUT_S: Final = 2.0
CONNECT_TIMEOUT_S: Final = 2.0
HEALTH_CHECK_INTERVAL_S: Final = 15
# Client-side retries of one command. One retry rides out a connection that the server
# closed while idle; more would only delay the caller's own fallback.
CLIENT_RETRIES: Final = 1

REDIS_ERRORS: Final[tuple[type[BaseException], ...]] = (
    RedisConnectionError,  # refused, reset, closed; also BusyLoadingError, MaxConnectionsError
    RedisTimeoutError,  # redis-py's socket timeout
    TimeoutError,  # a caller's deadline (asyncio.timeout)
    ClusterError,  # ClusterDownError, MasterDownError: slots not served right now
    TryAgainError,  # a slot is migrating
    RedisClusterException,  # no reachable startup node, SlotNotCoveredError
    ReadOnlyError,  # a failover turned the node we write to into a replica
    OutOfMemoryError,  # maxmemory reached: nothing can be written until it is freed
)
"""Exceptions meaning "Redis is unavailable": the caller keeps the data and retries later."""


def client_for(
    url: str,
    *,
    cluster: bool,
    password: str | None = None,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    health_check_interval: float = HEALTH_CHECK_INTERVAL_S,
) -> RedisClient:
    """A client for `url` (`redis://` or `rediss://`), bytes in and out, not yet connected:
    it connects at its first command. `password` is used when the URL carries none, so that
    a URL in a config file can stay free of secrets."""
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), CLIENT_RETRIES)
    options: dict[str, Any] = {
        "password": password,
        "decode_responses": False,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": health_check_interval,
        "retry": retry,
    }
    if cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


async def connect(
    url: str,
    *,
    cluster: bool,
    password: str | None = None,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    health_check_interval: float = HEALTH_CHECK_INTERVAL_S,
) -> RedisClient:
    """Like `client_for`, but connected: a single server is pinged and a cluster's topology
    read before returning, so an unreachable Redis raises one of `REDIS_ERRORS` here rather
    than at the first write. Nothing is left open when this raises."""
    client = client_for(
        url,
        cluster=cluster,
        password=password,
        socket_timeout=socket_timeout,
        health_check_interval=health_check_interval,
    )
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()
        else:
            await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


async def reachable(client: RedisClient, timeout_s: float) -> bool:
    """Whether Redis answers a PING within `timeout_s`; a cluster, every primary (each holds
    some slots). Never raises for an unavailable or refusing Redis: it answers False."""
    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(client, RedisCluster):
                await client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await client.ping()
    except REDIS_ERRORS:
        return False
    except RedisError:  # it answered, but not with PONG (a password missing, say)
        return False
    return True


@dataclass(frozen=True, slots=True)
class Persistence:
    """How one Redis server keeps its data across a restart."""

    node: str  # host:port (never a URL: no credentials)
    aof: bool  # appendonly yes
    rdb: bool  # save points configured (RDB snapshots)

    @property
    def enabled(self) -> bool:
        return self.aof or self.rdb

    @property
    def kind(self) -> str:
        """`aof`, `rdb`, `aof+rdb`, or `none`."""
        return "+".join(name for name, on in (("aof", self.aof), ("rdb", self.rdb)) if on) or "none"


async def persistence(client: RedisClient) -> list[Persistence]:
    """The persistence of the server, or of every primary of a cluster (`CONFIG GET
    appendonly` and `save`). Raises a `ResponseError` (a `RedisError` not in `REDIS_ERRORS`)
    where CONFIG is disabled or not permitted, as on most managed services."""
    if isinstance(client, RedisCluster):
        found: list[Persistence] = []
        for node in client.get_primaries():
            appendonly = await client.config_get("appendonly", target_nodes=node)
            save = await client.config_get("save", target_nodes=node)
            found.append(_persistence(node.name, appendonly, save))
        return found
    appendonly = await client.config_get("appendonly")
    save = await client.config_get("save")
    options = client.connection_pool.connection_kwargs
    address = f"{options.get('host', options.get('path', '?'))}:{options.get('port', '')}"
    return [_persistence(address.rstrip(":"), appendonly, save)]


def _persistence(node: str, appendonly: Any, save: Any) -> Persistence:
    aof = _config_value(appendonly, "appendonly").lower() == "yes"
    rdb = _config_value(save, "save").strip() != ""
    return Persistence(node=node, aof=aof, rdb=rdb)


def _config_value(reply: Any, name: str) -> str:
    """One parameter of a CONFIG GET reply (a dict; keys and values str or bytes)."""
    for parameter, value in dict(reply).items():
        if _text(parameter) == name:
            return _text(value)
    raise ResponseError(f"CONFIG GET {name} returned no value")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
