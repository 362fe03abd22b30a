"""bench/capture_overhead.py runs end to end on a few frames and reports every figure.

The figures of so short a run mean nothing; the test checks that the script completes as a
user runs it, that the captured session made captures, and that its JSON holds each figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_capture_overhead_reports_on_and_off(tmp_path: Path) -> None:
    """The script reports the cost per frame with capture off and on, in text and JSON."""
    out = tmp_path / "capture.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "capture_overhead.py"),
        *("-n", "600", "--repeats", "1", "--json", str(out)),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["frames"] == 600
    assert report["captures_per_session"] >= 1
    assert report["us_per_frame_capture_off"] > 0
    assert report["us_per_frame_capture_on"] > 0
    assert "us_per_frame_at_10pct_sessions" in result.stdout


def test_a_bad_frame_count_is_a_usage_error() -> None:
    """Too few frames: one line on stderr and exit status 2."""
    command = [sys.executable, str(ROOT / "bench" / "capture_overhead.py"), "-n", "3"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
