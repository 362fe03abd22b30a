"""Tests for gateway.stores.counter_store: guardrail counts summed in process and in a real
redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis_servers import RedisServer

from gateway.control.ports import CounterStore
from gateway.errors import StoreUnavailable
from gateway.stores.counter_store import LocalCounterStore, RedisCounterStore, guard_key, units_key
from gateway.stores.redis_client import REDIS_ERRORS, client_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the module; each test uses its own key prefix."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    async with Redis.from_url(server.url) as redis:
        yield redis


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"test-{request.node.name}"


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest, prefix: str) -> CounterStore:
    if request.param == "local":
        return LocalCounterStore()
    return RedisCounterStore(request.getfixturevalue("client"), prefix)


async def test_add_sums_per_variant_and_field(store: CounterStore) -> None:
    """Each add increments the variant's fields; read returns variant -> field -> sum."""
    await store.add("checkout", "1", "base", {"n": 3, "error": 1})
    await store.add("checkout", "1", "base", {"n": 2, "lat.17": 2})
    await store.add("checkout", "1", "challenger", {"n": 1, "error": -1})
    assert await store.read("checkout", "1") == {
        "base": {"n": 5, "error": 1, "lat.17": 2},
        "challenger": {"n": 1, "error": -1},
    }


async def test_add_many_keeps_experiments_and_phases_apart(store: CounterStore) -> None:
    """One add_many adds to many (experiment, phase, variant); read sees one phase only."""
    await store.add_many(
        {
            ("checkout", "1", "base"): {"n": 1},
            ("checkout", "1", "challenger"): {"n": 2},
            ("checkout", "2", "base"): {"n": 4, "error": 2},
            ("search", "1", "base"): {"n": 8},
        }
    )
    await store.add_many({("checkout", "2", "base"): {"n": 1}})
    await store.add_many({})
    assert await store.read("checkout", "1") == {"base": {"n": 1}, "challenger": {"n": 2}}
    assert await store.read("checkout", "2") == {"base": {"n": 5, "error": 2}}
    assert await store.read("search", "1") == {"base": {"n": 8}}
    assert await store.read("search", "2") == {}


async def test_a_field_name_may_hold_the_separator_a_variant_may_not(store: CounterStore) -> None:
    """The hash field is "<variant>|<field>": a field may contain "|", a variant is refused."""
    await store.add("checkout", "1", "base", {"lat|17": 1})
    assert await store.read("checkout", "1") == {"base": {"lat|17": 1}}
    with pytest.raises(ValueError, match="variant"):
        await store.add_many({("checkout", "1", "base"): {"n": 1}, ("checkout", "1", "a|b"): {}})
    assert await store.read("checkout", "1") == {"base": {"lat|17": 1}}  # nothing of the batch


async def test_the_local_store_returns_copies() -> None:
    """What read returns is the caller's: changing it changes no count."""
    store = LocalCounterStore()
    await store.add("checkout", "1", "base", {"n": 1})
    (await store.read("checkout", "1"))["base"]["n"] = 99
    assert await store.read("checkout", "1") == {"base": {"n": 1}}


async def test_redis_counters_are_one_hash_per_phase_with_a_ttl(client: Redis, prefix: str) -> None:
    """A phase's counts live in one hash under the experiment's hash tag, expiring `ttl_s`
    after the last write."""
    store = RedisCounterStore(client, prefix, ttl_s=3600)
    await store.add("checkout", "1", "base", {"n": 2})
    key = guard_key(prefix, "checkout", "1")
    assert key == f"{prefix}:{{checkout}}:guard:1"
    assert await client.hgetall(key) == {b"base|n": b"2"}
    assert 3_500_000 < await client.pttl(key) <= 3_600_000
    await client.pexpire(key, 10_000)
    await store.add("checkout", "1", "challenger", {"n": 1})
    assert await client.pttl(key) > 3_500_000  # refreshed by the write


async def test_redis_prefixes_isolate_deployments(client: Redis, prefix: str) -> None:
    """Two stores with different prefixes on one Redis never see each other's counts."""
    blue = RedisCounterStore(client, f"{prefix}-blue")
    green = RedisCounterStore(client, f"{prefix}-green")
    await blue.add("checkout", "1", "base", {"n": 1})
    await green.add("checkout", "1", "base", {"n": 10})
    assert await blue.read("checkout", "1") == {"base": {"n": 1}}
    assert await green.read("checkout", "1") == {"base": {"n": 10}}


async def test_a_foreign_field_in_the_hash_is_an_error(client: Redis, prefix: str) -> None:
    """A field the store did not write ("<variant>|<field>" -> integer) is reported, not guessed."""
    store = RedisCounterStore(client, prefix)
    await client.hset(guard_key(prefix, "checkout", "1"), "no-separator", "1")
    with pytest.raises(ValueError, match="no-separator"):
        await store.read("checkout", "1")


async def test_redis_unavailable_propagates(tmp_path: Path) -> None:
    """With Redis down, add_many and read raise StoreUnavailable, caused by one of
    REDIS_ERRORS (the caller retries)."""
    with RedisServer(tmp_path / "redis") as down:
        pass  # started and killed: a port nothing listens on any more
    client = client_for(down.url, cluster=False, socket_timeout=0.5)
    try:
        store = RedisCounterStore(client, "test")
        with pytest.raises(StoreUnavailable) as adding:
            await store.add_many({("checkout", "1", "base"): {"n": 1}})
        assert isinstance(adding.value.__cause__, REDIS_ERRORS)
        with pytest.raises(StoreUnavailable) as reading:
            await store.read("checkout", "1")
        assert isinstance(reading.value.__cause__, REDIS_ERRORS)
    finally:
        await client.aclose()


async def test_a_ttl_must_be_positive(client: Redis) -> None:
    """A zero or negative TTL is refused when the store is made."""
    for ttl_s in (0, -1.0):
        with pytest.raises(ValueError, match="ttl_s"):
            RedisCounterStore(client, "test", ttl_s=ttl_s)


async def test_add_units_returns_each_units_counts_after_the_addition(
    store: CounterStore,
) -> None:
    """Per-unit counts grow per (experiment, phase, variant, unit); a 0 delta reads the
    current count, which is what the arm's sums of squares need."""
    first = await store.add_units(
        {
            ("checkout", "1", "base", "u1"): {"n": 2, "error": 1},
            ("checkout", "1", "base", "u|2"): {"n": 1, "error": 0},
            ("checkout", "1", "challenger", "u1"): {"n": 1},
        }
    )
    assert first == {
        ("checkout", "1", "base", "u1"): {"n": 2, "error": 1},
        ("checkout", "1", "base", "u|2"): {"n": 1, "error": 0},
        ("checkout", "1", "challenger", "u1"): {"n": 1},
    }
    again = await store.add_units(
        {("checkout", "1", "base", "u1"): {"n": 1, "error": 0}, ("search", "1", "b", "u1"): {}}
    )
    assert again == {("checkout", "1", "base", "u1"): {"n": 3, "error": 1}}
    assert await store.read("checkout", "1") == {}  # the arm counts are apart
    with pytest.raises(ValueError, match="variant"):
        await store.add_units({("checkout", "1", "a|b", "u1"): {"n": 1}})


async def test_redis_unit_counters_are_one_hash_per_phase_with_a_ttl(
    client: Redis, prefix: str
) -> None:
    store = RedisCounterStore(client, prefix, ttl_s=3600)
    await store.add_units({("checkout", "1", "base", "u|1"): {"n": 2}})
    key = units_key(prefix, "checkout", "1")
    assert key == f"{prefix}:{{checkout}}:guard:1:units"
    assert await client.hgetall(key) == {b"base|n|u|1": b"2"}
    assert 3_500_000 < await client.pttl(key) <= 3_600_000


async def test_concurrent_unit_additions_each_see_a_consistent_count(
    client: Redis, prefix: str
) -> None:
    """Two replicas adding to one unit at once: the transaction keeps each reply the count
    right after that replica's own addition, so the replies are all different."""
    replicas = [RedisCounterStore(client, prefix) for _ in range(2)]
    replies = await asyncio.gather(
        *(
            replica.add_units({("checkout", "1", "base", "u1"): {"n": 1, "error": 1}})
            for replica in replicas
            for _ in range(10)
        )
    )
    seen = sorted(reply[("checkout", "1", "base", "u1")]["n"] for reply in replies)
    assert seen == list(range(1, 21))
    assert all(
        reply[("checkout", "1", "base", "u1")]["error"]
        == reply[("checkout", "1", "base", "u1")]["n"]
        for reply in replies
    )
