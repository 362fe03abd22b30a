"""The Redis Streams outcome sink: batched, deduplicated, and spooled to disk while Redis is away.

The counterpart of `JsonlSink` (`gateway.stores.jsonl_sink`) for production: records go to one
stream per experiment (keys in `gateway.stores.keys`), readable by any number of consumer groups.
This module is the sink's machinery (queue, writer task, journal, outage and retention
logging); the Lua script it writes each batch with is `gateway.stores.redis_sink_script`.

How a record travels:

    submit() ──put_nowait──► queue ──writer task──► Redis (one Lua script per experiment/batch)
        │ queue full (policy "journal")                 │ unavailable / not acknowledged
        └──► overflow list ──writer task──► journal ◄────┘   (gateway.stores.journal, on disk)
                                               │
                                               └──► Redis, oldest first, once it answers again

* `submit()` never blocks or raises. Past `queue_size`, policy `drop_newest` drops and counts;
  policy `journal` appends the record to a second bounded list (`overflow_size`, default
  `queue_size`) and wakes the writer, which moves everything queued, then that list, to the
  journal in one append in a thread. Once the list holds a record, later records join it too
  (not the queue), so the journal receives them in submission order. submit() itself never
  touches the disk: a burst faster than the journal can be written (serialising costs a few
  microseconds per record) fills the list, and only then are records dropped and counted.
* Exactly once as readers see it: the script skips a record whose `record_id` is in the
  experiment's `seen` set (kept for `dedup_window_s`), so a batch that Redis applied but whose
  reply was lost, or a journal batch delivered again after a crash, adds nothing.
* Order: while the journal holds anything, new records go behind it (to the queue, or to the
  journal too during an outage); the journal is delivered oldest first and acknowledged batch
  by batch, and live writing resumes only when it is empty. Per experiment, the stream keeps
  submission order.
* Outage: a failed or unacknowledged batch (any of `REDIS_ERRORS`, any other `RedisError`, or
  no reply within `write_timeout_s`) goes to the journal; one warning is logged per outage
  (`outcomes_redis_unavailable`, with the journal size); the writer keeps moving new records
  to the journal while a reconnect task pings Redis with a capped exponential backoff. The
  outage ends with the first delivery that succeeds (`outcomes_redis_recovered`).
* `close()` (the SIGTERM path): stop accepting, deliver the journal and the queue to Redis for
  at most `close_timeout_s`, journal whatever is left (fsync'd), close the client. The next
  `start()` on the same journal directory delivers it first.

Labels: beside each new record the script keeps the label targets, the `records` hash
(record_id -> entry id) and, for a primary utterance or request record, the `units` hash
("<unit>:<utterance_index>" -> record ids), so that `gateway.stores.redis_label_store` can
find a record by id or by the unit that made it. Both follow the stream's retention: a record
trimmed from the stream is removed from them by the same script (the `indexed` list keeps
them in stream order; see `gateway.stores.redis_sink_script`), so their memory is bounded
as the stream's is.

Retention and the exporter: while a stream has the export consumer group
(`speech-gateway export --follow`), trimming stops at the first entry the group has not
acknowledged; the sink logs `outcomes_retention_waiting_for_export` once when retention
starts waiting (`retention_waiting` names the experiments) and `outcomes_retention_resumed`.

Persistence: `start()` checks once, in the background, that Redis keeps an AOF or RDB
snapshots (`CONFIG GET appendonly`, `save`, on every primary of a cluster) and logs a
warning (`outcomes_redis_not_persistent`) if not: records Redis acknowledged are no longer
in the journal, so a Redis restart without persistence loses them. Where CONFIG is disabled
(managed services) it logs that it could not check (`outcomes_redis_persistence_unchecked`).

Limits: redelivery is deduplicated only within `dedup_window_s`; a `units` entry keeps the
newest `unit_records_max` ids. One sink per journal directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from time import monotonic
from types import TracebackType
from typing import Final, Literal, Self

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.constants import NO_EXPERIMENT
from gateway.logging import get_logger
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.journal import Journal, JournalEntry
from gateway.stores.jsonl_sink import DropLog
from gateway.stores.keys import EXPORT_GROUP, RECORD_FIELD, UNIT_RECORDS_MAX, RedisKeys
from gateway.stores.redis_client import REDIS_ERRORS, RedisClient, persistence
from gateway.stores.redis_sink_script import (
    TRIM_PER_CALL,
    TRIM_PER_RECORD,
    WRITE_SCRIPT,
    units_field,
    units_field_of_json,
)

log = get_logger(__name__)

FullPolicy = Literal["drop_newest", "journal"]
ClientFactory = Callable[[], Awaitable[RedisClient]]

# During an outage the writer moves queued records to the journal at least this often, so
# that they are on disk (a crash loses less) and the queue has room.
SPILL_INTERVAL_S: Final = 0.1


class RedisSink:
    """Stores outcome records in Redis Streams from one writer task; see the module doc."""

    def __init__(
        self,
        client_factory: ClientFactory,
        keys: RedisKeys,
        journal_dir: Path,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        maxlen: int | None = None,
        min_id_age_s: float | None = None,
        dedup_window_s: float = 24 * 3600,
        full_policy: FullPolicy = "journal",
        overflow_size: int | None = None,
        journal_max_records: int = 1_000_000,
        journal_segment_records: int = 10_000,
        journal_fsync: bool = True,
        write_timeout_s: float = 5.0,
        close_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        unit_records_max: int = UNIT_RECORDS_MAX,
    ) -> None:
        for name, value in (
            ("queue_size", queue_size),
            ("batch_size", batch_size),
            ("overflow_size", queue_size if overflow_size is None else overflow_size),
            ("journal_max_records", journal_max_records),
            ("journal_segment_records", journal_segment_records),
            ("unit_records_max", unit_records_max),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be at least 1 (or None), got {maxlen}")
        if min_id_age_s is not None and min_id_age_s <= 0:
            raise ValueError(f"min_id_age_s must be positive (or None), got {min_id_age_s}")
        for name, seconds in (
            ("dedup_window_s", dedup_window_s),
            ("write_timeout_s", write_timeout_s),
            ("close_timeout_s", close_timeout_s),
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
        ):
            if seconds <= 0:
                raise ValueError(f"{name} must be positive, got {seconds}")
        if full_policy not in ("drop_newest", "journal"):
            raise ValueError(f"full_policy must be 'drop_newest' or 'journal', got {full_policy!r}")
        self.keys = keys
        self.journal_dir = journal_dir
        self._client_factory = client_factory
        self._batch_size = batch_size
        self._full_policy: FullPolicy = full_policy
        self._overflow_size = queue_size if overflow_size is None else overflow_size
        self._write_timeout = write_timeout_s
        self._close_timeout = close_timeout_s
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._journal_segment_records = journal_segment_records
        self._journal_max_records = journal_max_records
        self._journal_fsync = journal_fsync
        # The script's fixed arguments.
        self._script_head: list[int | str] = [
            maxlen or 0,
            max(1, round(min_id_age_s * 1000)) if min_id_age_s else 0,
            round(dedup_window_s * 1000),
            RECORD_FIELD,
            unit_records_max,
        ]

        self._queue: asyncio.Queue[OutcomeRecord] = asyncio.Queue(queue_size)
        self._overflow: list[OutcomeRecord] = []
        self._wakeup = asyncio.Event()
        self._waiting = False  # the writer waits on _wakeup...
        self._wake_at = 1  # ...until the queue holds this many records
        self._closed = False
        self._close_deadline = 0.0  # loop time by which close() stops trying Redis

        self._journal: Journal | None = None
        self._client: RedisClient | None = None
        self._script: AsyncScript | None = None
        self._connecting = asyncio.Lock()  # the writer and the prober share one client
        self._registered: set[str] = set()  # experiment ids known to be in `experiments`
        self._writer: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None  # the start-up persistence check

        self._outage = False  # deliveries stopped until the prober hears Redis again
        self._redis_back = False  # set by the prober, taken by the writer
        self._outage_since: float | None = None  # from the first failure to the next success
        self._backoff = backoff_initial_s

        self._written = 0
        self._duplicates = 0
        self._held: set[str] = set()  # experiments whose retention waits for the exporter
        self._drops = DropLog()
        self._lost = 0
        self._journalled = 0
        self._delivered_from_journal = 0

    # -- counters ---------------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Records Redis acknowledged (including those it already had: `duplicates`)."""
        return self._written

    @property
    def duplicates(self) -> int:
        """Acknowledged records that Redis already had (a redelivery); not added again."""
        return self._duplicates

    @property
    def dropped(self) -> int:
        """Records refused: queue (and overflow) full, journal full, or sink closed."""
        return self._drops.total

    @property
    def lost(self) -> int:
        """Accepted records that neither Redis nor the journal (a disk error) could take."""
        return self._lost

    @property
    def journalled(self) -> int:
        """Records written to the journal by this sink."""
        return self._journalled

    @property
    def queued(self) -> int:
        """Records accepted and waiting in memory for the writer (queue and overflow)."""
        return self._queue.qsize() + len(self._overflow)

    @property
    def journal_pending(self) -> int:
        """Records in the journal, waiting for Redis (including a previous process's)."""
        return self._journal.pending if self._journal is not None else 0

    @property
    def delivered_from_journal(self) -> int:
        """Records delivered to Redis from the journal."""
        return self._delivered_from_journal

    @property
    def retention_waiting(self) -> frozenset[str]:
        """Experiments whose retention, at their last write, kept entries due to be trimmed
        because the export group had not acknowledged them (docs/export.md)."""
        return frozenset(self._held)

    @property
    def redis_available(self) -> bool:
        """False from a failed delivery until the next successful one."""
        return self._outage_since is None

    # -- lifetime ---------------------------------------------------------------------------

    def submit(self, record: OutcomeRecord) -> None:
        if self._closed:
            self._drop("closed")
            return
        if not self._overflow:
            try:
                self._queue.put_nowait(record)
            except asyncio.QueueFull:
                pass
            else:
                if self._waiting and self._queue.qsize() >= self._wake_at:
                    self._wakeup.set()
                return
        if self._full_policy == "drop_newest":
            self._drop("queue_full")
        elif len(self._overflow) < self._overflow_size:
            self._overflow.append(record)
            self._wakeup.set()
        else:
            self._drop("overflow_full")

    async def start(self) -> None:
        """Open the journal (delivered first if a previous process left records) and start."""
        if self._writer is not None or self._closed:
            raise RuntimeError("RedisSink.start() may be called once, before close()")
        await self._open_journal()
        self._spawn_writer()
        self._checker = asyncio.create_task(
            self._check_persistence(), name=f"outcomes-redis-check:{self.keys.prefix}"
        )

    async def close(self) -> None:
        """Stop accepting; deliver or journal everything; close the connection."""
        if not self._closed:
            self._closed = True
            self._close_deadline = asyncio.get_running_loop().time() + self._close_timeout
            self._wakeup.set()
            if self._writer is None:  # never started: still deliver or journal the queue
                await self._open_journal()
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

    async def deliver(self, records: Sequence[OutcomeRecord]) -> int:
        """Store one batch now, bypassing the queue; return how many records were new.

        The writer's own delivery path, exposed for tools and tests: a retried batch adds
        nothing. Raises the Redis error if Redis is unavailable.
        """
        entries = [(JournalEntry.of(r), units_field(r)) for r in records]
        return await self._store(entries, self._write_timeout)

    async def _open_journal(self) -> None:
        if self._journal is None:
            self._journal = await asyncio.to_thread(
                Journal.open,
                self.journal_dir,
                segment_records=self._journal_segment_records,
                max_records=self._journal_max_records,
                fsync=self._journal_fsync,
            )

    def _spawn_writer(self) -> None:
        self._writer = asyncio.create_task(self._run(), name=f"outcomes-redis:{self.keys.prefix}")
        self._writer.add_done_callback(self._writer_done)

    # -- the writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        journal = self._journal
        assert journal is not None
        try:
            while not self._closed:
                if self._overflow:
                    await self._spill()
                elif self._outage:
                    if self._redis_back:
                        await self._end_probe()
                        continue
                    await self._wait(self._batch_size, SPILL_INTERVAL_S)
                    await self._spill()
                elif journal.pending:
                    await self._deliver_journal_batch(self._write_timeout)
                elif batch := self._take_batch():
                    await self._deliver_live(batch, self._write_timeout)
                else:
                    await self._wait(1, None)
            await self._finish()
        finally:
            await self._stop_prober()
            await _cancel(self._checker)
            if self._client is not None:
                with contextlib.suppress(Exception):
                    await self._client.aclose()
                self._client = None

    async def _finish(self) -> None:
        """close(): deliver what Redis takes before the deadline, journal the rest."""
        journal = self._journal
        assert journal is not None
        if self._overflow:
            await self._spill()
        loop = asyncio.get_running_loop()
        deadline = self._close_deadline
        if self._outage and self._redis_back:
            await self._end_probe()
        while not self._outage and (remaining := deadline - loop.time()) > 0:
            time_limit = min(self._write_timeout, remaining)
            if journal.pending:
                await self._deliver_journal_batch(time_limit)
            elif batch := self._take_batch():
                await self._deliver_live(batch, time_limit)
            else:
                break
        await self._spill()
        await asyncio.to_thread(journal.sync)
        log.info(
            "outcomes_redis_sink_closed",
            written=self._written,
            dropped=self._drops.total,
            lost=self._lost,
            journal_pending=journal.pending,
        )
        if journal.pending:
            log.warning(
                "outcomes_journal_left",
                directory=str(self.journal_dir),
                journal_pending=journal.pending,
                detail="delivered when a sink next starts on this journal",
            )

    def _take_batch(self) -> list[OutcomeRecord]:
        batch: list[OutcomeRecord] = []
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _wait(self, wake_at: int, time_limit: float | None) -> None:
        """Until the queue holds `wake_at` records, an overflow, close(), Redis is back, or
        `time_limit` seconds."""
        if self._closed or self._overflow or self._redis_back:
            return
        if self._queue.qsize() >= wake_at:
            return
        self._wakeup.clear()
        self._wake_at = wake_at
        self._waiting = True
        try:
            async with asyncio.timeout(time_limit):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        finally:
            self._waiting = False

    async def _spill(self) -> None:
        """Move everything queued, then the overflow, to the journal (in submission order)."""
        records = self._take_all()
        if records:
            await self._journal_records(records)

    def _take_all(self) -> list[OutcomeRecord]:
        records: list[OutcomeRecord] = []
        while not self._queue.empty():
            records.append(self._queue.get_nowait())
        records.extend(self._overflow)
        self._overflow = []
        return records

    async def _journal_records(self, records: list[OutcomeRecord]) -> None:
        journal = self._journal
        assert journal is not None
        try:
            stored = await asyncio.to_thread(journal.append, records)
        except OSError as exc:
            self._lose(records, exc)
            return
        self._journalled += stored
        if stored < len(records):
            if journal.full:
                self._drop("journal_full", len(records) - stored)
            else:
                self._lose(records[stored:], None)

    async def _deliver_live(self, batch: list[OutcomeRecord], time_limit: float) -> None:
        try:
            entries = [(JournalEntry.of(r), units_field(r)) for r in batch]
            added = await self._store(entries, time_limit)
        except Exception as exc:
            await self._journal_records(batch)
            self._fail(exc)
            return
        self._stored(len(batch), added)

    async def _deliver_journal_batch(self, time_limit: float) -> None:
        journal = self._journal
        assert journal is not None
        position, records = await asyncio.to_thread(journal.oldest_batch, self._batch_size)
        try:
            entries = [(entry, units_field_of_json(entry.json)) for entry in records]
            added = await self._store(entries, time_limit) if entries else 0
        except Exception as exc:
            self._fail(exc)
            return
        try:
            await asyncio.to_thread(journal.acknowledge, position)
        except OSError as exc:
            # Stored but not acknowledged: it will be delivered again, and deduplicated.
            log.error(
                "outcomes_journal_acknowledge_failed",
                directory=str(self.journal_dir),
                error=f"{type(exc).__name__}: {exc.strerror or exc}",
            )
        self._delivered_from_journal += len(records)
        self._stored(len(records), added)
        if not journal.pending:
            log.info(
                "outcomes_journal_delivered",
                delivered_from_journal=self._delivered_from_journal,
            )

    def _stored(self, count: int, added: int) -> None:
        self._written += count
        self._duplicates += count - added
        self._backoff = self._backoff_initial
        if self._outage_since is not None:
            log.info(
                "outcomes_redis_recovered",
                outage_s=round(monotonic() - self._outage_since, 3),
                journal_pending=self.journal_pending,
            )
            self._outage_since = None

    # -- Redis ------------------------------------------------------------------------------

    async def _connected(self) -> tuple[RedisClient, AsyncScript]:
        async with self._connecting:
            if self._client is None or self._script is None:
                self._client = await self._client_factory()
                self._script = self._client.register_script(WRITE_SCRIPT)
            return self._client, self._script

    async def _store(self, entries: Sequence[tuple[JournalEntry, str]], time_limit: float) -> int:
        """One script per experiment for (record, units field) pairs; returns the number of
        records new to Redis."""
        groups: dict[str, list[str]] = {}
        for entry, field in entries:
            args = groups.setdefault(entry.experiment or NO_EXPERIMENT, [])
            args += (entry.record_id, entry.json, field)
        added = 0
        async with asyncio.timeout(time_limit):
            client, script = await self._connected()
            for experiment, args in groups.items():
                keys = [
                    self.keys.outcomes(experiment),
                    self.keys.seen(experiment),
                    self.keys.records(experiment),
                    self.keys.units(experiment),
                    self.keys.indexed(experiment),
                ]
                budget = TRIM_PER_RECORD * (len(args) // 3) + TRIM_PER_CALL
                reply = await script(
                    keys, [*self._script_head, budget, EXPORT_GROUP, *args], client
                )
                added += int(reply[0])
                self._retention_waits(experiment, bool(int(reply[1])))
            # Not in the script: the set lives in another cluster slot. SADD is idempotent.
            new = groups.keys() - self._registered
            if new:
                await client.sadd(self.keys.experiments, *new)
                self._registered |= new
        return added

    def _retention_waits(self, experiment: str, held: bool) -> None:
        """Log when retention starts and stops waiting for the exporter (docs/export.md)."""
        if held and experiment not in self._held:
            self._held.add(experiment)
            log.warning(
                "outcomes_retention_waiting_for_export",
                experiment=experiment,
                group=EXPORT_GROUP,
                detail="entries due to be trimmed are kept until the export group acknowledges "
                "them: is `speech-gateway export --follow` running?",
            )
        elif not held and experiment in self._held:
            self._held.discard(experiment)
            log.info("outcomes_retention_resumed", experiment=experiment, group=EXPORT_GROUP)

    def _fail(self, exc: BaseException) -> None:
        """A delivery failed: stop delivering, probe until Redis answers again."""
        self._outage = True
        self._redis_back = False
        self._registered.clear()  # Redis may come back without its data: register again
        if (
            self._closed
            and isinstance(exc, TimeoutError)
            and asyncio.get_running_loop().time() >= self._close_deadline
        ):
            # Not an outage: close() ran out of time in the middle of a batch.
            log.warning(
                "outcomes_close_deadline_reached",
                close_timeout_s=self._close_timeout,
                detail="journalling what is left; the next start delivers it",
            )
            return
        error = f"{type(exc).__name__}: {exc or 'no reply in time'}"
        if self._outage_since is None:
            self._outage_since = monotonic()
            if isinstance(exc, REDIS_ERRORS):
                log.warning(
                    "outcomes_redis_unavailable",
                    error=error,
                    journal_pending=self.journal_pending,
                    detail="spooling outcome records to the journal until Redis answers",
                )
            else:
                log.error(
                    "outcomes_redis_write_failed",
                    error=error,
                    journal_pending=self.journal_pending,
                    detail="spooling outcome records to the journal; retrying with backoff",
                )
        if self._prober is None and not self._closed:
            self._prober = asyncio.create_task(
                self._probe(), name=f"outcomes-redis-probe:{self.keys.prefix}"
            )

    async def _probe(self) -> None:
        """Ping Redis with a capped exponential backoff; tell the writer when it answers."""
        while True:
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, self._backoff_max)
            try:
                async with asyncio.timeout(self._write_timeout):
                    client, _ = await self._connected()
                    if isinstance(client, RedisCluster):
                        await client.ping(target_nodes=RedisCluster.PRIMARIES)
                    else:
                        await client.ping()
            except Exception as exc:
                if not isinstance(exc, REDIS_ERRORS) and not isinstance(exc, RedisError):
                    # Not an outage (a bad URL, say): keep spooling, but say why.
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("outcomes_redis_probe_failed", error=error)
                continue
            self._redis_back = True
            self._wakeup.set()
            return

    async def _end_probe(self) -> None:
        """Redis answered the prober: deliver again (the journal first)."""
        await self._stop_prober()
        self._redis_back = False
        self._outage = False

    async def _stop_prober(self) -> None:
        prober, self._prober = self._prober, None
        await _cancel(prober)

    async def _check_persistence(self) -> None:
        """At start-up, warn once if Redis would come back empty after a restart: then the
        records it acknowledged (and removed from the journal) are lost with it.

        Waits for Redis if it does not answer yet. Where CONFIG is disabled (most managed
        services) it says, at info level, that it could not check.
        """
        delay = self._backoff_initial
        while True:
            try:
                async with asyncio.timeout(self._write_timeout):
                    client, _ = await self._connected()
                    nodes = await persistence(client)
                break
            except REDIS_ERRORS:
                await asyncio.sleep(delay)  # Redis is not there yet: check when it is
                delay = min(delay * 2, self._backoff_max)
            except Exception as exc:
                # A RedisError's text is the server's; other errors may quote the URL.
                error = f"{type(exc).__name__}: {exc}" if isinstance(exc, RedisError) else None
                log.info(
                    "outcomes_redis_persistence_unchecked",
                    error=error or type(exc).__name__,
                    detail="could not read CONFIG appendonly/save (disabled on most managed "
                    "services): make sure Redis keeps AOF or RDB persistence, or a Redis "
                    "restart loses the records it holds",
                )
                return
        volatile = [node.node for node in nodes if not node.enabled]
        if not volatile:
            log.info(
                "outcomes_redis_persistent",
                nodes={node.node: node.kind for node in nodes},
            )
        else:
            log.warning(
                "outcomes_redis_not_persistent",
                nodes=volatile,
                detail="Redis has neither AOF (appendonly) nor RDB snapshots (save): a Redis "
                "restart loses the outcome records, labels and shared state it holds; turn "
                "on appendonly",
            )

    # -- accounting -------------------------------------------------------------------------

    def _drop(self, reason: str, count: int = 1) -> None:
        self._drops.drop(reason, count, journal_pending=self.journal_pending)

    def _lose(self, records: Sequence[OutcomeRecord], exc: OSError | None) -> None:
        self._lost += len(records)
        log.error(
            "outcomes_lost",
            records=len(records),
            lost=self._lost,
            directory=str(self.journal_dir),
            error=f"{type(exc).__name__}: {exc.strerror or exc}" if exc else "journal write",
        )

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            unwritten = self._queue.qsize() + len(self._overflow)
            if unwritten:
                log.error("outcomes_writer_cancelled", unwritten=unwritten)
        elif (exc := task.exception()) is not None:
            log.error("outcomes_writer_crashed", error=repr(exc))


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a helper task and wait until it has finished."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
