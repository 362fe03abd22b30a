"""`speech-gateway export --to-clickhouse`: bad input and an unreachable server are one line
without the URL's password (the loading itself: tests/stores/test_clickhouse_load.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis_servers import outcome
from test_export import file_store, one_error_line

from gateway.cli import main
from tests.redis_servers import free_port


def test_bad_input_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPEECH_GATEWAY_CLICKHOUSE_URL", raising=False)
    config = file_store(tmp_path, [outcome(1)], [])
    base = ["--config", str(config), "export", "--experiment", "checkout"]
    assert main([*base, "--to-clickhouse"]) == 2
    assert "SPEECH_GATEWAY_CLICKHOUSE_URL" in one_error_line(capsys)
    assert main([*base, "--to-clickhouse", "ftp://x", "--follow"]) == 2
    assert "--to-clickhouse: loads once" in one_error_line(capsys)
    assert main([*base, "--to-clickhouse", "clickhouse.example"]) == 2
    assert "expected http(s)://" in one_error_line(capsys)


def test_an_unreachable_server_is_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = file_store(tmp_path, [outcome(1)], [])
    port = free_port()
    monkeypatch.setenv("SPEECH_GATEWAY_CLICKHOUSE_URL", f"http://loader:hunter2@127.0.0.1:{port}")
    argv = ["--config", str(config), "export", "--experiment", "checkout", "--to-clickhouse"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert f"ClickHouse at 127.0.0.1:{port}: cannot connect" in lines[0]
    assert "hunter2" not in captured.err + captured.out
