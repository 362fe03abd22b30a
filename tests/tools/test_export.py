"""Tests for `speech-gateway export` (gateway.tools.export): a one-off export from the JSONL
file or Redis round-trips and is idempotent; `--follow` as a real process killed with
SIGKILL and restarted loses and duplicates nothing, and SIGTERM stops it cleanly; bad input
is one line on stderr and exit status 2."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from redis.asyncio import Redis
from redis_servers import outcome

from gateway.cli import main
from gateway.outcomes.labels import Label
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.keys import EXPORT_GROUP, RedisKeys
from gateway.stores.lake import VERSION_KEY, lake_sources
from gateway.stores.redis_client import connect
from gateway.stores.redis_sink import RedisSink

URL = "redis://127.0.0.1:6379"
ROOT = Path(__file__).resolve().parents[2]


def file_store(folder: Path, records: list[OutcomeRecord], labels: list[Label]) -> Path:
    """A JSONL outcome file, its labels file and a config naming them."""
    with open(folder / "out.jsonl", "a") as file:
        file.writelines(r.to_json() + "\n" for r in records)
    with open(folder / "labels.jsonl", "a") as file:
        file.writelines(label.to_json() + "\n" for label in labels)
    config = folder / "c.toml"
    config.write_text('[outcomes]\npath = "out.jsonl"\n')
    return config


def exported(root: Path, experiment: str = "checkout") -> list[dict[str, Any]]:
    with duckdb.connect() as con:
        files = [str(p) for p in lake_sources(root, experiment).outcomes]
        result = con.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = false) ORDER BY record_id",
            [files],
        )
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("speech-gateway: ")
    return err[0]


def test_export_round_trips_the_file_store_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exported rows equal the JSONL records; exporting again adds none; after new
    records arrive, only they are added; the labels are exported with them."""
    records = [outcome(n) for n in range(120)]
    label = Label(record_id=records[0].record_id, text="utterance", labeller="a", source="api")
    config = file_store(tmp_path, records, [label])
    argv = ["--config", str(config), "export", "--experiment", "checkout", "--to", "lake"]
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    assert capsys.readouterr().out == (
        "checkout: 120 new outcome record(s), 0 already exported, 1 label(s) -> lake\n"
    )
    expected = sorted((json.loads(r.to_json()) for r in records), key=lambda d: d["record_id"])
    assert exported(tmp_path / "lake") == expected

    assert main(argv) == 0
    assert "0 new outcome record(s), 120 already exported" in capsys.readouterr().out
    assert len(exported(tmp_path / "lake")) == 120

    new = [outcome(n) for n in range(120, 130)]
    file_store(tmp_path, new, [])
    assert main(argv) == 0
    assert "10 new outcome record(s), 120 already exported" in capsys.readouterr().out
    assert [r["record_id"] for r in exported(tmp_path / "lake")] == [
        r.record_id for r in records + new
    ]
    (labels_file,) = lake_sources(tmp_path / "lake", "checkout").labels
    with duckdb.connect() as con:
        found = con.execute("SELECT record_id, text FROM read_parquet(?)", [str(labels_file)])
        assert found.fetchall() == [(records[0].record_id, "utterance")]


def test_bad_input_is_one_line_and_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No experiment, an unknown one, --to naming a file, --follow on the file store, a
    missing outcome file, a partition holding a file of another export version: each is
    one line naming the problem, exit status 2, and nothing half-written."""
    monkeypatch.chdir(tmp_path)
    config = file_store(tmp_path, [outcome(1)], [])
    base = ["--config", str(config), "export"]
    assert main([*base, "--to", "lake"]) == 2
    assert "--experiment: required (or --follow)" in one_error_line(capsys)
    assert main([*base, "--experiment", "nope", "--to", "lake"]) == 2
    assert "no outcome records of 'nope' in the store (has: checkout)" in one_error_line(capsys)
    (tmp_path / "a-file").write_text("")
    assert main([*base, "--experiment", "checkout", "--to", "a-file"]) == 2
    assert "--to: a-file is not a directory" in one_error_line(capsys)
    assert main([*base, "--follow", "--to", "lake"]) == 2
    assert "follows the Redis outcome streams" in one_error_line(capsys)

    other = tmp_path / "other.toml"
    other.write_text('[outcomes]\npath = "absent.jsonl"\n')
    assert main(["--config", str(other), "export", "--experiment", "x", "--to", "lake"]) == 2
    assert "no outcome file at" in one_error_line(capsys)

    assert main([*base, "--experiment", "checkout", "--to", "lake"]) == 0
    capsys.readouterr()
    (folder,) = {p.parent for p in (tmp_path / "lake").glob("outcomes/**/*.parquet")}
    newer = folder / "part-newer.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT 'x' AS record_id) TO ? "
            f"(FORMAT parquet, KV_METADATA {{{VERSION_KEY}: '2'}})",
            [str(newer)],
        )
    file_store(tmp_path, [outcome(2)], [])
    assert main([*base, "--experiment", "checkout", "--to", "lake"]) == 2
    line = one_error_line(capsys)
    assert str(newer.relative_to(tmp_path)) in line
    assert "export schema version 2" in line


# -- the Redis store and the follower -------------------------------------------------------


@pytest.fixture
async def keys() -> AsyncIterator[RedisKeys]:
    keys = RedisKeys(prefix=f"test-export-{secrets.token_hex(4)}")
    yield keys
    async with Redis.from_url(URL) as client:
        found = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
        if found:
            await client.delete(*found)


def redis_config(folder: Path, keys: RedisKeys) -> Path:
    config = folder / "c.toml"
    config.write_text(
        f'[outcomes]\nstore = "redis"\njournal_dir = "journal"\n[redis]\nprefix = "{keys.prefix}"\n'
    )
    return config


async def store(keys: RedisKeys, journal: Path, records: list[OutcomeRecord]) -> None:
    sink = RedisSink(functools.partial(connect, URL, cluster=False), keys, journal)
    try:
        for first in range(0, len(records), 500):
            await sink.deliver(records[first : first + 500])
    finally:
        await sink.close()


async def test_export_from_redis(
    keys: RedisKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A one-off export reads the experiment's stream as `analyze` does."""
    records = [outcome(n) for n in range(50)]
    await store(keys, tmp_path / "j", records)
    config = redis_config(tmp_path, keys)
    argv = ["--config", str(config), "export", "--experiment", "checkout", "--to", str(tmp_path)]
    assert await asyncio.to_thread(main, argv) == 0
    assert "50 new outcome record(s)" in capsys.readouterr().out
    assert [r["record_id"] for r in exported(tmp_path)] == [r.record_id for r in records]


class Follower:
    """`speech-gateway export --follow` as a real process."""

    def __init__(self, config: Path, root: Path, log: Path) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(config), "export", "--follow",
                 "--to", str(root), "--batch-size", "200"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
            )  # fmt: skip

    def signal(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    made: list[Follower] = []
    yield made
    for follower in made:
        if follower.process.poll() is None:
            follower.process.kill()
            follower.process.wait()


async def group_state(client: Redis, key: str) -> tuple[int, int, int]:
    """(entries read, pending, lag) of the export group; zeros without it."""
    for group in await client.xinfo_groups(key):
        if group["name"] == EXPORT_GROUP.encode():
            return group["entries-read"] or 0, group["pending"], group["lag"] or 0
    return 0, 0, 0


async def wait_for(condition: Any) -> None:
    async with asyncio.timeout(60):
        while not await condition():  # noqa: ASYNC110 - another process's state in Redis
            await asyncio.sleep(0.01)


async def test_follower_killed_mid_run_and_restarted_loses_and_duplicates_nothing(
    keys: RedisKeys, tmp_path: Path, followers: list[Follower]
) -> None:
    """SIGKILL while exporting (some entries exported, some pending or unread), more records
    written meanwhile, a restart: every record is in the lake exactly once, the group has
    acknowledged everything, and SIGTERM stops the follower with status 0."""
    first = [outcome(n) for n in range(4000)]
    await store(keys, tmp_path / "j", first)
    config = redis_config(tmp_path, keys)
    root = tmp_path / "lake"
    key = keys.outcomes("checkout")
    async with Redis.from_url(URL) as client:
        followers.append(Follower(config, root, tmp_path / "follow.log"))

        async def some_exported() -> bool:
            read, _pending, _lag = await group_state(client, key)
            return read >= 500

        await wait_for(some_exported)
        assert followers[0].signal(signal.SIGKILL) == -signal.SIGKILL
        read, pending, lag = await group_state(client, key)
        assert read + lag == len(first)
        assert lag > 0 or pending > 0, "the follower finished before it was killed"

        more = [dataclasses.replace(outcome(n), phase="2") for n in range(4000, 4500)]
        await store(keys, tmp_path / "j", more)
        followers.append(Follower(config, root, tmp_path / "follow.log"))

        async def all_acknowledged() -> bool:
            return await group_state(client, key) == (4500, 0, 0)

        await wait_for(all_acknowledged)
        assert followers[1].signal(signal.SIGTERM) == 0
    ids = [r["record_id"] for r in exported(root)]
    assert len(ids) == len(set(ids)) == 4500
    assert sorted(ids) == sorted(r.record_id for r in first + more)
    assert "stopped: " in (tmp_path / "follow.log").read_text()
