"""Benchmark: what the gateway adds to live USP streams, against direct and nginx in one run.

Every stream is one Speech-SDK-like continuous-recognition session (protocol.md §2.2):
`speech.config`, `speech.context`, a RIFF header, then 3,200-byte PCM frames every 100 ms
for `--seconds`, an empty audio message, and reads until `turn.end`. `--streams` N go
through the gateway, `--reference-streams` M (default N) to the emulator directly and, with
--nginx, through nginx; all interleaved in the same load-generator processes and the same
time window, so machine noise hits all alike. A smaller reference sample keeps 1,000+
gateway streams possible on a small machine without losing the baseline that "added" needs.

The instant emulator cuts the audio into utterances of `--utterance-ms` and sends a
`speech.hypothesis` when an utterance's half-way frame arrives and a `speech.phrase` when
its last frame arrives. Offset+Duration of each result names the frame that triggered it:
  frame latency  = that half-way frame's send → its speech.hypothesis arriving
  final latency  = the utterance's last frame's send → its speech.phrase arriving
"Added" is the gateway's (or nginx's) percentile minus the direct percentile.

A run first times bench/hot_path.py for ~2 s (the machine's figure, printed and in the JSON,
with the key results as multiples of it) and ends with a verdict from bench/_verdict.py:
valid, or void with the reasons when the harness or the machine, not the gateway, was the
bottleneck. `--generators` N load-generator processes each drive every N-th stream.

    python bench/usp_streams.py --streams 100 --seconds 20 [--nginx] [--json out.json]
    python bench/usp_streams.py --streams 1000 --reference-streams 100 --pin --nginx
    python bench/usp_streams.py --sweep --steps 200,400,700,1000 --reference-streams 100 --pin \
        --generators 3
    python bench/usp_streams.py --streams 0 --idle-sessions 10000   # RSS only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import queue
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    USP_PATH,
    CpuMeter,
    GatewayVariant,
    PySpy,
    Services,
    WorkerCpu,
    add_generators,
    calibrate_hot_path,
    cpu_plan,
    cpu_seconds,
    descendants,
    fmt_ms,
    gateway_load,
    harness_load,
    harness_loads,
    per_hot_path,
    percentile,
    print_cpu,
    quiet_gc,
    rss_kib,
)
from _verdict import (
    ADDED_P99_LIMIT_MS,
    USP_DIRECT_P99_MAX_MS,
    Load,
    Outcome,
    RunLoad,
    Verdict,
    gateway_misses,
    judge,
    largest_holding,
    step_outcome,
)
from _wsclient import BINARY, TEXT, WsClient, encode_frame
from analysis_scale import ROOT
from analysis_scale import store as synthetic_store
from profile_summary import print_summary
from profile_summary import summarise as summarise_profile

from gateway.protocol.usp import decode_text, encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header

FRAME_BYTES = 3200
FRAME_S = 0.1
TICKS_PER_MS = 10_000
# A sweep stops after this many void steps in a row: the harness or the machine, not the
# gateway, has reached its limit, and larger steps only load the harness more.
VOID_STEPS_TO_STOP = 2
# Per load-generator process: aiohttp's accept backlog is 128 by default, and an overflow
# resets the odd connection (real clients retry; so does the harness, CONNECT_TRIES times).
CONNECTS_AT_ONCE = 32
CONNECT_TRIES = 3
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
    started: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Samples) -> None:
        self.frame_ms += other.frame_ms
        self.final_ms += other.final_ms
        self.late_ms += other.late_ms
        self.frames_in_window += other.frames_in_window
        self.started += other.started
        self.completed += other.completed
        self.errors += other.errors


# -- load generator (runs in worker processes) ---------------------------------------------


async def _connect(url: str, headers: dict[str, str], on_message: Any = None) -> WsClient:
    parts = urlsplit(url + USP_PATH + QUERY)
    assert parts.hostname is not None
    assert parts.port is not None
    target = parts.path + "?" + parts.query
    for attempt in range(CONNECT_TRIES):
        try:
            return await WsClient.connect(
                parts.hostname, parts.port, target, headers, ("USP",), on_message=on_message
            )
        except (ConnectionResetError, ConnectionRefusedError):
            if attempt == CONNECT_TRIES - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class _Stream:
    """One stream: its frames go out from timer callbacks, its results come in as callbacks.

    No task wakes up per frame: each send is one `transport.write` of the stream's audio
    frame, encoded and masked once, then the next send is scheduled.
    """

    def __init__(
        self, plan: Plan, start_at: float, seconds: float, window: tuple[float, float]
    ) -> None:
        self.plan = plan
        self._start_at = start_at
        self._frames = round(seconds / FRAME_S)
        self._window = window
        self._sent_at = [math.nan] * self._frames
        self._request_id = new_request_id()
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._client: WsClient | None = None
        self._first = 0.0
        self._audio = b""
        self._next = 0
        self._samples = Samples()

    async def connect(self, samples: Samples) -> None:
        self._samples = samples
        headers = {"Ocp-Apim-Subscription-Key": CLIENT_KEY, "X-ConnectionId": uuid.uuid4().hex}
        self._client = await _connect(self.plan.url, headers, self._on_message)
        client = self._client
        client.send_text(encode_text("speech.config", None, CONFIG))
        client.send_text(encode_text("speech.context", self._request_id, CONTEXT))
        wav = [("Content-Type", "audio/x-wav")]
        riff = encode_binary("audio", self._request_id, wave_header(), extra_headers=wav)
        client.send_binary(riff)
        audio = encode_binary("audio", self._request_id, PCM_FRAME)
        self._audio = encode_frame(BINARY, audio, os.urandom(4))

    async def run(self) -> None:
        client = self._client
        assert client is not None
        samples = self._samples
        samples.started += 1
        self._first = max(self._start_at + self.plan.phase_s, time.monotonic())
        self._schedule()
        closed = client.closed
        try:
            remaining = self._first + self._frames * FRAME_S - time.monotonic()
            async with asyncio.timeout(remaining + 30):
                waiters: list[asyncio.Future[Any]] = [self._done, closed]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if not self._done.done():
                raise ConnectionError(f"closed before turn.end ({closed.result()})")
            self._done.result()
        finally:
            if not self._done.done():
                self._done.cancel()
            client.close()
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(closed)
            except TimeoutError:
                client.abort()
        samples.completed += 1

    def _schedule(self) -> None:
        due = self._first + self._next * FRAME_S
        self._loop.call_later(max(0.0, due - time.monotonic()), self._send)

    def _send(self) -> None:
        if self._done.done():
            return
        client = self._client
        assert client is not None
        index = self._next
        now = time.monotonic()
        self._sent_at[index] = now
        if self._window[0] <= now <= self._window[1]:
            # uvloop's timers have 1 ms resolution and may fire up to 1 ms early: no "late"
            self._samples.late_ms.append(max(0.0, now - self._first - index * FRAME_S) * 1000)
            self._samples.frames_in_window += 1
        try:
            client.write(self._audio)
            self._next += 1
            if self._next < self._frames:
                self._schedule()
            else:
                client.send_binary(encode_binary("audio", self._request_id, b""))
        except Exception as exc:  # the connection broke: the stream has failed
            self._fail(exc)

    def _on_message(self, opcode: int, payload: bytes) -> None:
        if opcode != TEXT or self._done.done():
            return
        now = time.monotonic()
        try:
            decoded = decode_text(payload.decode("utf-8"))
            if decoded.path == "turn.end":
                if self._next < self._frames:
                    raise ConnectionError("turn.end before the end of the audio")
                self._done.set_result(None)
                return
            if decoded.path not in ("speech.hypothesis", "speech.phrase"):
                return
            body = json.loads(decoded.body)
            status = body.get("RecognitionStatus", "Success")
            if status == "EndOfDictation":
                return  # an acknowledgement, triggered by no particular frame
            if status != "Success":  # e.g. the gateway could not reach the backend
                raise ConnectionError(f"speech.phrase with RecognitionStatus {status}")
            end_ms = (body["Offset"] + body["Duration"]) / TICKS_PER_MS
            sent = self._sent_at[math.ceil(end_ms / (FRAME_S * 1000)) - 1]
            if self._window[0] <= sent <= self._window[1]:
                hypothesis = decoded.path == "speech.hypothesis"
                into = self._samples.frame_ms if hypothesis else self._samples.final_ms
                into.append((now - sent) * 1000)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)


async def _run_streams(
    plans: Sequence[Plan], start_at: float, seconds: float, window: tuple[float, float]
) -> tuple[dict[str, Samples], WorkerCpu]:
    results = {plan.target: Samples() for plan in plans}
    cpu = WorkerCpu()
    loop = asyncio.get_running_loop()
    for moment in window:
        loop.call_later(max(0.0, moment - time.monotonic()), cpu.mark)
    loop.call_later(max(0.0, start_at - time.monotonic()), quiet_gc)  # connected by then
    connecting = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def guarded(plan: Plan) -> None:
        samples = results[plan.target]
        stream = _Stream(plan, start_at, seconds, window)
        try:
            async with connecting:
                await stream.connect(samples)
            await stream.run()
        except Exception as exc:  # one failed stream is a result, not the end of the run
            samples.errors.append(f"{type(exc).__name__}: {exc}")

    async with asyncio.TaskGroup() as group:
        for plan in plans:
            group.create_task(guarded(plan))
    return results, cpu


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def worker(
    plans: list[Plan], start_at: float, seconds: float, window: tuple[float, float]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    _use_uvloop()
    results, cpu = asyncio.run(_run_streams(plans, start_at, seconds, window))
    return {name: asdict(samples) for name, samples in results.items()}, asdict(cpu)


async def _hold_idle(
    url: str, count: int, ready: Queue[tuple[int, str | None]], release: EventType
) -> None:
    """Open `count` sessions that send config and context but no audio, hold until released.

    A session counts once its `turn.start` arrived: then the gateway holds both legs. Up to
    CONNECTS_AT_ONCE sessions are set up at a time.
    """
    clients: list[WsClient] = []
    heard = [0] * count  # messages each session received
    errors: list[str] = []
    connecting = asyncio.Semaphore(CONNECTS_AT_ONCE)
    loop = asyncio.get_running_loop()

    async def one(index: int) -> None:
        first: asyncio.Future[None] = loop.create_future()

        def on_message(opcode: int, _payload: bytes) -> None:
            heard[index] += 1
            if not first.done():
                first.set_result(None)

        try:
            async with connecting:
                client = await _connect(url, {"Ocp-Apim-Subscription-Key": CLIENT_KEY}, on_message)
                clients.append(client)
                client.send_text(encode_text("speech.config", None, CONFIG))
                client.send_text(encode_text("speech.context", new_request_id(), CONTEXT))
                async with asyncio.timeout(30):
                    await first
        except (OSError, TimeoutError) as exc:
            errors.append(f"session {index}: {type(exc).__name__}: {exc}")

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
        # A gateway that could not reach the backend follows its turn.start with an error
        # phrase at once; a healthy idle session says nothing more.
        await asyncio.sleep(0.5)
        chatty = sum(1 for n in heard if n > 1)
        if chatty:
            errors.append(f"{chatty} idle sessions got more than turn.start")
        ready.put((count - len(errors), errors[0] if errors else None))
        # Blocking the loop is fine: idle sessions have nothing to send or answer.
        release.wait(timeout=600)
    finally:
        for client in clients:
            client.abort()


def idle_worker(
    url: str, count: int, ready: Queue[tuple[int, str | None]], release: EventType
) -> None:
    _use_uvloop()
    asyncio.run(_hold_idle(url, count, ready, release))


# -- the dashboard and capture variants ------------------------------------------------------


class DashboardPoller:
    """What an open dashboard does to a gateway, from a thread of the harness: GET the
    analysis of experiment `scale` (with the variant's admin token), wait for the answer,
    then `every` seconds, and again. The gateway computes the report in its analysis worker
    process; with `cpus` (the harness's CPUs under --pin) the worker, every thread of it, is
    moved there as soon as it appears, as the kernel would give a process of its own another
    core on a host where the relay has one (it would otherwise inherit the relay's pinned CPU).

    The worst case: each request names its own `until` (far in the future: the same records),
    so no answer comes from the gateway's report cache (which keeps a report for 4 times as
    long as it took, so that a real dashboard on a large experiment keeps the worker busy a
    fifth of the time at most): the worker computes throughout the window.
    """

    def __init__(
        self, http_url: str, gateway_pid: int, every: float, cpus: set[int] | None
    ) -> None:
        self._url = f"{http_url}/admin/experiments/scale/analysis"
        self._gateway_pid = gateway_pid
        self._every = every
        self._cpus = cpus
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, name="dashboard-poll", daemon=True),
            threading.Thread(target=self._place, name="dashboard-place", daemon=True),
        ]
        self.requests = 0
        self.answers: list[tuple[float, int, float]] = []  # (monotonic, status, seconds)
        self.worker_pids: set[int] = set()
        self._marks: list[float] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Close the dashboard, and wait for the report under way (up to ten minutes): the
        worker computes it to the end whoever waits, and the next window must be quiet."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=600)

    def mark(self) -> None:
        """Call at the window's start and end: the analysis processes' CPU in between."""
        self._marks.append(self._worker_cpu())

    def summary(self, window: tuple[float, float]) -> dict[str, Any]:
        wall = window[1] - window[0]
        cpu = self._marks[1] - self._marks[0] if len(self._marks) == 2 else math.nan
        inside = [a for a in self.answers if window[0] <= a[0] <= window[1]]
        return {
            "poll_every_s": self._every,
            "requests": self.requests,
            "answers": len(self.answers),
            "answers_in_window": len(inside),
            "statuses": sorted({status for _, status, _ in self.answers}),
            "answer_seconds": [round(seconds, 2) for _, _, seconds in self.answers],
            "worker_pids": sorted(self.worker_pids),
            "worker_cpu_s_in_window": cpu,
            "worker_core_share": cpu / wall if wall > 0 else math.nan,
            "worker_cpus": sorted(self._cpus) if self._cpus is not None else None,
        }

    def _worker_cpu(self) -> float:
        total = 0.0
        for pid in descendants(self._gateway_pid):
            try:
                total += cpu_seconds(pid)
            except OSError:
                continue  # ended meanwhile
        return total

    def _poll(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        while not self._stop.is_set():
            self.requests += 1
            started = time.monotonic()
            # A report of its own (class doc): the microsecond of the day names it.
            url = f"{self._url}?until={_until(time.time_ns())}"
            # The URL is the gateway's loopback http:// address, built by the harness.
            request = urllib.request.Request(url, headers=headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=600) as answer:  # noqa: S310
                    answer.read()
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0  # the gateway is gone (the run is ending)
            now = time.monotonic()
            self.answers.append((now, status, now - started))
            self._stop.wait(self._every)

    def _place(self) -> None:
        moved: set[int] = set()
        while not self._stop.is_set():
            for pid in descendants(self._gateway_pid):
                self.worker_pids.add(pid)
                if self._cpus is None:
                    continue
                # Affinity is per thread: each one, also those started after the last look.
                with contextlib.suppress(OSError):  # it ended meanwhile
                    for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                        if tid not in moved:
                            os.sched_setaffinity(tid, self._cpus)
                            moved.add(tid)
            self._stop.wait(0.2)


def _until(now_ns: int) -> str:
    """A moment far in the future (no record is that late), distinct per microsecond of the
    day: a cache key of its own for each report."""
    micro = now_ns // 1000 % 86_400_000_000
    seconds, fraction = divmod(micro, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    return f"2999-01-01T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{fraction:06d}Z"


def capture_counts(http_url: str) -> dict[str, float]:
    """The captures a gateway stored and dropped so far (its /metrics, summed over labels)."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode("utf-8")
    counts = {"stored": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        for name in counts:
            if line.startswith(f"speech_gateway_captures_{name}_total{{"):
                counts[name] += float(line.rsplit(" ", 1)[1])
    return counts


# -- orchestration -------------------------------------------------------------------------


def summarise(samples: dict[str, Samples], counts: dict[str, int]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    direct = samples["direct"]
    for name, got in samples.items():
        row: dict[str, Any] = {
            "streams": counts[name],
            "streams_completed": got.completed,
            "errors": len(got.errors),
            "first_error": got.errors[0] if got.errors else None,
            "frame_samples": len(got.frame_ms),
            "final_samples": len(got.final_ms),
            "frames_in_window": got.frames_in_window,
            "loadgen_late_p99_ms": percentile(got.late_ms, 99),
        }
        for metric in ("frame_ms", "final_ms"):
            values = getattr(got, metric)
            base = getattr(direct, metric)
            for q in (90, 99.9, 100):  # the tail's shape (JSON only)
                row[f"{metric[:-3]}_p{q:g}_ms".replace(".", "_")] = percentile(values, q)
            for q in (50, 99):
                row[f"{metric[:-3]}_p{q}_ms"] = percentile(values, q)
                if name != "direct":
                    added = percentile(values, q) - percentile(base, q)
                    row[f"{metric[:-3]}_added_p{q}_ms"] = added
        table[name] = row
    return table


def run_load(
    services: Services,
    streams: int,
    reference: int,
    seconds: float,
    utterance_s: float,
    workers: int,
    hot_path: dict[str, Any],
    profile: Path | None = None,
    native_profile: bool = False,
    poll_every: float | None = None,
    worker_on_gateway_cpu: bool = False,
    loaded: str = "gateway",
) -> dict[str, Any]:
    """`streams` through the `loaded` target (the gateway unless told) and `reference` to
    each other target, in one window, from `workers` load-generator processes (each its
    share of every target's streams). With another target loaded the gateway idles: its
    streams would only take CPU from the harness it then shares a core with.
    `poll_every`: a dashboard is open on the gateway, polling its analysis."""
    rng = random.Random(streams)
    counts = {
        t.name: streams if t.name == loaded else 0 if t.name == "gateway" else reference
        for t in services.targets
    }
    # Streams start spread over one utterance, as independent clients would: started
    # together, all their results would fall due in the same 100 ms and measure the burst.
    plans = [
        Plan(target.name, target.ws_url, rng.uniform(0, utterance_s))
        for target in services.targets
        for _ in range(counts[target.name])
    ]
    rng.shuffle(plans)  # every worker gets its share of every target
    total = len(plans)
    start_at = time.monotonic() + 2.0 + 0.003 * total / workers  # spawn + connect budget
    # Every stream is sending audio throughout the window.
    window = (start_at + utterance_s, start_at + seconds)
    pid = services.gateway_pid
    meter = CpuMeter(services.pids)
    spy: PySpy | None = None
    poller = None
    if poll_every is not None:  # open from before the window: the worker is busy in it
        http_url = next(t.http_url for t in services.targets if t.name == "gateway")
        others = services.cpus[1] if services.cpus is not None else None
        poller = DashboardPoller(
            http_url, pid, poll_every, None if worker_on_gateway_cpu else others
        )
        poller.start()
    try:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pending = pool.starmap_async(
                worker, [(plans[w::workers], start_at, seconds, window) for w in range(workers)]
            )
            time.sleep(max(0.0, window[0] - time.monotonic()))
            meter.start()
            if poller is not None:
                poller.mark()
            if profile is not None:
                spy = PySpy(pid, profile, window[1] - window[0] - 0.5, native=native_profile)
            time.sleep(max(0.0, window[1] - time.monotonic()))
            cpu = meter.stop()
            if poller is not None:
                poller.mark()
            rss_loaded = rss_kib(pid)
            parts = pending.get(timeout=seconds + 180)
    finally:
        if poller is not None:
            poller.stop()  # and waits for the report under way: the next window is quiet
    merged = {target.name: Samples() for target in services.targets}
    for part, _cpu in parts:
        for name, data in part.items():
            merged[name].merge(Samples(**data))
    gateway_samples = merged["gateway"]
    failed_log = gateway_samples.errors or gateway_samples.completed < counts["gateway"]
    wall = cpu["machine"]["wall_s"]
    add_generators(cpu, [WorkerCpu(**worker_cpu) for _part, worker_cpu in parts])
    gateway_cpu = cpu["gateway"]["user_s"] + cpu["gateway"]["sys_s"]
    gateway_frames = merged["gateway"].frames_in_window
    all_frames = sum(samples.frames_in_window for samples in merged.values())
    direct_frames = sum(merged[name].frames_in_window for name in ("direct", "gateway"))

    def per_frame(name: str, frames: int) -> float:
        row = cpu.get(name)
        if row is None or not frames:
            return math.nan
        return 1e6 * (row["user_s"] + row["sys_s"]) / frames

    result: dict[str, Any] = {
        "loaded": loaded,
        "streams_per_target": streams,
        "reference_streams": reference,
        "generators": workers,
        "seconds": seconds,
        "window_s": wall,
        "window_monotonic": window,
        "pinning": services.pinning,
        "gateway_cpu_share": gateway_cpu / wall,
        "gateway_cpu_per_stream_pct": 100 * gateway_cpu / wall / max(1, counts["gateway"]),
        "gateway_cpu_us_per_frame": per_frame("gateway", gateway_frames),
        "gateway_user_us_per_frame": 1e6 * cpu["gateway"]["user_s"] / gateway_frames
        if gateway_frames
        else math.nan,
        # The emulator receives every target's frames (nginx's too); nginx only its own.
        "emulator_cpu_us_per_frame": per_frame("emulator", all_frames),
        "nginx_cpu_us_per_frame": per_frame("nginx", merged["nginx"].frames_in_window)
        if "nginx" in merged
        else math.nan,
        "loadgen_cpu_us_per_frame": per_frame("loadgen", all_frames),
        "emulator_frames_per_s": (all_frames or direct_frames) / wall,
        "gateway_rss_loaded_mib": rss_loaded / 1024,
        "cpu": cpu,
        "targets": summarise(merged, counts),
    }
    if failed_log:  # why the gateway's streams failed, before the run's folder goes
        result["gateway_log_tail"] = services.log_tail("gateway")
    attach_verdict(result, harness_cpus(services))
    add_hot_path_ratios(result, hot_path)
    if poller is not None:
        result["dashboard"] = poller.summary(window)
    if spy is not None:
        failed = spy.wait()
        result["profile"] = str(profile) if failed is None else failed
        if failed is None and profile is not None:
            result["profile_summary"] = summarise_profile(profile)
    return result


def nginx_at_load(
    services: Services,
    gateway_run: dict[str, Any],
    args: argparse.Namespace,
    reference: int,
    hot_path: dict[str, Any],
) -> dict[str, Any]:
    """The same load on nginx, on the gateway's core: one more window in which nginx's
    worker and the gateway swap CPUs (nginx alone where the gateway ran, the gateway idle
    among the harness) and nginx carries the gateway's N streams.
    A proxy's CPU per frame falls as its load rises (more frames per wake-up), so a ratio
    against nginx at the reference load would flatter the gateway; this one compares like
    with like."""
    assert services.cpus is not None
    gateway_cpus, harness_cpus = services.cpus
    # The two swap places: nginx alone on the gateway's core, the gateway (every thread of
    # it), idle, among the harness.
    _move(services.pids["nginx"], gateway_cpus)
    _move(services.gateway_pid, harness_cpus)
    try:
        run = run_load(
            services,
            gateway_run["streams_per_target"],
            reference,
            args.seconds,
            args.utterance_ms / 1000,
            args.generators,
            hot_path,
            loaded="nginx",
        )
    finally:
        _move(services.pids["nginx"], harness_cpus)
        _move(services.gateway_pid, gateway_cpus)
    print_result(run)
    gateway_us = gateway_run["gateway_cpu_us_per_frame"]
    nginx_us = run["nginx_cpu_us_per_frame"]
    ratio = gateway_us / nginx_us if nginx_us else math.nan
    both_valid = gateway_run["verdict"]["status"] == run["verdict"]["status"] == "valid"
    print(
        f"at {run['streams_per_target']} streams each, alone on the same core: gateway "
        f"{gateway_us:.0f} us per frame, nginx {nginx_us:.0f} us: {ratio:.2f}x"
        + ("" if both_valid else " (not a result: a window was void)")
    )
    return {"run": run, "gateway_us": gateway_us, "nginx_us": nginx_us, "ratio": ratio}


def _move(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (sched_setaffinity moves one thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def measure_idle_rss(services: Services, sessions: int, workers: int) -> dict[str, Any]:
    """RSS per idle session, on a gateway that has served no load yet.

    Measured first: after a load run, freed memory that the allocator keeps would be
    reused by the idle sessions and hide their cost.
    """
    pid = services.gateway_pid
    # The gateway holds two descriptors per session (client and backend legs); past its
    # RLIMIT_NOFILE the kernel refuses the rest. A sandbox may forbid raising the hard limit.
    fd_bound = (services.fd_limit - 64) // 2
    if sessions > fd_bound:
        print(
            f"note: {sessions} idle sessions need about {2 * sessions + 64} descriptors in the "
            f"gateway, over this machine's RLIMIT_NOFILE of {services.fd_limit}: expect about "
            f"{fd_bound} to open (raise the hard limit, e.g. `ulimit -Hn`, where allowed)"
        )
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
    started = time.monotonic()
    for process in processes:
        process.start()
    try:
        answers: list[tuple[int, str | None]] = []
        deadline = time.monotonic() + 900
        while len(answers) < len(processes):
            try:
                answers.append(ready.get(timeout=1))
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"idle-session workers failed (exit codes {dead})") from None
        opened_in = time.monotonic() - started
        loaded = rss_kib(pid)
        opened = sum(count for count, _ in answers)
        errors = [error for _, error in answers if error]
    finally:
        release.set()
        for process in processes:
            process.join(timeout=60)
    return {
        "idle_sessions": opened,
        "seconds_to_open": opened_in,
        "rss_baseline_mib": baseline / 1024,
        "rss_idle_mib": loaded / 1024,
        "rss_kib_per_idle_session": (loaded - baseline) / opened if opened else math.nan,
        "fd_limit": services.fd_limit,
        "first_error": errors[0] if errors else None,
    }


def harness_cpus(services: Services) -> int | None:
    """CPUs the harness is confined to with --pin (None: it shares all with the gateway)."""
    return len(services.cpus[1]) if services.cpus is not None else None


def _failed(row: dict[str, Any]) -> int:
    """Streams of a target that raised or did not complete."""
    return int(max(row["errors"], row["streams"] - row["streams_completed"]))


def run_load_of(result: dict[str, Any], cpus: int | None) -> RunLoad:
    """The measurements of a `run_load` result that the void rules look at."""
    targets = result["targets"]
    cpu = result["cpu"]
    loaded = result.get("loaded", "gateway")
    harness = harness_loads(cpu)
    proxy = gateway_load(cpu)
    reference_added: dict[str, float] = {}
    if "nginx" in targets and loaded != "nginx":
        reference_added = {
            metric: targets["nginx"][f"{metric}_added_p99_ms"] for metric in ("frame", "final")
        }
    if loaded == "nginx":
        # --nginx-at-load: nginx alone on the gateway's CPU carries the load and is judged
        # as the gateway is (its core its own); the gateway, idle, runs among the harness
        # and is judged as the harness is. No reference proxy.
        nginx = harness.pop("nginx")
        proxy = Load(nginx.core_share, nginx.wait_share)
        harness["gateway"] = harness_load(cpu["gateway"])
    direct = targets["direct"]
    return RunLoad(
        # The target judges frame and final results alike: so does direct's tail (a NaN,
        # not measured, is no evidence either way).
        direct_p99_ms=max(
            (v for v in (direct["frame_p99_ms"], direct["final_p99_ms"]) if not math.isnan(v)),
            default=math.nan,
        ),
        direct_p99_max_ms=USP_DIRECT_P99_MAX_MS,
        late_p99_ms=max(
            (row["loadgen_late_p99_ms"] for row in targets.values() if row["streams"]),
            default=math.nan,
        ),
        harness=harness,
        gateway=proxy,
        harness_cpus=cpus,
        machine_busy=cpu["machine"]["busy_share"],
        reference_errors={name: _failed(row) for name, row in targets.items() if name != loaded},
        reference_added_p99_ms=reference_added,
    )


def attach_verdict(result: dict[str, Any], cpus: int | None) -> Verdict:
    """Judge the run and whether the gateway held the target; into the result and each
    target's row (all targets share the window, so a void run voids every comparison)."""
    verdict = judge(run_load_of(result, cpus))
    loaded = result["targets"][result.get("loaded", "gateway")]  # nginx in --nginx-at-load
    added = {m: loaded[m] for m in ("frame_added_p99_ms", "final_added_p99_ms")}
    miss = gateway_misses(added, _failed(loaded))
    result["verdict"] = verdict.to_json()
    result["gateway_misses_target"] = miss
    result["outcome"] = str(step_outcome(verdict, miss))
    for row in result["targets"].values():
        row["verdict"] = verdict.status
    return verdict


def add_hot_path_ratios(result: dict[str, Any], hot_path: dict[str, Any]) -> None:
    """The key results as multiples of this machine's hot-path figure."""
    gateway = result["targets"]["gateway"]
    result["hot_path_us"] = hot_path["us"]
    result["x_hot_path"] = {
        "gateway_cpu_per_frame": per_hot_path(result["gateway_cpu_us_per_frame"], hot_path),
        **{
            metric: per_hot_path(1000 * gateway[f"{metric}_ms"], hot_path)
            for metric in (
                "frame_added_p50",
                "frame_added_p99",
                "final_added_p50",
                "final_added_p99",
            )
        },
    }


def print_result(result: dict[str, Any]) -> None:
    pinning = result["pinning"]
    pinned = (
        f"gateway on CPU {pinning['gateway']}, the rest on {pinning['others']}"
        if pinning
        else "no CPU pinning"
    )
    print(
        f"\n{result['streams_per_target']} {result.get('loaded', 'gateway')} streams, "
        f"{result['reference_streams']} per other "
        f"reference target, {result['generators']} load generator(s), {result['seconds']:.0f} s "
        f"(measured window {result['window_s']:.1f} s; {pinned})"
    )
    print(
        f"{'target':<8} {'n':>5} {'frame p50':>9} {'p99':>7} {'+p50':>7} {'+p99':>7} "
        f"{'final p50':>9} {'p99':>7} {'+p50':>7} {'+p99':>7} {'samples':>7} {'late99':>7} "
        f"{'err':>4}"
    )
    for name, row in result["targets"].items():
        print(
            f"{name:<8} {row['streams']:>5} {fmt_ms(row['frame_p50_ms']):>9} "
            f"{fmt_ms(row['frame_p99_ms']):>7} "
            f"{fmt_ms(row.get('frame_added_p50_ms', math.nan)):>7} "
            f"{fmt_ms(row.get('frame_added_p99_ms', math.nan)):>7} "
            f"{fmt_ms(row['final_p50_ms']):>9} {fmt_ms(row['final_p99_ms']):>7} "
            f"{fmt_ms(row.get('final_added_p50_ms', math.nan)):>7} "
            f"{fmt_ms(row.get('final_added_p99_ms', math.nan)):>7} "
            f"{row['frame_samples'] + row['final_samples']:>7} "
            f"{fmt_ms(row['loadgen_late_p99_ms']):>7} {row['errors']:>4}"
        )
        if row["first_error"]:
            print(f"         first error: {row['first_error']}")
        tail = result.get("gateway_log_tail") if name == "gateway" else None
        if tail:
            print("         its log ends: " + " | ".join(tail[-5:]))
    print(
        f"gateway CPU: {100 * result['gateway_cpu_share']:.1f} % of a core, "
        f"{result['gateway_cpu_per_stream_pct']:.3f} % per stream, "
        f"{result['gateway_cpu_us_per_frame']:.0f} us per audio frame "
        f"({result['gateway_user_us_per_frame']:.0f} us user; everything the gateway did in "
        f"the window / frames it received); RSS under load "
        f"{result['gateway_rss_loaded_mib']:.0f} MiB"
    )
    print(
        f"per frame elsewhere: emulator {result['emulator_cpu_us_per_frame']:.0f} us, "
        f"load generator {result['loadgen_cpu_us_per_frame']:.0f} us, "
        f"nginx {result['nginx_cpu_us_per_frame']:.0f} us"
    )
    print_cpu(result["cpu"])
    ratios = result["x_hot_path"]
    print(
        f"as multiples of this machine's hot path ({result['hot_path_us']:.2f} us): gateway CPU "
        f"per frame {ratios['gateway_cpu_per_frame']:.1f}x, added frame p50 / p99 "
        f"{ratios['frame_added_p50']:.0f}x / {ratios['frame_added_p99']:.0f}x, added final "
        f"p50 / p99 {ratios['final_added_p50']:.0f}x / {ratios['final_added_p99']:.0f}x"
    )
    dashboard = result.get("dashboard")
    if dashboard is not None:
        print(
            f"dashboard open: {dashboard['requests']} analysis requests, "
            f"{dashboard['answers']} answered {dashboard['statuses']} "
            f"(after {dashboard['answer_seconds']} s); the analysis worker used "
            f"{100 * dashboard['worker_core_share']:.0f} % of a core in the window, on CPUs "
            f"{dashboard['worker_cpus'] or 'those it inherited'}"
        )
    captures = result.get("captures")
    if captures is not None:
        print(
            f"captures in this window's run: {captures['stored']:.0f} stored, "
            f"{captures['dropped']:.0f} dropped"
        )
    verdict = Verdict(result["verdict"]["status"], tuple(result["verdict"]["reasons"]))
    print(f"verdict: {verdict.describe()}")
    if verdict.status == "valid":
        miss = result["gateway_misses_target"]
        print(
            f"target (added p99 <= {ADDED_P99_LIMIT_MS:g} ms): "
            + ("held" if miss is None else f"missed: {miss}")
        )
    summary = result.get("profile_summary")
    if summary is not None:
        per_frame = result["gateway_cpu_us_per_frame"]
        user = result["gateway_user_us_per_frame"]
        print_summary(summary, per_frame, "frame", user, per_frame - user)
    elif "profile" in result:
        print(f"profile: {result['profile']}")


# -- a comparison in one run: alternating windows -------------------------------------------

COMPARED = ("frame_added_p99_ms", "final_added_p99_ms", "gateway_cpu_us_per_frame")


@dataclass(frozen=True, slots=True)
class Window:
    """One load run of a comparison: `mode` off or on, the gateway process it loads, and
    whether a dashboard is open on it."""

    mode: str
    gateway: str
    dashboard: bool = False


def comparison_windows(kind: str, count: int) -> list[Window]:
    """off, on, on, off, off, on, ...: a drift of the machine's load over the run hits both
    modes alike. Capture: the plain gateway (off) and the capturing one (on), each alone on
    the gateway's CPU in its windows. Dashboard: the same gateway, its analysis polled (on) or
    not (off)."""
    if kind == "capture":
        off, on = Window("off", "gateway"), Window("on", "capture")
    else:
        off, on = Window("off", "dashboard"), Window("on", "dashboard", dashboard=True)
    return [(off, on, on, off)[i % 4] for i in range(count)]


def _median(values: Sequence[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    return percentile(finite, 50) if finite else math.nan


def summarise_comparison(kind: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per mode the windows' added p99s and gateway CPU per frame, and their medians over the
    valid windows; the difference on - off of those medians when both modes have one."""
    windows = [
        {
            "index": run["window"]["index"],
            "mode": run["window"]["mode"],
            "verdict": run["verdict"]["status"],
            "machine_busy": run["cpu"]["machine"]["busy_share"],
            "frame_added_p99_ms": run["targets"]["gateway"]["frame_added_p99_ms"],
            "final_added_p99_ms": run["targets"]["gateway"]["final_added_p99_ms"],
            "gateway_cpu_us_per_frame": run["gateway_cpu_us_per_frame"],
        }
        for run in runs
    ]
    modes: dict[str, Any] = {}
    for mode in ("off", "on"):
        valid = [w for w in windows if w["mode"] == mode and w["verdict"] == "valid"]
        modes[mode] = {
            "windows": sum(1 for w in windows if w["mode"] == mode),
            "valid_windows": len(valid),
            **{f"median_{key}": _median([w[key] for w in valid]) for key in COMPARED},
        }
    both = modes["off"]["valid_windows"] and modes["on"]["valid_windows"]
    return {
        "kind": kind,
        "status": "valid" if both else "void",
        "windows": windows,
        "modes": modes,
        "on_minus_off": {
            key: modes["on"][f"median_{key}"] - modes["off"][f"median_{key}"] for key in COMPARED
        }
        if both
        else None,
    }


def print_comparison(summary: dict[str, Any]) -> None:
    what = {"capture": "capture", "dashboard": "dashboard open"}[summary["kind"]]
    print(f"\n{what} off and on, one run ({len(summary['windows'])} alternating windows):")
    print(
        f"{'window':>6} {'mode':<4} {'verdict':<7} {'machine':>7} {'+frame p99':>10} "
        f"{'+final p99':>10} {'CPU/frame':>9}"
    )
    for w in summary["windows"]:
        print(
            f"{w['index'] + 1:>6} {w['mode']:<4} {w['verdict']:<7} "
            f"{100 * w['machine_busy']:>6.0f}% {fmt_ms(w['frame_added_p99_ms']):>10} "
            f"{fmt_ms(w['final_added_p99_ms']):>10} {w['gateway_cpu_us_per_frame']:>7.1f}us"
        )
    for mode in ("off", "on"):
        row = summary["modes"][mode]
        print(
            f"{what} {mode}: {row['valid_windows']} valid of {row['windows']} windows; medians "
            f"of the valid: added p99 frame {fmt_ms(row['median_frame_added_p99_ms'])} ms, "
            f"final {fmt_ms(row['median_final_added_p99_ms'])} ms, gateway CPU per frame "
            f"{row['median_gateway_cpu_us_per_frame']:.1f} us"
        )
    delta = summary["on_minus_off"]
    if delta is None:
        print("on - off: none (void: a mode without a valid window)")
    else:
        print(
            f"on - off: added p99 frame {delta['frame_added_p99_ms']:+.2f} ms, final "
            f"{delta['final_added_p99_ms']:+.2f} ms, gateway CPU per frame "
            f"{delta['gateway_cpu_us_per_frame']:+.1f} us"
        )


def sweep_summary(
    outcomes: list[tuple[int, Outcome]], runs: list[dict[str, Any]], hot_path: dict[str, Any]
) -> dict[str, Any]:
    """The largest N per core that held the target, from the valid steps only. The gateway
    is one single-threaded process (with --pin alone on its core), so N per core is N."""
    answer = largest_holding(outcomes)
    summary: dict[str, Any] = {
        **answer.to_json(),
        "target": f"frame and final added p99 <= {ADDED_P99_LIMIT_MS:g} ms over direct",
        "steps": [{"streams": n, "outcome": str(outcome)} for n, outcome in outcomes],
        "max_streams_per_core": answer.max_streams,
        "hot_path_us": hot_path["us"],
    }
    if answer.max_streams is not None:
        run = next(r for r in runs if r["streams_per_target"] == answer.max_streams)
        summary["gateway_core_share_at_max"] = run["gateway_cpu_share"]
        # N x frames/s x hot path: the share of a core the hot-path figure alone accounts for
        # at the largest N, a capacity that compares across machines.
        summary["hot_path_core_share_at_max"] = answer.max_streams / FRAME_S * hot_path["us"] / 1e6
    return summary


def print_sweep(summary: dict[str, Any]) -> None:
    steps = ", ".join(f"{step['streams']} {step['outcome']}" for step in summary["steps"])
    print(f"\nsweep ({summary['target']}): {steps}")
    if summary["status"] == "determined":
        print(
            f"largest N per core that holds the target: {summary['max_streams_per_core']} "
            f"(gateway at {100 * summary['gateway_core_share_at_max']:.0f} % of its core; "
            f"{summary['why']}; hot path {summary['hot_path_us']:.2f} us)"
        )
    else:
        print(f"largest N per core that holds the target: undetermined ({summary['why']})")


def compare(
    services: Services,
    kind: str,
    args: argparse.Namespace,
    reference: int,
    hot_path: dict[str, Any],
    report: dict[str, Any],
) -> dict[str, Any]:
    """The windows of a comparison (`comparison_windows`), each a load run of its own with
    its own verdict, into `report["runs"]`; their summary."""
    windows = comparison_windows(kind, args.windows)
    runs = []
    for index, window in enumerate(windows):
        view = services.only(window.gateway)
        http_url = next(t.http_url for t in view.targets if t.name == "gateway")
        counted = kind == "capture" and window.mode == "on"
        before = capture_counts(http_url) if counted else None
        print(f"\nwindow {index + 1} of {len(windows)}: {kind} {window.mode}")
        result = run_load(
            view,
            args.streams,
            reference,
            args.seconds,
            args.utterance_ms / 1000,
            args.generators,
            hot_path,
            profile=_window_profile(args.profile, index, window.mode),
            native_profile=args.native,
            poll_every=args.dashboard_poll_s if window.dashboard else None,
            worker_on_gateway_cpu=args.dashboard_worker == "gateway",
        )
        result["window"] = {"index": index, "mode": window.mode, "gateway": window.gateway}
        if before is not None:
            after = capture_counts(http_url)
            result["captures"] = {key: after[key] - before[key] for key in after}
        report["runs"].append(result)
        runs.append(result)
        print_result(result)
    return summarise_comparison(kind, runs)


def _window_profile(base: Path | None, index: int, mode: str) -> Path | None:
    """A comparison window's profile: one file per window, named by its number and mode."""
    if base is None:
        return None
    return base.with_name(f"{base.stem}-{index + 1}-{mode}{base.suffix}")


def _profile_path(base: Path | None, streams: int, sweep: bool) -> Path | None:
    if base is None or not sweep:
        return base
    return base.with_name(f"{base.stem}-{streams}{base.suffix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--streams", type=int, default=100, help="streams through the gateway (0: no load run)"
    )
    parser.add_argument(
        "--reference-streams",
        type=int,
        help="streams to each reference target, direct and nginx (default: --streams)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream")
    parser.add_argument("--utterance-ms", type=int, default=3000)
    parser.add_argument(
        "--generators",
        "--workers",
        dest="generators",
        type=int,
        default=2,
        help="load-generator processes, each with its share of every target's streams "
        "(with --pin they share the CPUs the gateway does not have)",
    )
    parser.add_argument("--nginx", action="store_true", help="also through nginx")
    parser.add_argument(
        "--backend",
        choices=("emulator", "bare"),
        default="emulator",
        help="what every target fronts: the emulator's instant engine (default), or the same "
        "state machine and engine on a bare protocol (bench/_bare_backend.py), half the "
        "emulator's CPU per frame, so that 1,000 streams fit the harness's core",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="give the gateway a CPU of its own, everything else the other CPUs",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="step N until a valid step's added p99 > 5 ms; report the largest N that held",
    )
    parser.add_argument("--steps", default="50,100,200,400,800", help="N values of --sweep")
    parser.add_argument(
        "--nginx-at-load",
        action="store_true",
        help="with --nginx and --pin: a second window in which nginx, moved onto the "
        "gateway's CPU, carries the --streams N and the gateway the reference streams, so "
        "that the two proxies' CPU per frame compare at the same load on the same core",
    )
    parser.add_argument("--idle-sessions", type=int, default=100, help="0 skips the RSS step")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the gateway over the window into this collapsed-stack file "
        "(with --sweep, one file per step; with --windows, one per window); summarise with "
        "bench/profile_summary.py",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="with --profile: py-spy --native (pauses the gateway per sample; sees C code)",
    )
    parser.add_argument(
        "--capture-share",
        type=float,
        default=0.0,
        help="compare capture off and on in one run: a second gateway captures this share of "
        "sessions into a local audio store, and alternating windows load the plain and the "
        "capturing gateway (docs/capture.md)",
    )
    parser.add_argument(
        "--dashboard-records",
        type=int,
        default=0,
        help="compare a dashboard closed and open in one run: a gateway whose file store "
        "holds this many synthetic records of experiment `scale` (generated once into "
        "--dashboard-stores), its analysis polled (as an open dashboard does) in every other "
        "pair of alternating windows",
    )
    parser.add_argument(
        "--dashboard-stores",
        type=Path,
        default=ROOT / "var" / "bench-analysis",
        help="with --dashboard-records: where generated stores are kept, one folder per size "
        "(shared with bench/analysis_scale.py; default var/bench-analysis)",
    )
    parser.add_argument(
        "--dashboard-poll-s",
        type=float,
        default=2.0,
        help="with --dashboard-records: seconds between an answer and the next request",
    )
    parser.add_argument(
        "--dashboard-worker",
        choices=("others", "gateway"),
        default="others",
        help="with --dashboard-records and --pin: the CPUs the gateway's analysis worker runs "
        "on: the harness's (default; as on a host with a core to spare) or the gateway's own, "
        "which it inherits when left alone",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=4,
        help="with --capture-share or --dashboard-records: load runs, off and on alternating "
        "as off, on, on, off, ... (default 4)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not 0 <= args.capture_share <= 1:
        parser.error("--capture-share must be 0 to 1")
    if args.dashboard_records < 0 or args.dashboard_poll_s <= 0:
        parser.error("--dashboard-records must be >= 0 and --dashboard-poll-s > 0")
    if args.capture_share and args.dashboard_records:
        parser.error("one comparison per run: --capture-share or --dashboard-records")
    kind = "capture" if args.capture_share else "dashboard" if args.dashboard_records else None
    if kind is not None and (args.sweep or not args.streams or args.windows < 2):
        parser.error("a comparison needs --streams N, no --sweep, and --windows >= 2")
    variants: list[GatewayVariant] = []
    if args.capture_share:
        variants.append(GatewayVariant("capture", capture_share=args.capture_share))
    if args.dashboard_records:
        folder = synthetic_store(args.dashboard_stores, args.dashboard_records)
        variants.append(GatewayVariant("dashboard", store=folder))
    if args.seconds < args.utterance_ms / 1000 + 1:
        parser.error("--seconds must exceed one utterance by at least 1 s")
    reference = args.streams if args.reference_streams is None else args.reference_streams
    if args.streams and reference < 1:
        parser.error("the reference targets need at least one stream")
    if args.generators < 1:
        parser.error("--generators must be at least 1")
    if args.nginx_at_load and (not args.nginx or not args.pin or args.sweep or kind is not None):
        parser.error("--nginx-at-load needs --nginx and --pin, and no --sweep or comparison")
    report: dict[str, Any] = {"command": sys.argv, "runs": []}
    plan = cpu_plan(args.pin)
    hot_path = calibrate_hot_path(plan[0] if plan is not None else None)
    report["hot_path"] = hot_path
    print(
        f"hot path on this machine: {hot_path['us']:.2f} us per audio frame "
        f"({hot_path['figure']!r} of bench/hot_path.py, {hot_path['seconds']:.1f} s)"
    )
    services = Services(
        nginx=args.nginx,
        utterance_ms=args.utterance_ms,
        pin=args.pin,
        variants=variants,
        backend=args.backend,
    )
    with services:
        for note in services.notes:
            print(note)
        report["notes"] = services.notes
        report["targets"] = [target.name for target in services.targets]
        report["pinning"] = services.pinning
        if args.idle_sessions:
            idle = measure_idle_rss(services, args.idle_sessions, args.generators)
            report["idle"] = idle
            print(
                f"RSS: {idle['rss_baseline_mib']:.1f} MiB baseline, "
                f"{idle['rss_idle_mib']:.1f} MiB with {idle['idle_sessions']} idle sessions "
                f"= {idle['rss_kib_per_idle_session']:.1f} KiB per session "
                f"(opened in {idle['seconds_to_open']:.1f} s)"
            )
            if idle["first_error"]:
                print(f"  idle sessions stopped at: {idle['first_error']}")
        if kind is not None:
            report["comparison"] = compare(services, kind, args, reference, hot_path, report)
            print_comparison(report["comparison"])
        steps = [int(n) for n in args.steps.split(",")] if args.sweep else [args.streams]
        if kind is not None:
            steps = []
        outcomes: list[tuple[int, Outcome]] = []
        voids_in_a_row = 0
        for streams in steps:
            if not streams:
                continue
            utterance_s = args.utterance_ms / 1000
            step_reference = reference if args.reference_streams is not None else streams
            profile = _profile_path(args.profile, streams, args.sweep)
            result = run_load(
                services,
                streams,
                step_reference,
                args.seconds,
                utterance_s,
                args.generators,
                hot_path,
                profile,
                args.native,
            )
            report["runs"].append(result)
            print_result(result)
            if args.nginx_at_load and "nginx" in services.pids and services.cpus is not None:
                report["nginx_at_load"] = nginx_at_load(
                    services, result, args, step_reference, hot_path
                )
            outcome = Outcome(result["outcome"])
            outcomes.append((streams, outcome))
            if not args.sweep:
                continue
            if outcome is Outcome.FAILS:
                print(f"stop: {result['gateway_misses_target']}")
                break
            voids_in_a_row = voids_in_a_row + 1 if outcome is Outcome.VOID else 0
            if voids_in_a_row >= VOID_STEPS_TO_STOP:
                print(
                    f"stop: {voids_in_a_row} void steps in a row (harness or machine is the limit)"
                )
                break
        if args.sweep:
            report["sweep"] = sweep_summary(outcomes, report["runs"], hot_path)
            print_sweep(report["sweep"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
