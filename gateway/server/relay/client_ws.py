"""The USP relay's audio fast path at the WebSocket layer: a frame in, a frame out, no task.

With aiohttp's own reader, every client message is parsed in the read callback, queued, and
handed to the relay's pump task by a wake-up of that task (a future, a `call_soon`, a task
step, `receive()`), and the pump's `send_bytes` is a coroutine of its own. For an audio frame
that is most of the Python the gateway runs per frame. Here the client's WebSocket reads
through a `RelayQueue`, which offers each binary message to the session (`take`) in the
read callback itself, and `write_now` writes a frame to the backend's WebSocket without a
coroutine; what the session does not take is queued for the pump as before.

Two rules keep this exactly as ordered and as bounded as the pump alone:

* a message is offered only while the pump is parked in the queue's `read()` on an empty
  queue and nothing was queued since (`parked`), and the session takes it only with
  nothing of its own pending, so nothing overtakes anything. "The pump is in `receive()`"
  would not do: aiohttp's reader, paused by a full queue, resumes parsing inside `read()`
  after taking a message off the queue and before handing it over, and a frame offered
  then would overtake that message;
* `write_now` writes only while the backend's connection is open and not pushing back (its
  transport's buffer under the high-water mark); otherwise the frame goes the pump's way,
  whose `send_bytes` waits for the drain, and the client is read no faster than that.

Both classes reach into aiohttp's WebSocket internals (`aiohttp._websocket`, the private
`_post_start` and the writer's `_write_websocket_frame`): they are written against the
aiohttp version the lock file pins, and tests/server/relay/test_client_ws.py runs them
against it, through aiohttp's own C reader and writer.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp._websocket.models import WSMessage, WSMessageTextBytes
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.helpers import DEFAULT_CHUNK_SIZE

# The `extra` of a binary message the session already took through its relay state machine
# but could not finish in the callback (the relay answered with commands): the pump executes
# those commands instead of relaying the message again. The reader's own messages carry "".
HELD = "gateway:held"

# What `take` returns: None (taken, never queued) or the message to queue for the pump.
Take = Callable[[WSMessage], WSMessage | None]


class RelayQueue(WebSocketDataQueue):
    """aiohttp's WebSocket message queue, with a first look at each binary message.

    `take` is offered every binary message the reader parses while the pump waits in `read()`
    on an empty queue; what it takes never enters the queue, so the pump task is not woken
    for it.
    """

    take: Take | None = None
    # The pump waits in read() on an empty queue, and nothing was queued since. (aiohttp's
    # compiled queue keeps its waiter private, so read() says it.)
    parked = False

    async def read(self) -> WSMessage | WSMessageTextBytes:
        # With a message queued, read() returns it without waiting, resuming a paused parser
        # on the way: not parked, so nothing parsed then is offered ahead of that message.
        self.parked = not self._buffer
        try:
            return await super().read()
        finally:
            self.parked = False

    def feed_data(self, data: WSMessage | WSMessageTextBytes, size: int) -> None:
        take = self.take
        if take is not None and data.type is WSMsgType.BINARY and self.parked:
            # A binary message is always a WSMessage (WSMessageTextBytes is text only).
            taken = take(data)  # type: ignore[arg-type]
            if taken is None:
                return
            data = taken
        self.parked = False  # the pump is woken for this one: later ones queue behind it
        super().feed_data(data, size)


class RelayedWebSocket(web.WebSocketResponse):
    """The client's WebSocket, reading through a `RelayQueue` (`queue`, once prepared).

    `_post_start` is aiohttp's own with the queue's class changed: it is where aiohttp builds
    the reader and its queue, and the C reader keeps the queue it was built with.
    """

    queue: RelayQueue | None = None

    def _post_start(
        self, request: web.BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        assert loop is not None
        queue = RelayQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=loop)
        self.queue = self._reader = queue
        self._parser = WebSocketReader(
            queue, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
        )
        cb = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=cb)
        request.protocol.keep_alive(False)  # as aiohttp: no HTTP keep-alive after an upgrade


def can_write_now(upstream: aiohttp.ClientWebSocketResponse) -> bool:
    """Whether `write_now` may write to `upstream`: open, not closing, not pushing back."""
    writer = upstream._writer
    return not (
        upstream.closed
        or writer._closing
        or writer.protocol._paused
        or writer.transport.is_closing()
    )


def write_now(upstream: aiohttp.ClientWebSocketResponse, frame: bytes) -> None:
    """`await upstream.send_bytes(frame)` without the coroutine, for a socket that
    `can_write_now`: the same frame (header, random mask, masked payload) in one write.

    Raises aiohttp's ClientConnectionResetError if the transport closes meanwhile."""
    writer = upstream._writer
    writer._write_websocket_frame(frame, WSMsgType.BINARY, 0)
    # `send_frame` would wait for a drain here once this many bytes went out since the last
    # check; `can_write_now` checks the same pause before every frame instead.
    if writer._output_size > writer._limit:
        writer._output_size = 0
