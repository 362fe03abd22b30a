"""The configured stores: outcome sink, label store, reader and control stores, built from
settings.

`outcomes.store = "file"` is the embedded default (an append-only JSONL file and a labels
file beside it); `"redis"` puts outcomes in Redis Streams shared by every replica, with a
local journal for when Redis is away. Every Redis-backed store reaches the one Redis of the
`[redis]` section, given here as its parsed value, `RedisConnection`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from gateway.analysis.engine_port import EvidenceSource
from gateway.config.capture import AudioSettings
from gateway.config.gateway import ControlSettings
from gateway.config.settings import OutcomeSettings, RedisConnection
from gateway.control.ports import ControlStore, CounterStore
from gateway.outcomes.ports import OutcomeReader, OutcomeSink
from gateway.stores.audio_store import AudioStore, LocalAudioStore
from gateway.stores.blob_audio_store import BlobAudioStore
from gateway.stores.control_store import FileControlStore, RedisControlStore
from gateway.stores.counter_store import LocalCounterStore, RedisCounterStore
from gateway.stores.failures import translated
from gateway.stores.file_label_store import FileLabelStore
from gateway.stores.jsonl_sink import JsonlSink
from gateway.stores.keys import RedisKeys
from gateway.stores.label_store import LabelStore, labels_path_beside
from gateway.stores.reader import FileReader, RedisReader
from gateway.stores.redis_client import RedisClient, client_for, connect
from gateway.stores.redis_label_store import RedisLabelStore
from gateway.stores.redis_sink import RedisSink


def create_audio_store(settings: AudioSettings) -> AudioStore:
    """The store of captured audio (`gateway.audio`): a local directory or Blob Storage."""
    settings.check()
    if settings.store == "blob":
        assert settings.blob_account_url is not None  # check() requires it
        return BlobAudioStore(
            settings.blob_account_url,
            settings.blob_container,
            settings.blob_credential_value(),
            timeout_s=settings.blob_timeout_s,
        )
    return LocalAudioStore(settings.directory, max_bytes=settings.max_bytes)


def redis_keys(redis: RedisConnection) -> RedisKeys:
    return RedisKeys(prefix=redis.prefix)


def labels_path(settings: OutcomeSettings) -> Path:
    return settings.labels_path or labels_path_beside(settings.path)


def _connect(redis: RedisConnection) -> Callable[[], Awaitable[RedisClient]]:
    return partial(connect, redis.url, cluster=redis.cluster, password=redis.plain_password())


def _client(redis: RedisConnection) -> RedisClient:
    return client_for(redis.url, cluster=redis.cluster, password=redis.plain_password())


def create_label_store(
    settings: OutcomeSettings, redis: RedisConnection
) -> tuple[LabelStore, RedisClient | None]:
    """The label store for a long-lived app, and the Redis client to close with it."""
    if settings.store == "file":
        return FileLabelStore(settings.path, labels_path(settings)), None
    client = _client(redis)
    return RedisLabelStore(client, redis_keys(redis)), client


def create_reader(
    settings: OutcomeSettings, redis: RedisConnection, client: RedisClient | None
) -> OutcomeReader:
    """The reader of the configured store; `client` is the app's Redis client (store redis)."""
    if settings.store == "file":
        return FileReader(settings.path, labels_path(settings))
    assert client is not None, "the redis store reads through the app's client"
    return RedisReader(client, redis_keys(redis))


def control_in_redis(control: ControlSettings, outcomes: OutcomeSettings) -> bool:
    """Whether the experiments' live state is shared in Redis (else: a local file)."""
    return control.store == "redis" or (control.store == "auto" and outcomes.store == "redis")


def create_control_stores(
    control: ControlSettings,
    outcomes: OutcomeSettings,
    redis: RedisConnection,
    client: RedisClient | None,
) -> tuple[ControlStore, CounterStore, RedisClient | None]:
    """The control plane's state and counter stores, and a Redis client the caller must
    close when it had to open one (`client` is the app's, if it has one)."""
    if not control_in_redis(control, outcomes):
        path = control.state_path or outcomes.path.with_name("control-state.json")
        return FileControlStore(path), LocalCounterStore(), None
    owned = None
    if client is None:
        client = owned = _client(redis)
    prefix = redis.prefix
    return RedisControlStore(client, prefix), RedisCounterStore(client, prefix), owned


def create_sink(settings: OutcomeSettings, redis: RedisConnection) -> OutcomeSink:
    """The sink records go to; started and closed by its owner."""
    if settings.store == "file":
        return JsonlSink(settings.path, queue_size=settings.queue_size)
    return RedisSink(
        _connect(redis),
        redis_keys(redis),
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
async def _redis(redis: RedisConnection) -> AsyncIterator[RedisClient]:
    with translated("connect"):  # the CLI's one-line error, not a redis-py traceback
        client = await _connect(redis)()
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def open_label_store(
    settings: OutcomeSettings, redis: RedisConnection
) -> AsyncIterator[LabelStore]:
    if settings.store == "file":
        yield FileLabelStore(settings.path, labels_path(settings))
        return
    async with _redis(redis) as client:
        yield RedisLabelStore(client, redis_keys(redis))


@asynccontextmanager
async def open_reader(
    settings: OutcomeSettings, redis: RedisConnection
) -> AsyncIterator[OutcomeReader]:
    if settings.store == "file":
        yield FileReader(settings.path, labels_path(settings))
        return
    async with _redis(redis) as client:
        yield RedisReader(client, redis_keys(redis))


def analysis_engine(
    settings: OutcomeSettings, *, threads: int | None = None
) -> EvidenceSource | None:
    """The SQL engine for the analysis of the store's records (`gateway.stores.engine`):
    DuckDB over the file store's JSON lines, with `threads` worker threads (None: one per
    core); None for Redis, whose records the analysis reads one by one."""
    from gateway.stores.engine import DuckDbEngine  # DuckDB only in analysing processes

    if settings.store == "file":
        return DuckDbEngine.jsonl(settings.path, labels_path=labels_path(settings), threads=threads)
    return None


def clickhouse_engine(url: str, table: str) -> EvidenceSource:
    """The ClickHouse engine over a server's outcome table (docs/clickhouse.md), reached
    through its HTTP interface; ConfigError for a malformed URL or table name."""
    from gateway.stores.clickhouse_engine import ClickHouseEngine  # only when asked for

    return ClickHouseEngine.server(url, table)


def clickhouse_lake_engine(root: Path, experiment: str) -> EvidenceSource:
    """The ClickHouse engine in process (chdb) over an export's outcome files; ConfigError
    as `lake.lake_sources`, or when chdb is not installed."""
    from gateway.stores.clickhouse_engine import ClickHouseEngine
    from gateway.stores.lake import lake_sources

    return ClickHouseEngine.parquet(lake_sources(root, experiment).outcomes)
