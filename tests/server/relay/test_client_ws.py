"""The audio fast path's WebSocket layer against the aiohttp the lock pins: binary messages
offered in the read callback, in order, only while nothing is queued; `write_now` sends what
`send_bytes` sends; a closed or paused backend socket is not written to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp._websocket.models import WSMessage
from aiohttp._websocket.reader import WebSocketReader

from gateway.server.relay.client_ws import (
    HELD,
    RelayedWebSocket,
    RelayQueue,
    can_write_now,
    write_now,
)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (mask key 0), as the reader gets it off the wire."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + length + b"\0\0\0\0" + payload


class _Protocol:
    """What the queue asks of its protocol when it fills up."""

    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False


async def _queue(take_when: bytes) -> tuple[RelayQueue, WebSocketReader, list[bytes]]:
    queue = RelayQueue(_Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    offered: list[bytes] = []

    def take(message: WSMessage) -> WSMessage | None:
        offered.append(message.data)
        return None if message.data.startswith(take_when) else message

    queue.take = take
    return queue, WebSocketReader(queue, 2**20, False, True), offered


async def parked(queue: RelayQueue) -> asyncio.Future[WSMessage]:
    """A pump parked in the queue's read(), as the relay's is between messages."""
    waiting: asyncio.Future[WSMessage] = asyncio.ensure_future(queue.read())  # type: ignore[arg-type]
    await asyncio.sleep(0)
    return waiting


async def test_binary_messages_taken_in_the_callback_are_never_queued() -> None:
    """Frames fed byte by byte still reach `take` whole; taken ones leave the queue empty."""
    queue, reader, offered = await _queue(b"audio")
    pump = await parked(queue)
    wire = client_frame(0x2, b"audio-1" * 500) + client_frame(0x2, b"audio-2")
    for i in range(len(wire)):
        reader.feed_data(wire[i : i + 1])
    assert offered == [b"audio-1" * 500, b"audio-2"]
    assert not queue._buffer
    assert not pump.done()  # never woken
    pump.cancel()


async def test_nothing_is_offered_unless_the_pump_waits_for_it() -> None:
    """A pump busy with a message (not parked in read()) gets the next frame through the
    queue, after the one it holds."""
    queue, reader, offered = await _queue(b"audio")
    reader.feed_data(client_frame(0x2, b"audio-1"))
    assert offered == []
    assert (await queue.read()).data == b"audio-1"


async def test_frames_never_overtake_a_message_read_while_parsing_was_paused() -> None:
    """A speech.context over the queue's limit arrives in one read with audio behind it:
    aiohttp stops parsing, and resumes inside read() once the context is off the queue but
    not yet with the pump. The audio behind it must not be relayed before the context."""
    queue = RelayQueue(_Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    relayed: list[str] = []

    def take(message: WSMessage) -> None:
        relayed.append(f"fast {message.data[:7]!r}")

    queue.take = take
    reader = WebSocketReader(queue, 2**21, False, True)

    async def pump() -> None:
        while True:
            message = await queue.read()
            relayed.append(f"pump {message.data[:7]!r}")
            await asyncio.sleep(0)  # the pump's awaited send

    task = asyncio.ensure_future(pump())
    await asyncio.sleep(0)
    reader.feed_data(
        client_frame(0x1, b"context" + b"x" * 200_000)
        + client_frame(0x2, b"audio-1" * 400)
        + client_frame(0x2, b"audio-2" * 400)
    )
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    assert [entry.split(" ", 1)[1] for entry in relayed] == [
        "'context'",
        "b'audio-1'",
        "b'audio-2'",
    ]


async def test_a_message_left_by_take_is_queued_and_nothing_overtakes_it() -> None:
    """Once one message waits in the queue, later binary messages are queued behind it
    without being offered: the pump reads them all in arrival order."""
    queue, reader, offered = await _queue(b"audio")
    pump = await parked(queue)
    reader.feed_data(
        client_frame(0x2, b"other")
        + client_frame(0x2, b"audio-after")
        + client_frame(0x1, b"text")
        + client_frame(0x2, b"audio-last")
    )
    assert offered == [b"other"]
    read = [(await pump).data] + [(await queue.read()).data for _ in range(3)]
    assert read == [b"other", b"audio-after", "text", b"audio-last"]


async def test_text_and_control_messages_are_never_offered() -> None:
    """Only binary messages are offered; text and pings go to the pump as aiohttp queues them."""
    queue, reader, offered = await _queue(b"")
    pump = await parked(queue)
    reader.feed_data(client_frame(0x1, b"text") + client_frame(0x9, b"ping"))
    assert offered == []
    assert [(await pump).type, (await queue.read()).type] == [WSMsgType.TEXT, WSMsgType.PING]


async def test_a_held_marker_reaches_the_pump_in_place_of_the_message() -> None:
    """`take` may queue a replacement (the relay's HELD marker): the pump reads that one."""
    queue = RelayQueue(_Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    queue.take = lambda message: message._replace(extra=HELD)
    pump = await parked(queue)
    WebSocketReader(queue, 2**20, False, True).feed_data(client_frame(0x2, b"audio"))
    message = await pump
    assert (message.data, message.extra) == (b"audio", HELD)


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[WSMessage]]]:
    """A server whose client WebSocket is a RelayedWebSocket that takes binary messages
    starting with `fast` and echoes what its `receive()` still gets, back to the client."""
    taken: list[WSMessage] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = RelayedWebSocket()
        await ws.prepare(request)
        assert ws.queue is not None
        ws.queue.take = lambda m: taken.append(m) if m.data.startswith(b"fast") else m
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            else:
                await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"ws://127.0.0.1:{port}/", taken
    finally:
        await runner.cleanup()


async def test_a_relayed_websocket_serves_what_take_leaves(
    echo_server: tuple[str, list[WSMessage]],
) -> None:
    """Over loopback: taken messages reach `take` only, the others `receive()` in order,
    and `write_now` frames exactly as `send_bytes` (the server reads both alike)."""
    url, taken = echo_server
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert can_write_now(ws)
        write_now(ws, b"fast-1")
        await ws.send_bytes(b"slow-1")
        write_now(ws, b"slow-2" * 2000)  # 12 kB: a 16-bit length and a longer mask run
        await ws.send_str("text")
        echoed = [(await ws.receive(timeout=5)).data for _ in range(3)]
        assert echoed == [b"slow-1", b"slow-2" * 2000, "text"]
        # Sent after the echoes, so that the server's queue is empty when it arrives (had it
        # come with "text" in one read, it would have been queued behind it, as it should).
        write_now(ws, b"fast-2")
        for _ in range(500):  # its read callback may still be on its way
            if len(taken) == 2:
                break
            await asyncio.sleep(0.01)
        assert [m.data for m in taken] == [b"fast-1", b"fast-2"]
        await ws.close()
        assert not can_write_now(ws)


async def test_a_paused_backend_socket_is_not_written_to_now(
    echo_server: tuple[str, list[WSMessage]],
) -> None:
    """While the backend's transport pushes back, frames must go the pump's way (which
    waits for the drain): `can_write_now` says no."""
    url, _taken = echo_server
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        protocol = ws._writer.protocol
        protocol.pause_writing()
        assert not can_write_now(ws)
        protocol.resume_writing()
        assert can_write_now(ws)
