"""Tests for gateway.stores.redis_sink against real redis-server processes: throughput,
exactly-once through kills, freezes and restarts, queue policies, retention, consumer groups."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis_servers import RedisServer, outcome, stream_ids, until
from structlog.testing import capture_logs

from gateway.constants import NO_EXPERIMENT
from gateway.outcomes.ports import OutcomeSink
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role
from gateway.stores.journal import Journal
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.redis_client import REDIS_ERRORS, connect
from gateway.stores.redis_sink import RedisSink
from gateway.stores.redis_sink_script import units_field_of_json

KEYS = RedisKeys(prefix="test")
EXPERIMENTS: tuple[str | None, ...] = ("checkout", "search", "support", None)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server with an fsync-always AOF, so a restart keeps acknowledged data."""
    with RedisServer(tmp_path / "redis", appendonly=True) as running:
        yield running


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    async with Redis.from_url(server.url) as redis:
        yield redis


def new_sink(url: str, journal_dir: Path, **options: Any) -> RedisSink:
    options.setdefault("backoff_max_s", 0.5)  # tests wait for recoveries: probe often
    return RedisSink(functools.partial(connect, url, cluster=False), KEYS, journal_dir, **options)


def make_records(total: int, start: int = 0) -> list[OutcomeRecord]:
    """Records of sessions of ten utterances, each session its own unit (as live traffic:
    not every record of one unit, which would make every write extend one units entry)."""
    return [
        dataclasses.replace(outcome(n, EXPERIMENTS[n % len(EXPERIMENTS)]), unit=f"{n // 10:032x}")
        for n in range(start, start + total)
    ]


async def assert_stored_once_in_order(client: Redis, submitted: Sequence[OutcomeRecord]) -> None:
    """Each experiment's stream holds exactly its submitted records, in submission order."""
    for experiment in {record.experiment for record in submitted}:
        expected = [r.record_id for r in submitted if r.experiment == experiment]
        assert await stream_ids(client, KEYS.outcomes(experiment)) == expected
    total = sum([await client.xlen(KEYS.outcomes(e)) for e in EXPERIMENTS])
    assert total == len(submitted)


def journal_segments(journal_dir: Path) -> list[Path]:
    return sorted(journal_dir.glob("*.jsonl"))


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_redis_sink_is_an_outcome_sink(tmp_path: Path) -> None:
    """RedisSink satisfies the OutcomeSink protocol the gateway holds it by."""
    sink: OutcomeSink = new_sink("redis://127.0.0.1:1", tmp_path)
    assert (sink.dropped, sink.written) == (0, 0)


async def submit_at_full_speed(
    sink: RedisSink, records: Sequence[OutcomeRecord], tasks: int = 20
) -> list[OutcomeRecord]:
    """Submit from `tasks` interleaved tasks, yielding after each record; the submit order."""
    submitted: list[OutcomeRecord] = []
    size = -(-len(records) // tasks)

    async def produce(chunk: Sequence[OutcomeRecord]) -> None:
        for record in chunk:
            sink.submit(record)
            submitted.append(record)
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:
        for task in range(tasks):
            group.create_task(produce(records[task * size : (task + 1) * size]))
    return submitted


async def test_100k_records_from_many_tasks_arrive_once_in_order(
    tmp_path: Path, client: Redis, server: RedisServer
) -> None:
    """100,000 records submitted at full speed by 20 tasks are stored once each, in order."""
    records = make_records(100_000)
    # The burst fits in the queue, so this measures the live path (Redis, no journal).
    # close_timeout_s: on a loaded machine draining 100k may take longer than the default.
    sink = new_sink(server.url, tmp_path / "journal", queue_size=100_000, close_timeout_s=120)
    await sink.start()
    began = time.perf_counter()
    submitted = await submit_at_full_speed(sink, records)
    await sink.close()
    elapsed = time.perf_counter() - began
    print(f"\nsingle Redis, live: {len(records) / elapsed:,.0f} records/s ({elapsed:.2f} s)")
    assert (sink.written, sink.dropped, sink.lost, sink.journalled) == (100_000, 0, 0, 0)
    await assert_stored_once_in_order(client, submitted)
    experiments = await client.smembers(KEYS.experiments)
    assert experiments == {b"checkout", b"search", b"support", NO_EXPERIMENT.encode()}


async def test_a_burst_beyond_the_queue_goes_through_the_journal(
    tmp_path: Path, client: Redis, server: RedisServer
) -> None:
    """A full-speed burst past queue_size is journalled and delivered: once each, in order."""
    records = make_records(50_000)
    sink = new_sink(server.url, tmp_path / "journal", overflow_size=50_000, close_timeout_s=120)
    await sink.start()
    began = time.perf_counter()
    submitted = await submit_at_full_speed(sink, records)
    await sink.close()
    elapsed = time.perf_counter() - began
    print(
        f"\nsingle Redis, burst: {len(records) / elapsed:,.0f} records/s ({elapsed:.2f} s), "
        f"journalled {sink.journalled}"
    )
    assert sink.journalled > 0
    assert sink.delivered_from_journal == sink.journalled
    assert (sink.written, sink.dropped, sink.lost, sink.journal_pending) == (50_000, 0, 0, 0)
    await assert_stored_once_in_order(client, submitted)


async def test_redis_killed_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, server: RedisServer
) -> None:
    """SIGKILL mid-stream, restart later: every record once, in order; the outage was logged."""
    journal_dir = tmp_path / "journal"
    records = make_records(20_000)
    sink = new_sink(server.url, journal_dir)
    await sink.start()

    async def produce() -> None:
        for n, record in enumerate(records, start=1):
            sink.submit(record)
            if n % 50 == 0:
                await asyncio.sleep(0.005)

    with capture_logs() as logs:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            await until(lambda: sink.written >= 2_000)
            server.kill()
            await until(lambda: sink.journal_pending >= 2_000)  # spooling meanwhile
            await asyncio.to_thread(server.restart)
        await until(lambda: sink.written == len(records))
        await sink.close()

    assert (sink.dropped, sink.lost, sink.journal_pending) == (0, 0, 0)
    assert sink.delivered_from_journal >= 2_000
    assert journal_segments(journal_dir) == []
    [warning] = events(logs, "outcomes_redis_unavailable")
    assert warning["log_level"] == "warning"
    assert "journal_pending" in warning
    assert len(events(logs, "outcomes_redis_recovered")) == 1
    async with Redis.from_url(server.url) as client:
        await assert_stored_once_in_order(client, records)


async def test_frozen_redis_never_blocks_submit_and_records_flow_after_thaw(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """While Redis is SIGSTOPped submit() keeps returning; after SIGCONT all arrive once."""
    records = make_records(12_000)
    sink = new_sink(server.url, tmp_path / "journal")
    await sink.start()
    for record in records[:1000]:
        sink.submit(record)
    await until(lambda: sink.written == 1000)

    server.stop()
    submitted = 1000
    async with asyncio.timeout(60):  # the loop keeps submitting until the sink notices
        while sink.redis_available:
            for record in records[submitted : submitted + 50]:
                sink.submit(record)
            submitted += 50
            await asyncio.sleep(0.01)
    while submitted < len(records):  # and goes on, all while Redis is frozen
        for record in records[submitted : submitted + 50]:
            sink.submit(record)
        submitted += 50
        await asyncio.sleep(0.005)
    await until(lambda: sink.journal_pending > 0)
    server.cont()

    await until(lambda: sink.written == len(records))
    await sink.close()
    assert (sink.dropped, sink.lost, sink.journal_pending) == (0, 0, 0)
    await assert_stored_once_in_order(client, records)


async def test_a_retried_batch_is_not_duplicated(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """A batch delivered again (Redis applied it, the reply was lost) adds nothing."""
    sink = new_sink(server.url, tmp_path / "journal")
    await sink.start()
    batch = make_records(300)
    assert await sink.deliver(batch) == 300
    assert await sink.deliver(batch) == 0
    overlapping = batch[150:] + make_records(100, start=300)
    assert await sink.deliver(overlapping) == 100
    await sink.close()
    await assert_stored_once_in_order(client, make_records(400))


async def test_entries_carry_the_record_and_the_records_hash_points_at_them(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """Field "r" holds the record's JSON; the records hash maps record_id to its entry id."""
    sink = new_sink(server.url, tmp_path / "journal")
    await sink.start()
    record = outcome(7, "checkout")
    sink.submit(record)
    await sink.close()
    [(entry_id, fields)] = await client.xrange(KEYS.outcomes("checkout"))
    assert OutcomeRecord.from_json(fields[RECORD_FIELD.encode()]) == record
    assert await client.hget(KEYS.records("checkout"), record.record_id) == entry_id
    assert await client.zscore(KEYS.seen("checkout"), record.record_id) is not None


async def test_close_with_redis_down_journals_and_a_new_sink_delivers(
    tmp_path: Path, server: RedisServer
) -> None:
    """SIGTERM path: close() with Redis down journals all; the next sink delivers it later."""
    journal_dir = tmp_path / "journal"
    records = make_records(1500)
    first = new_sink(server.url, journal_dir)
    await first.start()
    for record in records[:500]:
        first.submit(record)
    await until(lambda: first.written == 500)
    server.kill()
    for record in records[500:]:
        first.submit(record)
    await first.close()
    assert (first.written, first.journal_pending, first.dropped, first.lost) == (500, 1000, 0, 0)
    assert journal_segments(journal_dir)

    second = new_sink(server.url, journal_dir)
    await second.start()  # Redis is still down: the sink starts anyway
    assert second.journal_pending == 1000
    newer = make_records(500, start=1500)
    for record in newer:  # submitted after the journal's records: stored after them
        second.submit(record)
    await until(lambda: not second.redis_available)
    await asyncio.to_thread(server.restart)
    await until(lambda: second.written == 1500)
    await second.close()
    assert second.delivered_from_journal == 1500  # the newer ones were spooled behind
    assert second.journal_pending == 0
    assert journal_segments(journal_dir) == []
    async with Redis.from_url(server.url) as client:
        await assert_stored_once_in_order(client, records + newer)


async def test_close_with_redis_frozen_returns_and_journals(
    tmp_path: Path, server: RedisServer
) -> None:
    """close() does not hang on a SIGSTOPped Redis: past its deadline it journals the rest."""
    journal_dir = tmp_path / "journal"
    records = make_records(300)
    sink = new_sink(server.url, journal_dir, close_timeout_s=0.5)
    await sink.start()
    for record in records[:100]:
        sink.submit(record)
    await until(lambda: sink.written == 100)
    server.stop()
    for record in records[100:]:
        sink.submit(record)
    async with asyncio.timeout(30):  # bounded: a hang fails the test
        await sink.close()
    assert (sink.written, sink.journal_pending, sink.dropped) == (100, 200, 0)
    server.cont()
    second = new_sink(server.url, journal_dir)
    await second.start()
    await until(lambda: second.journal_pending == 0)
    await second.close()
    async with Redis.from_url(server.url) as client:
        await assert_stored_once_in_order(client, records)


async def test_a_full_journal_drops_and_counts(tmp_path: Path) -> None:
    """With Redis down and the journal at journal_max_records, further records are dropped."""
    sink = new_sink("redis://127.0.0.1:1", tmp_path / "journal", journal_max_records=100)
    await sink.start()
    with capture_logs() as logs:
        for record in make_records(150):
            sink.submit(record)
        await sink.close()
    assert (sink.journal_pending, sink.dropped, sink.written) == (100, 50, 0)
    assert events(logs, "outcomes_dropped")[0]["reason"] == "journal_full"
    assert events(logs, "outcomes_journal_left")[0]["journal_pending"] == 100


async def test_drop_newest_policy_drops_and_counts(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """With drop_newest, submits past queue_size are refused, counted and logged."""
    sink = new_sink(server.url, tmp_path / "journal", queue_size=10, full_policy="drop_newest")
    records = make_records(25)
    with capture_logs() as logs:
        for record in records:  # no writer yet: the queue fills
            sink.submit(record)
    assert sink.dropped == 15
    assert events(logs, "outcomes_dropped")[0]["reason"] == "queue_full"
    await sink.start()
    await sink.close()
    assert (sink.written, sink.journalled) == (10, 0)
    await assert_stored_once_in_order(client, records[:10])


async def test_journal_policy_journals_the_overflow(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """With journal, records past queue_size go to the journal and all arrive, in order."""
    sink = new_sink(server.url, tmp_path / "journal", queue_size=10)
    records = make_records(20)
    for record in records:
        sink.submit(record)
    assert sink.dropped == 0
    await sink.start()
    await until(lambda: sink.written == 20)
    for record in make_records(5, start=20):  # the journal is drained: live again
        sink.submit(record)
    await sink.close()
    assert (sink.journalled, sink.delivered_from_journal, sink.dropped) == (20, 20, 0)
    await assert_stored_once_in_order(client, make_records(25))


async def test_overflow_beyond_its_bound_is_dropped_and_counted(tmp_path: Path) -> None:
    """The overflow list is bounded too (queue_size): past it, records are dropped."""
    sink = new_sink("redis://127.0.0.1:1", tmp_path / "journal", queue_size=10)
    with capture_logs() as logs:
        for record in make_records(25):
            sink.submit(record)
    assert sink.dropped == 5
    assert events(logs, "outcomes_dropped")[0]["reason"] == "overflow_full"
    await sink.close()  # nobody listens on port 1: everything accepted is journalled
    assert (sink.journal_pending, sink.written) == (20, 0)


async def test_maxlen_keeps_the_stream_near_its_bound(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """XADD MAXLEN ~ keeps each stream within a macro node of maxlen, newest kept."""
    sink = new_sink(server.url, tmp_path / "journal", maxlen=1000, batch_size=100)
    await sink.start()
    records = [outcome(n, "checkout") for n in range(5000)]
    for record in records:
        sink.submit(record)
    await sink.close()
    kept = await stream_ids(client, KEYS.outcomes("checkout"))
    assert 1000 <= len(kept) <= 1100
    assert kept == [r.record_id for r in records[-len(kept) :]]


async def test_min_id_age_trims_entries_older_than_it(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """XTRIM MINID ~ drops entries older than min_id_age_s when newer ones are written."""
    sink = new_sink(server.url, tmp_path / "journal", min_id_age_s=0.3)
    await sink.start()
    old = [outcome(n, "checkout") for n in range(1000)]
    for record in old:
        sink.submit(record)
    await until(lambda: sink.written == 1000)
    assert await client.xlen(KEYS.outcomes("checkout")) == 1000
    await asyncio.sleep(0.5)  # let the old entries age past min_id_age_s
    new = [outcome(n, "checkout") for n in range(1000, 1010)]
    for record in new:
        sink.submit(record)
    await sink.close()
    kept = await stream_ids(client, KEYS.outcomes("checkout"))
    assert kept[-10:] == [r.record_id for r in new]
    assert len(kept) <= 10 + 100  # whole macro nodes are trimmed: at most one is left


async def test_dedup_window_forgets_old_ids(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """The seen set keeps ids for dedup_window_s only, so it does not grow without bound."""
    sink = new_sink(server.url, tmp_path / "journal", dedup_window_s=0.2)
    await sink.start()
    assert await sink.deliver([outcome(n, "checkout") for n in range(50)]) == 50
    await asyncio.sleep(0.4)  # let the ids age past the window
    assert await sink.deliver([outcome(50, "checkout")]) == 1
    await sink.close()
    assert await client.zrange(KEYS.seen("checkout"), 0, -1) == [f"{50:032x}".encode()]


async def test_consumer_groups_read_every_record_once(
    tmp_path: Path, server: RedisServer, client: Redis
) -> None:
    """XGROUP CREATE ... 0 and XREADGROUP by two consumers read each record exactly once."""
    sink = new_sink(server.url, tmp_path / "journal")
    await sink.start()
    records = [outcome(n, "checkout") for n in range(3000)]
    for record in records:
        sink.submit(record)
    await sink.close()
    key = KEYS.outcomes("checkout")
    await client.xgroup_create(key, "analysis", id="0")
    read: list[str] = []
    consumer = 0
    while True:
        consumer = 1 - consumer
        reply = await client.xreadgroup("analysis", f"c{consumer}", {key: ">"}, count=250)
        if not reply:
            break
        [(_key, entries)] = reply
        for entry_id, fields in entries:
            read.append(OutcomeRecord.from_json(fields[RECORD_FIELD.encode()]).record_id)
            await client.xack(key, "analysis", entry_id)
    assert sorted(read) == sorted(r.record_id for r in records)
    assert len(read) == len(set(read)) == 3000
    assert (await client.xpending(key, "analysis"))["pending"] == 0


async def test_tasks_are_named_owned_and_finished_by_close(
    tmp_path: Path, server: RedisServer
) -> None:
    """start() creates one named writer; close() finishes it and any reconnect task."""
    sink = new_sink(server.url, tmp_path / "journal")
    await sink.start()
    names = [task.get_name() for task in asyncio.all_tasks()]
    assert names.count("outcomes-redis:test") == 1
    with pytest.raises(RuntimeError):
        await sink.start()
    server.kill()
    sink.submit(outcome(1))
    await until(lambda: not sink.redis_available)
    assert "outcomes-redis-probe:test" in [task.get_name() for task in asyncio.all_tasks()]
    await sink.close()
    names = [task.get_name() for task in asyncio.all_tasks()]
    assert not any(name.startswith("outcomes-redis") for name in names)
    sink.submit(outcome(2))
    assert sink.dropped == 1  # closed


async def test_connect_fails_fast_with_a_redis_error(tmp_path: Path) -> None:
    """connect() to a port nobody listens on raises one of REDIS_ERRORS, leaving nothing open."""
    with pytest.raises(REDIS_ERRORS):
        await connect("redis://127.0.0.1:1", cluster=False)


async def test_connect_uses_the_password_when_the_url_has_none(tmp_path: Path) -> None:
    """connect(password=...) authenticates; without it, the refusal is one of REDIS_ERRORS."""
    with RedisServer(tmp_path / "redis", extra_args=("--requirepass", "s3cret")) as server:
        with pytest.raises(REDIS_ERRORS):
            await connect(server.url, cluster=False)
        client = await connect(server.url, cluster=False, password="s3cret")
        try:
            assert await client.ping()
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"maxlen": 0}, "maxlen"),
        ({"min_id_age_s": 0}, "min_id_age_s"),
        ({"dedup_window_s": 0}, "dedup_window_s"),
        ({"full_policy": "block"}, "full_policy"),
        ({"unit_records_max": 0}, "unit_records_max"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    """Invalid sizes, retention or policy are refused at construction, naming the option."""
    with pytest.raises(ValueError, match=message):
        new_sink("redis://127.0.0.1:1", tmp_path, **options)


# -- the units index (labels by unit) ------------------------------------------------------

UNIT = "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b"  # the pseudonym outcome() gives every record


def unit_record(n: int, unit: str = UNIT, index: int = 0, **changes: Any) -> OutcomeRecord:
    return dataclasses.replace(outcome(n), unit=unit, utterance_index=index, **changes)


async def units_of(client: Redis, experiment: str = "checkout") -> dict[str, list[str]]:
    entries = await client.hgetall(KEYS.units(experiment))
    return {field.decode(): value.decode().split() for field, value in entries.items()}


def hexid(n: int) -> str:
    return f"{n:032x}"


async def test_units_hash_indexes_primary_utterances_and_requests(
    tmp_path: Path, client: Redis, server: RedisServer
) -> None:
    """The script maps "<unit>:<index>" to the ids of primary utterance and request records,
    every session's, oldest first; shadow and session-failure records are not indexed."""
    records = [
        unit_record(1, index=0),
        unit_record(2, index=1),
        unit_record(3, index=0),  # the same unit's next session
        unit_record(4, unit="other", index=0),
        unit_record(5, index=0, role=Role.SHADOW, shadow_drops=0),
        unit_record(6, index=None, kind=Kind.SESSION_FAILURE, status="Error"),
        unit_record(7, unit="rest-unit", index=0, kind=Kind.REQUEST, protocol=Protocol.REST),
    ]
    async with new_sink(server.url, tmp_path / "journal") as sink:
        assert await sink.deliver(records) == len(records)
    assert await units_of(client) == {
        f"{UNIT}:0": [hexid(1), hexid(3)],
        f"{UNIT}:1": [hexid(2)],
        "other:0": [hexid(4)],
        "rest-unit:0": [hexid(7)],
    }
    assert await client.hlen(KEYS.records("checkout")) == len(records)


async def test_units_entry_keeps_the_newest_ids_and_never_repeats_one(
    tmp_path: Path, client: Redis, server: RedisServer
) -> None:
    """Past unit_records_max an entry keeps the newest ids; a redelivered record (the dedup
    window has passed) is not listed twice."""
    async with new_sink(server.url, tmp_path / "journal", unit_records_max=3) as sink:
        for n in range(1, 6):
            await sink.deliver([unit_record(n)])
        assert await units_of(client) == {f"{UNIT}:0": [hexid(3), hexid(4), hexid(5)]}
        await client.delete(KEYS.seen("checkout"))  # as if the dedup window had passed
        await sink.deliver([unit_record(5)])
    assert await units_of(client) == {f"{UNIT}:0": [hexid(3), hexid(4), hexid(5)]}


async def test_journalled_records_are_indexed_from_their_json(
    tmp_path: Path, client: Redis, server: RedisServer
) -> None:
    """Records delivered from the journal (after an outage) are indexed by unit as live ones
    are; a journalled line that is not a record's JSON is stored but not indexed."""
    journal_dir = tmp_path / "journal"
    Journal.open(journal_dir).append([unit_record(1), unit_record(2, unit="other", index=3)])
    async with new_sink(server.url, journal_dir) as sink:
        await until(lambda: sink.journal_pending == 0)
    assert await units_of(client) == {f"{UNIT}:0": [hexid(1)], "other:3": [hexid(2)]}
    assert units_field_of_json('{"record_id": "trunc') == ""
    assert units_field_of_json("[1]") == ""
    assert units_field_of_json(unit_record(1).to_json()) == f"{UNIT}:0"
