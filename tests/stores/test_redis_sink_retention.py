"""Tests for gateway.stores.redis_sink and its script (gateway.stores.redis_sink_script)
against a real redis-server: the `records` and `units` hashes (the label indexes) follow the
stream's retention, so their memory is bounded, and they index exactly what the stream still
holds, also with several sinks (replicas)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis_index_checks import assert_indexes_match_stream, stream_entries
from redis_servers import RedisServer, outcome

from gateway.outcomes.record import OutcomeRecord
from gateway.stores.keys import RedisKeys
from gateway.stores.redis_client import connect
from gateway.stores.redis_sink import RedisSink
from gateway.stores.redis_sink_script import TRIM_PER_CALL, TRIM_PER_RECORD

KEYS = RedisKeys(prefix="retention")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as running:
        yield running


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    async with Redis.from_url(server.url) as redis:
        yield redis


def new_sink(url: str, journal_dir: Path, **options: Any) -> RedisSink:
    return RedisSink(functools.partial(connect, url, cluster=False), KEYS, journal_dir, **options)


def records(total: int, start: int = 0, experiment: str = "checkout") -> list[OutcomeRecord]:
    """Primary utterance records, ten per unit (utterance indexes 0-9): each record has its
    own entry in the units hash, as live traffic has."""
    return [
        dataclasses.replace(outcome(n, experiment), unit=f"{n // 10:032x}")
        for n in range(start, start + total)
    ]


async def memory(client: Redis, experiment: str = "checkout") -> dict[str, int]:
    """MEMORY USAGE (bytes, all elements sampled) of the experiment's label indexes."""
    sizes: dict[str, int] = {}
    for name, key in (
        ("records", KEYS.records(experiment)),
        ("units", KEYS.units(experiment)),
        ("indexed", KEYS.indexed(experiment)),
    ):
        sizes[name] = int(await client.memory_usage(key, samples=0) or 0)
    return sizes


async def deliver_all(sink: RedisSink, batch: list[OutcomeRecord], size: int = 500) -> None:
    for start in range(0, len(batch), size):
        await sink.deliver(batch[start : start + size])


async def test_with_maxlen_the_hashes_memory_stays_bounded(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """30,000 records through a stream of maxlen 1,000: the records and units hashes (and
    the list behind their trimming) hold only what the stream holds, and use as much memory
    after 30,000 records as after 3,000 (within 25 %), not ten times as much."""
    async with new_sink(server.url, tmp_path / "journal", maxlen=1000) as sink:
        await deliver_all(sink, records(3_000))
        early_length = await assert_indexes_match_stream(client, KEYS, "checkout")
        early = await memory(client)
        await deliver_all(sink, records(27_000, start=3_000))
    length = await assert_indexes_match_stream(client, KEYS, "checkout")
    late = await memory(client)
    print(f"\nafter 3,000 records: {early}; after 30,000: {late} (bytes)")
    assert 1000 <= early_length <= 1100  # MAXLEN ~ trims whole macro nodes of 100 entries
    assert 1000 <= length <= 1100
    assert await client.hlen(KEYS.records("checkout")) == length
    assert await client.hlen(KEYS.units("checkout")) == length
    for name, size in late.items():
        assert size <= 1.25 * early[name], name
    # The newest records are all still indexed: nothing inside retention was lost.
    ids = [rid for _entry, rid, _field in await stream_entries(client, KEYS.outcomes("checkout"))]
    assert ids == [r.record_id for r in records(length, start=30_000 - length)]


async def test_with_retention_s_the_hashes_forget_what_aged_out(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """retention_s (MINID ~): waves of records age out; after every write the hashes index
    exactly the stream, and once the aged-out records are trimmed (a bounded number per
    write) only the newest writes are left in both."""
    async with new_sink(server.url, tmp_path / "journal", min_id_age_s=0.3) as sink:
        for wave in range(4):
            await deliver_all(sink, records(2_000, start=wave * 2_000))
            assert await assert_indexes_match_stream(client, KEYS, "checkout") >= 2_000
            await asyncio.sleep(0.4)  # this wave ages past the retention
        for call in range(3):  # 2,000 aged out; each call trims up to 2 * 10 + 1,000
            await sink.deliver(records(10, start=8_000 + 10 * call))
            assert await assert_indexes_match_stream(client, KEYS, "checkout") >= 10
    length = await assert_indexes_match_stream(client, KEYS, "checkout")
    assert length <= 30 + 100  # MINID ~ trims whole macro nodes of 100 entries
    assert await client.hlen(KEYS.records("checkout")) == length


async def test_the_hashes_follow_any_trim_of_the_stream_exactly(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """An operator's exact XTRIM, or DEL of the stream: the next write leaves the hashes
    indexing exactly what the stream still holds, down to the entry."""
    stream = KEYS.outcomes("checkout")
    async with new_sink(server.url, tmp_path / "journal") as sink:
        await sink.deliver(records(100))
        entries = await stream_entries(client, stream)
        await client.xtrim(stream, minid=entries[37][0], approximate=False)  # keeps records 37..99
        await sink.deliver(records(1, start=100))
        assert await assert_indexes_match_stream(client, KEYS, "checkout") == 64
        assert not await client.hexists(KEYS.records("checkout"), records(1, start=36)[0].record_id)
        assert await client.hexists(KEYS.records("checkout"), records(1, start=37)[0].record_id)
        await client.delete(stream)
        await sink.deliver(records(1, start=101))
    assert await assert_indexes_match_stream(client, KEYS, "checkout") == 1


async def test_a_record_stored_again_keeps_its_newer_entry_when_the_older_one_goes(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """A record stored again after its dedup window has two entries: trimming the older one
    keeps the record indexed (at its newer entry); trimming that one forgets it."""
    stream = KEYS.outcomes("checkout")
    again = records(1)[0]
    async with new_sink(server.url, tmp_path / "journal", dedup_window_s=0.1) as sink:
        await sink.deliver(records(10))
        await asyncio.sleep(0.2)  # past the dedup window...
        await sink.deliver(records(1, start=20))  # ...which a write then applies
        assert await sink.deliver([again]) == 1  # record 0 is new to Redis again
        entries = await stream_entries(client, stream)
        await client.xtrim(
            stream, minid=entries[1][0], approximate=False
        )  # drops record 0's older entry
        await sink.deliver(records(1, start=10))
        newer = entries[-1][0]
        assert await client.hget(KEYS.records("checkout"), again.record_id) == newer.encode()
        units = await client.hget(KEYS.units("checkout"), f"{0:032x}:0")
        assert units == again.record_id.encode()
        await client.xtrim(
            stream, minid=(await stream_entries(client, stream))[-1][0], approximate=False
        )
        await sink.deliver(records(1, start=11))
    assert not await client.hexists(KEYS.records("checkout"), again.record_id)
    assert not await client.hexists(KEYS.units("checkout"), f"{0:032x}:0")
    assert await assert_indexes_match_stream(client, KEYS, "checkout") == 2


async def test_units_entries_lose_only_the_trimmed_ids(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """A unit's entry lists every session's record for one utterance index: trimming the
    oldest sessions removes just their ids, and the entry goes when its last id goes."""
    stream = KEYS.outcomes("checkout")
    unit = "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b"
    sessions = [dataclasses.replace(outcome(n), unit=unit, utterance_index=0) for n in range(4)] + [
        dataclasses.replace(outcome(4), unit="another", utterance_index=0)
    ]
    async with new_sink(server.url, tmp_path / "journal") as sink:
        await sink.deliver(sessions)
        entries = await stream_entries(client, stream)
        await client.xtrim(stream, minid=entries[2][0], approximate=False)
        await sink.deliver(records(1, start=100))
        assert (await client.hget(KEYS.units("checkout"), f"{unit}:0")) == " ".join(
            r.record_id for r in sessions[2:4]
        ).encode()
        await client.xtrim(stream, minid=entries[4][0], approximate=False)
        await sink.deliver(records(1, start=101))
        assert not await client.hexists(KEYS.units("checkout"), f"{unit}:0")
        assert await client.hexists(KEYS.units("checkout"), "another:0")
    await assert_indexes_match_stream(client, KEYS, "checkout")


async def test_forgetting_a_large_backlog_is_spread_over_later_writes(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """One script call removes a bounded number of records from the hashes (never a stall
    of Redis), at least twice what it writes, so later writes catch up with the backlog."""
    async with new_sink(server.url, tmp_path / "journal") as sink:
        await deliver_all(sink, records(5_000))
        await client.delete(KEYS.outcomes("checkout"))  # the whole stream is gone at once
        await sink.deliver(records(1, start=5_000))
        budget = TRIM_PER_RECORD + TRIM_PER_CALL
        assert await client.hlen(KEYS.records("checkout")) == 5_000 - budget + 1
        calls = 1
        while await client.hlen(KEYS.records("checkout")) > calls:
            await sink.deliver(records(1, start=5_000 + calls))
            calls += 1
        assert calls == -(-5_000 // budget)  # each call forgets up to `budget` old ones
    assert await assert_indexes_match_stream(client, KEYS, "checkout") == calls


async def test_replicas_writing_one_stream_keep_the_hashes_consistent(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """Three sinks (three gateway replicas) write the same experiments at once through a
    trimmed stream: the hashes index exactly each stream, and every record the stream still
    holds is indexed."""
    experiments = ("checkout", "search")
    sinks = [new_sink(server.url, tmp_path / f"journal-{n}", maxlen=1000) for n in range(3)]
    for sink in sinks:
        await sink.start()

    async def produce(replica: int) -> None:
        for n in range(replica * 6_000, (replica + 1) * 6_000):
            sinks[replica].submit(records(1, start=n, experiment=experiments[n % 2])[0])
            if n % 100 == 0:
                await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:
        for replica in range(3):
            group.create_task(produce(replica))
    for sink in sinks:
        await sink.close()
    assert sum(sink.written for sink in sinks) == 18_000
    for experiment in experiments:
        length = await assert_indexes_match_stream(client, KEYS, experiment)
        assert 1000 <= length <= 1100
