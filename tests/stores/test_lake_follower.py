"""Tests for gateway.stores.lake_follower against the shared Redis (own key prefix): the
follower exports every stream entry once, acknowledges only what is in the lake, resumes a
crashed run's pending entries without duplicating them, and stops on a record it cannot read."""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import structlog
from redis.asyncio import Redis
from redis_servers import outcome

from gateway.outcomes.labels import LabelInput
from gateway.outcomes.record import InvalidRecordError
from gateway.stores.keys import EXPORT_GROUP, RECORD_FIELD, RedisKeys
from gateway.stores.lake import append_outcomes, lake_sources
from gateway.stores.lake_follower import DEFAULT_CONSUMER, LakeFollower
from gateway.stores.redis_client import connect
from gateway.stores.redis_label_store import RedisLabelStore
from gateway.stores.redis_sink import RedisSink

URL = "redis://127.0.0.1:6379"


@pytest.fixture
async def keys() -> AsyncIterator[RedisKeys]:
    keys = RedisKeys(prefix=f"test-follow-{secrets.token_hex(4)}")
    yield keys
    async with Redis.from_url(URL) as client:
        found = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
        if found:
            await client.delete(*found)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    async with Redis.from_url(URL) as redis:
        yield redis


async def store(keys: RedisKeys, journal: Path, numbers: range, experiment: str) -> None:
    """Write records `numbers` of `experiment` to its stream as the gateway does."""
    sink = RedisSink(functools.partial(connect, URL, cluster=False), keys, journal)
    try:
        await sink.deliver([outcome(n, experiment) for n in numbers])
    finally:
        await sink.close()


async def group_done(client: Redis, key: str) -> bool:
    """Whether the export group has read and acknowledged every entry of the stream."""
    groups: list[dict[str, Any]] = await client.xinfo_groups(key)
    group = next((g for g in groups if g["name"] == EXPORT_GROUP.encode()), None)
    return group is not None and group["pending"] == 0 and group["lag"] == 0


async def follow_until_done(follower: LakeFollower, client: Redis, *stream_keys: str) -> None:
    """Run the follower until the group has acknowledged every entry, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop), name="test-follower")
    try:
        async with asyncio.timeout(30):
            while not all([await group_done(client, key) for key in stream_keys]):
                if task.done():
                    break  # it failed: its exception is raised below
                await asyncio.sleep(0.02)  # polling a condition Redis holds
    finally:
        stop.set()
        await task


def exported_ids(root: Path, experiment: str) -> list[str]:
    with duckdb.connect() as con:
        files = [str(p) for p in lake_sources(root, experiment).outcomes]
        return [
            r[0] for r in con.execute("SELECT record_id FROM read_parquet(?)", [files]).fetchall()
        ]


async def test_every_entry_is_exported_once_and_acknowledged(
    keys: RedisKeys, client: Redis, tmp_path: Path
) -> None:
    """Two experiments' streams end up in their partitions, every entry once; the labels
    are exported when the follower stops; new entries after a restart are added alone."""
    await store(keys, tmp_path / "j", range(0, 300), "checkout")
    await store(keys, tmp_path / "j", range(300, 350), "search")
    labels = RedisLabelStore(client, keys)
    await labels.put([LabelInput(f"{5:032x}", "five")], "ann", "api")
    root = tmp_path / "lake"
    follower = LakeFollower(client, keys, root, batch_size=64, poll_s=0.05)
    await follow_until_done(follower, client, keys.outcomes("checkout"), keys.outcomes("search"))
    assert sorted(exported_ids(root, "checkout")) == [f"{n:032x}" for n in range(300)]
    assert sorted(exported_ids(root, "search")) == [f"{n:032x}" for n in range(300, 350)]
    assert (follower.stats.exported, follower.stats.present) == (350, 0)
    (labels_file,) = lake_sources(root, "checkout").labels
    with duckdb.connect() as con:
        assert con.execute(
            "SELECT record_id, text FROM read_parquet(?)", [str(labels_file)]
        ).fetchall() == [(f"{5:032x}", "five")]

    await store(keys, tmp_path / "j", range(350, 400), "checkout")
    again = LakeFollower(client, keys, root, batch_size=64, poll_s=0.05)
    await follow_until_done(again, client, keys.outcomes("checkout"), keys.outcomes("search"))
    assert (again.stats.exported, again.stats.present) == (50, 0)
    assert sorted(exported_ids(root, "checkout")) == [
        f"{n:032x}" for n in (*range(300), *range(350, 400))
    ]


async def test_a_restart_resumes_pending_entries_without_duplicates(
    keys: RedisKeys, client: Redis, tmp_path: Path
) -> None:
    """A run that read entries and wrote some of them to the lake but died before
    acknowledging: the next run exports the rest, adds none twice, and acknowledges all."""
    await store(keys, tmp_path / "j", range(200), "checkout")
    key = keys.outcomes("checkout")
    await client.xgroup_create(key, EXPORT_GROUP, id="0")
    reply = await client.xreadgroup(EXPORT_GROUP, DEFAULT_CONSUMER, {key: ">"}, count=150)
    assert len(reply[0][1]) == 150  # delivered, never acknowledged: the crash
    root = tmp_path / "lake"
    append_outcomes(root, [outcome(n, "checkout") for n in range(100)])  # written before it
    follower = LakeFollower(client, keys, root, batch_size=40, poll_s=0.05)
    await follow_until_done(follower, client, key)
    ids = exported_ids(root, "checkout")
    assert sorted(ids) == [f"{n:032x}" for n in range(200)]
    assert (follower.stats.exported, follower.stats.present) == (100, 100)
    assert follower.stats.acknowledged == 200


async def test_an_unreadable_record_stops_the_follower_and_stays_pending(
    keys: RedisKeys, client: Redis, tmp_path: Path
) -> None:
    """A stream entry that is not a valid record stops the follower with an error naming
    the stream and the entry; it is left unacknowledged (retention keeps it)."""
    await store(keys, tmp_path / "j", range(3), "checkout")
    key = keys.outcomes("checkout")
    bad = (await client.xadd(key, {RECORD_FIELD: '{"schema_version": 4}'})).decode()
    follower = LakeFollower(client, keys, tmp_path / "lake", poll_s=0.05)
    with pytest.raises(InvalidRecordError) as caught:
        await follower.run(asyncio.Event())
    assert f"{key} {bad}" in str(caught.value)
    pending = await client.xpending(key, EXPORT_GROUP)
    assert pending["pending"] == 4


async def test_a_failed_write_is_retried_from_the_pending_entries(
    keys: RedisKeys, client: Redis, tmp_path: Path
) -> None:
    """A batch read but not written (the directory refused the file) stays pending; the
    follower logs, backs off and, once writing works, exports that batch rather than
    leaving it pending behind newer entries."""
    await store(keys, tmp_path / "j", range(100), "checkout")
    root = tmp_path / "lake"
    (root / ".export.lock").mkdir(parents=True)  # opening the lock file fails: an OSError
    follower = LakeFollower(client, keys, root, batch_size=500, poll_s=0.05, backoff_initial_s=0.05)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(follower.run(stop), name="test-follower")
        try:
            async with asyncio.timeout(30):
                while not any(e["event"] == "export_retrying" for e in logs):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            pending = await client.xpending(keys.outcomes("checkout"), EXPORT_GROUP)
            assert pending["pending"] == 100
            (root / ".export.lock").rmdir()
            async with asyncio.timeout(30):
                while not await group_done(client, keys.outcomes("checkout")):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
    assert sorted(exported_ids(root, "checkout")) == [f"{n:032x}" for n in range(100)]
