"""The analysis engine: an experiment's evidence computed by SQL in DuckDB, no record in memory.

`observe` (`gateway.analysis.observations`) builds a phase's evidence from records in
Python, about 100 µs and several KB per record. `DuckDbEngine.observations` computes the
same `PhaseObservations` with SQL straight from the store's files: the JSON-lines outcome
file (`jsonl`) or a Parquet export (`parquet`, `gateway.stores.lake`). DuckDB reads the
columns, classifies each record (`outcomes.record.category`, the same rules written as
SQL), finds the failed attempts their clients retried (window functions over each client
session's attempts), counts per variant, and hands over only the arrays the statistics
need: per outcome its time, unit code, category, latencies and confidence; per scored
utterance its time, unit and WER counts. The counts stored with each label
(`gateway.outcomes.label_scores`) are used as they are; a label without current ones is
aligned here, once. Records are materialised as objects only where a part of the report
needs whole records (`records`): canaries, shadow sessions, the error analysis's units.

Both paths sort outcomes by (timestamp, record_id), so they agree exactly, whatever order
the store returned the records in; `tests/stores/test_engine.py` pins the equality.

A file DuckDB cannot parse (a torn last line while the gateway appends, a bad line) raises
`EngineUnreadable` (`gateway.errors`): the caller falls back to the record reader, which
tolerates the one and names the other.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import types
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, get_args, get_type_hints

import duckdb
import numpy as np
import numpy.typing as npt

from gateway.analysis.engine_port import AnalysisWindow
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
from gateway.errors import EngineUnreadable
from gateway.outcomes.labels import Label
from gateway.outcomes.record import (
    CANCELLED_PREFIXES,
    CATEGORIES,
    FIELD_NAMES,
    MAX_COUNT,
    MAX_MS,
    NO_MATCH_STATUSES,
    REFUSAL_STATUSES,
    OutcomeRecord,
)
from gateway.stores.lake import exported_experiments, lake_sources

RETRY_GAP_S: Final = 120.0  # as gateway.analysis.observations.RETRY_GAP_S


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


def category_sql() -> str:
    """`gateway.outcomes.record.category` as an SQL expression: the index into CATEGORIES."""
    index = {name: CATEGORIES.index(name) for name in CATEGORIES}
    cancelled = " OR ".join(
        f"starts_with(coalesce(error_code, ''), {_quote(p)})" for p in CANCELLED_PREFIXES
    )
    return (
        "CASE WHEN kind = 'session_failure' THEN "
        f"(CASE WHEN status IN {_in(list(REFUSAL_STATUSES))} OR {cancelled} "
        f"THEN {index['cancellation']} ELSE {index['error']} END) "
        f"WHEN status = 'Success' THEN {index['success']} "
        f"WHEN status IN {_in(list(NO_MATCH_STATUSES))} THEN {index['no_match']} "
        f"ELSE {index['error']} END"
    )


class DuckDbEngine:
    """An experiment's evidence from a JSON-lines file or Parquet files (module doc)."""

    def __init__(self, source_sql: str, *, threads: int | None = None) -> None:
        """`threads`: DuckDB's worker threads (None: one per core)."""
        self._source = source_sql
        self._threads = threads

    @classmethod
    def jsonl(cls, path: Path, *, threads: int | None = None) -> DuckDbEngine:
        columns = ", ".join(f"{_quote(name)}: {_quote(kind)}" for name, kind in COLUMNS.items())
        return cls(
            f"read_json({_quote(str(path))}, format = 'newline_delimited', "
            f"columns = {{{columns}}})",
            threads=threads,
        )

    @classmethod
    def parquet(cls, files: Sequence[Path], *, threads: int | None = None) -> DuckDbEngine:
        listed = ", ".join(_quote(str(path)) for path in files)
        # union_by_name: files of older record versions lack the newer columns; no hive
        # partitioning: the folder names (experiment=..., phase=...) would override the
        # files' own columns with guessed types (a phase "1" read as a number).
        return cls(
            f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)",
            threads=threads,
        )

    @contextmanager
    def _records(self, window: AnalysisWindow) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection holding `r`: the window's records, each once, with `at_s` (epoch
        seconds) and `cat` (its category's index)."""
        config: dict[str, str | bool | int | float | list[str]] = (
            {} if self._threads is None else {"threads": self._threads}
        )
        con = duckdb.connect(":memory:", config=config)
        try:
            conditions = [f"coalesce(experiment, {_quote(NO_EXPERIMENT)}) = ?"]
            params: list[Any] = [window.experiment]
            if window.since is not None:
                conditions.append('CAST("timestamp" AS TIMESTAMPTZ) >= ?')
                params.append(window.since)
            if window.until is not None:
                conditions.append('CAST("timestamp" AS TIMESTAMPTZ) < ?')
                params.append(window.until)
            selected = ", ".join(f'"{name}"' for name in COLUMNS)
            try:
                con.execute(
                    f"CREATE TEMP TABLE r AS SELECT {selected}, "  # noqa: S608 - constants and quoted paths; values are parameters
                    'epoch_ms(CAST("timestamp" AS TIMESTAMPTZ)) / 1000.0 AS at_s, '
                    f"{category_sql()} AS cat "
                    f"FROM (SELECT DISTINCT ON (record_id) * FROM {self._source} "
                    f"WHERE {' AND '.join(conditions)})",
                    params,
                )
                invalid = con.execute(f"SELECT count(*) FROM r WHERE NOT ({_valid_sql()})")  # noqa: S608 - constants
                row = invalid.fetchone()
            except duckdb.Error as exc:
                raise EngineUnreadable(str(exc).splitlines()[0]) from exc
            if row is not None and row[0]:
                raise EngineUnreadable(f"{row[0]} records outside the documented format")
            yield con
        finally:
            con.close()

    def observations(
        self, window: AnalysisWindow, labels: Mapping[str, Label]
    ) -> dict[str, PhaseObservations]:
        """Phase id -> its observations: equal to `observe` on the same records and labels."""
        with self._records(window) as con, tempfile.TemporaryDirectory() as folder:
            _load_labels(con, Path(folder), labels)
            return _observations(con, labels)

    def records(self, window: AnalysisWindow, sample: UnitSample | None) -> list[OutcomeRecord]:
        """The window's records in (timestamp, record_id) order; with a sample, the canary
        records and those of the sample's units (`unit_sample.sampled`)."""
        with self._records(window) as con:
            return _sampled_records(con, sample)

    def inputs(
        self, window: AnalysisWindow, labels: Mapping[str, Label], limit: int
    ) -> tuple[list[OutcomeRecord], dict[str, PhaseObservations], UnitSample | None]:
        """What the report needs, from one reading of the source: the observations, the
        error analysis's sample of units (`UnitSample.for_labelled` with `limit`), and the
        records of that sample and the canaries."""
        with self._records(window) as con, tempfile.TemporaryDirectory() as folder:
            _load_labels(con, Path(folder), labels)
            observations = _observations(con, labels)
            row = con.execute(
                "SELECT count(*) FROM r WHERE role = 'primary' "
                "AND record_id IN (SELECT record_id FROM labelled)"
            ).fetchone()
            sample = UnitSample.for_labelled(0 if row is None else int(row[0]), limit)
            return _sampled_records(con, sample), observations, sample


def _observations(
    con: duckdb.DuckDBPyConnection, labels: Mapping[str, Label]
) -> dict[str, PhaseObservations]:
    """The observations of `r`, its labels already in `labelled`."""
    _derive(con)
    phases = _phases(con)
    _fill_variants(con, phases, labels)
    for phase in phases.values():
        phase.shadow_pairs = shadow_pairs(
            _fetch_records(
                con,
                "phase = ? AND role IN ('primary', 'shadow') AND variant IS NOT NULL "
                "AND session_id IN (SELECT session_id FROM r "
                "WHERE role = 'shadow' AND phase = ?)",
                [phase.phase, phase.phase],
            ),
            labels,
        )
    return phases


def _sampled_records(
    con: duckdb.DuckDBPyConnection, sample: UnitSample | None
) -> list[OutcomeRecord]:
    if sample is None:
        return _fetch_records(con, "true", [])
    return _fetch_records(
        con,
        f"role = 'canary' OR substr(md5(unit), 1, {KEY_DIGITS}) < ?",
        [sample.threshold],
    )


def _load_labels(con: duckdb.DuckDBPyConnection, folder: Path, labels: Mapping[str, Label]) -> None:
    # A file is the one way into DuckDB that needs neither pandas nor pyarrow at run time.
    path = folder / "labels.csv"
    path.write_text("record_id\n" + "".join(f"{rid}\n" for rid in labels), encoding="ascii")
    con.execute(
        "CREATE TEMP TABLE labelled AS SELECT record_id FROM "  # noqa: S608 - constants and quoted paths; values are parameters
        f"read_csv({_quote(str(path))}, header = true, columns = {{'record_id': 'VARCHAR'}})"
    )


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
        "CREATE TEMP TABLE e AS SELECT r.*, "
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
    count(*) FILTER (WHERE NOT failure AND has_label AND text IS NULL) AS unscorable
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
_COUNT_NAMES: Final = (
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
    labels: Mapping[str, Label],
) -> None:
    rows = con.execute(_COUNTS_SQL.format(error=CATEGORIES.index("error"))).fetchall()
    for row in sorted(rows, key=lambda row: (row[0], row[1])):
        phase_id, name, backends, *counts = row
        table = _outcome_table(con, phase_id, name)
        scores = _scored_table(con, phase_id, name, labels)
        phases[phase_id].variants[name] = VariantObservations(
            name,
            frozenset(backends),
            **dict(zip(_COUNT_NAMES, map(int, counts), strict=True)),
            table=table,
            scores=scores,
        )


def _outcome_table(con: duckdb.DuckDBPyConnection, phase: str, variant: str) -> OutcomeTable:
    latency = ", ".join(f"{metric}" for metric in LATENCY_METRICS)
    columns = con.execute(
        "SELECT at_s, dense_rank() OVER (ORDER BY unit) - 1, cat, "  # noqa: S608 - constants and quoted paths; values are parameters
        f"{latency}, CASE WHEN failure THEN NULL ELSE confidence END "
        "FROM e WHERE phase = ? AND variant = ? AND NOT forced AND failover_from IS NULL "
        'AND NOT (failure AND was_retried) ORDER BY "timestamp", record_id',
        [phase, variant],
    ).fetchnumpy()
    names = list(columns)
    return OutcomeTable(
        at=_floats(columns[names[0]]),
        units=np.asarray(columns[names[1]], dtype=np.intp),
        categories=np.asarray(columns[names[2]], dtype=np.intp),
        latencies={
            metric: _floats(columns[names[3 + i]]) for i, metric in enumerate(LATENCY_METRICS)
        },
        confidences=_floats(columns[names[3 + len(LATENCY_METRICS)]]),
    )


def _scored_table(
    con: duckdb.DuckDBPyConnection, phase: str, variant: str, labels: Mapping[str, Label]
) -> ScoredTable:
    rows = con.execute(
        "SELECT at_s, unit, record_id, text FROM e WHERE phase = ? AND variant = ? "
        "AND NOT forced AND failover_from IS NULL AND NOT failure AND has_label "
        'AND text IS NOT NULL ORDER BY "timestamp", record_id',
        [phase, variant],
    ).fetchall()
    codes: dict[str, int] = {}
    counts = [counts_of(labels[rid], rid, text) for _, _, rid, text in rows]
    return ScoredTable(
        at=np.array([row[0] for row in rows], dtype=np.float64),
        units=np.array([codes.setdefault(row[1], len(codes)) for row in rows], dtype=np.intp),
        substitutions=np.array([c.substitutions for c in counts], dtype=np.int64),
        deletions=np.array([c.deletions for c in counts], dtype=np.int64),
        insertions=np.array([c.insertions for c in counts], dtype=np.int64),
        hits=np.array([c.hits for c in counts], dtype=np.int64),
    )


def _floats(values: Any) -> npt.NDArray[np.float64]:
    """A fetched column as floats, NULL as NaN (DuckDB hands nullable columns over masked)."""
    if isinstance(values, np.ma.MaskedArray):
        filled: npt.NDArray[np.float64] = np.ma.filled(values.astype(np.float64), np.nan)
        return filled
    return np.asarray(values, dtype=np.float64)


def _fetch_records(
    con: duckdb.DuckDBPyConnection, where: str, params: list[Any]
) -> list[OutcomeRecord]:
    selected = ", ".join(f'"{name}"' for name in COLUMNS)
    query = f'SELECT {selected} FROM r WHERE {where} ORDER BY "timestamp", record_id'  # noqa: S608 - the caller's condition; values are parameters
    rows = con.execute(query, params).fetchall()
    names = list(COLUMNS)
    return [OutcomeRecord(**dict(zip(names, row, strict=True))) for row in rows]


class LakeReader:
    """A Parquet export (`gateway.stores.lake`) as an `OutcomeReader`, and its engine: the
    analysis of an export directory without the store it came from."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def engine(self, experiment: str) -> DuckDbEngine:
        """The engine over the experiment's outcome files (ConfigError, one line: not an
        export, no such partition, a file of another export version)."""
        return DuckDbEngine.parquet(lake_sources(self.root, experiment).outcomes)

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
