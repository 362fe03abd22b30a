"""The relay benchmarks run end to end for a few seconds and report structured results.

Each harness is run as a user would, as a script, against instant emulators it starts
itself; the tests check that it completes and that its JSON is complete and sane, verdict
included. They never judge the timings: those depend on the machine. The void rules
themselves (bench/_verdict.py) are pinned on constructed measurements.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_verdict() -> ModuleType:
    """bench/ is not a package: load its pure verdict module by path."""
    spec = importlib.util.spec_from_file_location("bench_verdict", ROOT / "bench" / "_verdict.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


V = _load_verdict()
QUIET = V.RunLoad(
    direct_p99_ms=1.0,
    direct_p99_max_ms=V.USP_DIRECT_P99_MAX_MS,
    late_p99_ms=1.5,
    harness={
        "emulator": V.Load(0.40, 0.02),
        "generator-0": V.Load(0.20, 0.01),
        "generator-1": V.Load(0.20, 0.01),
    },
    gateway=V.Load(0.45, 0.02),
    harness_cpus=None,
    machine_busy=0.50,
    reference_errors={"direct": 0},
)
VERDICT_KEYS = {"status", "reasons"}


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


def assert_hot_path(report: dict[str, Any], ratios: dict[str, Any]) -> None:
    hot_path = report["hot_path"]
    assert hot_path["figure"] in hot_path["steps"]
    assert 0 < hot_path["us"] == hot_path["steps"][hot_path["figure"]] < math.inf
    assert ratios
    assert all(isinstance(value, float) for value in ratios.values())


def assert_verdict(verdict: dict[str, Any]) -> None:
    assert set(verdict) == VERDICT_KEYS
    assert verdict["status"] in ("valid", "void")
    assert (verdict["status"] == "void") == bool(verdict["reasons"])


def test_usp_streams_reports_every_target(tmp_path: Path) -> None:
    """A short one-step USP sweep from two load generators completes every stream on every
    target and reports latencies, CPU, RSS, the hot-path figure, a verdict and the sweep."""
    report = run_bench(
        "usp_streams.py",
        tmp_path / "usp.json",
        *("--sweep", "--steps", "3", "--seconds", "3", "--utterance-ms", "1000"),
        *("--generators", "2", "--idle-sessions", "5", "--nginx"),
    )
    (run,) = report["runs"]
    assert_verdict(run["verdict"])
    assert run["outcome"] in ("holds", "fails", "void")
    assert (run["outcome"] == "void") == (run["verdict"]["status"] == "void")
    assert {"generator-0", "generator-1", "loadgen"} <= set(run["cpu"])
    assert_hot_path(report, run["x_hot_path"])
    sweep = report["sweep"]
    assert sweep["steps"] == [{"streams": 3, "outcome": run["outcome"]}]
    # one step can never bracket the limit
    assert sweep["status"] == "undetermined"
    assert sweep["max_streams_per_core"] is None
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
        assert row["verdict"] == run["verdict"]["status"]
    assert run["gateway_cpu_us_per_frame"] > 0
    assert run["gateway_rss_loaded_mib"] > 0
    assert report["idle"]["idle_sessions"] == 5
    assert math.isfinite(report["idle"]["rss_kib_per_idle_session"])


def test_usp_streams_on_the_bare_backend_compares_nginx_at_the_same_load(tmp_path: Path) -> None:
    """With the bare backend every target completes its streams; --nginx-at-load adds a
    window in which nginx carries the gateway's streams (the gateway idle), and the ratio."""
    report = run_bench(
        "usp_streams.py",
        tmp_path / "usp.json",
        *("--streams", "3", "--reference-streams", "2", "--seconds", "3"),
        *("--utterance-ms", "1000", "--generators", "1", "--idle-sessions", "0"),
        *("--backend", "bare", "--nginx", "--pin", "--nginx-at-load"),
    )
    assert any("_bare_backend" in note for note in report["notes"])
    (run,) = report["runs"]
    for row in run["targets"].values():
        assert row["errors"] == 0, row["first_error"]
        assert row["frame_samples"] > 0
        assert row["final_samples"] > 0
    if "nginx" not in run["targets"] or report["pinning"] is None:
        assert "nginx_at_load" not in report  # no nginx or one CPU: nothing to compare
        return
    at_load = report["nginx_at_load"]
    assert at_load["run"]["loaded"] == "nginx"
    assert at_load["run"]["targets"]["nginx"]["streams"] == 3
    assert at_load["run"]["targets"]["gateway"]["streams"] == 0  # idle in nginx's window
    assert_verdict(at_load["run"]["verdict"])
    if at_load["nginx_us"] > 0:  # a few streams for a second may cost nginx no clock tick
        assert at_load["ratio"] == pytest.approx(at_load["gateway_us"] / at_load["nginx_us"])
    else:
        assert math.isnan(at_load["ratio"])


def assert_comparison(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """A comparison's two windows (off, on) and its summary; the runs."""
    runs = report["runs"]
    assert [run["window"]["mode"] for run in runs] == ["off", "on"]
    for run in runs:
        assert_verdict(run["verdict"])
        assert list(run["targets"]) == ["direct", "gateway"]  # one gateway loaded per window
        row = run["targets"]["gateway"]
        assert row["errors"] == 0, (row["first_error"], run.get("gateway_log_tail"))
        assert row["streams_completed"] == 3
        assert run["gateway_cpu_us_per_frame"] > 0
    summary = report["comparison"]
    assert summary["kind"] == kind
    assert [w["mode"] for w in summary["windows"]] == ["off", "on"]
    assert {w["verdict"] for w in summary["windows"]} <= {"valid", "void"}
    assert summary["status"] in ("valid", "void")
    assert (summary["on_minus_off"] is None) == (summary["status"] == "void")
    for mode in ("off", "on"):
        assert summary["modes"][mode]["windows"] == 1
    return list(runs)


def test_usp_streams_compares_capture_off_and_on(tmp_path: Path) -> None:
    """--capture-share: the plain and the capturing gateway loaded in alternating windows of
    one run; the capturing one stored captures (every session considered at share 1)."""
    report = run_bench(
        "usp_streams.py",
        tmp_path / "capture.json",
        *("--streams", "3", "--reference-streams", "3", "--seconds", "3"),
        *("--utterance-ms", "1000", "--idle-sessions", "0", "--windows", "2"),
        *("--capture-share", "1"),
    )
    off, on = assert_comparison(report, "capture")
    assert off["window"]["gateway"] == "gateway"
    assert on["window"]["gateway"] == "capture"
    assert "captures" not in off
    assert on["captures"]["stored"] >= 3  # at least one utterance per stream
    assert on["captures"]["dropped"] == 0


def test_usp_streams_compares_a_dashboard_closed_and_open(tmp_path: Path) -> None:
    """--dashboard-records: one gateway over a generated store, its analysis polled in the
    "on" window only; the analysis answered, from a worker process of the gateway's own."""
    report = run_bench(
        "usp_streams.py",
        tmp_path / "dashboard.json",
        *("--streams", "3", "--reference-streams", "3", "--seconds", "3"),
        *("--utterance-ms", "1000", "--idle-sessions", "0", "--windows", "2"),
        *("--dashboard-records", "1000", "--dashboard-stores", str(tmp_path / "stores")),
    )
    off, on = assert_comparison(report, "dashboard")
    assert off["window"]["gateway"] == on["window"]["gateway"] == "dashboard"
    assert "dashboard" not in off
    polled = on["dashboard"]
    assert polled["requests"] >= 1
    assert polled["statuses"] == [200]
    assert len(polled["worker_pids"]) >= 1
    assert (tmp_path / "stores" / "store-1000" / "outcomes.jsonl").exists()


def test_rest_requests_reports_every_target(tmp_path: Path) -> None:
    """A short REST run answers every request on every target and reports latency and rates."""
    report = run_bench(
        "rest_requests.py",
        tmp_path / "rest.json",
        *("--rate", "10", "--seconds", "3", "--saturate-seconds", "1"),
        *("--concurrency", "2", "--generators", "2", "--nginx"),
    )
    open_loop = report["open_loop"]
    assert_verdict(open_loop["verdict"])
    assert_hot_path(report, open_loop["x_hot_path"])
    targets = open_loop["targets"]
    assert list(targets) == expected_targets(report)
    for name, row in targets.items():
        assert row["errors"] == 0, row["first_error"]
        assert row["ok"] == 30, name
        assert row["samples"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"] < math.inf
        assert row["verdict"] == open_loop["verdict"]["status"]
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


def test_a_run_with_room_everywhere_is_valid() -> None:
    """A quiet machine, an idle harness and a fast direct path give a valid run."""
    verdict = V.judge(QUIET)
    assert verdict.status == "valid"
    assert verdict.reasons == ()


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"direct_p99_ms": V.USP_DIRECT_P99_MAX_MS + 0.1}, "direct p99"),
        ({"late_p99_ms": V.LATE_P99_MAX_MS + 0.1}, "behind its schedule"),
        ({"machine_busy": V.MACHINE_BUSY_MAX + 0.01}, "machine"),
        ({"gateway": V.Load(0.5, V.GATEWAY_WAIT_SHARE_MAX + 0.01)}, "event loop waited"),
        ({"reference_errors": {"direct": 2}}, "2 direct streams"),
        ({"reference_added_p99_ms": {"frame": 1.0, "final": 24.5}}, "nginx added 24.50 ms"),
        (
            {"harness": {"emulator": V.Load(V.HARNESS_CORE_SHARE_MAX + 0.01, 0.0)}},
            "emulator at",
        ),
        (
            {"harness": {"generator-1": V.Load(0.3, V.HARNESS_WAIT_SHARE_MAX + 0.01)}},
            "generator-1 waited for a CPU",
        ),
        (
            {"harness": {"emulator": V.Load(0.3, 0.02, V.HARNESS_WAIT_PER_SCHEDULING_MAX_US + 1)}},
            "each time it was scheduled",
        ),
    ],
)
def test_each_rule_voids_a_run_and_says_why(change: dict[str, Any], names: str) -> None:
    """Crossing any one threshold voids the run with exactly that rule's reason."""
    verdict = V.judge(replace(QUIET, **change))
    assert verdict.status == "void"
    assert len(verdict.reasons) == 1
    assert names in verdict.reasons[0]


def test_at_the_thresholds_a_run_is_still_valid() -> None:
    """The bounds are inclusive: a measurement equal to a threshold does not void."""
    at = replace(
        QUIET,
        direct_p99_ms=V.USP_DIRECT_P99_MAX_MS,
        late_p99_ms=V.LATE_P99_MAX_MS,
        machine_busy=V.MACHINE_BUSY_MAX,
        harness={
            "emulator": V.Load(V.HARNESS_CORE_SHARE_MAX, V.HARNESS_WAIT_SHARE_MAX),
            "generator-0": V.Load(0.3, 0.02, V.HARNESS_WAIT_PER_SCHEDULING_MAX_US),
        },
        gateway=V.Load(1.0, V.GATEWAY_WAIT_SHARE_MAX),
    )
    assert V.judge(at).status == "valid"


def test_many_short_waits_are_judged_by_the_mean_wait_of_each_scheduling() -> None:
    """Where schedstat counts schedulings, a harness process that waited a large share of
    the window in short waits (a busy harness core at 1,000 streams) leaves the run valid;
    the same share without a count voids it; REST runs, which judge a 1 ms added p50, allow
    a fifth of the USP bound."""
    short_waits = {"generator-0": V.Load(0.3, 0.22, 120.0)}
    assert V.judge(replace(QUIET, harness=short_waits)).status == "valid"
    uncounted = {"generator-0": V.Load(0.3, 0.22)}
    assert V.judge(replace(QUIET, harness=uncounted)).status == "void"
    rest = replace(
        QUIET,
        harness=short_waits,
        direct_p99_max_ms=V.REST_DIRECT_P99_MAX_MS,
        harness_wait_max_us=V.REST_HARNESS_WAIT_PER_SCHEDULING_MAX_US,
    )
    assert V.judge(rest).status == "void"
    assert V.REST_HARNESS_WAIT_PER_SCHEDULING_MAX_US < V.HARNESS_WAIT_PER_SCHEDULING_MAX_US


def _load_usp_streams() -> ModuleType:
    """bench/usp_streams.py as a module (its imports resolve in bench/, as when it runs)."""
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(
        "bench_usp_streams", ROOT / "bench" / "usp_streams.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _target(frame_p99: float, final_p99: float, added: float = 0.5) -> dict[str, Any]:
    return {
        "frame_p99_ms": frame_p99,
        "final_p99_ms": final_p99,
        "frame_added_p99_ms": added,
        "final_added_p99_ms": added,
        "loadgen_late_p99_ms": 1.5,
        "errors": 0,
        "streams": 10,
        "streams_completed": 10,
    }


def _cpu(**waits: float) -> dict[str, dict[str, float]]:
    rows = {
        name: {"core_share": 0.2, "cpu_wait_share": 0.02, "cpu_wait_per_slice_us": us}
        for name, us in waits.items()
    }
    rows["gateway"]["main_thread_wait_share"] = 0.01
    rows["machine"] = {"busy_share": 0.5}
    return rows


def test_a_run_is_judged_on_directs_frame_and_final_tail_and_on_what_it_loaded() -> None:
    """Direct's final p99 voids a run as its frame p99 does (a NaN of one is no evidence);
    with nginx loaded (--nginx-at-load) the gateway is judged as harness and counted as a
    reference, and nginx's added p99 is the one the target judges, not a reference's."""
    usp = _load_usp_streams()
    quiet = {
        "targets": {"direct": _target(1.0, 1.0), "gateway": _target(1.0, 1.0)},
        "cpu": _cpu(gateway=10.0, emulator=50.0),
    }
    assert usp.judge(usp.run_load_of(quiet, 1)).status == "valid"
    stalled = {**quiet, "targets": {**quiet["targets"], "direct": _target(1.0, 11.3)}}
    reasons = usp.judge(usp.run_load_of(stalled, 1)).reasons
    assert len(reasons) == 1
    assert "direct p99 11.30 ms" in reasons[0]
    unknown = {**quiet, "targets": {**quiet["targets"], "direct": _target(1.0, math.nan)}}
    assert usp.run_load_of(unknown, 1).direct_p99_ms == 1.0

    nginx_loaded = {
        "loaded": "nginx",
        "targets": {
            "direct": _target(1.0, 1.0),
            "gateway": {**_target(1.0, 1.0), "errors": 2},
            "nginx": _target(1.0, 1.0, added=7.0),
        },
        "cpu": _cpu(gateway=900.0, emulator=50.0, nginx=5.0),
    }
    load = usp.run_load_of(nginx_loaded, 1)
    assert "nginx" not in load.harness
    assert load.harness["gateway"].wait_per_scheduling_us == 900.0
    assert load.reference_errors == {"direct": 0, "gateway": 2}
    assert load.reference_added_p99_ms == {}
    reasons = " | ".join(usp.judge(load).reasons)
    assert "gateway waited 900 us" in reasons
    assert "2 gateway streams" in reasons
    assert "nginx added" not in reasons
    usp.attach_verdict(nginx_loaded, 1)
    assert nginx_loaded["gateway_misses_target"] is not None  # nginx's own 7 ms


def test_moving_a_process_moves_every_thread_and_can_be_undone() -> None:
    """--nginx-at-load swaps CPUs with `_move`: every thread of the process, both ways."""
    usp = _load_usp_streams()
    cpus = os.sched_getaffinity(0)
    one = {min(cpus)}
    code = (
        "import threading, time; "
        "threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{child.pid}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tids = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        assert len(tids) == 2
        usp._move(child.pid, one)
        assert all(os.sched_getaffinity(t) == one for t in tids)
        usp._move(child.pid, cpus)
        assert all(os.sched_getaffinity(t) == cpus for t in tids)
    finally:
        child.kill()
        child.wait()


def test_a_harness_sharing_its_pinned_cpu_is_saturated_together() -> None:
    """Emulator and generators each under the per-process bound still void a run when
    together they fill the one CPU --pin leaves them; unpinned, the machine rule judges."""
    crowded = {"emulator": V.Load(0.5, 0.0), "generator-0": V.Load(0.4, 0.0)}
    pinned = V.judge(replace(QUIET, harness=crowded, harness_cpus=1))
    assert pinned.status == "void"
    assert "1 CPU(s)" in pinned.reasons[0]
    assert V.judge(replace(QUIET, harness=crowded, harness_cpus=2)).status == "valid"
    assert V.judge(replace(QUIET, harness=crowded, harness_cpus=None)).status == "valid"


def test_every_reason_is_reported_and_missing_measurements_are_not_evidence() -> None:
    """All applicable reasons are listed; NaN (not measured) voids nothing."""
    both = replace(QUIET, direct_p99_ms=600.0, machine_busy=0.99)
    assert len(V.judge(both).reasons) == 2
    unknown = replace(QUIET, machine_busy=math.nan, harness={"nginx": V.Load(0.1, math.nan)})
    assert V.judge(unknown).status == "valid"


def test_a_void_step_is_neither_a_pass_nor_a_failure() -> None:
    """A void verdict wins over the gateway's numbers; a valid one lets them decide."""
    void = V.Verdict("void", ("machine 99 % busy",))
    valid = V.Verdict("valid", ())
    miss = V.gateway_misses({"frame_added_p99_ms": 9.0}, 0)
    assert miss is not None
    assert V.step_outcome(void, miss) is V.Outcome.VOID
    assert V.step_outcome(valid, miss) is V.Outcome.FAILS
    assert V.step_outcome(valid, None) is V.Outcome.HOLDS
    assert V.gateway_misses({"frame_added_p99_ms": V.ADDED_P99_LIMIT_MS}, 0) is None
    assert V.gateway_misses({"frame_added_p99_ms": math.nan}, 0) is not None
    assert V.gateway_misses({"frame_added_p99_ms": 0.1}, 1) == "1 gateway streams failed"


H, F, X = V.Outcome.HOLDS, V.Outcome.FAILS, V.Outcome.VOID


@pytest.mark.parametrize(
    ("steps", "status", "max_streams", "first_failing"),
    [
        ([(200, H), (400, H), (700, F)], "determined", 400, 700),
        ([(200, H), (400, X), (700, F)], "determined", 200, 700),  # a void widens the bracket
        ([(200, H), (400, H), (700, X), (1000, X)], "undetermined", None, None),
        ([(200, F)], "undetermined", None, 200),
        ([(200, X), (400, X)], "undetermined", None, None),
        ([(200, H), (400, F), (700, H)], "undetermined", None, 400),  # not monotone: noise
        ([], "undetermined", None, None),
    ],
)
def test_the_sweep_counts_only_valid_steps(
    steps: list[tuple[int, Any]], status: str, max_streams: int | None, first_failing: int | None
) -> None:
    """The largest N is known only when valid steps bracket it; void steps count for nothing."""
    answer = V.largest_holding(steps)
    assert (answer.status, answer.max_streams, answer.first_failing) == (
        status,
        max_streams,
        first_failing,
    )
    assert answer.why


def test_the_analysis_scale_benchmark_runs_both_paths(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "analysis_scale.py"),
            "--sizes",
            "400",
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [row] = json.loads(out.read_text())
    assert row["records"] == 400
    for path in ("duckdb", "records_path"):
        assert row[path]["cpu_s"] > 0
        assert row[path]["peak_rss_mb"] > 10
    # The two paths made the same report.
    reports = [
        json.loads((tmp_path / "work" / "store-400" / f"report-{engine}.json").read_text())
        for engine in ("duckdb", "records")
    ]
    for report in reports:
        report.pop("generated_at")
    assert reports[0] == reports[1]
