"""Every store a caller outside `gateway.stores` uses fails with one error,
`StoreUnavailable`, when its Redis is down or its file cannot be read, chained to the
original failure (`gateway.stores.failures`); and `redis_client.reachable`, the readiness
PING.

The Redis tests start their own redis-server on a free port and kill it (or freeze it), so
the failures are the real ones redis-py raises.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis_servers import RedisServer, outcome

from gateway.control.ports import StoredState
from gateway.errors import StoreUnavailable
from gateway.outcomes.labels import LabelInput, UnitQuery
from gateway.stores.control_store import FileControlStore, RedisControlStore
from gateway.stores.counter_store import RedisCounterStore
from gateway.stores.file_label_store import FileLabelStore
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.reader import FileReader, RedisReader
from gateway.stores.redis_client import REDIS_ERRORS, RedisClient, client_for, reachable
from gateway.stores.redis_label_store import RedisLabelStore

Call = Callable[[], Awaitable[Any]]
STATE = StoredState(1, '{"weights": {}}')


@pytest.fixture(scope="module")
def down_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a redis-server that was started and killed: nothing listens there."""
    with RedisServer(tmp_path_factory.mktemp("redis-down")) as server:
        pass
    url: str = server.url
    return url


@pytest.fixture
async def down(down_url: str) -> AsyncIterator[RedisClient]:
    client = client_for(down_url, cluster=False, socket_timeout=0.5)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


async def assert_unavailable(
    call: Call, operation: str, cause: tuple[type[BaseException], ...]
) -> None:
    """`call` raises StoreUnavailable naming `operation`, chained to one of `cause`."""
    with pytest.raises(StoreUnavailable) as caught:
        await call()
    assert isinstance(caught.value.__cause__, cause), repr(caught.value.__cause__)
    assert caught.value.reason.startswith(f"{operation}: "), caught.value.reason
    assert caught.value.status == 503


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


def label() -> list[LabelInput]:
    return [LabelInput(outcome(1).record_id, "a label")]


def query() -> list[UnitQuery]:
    return [UnitQuery("5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b", 0, None)]


# -- Redis down -----------------------------------------------------------------------------


async def test_the_redis_reader_fails_with_store_unavailable(down: RedisClient) -> None:
    reader = RedisReader(down, RedisKeys("test"))
    await assert_unavailable(
        lambda: collect(reader.outcomes("checkout")), "RedisReader.outcomes", REDIS_ERRORS
    )
    await assert_unavailable(lambda: reader.labels("checkout"), "RedisLabelStore.all", REDIS_ERRORS)
    await assert_unavailable(reader.experiments, "RedisLabelStore.experiments", REDIS_ERRORS)


async def test_the_redis_label_store_fails_with_store_unavailable(down: RedisClient) -> None:
    store = RedisLabelStore(down, RedisKeys("test"))
    calls: dict[str, Call] = {
        "put": lambda: store.put(label(), "alice", "api"),
        "get": lambda: store.get([outcome(1).record_id]),
        "all": lambda: store.all("checkout"),
        "find_units": lambda: store.find_units(query()),
        "locate": lambda: store.locate([outcome(1).record_id]),
        "experiments": store.experiments,
    }
    for name, call in calls.items():
        # The outer method's name, or that of the method it called first that failed.
        with pytest.raises(StoreUnavailable) as caught:
            await call()
        assert isinstance(caught.value.__cause__, REDIS_ERRORS), name
        assert caught.value.reason.startswith("RedisLabelStore."), caught.value.reason


async def test_the_redis_control_store_fails_with_store_unavailable(down: RedisClient) -> None:
    store = RedisControlStore(down, "test")
    calls: dict[str, Call] = {
        "load": store.load,
        "versions": store.versions,
        "commit": lambda: store.commit("checkout", 0, STATE, "{}"),
        "audit": lambda: store.audit("checkout", 10),
        "restore": lambda: store.restore({"checkout": STATE}),
    }
    for name, call in calls.items():
        await assert_unavailable(call, f"RedisControlStore.{name}", REDIS_ERRORS)


async def test_the_redis_counter_store_fails_with_store_unavailable(down: RedisClient) -> None:
    store = RedisCounterStore(down, "test")
    calls: dict[str, Call] = {
        "add_many": lambda: store.add("checkout", "1", "base", {"n": 1}),
        "read": lambda: store.read("checkout", "1"),
        "add_units": lambda: store.add_units({("checkout", "1", "base", "u"): {"n": 1}}),
    }
    for name, call in calls.items():
        await assert_unavailable(call, f"RedisCounterStore.{name}", REDIS_ERRORS)


async def test_a_refusal_that_is_no_outage_is_not_translated(server: RedisServer) -> None:
    """A key of the wrong type is Redis answering, not Redis away: it stays the RedisError
    it is, as every error but the outage ones does."""
    async with Redis.from_url(server.url) as client:
        keys = RedisKeys("test-wrongtype")
        await client.set(keys.guard("checkout", "1"), "not a hash")
        store = RedisCounterStore(client, keys.prefix)
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await store.read("checkout", "1")


async def test_a_redis_lost_in_the_middle_of_a_read_fails_the_iteration(
    tmp_path: Path,
) -> None:
    """The reader pages through the stream; a Redis that dies between two pages raises
    StoreUnavailable from the iteration itself."""
    with RedisServer(tmp_path / "redis") as server:
        keys = RedisKeys("test-lost")
        async with Redis.from_url(server.url) as admin:
            for n in range(3):
                await admin.xadd(keys.outcomes("checkout"), {RECORD_FIELD: outcome(n).to_json()})
        client = client_for(server.url, cluster=False, socket_timeout=0.5)
        try:
            records = RedisReader(client, keys, page=1).outcomes("checkout")
            first = await anext(records)
            assert first.record_id == outcome(0).record_id
            server.kill()
            with pytest.raises(StoreUnavailable) as caught:
                await anext(records)
            assert isinstance(caught.value.__cause__, REDIS_ERRORS)
            await records.aclose()
        finally:
            await client.aclose()


# -- files that cannot be read --------------------------------------------------------------


async def test_an_unreadable_control_state_file_is_store_unavailable(tmp_path: Path) -> None:
    """A state path that is a directory: every call fails with StoreUnavailable (OSError)."""
    (tmp_path / "control.json").mkdir()
    store = FileControlStore(tmp_path / "control.json")
    calls: dict[str, Call] = {
        "load": store.load,
        "versions": store.versions,
        "commit": lambda: store.commit("checkout", 0, STATE, "{}"),
        "restore": lambda: store.restore({"checkout": STATE}),
    }
    for name, call in calls.items():
        await assert_unavailable(call, f"FileControlStore.{name}", (OSError,))
    store.audit_path.unlink(missing_ok=True)  # the commit created it before it failed
    store.audit_path.mkdir()
    await assert_unavailable(
        lambda: store.audit("checkout", 10), "FileControlStore.audit", (OSError,)
    )


async def test_an_unreadable_label_file_is_store_unavailable(tmp_path: Path) -> None:
    outcomes, labels = tmp_path / "outcomes.jsonl", tmp_path / "labels.jsonl"
    outcomes.write_text(outcome(1).to_json() + "\n")
    labels.mkdir()
    store = FileLabelStore(outcomes, labels)
    calls: dict[str, Call] = {
        "put": lambda: store.put(label(), "alice", "api"),
        "get": lambda: store.get([outcome(1).record_id]),
        "all": lambda: store.all("checkout"),
    }
    for name, call in calls.items():
        await assert_unavailable(call, f"FileLabelStore.{name}", (OSError,))


async def test_an_unreadable_outcome_file_is_store_unavailable(tmp_path: Path) -> None:
    """An outcome path that cannot be read fails the label store's lookups and the reader;
    a missing one stays FileNotFoundError for the reader (no records yet, not an outage)."""
    outcomes, labels = tmp_path / "outcomes.jsonl", tmp_path / "labels.jsonl"
    outcomes.mkdir()
    store = FileLabelStore(outcomes, labels)
    await assert_unavailable(
        lambda: store.find_units(query()), "FileLabelStore.find_units", (OSError,)
    )
    await assert_unavailable(
        lambda: store.experiment_of(outcome(1).record_id),
        "FileLabelStore.experiment_of",
        (OSError,),
    )
    reader = FileReader(outcomes, labels)
    await assert_unavailable(
        lambda: collect(reader.outcomes("checkout")), "FileReader.outcomes", (OSError,)
    )
    await assert_unavailable(reader.experiments, "FileReader.experiments", (OSError,))
    missing = FileReader(tmp_path / "absent.jsonl", labels)
    with pytest.raises(FileNotFoundError):
        await collect(missing.outcomes("checkout"))
    with pytest.raises(FileNotFoundError):
        await missing.experiments()


async def test_a_file_failing_in_the_middle_of_a_read_fails_the_iteration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error after the first batch is raised from the iteration as StoreUnavailable,
    and the file is closed."""
    outcomes = tmp_path / "outcomes.jsonl"
    outcomes.write_text("".join(outcome(n).to_json() + "\n" for n in range(3)))
    reader = FileReader(outcomes, tmp_path / "labels.jsonl")
    batches = 0
    real = FileReader._read_batch

    def failing(self: FileReader, file: Any, first: int) -> Any:
        nonlocal batches
        batches += 1
        if batches > 1:
            raise OSError(5, "Input/output error")
        return real(self, file, first)[:1]  # a short batch would end the iteration

    monkeypatch.setattr(FileReader, "_read_batch", failing)
    monkeypatch.setattr("gateway.stores.reader._FILE_BATCH", 1)
    records = reader.outcomes("checkout")
    assert (await anext(records)).record_id == outcome(0).record_id
    with pytest.raises(StoreUnavailable, match="Input/output error") as caught:
        await anext(records)
    assert isinstance(caught.value.__cause__, OSError)


# -- readiness ------------------------------------------------------------------------------


async def test_reachable_answers_a_ping(server: RedisServer, down: RedisClient) -> None:
    async with Redis.from_url(server.url) as client:
        assert await reachable(client, 1.0)
    assert not await reachable(down, 1.0)


async def test_a_frozen_redis_is_unreachable_within_the_timeout(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        client = client_for(server.url, cluster=False)
        try:
            assert await reachable(client, 1.0)
            server.stop()
            started = time.monotonic()
            assert not await reachable(client, 0.3)
            assert time.monotonic() - started < 1.5
        finally:
            server.cont()
            await client.aclose()


async def test_a_redis_that_refuses_the_ping_is_unreachable(tmp_path: Path) -> None:
    """A password the client lacks: Redis answers, but not with PONG."""
    with RedisServer(tmp_path / "redis", extra_args=("--requirepass", "secret")) as server:
        client = client_for(server.url, cluster=False)
        try:
            assert not await reachable(client, 1.0)
        finally:
            await client.aclose()
