"""A bare-protocol USP backend for the stream benchmark: the emulator's `instant` answers
at half the emulator's CPU per frame.

On two cores the harness (backend, nginx, load generators) shares one core, and at 1,000
streams the emulator alone needed most of it (67 µs per audio frame: aiohttp's server, a
task wake-up per message, a copied payload, a coroutine per recognition step), so those
runs were void for the harness, not the gateway. This process speaks the same protocol
with the same messages: the emulator's own state machine (`UspSession`) and `instant`
engine (`InstantStream`, which never reads the audio), driven from a bare asyncio Protocol:
one HTTP/1.1 upgrade, frames parsed in the read callback, an audio frame's USP header
unmasked and decoded but its payload (copied once out of the read buffer) never unmasked or
read, results written as they are made. No authentication, no latency knob, no REST, no
fault injection, no fragmented messages (the gateway, nginx and the load generators never
fragment; one closes the connection with 1002): only what the stream benchmark's relay
comparisons need. Not for anything but benchmarks.

    python bench/_bare_backend.py PORT UTTERANCE_MS
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from _common import quiet_gc
from _loopback import LoopbackPort
from aiohttp._websocket.helpers import websocket_mask

from gateway.config.settings import EmulatorSettings
from gateway.emulator import options
from gateway.emulator.endpoints import BASE_MODEL
from gateway.emulator.instant import InstantStream
from gateway.emulator.usp_session import (
    Close,
    CloseStream,
    Command,
    Feed,
    Finish,
    OpenStream,
    Send,
    TurnState,
    UspSession,
)
from gateway.errors import CloseCode
from gateway.event_loop import new_event_loop
from gateway.protocol.usp import (
    DEFAULT_LIMITS,
    BinaryHead,
    BinaryMessage,
    UspError,
    decode_binary,
    decode_binary_head,
    decode_text,
)

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The emulator's script (`emulator.instant_text`, its environment variable or the default),
# so that both answer alike.
INSTANT_TEXT: str = os.environ.get(
    "SPEECH_GATEWAY_EMULATOR__INSTANT_TEXT", EmulatorSettings.model_fields["instant_text"].default
)
MAX_HEAD = 16 * 1024
MAX_MESSAGE = DEFAULT_LIMITS.max_text_bytes  # the emulator's WebSocket message bound
MAX_AUDIO = DEFAULT_LIMITS.max_binary_bytes  # larger: decode_binary's error, in full


def _resolve(endpoint_id: str | None) -> str | None:
    return BASE_MODEL if not endpoint_id else None


def _now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the instant engine's) to its result, here."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the instant engine suspended")


class _CountingStream(InstantStream):
    """The instant engine with a shortcut: most audio frames fall inside an utterance's
    window, before or after its half-way partial, where `feed` makes no event at all."""

    def quiet(self, size: int) -> bool:
        """Count `size` bytes and say True if `feed` would have made no event of them."""
        received = self._received + size
        if (
            self._received == self._window_start
            or (not self._partial_sent and received >= self._window_start + self._window // 2)
            or received - self._window_start >= self._window
        ):
            return False
        self._received = received
        return True


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


class BareUsp(asyncio.Protocol):
    """One backend connection: the upgrade, then USP messages through `UspSession`."""

    def __init__(self, utterance_ms: int) -> None:
        self._utterance_ms = utterance_ms
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._session: UspSession | None = None
        self._stream: _CountingStream | None = None
        self._closed = False
        self._head = bytearray()
        self._decoded = BinaryHead("", None, 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._buffer += data
        if self._session is None and not self._upgrade():
            return
        try:
            self._frames()
        except UspError as exc:
            self._close(int(exc.close_code), exc.reason)

    def _upgrade(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self._refuse(b"431 Request Header Fields Too Large")
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        target = head[0].split(" ")[1]
        fields = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        key = fields.get("sec-websocket-key")
        if key is None:
            self._refuse(b"400 Bad Request")
            return False
        parts = urlsplit(target)
        try:
            url_options = options.from_query(parts.path, dict(parse_qsl(parts.query)))
        except UspError:
            self._refuse(b"400 Bad Request")
            return False
        if _resolve(url_options.endpoint_id) is None:  # as the emulator: no such endpoint
            self._refuse(b"400 Bad Request")
            return False
        # RFC 6455 names SHA-1 for the accept key; it is no security measure.
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID, usedforsecurity=False).digest())
        answer = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept,
        ]
        if "USP" in fields.get("sec-websocket-protocol", ""):
            answer.append(b"Sec-WebSocket-Protocol: USP")
        assert self._transport is not None
        self._transport.write(b"\r\n".join(answer) + b"\r\n\r\n")
        self._session = UspSession(parts.path, url_options, _resolve)
        return True

    def _refuse(self, status: bytes) -> None:
        assert self._transport is not None
        self._transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        self._transport.close()
        self._closed = True

    def _frames(self) -> None:
        buffer = self._buffer
        while not self._closed:
            size = len(buffer)
            if size < 2:
                return
            first, second = buffer[0], buffer[1]
            length = second & 0x7F
            at = 2
            if length == 126:
                if size < 4:
                    return
                length = int.from_bytes(buffer[2:4], "big")
                at = 4
            elif length == 127:
                if size < 10:
                    return
                length = int.from_bytes(buffer[2:10], "big")
                at = 10
            if not second & 0x80:
                raise UspError("an unmasked client frame", CloseCode.PROTOCOL_ERROR)
            if first & 0x70 or not first & 0x80 or not first & 0x0F:
                raise UspError("reserved bits or a fragment", CloseCode.PROTOCOL_ERROR)
            if length > MAX_MESSAGE:  # the emulator's bound (aiohttp's max_msg_size)
                raise UspError("message too big", CloseCode.MESSAGE_TOO_BIG)
            if size < at + 4 + length:
                return
            mask = bytes(buffer[at : at + 4])
            at += 4
            payload = buffer[at : at + length]
            del buffer[: at + length]
            self._message(first & 0x0F, mask, payload)

    def _message(self, opcode: int, mask: bytes, payload: bytearray) -> None:
        session = self._session
        assert session is not None
        if opcode == BINARY:
            if session.state is TurnState.STREAMING and 2 <= len(payload) <= MAX_AUDIO:
                # Audio: unmask and decode only the USP header; the instant engine counts
                # the payload's bytes and never reads them.
                prefix = bytearray(payload[:2])
                websocket_mask(mask, prefix)
                head = bytearray(payload[: 2 + (prefix[0] << 8 | prefix[1])])
                websocket_mask(mask, head)
                if head != self._head:  # a turn's frames repeat one header: decoded once
                    self._head = head
                    self._decoded = decode_binary_head(bytes(head))
                path, request_id, start = self._decoded
                message = BinaryMessage(path, request_id, (), memoryview(payload)[start:])
                commands = session.receive_binary(message)
                stream = self._stream
                if (
                    len(commands) == 1
                    and type(commands[0]) is Feed
                    and stream is not None
                    and stream.quiet(len(message.payload))
                ):
                    return  # counted; the session, inside an utterance, has nothing to say
                self._run(commands)
                return
            websocket_mask(mask, payload)
            self._run(session.receive_binary(decode_binary(bytes(payload))))
        elif opcode == TEXT:
            websocket_mask(mask, payload)
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise UspError(
                    "a text message that is no UTF-8", CloseCode.INVALID_PAYLOAD
                ) from None
            self._run(session.receive_text(decode_text(text)))
        elif opcode == PING:
            websocket_mask(mask, payload)
            self._write(PONG, bytes(payload))
        elif opcode == CLOSE:
            self._close(1000, "")

    def _run(self, commands: list[Command]) -> None:
        """Execute commands in order; follow-ups run before the rest (as the emulator's)."""
        session = self._session
        assert session is not None
        queue: deque[Command] = deque(commands)
        while queue and not self._closed:
            command = queue.popleft()
            follow_up: list[Command] = []
            match command:
                case Send(frame=frame):
                    self._write(TEXT, frame.encode("utf-8"))
                case OpenStream():
                    self._stream = _CountingStream(INSTANT_TEXT, self._utterance_ms)
                case Feed(pcm=pcm) if self._stream is not None:
                    follow_up = session.recognized(_now(self._stream.feed(pcm)))
                case Finish() if self._stream is not None:
                    follow_up = session.stream_finished(_now(self._stream.finish()))
                case CloseStream():
                    self._stream = None
                case Close(code=code, reason=reason):
                    self._close(code, reason)
            queue.extendleft(reversed(follow_up))

    def _write(self, opcode: int, payload: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(server_frame(opcode, payload))

    def _close(self, code: int, reason: str) -> None:
        self._write(CLOSE, struct.pack("!H", code) + reason.encode()[:120])
        self._closed = True
        if self._transport is not None:
            self._transport.close()


async def _serve(port: int, utterance_ms: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: BareUsp(utterance_ms), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    quiet_gc()  # start-up's objects: the connections' come later and stay collectable
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


class LocalBareBackend(LoopbackPort):
    """This backend in a child process on a free port, for `with`; as `LocalEmulator` is
    for the emulator (`ws_url`, `http_url`, its child in `_proc`)."""

    def __init__(self, utterance_ms: int) -> None:
        super().__init__()
        self._utterance_ms = utterance_ms
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LocalBareBackend:
        command = [sys.executable, __file__, str(self.port), str(self._utterance_ms)]
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            self.__exit__()
            raise RuntimeError("the bare backend did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None


def main() -> None:
    port, utterance_ms = int(sys.argv[1]), int(sys.argv[2])
    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve(port, utterance_ms))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    main()
