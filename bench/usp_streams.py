"""Benchmark: what the gateway adds to live USP streams, against direct and nginx in one run.

Every stream is one Speech-SDK-like continuous-recognition session (protocol.md §2.2):
`speech.config`, `speech.context`, a RIFF header, then 3,200-byte PCM frames every 100 ms
for `--seconds`, an empty audio message, and reads until `turn.end`. N streams go to each
target (the emulator directly, the gateway, and with --nginx nginx), interleaved in the
same load-generator processes and the same time window, so machine noise hits all alike.

The instant emulator cuts the audio into utterances of `--utterance-ms` and sends a
`speech.hypothesis` when an utterance's half-way frame arrives and a `speech.phrase` when
its last frame arrives. Offset+Duration of each result names the frame that triggered it:
  frame latency  = that half-way frame's send → its speech.hypothesis arriving
  final latency  = the utterance's last frame's send → its speech.phrase arriving
"Added" is the gateway's (or nginx's) percentile minus the direct percentile.

    python bench/usp_streams.py --streams 100 --seconds 20 [--nginx] [--json out.json]
    python bench/usp_streams.py --sweep --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    CLIENT_KEY,
    USP_PATH,
    Services,
    cpu_seconds,
    fmt_ms,
    percentile,
    rss_kib,
)

from gateway.protocol.usp import decode_text, encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header

FRAME_BYTES = 3200
FRAME_S = 0.1
TICKS_PER_MS = 10_000
BEHIND_MS = 10.0  # a send later than this (p99) means the load generator is the bottleneck
ADDED_P99_LIMIT_MS = 5.0
QUERY = "?language=en-US&format=simple"
CONFIG = json.dumps({"context": {"system": {"name": "SpeechSDK", "version": "bench"}}})
CONTEXT = json.dumps({"phraseDetection": {"language": "en-US", "mode": "CONVERSATION"}})
PCM_FRAME = bytes(random.Random(7).getrandbits(8) for _ in range(FRAME_BYTES))


@dataclass(frozen=True, slots=True)
class Plan:
    target: str
    url: str
    phase_s: float  # when this stream starts, after the run's common start


@dataclass(slots=True)
class Samples:
    """What one worker measured for one target; merged across workers."""

    frame_ms: list[float] = field(default_factory=list)
    final_ms: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    frames_in_window: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Samples) -> None:
        self.frame_ms += other.frame_ms
        self.final_ms += other.final_ms
        self.late_ms += other.late_ms
        self.frames_in_window += other.frames_in_window
        self.completed += other.completed
        self.errors += other.errors


# -- load generator (runs in worker processes) ---------------------------------------------


async def _stream(
    http: aiohttp.ClientSession,
    plan: Plan,
    start_at: float,
    seconds: float,
    window: tuple[float, float],
    samples: Samples,
) -> None:
    frames = round(seconds / FRAME_S)
    sent_at = [math.nan] * frames
    request_id = new_request_id()
    headers = {"Ocp-Apim-Subscription-Key": CLIENT_KEY, "X-ConnectionId": uuid.uuid4().hex}
    url = plan.url + USP_PATH + QUERY
    async with http.ws_connect(url, headers=headers, protocols=("USP",)) as ws:
        await ws.send_str(encode_text("speech.config", None, CONFIG))
        await ws.send_str(encode_text("speech.context", request_id, CONTEXT))
        riff = encode_binary(
            "audio", request_id, wave_header(), extra_headers=[("Content-Type", "audio/x-wav")]
        )
        await ws.send_bytes(riff)
        audio = encode_binary("audio", request_id, PCM_FRAME)

        async def read() -> None:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                now = time.monotonic()
                decoded = decode_text(message.data)
                if decoded.path == "turn.end":
                    return
                if decoded.path not in ("speech.hypothesis", "speech.phrase"):
                    continue
                body = json.loads(decoded.body)
                status = body.get("RecognitionStatus", "Success")
                if status == "EndOfDictation":
                    continue  # an acknowledgement, triggered by no particular frame
                if status != "Success":  # e.g. the gateway could not reach the backend
                    raise ConnectionError(f"speech.phrase with RecognitionStatus {status}")
                end_ms = (body["Offset"] + body["Duration"]) / TICKS_PER_MS
                index = math.ceil(end_ms / (FRAME_S * 1000)) - 1
                sent = sent_at[index]
                if window[0] <= sent <= window[1]:
                    hypothesis = decoded.path == "speech.hypothesis"
                    into = samples.frame_ms if hypothesis else samples.final_ms
                    into.append((now - sent) * 1000)
            raise ConnectionError(f"closed before turn.end ({ws.close_code})")

        reader = asyncio.create_task(read(), name=f"read-{plan.target}")
        try:
            first = max(start_at + plan.phase_s, time.monotonic())
            for index in range(frames):
                due = first + index * FRAME_S
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if reader.done():  # the session failed or ended early: say why
                    await reader
                    raise ConnectionError("turn.end before the end of the audio")
                now = time.monotonic()
                sent_at[index] = now
                if window[0] <= now <= window[1]:
                    samples.late_ms.append((now - due) * 1000)
                    samples.frames_in_window += 1
                await ws.send_bytes(audio)
            await ws.send_bytes(encode_binary("audio", request_id, b""))
            await asyncio.wait_for(reader, timeout=30)
        finally:
            reader.cancel()
    samples.completed += 1


async def _run_streams(
    plans: Sequence[Plan], start_at: float, seconds: float, window: tuple[float, float]
) -> dict[str, Samples]:
    results = {plan.target: Samples() for plan in plans}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def guarded(plan: Plan) -> None:
            try:
                await _stream(http, plan, start_at, seconds, window, results[plan.target])
            except Exception as exc:  # one failed stream is a result, not the end of the run
                results[plan.target].errors.append(f"{type(exc).__name__}: {exc}")

        async with asyncio.TaskGroup() as group:
            for plan in plans:
                group.create_task(guarded(plan))
    return results


def _use_uvloop() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return
    uvloop.install()


def worker(
    plans: list[Plan], start_at: float, seconds: float, window: tuple[float, float]
) -> dict[str, dict[str, Any]]:
    _use_uvloop()
    results = asyncio.run(_run_streams(plans, start_at, seconds, window))
    return {name: asdict(samples) for name, samples in results.items()}


async def _hold_idle(
    url: str, count: int, ready: Queue[tuple[int, str | None]], release: EventType
) -> None:
    """Open `count` sessions that send config and context but no audio, hold until released.

    A session counts once its `turn.start` arrived: then the gateway holds both legs.
    """
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = []
        error = None
        try:
            for _ in range(count):
                try:
                    ws = await http.ws_connect(
                        url + USP_PATH + QUERY,
                        headers={"Ocp-Apim-Subscription-Key": CLIENT_KEY},
                        protocols=("USP",),
                    )
                    sockets.append(ws)
                    await ws.send_str(encode_text("speech.config", None, CONFIG))
                    await ws.send_str(encode_text("speech.context", new_request_id(), CONTEXT))
                    answer = await ws.receive(timeout=10)
                    if answer.type is not aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"{answer.type.name} instead of turn.start")
                    # A gateway that could not reach the backend follows its turn.start with an
                    # error phrase at once; a healthy idle session says nothing more.
                    with contextlib.suppress(TimeoutError):
                        extra = await ws.receive(timeout=0.05)
                        raise ConnectionError(f"idle session answered: {str(extra.data)[:120]!r}")
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    error = f"session {len(sockets)}: {type(exc).__name__}: {exc}"
                    break
            ready.put((len(sockets) - (error is not None), error))
            # Blocking the loop is fine: idle sessions have nothing to send or answer.
            release.wait(timeout=120)
        finally:
            for ws in sockets:
                await ws.close()


def idle_worker(
    url: str, count: int, ready: Queue[tuple[int, str | None]], release: EventType
) -> None:
    asyncio.run(_hold_idle(url, count, ready, release))


# -- orchestration -------------------------------------------------------------------------


def summarise(samples: dict[str, Samples]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    direct = samples["direct"]
    for name, got in samples.items():
        row: dict[str, Any] = {
            "streams_completed": got.completed,
            "errors": len(got.errors),
            "first_error": got.errors[0] if got.errors else None,
            "frame_samples": len(got.frame_ms),
            "final_samples": len(got.final_ms),
            "loadgen_late_p99_ms": percentile(got.late_ms, 99),
        }
        for metric in ("frame_ms", "final_ms"):
            values = getattr(got, metric)
            base = getattr(direct, metric)
            for q in (50, 99):
                row[f"{metric[:-3]}_p{q}_ms"] = percentile(values, q)
                if name != "direct":
                    added = percentile(values, q) - percentile(base, q)
                    row[f"{metric[:-3]}_added_p{q}_ms"] = added
        table[name] = row
    return table


def run_load(
    services: Services, streams: int, seconds: float, utterance_s: float, workers: int
) -> dict[str, Any]:
    rng = random.Random(streams)
    # Streams start spread over one utterance, as independent clients would: started
    # together, all their results would fall due in the same 100 ms and measure the burst.
    plans = [
        Plan(target.name, target.ws_url, rng.uniform(0, utterance_s))
        for _ in range(streams)
        for target in services.targets
    ]
    total = len(plans)
    start_at = time.monotonic() + 2.0 + 0.004 * total / workers  # spawn + connect budget
    # Every stream is sending audio throughout the window.
    window = (start_at + utterance_s, start_at + seconds)
    pid = services.gateway_pid
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending = pool.starmap_async(
            worker, [(plans[w::workers], start_at, seconds, window) for w in range(workers)]
        )
        time.sleep(max(0.0, window[0] - time.monotonic()))
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        time.sleep(max(0.0, window[1] - time.monotonic()))
        cpu = cpu_seconds(pid) - cpu_before
        wall = time.monotonic() - wall_before
        rss_loaded = rss_kib(pid)
        parts = pending.get(timeout=seconds + 120)
    merged = {target.name: Samples() for target in services.targets}
    for part in parts:
        for name, data in part.items():
            merged[name].merge(Samples(**data))
    gateway_frames = merged["gateway"].frames_in_window
    return {
        "streams_per_target": streams,
        "seconds": seconds,
        "window_s": wall,
        "gateway_cpu_share": cpu / wall,
        "gateway_cpu_per_stream_pct": 100 * cpu / wall / streams,
        "gateway_cpu_us_per_frame": 1e6 * cpu / gateway_frames if gateway_frames else math.nan,
        "gateway_rss_loaded_mib": rss_loaded / 1024,
        "targets": summarise(merged),
    }


def measure_idle_rss(services: Services, sessions: int, workers: int) -> dict[str, Any]:
    """RSS per idle session, on a gateway that has served no load yet.

    Measured first: after a load run, freed memory that the allocator keeps would be
    reused by the idle sessions and hide their cost.
    """
    pid = services.gateway_pid
    baseline = rss_kib(pid)
    gateway = next(t for t in services.targets if t.name == "gateway")
    context = multiprocessing.get_context("spawn")
    ready: Queue[tuple[int, str | None]] = context.Queue()
    release = context.Event()
    shares = [sessions // workers + (w < sessions % workers) for w in range(workers)]
    processes = [
        context.Process(target=idle_worker, args=(gateway.ws_url, n, ready, release))
        for n in shares
        if n
    ]
    for process in processes:
        process.start()
    try:
        answers = [ready.get(timeout=180) for _ in processes]
        loaded = rss_kib(pid)
        opened = sum(count for count, _ in answers)
        errors = [error for _, error in answers if error]
    finally:
        release.set()
        for process in processes:
            process.join(timeout=30)
    return {
        "idle_sessions": opened,
        "rss_baseline_mib": baseline / 1024,
        "rss_idle_mib": loaded / 1024,
        "rss_kib_per_idle_session": (loaded - baseline) / opened if opened else math.nan,
        "first_error": errors[0] if errors else None,
    }


def verdict(result: dict[str, Any]) -> str | None:
    """Why this step is not sustainable, or None."""
    gateway = result["targets"]["gateway"]
    for name, row in result["targets"].items():
        if row["errors"] or row["streams_completed"] != result["streams_per_target"]:
            return f"{row['errors']} {name} streams failed: {row['first_error']}"
    late = max(row["loadgen_late_p99_ms"] for row in result["targets"].values())
    if late > BEHIND_MS:
        return f"load generator behind (send p99 {late:.1f} ms late)"
    for metric in ("frame_added_p99_ms", "final_added_p99_ms"):
        if gateway[metric] > ADDED_P99_LIMIT_MS:
            return f"{metric} {gateway[metric]:.2f} > {ADDED_P99_LIMIT_MS} ms"
    return None


def print_result(result: dict[str, Any]) -> None:
    print(
        f"\n{result['streams_per_target']} streams per target, {result['seconds']:.0f} s "
        f"(measured window {result['window_s']:.1f} s)"
    )
    print(
        f"{'target':<8} {'frame p50':>9} {'p99':>7} {'+p50':>7} {'+p99':>7} "
        f"{'final p50':>9} {'p99':>7} {'+p50':>7} {'+p99':>7} {'n':>6} {'late99':>7} {'err':>4}"
    )
    for name, row in result["targets"].items():
        print(
            f"{name:<8} {fmt_ms(row['frame_p50_ms']):>9} {fmt_ms(row['frame_p99_ms']):>7} "
            f"{fmt_ms(row.get('frame_added_p50_ms', math.nan)):>7} "
            f"{fmt_ms(row.get('frame_added_p99_ms', math.nan)):>7} "
            f"{fmt_ms(row['final_p50_ms']):>9} {fmt_ms(row['final_p99_ms']):>7} "
            f"{fmt_ms(row.get('final_added_p50_ms', math.nan)):>7} "
            f"{fmt_ms(row.get('final_added_p99_ms', math.nan)):>7} "
            f"{row['frame_samples'] + row['final_samples']:>6} "
            f"{fmt_ms(row['loadgen_late_p99_ms']):>7} {row['errors']:>4}"
        )
        if row["first_error"]:
            print(f"         first error: {row['first_error']}")
    print(
        f"gateway CPU: {100 * result['gateway_cpu_share']:.1f} % of a core, "
        f"{result['gateway_cpu_per_stream_pct']:.3f} % per stream, "
        f"{result['gateway_cpu_us_per_frame']:.0f} us per audio frame "
        f"(everything the gateway did in the window / frames it received); "
        f"RSS under load {result['gateway_rss_loaded_mib']:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="streams per target")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream")
    parser.add_argument("--utterance-ms", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--nginx", action="store_true", help="also through nginx")
    parser.add_argument("--sweep", action="store_true", help="step N until added p99 > 5 ms")
    parser.add_argument("--steps", default="50,100,200,400,800", help="N values of --sweep")
    parser.add_argument("--idle-sessions", type=int, default=100, help="0 skips the RSS step")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.seconds < args.utterance_ms / 1000 + 1:
        parser.error("--seconds must exceed one utterance by at least 1 s")
    report: dict[str, Any] = {"command": sys.argv, "runs": []}
    with Services(nginx=args.nginx, utterance_ms=args.utterance_ms) as services:
        for note in services.notes:
            print(note)
        report["notes"] = services.notes
        report["targets"] = [target.name for target in services.targets]
        if args.idle_sessions:
            idle = measure_idle_rss(services, args.idle_sessions, args.workers)
            report["idle"] = idle
            print(
                f"RSS: {idle['rss_baseline_mib']:.1f} MiB baseline, "
                f"{idle['rss_idle_mib']:.1f} MiB with {idle['idle_sessions']} idle sessions "
                f"= {idle['rss_kib_per_idle_session']:.0f} KiB per session"
            )
            if idle["first_error"]:
                print(f"  idle sessions stopped at: {idle['first_error']}")
        steps = [int(n) for n in args.steps.split(",")] if args.sweep else [args.streams]
        sustained = None
        for streams in steps:
            utterance_s = args.utterance_ms / 1000
            result = run_load(services, streams, args.seconds, utterance_s, args.workers)
            result["limited_by"] = verdict(result)
            report["runs"].append(result)
            print_result(result)
            if args.sweep:
                if result["limited_by"] is not None:
                    print(f"stop: {result['limited_by']}")
                    break
                sustained = streams
        if args.sweep:
            report["max_sustained_streams"] = sustained
            print(f"\nlargest N with gateway added p99 <= {ADDED_P99_LIMIT_MS} ms: {sustained}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
