"""bench/validate_statistics.py runs end to end on a tiny design and reports every figure.

The figures of so few runs mean nothing; the test checks that the script completes as a
user runs it and that its JSON holds every section, each rate with its Monte Carlo interval.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_validate_statistics_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "validate_statistics.py"),
        *("--runs", "2", "--power-runs", "1", "--gains", "20"),
        *("--days", "2", "--units-per-day", "25", "--resamples", "100", "--json", str(out)),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "A/A: recommendation at any daily look" in result.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))
    for section in ("aa_one_look", "aa_daily_looks"):
        assert "WER difference (always-valid)" in figures[section]
        assert "rate error (fixed)" in figures[section]
        assert any(name.startswith("latency ") for name in figures[section])
    assert set(figures["aa_actions"]) == {"roll_back", "ship_custom", "roll_back_or_ship"}
    assert "WER (base)" in figures["coverage"]
    assert "latency final_latency_ms p90 (custom)" in figures["coverage"]
    (gain,) = figures["power"].values()
    for found in (gain["ship_custom"], figures["aa_actions"]["roll_back"]):
        low, high = found["mc_ci"]
        assert 0.0 <= low <= found["rate"] <= high <= 1.0
    assert figures["aa_actions"]["ship_custom"]["n"] == 2
