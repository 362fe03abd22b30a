"""Tests for gateway.stores.redis_sink against a real 3-node Redis Cluster: throughput,
exactly-once delivery when the node that owns an experiment's slot is killed and restarted,
and the label indexes following the streams' retention."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis_index_checks import assert_indexes_match_stream
from redis_servers import RedisClusterServers, outcome, stream_ids, until
from structlog.testing import capture_logs

from gateway.outcomes.record import OutcomeRecord
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.redis_client import connect
from gateway.stores.redis_sink import RedisSink

KEYS = RedisKeys(prefix="ctest")
# Experiment ids whose hash tags fall on different nodes of a 3-node cluster (checked below).
EXPERIMENTS = ("checkout", "search", "support", "billing", "onboarding", "returns")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """Three cluster primaries with fsync-always AOFs, so a restarted node keeps its data."""
    with RedisClusterServers(tmp_path / "cluster") as running:
        yield running


@pytest.fixture
async def client(cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    async with RedisCluster.from_url(cluster.url) as redis:
        yield redis


def new_sink(cluster: RedisClusterServers, journal_dir: Path, **options: Any) -> RedisSink:
    options.setdefault("backoff_max_s", 0.5)  # tests wait for recoveries: probe often
    factory = functools.partial(connect, cluster.url, cluster=True)
    return RedisSink(factory, KEYS, journal_dir, **options)


def make_records(total: int) -> list[OutcomeRecord]:
    return [outcome(n, EXPERIMENTS[n % len(EXPERIMENTS)]) for n in range(total)]


async def assert_stored_once_in_order(
    client: RedisCluster, submitted: Sequence[OutcomeRecord]
) -> None:
    """Each experiment's stream holds exactly its submitted records, in submission order."""
    for experiment in EXPERIMENTS:
        expected = [r.record_id for r in submitted if r.experiment == experiment]
        assert await stream_ids(client, KEYS.outcomes(experiment)) == expected


def test_experiments_are_spread_over_the_nodes(cluster: RedisClusterServers) -> None:
    """The test experiments' slots are served by every node, so all nodes take writes."""
    owners = {cluster.node_for_key(KEYS.outcomes(e)).port for e in EXPERIMENTS}
    assert len(owners) == 3


async def test_100k_records_to_a_cluster_arrive_once_in_order(
    tmp_path: Path, cluster: RedisClusterServers, client: RedisCluster
) -> None:
    """100,000 records from 20 tasks land once each, in order, in streams on all 3 nodes."""
    records = make_records(100_000)
    # close_timeout_s: on a loaded machine draining 100k may take longer than the default.
    sink = new_sink(cluster, tmp_path / "journal", queue_size=100_000, close_timeout_s=120)
    submitted: list[OutcomeRecord] = []

    async def produce(chunk: Sequence[OutcomeRecord]) -> None:
        for record in chunk:
            sink.submit(record)
            submitted.append(record)
            await asyncio.sleep(0)

    await sink.start()
    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for task in range(20):
            group.create_task(produce(records[task * 5000 : (task + 1) * 5000]))
    await sink.close()
    elapsed = time.perf_counter() - began
    print(f"\nRedis Cluster, live: {len(records) / elapsed:,.0f} records/s ({elapsed:.2f} s)")
    assert (sink.written, sink.dropped, sink.lost, sink.journalled) == (100_000, 0, 0, 0)
    await assert_stored_once_in_order(client, submitted)
    assert await client.smembers(KEYS.experiments) == {e.encode() for e in EXPERIMENTS}


async def test_killing_the_node_that_owns_an_experiment_loses_and_duplicates_nothing(
    tmp_path: Path, cluster: RedisClusterServers
) -> None:
    """SIGKILL the slot owner mid-stream, restart it (nodes.conf, AOF): all once, in order."""
    journal_dir = tmp_path / "journal"
    records = make_records(20_000)
    victim = cluster.node_for_key(KEYS.outcomes("checkout"))
    sink = new_sink(cluster, journal_dir)
    await sink.start()

    async def produce() -> None:
        for n, record in enumerate(records, start=1):
            sink.submit(record)
            if n % 50 == 0:
                await asyncio.sleep(0.005)

    def restart_victim() -> None:
        victim.restart()
        cluster.wait_ok()

    with capture_logs() as logs:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            await until(lambda: sink.written >= 2_000)
            victim.kill()
            await until(lambda: sink.journal_pending >= 2_000)  # spooling meanwhile
            await asyncio.to_thread(restart_victim)
        await until(lambda: sink.written == len(records), limit_s=90)
        await sink.close()

    assert (sink.dropped, sink.lost, sink.journal_pending) == (0, 0, 0)
    assert sink.delivered_from_journal >= 2_000
    assert sorted(journal_dir.glob("*.jsonl")) == []
    assert len([e for e in logs if e["event"] == "outcomes_redis_unavailable"]) == 1
    async with RedisCluster.from_url(cluster.url) as client:
        await assert_stored_once_in_order(client, records)


async def test_cluster_streams_are_readable_by_consumer_groups(
    tmp_path: Path, cluster: RedisClusterServers, client: RedisCluster
) -> None:
    """XGROUP CREATE ... 0 and XREADGROUP read each record of a cluster stream exactly once."""
    sink = new_sink(cluster, tmp_path / "journal")
    await sink.start()
    records = [outcome(n, "search") for n in range(2000)]
    for record in records:
        sink.submit(record)
    await sink.close()
    key = KEYS.outcomes("search")
    await client.xgroup_create(key, "analysis", id="0")
    read: list[str] = []
    while reply := await client.xreadgroup("analysis", "c1", {key: ">"}, count=300):
        [(_key, entries)] = reply
        for entry_id, fields in entries:
            read.append(OutcomeRecord.from_json(fields[RECORD_FIELD.encode()]).record_id)
            await client.xack(key, "analysis", entry_id)
    assert read == [r.record_id for r in records]


async def test_cluster_label_indexes_follow_the_streams_retention(
    tmp_path: Path, cluster: RedisClusterServers, client: RedisCluster
) -> None:
    """With maxlen, each experiment's records and units hashes (on the node of its slot)
    index exactly what its trimmed stream still holds: bounded, nothing in it missing."""
    sink = new_sink(
        cluster, tmp_path / "journal", maxlen=1000, queue_size=18_000, close_timeout_s=120
    )
    await sink.start()
    records = [
        dataclasses.replace(record, unit=f"{n // 10:032x}")
        for n, record in enumerate(make_records(18_000))
    ]
    for n, record in enumerate(records):
        sink.submit(record)
        if n % 500 == 0:
            await asyncio.sleep(0)
    await sink.close()
    assert (sink.written, sink.dropped, sink.lost) == (18_000, 0, 0)
    for experiment in EXPERIMENTS:
        length = await assert_indexes_match_stream(client, KEYS, experiment)
        assert 1000 <= length <= 1100
        assert await client.hlen(KEYS.records(experiment)) == length


async def test_the_persistence_check_asks_every_primary(
    tmp_path: Path, cluster: RedisClusterServers
) -> None:
    """The start-up check reads every primary's persistence: all AOF, no warning; AOF
    turned off on one node, one warning naming just that node."""
    events = ("outcomes_redis_persistent", "outcomes_redis_not_persistent")

    async def check() -> dict[str, Any]:
        with capture_logs() as logs:
            sink = new_sink(cluster, tmp_path / "journal")
            await sink.start()
            await until(lambda: any(e["event"] in events for e in logs), limit_s=30)
            await sink.close()
        [event] = [e for e in logs if e["event"] in events]
        return event

    event = await check()
    assert event["event"] == "outcomes_redis_persistent"
    assert event["nodes"] == {f"127.0.0.1:{node.port}": "aof" for node in cluster.nodes}
    volatile = cluster.nodes[1]
    with volatile.client() as admin:
        admin.config_set("appendonly", "no")
    event = await check()
    assert (event["event"], event["log_level"]) == ("outcomes_redis_not_persistent", "warning")
    assert event["nodes"] == [f"127.0.0.1:{volatile.port}"]
