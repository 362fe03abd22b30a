"""Benchmark: what the gateway adds to REST short-audio requests, against direct and nginx.

Each request POSTs a 100 KB WAV (3.2 s of 16 kHz PCM) to the conversation short-audio
endpoint of the instant emulator, directly, through the gateway and with --nginx through
nginx. Two phases, both from load-generator processes separate from the gateway:

  open loop   `--rate` requests/s per target for `--seconds`, targets interleaved in the
              same window; latency = request start → whole response read. "Added" is the
              gateway's (nginx's) percentile minus the direct percentile.
  closed loop `--concurrency` clients posting back to back, one target at a time for
              `--saturate-seconds`: the requests/s each path sustains (the emulator is the
              same process for all three, so this is relative, not an absolute ceiling).

The open loop's result carries the hot-path figure measured at the start (bench/hot_path.py,
~2 s) with the key results as multiples of it, and a valid/void verdict (bench/_verdict.py).

    python bench/rest_requests.py --rate 200 --seconds 20 [--nginx] [--pin] [--json out.json]
    python bench/rest_requests.py --rate 200 --seconds 20 --pin --profile rest.txt
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import multiprocessing
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    CLIENT_KEY,
    USP_PATH,
    CpuMeter,
    PySpy,
    Services,
    WorkerCpu,
    add_generators,
    calibrate_hot_path,
    cpu_plan,
    cpu_seconds,
    fmt_ms,
    gateway_load,
    harness_loads,
    per_hot_path,
    percentile,
    print_cpu,
)
from _verdict import (
    REST_DIRECT_P99_MAX_MS,
    REST_HARNESS_WAIT_PER_SCHEDULING_MAX_US,
    RunLoad,
    Verdict,
    judge,
)
from profile_summary import print_summary, summarise

WAV_BYTES = 100 * 1024
WARMUP_S = 1.0
PARAMS = "?language=en-US&format=simple"
HEADERS = {
    "Ocp-Apim-Subscription-Key": CLIENT_KEY,
    "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
}


def wav_body() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(WAV_BYTES - 44))  # 44: the RIFF header wave writes
    return buffer.getvalue()


@dataclass(slots=True)
class Samples:
    latency_ms: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    ok: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Samples) -> None:
        self.latency_ms += other.latency_ms
        self.late_ms += other.late_ms
        self.ok += other.ok
        self.errors += other.errors


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, samples: Samples) -> float:
    started = time.monotonic()
    try:
        async with http.post(url, data=body, headers=HEADERS) as answer:
            await answer.read()
            if answer.status != 200:
                samples.errors.append(f"HTTP {answer.status}")
                return started
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        samples.errors.append(f"{type(exc).__name__}: {exc}")
        return started
    samples.ok += 1
    return started


async def _open_loop(
    schedule: list[tuple[float, str, str]], window: tuple[float, float]
) -> tuple[dict[str, Samples], WorkerCpu]:
    body = wav_body()
    results = {name: Samples() for _, name, _ in schedule}
    cpu = WorkerCpu()
    loop = asyncio.get_running_loop()
    for moment in window:
        loop.call_later(max(0.0, moment - time.monotonic()), cpu.mark)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(due: float, name: str, url: str) -> None:
            samples = results[name]
            started = await _post(http, url, body, samples)
            if window[0] <= started <= window[1]:
                samples.latency_ms.append((time.monotonic() - started) * 1000)
                samples.late_ms.append((started - due) * 1000)

        async with asyncio.TaskGroup() as group:
            for due, name, url in schedule:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(one(due, name, url))
    # The schedule may end just before the window does: let the closing mark fire.
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()) + 0.01)
    return results, cpu


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def open_loop_worker(
    schedule: list[tuple[float, str, str]], window: tuple[float, float]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    _use_uvloop()
    results, cpu = asyncio.run(_open_loop(schedule, window))
    return {k: asdict(v) for k, v in results.items()}, asdict(cpu)


async def _closed_loop(url: str, clients: int, start_at: float, until: float) -> int:
    body = wav_body()
    samples = Samples()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))

        async def client() -> None:
            while time.monotonic() < until:
                await _post(http, url, body, samples)

        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(client())
    return samples.ok


def closed_loop_worker(url: str, clients: int, start_at: float, until: float) -> int:
    _use_uvloop()
    return asyncio.run(_closed_loop(url, clients, start_at, until))


def open_loop(
    services: Services,
    rate: float,
    seconds: float,
    workers: int,
    hot_path: dict[str, Any],
    profile: Path | None = None,
    native: bool = False,
) -> dict[str, Any]:
    """`rate` requests/s to every target, interleaved, from `workers` load-generator
    processes (each every `workers`-th request of the common schedule)."""
    targets = services.targets
    start_at = time.monotonic() + 2.0
    window = (start_at + WARMUP_S, start_at + seconds)
    count = int(rate * seconds)
    # Targets take turns within each slot, so each sees the same moments of machine noise.
    schedule = [
        (start_at + (k + j / len(targets)) / rate, t.name, t.http_url + USP_PATH + PARAMS)
        for k in range(count)
        for j, t in enumerate(targets)
    ]
    pid = services.gateway_pid
    meter = CpuMeter(services.pids)
    spy: PySpy | None = None
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending = pool.starmap_async(
            open_loop_worker, [(schedule[w::workers], window) for w in range(workers)]
        )
        time.sleep(max(0.0, window[0] - time.monotonic()))
        meter.start()
        if profile is not None:
            spy = PySpy(pid, profile, window[1] - window[0] - 0.5, native=native)
        time.sleep(max(0.0, window[1] - time.monotonic()))
        usage = meter.stop()
        parts = pending.get(timeout=seconds + 120)
    wall = usage["machine"]["wall_s"]
    cpu = usage["gateway"]["user_s"] + usage["gateway"]["sys_s"]
    merged = {t.name: Samples() for t in targets}
    for part, _cpu in parts:
        for name, data in part.items():
            merged[name].merge(Samples(**data))
    add_generators(usage, [WorkerCpu(**worker_cpu) for _part, worker_cpu in parts])
    rows: dict[str, dict[str, Any]] = {}
    for name, got in merged.items():
        row: dict[str, Any] = {
            "ok": got.ok,
            "errors": len(got.errors),
            "first_error": got.errors[0] if got.errors else None,
            "samples": len(got.latency_ms),
            "loadgen_late_p99_ms": percentile(got.late_ms, 99),
        }
        for q in (50, 99):
            row[f"p{q}_ms"] = percentile(got.latency_ms, q)
            if name != "direct":
                row[f"added_p{q}_ms"] = row[f"p{q}_ms"] - percentile(merged["direct"].latency_ms, q)
        rows[name] = row
    gateway_requests = rate * wall  # requests started in the window, by the schedule
    # The emulator answers every target's requests; nginx only its own.
    emulator = usage["emulator"]["user_s"] + usage["emulator"]["sys_s"]
    result: dict[str, Any] = {
        "rate_per_target": rate,
        "generators": workers,
        "seconds": seconds,
        "window_s": wall,
        "pinning": services.pinning,
        "gateway_cpu_share": cpu / wall,
        "gateway_cpu_us_per_request": 1e6 * cpu / gateway_requests,
        "gateway_user_us_per_request": 1e6 * usage["gateway"]["user_s"] / gateway_requests,
        "emulator_cpu_us_per_request": 1e6 * emulator / (gateway_requests * len(targets)),
        "cpu": usage,
        "targets": rows,
    }
    if "nginx" in usage:
        nginx = usage["nginx"]["user_s"] + usage["nginx"]["sys_s"]
        result["nginx_cpu_us_per_request"] = 1e6 * nginx / gateway_requests
    verdict = judge(
        RunLoad(
            direct_p99_ms=rows["direct"]["p99_ms"],
            direct_p99_max_ms=REST_DIRECT_P99_MAX_MS,
            late_p99_ms=max(row["loadgen_late_p99_ms"] for row in rows.values()),
            harness=harness_loads(usage),
            gateway=gateway_load(usage),
            harness_cpus=len(services.cpus[1]) if services.cpus is not None else None,
            machine_busy=usage["machine"]["busy_share"],
            reference_errors={n: row["errors"] for n, row in rows.items() if n != "gateway"},
            harness_wait_max_us=REST_HARNESS_WAIT_PER_SCHEDULING_MAX_US,
        )
    )
    result["verdict"] = verdict.to_json()
    for row in rows.values():
        row["verdict"] = verdict.status
    gateway = rows["gateway"]
    result["hot_path_us"] = hot_path["us"]
    result["x_hot_path"] = {
        "gateway_cpu_per_request": per_hot_path(result["gateway_cpu_us_per_request"], hot_path),
        "added_p50": per_hot_path(1000 * gateway["added_p50_ms"], hot_path),
        "added_p99": per_hot_path(1000 * gateway["added_p99_ms"], hot_path),
    }
    if spy is not None:
        failed = spy.wait()
        result["profile"] = str(profile) if failed is None else failed
    return result


def closed_loop(
    services: Services, concurrency: int, seconds: float, workers: int
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for target in services.targets:
            url = target.http_url + USP_PATH + PARAMS
            start_at = time.monotonic() + 1.0
            until = start_at + seconds
            shares = [concurrency // workers + (w < concurrency % workers) for w in range(workers)]
            pending = pool.starmap_async(
                closed_loop_worker, [(url, n, start_at, until) for n in shares if n]
            )
            time.sleep(max(0.0, start_at - time.monotonic()))
            cpu_before = cpu_seconds(services.gateway_pid)
            done = sum(pending.get(timeout=seconds + 120))
            cpu = cpu_seconds(services.gateway_pid) - cpu_before
            rows[target.name] = {"requests_per_s": done / seconds}
            if target.name == "gateway" and done:
                rows[target.name]["gateway_cpu_us_per_request"] = 1e6 * cpu / done
    return {"concurrency": concurrency, "seconds": seconds, "targets": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200, help="requests/s per target")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    parser.add_argument("--saturate-seconds", type=float, default=5.0, help="0 skips it")
    parser.add_argument(
        "--generators",
        "--workers",
        dest="generators",
        type=int,
        default=2,
        help="load-generator processes, each with its share of the schedule "
        "(with --pin they share the CPUs the gateway does not have)",
    )
    parser.add_argument("--nginx", action="store_true", help="also through nginx")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="give the gateway a CPU of its own, everything else the other CPUs",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the gateway over the open-loop window into this collapsed-stack file",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="with --profile: py-spy --native (pauses the gateway per sample; sees C code)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.seconds < 2 * WARMUP_S:
        parser.error("--seconds must be at least 2")
    if args.generators < 1:
        parser.error("--generators must be at least 1")
    report: dict[str, Any] = {"command": sys.argv}
    plan = cpu_plan(args.pin)
    hot_path = calibrate_hot_path(plan[0] if plan is not None else None)
    report["hot_path"] = hot_path
    print(
        f"hot path on this machine: {hot_path['us']:.2f} us per audio frame "
        f"({hot_path['figure']!r} of bench/hot_path.py, {hot_path['seconds']:.1f} s)"
    )
    with Services(nginx=args.nginx, pin=args.pin) as services:
        for note in services.notes:
            print(note)
        report["notes"] = services.notes
        report["pinning"] = services.pinning
        result = open_loop(
            services,
            args.rate,
            args.seconds,
            args.generators,
            hot_path,
            args.profile,
            args.native,
        )
        report["open_loop"] = result
        print(
            f"\nopen loop: {args.rate:g} requests/s per target of {WAV_BYTES // 1024} KB WAV, "
            f"{args.seconds:g} s (window {result['window_s']:.1f} s)"
        )
        print(
            f"{'target':<8} {'p50':>7} {'p99':>7} {'+p50':>7} {'+p99':>7} {'n':>6} "
            f"{'late99':>7} {'err':>4}"
        )
        for name, row in result["targets"].items():
            print(
                f"{name:<8} {fmt_ms(row['p50_ms']):>7} {fmt_ms(row['p99_ms']):>7} "
                f"{fmt_ms(row.get('added_p50_ms', math.nan)):>7} "
                f"{fmt_ms(row.get('added_p99_ms', math.nan)):>7} {row['samples']:>6} "
                f"{fmt_ms(row['loadgen_late_p99_ms']):>7} {row['errors']:>4}"
            )
            if row["first_error"]:
                print(f"         first error: {row['first_error']}")
        print(
            f"gateway CPU: {100 * result['gateway_cpu_share']:.1f} % of a core, "
            f"{result['gateway_cpu_us_per_request']:.0f} us per request "
            f"({result['gateway_user_us_per_request']:.0f} us user); emulator "
            f"{result['emulator_cpu_us_per_request']:.0f} us per request"
        )
        print_cpu(result["cpu"])
        ratios = result["x_hot_path"]
        print(
            f"as multiples of this machine's hot path ({hot_path['us']:.2f} us): gateway CPU "
            f"per request {ratios['gateway_cpu_per_request']:.0f}x, added p50 / p99 "
            f"{ratios['added_p50']:.0f}x / {ratios['added_p99']:.0f}x"
        )
        verdict = Verdict(result["verdict"]["status"], tuple(result["verdict"]["reasons"]))
        print(f"verdict: {verdict.describe()}")
        if "profile" in result:
            if args.profile is not None and result["profile"] == str(args.profile):
                summary = summarise(args.profile)
                result["profile_summary"] = summary
                per_request = result["gateway_cpu_us_per_request"]
                user = result["gateway_user_us_per_request"]
                print_summary(summary, per_request, "request", user, per_request - user)
            else:
                print(f"profile: {result['profile']}")
        if args.saturate_seconds:
            saturated = closed_loop(
                services, args.concurrency, args.saturate_seconds, args.generators
            )
            report["closed_loop"] = saturated
            print(f"\nclosed loop: {args.concurrency} clients, {args.saturate_seconds:g} s each")
            for name, row in saturated["targets"].items():
                extra = row.get("gateway_cpu_us_per_request")
                cpu = f"  (gateway CPU {extra:.0f} us/request)" if extra else ""
                print(f"{name:<8} {row['requests_per_s']:>8.0f} requests/s{cpu}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
