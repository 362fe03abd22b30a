"""A scripted speech backend for the handshake-fidelity tests, and the real SDK against it.

`ScriptedBackend` runs its own event loop in a thread (the native SDK blocks, so the tests
drive it from threads) and answers each upgrade by the first segment of its path,
`/<case>/<the SDK's path>`:

    serve              a minimal USP service: one Success phrase per turn
    status_<N>         answers the upgrade with HTTP N, a body and some headers
    echo_key           answers 400 with the key it was sent in the body and a header
    redirect_<N>_<to>  answers N with a Location `same` (ws:// on this port, `serve`),
                       `other` (ws:// on the second port), `http` (http:// here) or `none`
    close_<code>       turn.start after the first audio, then a close frame with <code>
    drop               turn.start after the first audio, then its TCP connection closed
    phrase_<status>    turn.start, a status phrase and turn.end after the first audio
                       (<status> in lower case: case names are backend names, which the
                       gateway's environment variables give in any case)

Every case is served on a second port too (`other_port`), a different origin. Besides, a
`silent_port` accepts connections and never answers, and `bad_handshake_port` answers
every upgrade with a 101 whose Sec-WebSocket-Accept is wrong. Each upgrade request is
recorded: its case, path and query, headers under the names they were sent with, and the
subprotocols it offered.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import azure.cognitiveservices.speech as speechsdk
from aiohttp import WSMsgType, web
from support import DATA

from gateway.protocol.usp import (
    RecognitionStatus,
    decode_binary_head,
    decode_text,
    encode_text,
    status_phrase_body,
)
from gateway.tools.local_services import free_port
from gateway.tools.speech_client import Transcript, transcribe_file

WAV = DATA / "demo" / "banking" / "audio" / "banking-001.wav"
PATH = "/speech/recognition/interactive/cognitiveservices/v1"
SERVED_TEXT = "Served by the scripted backend."
BODY_NOTE = "scripted refusal"  # short: the SDK cuts its details at about 300 characters
CLOSE_REASON = "scripted close"
# Headers every scripted refusal carries. The native SDK shows apim-request-id, X-RequestId
# and Content-Type in its error details; Set-Cookie and Location the gateway withholds.
REFUSAL_HEADERS = {
    "apim-request-id": "r-1",
    "X-RequestId": "q-1",
    "X-Backend-Note": "kept",
    "Set-Cookie": "backend-session=secret; Path=/",
}


@dataclass(frozen=True, slots=True)
class Received:
    """One upgrade request as the backend saw it."""

    case: str
    port: int
    path_qs: str
    headers: tuple[tuple[str, str], ...]  # names as sent, in order
    protocols: tuple[str, ...]

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}


@dataclass
class ScriptedBackend:
    """See the module docstring. Use as a context manager; `url(case)` is a backend URL."""

    port: int = field(default_factory=free_port)
    other_port: int = field(default_factory=free_port)
    silent_port: int = field(default_factory=free_port)
    bad_handshake_port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stopped: asyncio.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, case: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{case}"

    def http_url(self, case: str) -> str:
        return f"http://127.0.0.1:{self.port}/{case}"

    def requests(self, case: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.case == case]

    def attempts(self) -> Counter[str]:
        with self._lock:
            return Counter(r.case for r in self.received)

    # -- running ---------------------------------------------------------------------------

    def __enter__(self) -> ScriptedBackend:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(30), "the scripted backend did not start"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._stopped is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(30)

    def _run(self, started: threading.Event) -> None:
        asyncio.run(self._main(started))

    async def _main(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{case}/{rest:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        for port in (self.port, self.other_port):
            await web.TCPSite(runner, "127.0.0.1", port).start()
        silent = await asyncio.start_server(_silent, "127.0.0.1", self.silent_port)
        bad = await asyncio.start_server(_bad_handshake, "127.0.0.1", self.bad_handshake_port)
        started.set()
        try:
            await self._stopped.wait()
        finally:
            for server in (silent, bad):
                server.close()
            await runner.cleanup()

    # -- answering -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        raw = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in request.raw_headers)
        port = int(request.url.port or 0)
        protocols = tuple(p.strip() for p in offered.split(",") if p.strip())
        with self._lock:
            self.received.append(Received(case, port, request.path_qs, raw, protocols))
        kind, _, argument = case.partition("_")
        match kind:
            case "status":
                return _refusal(int(argument))
            case "echo":
                key = request.headers.get("Ocp-Apim-Subscription-Key", "")
                headers = {"X-Echo-Key": key, "Content-Type": "text/plain"}
                return web.Response(status=400, text=f"you sent the key {key}", headers=headers)
            case "redirect":
                status, _, to = argument.partition("_")
                return self._redirect(request, int(status), to)
            case "serve" | "close" | "drop" | "phrase":
                return await _usp(request, kind, argument)
        raise web.HTTPNotFound(text=f"no case {case!r}")

    def _redirect(self, request: web.Request, status: int, to: str) -> web.Response:
        rest = f"/serve/{request.match_info['rest']}?{request.query_string}"
        locations = {
            "same": f"ws://127.0.0.1:{self.port}{rest}",
            "other": f"ws://127.0.0.1:{self.other_port}{rest}",
            "http": f"http://127.0.0.1:{self.port}{rest}",
        }
        headers = {"Location": locations[to]} if to in locations else {}
        return web.Response(
            status=status, text=f"moved to {headers.get('Location')}", headers=headers
        )


def _refusal(status: int) -> web.Response:
    text = f"{BODY_NOTE} {status}" if status >= 400 else ""
    return web.Response(status=status, text=text or None, headers=REFUSAL_HEADERS)


async def _usp(request: web.Request, kind: str, argument: str) -> web.WebSocketResponse:
    """The USP cases: answer the first turn as `kind` says, then serve until closed."""
    ws = web.WebSocketResponse(protocols=("USP",))  # USP if the client offered it
    await ws.prepare(request)
    answered: set[str] = set()
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            decode_text(message.data)  # well-formed, or the test should fail here
            continue
        if message.type is not WSMsgType.BINARY:
            break
        head = decode_binary_head(message.data)
        rid = head.request_id
        if rid is None or rid in answered or head.path != "audio":
            continue
        answered.add(rid)
        await ws.send_str(encode_text("turn.start", rid, '{"context":{}}'))
        match kind:
            case "serve":
                await _phrase(ws, rid)
            case "close":
                await ws.close(code=int(argument), message=CLOSE_REASON.encode())
            case "drop":
                assert request.transport is not None
                request.transport.close()  # no close frame
            case _:
                status = next(s for s in RecognitionStatus if s.value.lower() == argument)
                body = status_phrase_body(status)
                await ws.send_str(encode_text("speech.phrase", rid, body))
                await ws.send_str(encode_text("turn.end", rid, "{}"))
        if kind in ("close", "drop"):
            break
    return ws


async def _phrase(ws: web.WebSocketResponse, rid: str) -> None:
    phrase = {"RecognitionStatus": "Success", "DisplayText": SERVED_TEXT}
    phrase |= {"Offset": 0, "Duration": 10_000_000}
    await ws.send_str(encode_text("speech.startDetected", rid, '{"Offset":0}'))
    await ws.send_str(encode_text("speech.endDetected", rid, '{"Offset":10000000}'))
    await ws.send_str(encode_text("speech.phrase", rid, json.dumps(phrase)))
    await ws.send_str(encode_text("turn.end", rid, "{}"))


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # never answers; ends when the peer goes
    writer.close()


async def _bad_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBhbnN3ZXI=\r\n\r\n"
    )
    await writer.drain()
    await reader.read()
    writer.close()


# -- the native SDK ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SdkRun:
    transcript: Transcript
    seconds: float

    @property
    def code(self) -> str | None:
        return self.transcript.error_code

    @property
    def details(self) -> str:
        return self.transcript.error_details or ""


def sdk_once(url: str, key: str, variant: str | None = None) -> SdkRun:
    """recognize_once of the banking WAV with the native SDK at `url` (a full endpoint),
    forcing the gateway's `variant` if given. The variant goes in a header, so the URL in
    the SDK's error details is no longer than directly (the SDK cuts its details)."""
    config = speechsdk.SpeechConfig(endpoint=url, subscription=key)
    config.speech_recognition_language = "en-US"
    if variant is not None:
        channel = speechsdk.ServicePropertyChannel.HttpHeader
        config.set_service_property("X-Gateway-Variant", variant, channel)
    started = time.monotonic()
    transcript = transcribe_file(config, WAV, continuous=False, timeout_s=90)
    return SdkRun(transcript, time.monotonic() - started)


def counted(backend: ScriptedBackend, case: str, run: Callable[[], SdkRun]) -> tuple[SdkRun, int]:
    """`run()` and how many upgrade requests the backend got for `case` meanwhile."""
    before = backend.attempts()[case]
    result = run()
    return result, backend.attempts()[case] - before


def gateway_experiment(cases: list[str]) -> dict[str, Any]:
    """One experiment, control `serve`, a variant per case on the backend of that name; the
    qa client forces the variant of each session (`gw-variant`)."""
    names = ["serve", *[c for c in cases if c != "serve"]]
    return {
        "id": "fidelity",
        "control": "serve",
        "variants": [{"name": c, "backend": c, "weight": 1} for c in names],
    }


# A backend that fails must neither open its breaker nor fail over: each case stays itself.
STEADY_BREAKER = {"consecutive_failures": 10000, "min_attempts": 10000, "on_open": "reject"}


def key_env(cases: list[str], key: str) -> dict[str, str]:
    """The environment that gives every backend the same key."""
    return {f"SPEECH_GATEWAY_GATEWAY__BACKENDS__{c.upper()}__KEY": key for c in cases}


def normalized_details(details: str) -> str:
    """Error details without what differs between two connections anyway: the URL line
    (direct vs gateway) and the connection's id."""
    lines = []
    for line in details.split("\n"):
        if line.startswith(("ws://", "wss://")):
            line = "<url>"
        elif line.startswith("X-ConnectionId:"):
            line = "X-ConnectionId: <id>"
        lines.append(line)
    text = "\n".join(lines)
    head, marker, _session = text.rpartition(" SessionId: ")
    return head if marker else text
