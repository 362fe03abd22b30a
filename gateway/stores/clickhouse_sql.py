"""ClickHouse's dialect of the engine's SQL, and the tables and views of docs/clickhouse.md.

`gateway.stores.engine` writes the engine's SQL for DuckDB; `gateway.stores.clickhouse_engine`
runs the same queries on ClickHouse (a server, or chdb in process). Where the dialects agree
(CASE, IN lists, coalesce, FILTER (WHERE ...) on aggregates, window functions) the text is the
same; this module holds what differs: the record's columns as ClickHouse types, the category
and validity rules (`startsWith`, `match`, `isFinite`), the sources (the Parquet export
through `file()`, or the `outcomes` table), and the DDL and views users create on a server.
Only text here, no connection: the SQL is checked on chdb by tests/stores/test_clickhouse_sql.py.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, get_args, get_type_hints

from gateway.outcomes.record import (
    FIELD_NAMES,
    MAX_COUNT,
    MAX_MS,
    OutcomeRecord,
)
from gateway.stores import engine
from gateway.stores.lake import OUTCOME_COLUMNS

# The export's (and the JSONL record's) column types, as ClickHouse names them.
_TYPES: Final = {"BIGINT": "Int64", "DOUBLE": "Float64", "BOOLEAN": "Bool", "VARCHAR": "String"}
# Every column nullable, as in the Parquet export: one structure reads the files and the table.
CLICKHOUSE_COLUMNS: Final[Mapping[str, str]] = {
    name: f"Nullable({_TYPES[kind]})" for name, kind in OUTCOME_COLUMNS.items()
}
STRUCTURE: Final = ", ".join(f"`{name}` {kind}" for name, kind in CLICKHOUSE_COLUMNS.items())
OUTCOMES_TABLE: Final = "outcomes"
LABELS_TABLE: Final = "labels"


def quote(value: str) -> str:
    """A ClickHouse string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def identifier(name: str) -> str:
    """A table name, `db.table` or `table`, as a quoted identifier (backquotes escaped)."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"not a table name: {name!r} (TABLE or DATABASE.TABLE)")
    return ".".join("`" + part.replace("`", "``") + "`" for part in parts)


def _in(values: Sequence[str]) -> str:
    return "(" + ", ".join(quote(v) for v in sorted(values)) + ")"


def category_sql() -> str:
    """`gateway.outcomes.record.category` as ClickHouse SQL: the index into CATEGORIES
    (`gateway.stores.engine.category_sql`, with ClickHouse's `startsWith`)."""
    return engine.category_sql("startsWith")


def _base(hint: Any) -> tuple[Any, bool]:
    """A field's type without None, and whether None is allowed."""
    args = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next(arg for arg in args if arg is not type(None)), type(None) in args


def valid_sql() -> str:
    """What a record must satisfy to be read as one (`OutcomeRecord`'s checks of types,
    ranges, enums and required fields; `engine._valid_sql` in ClickHouse's words)."""
    rules = [
        "match(record_id, '^[0-9a-f]{32}$')",
        "match(`timestamp`, '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z$')",
        "schema_version >= 1",
        "coalesce(confidence, 0) <= 1",
        "coalesce(client_session, 'x') <> ''",
    ]
    for name in ("client", "unit", "session_id", "status"):
        rules.append(f"{name} <> ''")
    hints = get_type_hints(OutcomeRecord)
    for name in FIELD_NAMES:
        base, optional = _base(hints[name])
        if not optional:
            rules.append(f"`{name}` IS NOT NULL")
        kind = OUTCOME_COLUMNS[name]
        if isinstance(base, type) and issubclass(base, StrEnum):
            rules.append(f"coalesce(`{name}` IN {_in([m.value for m in base])}, true)")
        elif kind == "DOUBLE":
            rules.append(
                f"coalesce(isFinite(`{name}`) AND `{name}` BETWEEN 0 AND {MAX_MS:.0f}, true)"
            )
        elif kind == "BIGINT":
            rules.append(f"coalesce(`{name}` BETWEEN 0 AND {MAX_COUNT}, true)")
    return " AND ".join(rules)


_GLOB: Final = frozenset("*?{}[],")


def parquet_source(files: Sequence[Path]) -> str:
    """The export's outcome files (`lake.lake_sources(...).outcomes`) as one table expression:
    one `file()` over the list (`{a,b,...}` after the files' common folder), with the
    export's structure, so a column reads with the same type from every file. A folder name
    with a glob character (`* ? { } [ ] ,`) cannot be listed so (ValueError)."""
    if not files:
        raise ValueError("no Parquet files")
    paths = [str(path.resolve()) for path in files]
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    prefix = common.rstrip("/") + "/"
    rest = [path[len(prefix) :] for path in paths]
    for path in paths:
        if _GLOB & set(path):
            raise ValueError(f"{path}: ClickHouse reads * ? {{ }} [ ] , in a path as a pattern")
    listed = rest[0] if len(rest) == 1 else "{" + ",".join(rest) + "}"
    return f"file({quote(prefix + listed)}, Parquet, {quote(STRUCTURE)})"


def table_source(table: str) -> str:
    return identifier(table)


def outcomes_ddl(table: str = OUTCOMES_TABLE) -> str:
    """The outcomes table (docs/clickhouse.md): the export's columns, sorted and deduplicated
    by (experiment, record_id). ReplacingMergeTree removes a record inserted twice when it
    merges parts; until then the engine's reads keep one row per record_id (LIMIT 1 BY)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {identifier(table)} ({STRUCTURE}) "
        "ENGINE = ReplacingMergeTree "
        "PARTITION BY substring(coalesce(`timestamp`, ''), 1, 7) "
        "ORDER BY (coalesce(experiment, ''), assumeNotNull(record_id)) "
        "SETTINGS allow_nullable_key = 1"
    )


LABEL_STRUCTURE: Final = (
    "`experiment` Nullable(String), `record_id` String, `text` String, "
    "`labeller` Nullable(String), `labelled_at` Nullable(String), `source` Nullable(String), "
    "`normalisation` Nullable(String), "
    "`scores` Array(Tuple(record_id String, substitutions Int64, deletions Int64, "
    "insertions Int64, hits Int64))"
)


def labels_ddl(table: str = LABELS_TABLE) -> str:
    """The labels table: one row per labelled record, its current label (the last inserted
    wins when parts merge; read it with FINAL). `scores` is empty for a label without counts."""
    return (
        f"CREATE TABLE IF NOT EXISTS {identifier(table)} ({LABEL_STRUCTURE}) "
        "ENGINE = ReplacingMergeTree ORDER BY (coalesce(experiment, ''), record_id) "
        "SETTINGS allow_nullable_key = 1"
    )


def assignments_view(
    name: str = "experiment_assignments",
    outcomes: str = OUTCOMES_TABLE,
) -> str:
    """GrowthBook / Statsig assignment source: per experiment, phase, unit and assigned
    variant, the unit's first exposure (primary evidence records, forced sessions left out)."""
    return (
        f"CREATE OR REPLACE VIEW {identifier(name)} AS "  # noqa: S608 - quoted identifiers
        "SELECT unit, "
        "min(parseDateTime64BestEffort(`timestamp`, 3, 'UTC')) AS first_exposure, "
        "experiment, phase, coalesce(failover_from, variant) AS variant "
        f"FROM (SELECT * FROM {identifier(outcomes)} LIMIT 1 BY record_id) "
        "WHERE role = 'primary' AND NOT forced AND experiment IS NOT NULL "
        "AND variant IS NOT NULL GROUP BY experiment, phase, unit, variant"
    )


def utterance_metrics_view(
    name: str = "utterance_metrics",
    outcomes: str = OUTCOMES_TABLE,
    labels: str = LABELS_TABLE,
) -> str:
    """GrowthBook / Statsig metric source: one row per primary utterance, with its latency,
    and for a labelled one with stored counts its word errors and reference words (null
    otherwise: not labelled, or a label without counts)."""
    return (
        f"CREATE OR REPLACE VIEW {identifier(name)} AS "  # noqa: S608 - quoted identifiers
        "SELECT o.unit AS unit, "
        "parseDateTime64BestEffort(o.`timestamp`, 3, 'UTC') AS timestamp, "
        "o.experiment AS experiment, o.phase AS phase, "
        "coalesce(o.failover_from, o.variant) AS variant, o.record_id AS record_id, "
        "o.status = 'Success' AS success, o.final_latency_ms AS final_latency_ms, "
        "s.errors AS word_errors, s.words AS reference_words "
        f"FROM (SELECT * FROM {identifier(outcomes)} LIMIT 1 BY record_id) AS o "
        "LEFT JOIN (SELECT tupleElement(score, 'record_id') AS record_id, "
        "toNullable(tupleElement(score, 'substitutions') + tupleElement(score, 'deletions') "
        "+ tupleElement(score, 'insertions')) AS errors, "
        "toNullable(tupleElement(score, 'substitutions') + tupleElement(score, 'deletions') "
        "+ tupleElement(score, 'hits')) AS words "
        f"FROM {identifier(labels)} FINAL ARRAY JOIN scores AS score) AS s "
        "ON s.record_id = o.record_id "
        "WHERE o.role = 'primary' AND o.kind <> 'session_failure' AND NOT o.forced "
        "AND o.experiment IS NOT NULL AND o.variant IS NOT NULL"
    )
