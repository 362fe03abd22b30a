"""Label stores: reference transcripts kept beside the outcome records, in either store.

The API (`gateway.server.admin.labels`) and the CLI import (`import_labels`) write through a
`LabelStore`; the analysis reads labels back through it (or `gateway.stores.reader`). A
label attaches to an outcome record by `record_id`, so a store only accepts ids of records
it holds: an unknown id is reported, never stored. Every write is kept: the current label of
a record is the last one written ("last wins"), and the earlier ones stay in an append-only
audit trail with who wrote them and when.

* `FileLabelStore`: labels appended as JSON lines to a file next to the outcome file.
* `RedisLabelStore`: the current label in the experiment's `labels` hash, every write in its
  `label-audit` stream (key layout: `gateway.stores.keys`).

A Redis that is unavailable, or a label or outcome file that cannot be read or written,
raises `StoreUnavailable` from every lookup and write.

Each label is stored with the WER counts of its record and of the record's shadows
(`gateway.outcomes.label_scores`): a store reads those records' text when it stores the
label, and `rescore` brings labels without current counts up to date (labels stored before
labels carried counts, counts of another normalisation version, shadows that arrived late).

A client that never saw record ids (a replay) names records by unit instead: `find_units`
resolves a `UnitQuery` (unit pseudonym, utterance index, optional experiment) to the ids of
the primary utterance/request records it made, from an index each store keeps beside the
record ids (`units`); the caller then labels those ids.

docs/labels.md describes both for operators and analysts.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Final, Protocol

from gateway.constants import NO_EXPERIMENT
from gateway.errors import ConfigError
from gateway.logging import get_logger
from gateway.outcomes.label_scores import (
    SHADOWED_KINDS,
    RecordsById,
    has_shadows,
    needs_scores,
    score_targets,
    scored,
    scored_if_found,
)
from gateway.outcomes.labels import (
    Label,
    LabelError,
    LabelInput,
    LabelSource,
    UnitQuery,
    check_labeller,
    raise_first_problem,
    scan_labels,
    unit_target,
)
from gateway.outcomes.record import OutcomeRecord, now_iso
from gateway.stores.failures import store_call
from gateway.stores.files import cut_torn_tail
from gateway.stores.keys import LABEL_FIELD, UNIT_RECORDS_MAX, RedisKeys
from gateway.stores.label_records import read_records
from gateway.stores.redis_client import RedisClient

log = get_logger(__name__)

LABELS_FILE_NAME: Final = "labels.jsonl"
_REDIS_CHUNK: Final = 1_000  # record ids per lookup pipeline, labels per MULTI
_RESCORE_CHUNK: Final = 10_000  # labels whose records a file rescore holds at once
# Replace a label's value only if it is still the one that was scored: a relabel written
# meanwhile wins over the rescore of the text it replaced.
_REPLACE_IF_SAME: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""


class LabelStatus(StrEnum):
    STORED = "stored"  # the record had no label; now it has this one
    RELABELLED = "relabelled"  # the record had a label; this one replaces it (both audited)
    UNKNOWN = "unknown"  # no outcome record has this id; nothing stored


@dataclass(frozen=True, slots=True)
class LabelResult:
    """What happened to one label of a `put`."""

    record_id: str
    status: LabelStatus
    previous: str | None = None  # RELABELLED: the text it replaced

    def to_dict(self) -> dict[str, str]:
        out = {"record_id": self.record_id, "status": self.status.value}
        if self.status is LabelStatus.RELABELLED and self.previous is not None:
            out["previous"] = self.previous
        return out


@dataclass(frozen=True, slots=True)
class PutResult:
    """The results of a `put`, one per label in the order given.

    `committed` is False when `all_or_nothing` refused the batch because some ids are unknown:
    nothing was stored, and `results` then holds only the unknown ids.
    """

    results: tuple[LabelResult, ...]
    committed: bool = True

    @property
    def unknown(self) -> list[str]:
        """Unknown record ids, each once, in the order given."""
        return list(dict.fromkeys(r.record_id for r in self.results if r.status is _UNKNOWN))

    def count(self, status: LabelStatus) -> int:
        return sum(result.status is status for result in self.results)


_UNKNOWN = LabelStatus.UNKNOWN


@dataclass(frozen=True, slots=True)
class UnitMatch:
    """A record that a `UnitQuery` found: its id and its experiment key."""

    record_id: str
    experiment: str

    def to_dict(self) -> dict[str, str]:
        return {"record_id": self.record_id, "experiment": self.experiment}


@dataclass(frozen=True, slots=True)
class RescoreResult:
    """What `rescore` did with the current labels of one experiment."""

    experiment: str
    labels: int  # current labels of the experiment
    rescored: int  # written again with new counts (none, stale, or missing a shadow)
    current: int  # counts already current and complete: left alone
    not_found: int  # the record is no longer in the store (rotated, trimmed): left alone

    def summary(self) -> str:
        """One line for the terminal."""
        return (
            f"{self.experiment}: {self.labels:,} labels, {self.rescored:,} rescored, "
            f"{self.current:,} already current, {self.not_found:,} without their record"
        )


class LabelStore(Protocol):
    """Where labels are kept: beside the outcome records, whichever store holds those."""

    async def put(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        *,
        all_or_nothing: bool = False,
    ) -> PutResult:
        """Store labels for known record ids, in order (a later label of the same id wins).

        Unknown ids are reported and skipped, or, with `all_or_nothing`, refuse the whole
        batch. ValueError (a `LabelError`) if `labeller` is not a valid name.
        """
        ...

    async def get(self, record_ids: Iterable[str]) -> dict[str, Label]:
        """The current labels of those of these records that have one."""
        ...

    async def all(self, experiment: str) -> dict[str, Label]:
        """record_id -> current label, for every labelled record of the experiment
        (`gateway.constants.NO_EXPERIMENT` for records no experiment routed)."""
        ...

    async def experiments(self) -> list[str]:
        """Experiment keys that have outcome records, sorted."""
        ...

    async def rescore(self, experiment: str) -> RescoreResult:
        """Store WER counts with every current label of the experiment that has none, has
        counts of another normalisation version, or lacks a shadow record that has arrived
        since (`gateway.outcomes.label_scores.needs_scores`); leave the others alone. Text,
        labeller, time and source stay as they were; running it again changes nothing."""
        ...

    async def find_units(self, queries: Sequence[UnitQuery]) -> list[tuple[UnitMatch, ...]]:
        """For each query, in order, the primary utterance/request records of its unit
        pseudonym and utterance index (every session's, oldest first within an experiment;
        at most the newest `UNIT_RECORDS_MAX` per experiment), in its experiment or in any.
        Empty: no such record (yet: records reach the store asynchronously)."""
        ...


def _experiment_key(experiment: str | None) -> str:
    return experiment or NO_EXPERIMENT


def labels_path_beside(outcomes_path: Path) -> Path:
    """The label file that belongs to an outcome file: `labels.jsonl` in its directory."""
    return outcomes_path.with_name(LABELS_FILE_NAME)


# -- the embedded store ---------------------------------------------------------------------


class _Tail:
    """Reads the complete lines appended to a file since the last read.

    A line without its newline (being written, or torn by a crash) is left for later. When
    the file is replaced (rotation: another inode) or cut shorter, reading starts over at
    its beginning and `restarted` is True.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._line = 0

    @property
    def identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file the offsets handed out refer to."""
        return self._identity

    def read(
        self,
        handle: Callable[[int, int, bytes], None],
        on_restart: Callable[[], None] | None = None,
    ) -> bool:
        """Hand each new complete line (number, byte offset, bytes) to `handle`; True if it
        started over (`on_restart` is called first, before the new file's lines)."""
        try:
            file = open(self.path, "rb")  # noqa: SIM115 - closed below; absence is not an error
        except FileNotFoundError:
            return False
        restarted = False
        with file:
            status = os.fstat(file.fileno())
            identity = (status.st_dev, status.st_ino)
            if identity != self._identity or status.st_size < self._offset:
                restarted = self._identity is not None
                self._identity, self._offset, self._line = identity, 0, 0
                if restarted and on_restart is not None:
                    on_restart()
            if status.st_size == self._offset:
                return restarted
            file.seek(self._offset)
            for raw in file:
                if not raw.endswith(b"\n"):
                    break
                offset = self._offset
                self._offset += len(raw)
                self._line += 1
                handle(self._line, offset, raw)
        return restarted


class FileLabelStore:
    """Labels as JSON lines appended to `labels_path`, beside the JSONL outcome file.

    Each line is one label write (record id, text, labeller, time, source, WER counts); the
    current label of a record is its last line, and the earlier lines are the audit trail.
    Known record ids come from the outcome file: an index (record id -> experiment and byte
    offset, session -> shadow records, and unit pseudonym and utterance index -> primary
    record ids) is built by reading it once and extended by reading what was appended
    since, before each write or lookup; the offsets let a write read a record's text again.
    After a rotation the new file is read from its start; ids already indexed stay known to
    this process (but their labels are stored without counts: their offsets are gone), and a
    new process only knows the records of the current file.

    Writes take an exclusive `flock` on the label file, so the gateway and a CLI import may
    write at the same time; each write is one `write` of whole lines, then fsync'd. File
    work runs in a thread, so the event loop never waits on the disk, under a thread lock,
    so a call abandoned by a cancelled caller cannot interleave with the next one.
    """

    def __init__(self, outcomes_path: Path, labels_path: Path, *, fsync: bool = True) -> None:
        self.outcomes_path = outcomes_path
        self.labels_path = labels_path
        self._fsync = fsync
        self._lock = threading.Lock()
        self._records = _Tail(outcomes_path)
        self._labels = _Tail(labels_path)
        self._experiment_of: dict[str, str] = {}  # record_id -> experiment key
        # "<unit>:<utterance_index>" -> primary record ids, oldest first (UNIT_RECORDS_MAX)
        self._unit_records: dict[str, list[str]] = {}
        self._current: dict[str, Label] = {}
        # Where to read a record of the current outcome file again, to score its labels:
        # record_id -> byte offset, and session_id -> its shadow utterance/request records.
        self._offsets: dict[str, int] = {}
        self._shadows: dict[str, list[str]] = {}

    @store_call
    async def put(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        *,
        all_or_nothing: bool = False,
    ) -> PutResult:
        check_labeller(labeller)
        return await asyncio.to_thread(self._put, labels, labeller, source, all_or_nothing)

    @store_call
    async def get(self, record_ids: Iterable[str]) -> dict[str, Label]:
        return await asyncio.to_thread(self._get, list(record_ids))

    @store_call
    async def all(self, experiment: str) -> dict[str, Label]:
        return await asyncio.to_thread(self._all, experiment)

    @store_call
    async def experiment_of(self, record_id: str) -> str | None:
        """The experiment key of a known record (NO_EXPERIMENT for the default route)."""
        return await asyncio.to_thread(self._experiment, record_id)

    @store_call
    async def find_units(self, queries: Sequence[UnitQuery]) -> list[tuple[UnitMatch, ...]]:
        return await asyncio.to_thread(self._find_units, list(queries))

    @store_call
    async def experiments(self) -> list[str]:
        return await asyncio.to_thread(self._experiments)

    @store_call
    async def rescore(self, experiment: str) -> RescoreResult:
        """See `LabelStore.rescore`. Each rescored label is appended again (same text,
        labeller, time and source, new counts), under the file lock, so it becomes the
        current line; a label relabelled meanwhile is not overwritten (the lock orders them)."""
        return await asyncio.to_thread(self._rescore, experiment)

    def _experiments(self) -> list[str]:
        with self._lock:
            self._refresh_records()
            return sorted(set(self._experiment_of.values()))

    def _rescore(self, experiment: str) -> RescoreResult:
        with self._lock:
            self._refresh_records()
            if not self.labels_path.exists():
                return RescoreResult(experiment, 0, 0, 0, 0)
            with open(self.labels_path, "a+b", buffering=0) as file:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file is closed
                cut_torn_tail(file, self.labels_path, "labels_torn_tail_removed")
                self._refresh_labels()
                labels = [
                    label
                    for rid, label in self._current.items()
                    if self._experiment_of.get(rid) == experiment
                ]
                rescored = current = not_found = 0
                for start in range(0, len(labels), _RESCORE_CHUNK):
                    chunk = labels[start : start + _RESCORE_CHUNK]
                    records = self._read_records(label.record_id for label in chunk)
                    lines: list[str] = []
                    for label in chunk:
                        if label.record_id not in records:
                            not_found += 1
                            continue
                        targets = score_targets(*records[label.record_id])
                        if not needs_scores(label, targets):
                            current += 1
                            continue
                        lines.append(scored(label, targets).to_json() + "\n")
                    if lines:
                        _append(file, "".join(lines).encode("ascii"), fsync=self._fsync)
                        rescored += len(lines)
                self._refresh_labels()
        return RescoreResult(experiment, len(labels), rescored, current, not_found)

    def _find_units(self, queries: list[UnitQuery]) -> list[tuple[UnitMatch, ...]]:
        with self._lock:
            self._refresh_records()
            found: list[tuple[UnitMatch, ...]] = []
            for query in queries:
                matches = (
                    UnitMatch(rid, self._experiment_of[rid])
                    for rid in self._unit_records.get(query.key, ())
                )
                found.append(
                    tuple(
                        match
                        for match in matches
                        if query.experiment is None or match.experiment == query.experiment
                    )
                )
            return found

    def _get(self, record_ids: list[str]) -> dict[str, Label]:
        with self._lock:
            self._refresh_labels()
            return {rid: self._current[rid] for rid in record_ids if rid in self._current}

    def _all(self, experiment: str) -> dict[str, Label]:
        with self._lock:
            self._refresh_records()
            self._refresh_labels()
            return {
                rid: label
                for rid, label in self._current.items()
                if self._experiment_of.get(rid) == experiment
            }

    def _experiment(self, record_id: str) -> str | None:
        with self._lock:
            self._refresh_records()
            return self._experiment_of.get(record_id)

    def _refresh_records(self) -> None:
        bad: list[int] = []

        def index(number: int, offset: int, raw: bytes) -> None:
            # Only the ids are needed; full validation is the analysis' job.
            try:
                data = json.loads(raw)
                record_id = data["record_id"]
                experiment = data["experiment"]
            except (ValueError, KeyError, TypeError):
                bad.append(number)
                return
            if not isinstance(record_id, str) or not isinstance(experiment, str | None):
                bad.append(number)
                return
            self._experiment_of[record_id] = _experiment_key(experiment)
            self._offsets[record_id] = offset
            if data.get("role") == "shadow" and data.get("kind") in SHADOWED_KINDS:
                shadows = self._shadows.setdefault(str(data.get("session_id")), [])
                if record_id not in shadows:
                    shadows.append(record_id)
            target = unit_target(
                data.get("kind"), data.get("role"), data.get("unit"), data.get("utterance_index")
            )
            if target is not None:
                ids = self._unit_records.setdefault(target, [])
                if record_id not in ids:  # a file cut shorter is read again
                    ids.append(record_id)
                    del ids[:-UNIT_RECORDS_MAX]

        self._records.read(index, self._forget_offsets)
        if bad:
            log.warning(
                "labels_outcome_lines_unreadable",
                path=str(self.outcomes_path),
                lines=len(bad),
                first_line=bad[0],
            )

    def _refresh_labels(self) -> None:
        fresh: dict[str, Label] = {}
        bad: list[int] = []

        def apply(number: int, offset: int, raw: bytes) -> None:
            try:
                label = Label.from_json(raw)
            except ValueError:
                bad.append(number)
                return
            fresh[label.record_id] = label

        if self._labels.read(apply):
            self._current.clear()  # the file was replaced: its lines are the whole truth
        self._current.update(fresh)
        if bad:
            log.warning(
                "labels_lines_unreadable",
                path=str(self.labels_path),
                lines=len(bad),
                first_line=bad[0],
            )

    def _forget_offsets(self) -> None:
        """The outcome file was replaced: its predecessor's offsets mean nothing now."""
        self._offsets.clear()
        self._shadows.clear()

    def _read_records(self, record_ids: Iterable[str]) -> RecordsById:
        """The records with these ids, and the shadow records of their sessions, read again
        from the current outcome file (ids of a rotated file are not found)."""
        found: RecordsById = {}
        wanted = [rid for rid in dict.fromkeys(record_ids) if rid in self._offsets]
        if not wanted:
            return found
        try:
            file = open(self.outcomes_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return found
        with file:
            status = os.fstat(file.fileno())
            if (status.st_dev, status.st_ino) != self._records.identity:
                return found  # rotated since the index was read: score at the next rescore

            def read(rid: str) -> OutcomeRecord | None:
                file.seek(self._offsets[rid])
                try:
                    record = OutcomeRecord.from_json(file.readline())
                except ValueError:
                    return None  # an invalid record: the analysis reports it
                return record if record.record_id == rid else None

            for rid in wanted:
                record = read(rid)
                if record is None:
                    continue
                session: list[OutcomeRecord] = []
                if has_shadows(record):
                    for shadow_id in self._shadows.get(record.session_id, ()):
                        shadow = read(shadow_id)
                        if shadow is not None:
                            session.append(shadow)
                found[rid] = (record, session)
        return found

    def _put(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        all_or_nothing: bool,
    ) -> PutResult:
        with self._lock:
            return self._put_locked(labels, labeller, source, all_or_nothing)

    def _put_locked(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        all_or_nothing: bool,
    ) -> PutResult:
        self._refresh_records()
        known = self._experiment_of
        unknown = [label.record_id for label in labels if label.record_id not in known]
        if unknown and all_or_nothing:
            ids = dict.fromkeys(unknown)
            return PutResult(tuple(LabelResult(rid, _UNKNOWN) for rid in ids), committed=False)
        if len(unknown) == len(labels):
            return PutResult(tuple(LabelResult(rid, _UNKNOWN) for rid in unknown))
        self.labels_path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered, so that nothing is left in a buffer to be written after a roll-back.
        with open(self.labels_path, "a+b", buffering=0) as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            cut_torn_tail(file, self.labels_path, "labels_torn_tail_removed")
            self._refresh_labels()  # another process may have written since
            labelled_at = now_iso()
            records = self._read_records(label.record_id for label in labels)
            texts = {rid: label.text for rid, label in self._current.items()}
            results: list[LabelResult] = []
            lines: list[str] = []
            for given in labels:
                rid = given.record_id
                if rid not in known:
                    results.append(LabelResult(rid, _UNKNOWN))
                    continue
                previous = texts.get(rid)
                if previous is None:
                    results.append(LabelResult(rid, LabelStatus.STORED))
                else:
                    results.append(LabelResult(rid, LabelStatus.RELABELLED, previous))
                texts[rid] = given.text
                label = scored_if_found(given.label(labeller, source, labelled_at), records)
                lines.append(label.to_json() + "\n")
            if lines:
                _append(file, "".join(lines).encode("ascii"), fsync=self._fsync)
            self._refresh_labels()
        return PutResult(tuple(results))


def _append(file: IO[bytes], data: bytes, *, fsync: bool) -> None:
    """Append whole lines in one write; cut a failed write off again."""
    start = file.seek(0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[file.write(view) or 0 :]
        if fsync:
            os.fsync(file.fileno())
    except OSError:
        file.truncate(start)
        raise


# -- the Redis store ------------------------------------------------------------------------


def _str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisLabelStore:
    """Labels in Redis, beside the experiment's outcome stream.

    A record's experiment is found by asking each experiment's `records` hash (the members
    of `experiments`) whether it holds the id; a unit's records, by asking each experiment's
    `units` hash (both kept by the outcome sink's script, `gateway.stores.redis_sink`, and
    trimmed with the stream: a record the stream no longer holds is unknown here).
    Each label is then one MULTI on the experiment's keys (one Cluster slot): `HGET labels`
    (the previous label), `HSET labels` (the current one), `XADD label-audit` (every write,
    field `l`). The audit stream is never trimmed. Before it, the labelled records and the
    shadows near them in the stream are read to score the labels
    (`gateway.stores.label_records`).
    """

    def __init__(self, client: RedisClient, keys: RedisKeys | None = None) -> None:
        self.client = client
        self.keys = keys or RedisKeys()

    @store_call
    async def experiments(self) -> list[str]:
        """Experiment keys that have outcome records, sorted."""
        return sorted(_str(member) for member in await self.client.smembers(self.keys.experiments))

    @store_call
    async def locate(self, record_ids: Iterable[str]) -> dict[str, str]:
        """record_id -> experiment key, for the ids that some experiment's records hold."""
        experiments = await self.experiments()
        ids = list(dict.fromkeys(record_ids))
        found: dict[str, str] = {}
        if not experiments:
            return found
        for start in range(0, len(ids), _REDIS_CHUNK):
            chunk = ids[start : start + _REDIS_CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for rid in chunk:
                    for experiment in experiments:
                        pipe.hexists(self.keys.records(experiment), rid)
                replies = await pipe.execute()
            for position, rid in enumerate(chunk):
                row = replies[position * len(experiments) : (position + 1) * len(experiments)]
                for experiment, exists in zip(experiments, row, strict=True):
                    if exists:
                        found[rid] = experiment
                        break
        return found

    @store_call
    async def find_units(self, queries: Sequence[UnitQuery]) -> list[tuple[UnitMatch, ...]]:
        found: list[list[UnitMatch]] = [[] for _ in queries]
        if not queries:
            return []
        anywhere = await self.experiments() if any(q.experiment is None for q in queries) else []
        # (query position, experiment) per HGET, in pipeline order
        asks = [
            (position, experiment)
            for position, query in enumerate(queries)
            for experiment in ([query.experiment] if query.experiment is not None else anywhere)
        ]
        for start in range(0, len(asks), _REDIS_CHUNK):
            chunk = asks[start : start + _REDIS_CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for position, experiment in chunk:
                    pipe.hget(self.keys.units(experiment), queries[position].key)
                replies = await pipe.execute()
            for (position, experiment), value in zip(chunk, replies, strict=True):
                if value is not None:
                    found[position] += (UnitMatch(rid, experiment) for rid in _str(value).split())
        return [tuple(matches) for matches in found]

    @store_call
    async def put(
        self,
        labels: Sequence[LabelInput],
        labeller: str,
        source: LabelSource,
        *,
        all_or_nothing: bool = False,
    ) -> PutResult:
        check_labeller(labeller)
        where = await self.locate(label.record_id for label in labels)
        unknown = [label.record_id for label in labels if label.record_id not in where]
        if unknown and all_or_nothing:
            ids = dict.fromkeys(unknown)
            return PutResult(tuple(LabelResult(rid, _UNKNOWN) for rid in ids), committed=False)
        labelled_at = now_iso()
        results: list[LabelResult | None] = [None] * len(labels)
        groups: dict[str, list[int]] = {}
        for position, given in enumerate(labels):
            experiment = where.get(given.record_id)
            if experiment is None:
                results[position] = LabelResult(given.record_id, _UNKNOWN)
            else:
                groups.setdefault(experiment, []).append(position)
        for experiment, positions in groups.items():
            hash_key = self.keys.labels(experiment)
            audit_key = self.keys.label_audit(experiment)
            for start in range(0, len(positions), _REDIS_CHUNK):
                chunk = positions[start : start + _REDIS_CHUNK]
                records = await read_records(
                    self.client,
                    self.keys,
                    experiment,
                    (labels[position].record_id for position in chunk),
                    near=True,
                )
                async with self.client.pipeline(transaction=True) as pipe:
                    for position in chunk:
                        given = labels[position]
                        label = given.label(labeller, source, labelled_at)
                        line = scored_if_found(label, records).to_json()
                        pipe.hget(hash_key, given.record_id)
                        pipe.hset(hash_key, given.record_id, line)
                        pipe.xadd(audit_key, {LABEL_FIELD: line})
                    replies = await pipe.execute()
                for offset, position in enumerate(chunk):
                    rid = labels[position].record_id
                    previous = replies[3 * offset]
                    if previous is None:
                        results[position] = LabelResult(rid, LabelStatus.STORED)
                    else:
                        text = _text_of(previous, hash_key, rid)
                        results[position] = LabelResult(rid, LabelStatus.RELABELLED, text)
        return PutResult(tuple(result for result in results if result is not None))

    @store_call
    async def get(self, record_ids: Iterable[str]) -> dict[str, Label]:
        ids = list(dict.fromkeys(record_ids))
        experiments = await self.experiments()
        found: dict[str, Label] = {}
        if not ids or not experiments:
            return found
        for start in range(0, len(ids), _REDIS_CHUNK):
            chunk = ids[start : start + _REDIS_CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for experiment in experiments:
                    pipe.hmget(self.keys.labels(experiment), chunk)
                replies = await pipe.execute()
            for experiment, values in zip(experiments, replies, strict=True):
                for rid, value in zip(chunk, values, strict=True):
                    if value is not None and rid not in found:
                        label = _parse(value, self.keys.labels(experiment), rid)
                        if label is not None:
                            found[rid] = label
        return found

    @store_call
    async def all(self, experiment: str) -> dict[str, Label]:
        key = self.keys.labels(experiment)
        found: dict[str, Label] = {}
        # HSCAN walks this one hash in pages; it is not a scan of the keyspace.
        async for field, value in self.client.hscan_iter(key, count=_REDIS_CHUNK):
            rid = _str(field)
            label = _parse(value, key, rid)
            if label is not None:
                found[rid] = label
        return found

    @store_call
    async def rescore(self, experiment: str) -> RescoreResult:
        """See `LabelStore.rescore`. The labelled records are read by entry id, their
        shadows from one pass over the experiment's stream; each rescored label replaces the
        hash value only if that is still the label scored (a relabel written meanwhile wins).
        The audit stream is not written: counts are derived from the label, not a new one."""
        key = self.keys.labels(experiment)
        raw: dict[str, bytes | str] = {}
        async for field, value in self.client.hscan_iter(key, count=_REDIS_CHUNK):
            raw[_str(field)] = value
        labels = [
            label for rid, value in raw.items() if (label := _parse(value, key, rid)) is not None
        ]
        records = await read_records(
            self.client, self.keys, experiment, (label.record_id for label in labels), near=False
        )
        writes: list[tuple[str, bytes | str, str]] = []
        current = not_found = 0
        for label in labels:
            if label.record_id not in records:
                not_found += 1
                continue
            targets = score_targets(*records[label.record_id])
            if needs_scores(label, targets):
                writes.append(
                    (label.record_id, raw[label.record_id], scored(label, targets).to_json())
                )
            else:
                current += 1
        rescored = 0
        for start in range(0, len(writes), _REDIS_CHUNK):
            async with self.client.pipeline(transaction=False) as pipe:
                for rid, old, new in writes[start : start + _REDIS_CHUNK]:
                    pipe.eval(_REPLACE_IF_SAME, 1, key, rid, old, new)
                replies = await pipe.execute()
            rescored += sum(int(reply) for reply in replies)
        # A label relabelled between the read and the write was scored by its own put.
        current += len(writes) - rescored
        return RescoreResult(experiment, len(labels), rescored, current, not_found)


def _parse(value: bytes | str, key: str, record_id: str) -> Label | None:
    try:
        return Label.from_json(value)
    except ValueError as exc:
        log.warning("labels_entry_unreadable", key=key, record_id=record_id, error=str(exc))
        return None


def _text_of(value: bytes | str, key: str, record_id: str) -> str | None:
    label = _parse(value, key, record_id)
    return None if label is None else label.text


# -- the CLI import -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What `speech-gateway label import` did with a file."""

    path: Path
    stored: int  # labels of records that had none
    relabelled: int  # labels that replaced an earlier one
    unknown: tuple[tuple[int, str], ...]  # (line, record id) of ids no record has: skipped
    skipped: tuple[ConfigError, ...]  # bad lines skipped with skip_invalid (first 1,000)
    invalid: int  # bad lines skipped, all of them

    def summary(self) -> str:
        """One line for the terminal, e.g. `imported 120 labels from x.csv: 118 new, ...`."""
        text = (
            f"imported {self.stored + self.relabelled:,} labels from {self.path}: "
            f"{self.stored:,} new, {self.relabelled:,} relabelled"
        )
        if self.unknown:
            text += f", {len(self.unknown):,} unknown record ids skipped"
        if self.invalid:
            text += f", {self.invalid:,} invalid lines skipped"
        return text


async def import_labels(
    path: Path, store: LabelStore, labeller: str, skip_invalid: bool = False
) -> ImportResult:
    """Import a CSV or JSON-lines label file (`gateway.outcomes.labels.scan_labels`).

    All or nothing unless `skip_invalid`: a bad line or a record id that no outcome record
    has raises ConfigError(`path:line`, problem) and nothing is stored. With `skip_invalid`
    the bad lines and unknown ids are skipped and reported in the result.
    """
    try:
        check_labeller(labeller)
    except LabelError as exc:
        raise ConfigError("--by", exc.problem) from None
    parsed = await asyncio.to_thread(scan_labels, path)
    if not skip_invalid:
        raise_first_problem(parsed)
    result = await store.put(parsed.labels, labeller, "import", all_or_nothing=not skip_invalid)
    line_of: dict[str, int] = {}
    for entry in parsed.lines:
        line_of.setdefault(entry.label.record_id, entry.line)
    unknown = tuple((line_of[rid], rid) for rid in result.unknown)
    if not result.committed:
        line, rid = unknown[0]
        more = len(unknown) - 1
        others = f" (and {more:,} more unknown ids)" if more else ""
        raise ConfigError(
            f"{path}:{line}",
            f"no outcome record has id {rid}{others}; nothing was imported "
            "(--skip-invalid imports the rest)",
        )
    return ImportResult(
        path=path,
        stored=result.count(LabelStatus.STORED),
        relabelled=result.count(LabelStatus.RELABELLED),
        unknown=unknown,
        skipped=parsed.problems,
        invalid=parsed.invalid,
    )
