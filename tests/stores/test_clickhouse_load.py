"""Loading records and labels into the documented ClickHouse tables (chdb, the real engine):
nothing twice, every value as the record has it, the current label per record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.outcomes.record import OutcomeRecord
from gateway.stores.clickhouse_engine import NAMES, ChdbConnection
from gateway.stores.clickhouse_load import ClickHouseLoader
from tests.stores.test_engine import traffic


def test_records_load_once_and_read_back_unchanged(tmp_path: Path) -> None:
    records, _ = traffic(2)
    con = ChdbConnection(tmp_path / "db")
    try:
        loader = ClickHouseLoader(con)
        half = loader.append(records[: len(records) // 2])
        rest = loader.append(records + records[:5])  # a batch holding a record twice
        rows = con.rows(f"SELECT {', '.join(NAMES)} FROM outcomes ORDER BY record_id")
    finally:
        con.close()
    distinct = {r.record_id: r for r in records}
    assert half.added == len(records) // 2
    assert (rest.added, rest.present) == (len(distinct) - half.added, half.added)
    back = [OutcomeRecord(**dict(zip(NAMES, row, strict=True))) for row in rows]
    assert back == [distinct[rid] for rid in sorted(distinct)]


def test_the_labels_table_keeps_the_current_label(tmp_path: Path) -> None:
    _, labels = traffic(2)
    scored = next(label for label in labels.values() if label.scores)
    unscored = next(label for label in labels.values() if label.scores is None)
    con = ChdbConnection(tmp_path / "db")
    try:
        loader = ClickHouseLoader(con)
        assert loader.replace_labels("e", [scored, unscored]) == 2
        relabelled = dataclasses.replace(unscored, text="a corrected reference")
        loader.replace_labels("e", [scored, relabelled])
        rows = con.rows(
            "SELECT record_id, text, normalisation, length(scores), experiment "
            "FROM labels FINAL ORDER BY record_id"
        )
    finally:
        con.close()
    assert scored.scores is not None
    expected = {
        (scored.record_id, scored.text, scored.normalisation, len(scored.scores), "e"),
        (unscored.record_id, "a corrected reference", None, 0, "e"),
    }
    assert set(rows) == expected


def test_the_default_route_is_null(tmp_path: Path) -> None:
    _, labels = traffic(2)
    label = next(iter(labels.values()))
    con = ChdbConnection(tmp_path / "db")
    try:
        ClickHouseLoader(con).replace_labels("_default", [label])
        rows = con.rows("SELECT experiment FROM labels")
    finally:
        con.close()
    assert rows == [(None,)]
