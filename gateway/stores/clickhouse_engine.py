"""The analysis engine on ClickHouse: an experiment's evidence computed where a cluster keeps it.

`ClickHouseEngine` is `gateway.stores.engine.DuckDbEngine`'s counterpart (the same
`EvidenceSource`, the same queries where the dialects agree, `clickhouse_sql` where they do
not), over one of two sources:

* the `outcomes` table of a ClickHouse server (docs/clickhouse.md: its DDL, and how
  `speech-gateway export --to-clickhouse` fills it), reached with clickhouse-connect over
  the HTTP interface (`ServerConnection`);
* a Parquet export (`gateway.stores.lake`) read by chdb, ClickHouse in this process
  (`ChdbConnection`; the `chdb` package is installed with the dev tools, not with the
  gateway).

A record delivered twice (an export run twice into the table before ClickHouse merged its
parts) counts once: every read keeps one row per `record_id` (`LIMIT 1 BY`). The window's
records go into a session's temporary table once; the counts, the per-outcome arrays and the
records the report needs whole come from it, ordered by (timestamp, record_id) as in the
DuckDB engine and in `observe`, so the three agree exactly (tests/stores/
test_clickhouse_engine.py). Labels stay where the analysis reads them (the configured
store); only their record ids are sent, into a temporary table.

A server that cannot be reached, refuses the credentials or fails a query is
`StoreUnavailable` (one line, naming host and port, never the credentials); a record outside
the documented format is `EngineUnreadable`, as in the DuckDB engine.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

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
from gateway.errors import ConfigError, EngineUnreadable, StoreUnavailable
from gateway.outcomes.labels import Label
from gateway.outcomes.record import CATEGORIES, OutcomeRecord
from gateway.stores.clickhouse_sql import (
    OUTCOMES_TABLE,
    category_sql,
    identifier,
    parquet_source,
    quote,
    table_source,
    valid_sql,
)
from gateway.stores.engine import COUNT_NAMES, RETRY_GAP_S
from gateway.stores.lake import OUTCOME_COLUMNS

Params = Mapping[str, str]
NAMES: Final = tuple(OUTCOME_COLUMNS)
_SELECTED: Final = ", ".join(f"`{name}`" for name in NAMES)
# JSON without quoted 64-bit integers (chdb's output is parsed as JSON).
_JSON_SETTINGS: Final = "SETTINGS output_format_json_quote_64bit_integers = 0"
ID_STRUCTURE: Final = "record_id String"
MAX_QUERY_BYTES: Final = 64 * 1024 * 1024
_SOCKET_ERROR: Final = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_NO_CHDB: Final = (
    "clickhouse over an export runs ClickHouse in process (chdb), which is not installed: "
    "pip install chdb, or load the export into a server and give --clickhouse-url"
)


class Connection(Protocol):
    """One ClickHouse session: temporary tables live as long as it does."""

    def run(self, sql: str, params: Params | None = None) -> None: ...

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]: ...

    def columns(self, sql: str, params: Params | None = None) -> list[list[Any]]: ...

    def insert_rows(
        self, table: str, names: Sequence[str], rows: list[list[Any]], structure: str
    ) -> None:
        """Insert rows (Python values, in `names` order) into `table` (TABLE or DB.TABLE,
        unquoted) whose columns `structure` lists."""
        ...

    def close(self) -> None: ...


class ChdbConnection:
    """A chdb session (ClickHouse in this process); `path`: a database folder that keeps
    tables (None: in memory). Needs the `chdb` package."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            from chdb import session
        except ImportError:
            raise ConfigError("--engine", _NO_CHDB) from None
        factory: Any = session.Session  # chdb's API is untyped
        self._session: Any = factory(None if path is None else str(path))
        # An export of many files is a long list in one file() call (the default is 256 KiB).
        self.run(f"SET max_query_size = {MAX_QUERY_BYTES}")

    def _query(self, sql: str, fmt: str, params: Params | None) -> str:
        try:
            result = self._session.query(sql, fmt, params=dict(params or {}))
        except Exception as exc:  # chdb raises its own RuntimeError subclasses
            raise _failure("chdb", exc) from exc
        data: str = result.data()
        return data

    def run(self, sql: str, params: Params | None = None) -> None:
        self._query(sql, "CSV", params)

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        text = self._query(f"{sql} {_JSON_SETTINGS}", "JSONCompactEachRow", params)
        return [tuple(json.loads(line)) for line in text.splitlines() if line]

    def columns(self, sql: str, params: Params | None = None) -> list[list[Any]]:
        text = self._query(f"{sql} {_JSON_SETTINGS}", "JSONCompactColumns", params)
        found: list[list[Any]] = json.loads(text) if text.strip() else []
        return found

    def insert_rows(
        self, table: str, names: Sequence[str], rows: list[list[Any]], structure: str
    ) -> None:
        # chdb reads a local file; JSON keeps every value as it is (nulls, tuples as arrays),
        # and needs no dataframe library.
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "rows.jsonl"
            with open(path, "w", encoding="utf-8") as file:
                for row in rows:
                    file.write(json.dumps(dict(zip(names, row, strict=True))) + "\n")
            self.run(
                f"INSERT INTO {identifier(table)} SELECT * FROM "  # noqa: S608 - a quoted identifier and path
                f"file({quote(str(path))}, JSONEachRow, {quote(structure)}) "
                "SETTINGS input_format_json_named_tuples_as_objects = 0"
            )

    def close(self) -> None:
        self._session.close()


class ServerConnection:
    """A ClickHouse server's HTTP interface through clickhouse-connect, one session.

    `url`: `http(s)://[user[:password]@]host:port[/database]`; `?database=` works too.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "--clickhouse-url", "expected http(s)://[user[:password]@]host[:port][/database]"
            )
        database = parts.path.strip("/") or parse_qs(parts.query).get("database", [""])[0]
        # The driver and urllib3 log every failed attempt as a warning of their own before
        # the error is raised; the caller says it once (StoreUnavailable), so keep them quiet.
        for name in ("clickhouse_connect", "urllib3.connectionpool"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self.where = where(url)
        self._errors = (ClickHouseError, OSError)
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=parts.username or "default",
                password=parts.password or "",
                database=database or "__default__",
                secure=parts.scheme == "https",
                connect_timeout=connect_timeout_s,
                autogenerate_session_id=True,  # temporary tables live in the session
            )
        except self._errors as exc:
            raise _failure(self.where, exc) from None

    @property
    def server_version(self) -> str:
        return str(self._client.server_version)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise _failure(self.where, exc) from None

    def run(self, sql: str, params: Params | None = None) -> None:
        with self._translated():
            self._client.command(sql, parameters=dict(params or {}))

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        with self._translated():
            result = self._client.query(sql, parameters=dict(params or {}))
        return [tuple(row) for row in result.result_rows]

    def columns(self, sql: str, params: Params | None = None) -> list[list[Any]]:
        with self._translated():
            result = self._client.query(sql, parameters=dict(params or {}))
        return [list(column) for column in result.result_columns]

    def insert_rows(
        self, table: str, names: Sequence[str], rows: list[list[Any]], structure: str
    ) -> None:
        database, _, name = table.rpartition(".")
        with self._translated():
            self._client.insert(name, rows, column_names=list(names), database=database or None)

    def close(self) -> None:
        self._client.close()


def where(url: str) -> str:
    """A server URL without its credentials, for messages and logs: `host:port`."""
    parts = urlsplit(url)
    return f"ClickHouse at {parts.hostname}:{parts.port or 8123}"


def _failure(where: str, exc: BaseException) -> StoreUnavailable:
    text = str(exc).strip()
    refused = _SOCKET_ERROR.search(text)  # the driver wraps it in urllib3's long story
    if refused:
        reason = f"cannot connect ({refused.group(1).strip()})"
    else:
        lines = text.splitlines()
        reason = lines[0][:300] if lines else type(exc).__name__
    return StoreUnavailable(f"{where}: {reason}")


class ClickHouseEngine:
    """An experiment's evidence from ClickHouse (module doc). `connect` opens a session per
    analysis; `source` is a table expression with the export's columns."""

    def __init__(self, connect: Any, source: str, *, fall_back: bool = True) -> None:
        """`fall_back`: a record outside the format is EngineUnreadable (the analysis then
        reads the same records one by one, which names it); else ConfigError: a server's
        records are not in the store the analysis would fall back to."""
        self._connect = connect
        self._source = source
        self._fall_back = fall_back

    @classmethod
    def parquet(cls, files: Sequence[Path]) -> ClickHouseEngine:
        """chdb over a Parquet export's outcome files (`lake.lake_sources(...).outcomes`)."""
        if importlib.util.find_spec("chdb") is None:
            raise ConfigError("--engine", _NO_CHDB)
        try:
            return cls(ChdbConnection, parquet_source(files))
        except ValueError as exc:
            raise ConfigError("--lake", str(exc)) from None

    @classmethod
    def server(cls, url: str, table: str = OUTCOMES_TABLE) -> ClickHouseEngine:
        """A server's outcomes table (docs/clickhouse.md), over its HTTP interface."""
        try:
            source = table_source(table)
        except ValueError as exc:
            raise ConfigError("--clickhouse-table", str(exc)) from None
        return cls(lambda: ServerConnection(url), source, fall_back=False)

    @classmethod
    def chdb_table(cls, path: Path, table: str = OUTCOMES_TABLE) -> ClickHouseEngine:
        """The outcomes table of a chdb database folder (the server's SQL, in process)."""
        return cls(lambda: ChdbConnection(path), table_source(table))

    @contextmanager
    def _records(self, window: AnalysisWindow) -> Iterator[Connection]:
        """A session holding `r`: the window's records, each once, with `at_s` (epoch
        seconds) and `cat` (its category's index)."""
        con: Connection = self._connect()
        try:
            conditions = [f"coalesce(experiment, {quote(NO_EXPERIMENT)}) = {{experiment:String}}"]
            params = {"experiment": window.experiment}
            moment = "parseDateTime64BestEffort(`timestamp`, 6, 'UTC')"
            if window.since is not None:
                conditions.append(f"{moment} >= {{since:DateTime64(6, 'UTC')}}")
                params["since"] = _moment(window.since)
            if window.until is not None:
                conditions.append(f"{moment} < {{until:DateTime64(6, 'UTC')}}")
                params["until"] = _moment(window.until)
            con.run(
                "CREATE TEMPORARY TABLE r ENGINE = MergeTree ORDER BY tuple() AS "  # noqa: S608 - constants and quoted paths; values are parameters
                f"SELECT {_SELECTED}, "
                "toUnixTimestamp64Milli(parseDateTime64BestEffort(`timestamp`, 3, 'UTC')) "
                "/ 1000.0 AS at_s, "
                f"toInt64({category_sql()}) AS cat "
                f"FROM (SELECT * FROM {self._source} WHERE {' AND '.join(conditions)} "
                "LIMIT 1 BY record_id)",
                params,
            )
            invalid = con.rows(f"SELECT count() FROM r WHERE NOT ({valid_sql()})")  # noqa: S608 - constants
            if invalid and invalid[0][0]:
                problem = f"{invalid[0][0]} records outside the documented format"
                if not self._fall_back:
                    raise ConfigError(self._source, f"{problem} (docs/outcomes.md)")
                raise EngineUnreadable(problem)
            yield con
        finally:
            con.close()

    def observations(
        self, window: AnalysisWindow, labels: Mapping[str, Label]
    ) -> dict[str, PhaseObservations]:
        """Phase id -> its observations: equal to `observe` on the same records and labels."""
        with self._records(window) as con:
            _load_labels(con, labels)
            return _observations(con, labels)

    def records(self, window: AnalysisWindow, sample: UnitSample | None) -> list[OutcomeRecord]:
        """The window's records in (timestamp, record_id) order; with a sample, the canary
        records and those of the sample's units."""
        with self._records(window) as con:
            return _sampled_records(con, sample)

    def inputs(
        self, window: AnalysisWindow, labels: Mapping[str, Label], limit: int
    ) -> tuple[list[OutcomeRecord], dict[str, PhaseObservations], UnitSample | None]:
        """What the report needs, from one session (`EvidenceSource.inputs`)."""
        with self._records(window) as con:
            _load_labels(con, labels)
            observations = _observations(con, labels)
            row = con.rows(
                "SELECT count() FROM r WHERE role = 'primary' "
                "AND record_id IN (SELECT record_id FROM labelled)"
            )
            sample = UnitSample.for_labelled(int(row[0][0]) if row else 0, limit)
            return _sampled_records(con, sample), observations, sample


def _moment(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _load_labels(con: Connection, labels: Mapping[str, Label]) -> None:
    con.run("CREATE TEMPORARY TABLE labelled (record_id String) ENGINE = Memory")
    if labels:
        con.insert_rows("labelled", ["record_id"], [[rid] for rid in labels], ID_STRUCTURE)


def _observations(con: Connection, labels: Mapping[str, Label]) -> dict[str, PhaseObservations]:
    _derive(con)
    phases = _phases(con)
    _fill_variants(con, phases, labels)
    for phase in phases.values():
        phase.shadow_pairs = shadow_pairs(
            _fetch_records(
                con,
                "phase = {phase:String} AND role IN ('primary', 'shadow') "
                "AND variant IS NOT NULL AND session_id IN (SELECT session_id FROM r "
                "WHERE role = 'shadow' AND phase = {phase:String})",
                {"phase": phase.phase},
            ),
            labels,
        )
    return phases


def _sampled_records(con: Connection, sample: UnitSample | None) -> list[OutcomeRecord]:
    if sample is None:
        return _fetch_records(con, "true", {})
    return _fetch_records(
        con,
        f"role = 'canary' OR substring(lower(hex(MD5(unit))), 1, {KEY_DIGITS}) "
        "< {threshold:String}",
        {"threshold": sample.threshold},
    )


def _derive(con: Connection) -> None:
    """`retried` and `e`, as `engine._derive` (lead() over a nullable column: the last
    attempt of a client session has no next one, as in DuckDB)."""
    con.run(
        "CREATE TEMPORARY TABLE retried ENGINE = Memory AS "  # noqa: S608 - constants
        "WITH attempts AS ("
        "  SELECT client, coalesce(client_session, session_id) AS cs, session_id,"
        "    min(at_s) AS first_at, max(at_s) AS last_at,"
        "    max(kind = 'session_failure') AS failed"
        "  FROM r WHERE role = 'primary' GROUP BY client, cs, session_id),"
        " ordered AS ("
        "  SELECT *, lead(toNullable(first_at)) OVER (PARTITION BY client, cs"
        "    ORDER BY first_at, session_id) AS next_first FROM attempts)"
        " SELECT DISTINCT session_id FROM ordered"
        f" WHERE failed AND next_first - last_at <= {RETRY_GAP_S}"
    )
    con.run(
        "CREATE TEMPORARY TABLE e ENGINE = MergeTree ORDER BY tuple() AS SELECT r.*, "
        "coalesce(failover_from, variant) AS assigned, "
        "kind = 'session_failure' AS failure, "
        "session_id IN (SELECT session_id FROM retried) AS was_retried, "
        "record_id IN (SELECT record_id FROM labelled) AS has_label, "
        "concat(client, char(0), coalesce(client_session, session_id)) AS client_key "
        "FROM r WHERE role = 'primary' AND phase IS NOT NULL AND variant IS NOT NULL"
    )


def _phases(con: Connection) -> dict[str, PhaseObservations]:
    phases: dict[str, PhaseObservations] = {}
    # Every phase with an evidence record (as `observe`), in order of its first record;
    # toNullable: an aggregate over no row is NULL, as in DuckDB (not ClickHouse's 0).
    for phase_id, first, last in con.rows(
        "SELECT phase, min(toNullable(at_s)) FILTER (WHERE role = 'primary' AND NOT forced"
        " AND failover_from IS NULL), max(toNullable(at_s)) FILTER (WHERE role = 'primary'"
        " AND NOT forced AND failover_from IS NULL)"
        " FROM r WHERE role IN ('primary', 'shadow') AND phase IS NOT NULL"
        " AND variant IS NOT NULL GROUP BY phase ORDER BY min(at_s), phase"
    ):
        phase = PhaseObservations(phase_id)
        if first is not None:
            phase.first, phase.last = float(first), float(last)
        phases[phase_id] = phase
    return phases


_COUNTS_SQL: Final = """
WITH assigned AS (
  SELECT phase, assigned AS v,
    count(DISTINCT client_key) AS client_sessions,
    count(DISTINCT client_key) FILTER (
      WHERE failure AND NOT was_retried AND cat = {error}) AS failed_client_sessions,
    count() FILTER (WHERE failover_from IS NOT NULL) AS failed_over
  FROM e WHERE NOT forced GROUP BY phase, assigned),
retried_sessions AS (
  SELECT phase, v, count() AS retried_client_sessions FROM (
    SELECT phase, assigned AS v, client_key FROM e WHERE NOT forced
    GROUP BY phase, assigned, client_key HAVING count(DISTINCT session_id) > 1)
  GROUP BY phase, v),
served AS (
  SELECT phase, variant AS v,
    groupUniqArrayIf(assumeNotNull(backend), backend IS NOT NULL) AS backends,
    count(DISTINCT unit) AS units,
    count(DISTINCT session_id) AS sessions,
    count(DISTINCT session_id) FILTER (WHERE failure AND cat = {error}) AS failed_attempts,
    count() FILTER (WHERE NOT failure) AS utterances,
    count() FILTER (WHERE NOT failure AND has_label) AS labelled,
    count() FILTER (WHERE NOT failure AND has_label AND text IS NULL) AS unscorable
  FROM e WHERE NOT forced AND failover_from IS NULL GROUP BY phase, variant),
forced_sessions AS (SELECT phase, variant AS v, count() AS n FROM e WHERE forced
  GROUP BY phase, variant),
keys AS (
  SELECT phase, v FROM assigned UNION DISTINCT SELECT phase, v FROM forced_sessions)
SELECT keys.phase, keys.v, served.backends,
  served.units, served.sessions, forced_sessions.n,
  assigned.failed_over, served.failed_attempts,
  assigned.client_sessions,
  retried_sessions.retried_client_sessions,
  assigned.failed_client_sessions, served.utterances,
  served.labelled, served.unscorable
FROM keys
LEFT JOIN assigned ON assigned.phase = keys.phase AND assigned.v = keys.v
LEFT JOIN retried_sessions ON retried_sessions.phase = keys.phase AND retried_sessions.v = keys.v
LEFT JOIN served ON served.phase = keys.phase AND served.v = keys.v
LEFT JOIN forced_sessions ON forced_sessions.phase = keys.phase
  AND forced_sessions.v = keys.v
SETTINGS join_use_nulls = 0
"""
# join_use_nulls = 0: a variant missing from one part reads 0 (and [] backends), which is
# DuckDB's coalesce(..., 0).


def _fill_variants(
    con: Connection, phases: dict[str, PhaseObservations], labels: Mapping[str, Label]
) -> None:
    rows = con.rows(_COUNTS_SQL.format(error=CATEGORIES.index("error")))
    for row in sorted(rows, key=lambda row: (row[0], row[1])):
        phase_id, name, backends, *counts = row
        phases[phase_id].variants[name] = VariantObservations(
            name,
            frozenset(backends or ()),
            **dict(zip(COUNT_NAMES, (int(c or 0) for c in counts), strict=True)),
            table=_outcome_table(con, phase_id, name),
            scores=_scored_table(con, phase_id, name, labels),
        )


def _outcome_table(con: Connection, phase: str, variant: str) -> OutcomeTable:
    latency = ", ".join(LATENCY_METRICS)
    columns = con.columns(
        "SELECT at_s, dense_rank() OVER (ORDER BY unit) - 1, cat, "  # noqa: S608 - constants; values are parameters
        f"{latency}, if(failure, NULL, confidence) "
        "FROM e WHERE phase = {phase:String} AND variant = {variant:String} AND NOT forced "
        "AND failover_from IS NULL AND NOT (failure AND was_retried) "
        "ORDER BY `timestamp`, record_id",
        {"phase": phase, "variant": variant},
    )
    if not columns:
        columns = [[] for _ in range(4 + len(LATENCY_METRICS))]
    return OutcomeTable(
        at=_floats(columns[0]),
        units=np.asarray(columns[1], dtype=np.intp),
        categories=np.asarray(columns[2], dtype=np.intp),
        latencies={metric: _floats(columns[3 + i]) for i, metric in enumerate(LATENCY_METRICS)},
        confidences=_floats(columns[3 + len(LATENCY_METRICS)]),
    )


def _scored_table(
    con: Connection, phase: str, variant: str, labels: Mapping[str, Label]
) -> ScoredTable:
    rows = con.rows(
        "SELECT at_s, unit, record_id, text FROM e WHERE phase = {phase:String} "
        "AND variant = {variant:String} AND NOT forced AND failover_from IS NULL "
        "AND NOT failure AND has_label AND text IS NOT NULL ORDER BY `timestamp`, record_id",
        {"phase": phase, "variant": variant},
    )
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


def _floats(values: Iterable[Any]) -> npt.NDArray[np.float64]:
    """A fetched column as floats, NULL (None) as NaN."""
    return np.array(list(values), dtype=np.float64)


def _fetch_records(con: Connection, where_sql: str, params: Params) -> list[OutcomeRecord]:
    rows = con.rows(
        f"SELECT {_SELECTED} FROM r WHERE {where_sql} ORDER BY `timestamp`, record_id",  # noqa: S608 - the caller's condition; values are parameters
        params,
    )
    return [OutcomeRecord(**dict(zip(NAMES, row, strict=True))) for row in rows]
