"""A minimal WebSocket client (RFC 6455) for the load generators, on a bare asyncio Protocol.

aiohttp's client costs the load generator tens of microseconds per sent frame (a coroutine
per send, a fresh random mask, a copy to mask into, a drain check) and a task wake-up per
sleep between frames; at 1,000+ real-time streams per process that made the generator, not
the system under test, the bottleneck. Here a stream's audio frame is encoded and masked
once (one random mask per stream: any key is valid on the wire, a server cannot tell) and
each send is one `transport.write` from a timer callback.

Only what the benchmarks need: one HTTP/1.1 upgrade, unfragmented frames from the server
(aiohttp never fragments), pings answered, close answered. Not for anything but benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import cast

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

# (opcode, payload) of a whole message from the server
OnMessage = Callable[[int, bytes], None]


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """`payload` XOR the repeated 4-byte `key` (in one big-int operation, no Python loop)."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(
        n, "little"
    )


def encode_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final client frame, masked with `key` (a fresh random one if None)."""
    key = os.urandom(4) if key is None else key
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + key + mask_bytes(payload, key)


class HandshakeError(ConnectionError):
    pass


class WsClient(asyncio.Protocol):
    """One client connection: `connect()`, then `send_*`/`write`, messages to `on_message`."""

    def __init__(self, on_message: OnMessage | None = None) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._upgraded = False
        self._buffer = bytearray()
        self._close_sent = False

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        target: str,
        headers: Mapping[str, str],
        protocols: Sequence[str] = (),
        on_message: OnMessage | None = None,
    ) -> WsClient:
        loop = asyncio.get_running_loop()
        _transport, client = await loop.create_connection(lambda: cls(on_message), host, port)
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        client.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        try:
            await client._handshake
        except BaseException:
            client.abort()
            raise
        return client

    # -- sending ---------------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        """Send an already encoded frame (see `encode_frame`)."""
        assert self.transport is not None
        self.transport.write(frame)

    def send_text(self, text: str) -> None:
        self.write(encode_frame(TEXT, text.encode("utf-8")))

    def send_binary(self, payload: bytes) -> None:
        self.write(encode_frame(BINARY, payload))

    def close(self, code: int = 1000) -> None:
        """Send a close frame (once); the server's close reply ends the connection."""
        if self._close_sent or self.transport is None or self.transport.is_closing():
            return
        self._close_sent = True
        self.write(encode_frame(CLOSE, struct.pack("!H", code)))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(exc or HandshakeError("closed during the upgrade"))
        if not self.closed.done():
            self.closed.set_result(1006)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[: self._buffer.find(b"\r\n")])
            del self._buffer[: end + 4]
            if not status.startswith(b"HTTP/1.1 101"):
                self._handshake.set_exception(HandshakeError(status.decode("latin-1")))
                self.abort()
                return
            self._upgraded = True
            self._handshake.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            if second & 0x80:
                raise HandshakeError("a server frame was masked")
            n, at = second & 0x7F, 2
            if n == 126:
                if len(buffer) < 4:
                    return
                n, at = struct.unpack_from("!H", buffer, 2)[0], 4
            elif n == 127:
                if len(buffer) < 10:
                    return
                n, at = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < at + n:
                return
            payload = bytes(buffer[at : at + n])
            del buffer[: at + n]
            if not first & 0x80:
                raise HandshakeError("fragmented server frames are not supported")
            self._message(first & 0x0F, payload)

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            self.write(encode_frame(PONG, payload))
        elif opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self._close_sent:
                self._close_sent = True
                self.write(encode_frame(CLOSE, payload[:2]))
            if not self.closed.done():
                self.closed.set_result(code)
            assert self.transport is not None
            self.transport.close()
        elif opcode in (TEXT, BINARY) and self.on_message is not None:
            self.on_message(opcode, payload)
