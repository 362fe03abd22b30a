"""A shadow: the session's client frames streamed live to a challenger, results only recorded.

The primary's path never waits on a shadow: `offer` puts the frame in a bounded queue and
returns at once; when the queue is full the frame is dropped and counted (the count goes
into the shadow's outcome records, and a shadow that lost frames ends with a
`shadow_dropped_audio` failure carrying the total, since the drops may come after its last
result or it may never have produced one). A sender task drains the queue into the shadow's
WebSocket and a receiver task hands its answers to a callback. The shadow is offered the
subprotocols the client offered, as the primary is (`usp_relay.offered_protocols`): none
from the JS SDK, `USP` from the native one.

A slow shadow is still given the chance to finish: before a new turn's `speech.context` is
sent it waits (bounded) for the shadow's previous turn to end, because a service abandons
a turn when the next one starts; and when the client leaves, queued frames are still sent
and the last turn may end within a grace period before the shadow is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import aiohttp

from gateway.control.model import Variant
from gateway.errors import UpstreamError, UspError
from gateway.logging import get_logger
from gateway.protocol.usp import Path, decode_text
from gateway.server.relay.upstream import connect_ws

log = get_logger(__name__)

_END = object()  # queue sentinel: the client is gone, nothing more will come

OnText = Callable[[str, str, float], None]  # (variant, frame, arrival time)
OnFailure = Callable[[str, str, str], None]  # (variant, error code, detail)
OnDrop = Callable[[str], None]


class ShadowLink:
    def __init__(
        self,
        variant: Variant,
        url: str,
        headers: Mapping[str, str],
        *,
        protocols: tuple[str, ...],
        queue_frames: int,
        connect_timeout_s: float,
        turn_timeout_s: float,
        on_text: OnText,
        on_failure: OnFailure,
        on_drop: OnDrop,
    ) -> None:
        self.variant = variant
        self._url = url
        self._headers = dict(headers)
        # The client's offer, as the primary gets it: a shadow sees the upgrade the SDK sent.
        self._protocols = protocols
        # Unbounded as a queue, bounded by `offer`: the end sentinel must always fit, or a
        # sender behind a full queue would wait for it until the grace period cuts it off.
        self._queue: asyncio.Queue[tuple[str | bytes, bool] | object] = asyncio.Queue()
        self._capacity = queue_frames
        self._dropped = 0
        self._connect_timeout_s = connect_timeout_s
        self._turn_timeout_s = turn_timeout_s
        self._on_text = on_text
        self._on_failure = on_failure
        self._on_drop = on_drop
        self._turn_open = False
        self._turn_ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self, http: aiohttp.ClientSession) -> None:
        self._task = asyncio.create_task(self._run(http), name=f"shadow-{self.variant.name}")

    def offer(self, frame: str | bytes, starts_turn: bool) -> None:
        """Queue a client frame for the shadow; never waits. A full queue drops the frame."""
        if self._closed:
            return
        if self._queue.qsize() >= self._capacity:
            self._dropped += 1
            self._on_drop(self.variant.name)
            return
        self._queue.put_nowait((frame, starts_turn))

    async def finish(self, grace_s: float) -> None:
        """The client is gone: send what is queued, let the last turn end, then close."""
        self._closed = True
        self._queue.put_nowait(_END)
        if self._task is not None:
            try:
                async with asyncio.timeout(grace_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._dropped:
            # Records count drops only up to their own result: the total is reported once more,
            # unless the shadow already failed (its one failure record carries the count).
            detail = f"{self._dropped} frames dropped: the shadow's queue was full"
            self._on_failure(self.variant.name, "shadow_dropped_audio", detail)

    async def _run(self, http: aiohttp.ClientSession) -> None:
        name = self.variant.name
        try:
            ws = await connect_ws(
                http,
                self._url,
                self._headers,
                protocols=self._protocols,
                timeout_s=self._connect_timeout_s,
            )
        except UpstreamError as exc:
            self._closed = True  # nothing will be sent: stop queueing (and counting) frames
            self._on_failure(name, exc.error_code, exc.detail)
            return
        receiver = asyncio.create_task(self._receive(ws), name=f"shadow-{name}-receiver")
        try:
            await self._send(ws)
            if self._turn_open:  # the client left mid-turn: give the shadow time to finish
                await self._turn_ended.wait()
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._on_failure(name, "shadow_send_failed", type(exc).__name__)
        finally:
            await ws.close()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            item = await self._queue.get()
            if item is _END or ws.closed:
                return
            frame, starts_turn = item  # type: ignore[misc]
            if starts_turn and self._turn_open:
                # A service abandons a turn when the next begins: let this one finish first.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._turn_timeout_s):
                        await self._turn_ended.wait()
            if starts_turn:
                self._turn_open = True
                self._turn_ended.clear()
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        name = self.variant.name
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                frame: str = message.data
                self._on_text(name, frame, time.monotonic())
                if _is_turn_end(frame):
                    self._turn_open = False
                    self._turn_ended.set()
            elif message.type is aiohttp.WSMsgType.BINARY:
                continue
            else:
                if message.type is aiohttp.WSMsgType.CLOSE and message.data != 1000:
                    self._on_failure(name, f"upstream_close_{message.data}", str(message.extra))
                self._turn_open = False
                self._turn_ended.set()  # nothing more will come: release any waiter
                return


def _is_turn_end(frame: str) -> bool:
    try:
        return decode_text(frame).path == Path.TURN_END
    except UspError:
        return False
