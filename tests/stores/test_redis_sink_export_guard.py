"""Tests for the export guard of gateway.stores.redis_sink (its script,
gateway.stores.redis_sink_script) against the shared Redis (own key prefix): while an outcome
stream has the export consumer group, retention (MAXLEN and age) never trims an entry the
group has not acknowledged, says so (log and metric), and catches up once it has."""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis
from redis_servers import outcome

from gateway.server.metrics import GatewayMetrics
from gateway.stores.keys import EXPORT_GROUP, RedisKeys
from gateway.stores.redis_client import connect
from gateway.stores.redis_sink import RedisSink

URL = "redis://127.0.0.1:6379"


@pytest.fixture
async def keys() -> AsyncIterator[RedisKeys]:
    keys = RedisKeys(prefix=f"test-guard-{secrets.token_hex(4)}")
    yield keys
    async with Redis.from_url(URL) as client:
        found = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
        if found:
            await client.delete(*found)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    async with Redis.from_url(URL) as redis:
        yield redis


@pytest.fixture
async def sinks() -> AsyncIterator[list[RedisSink]]:
    """The sinks a test makes, closed after it (their Redis clients with them)."""
    made: list[RedisSink] = []
    yield made
    for sink in made:
        await sink.close()


def new_sink(made: list[RedisSink], keys: RedisKeys, journal: Path, **options: Any) -> RedisSink:
    sink = RedisSink(functools.partial(connect, URL, cluster=False), keys, journal, **options)
    made.append(sink)
    return sink


async def write(sink: RedisSink, start: int, count: int, batch: int = 100) -> None:
    for first in range(start, start + count, batch):
        await sink.deliver([outcome(n) for n in range(first, min(first + batch, start + count))])


async def read_group(client: Redis, key: str, count: int) -> list[bytes]:
    """Deliver `count` new entries to the group (unacknowledged); their entry ids."""
    reply = await client.xreadgroup(EXPORT_GROUP, "test", {key: ">"}, count=count)
    return [entry_id for entry_id, _fields in reply[0][1]] if reply else []


async def test_retention_keeps_what_the_export_group_has_not_read(
    keys: RedisKeys, client: Redis, sinks: list[RedisSink], tmp_path: Path
) -> None:
    """With the group and nothing read, MAXLEN trims nothing and the sink reports that
    retention waits; once the group acknowledged everything, the next writes trim."""
    sink = new_sink(sinks, keys, tmp_path / "journal", maxlen=100)
    key = keys.outcomes("checkout")
    await write(sink, 0, 100)
    await client.xgroup_create(key, EXPORT_GROUP, id="0")
    with structlog.testing.capture_logs() as logs:
        await write(sink, 100, 900)
    assert await client.xlen(key) == 1000
    assert sink.retention_waiting == frozenset({"checkout"})
    metrics = GatewayMetrics()
    metrics.watch_sink(sink)
    gauge = "speech_gateway_outcome_retention_waiting"
    assert metrics.registry.get_sample_value(gauge) == 1
    waiting = [e for e in logs if e["event"] == "outcomes_retention_waiting_for_export"]
    assert len(waiting) == 1  # once, not per write
    assert waiting[0]["experiment"] == "checkout"

    ids = await read_group(client, key, 1000)
    await client.xack(key, EXPORT_GROUP, *ids)
    with structlog.testing.capture_logs() as logs:
        await write(sink, 1000, 100)
    assert await client.xlen(key) < 300  # MAXLEN ~ 100: whole nodes of 100 entries
    assert sink.retention_waiting == frozenset()
    assert metrics.registry.get_sample_value(gauge) == 0
    assert [e["event"] for e in logs if e["event"].startswith("outcomes_retention")] == [
        "outcomes_retention_resumed"
    ]


async def test_pending_entries_are_kept_until_acknowledged(
    keys: RedisKeys, client: Redis, sinks: list[RedisSink], tmp_path: Path
) -> None:
    """Entries delivered to the group but not acknowledged (an exporter that crashed) are
    kept, and so is everything after the first of them; acknowledged ones before it go."""
    sink = new_sink(sinks, keys, tmp_path / "journal", maxlen=100)
    key = keys.outcomes("checkout")
    await write(sink, 0, 1000)  # no group yet: trimmed as always
    assert await client.xlen(key) < 300
    await client.xgroup_create(key, EXPORT_GROUP, id="0")
    delivered = await read_group(client, key, 10_000)
    first_pending = delivered[len(delivered) // 2]
    await client.xack(key, EXPORT_GROUP, *delivered[: len(delivered) // 2])
    await write(sink, 1000, 1000)
    entries = await client.xrange(key, "-", "+")
    kept = [entry_id for entry_id, _ in entries]
    assert first_pending in kept
    assert all(entry_id in kept for entry_id in delivered[len(delivered) // 2 :])
    assert sink.retention_waiting == frozenset({"checkout"})
    await client.xack(key, EXPORT_GROUP, *delivered[len(delivered) // 2 :])
    for entry_id in await read_group(client, key, 10_000):
        await client.xack(key, EXPORT_GROUP, entry_id)
    await write(sink, 2000, 100)
    assert await client.xlen(key) < 300
    assert first_pending not in [entry_id for entry_id, _ in await client.xrange(key, "-", "+")]


async def test_age_retention_waits_for_the_group_too(
    keys: RedisKeys, client: Redis, sinks: list[RedisSink], tmp_path: Path
) -> None:
    """MINID retention (outcomes.retention_s) keeps unexported entries as well: with a 1 ms
    age, every earlier entry is due at the next write, yet none the group lacks is trimmed."""
    sink = new_sink(sinks, keys, tmp_path / "journal", min_id_age_s=0.001)
    key = keys.outcomes("checkout")
    await client.xgroup_create(key, EXPORT_GROUP, id="0", mkstream=True)
    await write(sink, 0, 500)
    await write(sink, 500, 1)
    assert await client.xlen(key) == 501
    assert sink.retention_waiting == frozenset({"checkout"})
    for entry_id in await read_group(client, key, 10_000):
        await client.xack(key, EXPORT_GROUP, entry_id)
    # Each later write finds the earlier entries at least 1 ms old (Redis TIME) and may trim
    # them now; write until it has (a condition, not a wait: each write is a new chance).
    for n in range(501, 600):
        await write(sink, n, 1)
        if await client.xlen(key) < 200:
            break
    assert await client.xlen(key) < 200
    assert sink.retention_waiting == frozenset()
