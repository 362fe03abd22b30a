"""The WebSocket-layer micro-benchmark and the hot path's frame paths run end to end: every
frame sent is forwarded and counted, whatever the implementation; the timings themselves
are never judged (they depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ws_relay_impls_reports_cpu_per_frame_for_each_aiohttp_design(tmp_path: Path) -> None:
    """A short run of both aiohttp relays reports frames sent and CPU per frame for each."""
    out = tmp_path / "impls.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "ws_relay_impls.py"),
        *("--streams", "4", "--seconds", "1"),
        *("--impl", "aiohttp-pump", "--impl", "aiohttp-fast", "--json", str(out)),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [r["impl"] for r in results] == ["aiohttp-pump", "aiohttp-fast"]
    for row in results:
        assert row["streams"] == 4
        assert row["frames"] >= 4 * 8  # 10 frames/s per stream for 1 s, give or take a tick
        assert row["relay_us_per_frame"] >= 0


@pytest.mark.parametrize("path", ["pump", "fast"])
def test_hot_path_runs_one_frame_path_alone(path: str) -> None:
    """`--only-path` (for callgrind) runs the chosen path silently; the fast path checks
    that every frame was taken in the read callback and fails otherwise."""
    command = [sys.executable, str(ROOT / "bench" / "hot_path.py"), "--only-path", path]
    result = subprocess.run(
        [*command, "-n", "200"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
