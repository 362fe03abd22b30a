"""Tests for gateway.stores.reader: streaming outcomes and labels from a file or Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.constants import NO_EXPERIMENT
from gateway.outcomes.labels import LabelInput
from gateway.outcomes.ports import OutcomeReader
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stores.file_label_store import FileLabelStore
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.reader import FileReader, RedisReader
from gateway.stores.redis_label_store import RedisLabelStore
from gateway.stores.redis_sink import RedisSink

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def rid(n: int) -> str:
    return f"{n:032x}"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def make(n: int, minute: float = 0, experiment: str | None = "checkout") -> OutcomeRecord:
    """Record n, timestamped `minute` minutes after T0."""
    values: dict[str, Any] = {
        "record_id": rid(n),
        "kind": Kind.UTTERANCE,
        "timestamp": iso(T0 + timedelta(minutes=minute)),
        "experiment": experiment,
        "phase": "1" if experiment else None,
        "variant": "base",
        "backend": "westus",
        "role": Role.PRIMARY,
        "client": "shop-app",
        "unit": "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        "unit_source": UnitSource.QUERY,
        "session_id": f"session-{n}",
        "protocol": Protocol.USP,
        "utterance_index": 0,
        "status": "Success",
        "text": f"utterance number {n}",
        "word_count": 3,
    }
    return OutcomeRecord(**values)


async def collect(reader: OutcomeReader, experiment: str, **window: datetime) -> list[str]:
    return [record.record_id async for record in reader.outcomes(experiment, **window)]


# -- the file reader ------------------------------------------------------------------------


def write_outcomes(path: Path, records: list[OutcomeRecord], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(r.to_json().encode() + b"\n" for r in records) + tail)


@pytest.fixture
def outcome_file(tmp_path: Path) -> Path:
    """An outcome file with ten records a minute apart, one per experiment switch."""
    path = tmp_path / "outcomes.jsonl"
    records = [make(n, minute=n, experiment="checkout" if n % 3 else "search") for n in range(10)]
    records.append(make(10, minute=10, experiment=None))
    write_outcomes(path, records)
    return path


async def test_file_reader_filters_experiment_and_time_window(outcome_file: Path) -> None:
    """since is inclusive and until exclusive, on the record's own timestamp."""
    reader = FileReader(outcome_file, outcome_file.with_name("labels.jsonl"))
    everything = [rid(n) for n in range(10) if n % 3]
    assert await collect(reader, "checkout") == everything
    window = {"since": T0 + timedelta(minutes=2), "until": T0 + timedelta(minutes=7)}
    assert await collect(reader, "checkout", **window) == [rid(2), rid(4), rid(5)]
    assert await collect(reader, "checkout", since=T0 + timedelta(minutes=8)) == [rid(8)]
    assert await collect(reader, "checkout", until=T0 + timedelta(minutes=1)) == []
    assert await collect(reader, "search", until=T0 + timedelta(minutes=4)) == [rid(0), rid(3)]
    assert await collect(reader, NO_EXPERIMENT) == [rid(10)]


async def test_file_reader_compares_times_across_offsets(outcome_file: Path) -> None:
    """A window given in another time zone selects the same instants."""
    reader = FileReader(outcome_file, outcome_file.with_name("labels.jsonl"))
    cet = timezone(timedelta(hours=1))
    since = datetime(2025, 3, 1, 13, 4, tzinfo=cet)  # 12:04 UTC
    assert await collect(reader, "checkout", since=since) == [rid(4), rid(5), rid(7), rid(8)]


async def test_file_reader_refuses_naive_bounds(outcome_file: Path) -> None:
    """A window bound without a time zone is refused instead of being guessed."""
    reader = FileReader(outcome_file, outcome_file.with_name("labels.jsonl"))
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        await collect(reader, "checkout", since=datetime(2025, 3, 1))


async def test_file_reader_reads_many_batches_and_dedups(tmp_path: Path) -> None:
    """2,500 records (three worker batches) arrive in order, a repeated line once."""
    path = tmp_path / "outcomes.jsonl"
    records = [make(n, minute=n / 100) for n in range(2500)]
    write_outcomes(path, [*records[:1500], records[700], *records[1500:]])
    reader = FileReader(path, tmp_path / "labels.jsonl")
    assert await collect(reader, "checkout") == [rid(n) for n in range(2500)]


async def test_file_reader_skips_a_torn_last_line(tmp_path: Path) -> None:
    """An unterminated last line (a write in progress) is not read."""
    path = tmp_path / "outcomes.jsonl"
    write_outcomes(path, [make(1), make(2)], tail=make(3).to_json().encode()[:40])
    reader = FileReader(path, tmp_path / "labels.jsonl")
    assert await collect(reader, "checkout") == [rid(1), rid(2)]


async def test_file_reader_names_a_bad_line(tmp_path: Path) -> None:
    """A corrupt line in the middle raises ValueError naming the file and line."""
    path = tmp_path / "outcomes.jsonl"
    write_outcomes(path, [make(1)], tail=b'{"schema_version": 1}\n' + make(2).to_json().encode())
    reader = FileReader(path, tmp_path / "labels.jsonl")
    with pytest.raises(ValueError, match=r"outcomes.jsonl:2: field 'record_id': missing"):
        await collect(reader, "checkout")


async def test_file_reader_closed_early(outcome_file: Path) -> None:
    """A consumer may stop after the first record and close the iterator cleanly."""
    records = FileReader(outcome_file, outcome_file.with_name("labels.jsonl")).outcomes("search")
    assert (await anext(records)).record_id == rid(0)
    await records.aclose()


async def test_file_reader_without_a_file_raises(tmp_path: Path) -> None:
    """A missing outcome file is an error, not an empty experiment."""
    reader = FileReader(tmp_path / "absent.jsonl", tmp_path / "labels.jsonl")
    with pytest.raises(FileNotFoundError):
        await collect(reader, "checkout")


async def test_file_reader_experiments_and_labels(outcome_file: Path) -> None:
    """experiments() lists every experiment with records; labels() that experiment's labels."""
    labels_path = outcome_file.with_name("labels.jsonl")
    reader = FileReader(outcome_file, labels_path)
    assert await reader.experiments() == [NO_EXPERIMENT, "checkout", "search"]
    assert await reader.labels("checkout") == {}
    store = FileLabelStore(outcome_file, labels_path)
    await store.put([LabelInput(rid(1), "one"), LabelInput(rid(3), "three")], "a", "import")
    labels = await reader.labels("checkout")
    assert {k: v.text for k, v in labels.items()} == {rid(1): "one"}


# -- the Redis reader -----------------------------------------------------------------------


class XrangeSpy:
    """A Redis client that records the arguments of every XRANGE."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.calls: list[tuple[str, str, int | None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def xrange(self, key: str, low: str, high: str, count: int | None = None) -> Any:
        self.calls.append((low, high, count))
        return await self.client.xrange(key, low, high, count=count)


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, RedisKeys]]:
    """A client of the shared test Redis and a key prefix of this test's own, removed after."""
    client = Redis(host="127.0.0.1", port=6379)
    keys = RedisKeys(prefix=f"sgw-test-{uuid.uuid4().hex}")
    try:
        yield client, keys
    finally:
        doomed = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
        if doomed:
            await client.delete(*doomed)
        await client.aclose()


async def deliver(
    client: Redis, keys: RedisKeys, record: OutcomeRecord, delay: timedelta = timedelta(0)
) -> None:
    """Store a record as the Redis sink does, arriving `delay` after its timestamp."""
    experiment = record.experiment or NO_EXPERIMENT
    arrived, sequence = ms(datetime.fromisoformat(record.timestamp) + delay), 0
    # Entry ids only grow: an arrival before the stream's last entry takes the next id.
    for last_id, _ in await client.xrevrange(keys.outcomes(experiment), count=1):
        top_ms, top_seq = map(int, last_id.decode().split("-"))
        if top_ms >= arrived:
            arrived, sequence = top_ms, top_seq + 1
    entry = await client.xadd(
        keys.outcomes(experiment), {RECORD_FIELD: record.to_json()}, id=f"{arrived}-{sequence}"
    )
    await client.hset(keys.records(experiment), record.record_id, entry)
    await client.sadd(keys.experiments, experiment)


async def test_redis_reader_filters_time_window(redis: tuple[Redis, RedisKeys]) -> None:
    """since is inclusive and until exclusive, on the record's own timestamp."""
    client, keys = redis
    for n in range(10):
        await deliver(client, keys, make(n, minute=n), delay=timedelta(milliseconds=300))
    reader = RedisReader(client, keys)
    assert await collect(reader, "checkout") == [rid(n) for n in range(10)]
    window = {"since": T0 + timedelta(minutes=2), "until": T0 + timedelta(minutes=5)}
    assert await collect(reader, "checkout", **window) == [rid(2), rid(3), rid(4)]
    assert await collect(reader, "checkout", since=T0 + timedelta(minutes=9)) == [rid(9)]
    assert await collect(reader, "checkout", until=T0) == []


async def test_redis_reader_pages_with_cursors(redis: tuple[Redis, RedisKeys]) -> None:
    """Eleven entries read three at a time take four pages, each after the last id."""
    client, keys = redis
    for n in range(11):
        await deliver(client, keys, make(n, minute=n))
    spy = XrangeSpy(client)
    reader = RedisReader(spy, keys, page=3)  # type: ignore[arg-type]
    assert await collect(reader, "checkout") == [rid(n) for n in range(11)]
    assert len(spy.calls) == 4
    assert spy.calls[0] == ("-", "+", 3)
    entries = await client.xrange(keys.outcomes("checkout"))
    ids = [entry_id.decode() for entry_id, _ in entries]
    assert [low for low, _, _ in spy.calls[1:]] == ["(" + ids[2], "(" + ids[5], "(" + ids[8]]


async def test_redis_reader_exact_page_multiple_stops_on_an_empty_page(
    redis: tuple[Redis, RedisKeys],
) -> None:
    """Twelve entries read three at a time end with one empty page, not a loop."""
    client, keys = redis
    for n in range(12):
        await deliver(client, keys, make(n, minute=n))
    spy = XrangeSpy(client)
    assert len(await collect(RedisReader(spy, keys, page=3), "checkout")) == 12  # type: ignore[arg-type]
    assert len(spy.calls) == 5


async def test_redis_reader_range_starts_at_since(redis: tuple[Redis, RedisKeys]) -> None:
    """The first XRANGE starts at the entry id of since minus the skew, not at the start."""
    client, keys = redis
    for n in range(5):
        await deliver(client, keys, make(n, minute=n * 10))
    spy = XrangeSpy(client)
    reader = RedisReader(spy, keys, skew=timedelta(minutes=1))  # type: ignore[arg-type]
    since = T0 + timedelta(minutes=20)
    assert await collect(reader, "checkout", since=since) == [rid(2), rid(3), rid(4)]
    assert spy.calls[0][0] == f"{ms(since) - 60_000}-0"


async def test_redis_reader_finds_records_delivered_late(redis: tuple[Redis, RedisKeys]) -> None:
    """A record spooled during an outage and delivered hours later is in its window."""
    client, keys = redis
    await deliver(client, keys, make(1, minute=1))
    await deliver(client, keys, make(2, minute=2), delay=timedelta(hours=5))
    await deliver(client, keys, make(3, minute=3 + 5 * 60))
    until = T0 + timedelta(minutes=10)
    assert await collect(RedisReader(client, keys), "checkout", until=until) == [rid(1), rid(2)]
    bounded = RedisReader(client, keys, max_delay=timedelta(hours=1))
    assert bounded.entry_range(None, until) == ("-", str(ms(until) + 3_600_000))
    assert await collect(bounded, "checkout", until=until) == [rid(1)]


async def test_redis_reader_tolerates_a_slow_redis_clock(redis: tuple[Redis, RedisKeys]) -> None:
    """An entry id slightly before its record's timestamp (clock skew) is still read."""
    client, keys = redis
    await deliver(client, keys, make(1, minute=1), delay=timedelta(seconds=-30))
    reader = RedisReader(client, keys)
    assert await collect(reader, "checkout", since=T0 + timedelta(minutes=1)) == [rid(1)]


async def test_redis_reader_empty_stream(redis: tuple[Redis, RedisKeys]) -> None:
    """An experiment with no stream yields nothing, and there are no experiments."""
    client, keys = redis
    reader = RedisReader(client, keys)
    assert await collect(reader, "checkout") == []
    assert await collect(reader, "checkout", since=T0, until=T0 + timedelta(days=1)) == []
    assert await reader.experiments() == []
    assert await reader.labels("checkout") == {}


async def test_redis_reader_dedups_and_separates_experiments(
    redis: tuple[Redis, RedisKeys],
) -> None:
    """A record delivered twice is read once; each experiment reads its own stream."""
    client, keys = redis
    await deliver(client, keys, make(1, minute=1))
    await deliver(client, keys, make(1, minute=1))
    await deliver(client, keys, make(2, minute=2, experiment="search"))
    await deliver(client, keys, make(3, minute=3, experiment=None))
    reader = RedisReader(client, keys)
    assert await collect(reader, "checkout") == [rid(1)]
    assert await collect(reader, "search") == [rid(2)]
    assert await collect(reader, NO_EXPERIMENT) == [rid(3)]
    assert await reader.experiments() == [NO_EXPERIMENT, "checkout", "search"]


async def test_redis_reader_labels(redis: tuple[Redis, RedisKeys]) -> None:
    """labels(experiment) returns the current labels stored beside that stream."""
    client, keys = redis
    await deliver(client, keys, make(1, minute=1))
    await deliver(client, keys, make(2, minute=2, experiment="search"))
    store = RedisLabelStore(client, keys)
    await store.put([LabelInput(rid(1), "one"), LabelInput(rid(2), "two")], "a", "api")
    await store.put([LabelInput(rid(1), "uno")], "b", "api")
    labels = await RedisReader(client, keys).labels("checkout")
    assert {k: (v.text, v.labeller) for k, v in labels.items()} == {rid(1): ("uno", "b")}


async def test_redis_reader_names_a_bad_entry(redis: tuple[Redis, RedisKeys]) -> None:
    """An entry without the record field raises ValueError naming the key and entry id."""
    client, keys = redis
    await client.xadd(keys.outcomes("checkout"), {"x": "1"}, id="5-0")
    with pytest.raises(ValueError, match=r"\{checkout\}:outcomes 5-0: no field 'r'"):
        await collect(RedisReader(client, keys), "checkout")


async def test_redis_reader_reads_what_the_redis_sink_wrote(
    redis: tuple[Redis, RedisKeys], tmp_path: Path
) -> None:
    """Records stored by the real RedisSink are read back and can be labelled."""
    client, keys = redis

    async def connect() -> Redis:
        return Redis(host="127.0.0.1", port=6379)

    sink = RedisSink(connect, keys, tmp_path / "journal")
    try:
        records = [make(n, minute=n, experiment="checkout" if n % 2 else None) for n in range(7)]
        assert await sink.deliver(records) == 7
    finally:
        await sink.close()
    reader = RedisReader(client, keys, page=2)
    assert await reader.experiments() == [NO_EXPERIMENT, "checkout"]
    assert await collect(reader, "checkout") == [rid(1), rid(3), rid(5)]
    since = T0 + timedelta(minutes=2)
    assert await collect(reader, NO_EXPERIMENT, since=since) == [rid(2), rid(4), rid(6)]
    store = RedisLabelStore(client, keys)
    result = await store.put([LabelInput(rid(2), "two"), LabelInput(rid(99), "?")], "a", "api")
    assert result.unknown == [rid(99)]
    assert list(await reader.labels(NO_EXPERIMENT)) == [rid(2)]


def test_redis_reader_refuses_bad_settings() -> None:
    """A page below one or a negative skew is refused at construction."""
    client = Redis(host="127.0.0.1", port=6379)
    with pytest.raises(ValueError, match="page"):
        RedisReader(client, page=0)
    with pytest.raises(ValueError, match="skew"):
        RedisReader(client, skew=timedelta(seconds=-1))
