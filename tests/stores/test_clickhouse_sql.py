"""ClickHouse's dialect of the engine's rules, and the documented tables and views, run on the
real ClickHouse engine (chdb): the category and validity rules are the records' own, and the
GrowthBook / Statsig views give what the records and labels say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.outcomes.record import CATEGORIES, Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.outcomes.record import category as record_category
from gateway.stores.clickhouse_engine import ChdbConnection
from gateway.stores.clickhouse_load import ClickHouseLoader
from gateway.stores.clickhouse_sql import (
    CLICKHOUSE_COLUMNS,
    assignments_view,
    category_sql,
    identifier,
    labels_ddl,
    outcomes_ddl,
    quote,
    utterance_metrics_view,
    valid_sql,
)
from gateway.stores.lake import OUTCOME_COLUMNS
from tests.stores.test_engine import traffic

STATUSES = (
    "Success",
    "NoMatch",
    "InitialSilenceTimeout",
    "BabbleTimeout",
    "Error",
    "TooManyRequests",
    "BadRequest",
    "Forbidden",
    "ServiceUnavailable",
)
CODES = (None, "upstream_http_429", "limit_sessions", "gateway_shutdown", "upstream_close_1011")


def test_the_category_rules_are_the_records() -> None:
    con = ChdbConnection()
    try:
        rows = con.rows(
            f"SELECT kind, status, error_code, {category_sql()} FROM ("
            "SELECT kind, status, error_code FROM "
            "(SELECT arrayJoin(['utterance', 'session_failure']) AS kind) AS k "
            f"CROSS JOIN (SELECT arrayJoin([{', '.join(quote(s) for s in STATUSES)}]) AS status)"
            " AS s CROSS JOIN (SELECT arrayJoin([NULL, "
            f"{', '.join(quote(c) for c in CODES if c)}]) AS error_code) AS c)"
        )
    finally:
        con.close()
    assert len(rows) == 2 * len(STATUSES) * len(CODES)
    for kind, status, code, index in rows:
        record = OutcomeRecord(
            kind=Kind(kind),
            experiment="e",
            phase="p",
            variant="v",
            backend="b",
            role=Role.PRIMARY,
            client="c",
            unit="u",
            unit_source=UnitSource.QUERY,
            session_id="s",
            protocol=Protocol.USP,
            status=status,
            error_code=code,
            utterance_index=None if kind == "session_failure" else 0,
        )
        assert CATEGORIES[index] == record_category(record), (kind, status, code)


@pytest.mark.parametrize(
    ("column", "value", "valid"),
    [
        (None, None, True),
        ("confidence", "2.0", False),
        ("final_latency_ms", "nan", False),
        ("final_latency_ms", "-1.0", False),
        ("role", "'judge'", False),
        ("unit", "''", False),
        ("record_id", "'E0'", False),
        ("timestamp", "'2026-11-02 08:00:00'", False),
        ("word_count", "-3", False),
        ("forced", "NULL", False),
        ("failover_from", "NULL", True),
    ],
)
def test_the_validity_rule_is_the_records(column: str | None, value: str, valid: bool) -> None:
    record = traffic(1)[0][0]
    values = {name: getattr(record, name) for name in OUTCOME_COLUMNS}
    literals = {
        name: "NULL"
        if v is None
        else quote(v)
        if isinstance(v, str)
        else ("true" if v else "false")
        if isinstance(v, bool)
        else repr(v)
        for name, v in values.items()
    }
    if column is not None:
        literals[column] = value
    selected = ", ".join(
        f"CAST({literals[name]} AS {kind}) AS `{name}`" for name, kind in CLICKHOUSE_COLUMNS.items()
    )
    con = ChdbConnection()
    try:
        rows = con.rows(f"SELECT {valid_sql()} FROM (SELECT {selected})")
    finally:
        con.close()
    assert bool(rows[0][0]) is valid


def test_identifiers_are_quoted() -> None:
    assert identifier("db.outcomes") == "`db`.`outcomes`"
    assert identifier("a`b") == "`a``b`"
    for bad in ("", "a.b.c", ".x"):
        with pytest.raises(ValueError, match="not a table name"):
            identifier(bad)


def test_the_views_give_what_the_records_and_labels_say(tmp_path: Path) -> None:
    records, labels = traffic(3)
    con = ChdbConnection(tmp_path / "db")
    try:
        loader = ClickHouseLoader(con)
        loader.append(records)
        loader.append(records[:10])  # nothing twice
        loader.replace_labels("e", labels.values())
        con.run(assignments_view())
        con.run(utterance_metrics_view())
        assigned = con.rows(
            "SELECT experiment, phase, unit, variant, "
            "toString(first_exposure) "
            "FROM experiment_assignments"
        )
        metrics = con.rows(
            "SELECT record_id, variant, word_errors, reference_words, final_latency_ms "
            "FROM utterance_metrics"
        )
    finally:
        con.close()
    first: dict[tuple[str | None, str | None, str, str | None], str] = {}
    for r in records:
        if r.role == Role.PRIMARY and not r.forced and r.experiment and r.variant:
            key = (r.experiment, r.phase, r.unit, r.failover_from or r.variant)
            first[key] = min(first.get(key, r.timestamp), r.timestamp)
    shown = {key: stamp.replace("T", " ").removesuffix("Z") for key, stamp in first.items()}
    assert {(e, p, u, v): t for e, p, u, v, t in assigned} == shown

    scores = {s.record_id: s for label in labels.values() if label.scores for s in label.scores}
    expected = {
        r.record_id: (
            r.failover_from or r.variant,
            None if r.record_id not in scores else _errors(scores[r.record_id]),
            None if r.record_id not in scores else _words(scores[r.record_id]),
            r.final_latency_ms,
        )
        for r in records
        if r.role == Role.PRIMARY
        and r.kind != Kind.SESSION_FAILURE
        and not r.forced
        and r.experiment
        and r.variant
    }
    assert {rid: tuple(rest) for rid, *rest in metrics} == expected
    assert any(v[1] is not None for v in expected.values())
    assert any(v[1] is None for v in expected.values())


def _errors(score: object) -> int:
    return int(score.substitutions + score.deletions + score.insertions)  # type: ignore[attr-defined]


def _words(score: object) -> int:
    return int(score.substitutions + score.deletions + score.hits)  # type: ignore[attr-defined]


def test_the_documented_tables_and_views_are_the_codes() -> None:
    """docs/clickhouse.md shows the statements these functions make (and the tests above
    run), whitespace aside."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "clickhouse.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    shown = {re.sub(r"\s+", "", statement) for block in blocks for statement in block.split("\n\n")}
    for statement in (outcomes_ddl(), labels_ddl(), assignments_view(), utterance_metrics_view()):
        assert re.sub(r"\s+", "", statement) in shown, statement[:60]
