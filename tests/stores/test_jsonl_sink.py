"""Tests for gateway.stores.jsonl_sink: the JSONL sink's queue, writer, failures and reader."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.outcomes.ports import OutcomeSink
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stores import jsonl_sink as sink_module
from gateway.stores.jsonl_sink import JsonlSink, read_jsonl

NEVER = 3600.0  # a retry delay no test waits for: only close() cuts it short


def make(n: int, **changes: Any) -> OutcomeRecord:
    values: dict[str, Any] = {
        "record_id": f"{n:032x}",
        "kind": Kind.UTTERANCE,
        "experiment": "checkout",
        "phase": "1",
        "variant": "base",
        "backend": "westus",
        "role": Role.PRIMARY,
        "client": "shop-app",
        "unit": "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        "unit_source": UnitSource.QUERY,
        "session_id": f"session-{n // 10}",
        "protocol": Protocol.USP,
        "utterance_index": n % 10,
        "status": "Success",
        "audio_offset_ms": 1000.0 * (n % 10),
        "audio_duration_ms": 900.0,
        "text": f"utterance number {n}",
        "word_count": 3,
    }
    values.update(changes)
    return OutcomeRecord(**values)


def ids(path: Path) -> list[str]:
    return [record.record_id for record in read_jsonl(path)]


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the writer until it has made the condition true."""
    async with asyncio.timeout(60):
        # The writer signals nothing a test could await, so poll its counters or the logs.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_jsonl_sink_is_an_outcome_sink(tmp_path: Path) -> None:
    """JsonlSink satisfies the OutcomeSink protocol the gateway holds it by."""
    sink: OutcomeSink = JsonlSink(tmp_path / "outcomes.jsonl")
    assert (sink.dropped, sink.written) == (0, 0)


async def test_records_from_many_tasks_arrive_once_in_submission_order(tmp_path: Path) -> None:
    """10,000 records submitted by 50 interleaved tasks are written once each, in order."""
    path = tmp_path / "outcomes.jsonl"
    sink = JsonlSink(path)
    submitted: list[str] = []

    async def produce(task: int) -> None:
        for i in range(200):
            record = make(task * 1000 + i)
            sink.submit(record)
            submitted.append(record.record_id)
            await asyncio.sleep(0)

    await sink.start()
    async with asyncio.TaskGroup() as group:
        for task in range(50):
            group.create_task(produce(task))
    await sink.close()
    assert len(submitted) == 10_000
    assert ids(path) == submitted
    assert (sink.written, sink.dropped, sink.lost) == (10_000, 0, 0)


async def test_close_writes_everything_queued(tmp_path: Path) -> None:
    """close() returns only once every queued record is on disk, in small batches too."""
    path = tmp_path / "outcomes.jsonl"
    sink = JsonlSink(path, batch_size=7)
    await sink.start()
    for n in range(1000):
        sink.submit(make(n))
    await sink.close()
    assert ids(path) == [f"{n:032x}" for n in range(1000)]
    assert sink.written == 1000


async def test_close_without_start_writes_the_queue(tmp_path: Path) -> None:
    """Records queued on a sink that never started are still written by close()."""
    path = tmp_path / "outcomes.jsonl"
    sink = JsonlSink(path)
    sink.submit(make(1))
    await sink.close()
    assert ids(path) == [f"{1:032x}"]


class CountingSink(JsonlSink):
    """A JSONL sink that remembers the size of each batch it appends."""

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(path, **options)
        self.batches: list[int] = []

    def _append(self, records: Any) -> None:
        self.batches.append(len(records))
        super()._append(records)


async def test_records_arriving_within_the_linger_share_one_write(tmp_path: Path) -> None:
    """Records that follow a batch's first within `linger_s` go into its one write, so the
    thread hand-offs do not grow with the sessions; they reach the file soon after."""
    path = tmp_path / "outcomes.jsonl"
    sink = CountingSink(path, linger_s=0.5)
    await sink.start()
    for n in range(5):
        sink.submit(make(n))
        await asyncio.sleep(0.02)
    await until(lambda: sink.written == 5)
    assert sink.batches == [5]
    assert ids(path) == [make(n).record_id for n in range(5)]
    await sink.close()


async def test_close_cuts_the_linger_short(tmp_path: Path) -> None:
    """A sink closing writes at once what waits for a batch to fill."""
    sink = CountingSink(tmp_path / "outcomes.jsonl", linger_s=NEVER)
    await sink.start()
    sink.submit(make(1))
    await asyncio.sleep(0.05)
    assert sink.written == 0  # lingering
    async with asyncio.timeout(10):
        await sink.close()
    assert (sink.written, sink.batches) == (1, [1])


async def test_without_a_linger_each_record_may_go_alone(tmp_path: Path) -> None:
    """linger_s=0: a record alone in the queue is written on its own at once."""
    sink = CountingSink(tmp_path / "outcomes.jsonl", linger_s=0)
    await sink.start()
    for n in range(3):
        sink.submit(make(n))
        await until(lambda n=n: sink.written == n + 1)
    assert sink.batches == [1, 1, 1]
    await sink.close()
    with pytest.raises(ValueError, match="linger_s"):
        JsonlSink(tmp_path / "x.jsonl", linger_s=-1)


async def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    """With no writer running, submits past queue_size are refused, counted and logged."""
    path = tmp_path / "outcomes.jsonl"
    sink = JsonlSink(path, queue_size=10)
    with capture_logs() as logs:
        for n in range(15):
            sink.submit(make(n))  # never raises, never waits
    assert sink.dropped == 5
    warning = events(logs, "outcomes_dropped")[0]
    assert warning["log_level"] == "warning"
    assert (warning["reason"], warning["dropped"]) == ("queue_full", 1)
    await sink.start()
    await sink.close()
    assert ids(path) == [f"{n:032x}" for n in range(10)]
    assert (sink.written, sink.dropped) == (10, 5)


async def test_drop_warnings_are_rate_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drops log at most one warning per second, carrying the drops since the last one."""
    clock = [100.0]
    monkeypatch.setattr(sink_module, "monotonic", lambda: clock[0])
    sink = JsonlSink(tmp_path / "outcomes.jsonl", queue_size=1)
    sink.submit(make(0))
    with capture_logs() as logs:
        for n in range(5):
            sink.submit(make(n))
        clock[0] += 0.5
        sink.submit(make(5))
        clock[0] += 0.5
        sink.submit(make(6))
    warnings = events(logs, "outcomes_dropped")
    assert [(w["count"], w["dropped"]) for w in warnings] == [(1, 1), (6, 7)]
    assert sink.dropped == 7
    await sink.close()


async def test_submit_after_close_is_counted_as_dropped(tmp_path: Path) -> None:
    """A record submitted after close() is not written, and counted, not raised."""
    path = tmp_path / "outcomes.jsonl"
    sink = JsonlSink(path)
    await sink.start()
    sink.submit(make(1))
    await sink.close()
    with capture_logs() as logs:
        sink.submit(make(2))
    assert (sink.written, sink.dropped) == (1, 1)
    assert events(logs, "outcomes_dropped")[0]["reason"] == "closed"
    assert ids(path) == [f"{1:032x}"]
    await sink.close()  # a second close is harmless


async def test_start_is_allowed_once_and_before_close(tmp_path: Path) -> None:
    """Starting twice, or after close(), raises RuntimeError."""
    sink = JsonlSink(tmp_path / "outcomes.jsonl")
    await sink.start()
    with pytest.raises(RuntimeError):
        await sink.start()
    await sink.close()
    with pytest.raises(RuntimeError):
        await sink.start()


async def test_writer_task_is_named_and_owned(tmp_path: Path) -> None:
    """start() creates one named writer task, which close() finishes."""
    sink = JsonlSink(tmp_path / "outcomes.jsonl")
    await sink.start()
    names = [task.get_name() for task in asyncio.all_tasks()]
    assert names.count(f"outcomes-jsonl:{tmp_path / 'outcomes.jsonl'}") == 1
    await sink.close()
    names = [task.get_name() for task in asyncio.all_tasks()]
    assert not any(name.startswith("outcomes-jsonl:") for name in names)


@pytest.mark.parametrize(("queue_size", "batch_size"), [(0, 500), (10, 0)])
def test_sizes_must_be_positive(tmp_path: Path, queue_size: int, batch_size: int) -> None:
    """A zero queue or batch size is refused at construction."""
    with pytest.raises(ValueError, match="must be at least 1"):
        JsonlSink(tmp_path / "o.jsonl", queue_size=queue_size, batch_size=batch_size)


@pytest.mark.parametrize("fsync", [False, True])
async def test_records_round_trip_through_the_file(tmp_path: Path, fsync: bool) -> None:
    """Records written by the sink read back equal, in new parent directories, fsync or not."""
    path = tmp_path / "var" / "deep" / "outcomes.jsonl"
    records = [
        make(1),
        make(2, role=Role.SHADOW, variant="custom", shadow_drops=4, text="Zoë paid 20 €\u2028"),
        make(3, kind=Kind.REQUEST, protocol=Protocol.REST, text=None, confidence=0.5),
        make(
            4,
            kind=Kind.SESSION_FAILURE,
            status="Error",
            error_code="upstream_timeout",
            error_detail='said "no"\nthen closed',
            experiment=None,
            phase=None,
            variant=None,
            backend=None,
        ),
    ]
    async with JsonlSink(path, fsync=fsync) as sink:
        for record in records:
            sink.submit(record)
    assert list(read_jsonl(path)) == records
    assert path.read_bytes().count(b"\n") == len(records)


@pytest.fixture(params=["path_is_a_directory", "parent_is_a_file"])
def blocked(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Callable[[], None]]:
    """An outcome path that cannot be written, and the repair that makes it writable."""
    if request.param == "path_is_a_directory":
        path = tmp_path / "outcomes.jsonl"
        path.mkdir()
        return path, path.rmdir
    blocker = tmp_path / "var"
    blocker.write_text("not a directory")
    return blocker / "outcomes.jsonl", blocker.unlink


async def test_write_error_is_logged_retried_and_kept(
    blocked: tuple[Path, Callable[[], None]],
) -> None:
    """A failing write is logged and retried once; the batch is kept and written later."""
    path, repair = blocked
    sink = JsonlSink(path, retry_delay=NEVER)
    with capture_logs() as logs:
        await sink.start()
        sink.submit(make(0))
        sink.submit(make(1))
        await until(lambda: len(events(logs, "outcomes_write_failed")) == 2)
        assert sink.written == 0
        repair()
        sink.submit(make(2))
        await sink.close()
    failures = events(logs, "outcomes_write_failed")
    assert len(failures) == 2
    assert all(f["log_level"] == "error" and f["records"] == 2 for f in failures)
    assert ids(path) == [f"{n:032x}" for n in range(3)]
    assert (sink.written, sink.dropped, sink.lost) == (3, 0, 0)


async def test_failing_writer_takes_no_more_so_the_queue_bounds_memory(
    blocked: tuple[Path, Callable[[], None]],
) -> None:
    """While its batch fails, the writer leaves the queue alone: it fills, then drops."""
    path, repair = blocked
    sink = JsonlSink(path, queue_size=4, batch_size=2, retry_delay=NEVER)
    with capture_logs() as logs:
        await sink.start()
        sink.submit(make(0))
        sink.submit(make(1))
        await until(lambda: len(events(logs, "outcomes_write_failed")) == 2)
        for n in range(2, 7):
            sink.submit(make(n))
    assert sink.dropped == 1
    repair()
    await sink.close()
    assert ids(path) == [f"{n:032x}" for n in range(6)]
    assert (sink.written, sink.dropped, sink.lost) == (6, 1, 0)


async def test_records_unwritable_at_close_are_counted_lost(
    blocked: tuple[Path, Callable[[], None]],
) -> None:
    """close() makes a last attempt; what still fails is counted and logged, not raised."""
    path, _ = blocked
    sink = JsonlSink(path, retry_delay=NEVER)
    with capture_logs() as logs:
        await sink.start()
        for n in range(3):
            sink.submit(make(n))
        await sink.close()
    assert (sink.written, sink.dropped, sink.lost) == (0, 0, 3)
    lost = events(logs, "outcomes_lost")
    assert [(entry["log_level"], entry["records"]) for entry in lost] == [("error", 3)]


@pytest.mark.parametrize(
    "fragment",
    [b'{"schema_version":1,"rec', make(9).to_json().encode()],
    ids=["partial_json", "complete_json_without_newline"],
)
async def test_reader_skips_a_torn_last_line(tmp_path: Path, fragment: bytes) -> None:
    """An unterminated last line (a crash mid-write) is skipped by read_jsonl."""
    path = tmp_path / "outcomes.jsonl"
    async with JsonlSink(path) as sink:
        for n in range(3):
            sink.submit(make(n))
    append(path, fragment)
    assert ids(path) == [f"{n:032x}" for n in range(3)]


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        (b"garbage\n", "not valid JSON"),
        (b"\n", "not valid JSON"),
        (b'{"schema_version":1}\n', "field 'record_id': missing"),
    ],
)
async def test_reader_raises_on_corruption_before_the_end(
    tmp_path: Path, bad_line: bytes, match: str
) -> None:
    """A bad terminated line raises ValueError naming the file, line number and problem."""
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(
        (make(0).to_json() + "\n").encode() + bad_line + (make(1).to_json() + "\n").encode()
    )
    with pytest.raises(ValueError, match=f"outcomes.jsonl:2: .*{match}"):
        list(read_jsonl(path))


def test_reader_of_an_empty_file_yields_nothing(tmp_path: Path) -> None:
    """An empty file holds no records."""
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(b"")
    assert list(read_jsonl(path)) == []


@pytest.mark.parametrize(("whole_lines", "torn_bytes"), [(2, 20), (0, 20), (2, 100_000)])
async def test_sink_cuts_a_torn_tail_before_appending(
    tmp_path: Path, whole_lines: int, torn_bytes: int
) -> None:
    """A torn line left by a crash is removed before new lines follow it, and logged."""
    path = tmp_path / "outcomes.jsonl"
    path.write_bytes(
        b"".join((make(n).to_json() + "\n").encode() for n in range(whole_lines))
        + b"x" * torn_bytes
    )
    with capture_logs() as logs:
        async with JsonlSink(path) as sink:
            sink.submit(make(7))
    assert ids(path) == [f"{n:032x}" for n in [*range(whole_lines), 7]]
    assert [e["bytes"] for e in events(logs, "outcomes_torn_tail_removed")] == [torn_bytes]


async def test_a_renamed_file_is_started_afresh(tmp_path: Path) -> None:
    """Rotation by renaming is safe: the next batch creates a new file at the path."""
    path = tmp_path / "outcomes.jsonl"
    rotated = tmp_path / "outcomes.1.jsonl"
    async with JsonlSink(path) as sink:
        sink.submit(make(0))
        await until(lambda: sink.written == 1)
        path.rename(rotated)
        sink.submit(make(1))
    assert ids(rotated) == [f"{0:032x}"]
    assert ids(path) == [f"{1:032x}"]


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int | None], None]]:
    """Sets RLIMIT_FSIZE (writes past it fail with EFBIG); None, and teardown, restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(size: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if size is None else size, hard))

    try:
        yield limit
    finally:
        limit(None)


async def test_a_partly_failed_write_is_rolled_back(
    tmp_path: Path, file_size_limit: Callable[[int | None], None]
) -> None:
    """A batch cut short by a full disk leaves no torn line and is written once later."""
    path = tmp_path / "outcomes.jsonl"
    sink = JsonlSink(path, retry_delay=NEVER)
    with capture_logs() as logs:
        await sink.start()
        sink.submit(make(0))
        await until(lambda: sink.written == 1)
        file_size_limit(path.stat().st_size + 100)  # room for part of the next line only
        sink.submit(make(1))
        sink.submit(make(2))
        await until(lambda: len(events(logs, "outcomes_write_failed")) == 2)
        assert ids(path) == [f"{0:032x}"]
        file_size_limit(None)
        await sink.close()
    assert ids(path) == [f"{n:032x}" for n in range(3)]
    assert (sink.written, sink.lost) == (3, 0)
