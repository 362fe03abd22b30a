"""The relay benchmarks run end to end for a few seconds and report structured results.

Each harness is run as a user would, as a script, against instant emulators it starts
itself; the tests check that it completes and that its JSON is complete and sane. They
never judge the timings: those depend on the machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, out: Path, *args: str) -> dict[str, Any]:
    command = [sys.executable, str(ROOT / "bench" / script), *args, "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


def expected_targets(report: dict[str, Any]) -> list[str]:
    """direct and gateway always; nginx unless the harness said it skipped it."""
    notes = report["notes"]
    assert isinstance(notes, list)
    skipped = any("nginx skipped" in note for note in notes)
    return ["direct", "gateway"] if skipped else ["direct", "gateway", "nginx"]


def test_usp_streams_reports_every_target(tmp_path: Path) -> None:
    """A short USP run completes every stream on every target and reports latencies, CPU, RSS."""
    report = run_bench(
        "usp_streams.py",
        tmp_path / "usp.json",
        *("--streams", "3", "--seconds", "3", "--utterance-ms", "1000"),
        *("--workers", "1", "--idle-sessions", "5", "--nginx"),
    )
    (run,) = report["runs"]
    targets = run["targets"]
    assert list(targets) == expected_targets(report)
    for name, row in targets.items():
        assert row["errors"] == 0, row["first_error"]
        assert row["streams_completed"] == 3
        assert row["frame_samples"] > 0
        assert row["final_samples"] > 0
        for key in ("frame_p50_ms", "frame_p99_ms", "final_p50_ms", "final_p99_ms"):
            assert 0 < row[key] < math.inf, (name, key)
        if name != "direct":
            assert math.isfinite(row["frame_added_p99_ms"])
    assert run["gateway_cpu_us_per_frame"] > 0
    assert run["gateway_rss_loaded_mib"] > 0
    assert report["idle"]["idle_sessions"] == 5
    assert math.isfinite(report["idle"]["rss_kib_per_idle_session"])


def test_rest_requests_reports_every_target(tmp_path: Path) -> None:
    """A short REST run answers every request on every target and reports latency and rates."""
    report = run_bench(
        "rest_requests.py",
        tmp_path / "rest.json",
        *("--rate", "10", "--seconds", "3", "--saturate-seconds", "1"),
        *("--concurrency", "2", "--workers", "1", "--nginx"),
    )
    open_loop = report["open_loop"]
    targets = open_loop["targets"]
    assert list(targets) == expected_targets(report)
    for name, row in targets.items():
        assert row["errors"] == 0, row["first_error"]
        assert row["ok"] == 30, name
        assert row["samples"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"] < math.inf
    assert open_loop["gateway_cpu_us_per_request"] > 0
    closed = report["closed_loop"]["targets"]
    assert list(closed) == expected_targets(report)
    assert all(row["requests_per_s"] > 0 for row in closed.values())


def test_hot_path_times_every_step(tmp_path: Path) -> None:
    """The hot-path micro-benchmark drives the relay's own classes: it breaks when their
    signatures change, so a short run here keeps it runnable."""
    report = run_bench("hot_path.py", tmp_path / "hot.json", "-n", "200", "--repeats", "1")
    assert any(step.startswith("relay: _Session._execute") for step in report)
    assert any(step.startswith("relay: RelaySession.forward_binary") for step in report)
    for step, value in report.items():
        assert isinstance(value, float), (step, value)
        assert 0 < value < math.inf, (step, value)
