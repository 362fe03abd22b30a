"""Micro-benchmark: the CPU a WebSocket relay spends per forwarded audio frame, by implementation.

The gateway's audio path is a WebSocket server leg (the SDK's) and a client leg (the
backend's). This isolates that layer from everything else the gateway does (no USP decode,
no relay state machine, no outcomes): a relay process accepts N connections, dials a sink
for each, and forwards every binary message; a load generator sends each connection a
3,200-byte masked frame every 100 ms (real-time 16 kHz audio), on another CPU. The figure
is the relay process's CPU time (user + system, `/proc`) over the window, per frame.

Implementations (`--impl`, several allowed):

* `aiohttp-pump`: aiohttp server and client, a pump task per connection
  (`async for message in ws: await upstream.send_bytes(...)`), the gateway's design before
  the fast path;
* `aiohttp-fast`: the same sockets with `gateway.server.relay.client_ws` (messages taken in
  the read callback, `write_now` to the backend), the gateway's design now;
* `picows`: picows server and client (Cython, callbacks, no tasks); skipped by default when
  it is not installed (it is not a dependency of the gateway);
* `websockets`: the websockets library's asyncio server and client (a task per connection,
  `async for message in ws: await upstream.send(message)`, its C masking), no compression;
  skipped by default when it is not installed (not a dependency either).

    python bench/ws_relay_impls.py [--streams 400] [--seconds 8] [--impl aiohttp-fast ...]

With 2+ CPUs the relay gets the last one and everything else the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _wsclient import BINARY, WsClient, encode_frame  # bench/ is sys.path[0]

FRAME_BYTES = 3200
FRAME_INTERVAL_S = 0.1
IMPLS = ("aiohttp-pump", "aiohttp-fast", "picows", "websockets")
OPTIONAL = ("picows", "websockets")  # measured only where installed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the sink (the "backend") -------------------------------------------------------------------


async def _serve_forever(handler: Any, port: int) -> None:
    """Serve the aiohttp `handler` at / on `port` until the process is stopped."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()


async def _sink(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _message in ws:
            pass
        return ws

    await _serve_forever(handler, port)


# -- the relays ------------------------------------------------------------------------------


async def _aiohttp_relay(port: int, sink: str, fast: bool) -> None:
    import aiohttp
    from aiohttp import WSMsgType, web

    from gateway.server.relay.client_ws import RelayedWebSocket, can_write_now, write_now

    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def handler(request: web.Request) -> web.WebSocketResponse:
        upstream = await http.ws_connect(sink)
        client = RelayedWebSocket() if fast else web.WebSocketResponse()
        await client.prepare(request)
        idle = [False]

        def take(message: Any) -> Any:
            if not idle[0] or not can_write_now(upstream):
                return message
            write_now(upstream, message.data)
            return None

        if isinstance(client, RelayedWebSocket) and client.queue is not None:
            client.queue.take = take

        async def drain_upstream() -> None:  # the gateway's upstream pump, idle here
            async for _message in upstream:
                pass

        upstream_pump = asyncio.create_task(drain_upstream())
        try:
            while True:
                idle[0] = True
                message = await client.receive()
                idle[0] = False
                if message.type is not WSMsgType.BINARY:
                    break
                await upstream.send_bytes(message.data)
        finally:
            upstream_pump.cancel()
            await upstream.close()
        return client

    await _serve_forever(handler, port)


async def _picows_relay(port: int, sink: str) -> None:
    import picows

    class Upstream(picows.WSListener):  # type: ignore[misc]
        pass

    class Client(picows.WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.upstream: Any = None
            self.task: asyncio.Task[None] | None = None

        def on_ws_connected(self, transport: Any) -> None:
            self.task = asyncio.get_running_loop().create_task(self._dial())

        async def _dial(self) -> None:
            self.upstream, _listener = await picows.ws_connect(Upstream, sink)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == picows.WSMsgType.BINARY and self.upstream is not None:
                self.upstream.send(picows.WSMsgType.BINARY, frame.get_payload_as_memoryview())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.upstream is not None:
                self.upstream.disconnect()

    await picows.ws_create_server(lambda _request: Client(), "127.0.0.1", port)
    await asyncio.Event().wait()


async def _websockets_relay(port: int, sink: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def relay(client: ServerConnection) -> None:
        async with connect(sink, compression=None, max_size=None) as upstream:
            with contextlib.suppress(ConnectionClosed):
                async for message in client:
                    await upstream.send(message)

    async with serve(relay, "127.0.0.1", port, compression=None, max_size=None):
        await asyncio.Event().wait()


def _serve(role: str, port: int, sink: str) -> None:
    import uvloop

    if role == "sink":
        uvloop.run(_sink(port))
    elif role == "picows":
        uvloop.run(_picows_relay(port, sink))
    elif role == "websockets":
        uvloop.run(_websockets_relay(port, sink))
    else:
        uvloop.run(_aiohttp_relay(port, sink, fast=role == "aiohttp-fast"))


# -- the driver ------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn(role: str, port: int, sink: str, cpus: set[int] | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--serve", role, "--port", str(port), "--sink", sink]
    proc = subprocess.Popen(command)
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    return proc


async def _wait_port(port: int) -> None:
    for _ in range(200):
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def _drive(port: int, streams: int, seconds: float, relay_pid: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clients = [await WsClient.connect("127.0.0.1", port, "/", {}) for _ in range(streams)]
    frame = encode_frame(BINARY, bytes(FRAME_BYTES), key=b"\x12\x34\x56\x78")
    sent = [0]
    stop = loop.time() + 1.0 + seconds

    def tick(client: WsClient, at: float) -> None:
        if at > stop or client.transport is None or client.transport.is_closing():
            return
        client.write(frame)
        sent[0] += 1
        loop.call_at(at + FRAME_INTERVAL_S, tick, client, at + FRAME_INTERVAL_S)

    start = loop.time()
    for i, client in enumerate(clients):  # spread over the interval, as streams are
        at = start + FRAME_INTERVAL_S * i / streams
        loop.call_at(at, tick, client, at)
    await asyncio.sleep(1.0)  # ramp: every stream sending
    cpu0, sent0, t0 = _cpu_s(relay_pid), sent[0], time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, sent1, t1 = _cpu_s(relay_pid), sent[0], time.monotonic()
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)
    frames = sent1 - sent0
    return {
        "frames": frames,
        "relay_cpu_share": round((cpu1 - cpu0) / (t1 - t0), 3),
        "relay_us_per_frame": round((cpu1 - cpu0) / frames * 1e6, 1),
    }


def run(impl: str, streams: int, seconds: float) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpus = {cpus[-1]} if len(cpus) > 1 else None
    other_cpus = set(cpus[:-1]) if len(cpus) > 1 else None
    sink_port, relay_port = _free_port(), _free_port()
    sink_url = f"ws://127.0.0.1:{sink_port}/"
    sink = _spawn("sink", sink_port, "", other_cpus)
    relay = _spawn(impl, relay_port, sink_url, relay_cpus)
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)
    try:

        async def main() -> dict[str, Any]:
            await _wait_port(sink_port)
            await _wait_port(relay_port)
            return await _drive(relay_port, streams, seconds, relay.pid)

        import uvloop

        return {"impl": impl, "streams": streams, **uvloop.run(main())}
    finally:
        for proc in (relay, sink):
            proc.terminate()
            proc.wait()
        os.sched_setaffinity(0, set(cpus))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--impl", action="append", choices=IMPLS)
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port, args.sink)
        return
    impls = args.impl or [i for i in IMPLS if i not in OPTIONAL or importlib.util.find_spec(i)]
    results = []
    for _ in range(args.repeat):
        for impl in impls:
            result = run(impl, args.streams, args.seconds)
            print(
                f"{impl:14} {result['streams']} streams: {result['relay_us_per_frame']:6.1f} us"
                f" per frame (relay at {result['relay_cpu_share']:.0%} of a core,"
                f" {result['frames']} frames)",
                flush=True,
            )
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
