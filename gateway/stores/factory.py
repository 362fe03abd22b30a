"""The configured outcome store: its sink, label store and reader, built from settings.

`outcomes.store = "file"` is the embedded default (an append-only JSONL file and a labels
file beside it); `"redis"` puts outcomes in Redis Streams shared by every replica, with a
local journal for when Redis is away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from gateway.config.gateway import ControlSettings
from gateway.config.settings import OutcomeSettings
from gateway.control.ports import ControlStore, CounterStore
from gateway.outcomes.ports import OutcomeReader, OutcomeSink
from gateway.stores.control_store import FileControlStore, RedisControlStore
from gateway.stores.counter_store import LocalCounterStore, RedisCounterStore
from gateway.stores.jsonl_sink import JsonlSink
from gateway.stores.keys import RedisKeys
from gateway.stores.label_store import (
    FileLabelStore,
    LabelStore,
    RedisLabelStore,
    labels_path_beside,
)
from gateway.stores.reader import FileReader, RedisReader
from gateway.stores.redis_client import RedisClient, client_for, connect
from gateway.stores.redis_sink import RedisSink


def redis_keys(settings: OutcomeSettings) -> RedisKeys:
    return RedisKeys(prefix=settings.redis_prefix)


def labels_path(settings: OutcomeSettings) -> Path:
    return settings.labels_path or labels_path_beside(settings.path)


def _connect(settings: OutcomeSettings) -> Callable[[], Awaitable[RedisClient]]:
    password = settings.resolved_redis_password()
    return partial(connect, settings.redis_url, cluster=settings.redis_cluster, password=password)


def create_label_store(settings: OutcomeSettings) -> tuple[LabelStore, RedisClient | None]:
    """The label store for a long-lived app, and the Redis client to close with it."""
    if settings.store == "file":
        return FileLabelStore(settings.path, labels_path(settings)), None
    client = client_for(
        settings.redis_url,
        cluster=settings.redis_cluster,
        password=settings.resolved_redis_password(),
    )
    return RedisLabelStore(client, redis_keys(settings)), client


def create_reader(settings: OutcomeSettings, client: RedisClient | None) -> OutcomeReader:
    """The reader of the configured store; `client` is the app's Redis client (store redis)."""
    if settings.store == "file":
        return FileReader(settings.path, labels_path(settings))
    assert client is not None, "the redis store reads through the app's client"
    return RedisReader(client, redis_keys(settings))


def control_in_redis(control: ControlSettings, outcomes: OutcomeSettings) -> bool:
    """Whether the experiments' live state is shared in Redis (else: a local file)."""
    return control.store == "redis" or (control.store == "auto" and outcomes.store == "redis")


def create_control_stores(
    control: ControlSettings, outcomes: OutcomeSettings, client: RedisClient | None
) -> tuple[ControlStore, CounterStore, RedisClient | None]:
    """The control plane's state and counter stores, and a Redis client the caller must
    close when it had to open one (`client` is the app's, if it has one)."""
    if not control_in_redis(control, outcomes):
        path = control.state_path or outcomes.path.with_name("control-state.json")
        return FileControlStore(path), LocalCounterStore(), None
    owned = None
    if client is None:
        client = owned = client_for(
            outcomes.redis_url,
            cluster=outcomes.redis_cluster,
            password=outcomes.resolved_redis_password(),
        )
    prefix = outcomes.redis_prefix
    return RedisControlStore(client, prefix), RedisCounterStore(client, prefix), owned


def create_sink(settings: OutcomeSettings) -> OutcomeSink:
    """The sink records go to; started and closed by its owner."""
    if settings.store == "file":
        return JsonlSink(settings.path, queue_size=settings.queue_size)
    return RedisSink(
        _connect(settings),
        redis_keys(settings),
        settings.journal_dir,
        queue_size=settings.queue_size,
        batch_size=settings.batch_size,
        maxlen=settings.stream_maxlen,
        min_id_age_s=settings.retention_s,
        dedup_window_s=settings.dedup_window_s,
        full_policy=settings.full_policy,
        journal_max_records=settings.journal_max_records,
    )


@asynccontextmanager
async def _redis(settings: OutcomeSettings) -> AsyncIterator[RedisClient]:
    client = await _connect(settings)()
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def open_label_store(settings: OutcomeSettings) -> AsyncIterator[LabelStore]:
    if settings.store == "file":
        yield FileLabelStore(settings.path, labels_path(settings))
        return
    async with _redis(settings) as client:
        yield RedisLabelStore(client, redis_keys(settings))


@asynccontextmanager
async def open_reader(settings: OutcomeSettings) -> AsyncIterator[OutcomeReader]:
    if settings.store == "file":
        yield FileReader(settings.path, labels_path(settings))
        return
    async with _redis(settings) as client:
        yield RedisReader(client, redis_keys(settings))
