"""Tests for gateway.stores.lake: outcome records and labels round-trip through Parquet,
exports are idempotent by record_id, and reading back refuses other versions and missing
partitions with one line naming the problem."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pytest
from redis_servers import outcome

from gateway.errors import ConfigError
from gateway.outcomes.labels import Label, RecordScore
from gateway.outcomes.record import FIELD_NAMES, OutcomeRecord
from gateway.stores.lake import (
    EXPORT_SCHEMA_VERSION,
    LABEL_COLUMNS,
    NULL_PARTITION,
    OUTCOME_COLUMNS,
    VERSION_KEY,
    LakeWriter,
    append_outcomes,
    lake_sources,
    replace_labels,
)


def rows(files: tuple[Path, ...] | list[Path]) -> list[dict[str, Any]]:
    """Every row of the files, as dicts by column, ordered by record_id (file columns only)."""
    with duckdb.connect() as con:
        result = con.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = false) ORDER BY record_id",
            [[str(f) for f in files]],
        )
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def as_json(records: list[OutcomeRecord]) -> list[dict[str, Any]]:
    return sorted((json.loads(r.to_json()) for r in records), key=lambda d: d["record_id"])


def write_version(path: Path, version: str) -> None:
    """A Parquet file with the export's columns but another version in its metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT 'x' AS record_id) TO ? (FORMAT parquet, KV_METADATA "
            f"{{{VERSION_KEY}: '{version}'}})",
            [str(path)],
        )


def test_columns_are_the_record_fields_of_this_export_version() -> None:
    """Export version 1 has exactly the outcome record's fields, in its order: a record
    schema change must come with a new export version (and this test's update)."""
    assert EXPORT_SCHEMA_VERSION == 1
    assert tuple(OUTCOME_COLUMNS) == FIELD_NAMES
    assert list(LABEL_COLUMNS)[1:6] == ["record_id", "text", "labeller", "labelled_at", "source"]


def test_records_round_trip_through_parquet(tmp_path: Path) -> None:
    """What DuckDB reads back from the export equals the records' JSON, value for value."""
    records = [outcome(n) for n in range(200)]
    records.append(dataclasses.replace(outcome(200), confidence=0.25, text="Zo\u00eb", forced=True))
    result = append_outcomes(tmp_path, records)
    assert (result.added, result.present, len(result.files)) == (201, 0, 1)
    sources = lake_sources(tmp_path, "checkout")
    assert rows(sources.outcomes) == as_json(records)


def test_partitions_by_experiment_phase_and_utc_date(tmp_path: Path) -> None:
    """Records land in experiment=/phase=/date= folders; the default route's null
    experiment and phase are the engines' null partition."""
    day1 = dataclasses.replace(outcome(1), timestamp="2026-03-01T23:59:59.999Z")
    day2 = dataclasses.replace(outcome(2), timestamp="2026-03-02T00:00:00.000Z", phase="2")
    default = dataclasses.replace(outcome(3, None), timestamp="2026-03-02T10:00:00.000Z")
    append_outcomes(tmp_path, [day1, day2, default])
    folders = sorted(
        str(p.parent.relative_to(tmp_path)) for p in tmp_path.glob("outcomes/**/*.parquet")
    )
    assert folders == [
        f"outcomes/experiment={NULL_PARTITION}/phase={NULL_PARTITION}/date=2026-03-02",
        "outcomes/experiment=checkout/phase=1/date=2026-03-01",
        "outcomes/experiment=checkout/phase=2/date=2026-03-02",
    ]
    assert rows(lake_sources(tmp_path, "_default").outcomes) == as_json([default])
    assert [r["record_id"] for r in rows(lake_sources(tmp_path, "checkout", phase="2").outcomes)]
    assert rows(lake_sources(tmp_path, "checkout", date="2026-03-01").outcomes) == as_json([day1])
    with duckdb.connect() as con:  # hive partitioning gives the same values (null as NULL)
        found = con.execute(
            "SELECT experiment, phase, count(*) FROM read_parquet(?) GROUP BY ALL ORDER BY ALL",
            [str(tmp_path / "outcomes/**/*.parquet")],
        ).fetchall()
    assert found == [("checkout", 1, 1), ("checkout", 2, 1), (None, None, 1)]


def test_exporting_again_adds_nothing_and_new_records_only_once(tmp_path: Path) -> None:
    """Re-exporting adds no row and no file; exporting after new records adds only them,
    also when the batch repeats old ones and holds a duplicate."""
    first = [outcome(n) for n in range(100)]
    append_outcomes(tmp_path, first)
    again = append_outcomes(tmp_path, first)
    assert (again.added, again.present, again.files) == (0, 100, ())
    new = [outcome(n) for n in range(100, 150)]
    more = append_outcomes(tmp_path, [*first[50:], *new, new[0]])
    assert (more.added, more.present) == (50, 50)
    assert len(list(tmp_path.glob("outcomes/**/*.parquet"))) == 2
    assert rows(lake_sources(tmp_path, "checkout").outcomes) == as_json(first + new)


def test_older_schema_versions_get_null_in_the_columns_they_lack(tmp_path: Path) -> None:
    """A version-1 record (no failover_from, no client_session) is exported with the
    current columns, those two null, and keeps its schema_version."""
    data = json.loads(outcome(7).to_json())
    data["schema_version"] = 1
    del data["failover_from"], data["client_session"]
    old = OutcomeRecord.from_json(json.dumps(data))
    append_outcomes(tmp_path, [old])
    (row,) = rows(lake_sources(tmp_path, "checkout").outcomes)
    assert row["schema_version"] == 1
    assert row["failover_from"] is None
    assert row["client_session"] is None
    assert row == {**data, "failover_from": None, "client_session": None}


def test_labels_are_the_current_labels_with_scores_when_present(tmp_path: Path) -> None:
    """The labels file holds each label's fields; exporting again replaces it (a relabel
    wins, no duplicate); normalisation and per-record scores come along when a label has
    them and are null when not."""
    append_outcomes(tmp_path, [outcome(1), outcome(2)])
    label = Label(record_id=f"{1:032x}", text="one", labeller="ann", source="api")
    assert replace_labels(tmp_path, "checkout", [label]) == 1
    relabel = dataclasses.replace(label, text="won")
    other = Label(record_id=f"{2:032x}", text="two", labeller="bob", source="import")
    assert replace_labels(tmp_path, "checkout", [relabel, other]) == 2
    (labels_file,) = lake_sources(tmp_path, "checkout").labels
    found = rows([labels_file])
    assert [(r["record_id"], r["text"]) for r in found] == [
        (f"{1:032x}", "won"),
        (f"{2:032x}", "two"),
    ]
    assert found[0]["experiment"] == "checkout"
    assert found[0]["normalisation"] is None
    assert found[0]["scores"] is None


def test_label_scores_are_a_list_of_structs(tmp_path: Path) -> None:
    """A scored label is exported with its normalisation version and its per-record word
    error counts as a list of structs."""
    score = RecordScore("a" * 32, 1, 0, 2, 5)
    label = Label(
        record_id="a" * 32, text="t", labeller="x", source="api",
        normalisation="wer-v2", scores=(score,),
    )  # fmt: skip
    append_outcomes(tmp_path, [outcome(1)])
    replace_labels(tmp_path, "checkout", [label])
    (row,) = rows(lake_sources(tmp_path, "checkout").labels)
    assert row["normalisation"] == "wer-v2"
    assert row["scores"] == [
        {"record_id": "a" * 32, "substitutions": 1, "deletions": 0, "insertions": 2, "hits": 5}
    ]


def test_a_file_of_another_export_version_is_named(tmp_path: Path) -> None:
    """Reading back, and appending to its partition, refuse a file of another export
    version with one line naming the file and both versions."""
    append_outcomes(tmp_path, [outcome(1)])
    (folder,) = {p.parent for p in tmp_path.glob("outcomes/**/*.parquet")}
    stranger = folder / "part-from-a-newer-gateway.parquet"
    write_version(stranger, "2")
    for attempt in (
        lambda: lake_sources(tmp_path, "checkout"),
        lambda: append_outcomes(tmp_path, [outcome(2)]),
    ):
        with pytest.raises(ConfigError) as caught:
            attempt()
        message = str(caught.value)
        assert "\n" not in message
        assert str(stranger) in message
        assert "export schema version 2" in message
        assert f"reads version {EXPORT_SCHEMA_VERSION}" in message


def test_a_file_without_version_or_not_parquet_is_named(tmp_path: Path) -> None:
    """A Parquet file without the version key, or a file that is not Parquet, is refused
    naming it."""
    append_outcomes(tmp_path, [outcome(1)])
    (folder,) = {p.parent for p in tmp_path.glob("outcomes/**/*.parquet")}
    foreign = folder / "foreign.parquet"
    with duckdb.connect() as con:
        con.execute("COPY (SELECT 1 AS a) TO ? (FORMAT parquet)", [str(foreign)])
    with pytest.raises(ConfigError, match="not a speech-gateway export"):
        lake_sources(tmp_path, "checkout")
    foreign.write_text("not parquet\n")
    with pytest.raises(ConfigError, match="not a readable Parquet file") as caught:
        lake_sources(tmp_path, "checkout")
    assert str(foreign) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_partitions_are_named(tmp_path: Path) -> None:
    """A directory that is no export, an experiment, phase or date without files: one line
    naming the partition (and the experiments there are)."""
    with pytest.raises(ConfigError, match="not an export directory"):
        lake_sources(tmp_path, "checkout")
    append_outcomes(tmp_path, [outcome(1)])
    with pytest.raises(ConfigError, match=r"no partition of experiment 'other' \(exported: "):
        lake_sources(tmp_path, "other")
    with pytest.raises(ConfigError, match="no partition of phase '9'") as caught:
        lake_sources(tmp_path, "checkout", phase="9")
    assert "phase=9" in str(caught.value)
    with pytest.raises(ConfigError, match="holds no Parquet file") as caught:
        lake_sources(tmp_path, "checkout", date="1999-01-01")
    assert "date=1999-01-01" in str(caught.value)


def test_an_interrupted_write_leaves_nothing_a_reader_sees(tmp_path: Path) -> None:
    """A temporary file left by a crash before its rename is not read, and the records
    are exported by the next run."""
    append_outcomes(tmp_path, [outcome(1)])
    (folder,) = {p.parent for p in tmp_path.glob("outcomes/**/*.parquet")}
    (folder / "part-crashed.parquet.tmp").write_bytes(b"PAR1 half a file")
    assert len(lake_sources(tmp_path, "checkout").outcomes) == 1
    assert append_outcomes(tmp_path, [outcome(1), outcome(2)]).added == 1


def test_partition_values_cannot_name_another_folder(tmp_path: Path) -> None:
    """A phase with a slash or a dot-dot stays one folder under its experiment
    (percent-encoded), and reads back unchanged."""
    odd = [
        dataclasses.replace(outcome(1), phase="../../escape"),
        dataclasses.replace(outcome(2), phase=".."),
    ]
    append_outcomes(tmp_path, odd)
    folders = sorted(p.parent.parent.name for p in tmp_path.glob("outcomes/**/*.parquet"))
    assert folders == ["phase=%2E%2E", "phase=..%2F..%2Fescape"]
    assert all(p.is_relative_to(tmp_path / "outcomes/experiment=checkout")
               for p in tmp_path.rglob("*.parquet"))  # fmt: skip
    assert rows(lake_sources(tmp_path, "checkout", phase="..").outcomes) == as_json(odd[1:])


def test_two_writers_on_one_directory_add_each_record_once(tmp_path: Path) -> None:
    """A follower and a one-off export writing the same records at the same time (two
    threads, two writers) still leave each record once: the directory's lock makes each
    partition's check-and-write one step."""
    records = [outcome(n) for n in range(600)]

    def export_all() -> int:
        with LakeWriter(tmp_path) as writer:
            return sum(writer.append(records[i : i + 50]).added for i in range(0, 600, 50))

    with ThreadPoolExecutor(2) as pool:
        added = sum(pool.map(lambda _: export_all(), range(2)))
    assert added == 600
    assert rows(lake_sources(tmp_path, "checkout").outcomes) == as_json(records)
