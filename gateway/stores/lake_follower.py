"""The continuous exporter: follows the outcome streams with a consumer group into the lake.

`speech-gateway export --follow` runs one `LakeFollower`. On every experiment's outcome
stream (the experiments set, or the experiments it is given) it creates the consumer group
`export` (`gateway.stores.keys.EXPORT_GROUP`) at the stream's start, then, stream by stream:

    XREADGROUP export <consumer> ... 0   its own pending entries first (a restart's backlog)
    XREADGROUP export <consumer> ... >   then new entries, `batch_size` at a time
    LakeWriter.append (gateway.stores.lake): a durable file (fsync, rename), ids not there yet
    XACK                                  only after that

So a follower killed at any point loses nothing (unacknowledged entries stay pending and are
read again by the next start under the same consumer name) and duplicates nothing (the
lake skips record ids a partition already holds). While the group exists, the outcome sink's
retention never trims an entry the group has not acknowledged
(`gateway.stores.redis_sink_script`).

Labels change at any time (review comes after the traffic); every `labels_every_s`, and
when it stops, the follower replaces the labels file of each experiment it follows with its
current labels. `stop` (set by SIGTERM or
SIGINT in the CLI) ends the loop after the batch in hand. Redis away, or a failed write to
the lake, is logged and retried with a capped back-off; a record that cannot be read stops
the follower with an InvalidRecordError naming the stream and entry (it is left pending).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from redis.exceptions import RedisError, ResponseError

from gateway.errors import StoreUnavailable
from gateway.logging import get_logger
from gateway.outcomes.record import InvalidRecordError, OutcomeRecord
from gateway.stores.keys import EXPORT_GROUP, RECORD_FIELD, RedisKeys
from gateway.stores.lake import LakeWriter
from gateway.stores.redis_client import RedisClient
from gateway.stores.redis_label_store import RedisLabelStore

log = get_logger(__name__)

DEFAULT_CONSUMER: Final = "exporter"
BACKOFF_MAX_S: Final = 30.0


@dataclass(slots=True)
class FollowStats:
    """What a follower did so far."""

    batches: int = 0
    exported: int = 0  # records written to the lake
    present: int = 0  # records the lake already held (a redelivery after a crash)
    acknowledged: int = 0  # stream entries acknowledged
    experiments: set[str] = field(default_factory=set)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class LakeFollower:
    """Exports new outcome stream entries to the lake as they arrive; see the module doc."""

    def __init__(
        self,
        client: RedisClient,
        keys: RedisKeys,
        root: Path,
        *,
        consumer: str = DEFAULT_CONSUMER,
        experiments: Sequence[str] = (),
        batch_size: int = 5_000,
        poll_s: float = 1.0,
        labels_every_s: float = 300.0,
        backoff_initial_s: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if poll_s <= 0 or labels_every_s <= 0 or backoff_initial_s <= 0:
            raise ValueError("poll_s, labels_every_s and backoff_initial_s must be positive")
        if not consumer:
            raise ValueError("consumer must not be empty")
        self.client = client
        self.keys = keys
        self.root = root
        self.consumer = consumer
        self.stats = FollowStats()
        self._only = tuple(experiments)
        self._batch_size = batch_size
        self._poll_s = poll_s
        self._labels_every_s = labels_every_s
        self._backoff_initial_s = backoff_initial_s
        self._grouped: set[str] = set()  # streams with the group, created or found
        self._backlog: set[str] = set()  # streams whose own pending entries are still read
        self._followed: set[str] = set()  # experiments whose labels files are refreshed
        self._writer: LakeWriter | None = None  # while run() runs

    async def run(self, stop: asyncio.Event) -> FollowStats:
        """Follow until `stop` is set; then export the labels and return the totals."""
        self._writer = LakeWriter(self.root)
        try:
            await self._follow(stop)
        finally:
            self._writer.close()
        log.info(
            "export_follow_stopped",
            exported=self.stats.exported,
            present=self.stats.present,
            acknowledged=self.stats.acknowledged,
        )
        return self.stats

    def _lake(self) -> LakeWriter:
        assert self._writer is not None, "only while run() runs"
        return self._writer

    async def _follow(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        labels_at = loop.time() + self._labels_every_s
        backoff = self._backoff_initial_s
        while not stop.is_set():
            try:
                worked = await self._round(stop)
                if loop.time() >= labels_at:
                    await self._export_labels()
                    labels_at = loop.time() + self._labels_every_s
            except InvalidRecordError:
                raise
            except (RedisError, OSError, TimeoutError, StoreUnavailable) as exc:
                # Redis away, or the lake's disk: the batch in hand was not acknowledged, so
                # it is still pending; read the pending entries first again.
                self._backlog |= self._grouped
                log.warning(
                    "export_retrying",
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in_s=round(backoff, 3),
                )
                await _wait(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = self._backoff_initial_s
            if not worked:
                await _wait(stop, self._poll_s)
        try:
            await self._export_labels()
        except (RedisError, OSError, TimeoutError, StoreUnavailable) as exc:
            # The outcomes are exported and acknowledged; the labels follow at the next run.
            log.warning("export_labels_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _experiments(self) -> list[str]:
        if self._only:
            return list(self._only)
        members = await self.client.smembers(self.keys.experiments)
        return sorted(_text(m) for m in members)

    async def _round(self, stop: asyncio.Event) -> bool:
        """One batch from each stream that has entries; whether any had."""
        worked = False
        for experiment in await self._experiments():
            if stop.is_set():
                break
            key = self.keys.outcomes(experiment)
            if key not in self._grouped:
                await self._create_group(key)
                self._followed.add(experiment)
            if await self._batch(experiment, key):
                worked = True
        return worked

    async def _create_group(self, key: str) -> None:
        try:
            # At the stream's start ("0"): the first follower exports what is there already.
            await self.client.xgroup_create(key, EXPORT_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(key)
        self._backlog.add(key)

    async def _batch(self, experiment: str, key: str) -> bool:
        """Export and acknowledge one batch of the stream; False if it had nothing."""
        entries = await self._read(key)
        if not entries:
            return False
        records: list[OutcomeRecord] = []
        ids: list[str] = []
        for entry_id, fields in entries:
            ids.append(_text(entry_id))
            if not fields:  # trimmed by hand while pending: nothing left to export
                continue
            records.append(_record(fields, key, _text(entry_id)))
        result = await asyncio.to_thread(self._lake().append, records)
        # The lake's files are durable now; only then may Redis forget the entries.
        await self.client.xack(key, EXPORT_GROUP, *ids)
        self.stats.batches += 1
        self.stats.exported += result.added
        self.stats.present += result.present
        self.stats.acknowledged += len(ids)
        self.stats.experiments.add(experiment)
        log.info(
            "export_batch",
            experiment=experiment,
            entries=len(ids),
            exported=result.added,
            already_exported=result.present,
            last_entry=ids[-1],
        )
        return True

    async def _read(self, key: str) -> list[tuple[bytes | str, dict[bytes | str, bytes | str]]]:
        """The next entries: this consumer's pending ones first, then new ones."""
        if key in self._backlog:
            pending = await self._xreadgroup(key, "0")
            if pending:
                return pending
            self._backlog.discard(key)
        return await self._xreadgroup(key, ">")

    async def _xreadgroup(
        self, key: str, start: str
    ) -> list[tuple[bytes | str, dict[bytes | str, bytes | str]]]:
        reply: Any = await self.client.xreadgroup(
            EXPORT_GROUP, self.consumer, {key: start}, count=self._batch_size
        )
        if not reply:
            return []
        # RESP2: [[stream, [(id, fields), ...]]]; RESP3: {stream: [[(id, fields), ...]]}.
        if isinstance(reply, dict):
            streams = list(reply.values())
            return list(streams[0][0]) if streams and streams[0] else []
        return list(reply[0][1])

    async def _export_labels(self) -> None:
        store = RedisLabelStore(self.client, self.keys)
        for experiment in sorted(self._followed):
            labels = await store.all(experiment)
            count = await asyncio.to_thread(
                self._lake().replace_labels, experiment, labels.values()
            )
            log.info("export_labels", experiment=experiment, labels=count)


def _record(fields: dict[bytes | str, bytes | str], key: str, entry_id: str) -> OutcomeRecord:
    value = fields.get(RECORD_FIELD)
    if value is None:
        value = fields.get(RECORD_FIELD.encode())
    if value is None:
        raise InvalidRecordError(f"{key} {entry_id}: no field {RECORD_FIELD!r}")
    try:
        return OutcomeRecord.from_json(value)
    except ValueError as exc:
        raise InvalidRecordError(f"{key} {entry_id}: {exc}") from exc


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Up to `seconds`, or until `stop` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
