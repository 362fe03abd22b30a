"""Micro-benchmark: the relay's CPU per audio frame with sampled capture off and on, one run.

The relay state machine (`gateway.session.relay.RelaySession`) is fed 3,200-byte audio frames
(100 ms of 16 kHz audio) and, every 30 frames, the primary's result for the 3 seconds just
sent, as a continuous-recognition session gets them. With capture on, the session's
`SessionCapture` buffers the PCM, decides each utterance (a uniform share of 10 %), cuts the
selected ones and hands them to a queue, and releases the rest. The cost per frame includes
that work, amortised. The best of several repeats is kept (a shared machine is noisy).

    python bench/capture_overhead.py [-n FRAMES] [--repeats R] [--json out.json]

It prints microseconds per frame for a session without capture, for a captured session,
and the average at 10 % of sessions captured (the documented target: a few microseconds).

`--store N` also stores N captured 3-s utterances, one after another, through the capture
writer into a local audio store in a temporary folder beside the working directory (the
gateway's own path: the WAV assembled, the sidecar, the store's worker thread and its flush)
and prints the process's CPU per capture (user and system, the worker thread included) and
what that costs per audio frame when every utterance of 10 % of sessions is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from gateway.config.capture import AudioSettings
from gateway.logging import configure_logging
from gateway.outcomes.record import Role
from gateway.protocol.usp import encode_binary, encode_text
from gateway.protocol.wav import PCM_16K_MONO, wave_header
from gateway.server.capture_writer import CaptureWriter
from gateway.server.metrics import GatewayMetrics
from gateway.session.capture import (
    CaptureBudget,
    CapturedResult,
    CapturedUtterance,
    CaptureIdentity,
    CapturePolicy,
    CaptureQuota,
    CaptureReason,
    CaptureSample,
    SessionCapture,
)
from gateway.session.relay import RelaySession
from gateway.session.taps import RoleFacts, SessionFacts
from gateway.stores.audio_store import LocalAudioStore

FRAME_BYTES = 3200
FRAMES_PER_UTTERANCE = 30
REQUEST_ID = "9bed34362cbb4432963cb66e84906729"
SESSION_SHARE = 0.1
FACTS = SessionFacts(
    experiment="bench",
    phase="p",
    client="bench",
    unit="u" * 32,
    unit_source="connection",
    session_id="s" * 32,
    protocol="usp",
    mode="conversation",
    locale="en-us",
    forced=False,
    text_privacy="text",
    privacy_key=b"k" * 32,
)


def phrase(offset_ticks: int, duration_ticks: int) -> str:
    body = {
        "RecognitionStatus": "Success",
        "Offset": offset_ticks,
        "Duration": duration_ticks,
        "DisplayText": "Remind me to buy five pencils.",
        "NBest": [{"Confidence": 0.93, "Display": "Remind me to buy five pencils."}],
    }
    return encode_text("speech.phrase", REQUEST_ID, json.dumps(body))


def run_session(frames: int, captured: bool) -> tuple[float, int]:
    """Seconds of CPU for `frames` frames of one session; the captures it made."""
    emitted: list[CapturedUtterance] = []
    capture = None
    if captured:
        capture = SessionCapture(
            CapturePolicy(share=1.0, utterance_share=0.1, daily_cap=10**9),
            CaptureIdentity("bench", "p", FACTS.unit, "bench", FACTS.session_id),
            (),
            quota=CaptureQuota(),
            budget=CaptureBudget(64 * 1024 * 1024),
            emit=emitted.append,
            drop=lambda _reason: None,
        )
    relay = RelaySession(FACTS, RoleFacts(Role.PRIMARY, "a", "emu"), capture=capture)
    relay.client_text(encode_text("speech.context", REQUEST_ID, "{}"), 0.0)
    relay.client_binary(encode_binary("audio", REQUEST_ID, wave_header()), 0.0)
    audio = encode_binary("audio", REQUEST_ID, os.urandom(FRAME_BYTES))
    utterance_ticks = FRAMES_PER_UTTERANCE * FRAME_BYTES * 10_000_000 // 32_000
    results = [
        phrase(i * utterance_ticks, utterance_ticks)
        for i in range(frames // FRAMES_PER_UTTERANCE + 1)
    ]
    started = time.process_time()
    for i in range(frames):
        relay.forward_binary(audio, 0.0)
        if (i + 1) % FRAMES_PER_UTTERANCE == 0:
            relay.observe_upstream_text(results[i // FRAMES_PER_UTTERANCE], 0.0)
    relay.finish_capture()
    return time.process_time() - started, len(emitted)


def measure(frames: int, repeats: int) -> dict[str, float]:
    off = min(run_session(frames, False)[0] for _ in range(repeats))
    on_runs = [run_session(frames, True) for _ in range(repeats)]
    on = min(seconds for seconds, _ in on_runs)
    off_us, on_us = 1e6 * off / frames, 1e6 * on / frames
    mixed = (1 - SESSION_SHARE) * off_us + SESSION_SHARE * on_us
    return {
        "frames": frames,
        "captures_per_session": on_runs[0][1],
        "us_per_frame_capture_off": round(off_us, 3),
        "us_per_frame_capture_on": round(on_us, 3),
        "us_per_frame_at_10pct_sessions": round(mixed, 3),
        "extra_us_per_frame_at_10pct_sessions": round(mixed - off_us, 3),
    }


def measure_store(captures: int) -> dict[str, float]:
    """CPU per capture of storing `captures` 3-s utterances through the capture writer into a
    local audio store (in a temporary folder of the working directory's file system)."""
    pcm = os.urandom(FRAMES_PER_UTTERANCE * FRAME_BYTES)
    utterances = [
        CapturedUtterance(
            experiment="bench",
            phase="p",
            unit=FACTS.unit,
            client="bench",
            session_id=FACTS.session_id,
            utterance_index=index,
            reason=CaptureReason.UNIFORM,
            sample=CaptureSample.UNIFORM,
            primary=CapturedResult("r" * 32, "a", "Remind me to buy five pencils.", 0.93),
            shadows=(),
            fmt=PCM_16K_MONO,
            pcm=pcm,
        )
        for index in range(captures)
    ]

    configure_logging("warning")  # a line per capture stored would be the figures' noise

    async def store_all(folder: Path) -> tuple[float, float, float]:
        store = LocalAudioStore(folder)
        writer = CaptureWriter(
            store, {}, frozenset(), AudioSettings(directory=folder), GatewayMetrics()
        )
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        for utterance in utterances:
            if not await writer.write(utterance):
                raise SystemExit("capture_overhead: the store refused a capture")
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime

    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix="capture-bench-") as folder:
        wall, user, system = asyncio.run(store_all(Path(folder)))
    per_capture_us = 1e6 * (user + system) / captures
    return {
        "captures_stored": captures,
        "store_wall_us_per_capture": round(1e6 * wall / captures, 1),
        "store_user_us_per_capture": round(1e6 * user / captures, 1),
        "store_sys_us_per_capture": round(1e6 * system / captures, 1),
        # Every utterance of a tenth of the sessions stored: one capture per 30 frames there.
        "store_us_per_frame_at_10pct_sessions": round(
            SESSION_SHARE * per_capture_us / FRAMES_PER_UTTERANCE, 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30_000, help="frames per session (default 30000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument(
        "--store", type=int, default=0, metavar="N", help="also store N captures (default 0)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.n < FRAMES_PER_UTTERANCE or args.repeats < 1 or args.store < 0:
        print("capture_overhead: -n must be >= 30, --repeats >= 1, --store >= 0", file=sys.stderr)
        return 2
    report: dict[str, float] = measure(args.n, args.repeats)
    if args.store:
        report |= measure_store(args.store)
    for name, value in report.items():
        print(f"{name:40} {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
