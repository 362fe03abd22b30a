"""`speech-gateway analyze` at scale: CPU time and peak memory from 10k to millions of records.

For each size, a synthetic file store (bench/synthetic_outcomes.py: 5 records a unit, 30 %
of results labelled with their stored WER counts) is generated once into `--work` and kept;
`analyze` then runs on it as a fresh process, with the DuckDB engine (the default) and, at
sizes up to `--records-up-to`, record by record (`--engine records`, the path the Redis store
takes), so the two compare as a ratio measured in the same run. CPU is user + system time
of the process (what a busy machine changes least); peak RSS is the process's; `load_1min`
the machine's one-minute load average as the run began (the machine may be shared).

    .venv/bin/python bench/analysis_scale.py --sizes 10000 100000 1000000 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RECORDS_PER_UNIT = 5


def store(work: Path, records: int) -> Path:
    """The folder of a generated store of `records` records (made once)."""
    folder = work / f"store-{records}"
    if not (folder / "done").exists():
        subprocess.run(
            [
                PYTHON,
                str(ROOT / "bench" / "synthetic_outcomes.py"),
                "--records",
                str(records),
                "--units",
                str(max(1, records // RECORDS_PER_UNIT)),
                "--out",
                str(folder),
            ],
            check=True,
        )
        (folder / "gateway.toml").write_text('[outcomes]\npath = "outcomes.jsonl"\n')
        (folder / "done").touch()
    return folder


def run(folder: Path, engine: str) -> dict[str, float]:
    """One `analyze` process: wall, CPU seconds and peak RSS (MB)."""
    argv = [PYTHON, "-m", "gateway", "--config", str(folder / "gateway.toml"), "analyze"]
    argv += ["--experiment", "scale", "--control", "base", "--engine", engine]
    argv += ["--json", str(folder / f"report-{engine}.json")]
    load = os.getloadavg()[0]  # how busy the (shared) machine was as the run began
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"analyze failed on {folder} ({engine}): status {status}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_1min": round(load, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--records-up-to",
        type=int,
        default=100_000,
        help="also run record by record up to this size (100000)",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-analysis")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results")
    args = parser.parse_args(argv)
    if any(size < 100 for size in args.sizes):
        parser.error("--sizes must be at least 100")
    rows = []
    for size in args.sizes:
        folder = store(args.work, size)
        row: dict[str, object] = {"records": size, "duckdb": run(folder, "duckdb")}
        if size <= args.records_up_to:
            records = run(folder, "records")
            row["records_path"] = records
            row["cpu_ratio"] = round(records["cpu_s"] / row["duckdb"]["cpu_s"], 2)  # type: ignore[index]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
