"""Where a gateway's time goes: py-spy collapsed stacks ("raw" format) summed into categories.

Each sample is put in one category: idle (the event loop in epoll, pool threads waiting),
a socket syscall (read or write, by the sample's innermost native frame; needs --native),
or else the innermost frame that names a part of the relay (USP decode, timeline, outcome
tap, sink, WebSocket read or send, relay logic, REST relay, aiohttp HTTP, the event loop).
Shares are of busy samples. Given the CPU the process used per unit of work (e.g. per
audio frame, from the benchmark), it also prints microseconds per unit.

    python bench/profile_summary.py gateway.txt [--us-per-unit 108 --unit frame]

The benchmarks print this summary themselves when run with --profile.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

# (category, substrings of a frame) — the innermost frame that matches decides; the order
# only matters for a frame that matches several.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "outcome sink (queue, batch, JSON, file)",
        ("JsonlSink", "to_thread", "to_json", "outcomes/sink.py", "RedisSink", "redis_sink"),
    ),
    (
        "outcome tap (phrase JSON, record)",
        (
            "ResultTap",
            "make_record",
            "OutcomeRecord",
            "session/taps.py",
            "normalize",
            "privacy",
            "GatewayState.submit",
            "ControlPlane.observe",
            "json/decoder.py",
            "uuid",
        ),
    ),
    ("audio timeline", ("AudioTimeline", "session/turns.py")),
    ("USP header decode", ("decode_binary", "decode_text", "_parse_headers", "protocol/usp.py")),
    (
        "WebSocket send (frame, mask, transport.write)",
        (
            "_write_websocket_frame",
            "send_frame",
            "send_bytes",
            "send_str",
            "UVStream_write",
            "_websocket/writer.py",
            "websocket_mask",
        ),
    ),
    (
        "WebSocket read (parse, unmask, queue, receive)",
        (
            "reader_c",
            "WebSocketReader",
            "WebSocketDataQueue",
            "_websocket/reader",
            "WebSocketResponse.receive",
            "WebSocketResponse.__anext__",
            "ClientWebSocketResponse.receive",
            "ClientWebSocketResponse.__anext__",
        ),
    ),
    (
        "aiohttp protocol callbacks (data_received → parser)",
        ("web_protocol.py", "RequestHandler.data_received", "client_proto.py"),
    ),
    ("REST relay", ("rest_relay.py", "_BodyClock", "handle_rest")),
    ("relay state machine + command loop", ("RelaySession", "session/relay.py", "usp_relay.py")),
    (
        "aiohttp HTTP (parser, streams, request/response)",
        (
            "aiohttp/",
            "_http_parser",
            "_http_writer",
            "http_parser",
            "multidict",
            "yarl",
            "propcache",
        ),
    ),
    (
        "event loop (uvloop, task switches, timers)",
        ("uv__", "uv_", "Loop_", "Handle_", "task_step", "task_wakeup", "call_soon", "asyncio/"),
    ),
)
READ_CALLS = ("read", "recv", "recvfrom", "readv", "recvmsg")
WRITE_CALLS = ("write", "send", "sendto", "writev", "sendmsg")
IDLE_LOOP = ("epoll_wait", "epoll_pwait")
IDLE_THREAD = (
    "_queue_SimpleQueue_get",
    "PyThread_acquire_lock",
    "pthread_cond_timedwait",
    "pthread_cond_wait",
    "thread.py:81",  # ThreadPoolExecutor's worker waiting for work (Python-only stacks)
    "take_gil",
)
# The outermost Python frames under which the event loop runs: a Python-only sample that ends
# in one of them was in C code (uvloop, aiohttp's Cython parsers, syscalls) called by the loop.
PYTHON_ONLY_LOOP = (
    "run_app (aiohttp/web.py",
    "serve (gateway/server/serve.py",
    "run (gateway/emulator/server.py",
    "run_until_complete (",
    "run_forever (",
    "Runner.run (asyncio/runners.py",
)


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def categorise(stack: str) -> str:
    frames = stack.split(";")
    leaf = _name(frames[-1]).strip()
    if leaf in IDLE_LOOP:
        return "idle: event loop waiting (epoll)"
    if leaf in READ_CALLS:
        return "kernel: socket reads (read/recv syscalls)"
    if leaf in WRITE_CALLS:
        return "kernel: socket writes (write/send syscalls)"
    if any(marker in frame for frame in frames for marker in IDLE_THREAD):
        return "idle: threads waiting"
    if frames[-1].startswith(PYTHON_ONLY_LOOP):
        return "event loop + C code (run --native to see inside)"
    for frame in reversed(frames):
        for category, markers in CATEGORIES:
            if any(marker in frame for marker in markers):
                return category
    return "other"


def summarise(path: Path) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[categorise(stack)] += int(n)
    busy = sum(n for category, n in counts.items() if not category.startswith("idle"))
    rows = [
        {
            "category": category,
            "samples": n,
            "busy_share": n / busy if busy and not category.startswith("idle") else None,
        }
        for category, n in counts.most_common()
    ]
    return {"profile": str(path), "busy_samples": busy, "rows": rows}


def costs(
    summary: dict[str, Any],
    us_per_unit: float | None,
    user_us: float | None = None,
    sys_us: float | None = None,
) -> dict[str, float]:
    """Microseconds per unit of each busy category.

    With the process's user and system time per unit (from /proc), kernel rows share the
    system time and the others the user time: a sampler that pauses the process (--native)
    over-counts syscalls, and /proc is the better judge of the split. Otherwise every busy
    row gets its share of `us_per_unit`.
    """
    rows = [row for row in summary["rows"] if row["busy_share"] is not None]
    if user_us is not None and sys_us is not None:
        kernel = sum(row["samples"] for row in rows if row["category"].startswith("kernel"))
        other = sum(row["samples"] for row in rows) - kernel
        if kernel and other:
            return {
                row["category"]: row["samples"]
                * (sys_us / kernel if row["category"].startswith("kernel") else user_us / other)
                for row in rows
            }
    if not us_per_unit:
        return {}
    return {row["category"]: row["busy_share"] * us_per_unit for row in rows}


def print_summary(
    summary: dict[str, Any],
    us_per_unit: float | None,
    unit: str,
    user_us: float | None = None,
    sys_us: float | None = None,
) -> None:
    print(f"where the time goes ({summary['profile']}, {summary['busy_samples']} busy samples):")
    cost = costs(summary, us_per_unit, user_us, sys_us)
    for row in summary["rows"]:
        share = row["busy_share"]
        if share is None:
            print(f"  {row['category']:<52} {row['samples']:>6} samples (not counted)")
            continue
        us = cost.get(row["category"])
        shown = f"  ~{us:5.1f} us/{unit}" if us is not None else ""
        print(f"  {row['category']:<52} {row['samples']:>6} samples {100 * share:5.1f} %{shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--us-per-unit", type=float, help="the process's CPU per unit of work")
    parser.add_argument("--user-us", type=float, help="its user CPU per unit (with --sys-us)")
    parser.add_argument("--sys-us", type=float, help="its system CPU per unit")
    parser.add_argument("--unit", default="frame")
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    args = parser.parse_args()
    summary = summarise(args.profile)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary, args.us_per_unit, args.unit, args.user_us, args.sys_us)


if __name__ == "__main__":
    main()
