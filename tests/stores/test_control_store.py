"""Tests for gateway.stores.control_store: versioned experiment states, their audit, and change
notifications, in a file and in real redis-server processes (killed, restarted, flushed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis_servers import RedisClusterServers, RedisServer
from structlog.testing import capture_logs

from gateway.control.ports import ControlStore, StoredState
from gateway.errors import StoreUnavailable
from gateway.stores import control_store
from gateway.stores.control_store import AUDIT_FIELD, FileControlStore, RedisControlStore
from gateway.stores.keys import ControlKeys
from gateway.stores.redis_client import client_for

PREFIX = "test"
KEYS = ControlKeys(PREFIX)


def state(version: int, weights: str = "50/50") -> StoredState:
    return StoredState(version, json.dumps({"weights": weights, "v": version}))


def audit_entry(n: int) -> str:
    return json.dumps({"by": "admin", "n": n})


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def append_text(path: Path, text: str) -> None:
    with open(path, "a") as file:
        file.write(text)


# -- both stores behind one fixture ---------------------------------------------------------

OpenStore = Callable[[], Awaitable[ControlStore]]
OpenRedisStore = Callable[[], Awaitable[RedisControlStore]]


class Stores:
    """Opens stores of one kind, as replicas would: each a new instance on the same file, or
    on its own client of the same Redis; closes them all at the end."""

    def __init__(self, where: RedisServer | Path) -> None:
        self.where = where
        self.opened: list[tuple[ControlStore, Redis | None]] = []

    async def __call__(self) -> ControlStore:
        if isinstance(self.where, Path):
            store = FileControlStore(self.where)
            self.opened.append((store, None))
            return store
        return await self.redis()

    async def redis(self) -> RedisControlStore:
        assert isinstance(self.where, RedisServer)
        client = client_for(self.where.url, cluster=False)
        assert isinstance(client, Redis)
        store = RedisControlStore(client, PREFIX)
        self.opened.append((store, client))
        return store

    async def close(self) -> None:
        for store, client in self.opened:
            await store.close()
            if client is not None:
                await client.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server with an fsync-always AOF, so a restart keeps acknowledged data."""
    with RedisServer(tmp_path / "redis", appendonly=True) as running:
        yield running


@pytest.fixture
async def open_redis_store(server: RedisServer) -> AsyncIterator[OpenRedisStore]:
    stores = Stores(server)
    yield stores.redis
    await stores.close()


@pytest.fixture(params=["file", "redis"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer | Path]:
    if request.param == "file":
        yield tmp_path / "control" / "control.json"
        return
    with RedisServer(tmp_path / "redis") as running:
        yield running


@pytest.fixture
async def open_store(where: RedisServer | Path) -> AsyncIterator[OpenStore]:
    """Opens stores of either kind (the tests that hold for both)."""
    stores = Stores(where)
    yield stores
    await stores.close()


async def next_change(changes: AsyncIterator[str], limit_s: float = 1.0) -> str:
    async with asyncio.timeout(limit_s):
        return await anext(changes)


async def until_subscribed(server: RedisServer, subscribers: int = 1) -> None:
    """Until the changes channel has `subscribers` subscribers on the server."""
    async with Redis.from_url(server.url) as admin, asyncio.timeout(10):
        while True:
            [(_channel, count)] = await admin.pubsub_numsub(KEYS.changes)
            if count >= subscribers:
                return
            await asyncio.sleep(0.01)


async def until_logged(logs: list[dict[str, Any]], event: str, limit_s: float = 10.0) -> None:
    """Until a captured log entry is `event`."""
    async with asyncio.timeout(limit_s):
        while True:
            if any(entry["event"] == event for entry in logs):
                return
            await asyncio.sleep(0.01)


# -- compare-and-set, versions, audit -------------------------------------------------------


async def test_a_first_commit_expects_version_zero(open_store: OpenStore) -> None:
    """An absent experiment has version 0: only a commit expecting 0 stores its first state."""
    store = await open_store()
    assert await store.commit("checkout", 1, state(2), audit_entry(1)) is False
    assert await store.commit("checkout", 0, state(1), audit_entry(2)) is True
    assert await store.versions() == {"checkout": 1}
    assert await store.load() == {"checkout": state(1)}
    assert await store.audit("checkout", 10) == [audit_entry(2)]


async def test_a_stale_commit_changes_nothing_and_audits_nothing(open_store: OpenStore) -> None:
    """A commit whose expected version is not the stored one leaves state and audit as they were."""
    store = await open_store()
    assert await store.commit("checkout", 0, state(1), audit_entry(1))
    assert await store.commit("checkout", 1, state(2, "90/10"), audit_entry(2))
    for expected in (0, 1, 3):
        assert not await store.commit("checkout", expected, state(7, "0/100"), audit_entry(9))
    assert await store.load() == {"checkout": state(2, "90/10")}
    assert await store.versions() == {"checkout": 2}
    assert await store.audit("checkout", 10) == [audit_entry(2), audit_entry(1)]


@pytest.mark.parametrize(("expected", "version"), [(-1, 1), (2, 2), (3, 2), (0, 2**53)])
async def test_a_commit_must_raise_the_version(
    open_store: OpenStore, expected: int, version: int
) -> None:
    """The new version must lie above the expected one (and within Lua's exact integers)."""
    store = await open_store()
    with pytest.raises(ValueError, match="expected_version"):
        await store.commit("checkout", expected, state(version), audit_entry(1))
    assert await store.versions() == {}


async def test_versions_and_load_agree(open_store: OpenStore) -> None:
    """versions() names the same experiments and versions as load()."""
    store = await open_store()
    for experiment, commits in (("checkout", 3), ("search", 1), ("support", 2)):
        for version in range(1, commits + 1):
            assert await store.commit(experiment, version - 1, state(version), audit_entry(0))
    loaded = await store.load()
    assert await store.versions() == {e: s.version for e, s in loaded.items()}
    assert await store.versions() == {"checkout": 3, "search": 1, "support": 2}
    assert loaded["checkout"] == state(3)


async def test_audit_is_newest_first_per_experiment_and_limited(open_store: OpenStore) -> None:
    """audit() returns one experiment's entries, newest first, at most `limit`."""
    store = await open_store()
    for version in range(1, 6):
        assert await store.commit("checkout", version - 1, state(version), audit_entry(version))
        assert await store.commit("search", version - 1, state(version), audit_entry(-version))
    assert await store.audit("checkout", 3) == [audit_entry(5), audit_entry(4), audit_entry(3)]
    assert await store.audit("search", 100) == [audit_entry(-v) for v in range(5, 0, -1)]
    assert await store.audit("checkout", 0) == []
    assert await store.audit("unknown", 5) == []


async def test_concurrent_commits_of_one_version_have_one_winner(open_store: OpenStore) -> None:
    """Two clients committing on the same expected version: exactly one wins, one audit entry."""
    first, second = await open_store(), await open_store()
    assert await first.commit("checkout", 0, state(1), audit_entry(0))
    for round_ in range(10):
        expected = round_ + 1
        results = await asyncio.gather(
            first.commit("checkout", expected, state(expected + 1, "a"), audit_entry(1)),
            second.commit("checkout", expected, state(expected + 1, "b"), audit_entry(2)),
        )
        assert sorted(results) == [False, True]
        winner = "a" if results[0] else "b"
        assert (await second.load())["checkout"] == state(expected + 1, winner)
    assert len(await first.audit("checkout", 100)) == 11


async def test_restore_writes_only_absent_states(
    open_store: OpenStore,
) -> None:
    """restore() writes the states the store lacks and never replaces one it holds, older
    or not (a change since the loss was acknowledged); it names the experiments it wrote."""
    store = await open_store()
    assert await store.commit("checkout", 0, state(1), audit_entry(1))
    for version in (1, 2, 3):
        assert await store.commit("search", version - 1, state(version), audit_entry(version))
    given = {"checkout": state(4, "restored"), "search": state(2, "stale"), "new": state(5)}
    assert sorted(await store.restore(given)) == ["new"]
    assert await store.load() == {
        "checkout": state(1),
        "search": state(3),
        "new": state(5),
    }
    assert await store.restore(given) == []
    with pytest.raises(ValueError, match="version 0"):
        await store.restore({"bad": state(0)})


# -- the file store -------------------------------------------------------------------------


async def test_a_new_file_store_reads_what_the_old_one_wrote(tmp_path: Path) -> None:
    """States and audit survive re-opening: a new instance on the path reads them."""
    path = tmp_path / "control.json"
    old = FileControlStore(path)
    assert await old.commit("checkout", 0, state(1), audit_entry(1))
    assert await old.commit("checkout", 1, state(2), audit_entry(2))
    new = FileControlStore(path)
    assert await new.load() == {"checkout": state(2)}
    assert await new.audit("checkout", 5) == [audit_entry(2), audit_entry(1)]
    assert await new.commit("checkout", 2, state(3), audit_entry(3))
    assert await old.versions() == {"checkout": 3}  # the old one sees the replaced file
    assert json.loads(path.read_text()) == {
        "experiments": {"checkout": {"version": 3, "document": state(3).document}}
    }


async def test_file_commits_leave_no_temporary_files(tmp_path: Path) -> None:
    """Each commit replaces the state file through a temporary file that is renamed away."""
    store = FileControlStore(tmp_path / "control.json")
    for version in range(1, 20):
        assert await store.commit("checkout", version - 1, state(version), audit_entry(version))
    assert await store.restore({"search": state(1)}) == ["search"]
    assert names_in(tmp_path) == ["control.audit.jsonl", "control.json"]


async def test_a_failed_state_write_takes_its_audit_entry_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the state file cannot be replaced, the commit raises and leaves no audit entry."""
    store = FileControlStore(tmp_path / "control.json")
    assert await store.commit("checkout", 0, state(1), audit_entry(1))
    audit_before = store.audit_path.read_bytes()

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StoreUnavailable, match="No space") as caught:
        await store.commit("checkout", 1, state(2), audit_entry(2))
    assert isinstance(caught.value.__cause__, OSError)
    monkeypatch.undo()
    assert store.audit_path.read_bytes() == audit_before
    assert await store.load() == {"checkout": state(1)}
    assert names_in(tmp_path) == ["control.audit.jsonl", "control.json"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"experiments": {"checkout": ', "not JSON"),
        (b"[]", '"experiments" object'),
        (b'{"experiments": {"checkout": {"version": "2", "document": "{}"}}}', "version"),
        (b'{"experiments": {"checkout": {"version": 0, "document": "{}"}}}', "version"),
        (b'{"experiments": {"checkout": {"version": 1, "document": {}}}}', "document"),
        (b"", "not JSON"),
    ],
)
async def test_a_corrupt_state_file_is_an_error_naming_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """A state file that is not what the store writes raises ValueError naming the path."""
    path = tmp_path / "control.json"
    path.write_bytes(content)
    store = FileControlStore(path)
    for call in (store.load(), store.versions(), store.commit("x", 0, state(1), "{}")):
        with pytest.raises(ValueError, match=problem) as raised:
            await call
        assert str(path) in str(raised.value)
    assert path.read_bytes() == content  # never overwritten


async def test_audit_reads_the_tail_past_a_torn_line(tmp_path: Path) -> None:
    """A torn last audit line (a crash mid-append) is skipped, then cut before the next append;
    a history far longer than one read block still yields the newest entries."""
    store = FileControlStore(tmp_path / "control.json")
    assert await store.commit("checkout", 0, state(1), audit_entry(1))
    filler = "".join(
        json.dumps({"experiment": "other", "entry": audit_entry(n)}) + "\n" for n in range(5000)
    )
    append_text(store.audit_path, filler + '{"experiment": "checkout", "entry": "torn')
    assert store.audit_path.stat().st_size > 4 * 64 * 1024
    assert await store.audit("checkout", 5) == [audit_entry(1)]
    assert (await store.audit("other", 2)) == [audit_entry(4999), audit_entry(4998)]
    assert await store.commit("checkout", 1, state(2), audit_entry(2))
    assert await store.audit("checkout", 5) == [audit_entry(2), audit_entry(1)]
    assert store.audit_path.read_bytes().endswith(b"\n")


async def test_file_changes_never_yield_and_end_at_close(tmp_path: Path) -> None:
    """One process has no one to hear from: changes() waits, and ends when the store closes."""
    store = FileControlStore(tmp_path / "control.json")
    changes = store.changes()
    waiting = asyncio.ensure_future(anext(changes))
    assert await store.commit("checkout", 0, state(1), audit_entry(1))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)


# -- the Redis store ------------------------------------------------------------------------


async def test_redis_keys_share_one_hash_tag(server: RedisServer) -> None:
    """State, versions and audit live under the `{control}` hash tag (one cluster slot)."""
    async with Redis.from_url(server.url) as client:
        store = RedisControlStore(client, PREFIX, audit_maxlen=3)
        for version in range(1, 301):
            assert await store.commit("checkout", version - 1, state(version), audit_entry(0))
        assert sorted(await client.keys("*")) == [
            b"test:{control}:audit:checkout",
            b"test:{control}:state",
            b"test:{control}:version",
        ]
        assert await client.hget(KEYS.version, "checkout") == b"300"
        newest: Any = await client.xrevrange(KEYS.audit("checkout"), count=1)
        assert newest[0][1] == {AUDIT_FIELD.encode(): audit_entry(0).encode()}
        # "MAXLEN ~" trims whole stream nodes (100 entries each by default), never below 3.
        assert 3 <= await client.xlen(KEYS.audit("checkout")) <= 200


async def test_a_subscriber_on_another_client_hears_a_commit_within_a_second(
    server: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    """A commit publishes the experiment id; another replica's changes() yields it at once."""
    writer, reader = await open_redis_store(), await open_redis_store()
    async with contextlib.aclosing(reader.changes()) as changes:
        waiting = asyncio.ensure_future(next_change(changes))
        await until_subscribed(server)
        committed = time.monotonic()
        assert await writer.commit("checkout", 0, state(1), audit_entry(1))
        assert await waiting == "checkout"
        assert time.monotonic() - committed < 1.0
        assert not await writer.commit("checkout", 0, state(1), audit_entry(1))  # no publish
        assert await writer.restore({"search": state(4)}) == ["search"]
        assert await next_change(changes) == "search"


async def test_changes_survive_a_redis_kill_and_restart(
    server: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    """After Redis is killed and restarted, changes() names every stored experiment once
    (notifications sent meanwhile are lost) and then yields new commits again."""
    writer, reader = await open_redis_store(), await open_redis_store()
    async with contextlib.aclosing(reader.changes()) as changes:
        waiting = asyncio.ensure_future(next_change(changes, 5))
        await until_subscribed(server)
        assert await writer.commit("checkout", 0, state(1), audit_entry(1))
        assert await waiting == "checkout"
        server.kill()
        waiting = asyncio.ensure_future(next_change(changes, 10))
        await asyncio.sleep(0.3)  # the subscription fails and backs off
        assert not waiting.done()
        server.start()
        assert await waiting == "checkout"  # the AOF kept it; named after re-subscribing
        await until_subscribed(server)
        assert await writer.commit("search", 0, state(1), audit_entry(1))
        assert await next_change(changes, 1) == "search"


async def test_a_frozen_redis_is_noticed_by_the_keepalive(
    server: RedisServer, open_redis_store: OpenRedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription that hears nothing, not even a PING's answer, is replaced; once Redis
    answers again, changes() names the stored experiments and yields new commits."""
    monkeypatch.setattr(control_store, "_KEEPALIVE_IDLE_S", 0.3)
    monkeypatch.setattr(control_store, "_KEEPALIVE_TIMEOUT_S", 0.3)
    writer, reader = await open_redis_store(), await open_redis_store()
    assert await writer.commit("checkout", 0, state(1), audit_entry(1))
    with capture_logs() as logs:
        async with contextlib.aclosing(reader.changes()) as changes:
            waiting = asyncio.ensure_future(next_change(changes, 10))
            await until_subscribed(server)
            server.stop()
            # Frozen until the keepalive gave up on it: with 0.3 s idle, 0.3 s for the
            # answer and 0.25 s polls that takes 0.6-1.1 s, more on a busy machine, so a
            # fixed freeze can end before the PING's deadline and leave nothing to notice.
            await until_logged(logs, "control_changes_redis_unavailable")
            server.cont()
            assert await waiting == "checkout"
            await until_subscribed(server)
            assert await writer.commit("search", 0, state(1), audit_entry(1))
            assert await next_change(changes) == "search"
    [warning] = [entry for entry in logs if entry["event"] == "control_changes_redis_unavailable"]
    assert "PING" in warning["error"]
    assert [entry["event"] for entry in logs][-1] == "control_changes_resubscribed"


async def test_changes_end_when_the_store_closes(open_redis_store: OpenRedisStore) -> None:
    """close() ends the store's changes() iterators and releases their connections."""
    store = await open_redis_store()
    changes = store.changes()
    waiting = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.1)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 2)


async def test_an_aof_restart_keeps_states_versions_and_audit(
    server: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    """Committed states survive a crash of a Redis with an fsync-always AOF."""
    store = await open_redis_store()
    assert await store.commit("checkout", 0, state(1), audit_entry(1))
    assert await store.commit("checkout", 1, state(2), audit_entry(2))
    server.restart()
    again = await open_redis_store()
    assert await again.load() == {"checkout": state(2)}
    assert await again.audit("checkout", 10) == [audit_entry(2), audit_entry(1)]
    assert await again.commit("checkout", 2, state(3), audit_entry(3))  # scripts load again


async def test_restore_after_redis_lost_its_data(
    server: RedisServer, open_redis_store: OpenRedisStore
) -> None:
    """After a Redis came back empty, restore() writes back each replica's states; a replica
    holding older states than the store's never lowers them."""
    first, second = await open_redis_store(), await open_redis_store()
    assert await first.commit("checkout", 0, state(1), audit_entry(1))
    assert await first.commit("search", 0, state(1), audit_entry(1))
    held = await first.load()
    with server.client() as admin:
        admin.flushall()  # what a restart without persistence leaves
    assert await second.load() == {}
    assert await second.commit("search", 0, state(1, "newer"), audit_entry(2))
    assert await second.commit("search", 1, state(2, "newer"), audit_entry(3))
    assert sorted(await first.restore(held)) == ["checkout"]
    assert await second.load() == {"checkout": state(1), "search": state(2, "newer")}
    assert await second.restore(held) == []


async def test_redis_cluster_commits_and_notifies(tmp_path: Path) -> None:
    """Through a Redis Cluster client the scripts run in the `{control}` slot and changes()
    hears commits."""
    with RedisClusterServers(tmp_path / "cluster") as cluster:
        writer_client = client_for(cluster.url, cluster=True)
        reader_client = client_for(cluster.url, cluster=True)
        assert isinstance(writer_client, RedisCluster)
        writer = RedisControlStore(writer_client, PREFIX)
        reader = RedisControlStore(reader_client, PREFIX)
        try:
            async with contextlib.aclosing(reader.changes()) as changes:
                waiting = asyncio.ensure_future(next_change(changes, 5))
                await asyncio.sleep(0.5)  # subscribing goes through the topology first
                assert await writer.commit("checkout", 0, state(1), audit_entry(1))
                assert await waiting == "checkout"
            assert not await writer.commit("checkout", 0, state(1), audit_entry(1))
            assert await reader.load() == {"checkout": state(1)}
            assert await reader.audit("checkout", 2) == [audit_entry(1)]
            assert await reader.restore({"search": state(2)}) == ["search"]
            assert await writer.versions() == {"checkout": 1, "search": 2}
        finally:
            await writer_client.aclose()
            await reader_client.aclose()
