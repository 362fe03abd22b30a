"""bench/clickhouse_scale.py runs end to end on a small store, as a user runs it, and reports
every measurement, with chdb's report equal to DuckDB's. The timings are never judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_clickhouse_benchmark_runs_and_the_reports_agree(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    command = [sys.executable, str(ROOT / "bench" / "clickhouse_scale.py"), "--sizes", "600"]
    command += ["--work", str(tmp_path / "work"), "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(out.read_text(encoding="utf-8"))
    assert row["records"] == 600
    assert row["reports_equal"] is True
    assert row["export"] == "speech-gateway export"
    assert row["export_wall_s"] > 0
    for engine in ("clickhouse", "duckdb"):
        assert row[f"analyze_{engine}"]["cpu_s"] > 0
        assert row[f"analyze_{engine}"]["peak_rss_mb"] > 0
    parts = row["engine_clickhouse"]
    for part in ("read", "aggregate", "outcome_arrays", "scored_rows"):
        assert parts[part]["cpu_s"] >= 0
    assert parts["outcomes"] > 0
    assert 0 < parts["scored"] <= parts["labels"]
    assert row["engine_duckdb"]["labels"] == parts["labels"]
