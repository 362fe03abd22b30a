"""The ClickHouse engine at scale: chdb (ClickHouse in process) over a Parquet export, against
DuckDB over the same files in the same run.

For each size, a synthetic file store (bench/synthetic_outcomes.py via
bench/analysis_scale.py: 5 records a unit, 30 % of results labelled with their stored WER
counts) is made once in `--work`, and `speech-gateway export` turns it into Parquet once (its
time is reported). Then, each in a fresh process:

* `analyze --lake DIR --engine clickhouse` and `--engine duckdb`: the whole command (wall,
  CPU = user + system of the process and its threads, peak RSS);
* the engine alone (`inputs()`: everything the report needs from the engine), split into
  its two parts: the SQL that stays on a server (the window's records into a temporary
  table, retries, the per-variant counts) and the per-outcome arrays and scored rows the
  client fetches for the statistics. Per-row costs of each part size an experiment of any
  size on a server.

    .venv/bin/python bench/clickhouse_scale.py --sizes 1000000 10000000 [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from analysis_scale import RECORDS_PER_UNIT, store

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
EXPERIMENT = "scale"
GATEWAY = (PYTHON, "-m", "gateway")


def lake(work: Path, records: int) -> tuple[Path, float | None]:
    """The export of the store of `records` records (made once) and the export's wall time
    when this call made it."""
    folder = work / f"lake-{records}"
    if (folder / "done").exists():
        return folder, None
    source = store(work, records)
    start = time.perf_counter()
    config = ["--config", str(source / "gateway.toml")]
    subprocess.run(
        [*GATEWAY, *config, "export", "--experiment", EXPERIMENT, "--to", str(folder)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    took = time.perf_counter() - start
    (folder / "done").write_text(f"{took:.1f}\n")
    return folder, took


def bulk_lake(work: Path, records: int) -> tuple[Path, float | None]:
    """The same export (layout, columns, types, version metadata) written by DuckDB in bulk,
    one file per partition: for sizes where `export` record by record takes too long on
    this machine. Its rows are the store's, each once."""
    import duckdb

    from gateway.stores.lake import (
        EXPORT_SCHEMA_VERSION,
        LABEL_COLUMNS,
        OUTCOME_COLUMNS,
        VERSION_KEY,
        experiment_folder,
        labels_folder,
    )

    folder = work / f"lake-{records}"
    if (folder / "done").exists():
        return folder, None
    source = store(work, records)
    start = time.perf_counter()

    def columns(spec: dict[str, str]) -> str:
        return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in spec.items()) + "}"

    version = f"{{{VERSION_KEY}: '{EXPORT_SCHEMA_VERSION}'}}"
    options = f"FORMAT parquet, COMPRESSION zstd, KV_METADATA {version}"
    selected = ", ".join(f'"{name}"' for name in OUTCOME_COLUMNS)
    with duckdb.connect() as con:
        con.execute(
            f"CREATE TABLE o AS SELECT DISTINCT ON (record_id) {selected} FROM read_json("  # noqa: S608 - constants and our paths
            f"'{source / 'outcomes.jsonl'}', format = 'newline_delimited', "
            f"columns = {columns(dict(OUTCOME_COLUMNS))})"
        )
        for phase, date in con.execute(
            "SELECT DISTINCT phase, substr(timestamp, 1, 10) FROM o"
        ).fetchall():
            target = experiment_folder(folder, EXPERIMENT) / f"phase={phase}" / f"date={date}"
            target.mkdir(parents=True, exist_ok=True)
            con.execute(
                "COPY (SELECT * FROM o WHERE phase = ? AND substr(timestamp, 1, 10) = ? "  # noqa: S608 - our path
                f"ORDER BY timestamp, record_id) TO '{target / 'part-bulk.parquet'}' ({options})",
                [phase, date],
            )
        labels = labels_folder(folder, EXPERIMENT)
        labels.mkdir(parents=True, exist_ok=True)
        names = ", ".join(f'"{name}"' for name in LABEL_COLUMNS if name != "experiment")
        label_spec = {k: v for k, v in LABEL_COLUMNS.items() if k != "experiment"}
        con.execute(
            f"COPY (SELECT '{EXPERIMENT}' AS experiment, {names} FROM read_json("  # noqa: S608 - constants and our paths
            f"'{source / 'labels.jsonl'}', format = 'newline_delimited', "
            f"columns = {columns(label_spec)}) ORDER BY record_id) "
            f"TO '{labels / 'labels.parquet'}' ({options})"
        )
    took = time.perf_counter() - start
    (folder / "done").write_text(f"{took:.1f} bulk\n")
    return folder, took


def command(folder: Path, engine: str) -> dict[str, float]:
    """One `analyze --lake` process: wall, CPU seconds and peak RSS (MB)."""
    argv = [PYTHON, "-m", "gateway", "analyze", "--experiment", EXPERIMENT, "--control", "base"]
    argv += ["--lake", str(folder), "--engine", engine, "--json", str(folder / f"{engine}.json")]
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:  # a result too: which engine could not do it, and why
        return {"failed": (err.strip().splitlines() or [f"status {status}"])[-1][:300]}
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def engine_parts(folder: Path, engine: str) -> dict[str, Any]:
    """The engine alone, in this (fresh) process: CPU and wall of the server-side SQL and of
    the client's fetches (ClickHouse), or of `inputs()` as a whole (DuckDB)."""
    from gateway.analysis.engine_port import AnalysisWindow
    from gateway.stores.engine import DuckDbEngine, LakeReader
    from gateway.stores.lake import lake_sources

    files = lake_sources(folder, EXPERIMENT).outcomes
    labels = asyncio.run(LakeReader(folder).labels(EXPERIMENT))
    window = AnalysisWindow(EXPERIMENT)
    clock = _Clock()
    if engine == "duckdb":
        DuckDbEngine.parquet(files).inputs(window, labels, 2000)
        return {"inputs": clock.lap(), "labels": len(labels)}
    from gateway.stores import clickhouse_engine as ch

    found: dict[str, Any] = {"labels": len(labels)}
    with ch.ClickHouseEngine.parquet(files)._records(window) as con:
        found["read"] = clock.lap()  # the window's records, deduplicated, into `r`
        ch._load_labels(con, labels)
        ch._derive(con)
        phases = ch._phases(con)
        rows = con.rows(ch._COUNTS_SQL.format(error=2))
        found["aggregate"] = clock.lap()  # retries, flags, the per-variant counts
        outcomes = scored = 0
        for phase_id, variant, *_ in rows:
            outcomes += len(ch._outcome_table(con, phase_id, variant))
        found["outcome_arrays"] = clock.lap()
        for phase_id, variant, *_ in rows:
            scored += len(ch._scored_table(con, phase_id, variant, labels))
        found["scored_rows"] = clock.lap()
        found["outcomes"], found["scored"], found["phases"] = outcomes, scored, len(phases)
    return found


class _Clock:
    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def lap(self) -> dict[str, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        lap = {"cpu_s": round(cpu - self._cpu, 2), "wall_s": round(wall - self._wall, 2)}
        self._cpu, self._wall = cpu, wall
        return lap


def isolated(folder: Path, engine: str) -> dict[str, Any]:
    """`engine_parts` in a fresh process (no cache or pool shared between measurements)."""
    out = subprocess.run(
        [PYTHON, __file__, "--parts", str(folder), engine],
        capture_output=True,
        text=True,
        cwd=ROOT / "bench",
    )
    if out.returncode != 0:
        return {"failed": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    parts: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-clickhouse")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results")
    parser.add_argument(
        "--bulk-from",
        type=int,
        metavar="N",
        help="from this size on, write the export in bulk with DuckDB instead of running "
        "`speech-gateway export` (same files, one per partition)",
    )
    parser.add_argument("--parts", nargs=2, metavar=("LAKE", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parts:
        parts = engine_parts(Path(args.parts[0]), args.parts[1])
        parts["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(parts))
        return 0
    if any(size < 100 for size in args.sizes):
        parser.error("--sizes must be at least 100")
    rows = []
    for size in args.sizes:
        bulk = args.bulk_from is not None and size >= args.bulk_from
        folder, export_s = (bulk_lake if bulk else lake)(args.work, size)
        row: dict[str, Any] = {
            "records": size,
            "units": max(1, size // RECORDS_PER_UNIT),
            "export_wall_s": export_s,
            "export": "bulk (DuckDB COPY per partition)" if bulk else "speech-gateway export",
            "load_before": os.getloadavg()[0],
        }
        for engine in ("clickhouse", "duckdb"):
            row[f"analyze_{engine}"] = command(folder, engine)
            row[f"engine_{engine}"] = isolated(folder, engine)
        row["load_after"] = os.getloadavg()[0]
        if all("failed" not in row[f"analyze_{e}"] for e in ("clickhouse", "duckdb")):
            same = json.loads((folder / "clickhouse.json").read_text())
            other = json.loads((folder / "duckdb.json").read_text())
            same.pop("generated_at")
            other.pop("generated_at")
            row["reports_equal"] = same == other
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
