"""The local spool of outcome records that a store (Redis) has not acknowledged yet.

`RedisSink` (`gateway.stores.redis_sink`) appends here what it cannot deliver and reads it
back, oldest first, when the store answers again. The journal is a directory:

    000001.jsonl   000002.jsonl ...   segments: one record per line (OutcomeRecord.to_json),
                                      a new segment every `segment_records` records
    committed                         {"segment": n, "offset": bytes}: where the next
                                      undelivered record starts, replaced atomically

`oldest_batch` returns `JournalEntry`s: each record's id and experiment (what a store needs
to route and deduplicate it) and its JSON line as written, so delivering from the journal
costs one `json.loads` per record, not a full parse and a new serialisation.
`JournalEntry.record()` gives the validated `OutcomeRecord`.

Delivery is at least once: `oldest_batch` reads from the committed position without moving
it, the caller stores the batch, then `acknowledge`s it, which advances the committed position
and deletes segments read to their end. A crash between storing and acknowledging delivers
the batch again, so the store must deduplicate on `record_id` (the Redis sink's script does).
That is also why `committed` is not fsync'd: a lost acknowledgement only repeats a delivery.

Appends are whole lines written in one call, fsync'd (with the directory entry of a new
segment) when `fsync=True`, so an acknowledged append survives a power cut. A crash in the
middle of an append leaves a torn last line: `open` cuts it off (logged), and readers skip a
line without its newline. A line that is not a valid record is logged and skipped.

The journal holds at most `max_records` undelivered records: `append` stores what fits and
returns how many it took; the caller decides what the rest cost (the sink counts them as
dropped).

Every method does blocking file I/O: call them from a thread (`asyncio.to_thread`). They are
serialised by a lock, so a call abandoned by a cancelled caller cannot interleave with the
next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from gateway.logging import get_logger
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.files import cut_torn_tail, fsync_directory

log = get_logger(__name__)

SEGMENT_SUFFIX: Final = ".jsonl"
COMMITTED_NAME: Final = "committed"
_CHUNK: Final = 1024 * 1024
_RECORD_ID: Final = re.compile(r"[0-9a-f]{32}")


class JournalEntry(NamedTuple):
    """One journalled record: its routing and idempotency fields, and its JSON as written."""

    record_id: str
    experiment: str | None
    json: str  # OutcomeRecord.to_json() of the record

    @classmethod
    def of(cls, record: OutcomeRecord) -> JournalEntry:
        return cls(record.record_id, record.experiment, record.to_json())

    @classmethod
    def parse(cls, line: bytes) -> JournalEntry:
        """The entry of one journal line (without checking every field); ValueError if bad."""
        text = line.decode("ascii").rstrip("\n")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        record_id, experiment = data.get("record_id"), data.get("experiment")
        if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
            raise ValueError(f"bad record_id {record_id!r}")
        if experiment is not None and not isinstance(experiment, str):
            raise ValueError(f"bad experiment {experiment!r}")
        return cls(record_id, experiment, text)

    def record(self) -> OutcomeRecord:
        """The full, validated record."""
        return OutcomeRecord.from_json(self.json)


@dataclass(frozen=True, slots=True)
class JournalPosition:
    """The end of a batch read by `Journal.oldest_batch`: what `acknowledge` commits."""

    segment: int
    offset: int  # bytes into the segment, just past the batch's last line
    lines: int  # lines the batch consumed: its records plus any skipped bad lines


class Journal:
    """An append-only, bounded, crash-safe queue of outcome records in a directory."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_records: int = 10_000,
        max_records: int = 1_000_000,
        fsync: bool = True,
    ) -> None:
        """Use `Journal.open`, which also reads the state left by a previous process."""
        if segment_records < 1:
            raise ValueError(f"segment_records must be at least 1, got {segment_records}")
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        self.directory = directory
        self.max_records = max_records
        self._segment_records = segment_records
        self._fsync = fsync
        self._lock = threading.Lock()
        self._head = (1, 0)  # committed (segment, offset): the oldest undelivered record
        self._tail = 1  # the segment appends go to
        self._tail_lines = 0
        self._segments: set[int] = set()  # segment files that exist
        self._pending = 0

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        segment_records: int = 10_000,
        max_records: int = 1_000_000,
        fsync: bool = True,
    ) -> Journal:
        """Open (creating) the journal in `directory` and recover its state after a crash."""
        journal = cls(
            directory, segment_records=segment_records, max_records=max_records, fsync=fsync
        )
        with journal._lock:
            journal._recover()
        return journal

    @property
    def pending(self) -> int:
        """Records appended and not yet acknowledged."""
        return self._pending

    @property
    def full(self) -> bool:
        return self._pending >= self.max_records

    def append(self, records: Sequence[OutcomeRecord]) -> int:
        """Append records in order; return how many fit under `max_records` (a prefix).

        Raises OSError if nothing could be written. If a write fails after an earlier
        segment of the same call was written, the error is logged and the count written so
        far is returned.
        """
        with self._lock:
            take = records[: max(0, self.max_records - self._pending)]
            written = 0
            while written < len(take):
                if self._tail_lines >= self._segment_records:
                    self._tail += 1
                    self._tail_lines = 0
                room = self._segment_records - self._tail_lines
                chunk = take[written : written + room]
                try:
                    self._write(self._tail, chunk)
                except OSError as exc:
                    if not written:
                        raise
                    log.error(
                        "outcomes_journal_write_failed",
                        directory=str(self.directory),
                        records=len(take) - written,
                        error=f"{type(exc).__name__}: {exc.strerror or exc}",
                    )
                    break
                self._tail_lines += len(chunk)
                self._pending += len(chunk)
                written += len(chunk)
            return written

    def oldest_batch(self, n: int) -> tuple[JournalPosition, list[JournalEntry]]:
        """Up to `n` of the oldest undelivered records, all from one segment, in order.

        Reading does not consume: the same batch comes back until it is acknowledged. An
        empty batch with `lines == 0` means nothing is pending.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        with self._lock:
            segment, offset = self._head
            for number in sorted(s for s in self._segments if s >= segment):
                if number != segment:
                    offset = 0  # an earlier segment was read to its end
                position, records = self._read(number, offset, n)
                if position.lines:
                    return position, records
            if self._pending:
                log.error(
                    "outcomes_journal_count_mismatch",
                    directory=str(self.directory),
                    pending=self._pending,
                )
                self._pending = 0
            return JournalPosition(segment, offset, 0), []

    def acknowledge(self, position: JournalPosition) -> None:
        """The batch ending at `position` is stored: commit past it, delete read segments."""
        with self._lock:
            for number in sorted(s for s in self._segments if s < position.segment):
                self._delete(number)
            self._pending = max(0, self._pending - position.lines)
            path = self._path(position.segment)
            try:
                finished = position.offset >= path.stat().st_size
            except FileNotFoundError:
                finished = True
            if finished:
                # Deleting the tail too starts the next append in a fresh segment, so a
                # drained journal holds no data files.
                if position.segment >= self._tail:
                    self._tail = position.segment + 1
                    self._tail_lines = 0
                self._head = (position.segment + 1, 0)
                self._save_head()
                self._delete(position.segment)
            else:
                self._head = (position.segment, position.offset)
                self._save_head()

    def sync(self) -> None:
        """Flush every segment to disk (a no-op when each append is fsync'd already)."""
        with self._lock:
            if self._fsync:
                return
            for number in sorted(self._segments):
                fd = os.open(self._path(number), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_directory(self.directory)

    # -- internals (called with the lock held) --------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:06d}{SEGMENT_SUFFIX}"

    def _write(self, segment: int, records: Sequence[OutcomeRecord]) -> None:
        data = "".join([record.to_json() + "\n" for record in records]).encode("ascii")
        path = self._path(segment)
        created = segment not in self._segments
        # Unbuffered, so that nothing is left in a buffer to be written after a roll-back.
        with open(path, "ab", buffering=0) as file:
            start = file.tell()
            try:
                view = memoryview(data)
                while view:
                    view = view[file.write(view) :]
                if self._fsync:
                    os.fsync(file.fileno())
            except OSError:
                file.truncate(start)  # no torn line mid-segment
                raise
        self._segments.add(segment)
        if created and self._fsync:
            fsync_directory(self.directory)

    def _read(
        self, segment: int, offset: int, n: int
    ) -> tuple[JournalPosition, list[JournalEntry]]:
        records: list[JournalEntry] = []
        lines = 0
        bad = 0
        error = ""
        try:
            file = open(self._path(segment), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return JournalPosition(segment, offset, 0), records
        with file:
            file.seek(offset)
            while lines < n:
                line = file.readline()
                if not line.endswith(b"\n"):
                    break  # end of segment, or a torn last line
                lines += 1
                offset += len(line)
                try:
                    records.append(JournalEntry.parse(line))
                except ValueError as exc:
                    bad += 1
                    error = str(exc)
        if bad:
            log.error(
                "outcomes_journal_bad_lines_skipped",
                segment=str(self._path(segment)),
                lines=bad,
                error=error,
            )
        return JournalPosition(segment, offset, lines), records

    def _delete(self, segment: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(segment).unlink()
        self._segments.discard(segment)

    def _save_head(self) -> None:
        segment, offset = self._head
        temporary = self.directory / (COMMITTED_NAME + ".tmp")
        temporary.write_text(json.dumps({"segment": segment, "offset": offset}) + "\n")
        os.replace(temporary, self.directory / COMMITTED_NAME)

    def _load_head(self) -> tuple[int, int] | None:
        path = self.directory / COMMITTED_NAME
        try:
            data = json.loads(path.read_bytes())
            segment, offset = data["segment"], data["offset"]
            if not (isinstance(segment, int) and isinstance(offset, int)):
                raise ValueError("segment and offset must be integers")
            if segment < 1 or offset < 0:
                raise ValueError("segment must be >= 1 and offset >= 0")
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            # Only a lost acknowledgement: redelivering from the oldest segment is safe.
            log.warning("outcomes_journal_commit_unreadable", path=str(path), error=str(exc))
            return None
        return segment, offset

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        numbers = sorted(
            int(path.stem)
            for path in self.directory.glob(f"*{SEGMENT_SUFFIX}")
            if path.stem.isdigit()
        )
        head = self._load_head()
        if head is None:
            head = (numbers[0] if numbers else 1, 0)
        segment, offset = head
        for number in numbers:
            if number < segment:  # read to its end, acknowledged, deleted too late
                self._path(number).unlink()
        numbers = [number for number in numbers if number >= segment]
        self._segments = set(numbers)
        if numbers and numbers[0] != segment:
            segment, offset = numbers[0], 0
        if numbers:
            with open(self._path(numbers[-1]), "r+b") as file:
                cut_torn_tail(file, self._path(numbers[-1]), "outcomes_journal_torn_tail_removed")
            offset = min(offset, self._path(segment).stat().st_size)
            self._tail = numbers[-1]
            self._tail_lines = _count_lines(self._path(self._tail), 0)
        else:
            self._tail = segment
            self._tail_lines = 0
        self._head = (segment, offset)
        self._pending = sum(
            _count_lines(self._path(number), offset if number == segment else 0)
            for number in numbers
        )
        if self._pending:
            log.info(
                "outcomes_journal_opened",
                directory=str(self.directory),
                pending=self._pending,
                segments=len(numbers),
            )


def _count_lines(path: Path, start: int) -> int:
    count = 0
    with open(path, "rb") as file:
        file.seek(start)
        while chunk := file.read(_CHUNK):
            count += chunk.count(b"\n")
    return count
