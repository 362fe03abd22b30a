"""The embedded label store: labels as JSON lines in a file beside the JSONL outcome file.

`FileLabelStore` implements `gateway.stores.label_store.LabelStore` (the protocol, its
results and the rules both stores keep are described there) over the files a single
gateway and its CLI share; its counterpart for Redis is `gateway.stores.redis_label_store`.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Final

from gateway.constants import NO_EXPERIMENT
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
    LabelInput,
    LabelSource,
    UnitQuery,
    check_labeller,
    unit_target,
)
from gateway.outcomes.record import OutcomeRecord, now_iso
from gateway.stores.failures import store_call
from gateway.stores.files import cut_torn_tail
from gateway.stores.keys import UNIT_RECORDS_MAX
from gateway.stores.label_store import LabelResult, LabelStatus, PutResult, RescoreResult, UnitMatch

log = get_logger(__name__)

_RESCORE_CHUNK: Final = 10_000  # labels whose records a file rescore holds at once
_UNKNOWN = LabelStatus.UNKNOWN


def _experiment_key(experiment: str | None) -> str:
    return experiment or NO_EXPERIMENT


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
