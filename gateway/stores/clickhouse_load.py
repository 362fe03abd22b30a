"""Loading outcome records and labels into ClickHouse tables (`export --to-clickhouse`).

The tables are those of docs/clickhouse.md (`clickhouse_sql.outcomes_ddl`, `labels_ddl`),
created when missing. Outcome records are only added, and only those the table does not hold
yet: each chunk's record ids go into a temporary table first, and the ids already in the
table are left out, so loading the same records again adds no row (ReplacingMergeTree and
the engine's `LIMIT 1 BY record_id` also cover two loaders racing). Labels are inserted as
the experiment's current labels on each load; the labels table keeps the last one inserted
per record (read with FINAL).

Works on any `clickhouse_engine.Connection`: a server (clickhouse-connect) or chdb.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.outcomes.labels import Label
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.clickhouse_engine import ID_STRUCTURE, NAMES, Connection
from gateway.stores.clickhouse_sql import (
    LABEL_STRUCTURE,
    LABELS_TABLE,
    OUTCOMES_TABLE,
    STRUCTURE,
    identifier,
    labels_ddl,
    outcomes_ddl,
)
from gateway.stores.lake import experiment_key

LABEL_NAMES = (
    "experiment",
    "record_id",
    "text",
    "labeller",
    "labelled_at",
    "source",
    "normalisation",
    "scores",
)


@dataclass(frozen=True, slots=True)
class LoadResult:
    added: int  # records inserted
    present: int  # records the table already held


class ClickHouseLoader:
    """Adds records and labels to the tables of one session (created if missing)."""

    def __init__(
        self,
        con: Connection,
        *,
        outcomes: str = OUTCOMES_TABLE,
        labels: str = LABELS_TABLE,
    ) -> None:
        self._con = con
        self._outcomes_name, self._labels_name = outcomes, labels
        self._outcomes = identifier(outcomes)
        con.run(outcomes_ddl(outcomes))
        con.run(labels_ddl(labels))
        con.run("CREATE TEMPORARY TABLE IF NOT EXISTS incoming (record_id String) ENGINE = Memory")

    def append(self, records: Iterable[OutcomeRecord]) -> LoadResult:
        """Insert the records the table does not hold yet (each once)."""
        batch = {record.record_id: record for record in records}
        if not batch:
            return LoadResult(0, 0)
        self._con.run("TRUNCATE TABLE incoming")
        self._con.insert_rows("incoming", ["record_id"], [[rid] for rid in batch], ID_STRUCTURE)
        present = {
            row[0]
            for row in self._con.rows(
                f"SELECT DISTINCT record_id FROM {self._outcomes} "  # noqa: S608 - a quoted identifier
                "WHERE record_id IN (SELECT record_id FROM incoming)"
            )
        }
        new = [record for rid, record in batch.items() if rid not in present]
        if new:
            rows = [[getattr(record, name) for name in NAMES] for record in new]
            self._con.insert_rows(self._outcomes_name, NAMES, rows, STRUCTURE)
        return LoadResult(len(new), len(present))

    def replace_labels(self, experiment: str, labels: Iterable[Label]) -> int:
        """Insert the experiment's current labels (the table keeps the last per record)."""
        rows = [label_row(experiment, label) for label in labels]
        if rows:
            self._con.insert_rows(self._labels_name, LABEL_NAMES, rows, LABEL_STRUCTURE)
        return len(rows)


def label_row(experiment: str, label: Label) -> list[Any]:
    """A label as a row of the labels table; a label without counts has no scores ([])."""
    data = json.loads(label.to_json())
    scores = data.get("scores") or []
    return [
        experiment_key(experiment),
        data["record_id"],
        data["text"],
        data.get("labeller"),
        data.get("labelled_at"),
        data.get("source"),
        data.get("normalisation"),
        [
            (
                s["record_id"],
                int(s["substitutions"]),
                int(s["deletions"]),
                int(s["insertions"]),
                int(s["hits"]),
            )
            for s in scores
        ],
    ]
