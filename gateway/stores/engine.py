"""The analysis engine: an experiment's evidence computed by SQL in DuckDB, no record in memory.

`observe` (`gateway.analysis.observations`) builds a phase's evidence from records in
Python, about 100 µs and several KB per record. `DuckDbEngine.observations` computes the
same `PhaseObservations` with SQL straight from the store's files: the JSON-lines outcome
file (`jsonl`) or a Parquet export (`parquet`, `gateway.stores.lake`). DuckDB reads the
columns the observations need, classifies each record (`outcomes.record.category`, the same
rules written as SQL), finds the failed attempts their clients retried (window functions
over each client session's attempts), counts per variant, and hands over only the arrays
the statistics need: per outcome its time, unit code, category, latencies and confidence;
per scored utterance its time, unit and WER counts.

Labels: `evidence` (`engine_port.LabelledEvidenceSource`) reads the store's label file (or
the export's label files) with SQL too, the last valid line of a record winning as in the
label store, so no label is parsed in Python but those of the records read whole; `inputs`
takes the labels from its caller. The counts stored with each label
(`gateway.outcomes.label_scores`) are used as they are; a label without current ones is
aligned here, once. Records are materialised as objects only where a part of the report
needs whole records: canaries, the error analysis's units, shadow sessions, labelled
records to align; a JSON-lines file's are read back by their ids (`jsonl_lines`), a
Parquet export's (or a file that gives its ids otherwise) by DuckDB a second time, with
every column.
DuckDB's memory is bounded (`memory_limit`); its tables spill to a scratch folder beyond,
and a source too large for the memory it may use raises `StoreUnavailable`.

Both paths sort outcomes by (timestamp, record_id), so they agree exactly, whatever order
the store returned the records in; `tests/stores/test_engine.py` pins the equality.

A file DuckDB cannot parse (a torn last line while the gateway appends, a bad line) raises
`EngineUnreadable` (`gateway.errors`): the caller falls back to the record reader, which
tolerates the one and names the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import types
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, get_args, get_type_hints

import duckdb
import numpy as np
import numpy.typing as npt

from gateway.analysis.engine_port import AnalysisWindow, Evidence
from gateway.analysis.observations import (
    LATENCY_METRICS,
    OutcomeTable,
    PhaseObservations,
    ScoredTable,
    VariantObservations,
    counts_of,
    shadow_pairs,
)
from gateway.analysis.unit_sample import KEY_DIGITS, UnitSample
from gateway.constants import NO_EXPERIMENT
from gateway.errors import EngineUnreadable, StoreUnavailable
from gateway.outcomes.labels import LABEL_SOURCES, MAX_LABELLER_CHARS, MAX_TEXT_CHARS, Label
from gateway.outcomes.record import (
    CANCELLED_PREFIXES,
    CATEGORIES,
    FIELD_NAMES,
    MAX_COUNT,
    MAX_MS,
    NO_MATCH_STATUSES,
    REFUSAL_STATUSES,
    OutcomeRecord,
    Role,
)
from gateway.stores.jsonl_lines import records_by_id
from gateway.stores.label_store import labels_path_beside
from gateway.stores.lake import LABEL_COLUMNS, exported_experiments, lake_sources
from gateway.text.normalize import NORMALISATION_VERSION

RETRY_GAP_S: Final = 120.0  # as gateway.analysis.observations.RETRY_GAP_S
# DuckDB's buffer pool (the analysis' arrays come on top): 400 MB, or a third of the size of
# the source's JSON, at most half the machine's memory. The table of the records' observed
# columns takes about a third of their JSON; sorts and joins past the limit spill to a
# scratch folder. At ten million records (8.6 GB of JSON, 2 cores) a limit of 2.9 GB took
# 99 s and peaked at 3.5 GB, one of 4.1 GB 88 s and 4.9 GB: memory is what runs out first.
MEMORY_LIMIT_MIN: Final = 400 << 20
SOURCE_SHARE: Final = 3  # the limit is 1/SOURCE_SHARE of the source's JSON
_PARQUET_RATIO: Final = 8  # a Parquet export is about an eighth of its JSON lines


# Where a container's memory limit is (cgroup v2, then v1): the machine's memory is not
# what a process in a container may use.
_CGROUP_LIMITS: Final = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def memory_limit(source_bytes: int, cgroup_limits: Sequence[Path] = _CGROUP_LIMITS) -> int:
    """DuckDB's memory limit for a source of this many bytes of JSON lines: a third of the
    source, at least MEMORY_LIMIT_MIN, at most half the memory this process may use (the
    machine's, or its container's limit if lower)."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # not on this system: no cap beyond the source's
        available = 4 * source_bytes
    for path in cgroup_limits:
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit():  # "max" (v2) or a huge number (v1): no limit
            available = min(available, int(text))
    return max(MEMORY_LIMIT_MIN, min(source_bytes // SOURCE_SHARE, available // 2))


def _sql_type(hint: Any) -> str:
    args = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    base = next(arg for arg in args if arg is not type(None))
    if base is bool:
        return "BOOLEAN"
    if base is int:
        return "BIGINT"
    if base is float:
        return "DOUBLE"
    return "VARCHAR"  # str and the record's string enums


# The record's columns and their SQL types, read from the record's annotations.
_HINTS: Final = {n: h for n, h in get_type_hints(OutcomeRecord).items() if n in FIELD_NAMES}
COLUMNS: Final = {name: _sql_type(hint) for name, hint in _HINTS.items()}


def _valid_sql() -> str:
    """What a record must satisfy to be read as one (`OutcomeRecord`'s checks of types,
    ranges, enums and required fields, in SQL); a source with a record that does not is
    read by the record reader instead, which names it."""
    rules = [
        "regexp_full_match(record_id, '[0-9a-f]{32}')",
        "regexp_full_match(\"timestamp\", '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z')",
        "schema_version >= 1",
        "coalesce(confidence, 0) <= 1",
        "coalesce(client_session, 'x') <> ''",
    ]
    for name in ("client", "unit", "session_id", "status"):
        rules.append(f"{name} <> ''")
    for name, hint in _HINTS.items():
        args = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        base = next(arg for arg in args if arg is not type(None))
        if type(None) not in args:
            rules.append(f'"{name}" IS NOT NULL')
        if isinstance(base, type) and issubclass(base, StrEnum):
            rules.append(f'coalesce("{name}" IN {_in([m.value for m in base])}, true)')
        elif COLUMNS[name] == "DOUBLE":
            rules.append(f'coalesce(isfinite("{name}") AND "{name}" BETWEEN 0 AND {MAX_MS}, true)')
        elif COLUMNS[name] == "BIGINT":
            rules.append(f'coalesce("{name}" BETWEEN 0 AND {MAX_COUNT}, true)')
    return " AND ".join(rules)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in(values: Sequence[str]) -> str:
    return "(" + ", ".join(_quote(v) for v in sorted(values)) + ")"


def category_sql(starts_with: str = "starts_with") -> str:
    """`gateway.outcomes.record.category` as an SQL expression: the index into CATEGORIES
    (`starts_with`: the dialect's prefix test, ClickHouse's `startsWith`)."""
    index = {name: CATEGORIES.index(name) for name in CATEGORIES}
    cancelled = " OR ".join(
        f"{starts_with}(coalesce(error_code, ''), {_quote(p)})" for p in CANCELLED_PREFIXES
    )
    return (
        "CASE WHEN kind = 'session_failure' THEN "
        f"(CASE WHEN status IN {_in(list(REFUSAL_STATUSES))} OR {cancelled} "
        f"THEN {index['cancellation']} ELSE {index['error']} END) "
        f"WHEN status = 'Success' THEN {index['success']} "
        f"WHEN status IN {_in(list(NO_MATCH_STATUSES))} THEN {index['no_match']} "
        f"ELSE {index['error']} END"
    )


# The record's columns the observations read; the others (text, durations, ...) are read
# again only for the records a part of the report needs whole.
OBSERVED_COLUMNS: Final = (
    "record_id",
    "kind",
    "phase",
    "variant",
    "role",
    "forced",
    "client",
    "unit",
    "session_id",
    "backend",
    "first_hypothesis_ms",
    "final_latency_ms",
    "confidence",
    "failover_from",
    "client_session",
)
# The stored label's columns (docs/labels.md), as the lake's label files have them.
LABEL_TYPES: Final = {name: kind for name, kind in LABEL_COLUMNS.items() if name != "experiment"}


# White space as Python's str.strip() sees it (ASCII, the separators, and the controls it
# counts): a stored label's text has none at either end.
_SPACE: Final = r"[\s\x0b\x1c-\x1f\x85\pZ]"


def _label_sql() -> str:
    """What a label line must satisfy to count: `Label`'s checks, in SQL; the label stores
    skip a line that fails them, and so does the engine. A line that passes these but not
    `Label` itself (a JSON number where a name belongs, which the typed reading turns into
    text; a character class the two regular expression engines see apart) is caught when
    its label is read whole (`_labels_of`), and the record reader, which applies `Label`
    to every line, reads the store instead."""
    return (
        "regexp_full_match(record_id, '[0-9a-f]{32}') "
        f"AND text IS NOT NULL AND length(text) BETWEEN 1 AND {MAX_TEXT_CHARS} "
        f"AND NOT regexp_matches(text, '^{_SPACE}|{_SPACE}$') "
        f"AND labeller IS NOT NULL AND length(labeller) <= {MAX_LABELLER_CHARS} "
        f"AND NOT regexp_full_match(labeller, '{_SPACE}*') "
        "AND NOT regexp_matches(replace(labeller, ' ', ''), '[\\pC\\pZ]') "
        "AND regexp_full_match(labelled_at, '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z') "
        "AND try_cast(labelled_at AS TIMESTAMP) IS NOT NULL "
        f"AND source IN {_in(list(LABEL_SOURCES))} "
        "AND (normalisation IS NULL) = (scores IS NULL) "
        "AND (normalisation IS NULL OR length(normalisation) BETWEEN 1 AND 64) "
        "AND (scores IS NULL OR len(list_distinct(list_transform(scores, lambda s: s.record_id))) "
        "= len(scores))"
    )


def _jsonl_labels(path: Path) -> str:
    """A label file's lines as a relation, each with its `line` number (DuckDB keeps a
    scan's order); a line that is not JSON of the label's types is skipped, as the label
    stores skip it."""
    # The text fields are read as JSON, so that one of another JSON type (a number where a
    # name belongs) is NULL, and the line fails `_label_sql`, as `Label` refuses it.
    texts = [name for name, kind in LABEL_TYPES.items() if kind == "VARCHAR"]
    columns = ", ".join(
        f"{_quote(name)}: {_quote('JSON' if name in texts else kind)}"
        for name, kind in LABEL_TYPES.items()
    )
    selected = ", ".join(
        f"CASE WHEN json_type({name}) = 'VARCHAR' THEN {name} ->> '$' END AS {name}"
        if name in texts
        else name
        for name in LABEL_TYPES
    )
    return (
        f"(SELECT {selected}, row_number() OVER () AS line FROM "  # noqa: S608 - constants and a quoted path
        f"read_json({_quote(str(path))}, format = 'newline_delimited', "
        f"columns = {{{columns}}}, ignore_errors = true))"
    )


class DuckDbEngine:
    """An experiment's evidence from a JSON-lines file or Parquet files (module doc)."""

    def __init__(
        self,
        source_sql: str,
        *,
        labels: Callable[[], str | None] | None = None,
        size: Callable[[], int] | None = None,
        threads: int | None = None,
    ) -> None:
        """`labels`: the relation of the store's label lines (with `line`: the later line of
        a record wins), None when there are none (yet); `size`: the source's size in bytes
        of JSON lines, now (`memory_limit`); `threads`: DuckDB's worker threads (None: one
        per core)."""
        self._source = source_sql
        self._labels = labels or (lambda: None)
        self._size = size or (lambda: 0)
        self._threads = threads
        self.labels_path: Path | None = None  # a file store's label file
        # A file store's outcome file: the records read whole are read back from it by
        # their ids (`jsonl_lines`).
        self.outcomes_path: Path | None = None

    @classmethod
    def jsonl(
        cls, path: Path, *, labels_path: Path | None = None, threads: int | None = None
    ) -> DuckDbEngine:
        """The engine of a file store: its outcome file, and its label file (by default the
        one beside it, `label_store.labels_path_beside`)."""
        columns = ", ".join(f"{_quote(name)}: {_quote(kind)}" for name, kind in COLUMNS.items())
        label_file = labels_path or labels_path_beside(path)
        engine = cls(
            f"read_json({_quote(str(path))}, format = 'newline_delimited', "
            f"columns = {{{columns}}})",
            labels=lambda: _jsonl_labels(label_file) if label_file.exists() else None,
            size=lambda: path.stat().st_size if path.exists() else 0,
            threads=threads,
        )
        engine.labels_path = label_file
        engine.outcomes_path = path
        return engine

    @classmethod
    def parquet(
        cls,
        files: Sequence[Path],
        *,
        label_files: Sequence[Path] = (),
        threads: int | None = None,
    ) -> DuckDbEngine:
        listed = ", ".join(_quote(str(path)) for path in files)
        labels = ", ".join(_quote(str(path)) for path in label_files)
        # union_by_name: files of older record versions lack the newer columns; no hive
        # partitioning: the folder names (experiment=..., phase=...) would override the
        # files' own columns with guessed types (a phase "1" read as a number).
        label_sql = (
            "(SELECT *, row_number() OVER () AS line FROM "  # noqa: S608 - quoted paths
            f"read_parquet([{labels}], union_by_name = true, hive_partitioning = false))"
        )
        return cls(
            f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)",
            labels=lambda: label_sql if label_files else None,
            size=lambda: _PARQUET_RATIO * sum(path.stat().st_size for path in files),
            threads=threads,
        )

    def _window(self, window: AnalysisWindow) -> tuple[str, list[Any]]:
        """The window's condition on the source, and its parameters."""
        conditions = [f"coalesce(experiment, {_quote(NO_EXPERIMENT)}) = ?"]
        params: list[Any] = [window.experiment]
        if window.since is not None:
            conditions.append('CAST("timestamp" AS TIMESTAMPTZ) >= ?')
            params.append(window.since)
        if window.until is not None:
            conditions.append('CAST("timestamp" AS TIMESTAMPTZ) < ?')
            params.append(window.until)
        return " AND ".join(conditions), params

    @contextmanager
    def _records(self, window: AnalysisWindow) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection holding `r`: the window's records, each once, with the columns the
        observations read (`OBSERVED_COLUMNS`), `at_s` (epoch seconds), `cat` (its
        category's index) and `has_text`. Every record is checked against the documented
        format in the same reading."""
        spill = tempfile.TemporaryDirectory(prefix="gateway-engine-")
        # DuckDB's own memory stays bounded: tables past the limit go to a scratch folder
        # (they hold a few hundred bytes a record: several GB at ten million records).
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": f"{memory_limit(self._size()) >> 20}MB",
            "temp_directory": spill.name,
        }
        if self._threads is not None:
            config["threads"] = self._threads
        con = duckdb.connect(":memory:", config=config)
        try:
            where, params = self._window(window)
            selected = ", ".join(f'"{name}"' for name in OBSERVED_COLUMNS)
            try:
                con.execute(
                    f"CREATE TEMP TABLE r AS SELECT {selected}, "  # noqa: S608 - constants and quoted paths; values are parameters
                    'epoch_ms(CAST("timestamp" AS TIMESTAMPTZ)) / 1000.0 AS at_s, '
                    f"{category_sql()} AS cat, text IS NOT NULL AS has_text, "
                    f"coalesce({_valid_sql()}, true) AS ok "
                    f"FROM {self._source} WHERE {where}",
                    params,
                )
                row = con.execute(
                    "SELECT count(*) FILTER (WHERE NOT ok), count(*) - count(DISTINCT record_id) "
                    "FROM r"
                ).fetchone()
                if row is not None and row[1]:
                    # A record delivered twice counts once. Rare: only then the table is
                    # rebuilt (DISTINCT ON over every record costs more than the reading).
                    con.execute("CREATE TEMP TABLE once AS SELECT DISTINCT ON (record_id) * FROM r")
                    con.execute("DROP TABLE r")
                    con.execute("ALTER TABLE once RENAME TO r")
            except duckdb.OutOfMemoryException as exc:
                raise _out_of_memory(exc) from exc
            except duckdb.Error as exc:
                raise EngineUnreadable(str(exc).splitlines()[0]) from exc
            if row is not None and row[0]:
                raise EngineUnreadable(f"{row[0]} records outside the documented format")
            try:
                yield con
            except duckdb.OutOfMemoryException as exc:
                raise _out_of_memory(exc) from exc
            except duckdb.Error as exc:  # a query of ours: no reason to read record by record
                raise StoreUnavailable(f"analysis engine: {str(exc).splitlines()[0]}") from exc
        finally:
            con.close()
            spill.cleanup()

    def observations(
        self, window: AnalysisWindow, labels: Mapping[str, Label]
    ) -> dict[str, PhaseObservations]:
        """Phase id -> its observations: equal to `observe` on the same records and labels."""
        return self.inputs(window, labels, limit=0)[1]

    def records(self, window: AnalysisWindow, sample: UnitSample | None) -> list[OutcomeRecord]:
        """The window's records in (timestamp, record_id) order; with a sample, the canary
        records and those of the sample's units (`unit_sample.sampled`)."""
        with self._records(window) as con:
            return self._fetch_whole(con, window, sample, frozenset())

    def inputs(
        self, window: AnalysisWindow, labels: Mapping[str, Label], limit: int
    ) -> tuple[list[OutcomeRecord], dict[str, PhaseObservations], UnitSample | None]:
        """What the report needs, from one reading of the source: the observations, the
        error analysis's sample of units (`UnitSample.for_labelled` with `limit`), and the
        records of that sample and the canaries. The labels are the ones given."""
        with tempfile.TemporaryDirectory() as folder:
            # A file is the one way into DuckDB that needs neither pandas nor pyarrow.
            path = Path(folder) / "labels.jsonl"
            path.write_text("".join(label.to_json() + "\n" for label in labels.values()))
            found = self._evidence(window, limit, _jsonl_labels(path), frozenset(), frozenset())
        return found.records, found.observations, found.sample

    def evidence(
        self,
        window: AnalysisWindow,
        limit: int,
        *,
        held_back: frozenset[str] = frozenset(),
        wanted: frozenset[str] = frozenset(),
    ) -> Evidence:
        """`inputs` with the store's own labels (`engine_port.LabelledEvidenceSource`)."""
        return self._evidence(window, limit, self._labels(), held_back, wanted)

    def _evidence(
        self,
        window: AnalysisWindow,
        limit: int,
        label_source: str | None,
        held_back: frozenset[str],
        wanted: frozenset[str],
    ) -> Evidence:
        with self._records(window) as con:
            try:
                _load_labels(con, label_source, held_back, wanted)
            except duckdb.Error as exc:
                raise EngineUnreadable(str(exc).splitlines()[0]) from exc
            _derive(con)
            phases = _phases(con)
            row = con.execute(
                "SELECT count(*) FROM r WHERE role = 'primary' "
                "AND record_id IN (SELECT record_id FROM labelled)"
            ).fetchone()
            sample = UnitSample.for_labelled(0 if row is None else int(row[0]), limit)
            shadowed, unscored = _special_ids(con)
            whole = self._fetch_whole(con, window, sample, shadowed | unscored)
            labels = _materialised(con, [r.record_id for r in whole], wanted)
            headline = {
                rid: label
                for rid, label in labels.items()
                if not (label.source == "review" and rid in held_back)
            }
            _fill_variants(con, phases, {r.record_id: r for r in whole}, headline)
            for phase in phases.values():
                phase.shadow_pairs = shadow_pairs(
                    [r for r in whole if r.phase == phase.phase and r.record_id in shadowed],
                    headline,
                )
            records = [r for r in whole if _reported(r, sample)]
            return Evidence(records, phases, sample, labels)

    def _fetch_whole(
        self,
        con: duckdb.DuckDBPyConnection,
        window: AnalysisWindow,
        sample: UnitSample | None,
        extra: frozenset[str],
    ) -> list[OutcomeRecord]:
        """The records read again from the source with every column, in (timestamp,
        record_id) order: the reported ones (`_reported`) and those of the `extra` ids."""
        reported = (
            "true"
            if sample is None
            else f"role = 'canary' OR substr(md5(unit), 1, {KEY_DIGITS}) < ?"
        )
        if self.outcomes_path is not None:
            rows = con.execute(
                f"SELECT record_id FROM r WHERE ({reported}) "  # noqa: S608 - constants; values are parameters
                "OR list_contains(?, record_id)",
                [*([] if sample is None else [sample.threshold]), sorted(extra)],
            ).fetchall()
            found = records_by_id(self.outcomes_path, [row[0] for row in rows])
            if found is not None:
                return sorted(found, key=lambda r: (r.timestamp, r.record_id))
        # A Parquet export, or a file whose lines give their ids otherwise than the gateway
        # writes them: the records read again with DuckDB.
        where, params = self._window(window)
        # A list, not a join with a table of ids: DuckDB would build the join's hash table
        # on the file's side, holding every record in memory.
        params = [*params, *([] if sample is None else [sample.threshold]), sorted(extra)]
        selected = ", ".join(f'"{name}"' for name in COLUMNS)
        try:
            rows = con.execute(
                f"SELECT * FROM (SELECT DISTINCT ON (record_id) {selected} "  # noqa: S608 - constants and quoted paths; values are parameters
                f"FROM {self._source} WHERE {where} "
                f"AND (({reported}) OR list_contains(?, record_id))) "
                'ORDER BY "timestamp", record_id',
                params,
            ).fetchall()
        except duckdb.Error as exc:  # the file changed since its first reading
            raise EngineUnreadable(str(exc).splitlines()[0]) from exc
        names = list(COLUMNS)
        return [OutcomeRecord(**dict(zip(names, row, strict=True))) for row in rows]


def _out_of_memory(exc: duckdb.Error) -> StoreUnavailable:
    """Out of memory: said as such, never answered by reading record by record, which would
    need far more."""
    return StoreUnavailable(
        f"analysis engine out of memory (DuckDB: {str(exc).splitlines()[0][:120]}); "
        "free memory or analyse a shorter window (--since/--until)"
    )


def _reported(record: OutcomeRecord, sample: UnitSample | None) -> bool:
    """A record the report reads whole: a canary, or one of the sample's units
    (`unit_sample.sampled`); every record without a sample."""
    return sample is None or record.role is Role.CANARY or sample.keeps(record.unit)


def _load_labels(
    con: duckdb.DuckDBPyConnection,
    source: str | None,
    held_back: frozenset[str],
    wanted: frozenset[str],
) -> None:
    """`lab`: the current label (the last valid line) of each record of `r` and of the
    `wanted` ids; `labelled`: the ids of `r` whose label is evidence (not held back);
    `sc`: the WER counts stored with those labels under the current normalisation."""
    columns = ", ".join(f"{name} {kind}" for name, kind in LABEL_TYPES.items())
    if source is None:
        con.execute(f"CREATE TEMP TABLE lab ({columns})")
    else:
        names = ", ".join(LABEL_TYPES)
        con.execute(
            f"CREATE TEMP TABLE lab AS SELECT {names} FROM {source} "  # noqa: S608 - constants and quoted paths; values are parameters
            f"WHERE {_label_sql()} AND (record_id IN (SELECT record_id FROM r) "
            "OR list_contains(?, record_id)) "
            "QUALIFY row_number() OVER (PARTITION BY record_id ORDER BY line DESC) = 1",
            [sorted(wanted)],
        )
    con.execute(
        "CREATE TEMP TABLE labelled AS SELECT record_id FROM lab "
        "WHERE record_id IN (SELECT record_id FROM r) "
        "AND NOT (source = 'review' AND list_contains(?, record_id))",
        [sorted(held_back)],
    )
    con.execute(
        "CREATE TEMP TABLE sc AS SELECT label_id, struct_extract(s, 'record_id') AS scored_id, "
        "struct_extract(s, 'substitutions') AS substitutions, "
        "struct_extract(s, 'deletions') AS deletions, "
        "struct_extract(s, 'insertions') AS insertions, struct_extract(s, 'hits') AS hits "
        "FROM (SELECT record_id AS label_id, unnest(scores) AS s FROM lab "
        "WHERE normalisation = ? AND record_id IN (SELECT record_id FROM labelled))",
        [NORMALISATION_VERSION],
    )


def _special_ids(con: duckdb.DuckDBPyConnection) -> tuple[frozenset[str], frozenset[str]]:
    """The ids of records read whole besides the reported ones: `shadowed` (the primaries
    and shadows of sessions with a shadow, for the pairs) and `unscored` (labelled evidence
    whose label has no current counts of it: its text is aligned in Python, once)."""
    shadowed = con.execute(
        "SELECT record_id FROM r WHERE role IN ('primary', 'shadow') AND variant IS NOT NULL "
        "AND phase IS NOT NULL AND EXISTS (SELECT 1 FROM r AS s WHERE s.role = 'shadow' "
        "AND s.phase = r.phase AND s.session_id = r.session_id)"
    ).fetchall()
    unscored = con.execute(
        "SELECT record_id FROM e WHERE has_label AND has_text AND NOT failure "
        "AND NOT forced AND failover_from IS NULL AND NOT EXISTS (SELECT 1 FROM sc "
        "WHERE sc.label_id = e.record_id AND sc.scored_id = e.record_id)"
    ).fetchall()
    return frozenset(row[0] for row in shadowed), frozenset(row[0] for row in unscored)


def _materialised(
    con: duckdb.DuckDBPyConnection, ids: Sequence[str], wanted: frozenset[str]
) -> dict[str, Label]:
    """The current labels of the records read whole (`ids`) and of the `wanted` ids."""
    rows = con.execute(
        "SELECT to_json(t) FROM (SELECT * FROM lab WHERE list_contains(?, record_id)) AS t",
        [sorted({*ids, *wanted})],
    ).fetchall()
    return _labels_of(row[0] for row in rows)


def _labels_of(rows: Iterable[str]) -> dict[str, Label]:
    found: dict[str, Label] = {}
    for row in rows:
        data = json.loads(row)
        if data.get("scores") is None:  # a label not scored: no counts, not empty ones
            data.pop("scores", None)
            data.pop("normalisation", None)
        try:
            label = Label.from_json(json.dumps(data))
        except ValueError as exc:
            # The label stores would skip this line and count an earlier one: only the
            # record reader, which checks every line, can say which (`_label_sql`).
            raise EngineUnreadable(f"a label line outside the documented format: {exc}") from exc
        found[label.record_id] = label
    return found


def _derive(con: duckdb.DuckDBPyConnection) -> None:
    """`retried`: the failed attempts another attempt of their client session followed within
    RETRY_GAP_S (`observations.retried_attempts`); `e`: the primary evidence records with
    their assigned variant and flags."""
    con.execute(
        "CREATE TEMP TABLE retried AS "  # noqa: S608 - constants and quoted paths; values are parameters
        "WITH attempts AS ("
        "  SELECT client, coalesce(client_session, session_id) AS cs, session_id,"
        "    min(at_s) AS first_at, max(at_s) AS last_at,"
        "    bool_or(kind = 'session_failure') AS failed"
        "  FROM r WHERE role = 'primary' GROUP BY client, cs, session_id),"
        " ordered AS ("
        "  SELECT *, lead(first_at) OVER (PARTITION BY client, cs ORDER BY first_at, session_id)"
        "    AS next_first FROM attempts)"
        " SELECT DISTINCT session_id FROM ordered"
        f" WHERE failed AND next_first - last_at <= {RETRY_GAP_S}"
    )
    con.execute(
        "CREATE TEMP VIEW e AS SELECT r.*, "
        "coalesce(failover_from, variant) AS assigned, "
        "kind = 'session_failure' AS failure, "
        "session_id IN (SELECT session_id FROM retried) AS was_retried, "
        "record_id IN (SELECT record_id FROM labelled) AS has_label, "
        "client || chr(0) || coalesce(client_session, session_id) AS client_key "
        "FROM r WHERE role = 'primary' AND phase IS NOT NULL AND variant IS NOT NULL"
    )


def _phases(con: duckdb.DuckDBPyConnection) -> dict[str, PhaseObservations]:
    phases: dict[str, PhaseObservations] = {}
    # Every phase with an evidence record (as `observe`), in order of its first record.
    for phase_id, first, last in con.execute(
        "SELECT phase, min(at_s) FILTER (WHERE role = 'primary' AND NOT forced"
        " AND failover_from IS NULL), max(at_s) FILTER (WHERE role = 'primary' AND NOT forced"
        " AND failover_from IS NULL)"
        " FROM r WHERE role IN ('primary', 'shadow') AND phase IS NOT NULL"
        " AND variant IS NOT NULL GROUP BY phase ORDER BY min(at_s), phase"
    ).fetchall():
        phase = PhaseObservations(phase_id)
        if first is not None:
            phase.first, phase.last = float(first), float(last)
        phases[phase_id] = phase
    return phases


_COUNTS_SQL: Final = """
WITH assigned AS (
  SELECT phase, assigned AS variant,
    count(DISTINCT client_key) AS client_sessions,
    count(DISTINCT client_key) FILTER (
      WHERE failure AND NOT was_retried AND cat = {error}) AS failed_client_sessions,
    count(*) FILTER (WHERE failover_from IS NOT NULL) AS failed_over
  FROM e WHERE NOT forced GROUP BY phase, assigned),
retried_sessions AS (
  SELECT phase, variant, count(*) AS retried_client_sessions FROM (
    SELECT phase, assigned AS variant, client_key FROM e WHERE NOT forced
    GROUP BY phase, assigned, client_key HAVING count(DISTINCT session_id) > 1)
  GROUP BY phase, variant),
served AS (
  SELECT phase, variant,
    list(DISTINCT backend) FILTER (WHERE backend IS NOT NULL) AS backends,
    count(DISTINCT unit) AS units,
    count(DISTINCT session_id) AS sessions,
    count(DISTINCT session_id) FILTER (WHERE failure AND cat = {error}) AS failed_attempts,
    count(*) FILTER (WHERE NOT failure) AS utterances,
    count(*) FILTER (WHERE NOT failure AND has_label) AS labelled,
    count(*) FILTER (WHERE NOT failure AND has_label AND NOT has_text) AS unscorable
  FROM e WHERE NOT forced AND failover_from IS NULL GROUP BY phase, variant),
forced AS (SELECT phase, variant, count(*) AS forced FROM e WHERE forced GROUP BY phase, variant),
keys AS (
  SELECT phase, variant FROM assigned UNION SELECT phase, variant FROM forced)
SELECT keys.phase, keys.variant, coalesce(served.backends, []),
  coalesce(served.units, 0), coalesce(served.sessions, 0), coalesce(forced.forced, 0),
  coalesce(assigned.failed_over, 0), coalesce(served.failed_attempts, 0),
  coalesce(assigned.client_sessions, 0),
  coalesce(retried_sessions.retried_client_sessions, 0),
  coalesce(assigned.failed_client_sessions, 0), coalesce(served.utterances, 0),
  coalesce(served.labelled, 0), coalesce(served.unscorable, 0)
FROM keys
LEFT JOIN assigned USING (phase, variant)
LEFT JOIN retried_sessions USING (phase, variant)
LEFT JOIN served USING (phase, variant)
LEFT JOIN forced USING (phase, variant)
"""


# The counts of `VariantObservations`, in the order _COUNTS_SQL selects them.
COUNT_NAMES: Final = (
    "units",
    "sessions",
    "forced",
    "failed_over",
    "failed_attempts",
    "client_sessions",
    "retried_client_sessions",
    "failed_client_sessions",
    "utterances",
    "labelled",
    "unscorable",
)


def _fill_variants(
    con: duckdb.DuckDBPyConnection,
    phases: dict[str, PhaseObservations],
    whole: Mapping[str, OutcomeRecord],
    labels: Mapping[str, Label],
) -> None:
    """Each phase's variants; `whole` holds the records whose counts are aligned here (their
    labels in `labels`), the others' counts come with their labels."""
    rows = con.execute(_COUNTS_SQL.format(error=CATEGORIES.index("error"))).fetchall()
    # Each unit's code in the order of the units (as `observe`'s): a join with this table
    # costs a third of a dense_rank() over the unit strings of each variant's outcomes.
    con.execute(
        "CREATE TEMP TABLE unit_codes AS SELECT unit, row_number() OVER (ORDER BY unit) - 1 "
        "AS code FROM (SELECT DISTINCT unit FROM e)"
    )
    for row in sorted(rows, key=lambda row: (row[0], row[1])):
        phase_id, name, backends, *counts = row
        table = _outcome_table(con, phase_id, name)
        scores = _scored_table(con, phase_id, name, whole, labels)
        phases[phase_id].variants[name] = VariantObservations(
            name,
            frozenset(backends),
            **dict(zip(COUNT_NAMES, map(int, counts), strict=True)),
            table=table,
            scores=scores,
        )


def _outcome_table(con: duckdb.DuckDBPyConnection, phase: str, variant: str) -> OutcomeTable:
    latency = ", ".join(f"{metric}" for metric in LATENCY_METRICS)
    columns = con.execute(
        "SELECT at_s, code, cat, "  # noqa: S608 - constants and quoted paths; values are parameters
        f"{latency}, CASE WHEN failure THEN NULL ELSE confidence END "
        "FROM e JOIN unit_codes USING (unit) WHERE phase = ? AND variant = ? AND NOT forced "
        "AND failover_from IS NULL AND NOT (failure AND was_retried) ORDER BY at_s, record_id",
        [phase, variant],
    ).fetchnumpy()
    names = list(columns)
    # The variant's units coded 0..K-1 in the order of the units: a dense rank of the codes
    # (counted, not sorted: the codes are 0..U-1).
    codes = np.asarray(columns[names[1]], dtype=np.intp)
    present = np.bincount(codes) > 0 if codes.size else np.zeros(0, dtype=bool)
    rank = np.cumsum(present, dtype=np.intp) - 1
    return OutcomeTable(
        at=_floats(columns[names[0]]),
        units=rank[codes],
        categories=np.asarray(columns[names[2]], dtype=np.intp),
        latencies={
            metric: _floats(columns[names[3 + i]]) for i, metric in enumerate(LATENCY_METRICS)
        },
        confidences=_floats(columns[names[3 + len(LATENCY_METRICS)]]),
    )


_SCORED_SQL: Final = """
SELECT e.at_s, unit_codes.code, e.record_id,
  sc.substitutions, sc.deletions, sc.insertions, sc.hits
FROM e JOIN unit_codes USING (unit)
  LEFT JOIN sc ON sc.label_id = e.record_id AND sc.scored_id = e.record_id
WHERE e.phase = ? AND e.variant = ? AND NOT e.forced AND e.failover_from IS NULL
  AND NOT e.failure AND e.has_label AND e.has_text
ORDER BY e.at_s, e.record_id
"""


def _scored_table(
    con: duckdb.DuckDBPyConnection,
    phase: str,
    variant: str,
    whole: Mapping[str, OutcomeRecord],
    labels: Mapping[str, Label],
) -> ScoredTable:
    """The variant's scored utterances, units coded in order of their first one; the
    counts stored with the labels, else (NULL) aligned now, once."""
    columns = list(con.execute(_SCORED_SQL, [phase, variant]).fetchnumpy().values())
    at, ids = columns[0], columns[2]
    units = _first_seen(np.asarray(columns[1], dtype=np.intp))
    counts = [np.ma.getdata(column).astype(np.int64) for column in columns[3:]]
    missing = np.flatnonzero(np.ma.getmaskarray(columns[3]))
    for index in missing:
        rid = str(ids[index])
        text = whole[rid].text
        assert text is not None  # has_text
        found = counts_of(labels[rid], rid, text)
        for column, value in zip(
            counts,
            (found.substitutions, found.deletions, found.insertions, found.hits),
            strict=True,
        ):
            column[index] = value
    return ScoredTable(
        at=np.asarray(at, dtype=np.float64),
        units=np.asarray(units, dtype=np.intp),
        substitutions=counts[0],
        deletions=counts[1],
        insertions=counts[2],
        hits=counts[3],
    )


def _first_seen(codes: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Codes recoded 0..K-1 in the order of each one's first occurrence."""
    if not codes.size:
        return codes
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.intp)
    rank[np.argsort(first)] = np.arange(first.size, dtype=np.intp)
    found: npt.NDArray[np.intp] = rank[inverse.reshape(-1)]
    return found


def _floats(values: Any) -> npt.NDArray[np.float64]:
    """A fetched column as floats, NULL as NaN (DuckDB hands nullable columns over masked)."""
    if isinstance(values, np.ma.MaskedArray):
        filled: npt.NDArray[np.float64] = np.ma.filled(values.astype(np.float64), np.nan)
        return filled
    return np.asarray(values, dtype=np.float64)


class LakeReader:
    """A Parquet export (`gateway.stores.lake`) as an `OutcomeReader`, and its engine: the
    analysis of an export directory without the store it came from."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def engine(self, experiment: str) -> DuckDbEngine:
        """The engine over the experiment's outcome files (ConfigError, one line: not an
        export, no such partition, a file of another export version)."""
        sources = lake_sources(self.root, experiment)
        return DuckDbEngine.parquet(sources.outcomes, label_files=sources.labels)

    async def outcomes(
        self, experiment: str, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[OutcomeRecord]:
        window = AnalysisWindow(experiment, since, until)
        for record in await asyncio.to_thread(self.engine(experiment).records, window, None):
            yield record

    async def labels(self, experiment: str) -> dict[str, Label]:
        return await asyncio.to_thread(self._labels, experiment)

    async def experiments(self) -> list[str]:
        return exported_experiments(self.root)

    def _labels(self, experiment: str) -> dict[str, Label]:
        files = lake_sources(self.root, experiment).labels
        if not files:
            return {}
        listed = ", ".join(_quote(str(path)) for path in files)
        con = duckdb.connect(":memory:")
        try:
            rows = con.execute(
                "SELECT to_json(t) FROM (SELECT * EXCLUDE (experiment) FROM "  # noqa: S608 - quoted paths
                f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)) AS t"
            ).fetchall()
        finally:
            con.close()
        found: dict[str, Label] = {}
        for (row,) in rows:
            data = json.loads(row)
            if data.get("scores") is None:  # a label not scored: no counts, not empty ones
                data.pop("scores", None)
                data.pop("normalisation", None)
            label = Label.from_json(json.dumps(data))
            found[label.record_id] = label
        return found
