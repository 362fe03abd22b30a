"""`speech-gateway analyze --engine clickhouse`: ClickHouse in process (chdb) over an export
gives the store's report; a missing, conflicting or unreachable server is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_analyze import traffic, write_file_store

from gateway.cli import main
from gateway.stores.lake import append_outcomes, replace_labels
from tests.redis_servers import free_port


def test_clickhouse_over_the_export_gives_the_stores_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    made = traffic()
    config = write_file_store(tmp_path, made)
    append_outcomes(tmp_path / "lake", made.records)
    replace_labels(tmp_path / "lake", "e", made.labels.values())
    argv = ["--config", str(config), "analyze", "--experiment", "e", "--control", "base"]
    assert main([*argv, "--json", "-"]) == 0
    from_store = json.loads(capsys.readouterr().out)
    lake = ["--lake", str(tmp_path / "lake")]
    assert main([*argv, *lake, "--engine", "clickhouse", "--json", "-"]) == 0
    from_clickhouse = json.loads(capsys.readouterr().out)
    for report in (from_store, from_clickhouse):
        report.pop("generated_at")
    assert from_clickhouse == from_store
    assert from_clickhouse["recommendation"]["action"] == "ship_custom"


def test_wrong_clickhouse_options_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPEECH_GATEWAY_CLICKHOUSE_URL", raising=False)
    made = traffic()
    config = write_file_store(tmp_path, made)
    append_outcomes(tmp_path / "lake", made.records)
    port = free_port()
    url = f"http://analyst:s3cret@127.0.0.1:{port}/db"
    argv = ["--config", str(config), "analyze", "--experiment", "e"]
    for extra, expected in (
        (["--engine", "clickhouse"], "--clickhouse-url: required with --engine clickhouse"),
        (["--clickhouse-url", url], "--clickhouse-url: goes with --engine clickhouse"),
        (
            ["--engine", "clickhouse", "--clickhouse-url", url, "--lake", str(tmp_path / "lake")],
            "give one of them",
        ),
        (["--engine", "clickhouse", "--clickhouse-url", "ftp://x"], "expected http(s)://"),
        (
            ["--engine", "clickhouse", "--clickhouse-url", url, "--clickhouse-table", "a.b.c"],
            "not a table name",
        ),
        (["--engine", "clickhouse", "--clickhouse-url", url], f"ClickHouse at 127.0.0.1:{port}"),
    ):
        assert main([*argv, *extra]) == 2, extra
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1, captured.err
        assert expected in err[0]
        assert "s3cret" not in captured.err + captured.out


def test_the_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_file_store(tmp_path, traffic())
    port = free_port()
    monkeypatch.setenv("SPEECH_GATEWAY_CLICKHOUSE_URL", f"http://u:pw@127.0.0.1:{port}")
    argv = ["--config", str(config), "analyze", "--experiment", "e", "--engine", "clickhouse"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"ClickHouse at 127.0.0.1:{port}" in err
    assert "pw" not in err.replace("speech-gateway", "")
