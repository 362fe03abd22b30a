"""Tests for the Redis outcome sink's start-up persistence check, against redis-server
processes started with and without persistence, and with CONFIG disabled (as managed
services do): one warning when Redis would come back empty after a restart, never a crash."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis_servers import RedisServer, free_port, outcome, until
from structlog.testing import capture_logs

from gateway.stores.keys import RedisKeys
from gateway.stores.redis_client import connect
from gateway.stores.redis_sink import RedisSink

KEYS = RedisKeys(prefix="persist")
WARNING = "outcomes_redis_not_persistent"
PERSISTENT = "outcomes_redis_persistent"
UNCHECKED = "outcomes_redis_persistence_unchecked"
CHECK_EVENTS = (WARNING, PERSISTENT, UNCHECKED)


def new_sink(url: str, journal_dir: Path) -> RedisSink:
    factory = functools.partial(connect, url, cluster=False)
    return RedisSink(factory, KEYS, journal_dir, backoff_initial_s=0.05, backoff_max_s=0.2)


def check_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] in CHECK_EVENTS]


async def run_check(server: RedisServer, journal_dir: Path) -> list[dict[str, Any]]:
    """Start a sink on `server`, wait for its check, write a record, close: the check's
    log entries (all of them: the test then knows that nothing else came later)."""
    with capture_logs() as logs:
        sink = new_sink(server.url, journal_dir)
        await sink.start()
        await until(lambda: bool(check_events(logs)), limit_s=30)
        sink.submit(outcome(1))
        await until(lambda: sink.written == 1, limit_s=30)
        await sink.close()
    return check_events(logs)


@contextmanager
def server_with(tmp_path: Path, **options: Any) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", **options) as running:
        yield running


async def test_a_redis_without_aof_or_rdb_is_warned_about_once(tmp_path: Path) -> None:
    """appendonly no and no save points: one structured warning naming the server."""
    with server_with(tmp_path) as server:
        [event] = await run_check(server, tmp_path / "journal")
    assert event["event"] == WARNING
    assert event["log_level"] == "warning"
    assert event["nodes"] == [f"127.0.0.1:{server.port}"]
    assert "restart" in event["detail"]


async def test_a_redis_with_aof_is_not_warned_about(tmp_path: Path) -> None:
    """appendonly yes: the check says so at info level, and there is no warning."""
    with server_with(tmp_path, appendonly=True) as server:
        [event] = await run_check(server, tmp_path / "journal")
    assert (event["event"], event["log_level"]) == (PERSISTENT, "info")
    assert event["nodes"] == {f"127.0.0.1:{server.port}": "aof"}


async def test_rdb_snapshots_alone_count_as_persistence(tmp_path: Path) -> None:
    """Save points without an AOF: persistent (with a window of loss), so no warning."""
    with server_with(tmp_path, extra_args=("--save", "3600 1")) as server:
        [event] = await run_check(server, tmp_path / "journal")
    assert event["event"] == PERSISTENT
    assert event["nodes"] == {f"127.0.0.1:{server.port}": "rdb"}


async def test_with_config_disabled_it_says_it_could_not_check(tmp_path: Path) -> None:
    """CONFIG renamed away (a managed Redis): an info entry that it could not check; the
    sink runs on and stores records."""
    args = ("--rename-command", "CONFIG", "")
    with server_with(tmp_path, extra_args=args) as server:
        [event] = await run_check(server, tmp_path / "journal")
        async with Redis.from_url(server.url) as client:
            assert await client.xlen(KEYS.outcomes("checkout")) == 1
    assert (event["event"], event["log_level"]) == (UNCHECKED, "info")
    assert "unknown command" in event["error"]


async def test_the_check_waits_for_a_redis_that_is_down_at_start(tmp_path: Path) -> None:
    """Redis down when the sink starts: the sink starts anyway and checks once Redis
    answers (one warning, however many attempts it took)."""
    server = RedisServer(tmp_path / "redis", port=free_port())
    with capture_logs() as logs:
        sink = new_sink(server.url, tmp_path / "journal")
        await sink.start()
        sink.submit(outcome(1))
        await until(lambda: not sink.redis_available, limit_s=30)
        assert check_events(logs) == []
        with server:
            await until(lambda: bool(check_events(logs)), limit_s=30)
            await until(lambda: sink.written == 1, limit_s=30)
            await sink.close()
    [event] = check_events(logs)
    assert event["event"] == WARNING
