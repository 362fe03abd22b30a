"""The export directory ("the lake"): outcome records and labels as Parquet, written with DuckDB.

Layout under the export directory (hive-style partitions, read by DuckDB, ClickHouse, Spark):

    outcomes/experiment=<id>/phase=<phase>/date=<YYYY-MM-DD>/part-<time>-<random>.parquet
    labels/experiment=<id>/labels.parquet

A null partition value (the default route's records have no experiment and no phase) is
written `__HIVE_DEFAULT_PARTITION__`, which the engines read back as NULL. The date is the
UTC date of the record's `timestamp`. docs/export.md is the description for users.

Outcome files are only added, never rewritten: `LakeWriter.append` (or `append_outcomes`,
once) writes the records a partition does not hold yet (by `record_id`) as one new file per
partition, so exporting the same records again adds nothing, and exporting after new
records arrived adds only those. Each file is written under a temporary name, fsync'd and
renamed (then the folder is fsync'd): a reader never sees half a file, and a crash leaves
no partial `.parquet` file. The labels file of an experiment is its current labels,
replaced the same way on each export.
One writer at a time: every write holds an exclusive lock on `<dir>/.export.lock`.

Every file carries the export schema version in its Parquet key-value metadata
(`speech_gateway_export_version`). `lake_sources` opens a directory for analysis and refuses
(ConfigError, one line naming the file) a file of another version, a missing partition, or
a file that is not Parquet.

The counterparts: `gateway.stores.reader` (what is exported), `gateway.stores.lake_follower`
(the continuous exporter, one `LakeWriter` for its run), `gateway.tools.export` (the CLI).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import quote

import duckdb

from gateway.constants import NO_EXPERIMENT
from gateway.errors import ConfigError
from gateway.outcomes.labels import Label
from gateway.outcomes.record import OutcomeRecord

EXPORT_SCHEMA_VERSION: Final = 1
VERSION_KEY: Final = "speech_gateway_export_version"
NULL_PARTITION: Final = "__HIVE_DEFAULT_PARTITION__"
OUTCOMES_DIR: Final = "outcomes"
LABELS_DIR: Final = "labels"
LABELS_FILE: Final = "labels.parquet"
LOCK_FILE: Final = ".export.lock"
STAGING_DIR: Final = ".staging"

# Version 1: the fields of outcome records of schema version 4 (docs/outcomes.md), in its
# order and under its names, so that one SQL text reads the JSONL file and the lake alike.
# Text stays text (`timestamp` as written in the record), so a value reads back unchanged.
OUTCOME_COLUMNS: Final[Mapping[str, str]] = {
    "schema_version": "BIGINT",
    "record_id": "VARCHAR",
    "kind": "VARCHAR",
    "timestamp": "VARCHAR",
    "experiment": "VARCHAR",
    "phase": "VARCHAR",
    "variant": "VARCHAR",
    "backend": "VARCHAR",
    "role": "VARCHAR",
    "forced": "BOOLEAN",
    "client": "VARCHAR",
    "unit": "VARCHAR",
    "unit_source": "VARCHAR",
    "session_id": "VARCHAR",
    "protocol": "VARCHAR",
    "mode": "VARCHAR",
    "locale": "VARCHAR",
    "turn_id": "VARCHAR",
    "utterance_index": "BIGINT",
    "status": "VARCHAR",
    "error_code": "VARCHAR",
    "error_detail": "VARCHAR",
    "audio_offset_ms": "DOUBLE",
    "audio_duration_ms": "DOUBLE",
    "first_hypothesis_ms": "DOUBLE",
    "final_latency_ms": "DOUBLE",
    "total_ms": "DOUBLE",
    "text": "VARCHAR",
    "text_sha256": "VARCHAR",
    "confidence": "DOUBLE",
    "word_count": "BIGINT",
    "shadow_drops": "BIGINT",
    "failover_from": "VARCHAR",
    "client_session": "VARCHAR",
}
# The stored label's fields (docs/labels.md), its normalisation and per-record error counts
# where the label has them (null otherwise), and the experiment (null: the default route).
SCORE_TYPE: Final = (
    "STRUCT(record_id VARCHAR, substitutions BIGINT, deletions BIGINT, insertions BIGINT, "
    "hits BIGINT)[]"
)
LABEL_COLUMNS: Final[Mapping[str, str]] = {
    "experiment": "VARCHAR",
    "record_id": "VARCHAR",
    "text": "VARCHAR",
    "labeller": "VARCHAR",
    "labelled_at": "VARCHAR",
    "source": "VARCHAR",
    "normalisation": "VARCHAR",
    "scores": SCORE_TYPE,
}


@dataclass(frozen=True, slots=True)
class Partition:
    """One outcome partition: an experiment (None: the default route), a phase, a UTC date."""

    experiment: str | None
    phase: str | None
    date: str  # YYYY-MM-DD

    @classmethod
    def of(cls, record: OutcomeRecord) -> Partition:
        return cls(record.experiment, record.phase, record.timestamp[:10])

    def folder(self, root: Path) -> Path:
        return (
            experiment_folder(root, self.experiment)
            / f"phase={_value(self.phase)}"
            / f"date={self.date}"
        )


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one `append_outcomes` call did."""

    added: int  # records written
    present: int  # records the lake already held (not written again)
    files: tuple[Path, ...]  # the new files


@dataclass(frozen=True, slots=True)
class LakeSources:
    """The Parquet files of one experiment in an export directory, each checked."""

    outcomes: tuple[Path, ...]
    labels: tuple[Path, ...]


def _value(value: str | None) -> str:
    """A partition folder's value: ids and phase ids as they are (letters, digits, "-._~");
    any other character percent-encoded, so no value can name another folder ("/", "..").
    None, and the empty string, are the engines' null partition (as in Hive)."""
    if not value:
        return NULL_PARTITION
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


def experiment_key(experiment: str | None) -> str | None:
    """The records' `experiment` value of an experiment id (None for `_default`)."""
    return None if experiment in (None, NO_EXPERIMENT) else experiment


def experiment_folder(root: Path, experiment: str | None) -> Path:
    return root / OUTCOMES_DIR / f"experiment={_value(experiment_key(experiment))}"


def labels_folder(root: Path, experiment: str | None) -> Path:
    return root / LABELS_DIR / f"experiment={_value(experiment_key(experiment))}"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _columns_sql(columns: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{_sql_text(n)}: {_sql_text(t)}" for n, t in columns.items()) + "}"


def _select_sql(columns: Mapping[str, str]) -> str:
    return ", ".join(f'"{name}"' for name in columns)


_COPY_OPTIONS: Final = (
    f"FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{VERSION_KEY}: '{EXPORT_SCHEMA_VERSION}'}}"
)
# The statements, from constants only; every path is a parameter. Parameters: the staged
# JSON lines, (the partition's existing files,) the file to write.
_READ_OUTCOMES: Final = (
    f"SELECT {_select_sql(OUTCOME_COLUMNS)} FROM read_json(?, "  # noqa: S608 - constants
    "format='newline_delimited', "
    f"columns={_columns_sql(OUTCOME_COLUMNS)})"
)
_COPY_OUTCOMES: Final = (
    f"COPY ({_READ_OUTCOMES} ORDER BY timestamp, record_id) TO ? ({_COPY_OPTIONS})"
)
_COPY_NEW_OUTCOMES: Final = (
    f"COPY ({_READ_OUTCOMES} WHERE record_id NOT IN "  # noqa: S608 - constants
    f"(SELECT record_id FROM read_parquet(?)) ORDER BY timestamp, record_id) "
    f"TO ? ({_COPY_OPTIONS})"
)
_COPY_LABELS: Final = (
    f"COPY (SELECT {_select_sql(LABEL_COLUMNS)} FROM read_json(?, "  # noqa: S608 - constants
    f"format='newline_delimited', columns={_columns_sql(LABEL_COLUMNS)}) ORDER BY record_id) "
    f"TO ? ({_COPY_OPTIONS})"
)


# -- writing --------------------------------------------------------------------------------


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer per export directory (a follower and a one-off export may share it)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        yield


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temporary: Path, final: Path) -> None:
    """Make a written file durable under its final name: fsync, rename, fsync the folder."""
    _fsync_path(temporary)
    os.replace(temporary, final)
    _fsync_path(final.parent, directory=True)


def _staging(root: Path, lines: Iterable[str]) -> Path:
    """The JSON lines DuckDB reads the rows from: a private file under the directory."""
    folder = root / STAGING_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{secrets.token_hex(8)}.jsonl"
    with open(path, "w", encoding="ascii") as file:
        for line in lines:
            file.write(line + "\n")
    return path


def _part_name() -> str:
    moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"part-{moment}-{secrets.token_hex(4)}.parquet"


class LakeWriter:
    """Writes to one export directory through one DuckDB connection (opening one costs tens
    of milliseconds, a follower writes many batches). Files it has checked or written are not
    checked again. Not for concurrent use: one call at a time, from any one thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._con = duckdb.connect()
        self._checked: set[Path] = set()  # files of this export version, seen or written

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> LakeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, records: Iterable[OutcomeRecord]) -> AppendResult:
        """Add the records the lake does not hold yet, one new durable file per partition.

        Records of schema versions 1-3 get null in the columns they lack; a record of a
        newer version loses the fields version 1 of the export does not have. Blocking
        (file I/O and DuckDB): call it in a worker thread from the event loop.
        """
        partitions: dict[Partition, dict[str, OutcomeRecord]] = {}
        for record in records:
            partitions.setdefault(Partition.of(record), {}).setdefault(record.record_id, record)
        added = present = 0
        files: list[Path] = []
        if not partitions:
            return AppendResult(0, 0, ())
        with _locked(self.root):
            for partition, batch in partitions.items():
                folder = partition.folder(self.root)
                existing = sorted(folder.glob("*.parquet"))
                _checked_files(self._con, [f for f in existing if f not in self._checked])
                self._checked.update(existing)
                written, file = _write_new(self._con, self.root, folder, existing, batch.values())
                added += written
                present += len(batch) - written
                if file is not None:
                    files.append(file)
                    self._checked.add(file)
        return AppendResult(added, present, tuple(files))

    def replace_labels(self, experiment: str, labels: Iterable[Label]) -> int:
        """Write an experiment's current labels as its labels file (replacing the last
        export's); returns the number of labels. No labels: no file (an earlier one stays)."""
        lines = [label_row(experiment, label) for label in labels]
        if not lines:
            return 0
        folder = labels_folder(self.root, experiment)
        with _locked(self.root):
            staging = _staging(self.root, lines)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / LABELS_FILE
                temporary = final.with_name(f".{secrets.token_hex(4)}.tmp")
                self._con.execute(_COPY_LABELS, [str(staging), str(temporary)])
                _publish(temporary, final)
            finally:
                staging.unlink(missing_ok=True)
        return len(lines)


def append_outcomes(root: Path, records: Iterable[OutcomeRecord]) -> AppendResult:
    """`LakeWriter.append` once (a one-off call)."""
    with LakeWriter(root) as writer:
        return writer.append(records)


def replace_labels(root: Path, experiment: str, labels: Iterable[Label]) -> int:
    """`LakeWriter.replace_labels` once (a one-off call)."""
    with LakeWriter(root) as writer:
        return writer.replace_labels(experiment, labels)


def _write_new(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    folder: Path,
    existing: list[Path],
    records: Iterable[OutcomeRecord],
) -> tuple[int, Path | None]:
    """Write the records whose ids no file of `existing` holds to a new file in `folder`;
    the number written and the file (None: all were there)."""
    staging = _staging(root, (record.to_json() for record in records))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / _part_name()
        temporary = final.with_name(final.name + ".tmp")  # not *.parquet: no glob sees it
        if existing:
            row = con.execute(
                _COPY_NEW_OUTCOMES, [str(staging), [str(p) for p in existing], str(temporary)]
            ).fetchone()
        else:
            row = con.execute(_COPY_OUTCOMES, [str(staging), str(temporary)]).fetchone()
        written = int(row[0]) if row else 0
        if written:
            _publish(temporary, final)
            return written, final
        temporary.unlink(missing_ok=True)
        return 0, None
    finally:
        staging.unlink(missing_ok=True)


def label_row(experiment: str | None, label: Label) -> str:
    """One label as the JSON line its Parquet row is read from; fields a newer label adds
    (its normalisation, its per-record error counts) come along when present."""
    data = json.loads(label.to_json())
    data["experiment"] = experiment_key(experiment)
    return json.dumps(data, ensure_ascii=True)


# -- reading back ---------------------------------------------------------------------------


def _checked_files(con: duckdb.DuckDBPyConnection, files: list[Path]) -> list[Path]:
    """The files, if each is Parquet of this export schema version; else ConfigError naming
    the first that is not."""
    if not files:
        return files
    versions: dict[str, str] = {str(path): "" for path in files}
    try:
        rows = con.execute(
            "SELECT file_name, value FROM parquet_kv_metadata(?) WHERE decode(key) = ?",
            [[str(path) for path in files], VERSION_KEY],
        ).fetchall()
    except duckdb.Error:
        rows = _kv_file_by_file(con, files)  # to name the file that cannot be read
    for name, value in rows:
        versions[name] = _text(value)
    for path in files:
        version = versions[str(path)]
        if not version:
            raise ConfigError(
                str(path), f"not a speech-gateway export (no {VERSION_KEY} in its metadata)"
            )
        if version != str(EXPORT_SCHEMA_VERSION):
            raise ConfigError(
                str(path),
                f"export schema version {version}; this speech-gateway reads version "
                f"{EXPORT_SCHEMA_VERSION} (docs/export.md)",
            )
    return files


def _kv_file_by_file(
    con: duckdb.DuckDBPyConnection, files: list[Path]
) -> list[tuple[str, bytes | str]]:
    """The version entries, one file at a time: ConfigError naming an unreadable file."""
    rows: list[tuple[str, bytes | str]] = []
    for path in files:
        try:
            rows += con.execute(
                "SELECT file_name, value FROM parquet_kv_metadata(?) WHERE decode(key) = ?",
                [str(path), VERSION_KEY],
            ).fetchall()
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(str(path), f"not a readable Parquet file ({reason})") from None
    return rows


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def exported_experiments(root: Path) -> list[str]:
    """The experiment ids with an outcome partition in the directory (`_default` for none)."""
    found = []
    for folder in sorted((root / OUTCOMES_DIR).glob("experiment=*")):
        value = folder.name.partition("=")[2]
        found.append(NO_EXPERIMENT if value == NULL_PARTITION else value)
    return found


def lake_sources(
    root: Path, experiment: str, *, phase: str | None = None, date: str | None = None
) -> LakeSources:
    """The checked Parquet files of an experiment (optionally one phase, one date) in an
    export directory, for `read_parquet([...], hive_partitioning = false)`: the files' own
    columns, as in the JSONL file. (With hive partitioning, DuckDB's default for these
    paths, the folder values replace `experiment` and `phase` and their types are guessed:
    a phase "1" would become a number.)

    ConfigError, one line naming it: the directory is not an export, the partition asked for
    is missing or holds no file, or a file is of another export schema version (or not
    Parquet). An experiment without labels has no label files.
    """
    if not (root / OUTCOMES_DIR).is_dir():
        raise ConfigError(str(root), f"not an export directory (no {OUTCOMES_DIR}/ folder)")
    folder = experiment_folder(root, experiment)
    if not folder.is_dir():
        known = ", ".join(exported_experiments(root)) or "none"
        raise ConfigError(
            str(folder), f"no partition of experiment {experiment!r} (exported: {known})"
        )
    if phase is not None:
        folder = folder / f"phase={_value(phase)}"
        if not folder.is_dir():
            raise ConfigError(str(folder), f"no partition of phase {phase!r}")
    if date is None:
        pattern = "**/*.parquet"
    else:
        pattern = f"date={date}/*.parquet" if phase is not None else f"*/date={date}/*.parquet"
    outcomes = sorted(folder.glob(pattern))
    if not outcomes:
        where = folder / (f"date={date}" if date is not None else "")
        raise ConfigError(str(where), "the partition holds no Parquet file")
    labels = sorted(labels_folder(root, experiment).glob("*.parquet"))
    with duckdb.connect() as con:
        _checked_files(con, outcomes)
        _checked_files(con, labels)
    return LakeSources(tuple(outcomes), tuple(labels))
