"""bench/validate_health.py runs end to end on a tiny design and reports every figure.

The figures of so few runs mean nothing; the test checks that the script completes as a
user runs it and that its JSON holds every design, each rate with its Monte Carlo interval.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_validate_health_reports_every_design(tmp_path: Path) -> None:
    out = tmp_path / "health.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "validate_health.py"),
        *("--runs", "4", "--rounds", "20", "--workers", "1", "--json", str(out)),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "detection delay" in result.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))["figures"]
    assert figures["A/A none, default"]["alarms"]["rate"] == 0.0
    fallback = figures["+15 points, 20 items, at round 53"]
    assert fallback["kind"] == "detection"
    for summary in figures.values():
        rate = summary["alarms"] if summary["kind"] == "false_alarm" else summary["within_20"]
        low, high = rate["mc_ci"]
        assert 0.0 <= low <= rate["rate"] <= high <= 1.0
