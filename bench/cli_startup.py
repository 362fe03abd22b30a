"""Start-up time of the `speech-gateway` command: `--help`, `admin list` and `analyze`.

Each command runs `--runs` times as a fresh process; the median wall time and the median CPU
time (user + system of the child) are reported next to the same for a bare `python -c pass`
measured in the same run, so results from different machines compare as ratios. `admin list`
is pointed at a closed loopback port: it fails at once with its one line and status 2, so its
time is the command's start-up and not a gateway's answer. `analyze` runs on an empty file
store in a temporary folder.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def measure(argv: list[str], runs: int, cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Median wall and CPU seconds of `argv` over `runs` fresh processes."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (15)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    gateway = [PYTHON, "-m", "gateway"]
    commands = {
        "python -c pass (reference)": [PYTHON, "-c", "pass"],
        "speech-gateway --help": [*gateway, "--help"],
        "speech-gateway admin list": [
            *gateway,
            "admin",
            "--gateway",
            f"http://127.0.0.1:{closed_port()}",
            "list",
        ],
        "speech-gateway analyze (empty store)": [*gateway, "analyze", "--experiment", "none"],
    }
    env = {**os.environ, "SPEECH_GATEWAY_ADMIN_TOKEN": "bench-admin-token"}
    env["PYTHONPATH"] = str(ROOT)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "var").mkdir()
        (work / "var" / "outcomes.jsonl").touch()
        for name, command in commands.items():
            results[name] = measure(command, args.runs, work, env)
    reference = results["python -c pass (reference)"]
    print(f"{'command':<40} {'wall':>9} {'CPU':>9} {'wall / python':>14}")
    for name, found in results.items():
        ratio = found["wall_s"] / reference["wall_s"]
        print(
            f"{name:<40} {found['wall_s'] * 1000:7.0f}ms {found['cpu_s'] * 1000:7.0f}ms "
            f"{ratio:13.1f}x"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
