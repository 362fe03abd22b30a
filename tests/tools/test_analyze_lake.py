"""`speech-gateway analyze --lake DIR`: a Parquet export gives the report the store gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_analyze import traffic, write_file_store

from gateway.cli import main
from gateway.outcomes.record import OutcomeRecord
from gateway.stores.lake import append_outcomes, replace_labels


def test_the_export_gives_the_stores_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    made = traffic()
    # A phase named like a number: the export's folder names must not retype it.
    made.records = [
        OutcomeRecord(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "phase": "1"})
        for r in made.records
    ]
    config = write_file_store(tmp_path, made)
    append_outcomes(tmp_path / "lake", made.records)
    replace_labels(tmp_path / "lake", "e", made.labels.values())
    argv = ["--config", str(config), "analyze", "--experiment", "e", "--control", "base"]
    assert main([*argv, "--json", "-"]) == 0
    from_store = json.loads(capsys.readouterr().out)
    assert main([*argv, "--lake", str(tmp_path / "lake"), "--json", "-"]) == 0
    from_lake = json.loads(capsys.readouterr().out)
    for report in (from_store, from_lake):
        report.pop("generated_at")
    assert from_lake == from_store
    assert main([*argv, "--engine", "records", "--json", "-"]) == 0
    record_by_record = json.loads(capsys.readouterr().out)
    record_by_record.pop("generated_at")
    assert record_by_record == from_store
    assert from_lake["phases"][0]["phase"] == "1"
    assert from_lake["recommendation"]["action"] == "ship_custom"


def test_a_wrong_lake_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    made = traffic()
    config = write_file_store(tmp_path, made)
    append_outcomes(tmp_path / "lake", made.records)
    argv = ["--config", str(config), "analyze", "--control", "base"]
    for extra, expected in (
        (["--experiment", "e", "--lake", str(tmp_path / "none")], "no export directory"),
        (["--experiment", "other", "--lake", str(tmp_path / "lake")], "no partition"),
        (["--experiment", "e", "--lake", str(tmp_path)], "not an export directory"),
    ):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert expected in err[0]
