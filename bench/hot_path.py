"""Micro-benchmark: the CPU each step of the relay's hot path costs, one step at a time.

Latency benchmarks on a shared machine are noisy; the cost of a step run in a tight loop is
not (the best of several repeats is kept). This times the gateway's own code and the aiohttp
code it calls, with real objects (aiohttp's C WebSocket reader, its writer with masking, the
relay state machine, the outcome tap, the sink's queue) and no sockets; `socket` times the
loopback TCP send and receive of one frame, which the kernel charges to the gateway.

    python bench/hot_path.py [--json out.json]

To time another copy of the gateway, put it first on PYTHONPATH. For instruction counts,
which a busy machine does not change, run one frame path under callgrind twice and take the
difference per frame:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/hot_path.py --only-path fast -n 2000      # and -n 4000; and "pump"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import HOT_PATH_FIGURE  # bench/ is sys.path[0] when a bench script runs
from aiohttp import WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp._websocket.writer import WebSocketWriter

import gateway
from gateway.outcomes.record import Role
from gateway.protocol.usp import decode_binary, decode_text, encode_binary, encode_text
from gateway.protocol.wav import wave_header
from gateway.server.relay.usp import _Session
from gateway.session.relay import RelaySession
from gateway.session.taps import RoleFacts, SessionFacts
from gateway.session.turns import AudioTimeline
from gateway.stores.jsonl_sink import JsonlSink

FRAME_BYTES = 3200
FAST_PATH_FIGURE = "= audio frame, fast path (read callback, no queue, no wake-up)"
REQUEST_ID = "9bed34362cbb4432963cb66e84906729"
# What the native SDK puts on every audio message (protocol.md §2.2).
AUDIO_HEADERS = [("X-Timestamp", "2026-11-21T05:19:18.410Z"), ("X-StreamId", "1")]
PHRASE = json.dumps(
    {
        "RecognitionStatus": "Success",
        "Offset": 1000000,
        "Duration": 30000000,
        "DisplayText": "Remind me to buy five pencils.",
        "NBest": [
            {
                "Confidence": 0.93,
                "Lexical": "remind me to buy five pencils",
                "ITN": "remind me to buy 5 pencils",
                "MaskedITN": "remind me to buy 5 pencils",
                "Display": "Remind me to buy five pencils.",
            }
        ],
    }
)
HYPOTHESIS = json.dumps({"Text": "remind me to", "Offset": 1000000, "Duration": 15000000})


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame as a browser or SDK would send it (mask key 0: XOR is a no-op, the
    reader unmasks all the same)."""
    n = len(payload)
    head = bytes([0x80 | opcode]) + (
        bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    )
    return head + b"\0\0\0\0" + payload


class _NullTransport:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def is_closing(self) -> bool:
        return False


class _Protocol:
    _paused = False
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Upstream:
    """Stands in for aiohttp's ClientWebSocketResponse: its send_bytes/send_str, real writer."""

    closed = False

    def __init__(self) -> None:
        self.transport = _NullTransport()
        self._writer = WebSocketWriter(_Protocol(), self.transport, use_mask=True)  # type: ignore[arg-type]

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data argument must be byte-ish")
        await self._writer.send_frame(data, WSMsgType.BINARY, compress=compress)

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await self._writer.send_frame(data.encode("utf-8"), WSMsgType.TEXT, compress=compress)


class _State:
    """What `_Session._execute` touches of GatewayState: `submit` for records."""

    def __init__(self, sink: JsonlSink) -> None:
        self.sink = sink

    def submit(self, record: Any) -> None:
        self.sink.submit(record)


def facts() -> SessionFacts:
    return SessionFacts(
        experiment="bench",
        phase="running",
        client="bench",
        unit="u" * 64,
        unit_source="connection",
        session_id="s" * 32,
        protocol="usp",
        mode="conversation",
        locale="en-US",
        forced=False,
        text_privacy="text",
        privacy_key=b"k" * 32,
    )


def new_relay() -> RelaySession:
    relay = RelaySession(facts(), RoleFacts(Role.PRIMARY, "a", "emu"))
    context = encode_text("speech.context", REQUEST_ID, "{}")
    relay.client_text(context, time.monotonic())
    riff = encode_binary("audio", REQUEST_ID, wave_header(), extra_headers=AUDIO_HEADERS)
    relay.client_binary(riff, time.monotonic())
    return relay


def timed(n: int, repeats: int, step: Callable[[], object]) -> float:
    """Best of `repeats` runs: microseconds per call."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(n):
            step()
        best = min(best, time.perf_counter() - started)
    return 1e6 * best / n


async def timed_async(n: int, repeats: int, step: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(n):
            await step()
        best = min(best, time.perf_counter() - started)
    return 1e6 * best / n


async def measure(n: int, repeats: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    audio = encode_binary("audio", REQUEST_ID, os.urandom(FRAME_BYTES), extra_headers=AUDIO_HEADERS)
    wire = masked_frame(0x2, audio)
    hypothesis = encode_text("speech.hypothesis", REQUEST_ID, HYPOTHESIS)
    phrase = encode_text("speech.phrase", REQUEST_ID, PHRASE)
    results: dict[str, float] = {}

    # -- WebSocket read: parse + unmask in aiohttp's C reader, queue, read back ------------
    queue = WebSocketDataQueue(_Protocol(), 1 << 20, loop=loop)  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 1 << 20, compress=False, decode_text=True)

    async def ws_read() -> object:
        reader.feed_data(wire)
        return await queue.read()

    results["ws_read: C frame parse + unmask + queue + read()"] = await timed_async(
        n, repeats, ws_read
    )

    # -- the task wake-up a pump pays per message (future resolved by the protocol) --------
    async def wakeup() -> None:
        future = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future

    results["loop: one task wake-up (call_soon + future + task step)"] = await timed_async(
        n, repeats, wakeup
    )

    # -- the gateway's own steps ------------------------------------------------------------
    results["usp: decode_binary (audio, native SDK headers)"] = timed(
        n, repeats, lambda: decode_binary(audio)
    )
    payload = decode_binary(audio).payload
    timeline = AudioTimeline()
    timeline.add(wave_header(), 0.0)

    def timeline_add() -> None:
        timeline.add(payload, 1.0)
        if len(timeline.ends) > 10_000:
            del timeline.ends[:]
            del timeline.times[:]

    results["timeline: AudioTimeline.add"] = timed(n, repeats, timeline_add)
    relay = new_relay()

    def client_binary() -> object:
        commands = relay.client_binary(audio, 1.0)
        turn = next(iter(relay._turns.values()))
        if len(turn.timeline.ends) > 10_000:
            del turn.timeline.ends[:]
            del turn.timeline.times[:]
        return commands

    results["relay: RelaySession.client_binary (decode + timeline + command)"] = timed(
        n, repeats, client_binary
    )

    # -- WebSocket send to the backend: aiohttp's writer, masking, (null) transport ---------
    upstream = _Upstream()
    results["ws_send: send_bytes (header, random mask, copy, mask)"] = await timed_async(
        n, repeats, lambda: upstream.send_bytes(audio)
    )
    sink = JsonlSink(Path(os.devnull), queue_size=1 << 30)
    session = _Session(_State(sink), None, relay, None, upstream, None)  # type: ignore[arg-type]
    commands = relay.client_binary(audio, 1.0)
    results["relay: _Session._execute([ToUpstream]) incl. send_bytes"] = await timed_async(
        n, repeats, lambda: session._execute(commands)
    )

    fast = getattr(relay, "forward_binary", None)  # the relay's audio fast path
    if fast is not None:

        def forward_binary() -> object:
            commands = fast(audio, 1.0)
            turn = next(iter(relay._turns.values()))
            if len(turn.timeline.ends) > 10_000:
                del turn.timeline.ends[:]
                del turn.timeline.times[:]
            return commands

        results["relay: RelaySession.forward_binary (fast path, no command)"] = timed(
            n, repeats, forward_binary
        )

    async def whole_audio_frame() -> None:
        reader.feed_data(wire)
        message = await queue.read()
        if fast is not None:
            commands = fast(message.data, 1.0)
            if commands is None:
                await session._to_upstream(message.data, False)  # type: ignore[attr-defined]
            else:
                await session._execute(commands)
        else:
            await session._execute(relay.client_binary(message.data, 1.0))
        turn = next(iter(relay._turns.values()))
        if len(turn.timeline.ends) > 10_000:
            del turn.timeline.ends[:]
            del turn.timeline.times[:]

    results[HOT_PATH_FIGURE] = await timed_async(n, repeats, whole_audio_frame)
    step = fast_path_step(session, wire)
    if step is not None:
        results[FAST_PATH_FIGURE] = timed(n, repeats, step)

    # -- backend → client: hypothesis and phrase --------------------------------------------
    results["usp: decode_text (speech.hypothesis)"] = timed(
        n, repeats, lambda: decode_text(hypothesis)
    )
    results["relay: upstream_text (speech.hypothesis)"] = timed(
        n, repeats, lambda: relay.upstream_text(hypothesis, 2.0)
    )

    def phrase_step() -> object:
        return relay.upstream_text(phrase, 2.0)

    small = max(1, n // 10)
    results["tap: upstream_text (speech.phrase → OutcomeRecord)"] = timed(
        small, repeats, phrase_step
    )
    record = next(c for c in phrase_step() if type(c).__name__ == "Emit").record  # type: ignore[attr-defined]
    results["sink: JsonlSink.submit (queue put)"] = timed(
        small, repeats, lambda: sink.submit(record)
    )
    results["sink: OutcomeRecord.to_json (writer thread)"] = timed(small, repeats, record.to_json)
    return results


def fast_path_step(session: Any, wire: bytes) -> Callable[[], object] | None:
    """One audio frame the way the relay takes it since the read-callback fast path
    (`gateway.server.relay.client_ws`): the C reader parses the frame into a RelayQueue,
    which hands it to `_Session.audio_now` (decode, count, timeline) and `write_now` (masked
    frame to the null transport): no queue, no task wake-up, no coroutine. None for a
    gateway without it. Compare with HOT_PATH_FIGURE plus one task wake-up, the old way."""
    try:
        from gateway.server.relay.client_ws import RelayQueue
    except ImportError:
        return None
    loop = asyncio.get_running_loop()
    queue = RelayQueue(_Protocol(), 1 << 20, loop=loop)  # type: ignore[arg-type]
    queue.take = session.audio_now
    reader = WebSocketReader(queue, 1 << 20, compress=False, decode_text=True)
    session._pump_idle = True  # as while the pump waits for the next message
    queue.parked = True  # the pump parked in the queue's read(), as between messages
    turn = next(iter(session._relay._turns.values()))

    def step() -> None:
        reader.feed_data(wire)
        if queue._buffer:
            raise RuntimeError("the fast path did not take the frame")
        if len(turn.timeline.ends) > 10_000:
            del turn.timeline.ends[:]
            del turn.timeline.times[:]

    return step


async def frame_paths(path: str, n: int) -> None:
    """Only one audio-frame path, `n` times, for an instruction count under callgrind
    (the difference between two `n` is the per-frame count, start-up cancels out)."""
    loop = asyncio.get_running_loop()
    audio = encode_binary("audio", REQUEST_ID, os.urandom(FRAME_BYTES), extra_headers=AUDIO_HEADERS)
    wire = masked_frame(0x2, audio)
    relay = new_relay()
    sink = JsonlSink(Path(os.devnull), queue_size=1 << 30)
    session = _Session(_State(sink), None, relay, None, _Upstream(), None)  # type: ignore[arg-type]
    turn = next(iter(relay._turns.values()))
    if path == "fast":
        step = fast_path_step(session, wire)
        assert step is not None, "this gateway has no fast path"
        for _ in range(n):
            step()
        return
    # The pump's way: reader → queue → the pump task woken → forward_binary → send_bytes.
    queue = WebSocketDataQueue(_Protocol(), 1 << 20, loop=loop)  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 1 << 20, compress=False, decode_text=True)

    async def pump() -> None:
        for _ in range(n):
            message = await queue.read()
            if relay.forward_binary(message.data, 1.0) is None:
                await session._to_upstream(message.data, False)

    task = loop.create_task(pump())
    for i in range(n):
        await asyncio.sleep(0)  # the pump waits in read() before each frame, as in situ
        reader.feed_data(wire)
        if i % 5_000 == 0:
            del turn.timeline.ends[:]
            del turn.timeline.times[:]
    await task


def socket_costs(n: int) -> dict[str, float]:
    """User+sys CPU of a loopback TCP send and receive of one masked audio frame."""
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    for sock in (sender, receiver):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = os.urandom(FRAME_BYTES + 100)
    send_cpu = recv_cpu = 0.0
    try:
        for _ in range(n):
            t0 = time.process_time()
            sender.send(frame)
            t1 = time.process_time()
            got = 0
            while got < len(frame):
                got += len(receiver.recv(1 << 18))
            t2 = time.process_time()
            send_cpu += t1 - t0
            recv_cpu += t2 - t1
    finally:
        for sock in (sender, receiver, server):
            sock.close()
    return {
        "kernel: loopback TCP send of one frame (incl. delivery)": 1e6 * send_cpu / n,
        "kernel: loopback TCP recv of one frame": 1e6 * recv_cpu / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only-path",
        choices=("pump", "fast"),
        help="run only this audio-frame path, -n times, and print nothing (for callgrind)",
    )
    args = parser.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.only_path:
        runner(frame_paths(args.only_path, args.n))
        return
    results = runner(measure(args.n, args.repeats))
    results.update(socket_costs(args.n))
    print(f"gateway from {Path(gateway.__file__).parent}; Python {sys.version.split()[0]}")
    for name, us in results.items():
        print(f"  {name:<66} {us:7.2f} us")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
