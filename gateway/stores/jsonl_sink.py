"""Outcome sinks: where records go, off the hot path, behind one small interface.

The relay calls `submit(record)`, which only puts the record on a bounded queue: it never
waits and never raises. One writer task per sink takes records off the queue in batches and
stores them. When the queue is full the record is refused and counted (`dropped`), so a slow
disk or store costs records, not latency. `close()` stops accepting, writes everything still
queued, then returns.

`JsonlSink` is the embedded default: an append-only file of JSON lines, no server.
`read_jsonl` is its reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import monotonic
from types import TracebackType
from typing import Any, Final, Self

from gateway.logging import get_logger
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.files import cut_torn_tail, fsync_directory

log = get_logger(__name__)

DROP_LOG_INTERVAL_S: Final = 1.0
MAX_RETRY_DELAY_S: Final = 30.0
# How long the writer waits after a batch's first record for more to join it. Each batch
# costs a hand-off to a thread and back (queue, wake-up, the interpreter lock: about 0.2 ms
# of the relay's CPU); without a wait, a gateway with hundreds of sessions wrote nearly every
# record on its own.
LINGER_S: Final = 0.05


class DropLog:
    """Counts records a sink refused, logging them at most once per DROP_LOG_INTERVAL_S so
    that an overload never turns into a flood of log lines."""

    def __init__(self) -> None:
        self.total = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def drop(self, reason: str, count: int = 1, **context: Any) -> None:
        self.total += count
        self._unlogged += count
        now = monotonic()
        if self._logged_at is None or now - self._logged_at >= DROP_LOG_INTERVAL_S:
            log.warning(
                "outcomes_dropped",
                reason=reason,
                count=self._unlogged,
                dropped=self.total,
                **context,
            )
            self._logged_at = now
            self._unlogged = 0


class JsonlSink:
    """Appends records to a local JSON-lines file from one writer task.

    Each batch (up to `batch_size` records) is one `write` of whole lines, done in a thread so
    the event loop never waits on the disk, then flushed (and fsync'd with `fsync=True`). A
    batch waits `linger_s` after its first record for others to join it (not when the queue
    already holds a full batch, nor once closing), so records reach the file within about
    that time, and the thread hand-offs do not grow with the number of sessions. The
    file is opened per batch in append mode (parents created), so renaming it away for
    rotation is safe: the next batch starts a new file. A failed write is rolled back (the
    file truncated to where the batch began), logged and retried at once; if the retry fails
    too, the batch stays in memory and is retried after `retry_delay` seconds, doubling up to
    30 s. Meanwhile the writer takes nothing more, so the queue bounds memory and further
    records are dropped and counted. Records still unwritable when `close()` makes its last
    attempt are counted in `lost` and logged as an error.

    One sink per file: two writers appending to the same file could interleave.
    """

    def __init__(
        self,
        path: Path,
        queue_size: int = 10_000,
        batch_size: int = 500,
        *,
        fsync: bool = False,
        retry_delay: float = 1.0,
        linger_s: float = LINGER_S,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if retry_delay < 0:
            raise ValueError(f"retry_delay must not be negative, got {retry_delay}")
        if linger_s < 0:
            raise ValueError(f"linger_s must not be negative, got {linger_s}")
        self._linger_s = linger_s
        self.path = path
        self._batch_size = batch_size
        self._fsync = fsync
        self._retry_delay = retry_delay
        # None is the wake-up that close() sends to a writer waiting on an empty queue.
        self._queue: asyncio.Queue[OutcomeRecord | None] = asyncio.Queue(queue_size)
        self._pending: list[OutcomeRecord] = []  # the batch being written (or failing)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._closing = asyncio.Event()
        self._prepared = False  # parents exist and a torn tail was cut off
        self._drops = DropLog()
        self._written = 0
        self._lost = 0

    @property
    def dropped(self) -> int:
        return self._drops.total

    @property
    def written(self) -> int:
        return self._written

    @property
    def lost(self) -> int:
        """Records accepted but still unwritable when the sink closed."""
        return self._lost

    @property
    def queued(self) -> int:
        """Records accepted and not yet written: the queue and the batch being written."""
        return self._queue.qsize() + len(self._pending)

    def submit(self, record: OutcomeRecord) -> None:
        if self._closed:
            self._drop("closed")
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._drop("queue_full")

    async def start(self) -> None:
        if self._writer is not None or self._closed:
            raise RuntimeError("JsonlSink.start() may be called once, before close()")
        self._spawn_writer()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._closing.set()
            # The queue is empty if the writer waits on it; otherwise it needs no wake-up.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            if self._writer is None:  # never started: a writer still stores what was queued
                self._spawn_writer()
        assert self._writer is not None
        await self._writer

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _spawn_writer(self) -> None:
        self._writer = asyncio.create_task(self._run(), name=f"outcomes-jsonl:{self.path}")
        self._writer.add_done_callback(self._writer_done)

    def _drop(self, reason: str) -> None:
        self._drops.drop(reason, path=str(self.path))

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._pending:
                batch = await self._next_batch()
                if not batch:
                    return
                self._pending = batch
            if await self._attempt() or await self._attempt():
                self._written += len(self._pending)
                self._pending = []
                failures = 0
                continue
            failures += 1
            if self._closing.is_set():
                self._give_up()
                return
            delay = min(self._retry_delay * 2 ** (failures - 1), MAX_RETRY_DELAY_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()  # close() cuts the wait short for a last try

    async def _next_batch(self) -> list[OutcomeRecord]:
        """Up to `batch_size` queued records, waiting for one; [] once closed and drained."""
        batch: list[OutcomeRecord] = []
        while not batch:
            if self._queue.empty():
                if self._closing.is_set():
                    return batch
                item = await self._queue.get()
            else:
                item = self._queue.get_nowait()
            if item is not None:
                batch.append(item)
        if self._linger_s and self._queue.qsize() < self._batch_size - 1:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._linger_s):
                    await self._closing.wait()  # close() cuts the wait short
        while len(batch) < self._batch_size and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                batch.append(item)
        return batch

    async def _attempt(self) -> bool:
        try:
            await asyncio.to_thread(self._append, self._pending)
        except OSError as exc:
            log.error(
                "outcomes_write_failed",
                path=str(self.path),
                records=len(self._pending),
                error=f"{type(exc).__name__}: {exc.strerror or exc}",
            )
            return False
        return True

    def _append(self, records: Sequence[OutcomeRecord]) -> None:
        """Append whole lines in one write (runs in a thread); roll back a failed write."""
        data = "".join([record.to_json() + "\n" for record in records]).encode("ascii")
        try:
            if not self._prepared:
                _prepare(self.path)
                self._prepared = True
            created = not self.path.exists()
            # Unbuffered, so that nothing is left in a buffer to be written after a roll-back.
            with open(self.path, "ab", buffering=0) as file:
                start = file.tell()
                try:
                    view = memoryview(data)
                    while view:
                        view = view[file.write(view) :]
                    if self._fsync:
                        os.fsync(file.fileno())
                except OSError:
                    # A partial write would leave a torn line mid-file: cut the batch off.
                    file.truncate(start)
                    raise
            if self._fsync and created:
                fsync_directory(self.path.parent)
        except OSError:
            # Check again next time: the directory may be gone, or the roll-back failed.
            self._prepared = False
            raise

    def _give_up(self) -> None:
        lost = len(self._pending)
        self._pending = []
        while not self._queue.empty():
            lost += self._queue.get_nowait() is not None
        self._lost += lost
        log.error("outcomes_lost", path=str(self.path), records=lost, lost=self._lost)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            unwritten = len(self._pending) + self._queue.qsize()
            if unwritten:
                log.error("outcomes_writer_cancelled", path=str(self.path), unwritten=unwritten)
        elif (exc := task.exception()) is not None:
            log.error("outcomes_writer_crashed", path=str(self.path), error=repr(exc))


def _prepare(path: Path) -> None:
    """Create the parents; cut off a torn last line left by a crash mid-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        file = open(path, "r+b")  # noqa: SIM115 - closed below; absence is not an error
    except FileNotFoundError:
        return
    with file:
        cut_torn_tail(file, path, "outcomes_torn_tail_removed")


def read_jsonl(path: Path) -> Iterator[OutcomeRecord]:
    """The records of a JSONL outcome file, in file order.

    An unterminated last line is the trace of a crash mid-write and is skipped; any other
    bad line raises ValueError naming the file and line number.
    """
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                return  # torn: only the last line can lack its newline
            try:
                yield OutcomeRecord.from_json(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
