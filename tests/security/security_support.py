"""Helpers of the security tests: gateways served in this process, raw HTTP exchanges that
say exactly what went over the wire, and a backend that records the raw requests it gets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from support import CLIENT_KEY, QA_KEY, silence, write_gateway_config

from gateway.config.settings import Settings, load_settings
from gateway.control.model import hash_key
from gateway.protocol.paths import V1_PATHS
from gateway.protocol.wav import wave_header
from gateway.server.app import create_gateway_app

# Words no recogniser would produce by chance: a log line holding one holds a transcript.
TRANSCRIPT = "Quokka marmalade zeppelin harbour."
TRANSCRIPT_WORDS = ("quokka", "marmalade", "zeppelin", "harbour")
PSEUDONYM_KEY = "security-pseudonym-key-6d1f0a93c4"
ADMIN_TOKEN = "security-admin-token-b81c2e77f0"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLIENT = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
QA = {"Ocp-Apim-Subscription-Key": QA_KEY}
CONVERSATION = V1_PATHS[1]
WAV_TYPE = "audio/wav; codecs=audio/pcm; samplerate=16000"
WAV = wave_header() + silence(1.0)
ANSWER_TIMEOUT_S = 20.0  # no single exchange with an in-process gateway may take longer


def experiment(
    weights: tuple[float, float] = (50, 50), backends: tuple[str, str] = ("alpha", "alpha")
) -> dict[str, object]:
    """Experiment "ab": variants "a" and "b" on the given backends."""
    return {
        "id": "ab",
        "control": "a",
        "variants": [
            {"name": "a", "backend": backends[0], "weight": weights[0]},
            {"name": "b", "backend": backends[1], "weight": weights[1]},
        ],
    }


def gateway_settings(
    work: Path,
    backends: dict[str, str],
    experiments: list[dict[str, object]] | None = None,
    *,
    outcomes: dict[str, object] | None = None,
    **gateway: object,
) -> Settings:
    """Settings of a gateway with the app and qa clients, the ADMIN_TOKEN admin and a fixed
    pseudonym key, writing outcomes to work/outcomes.jsonl."""
    work.mkdir(parents=True, exist_ok=True)
    gateway.setdefault("admin_tokens_sha256", {"ops": hash_key(ADMIN_TOKEN)})
    config = write_gateway_config(
        work / "gateway.toml",
        backends=backends,
        experiments=[experiment()] if experiments is None else experiments,
        outcomes=work / "outcomes.jsonl",
        **gateway,
    )
    section: dict[str, object] = {
        "path": str(work / "outcomes.jsonl"),
        "pseudonym_key": PSEUDONYM_KEY,
        "generated_key_path": str(work / "pseudonym.key"),
        "journal_dir": str(work / "journal"),
        **(outcomes or {}),
    }
    return load_settings(config, outcomes=section)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` on a free loopback port in this event loop; yields the port."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()
        sock.close()


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[int]:
    """A real gateway app (create_gateway_app) served in this event loop; yields its port."""
    async with serve(create_gateway_app(settings)) as port:
        yield port


# -- raw HTTP --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawAnswer:
    """What came back for one raw request; status None: closed without an answer."""

    status: int | None
    head: bytes
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


def parse_answer(data: bytes) -> RawAnswer:
    """The status and head of an answer's head block (None: not an HTTP answer)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    match = _STATUS_LINE.match(head)
    if match is None:
        return RawAnswer(None, data, b"")
    return RawAnswer(int(match.group(1)), head, rest)


async def raw_exchange(
    port: int, request: bytes, *, half_close: bool = False, timeout_s: float = ANSWER_TIMEOUT_S
) -> RawAnswer:
    """Send `request` as is and read the final answer (1xx skipped): its head and the body
    its framing announces, or what came before the server closed.

    `half_close` shuts the sending side after the request, so a server that still waits for
    body bytes it was promised sees the end of the stream. Raises TimeoutError after
    `timeout_s`: a request the gateway neither answers nor closes is a hang.
    """
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        try:
            with contextlib.suppress(ConnectionError):
                writer.write(request)
                await writer.drain()
                if half_close and writer.can_write_eof():
                    writer.write_eof()
            return await _read_answer(reader)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:  # closed without (a whole) answer
            return parse_answer(exc.partial)
        except ConnectionError:
            return RawAnswer(None, b"", b"")
        answer = parse_answer(head)
        if answer.status is None or not 100 <= answer.status < 200:
            break
    lowered = head.lower()
    length = re.search(rb"\r\ncontent-length: *(\d+)", lowered)
    try:
        if length is not None:
            body = await reader.readexactly(int(length.group(1)))
        elif b"\r\ntransfer-encoding: chunked" in lowered:
            body = await _read_chunks(reader)
        else:
            body = await reader.read()
    except asyncio.IncompleteReadError as exc:
        body = exc.partial
    except ConnectionError:
        body = b""
    return RawAnswer(answer.status, head[:-4], body)


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if size == 0:
            return bytes(body)


def http_request(
    method: str,
    target: str,
    headers: list[tuple[str | bytes, str | bytes]] | None = None,
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> bytes:
    """A raw HTTP/1.1 request, headers written exactly as given (bytes stay bytes)."""

    def raw(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("latin-1")

    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: 127.0.0.1"]
    for name, value in headers or []:
        lines.append(raw(name) + b": " + raw(value))
    if content_length:
        lines.append(f"Content-Length: {len(body)}".encode())
    if not any(raw(name).lower() == b"connection" for name, _ in headers or []):
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# -- a backend that records raw requests -----------------------------------------------------


@dataclass
class RecordingBackend:
    """A TCP server that records each request's head byte for byte and answers 503.

    It reads the body its head announces (Content-Length or chunked) before answering, so
    that the gateway never fails mid-upload and always reads the answer.
    """

    heads: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RecordingBackend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                await _drain_body(reader, head)
            body = b"recorded"
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _drain_body(reader: asyncio.StreamReader, head: bytes) -> None:
    lowered = head.lower()
    length = re.search(rb"\r\ncontent-length: *(\d+)", lowered)
    if length is not None:
        await reader.readexactly(int(length.group(1)))
    elif b"\r\ntransfer-encoding: chunked" in lowered:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return


# -- server-side errors ----------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Collects ERROR records of the loggers that report unhandled exceptions in a server:
    aiohttp's (a handler that raised: HTTP 500) and asyncio's (a task that died)."""

    LOGGERS = ("aiohttp.server", "aiohttp.web", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def unexpected(self) -> list[str]:
        """Errors other than aiohttp refusing a malformed HTTP message (answered with 400)
        or failing to write to a client that had gone (e.g. its `100 Continue` to a client
        that had already closed its side)."""
        from aiohttp.http_exceptions import HttpProcessingError

        found = []
        for record in self.records:
            exc = record.exc_info[1] if record.exc_info else None
            if isinstance(exc, HttpProcessingError) and exc.code == 400:
                continue
            if isinstance(exc, ConnectionError):
                continue
            found.append(f"{record.name}: {record.getMessage()} {exc!r}")
        return found


@contextlib.contextmanager
def server_errors() -> Iterator[ErrorLog]:
    """Collect unhandled server-side errors while the block runs."""
    handler = ErrorLog()
    loggers = [logging.getLogger(name) for name in ErrorLog.LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
