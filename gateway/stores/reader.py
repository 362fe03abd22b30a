"""Outcome readers: what the analysis iterates, from either outcome store.

An `OutcomeReader` streams one experiment's outcome records (optionally within a time
window) and hands over its labels; `FileReader` reads the embedded JSONL file
(`gateway.stores.jsonl_sink`), `RedisReader` the experiment's Redis stream (key layout:
`gateway.stores.keys`). Both yield each `record_id` once (the first copy), so a record that a
retry delivered twice is counted once. The labels come from the matching label store
(`gateway.stores.file_label_store`, `gateway.stores.redis_label_store`).

A Redis that is unavailable, or a file that cannot be read, raises `StoreUnavailable`, also
in the middle of an iteration. A missing outcome file is not an outage: `FileReader` raises
FileNotFoundError for it, which callers take as "no records yet".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Final

from gateway.constants import NO_EXPERIMENT
from gateway.outcomes.labels import Label
from gateway.outcomes.record import InvalidRecordError, OutcomeRecord
from gateway.stores.failures import store_iteration, translated, translated_iteration
from gateway.stores.file_label_store import FileLabelStore
from gateway.stores.keys import RECORD_FIELD, RedisKeys
from gateway.stores.redis_client import RedisClient
from gateway.stores.redis_label_store import RedisLabelStore

_FILE_BATCH: Final = 1_000  # lines read per trip to the worker thread
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _check_window(since: datetime | None, until: datetime | None) -> None:
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, e.g. datetime(..., tzinfo=UTC)")


def _within(record: OutcomeRecord, since: datetime | None, until: datetime | None) -> bool:
    if since is None and until is None:
        return True
    at = datetime.fromisoformat(record.timestamp)
    return (since is None or at >= since) and (until is None or at < until)


def _ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded down."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


class FileReader:
    """Reads a JSONL outcome file and its label file (`FileLabelStore`).

    The file is streamed in batches read in a worker thread, so memory does not grow with
    the file (beyond the set of ids already seen) and the event loop never waits on the
    disk. As in `read_jsonl`, an unterminated last line (a write in progress, or torn by a
    crash) is skipped and any other bad line raises InvalidRecordError naming the file, the
    line and (when it can be read) the record id.
    A missing outcome file raises FileNotFoundError; a missing label file means no labels.
    """

    def __init__(self, outcomes_path: Path, labels_path: Path) -> None:
        self.outcomes_path = outcomes_path
        self.labels_path = labels_path
        self._labels = FileLabelStore(outcomes_path, labels_path)

    def outcomes(
        self,
        experiment: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncGenerator[OutcomeRecord, None]:
        return translated_iteration(
            self._outcomes(experiment, since, until),
            "FileReader.outcomes",
            keep=(FileNotFoundError,),
        )

    async def labels(self, experiment: str) -> dict[str, Label]:
        return await self._labels.all(experiment)

    async def experiments(self) -> list[str]:
        found: set[str] = set()
        with translated("FileReader.experiments", keep=(FileNotFoundError,)):
            async with aclosing(self._records()) as records:
                async for record in records:
                    found.add(record.experiment or NO_EXPERIMENT)
        return sorted(found)

    async def _outcomes(
        self, experiment: str, since: datetime | None, until: datetime | None
    ) -> AsyncGenerator[OutcomeRecord, None]:
        _check_window(since, until)
        seen: set[str] = set()
        # aclosing: a consumer that stops early closes the file now, not at garbage collection.
        async with aclosing(self._records()) as records:
            async for record in records:
                if (record.experiment or NO_EXPERIMENT) != experiment:
                    continue
                if record.record_id in seen or not _within(record, since, until):
                    continue
                seen.add(record.record_id)
                yield record

    async def _records(self) -> AsyncGenerator[OutcomeRecord, None]:
        file = await asyncio.to_thread(open, self.outcomes_path, "rb")
        try:
            line = 0
            while True:
                batch = await asyncio.to_thread(self._read_batch, file, line)
                for record in batch:
                    yield record
                if len(batch) < _FILE_BATCH:
                    return
                line += len(batch)
        finally:
            await asyncio.to_thread(file.close)

    def _read_batch(self, file: IO[bytes], first: int) -> list[OutcomeRecord]:
        batch: list[OutcomeRecord] = []
        for number in range(first + 1, first + _FILE_BATCH + 1):
            raw = file.readline()
            if not raw.endswith(b"\n"):
                break  # end of file, or a torn last line
            try:
                batch.append(OutcomeRecord.from_json(raw))
            except ValueError as exc:
                raise InvalidRecordError(f"{self.outcomes_path}:{number}: {exc}") from exc
        return batch


class RedisReader:
    """Reads an experiment's outcome stream with `XRANGE`, `page` entries at a time.

    Each page continues after the last entry id of the one before; nothing else is read
    (no KEYS or SCAN). Records are yielded in stream (arrival) order.

    The window is applied to each record's own `timestamp`. Stream entry ids are the time a
    record *reached Redis*, which is after its timestamp, so the range starts at the entry
    id of `since - skew` (`skew` absorbs clock differences between the gateway and Redis)
    and, by default, runs to the end of the stream: records spooled during a Redis outage
    and delivered later carry entry ids long after their timestamps, and are still found.
    Set `max_delay` to stop the range at the entry id of `until + max_delay` instead, when
    a record is known to reach Redis within that delay (faster for old windows).
    """

    def __init__(
        self,
        client: RedisClient,
        keys: RedisKeys | None = None,
        page: int = 1000,
        *,
        skew: timedelta = timedelta(minutes=5),
        max_delay: timedelta | None = None,
    ) -> None:
        if page < 1:
            raise ValueError(f"page must be at least 1, got {page}")
        if skew < timedelta(0) or (max_delay is not None and max_delay < timedelta(0)):
            raise ValueError("skew and max_delay must not be negative")
        self.client = client
        self.keys = keys or RedisKeys()
        self.page = page
        self.skew = skew
        self.max_delay = max_delay
        self._labels = RedisLabelStore(client, self.keys)

    def entry_range(self, since: datetime | None, until: datetime | None) -> tuple[str, str]:
        """The (min, max) stream entry ids that may hold records of the window."""
        _check_window(since, until)
        low = "-" if since is None else f"{max(0, _ms(since - self.skew))}-0"
        if until is None or self.max_delay is None:
            return low, "+"
        return low, str(_ms(until + self.max_delay))  # "<ms>": every sequence number of it

    @store_iteration
    async def outcomes(
        self,
        experiment: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncGenerator[OutcomeRecord, None]:
        key = self.keys.outcomes(experiment)
        low, high = self.entry_range(since, until)
        seen: set[str] = set()
        while True:
            entries = await self.client.xrange(key, low, high, count=self.page)
            if not entries:
                return
            for entry_id, fields in entries:
                if entry_id is None or fields is None:  # a deleted entry
                    continue
                record = _record(fields, key, entry_id)
                if record.record_id in seen or not _within(record, since, until):
                    continue
                seen.add(record.record_id)
                yield record
            last = entries[-1][0]
            if len(entries) < self.page or last is None:
                return
            low = "(" + _text(last)  # exclusive: continue after the last entry

    async def labels(self, experiment: str) -> dict[str, Label]:
        return await self._labels.all(experiment)

    async def experiments(self) -> list[str]:
        return await self._labels.experiments()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _record(
    fields: dict[bytes | str, bytes | str], key: str, entry_id: bytes | str
) -> OutcomeRecord:
    value = fields.get(RECORD_FIELD)
    if value is None:
        value = fields.get(RECORD_FIELD.encode())
    if value is None:
        raise InvalidRecordError(f"{key} {_text(entry_id)}: no field {RECORD_FIELD!r}")
    try:
        return OutcomeRecord.from_json(value)
    except ValueError as exc:
        raise InvalidRecordError(f"{key} {_text(entry_id)}: {exc}") from exc
