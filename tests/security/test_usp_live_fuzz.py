"""Fuzzing a real gateway over real WebSockets: random USP frames in, no crash, no hang.

A gateway app served in this process relays to an instant emulator. Each fuzz case opens a
session with a valid client key, starts a turn, sends random frames (well-formed, hostile
JSON, garbage text and bytes), then a probe `speech.context`. The session must either still
relay (the probe's turn.start comes back) or be closed with a code the SDKs read as a
protocol or payload error; never 1011, never an abort, never a hang. Afterwards the gateway
is healthy and still recognises speech, and it logged no unhandled error.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_support import (
    ANSWER_TIMEOUT_S,
    CLIENT,
    CONVERSATION,
    TRANSCRIPT,
    experiment,
    gateway_settings,
    running_gateway,
    serve,
    server_errors,
)
from support import silence
from usp_strategies import REQUEST_IDS, client_binaries, client_texts

from gateway.errors import CloseCode
from gateway.protocol.usp import encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header
from gateway.tools.local_services import LocalEmulator
from gateway.tools.usp_client import recognize

Frame = str | bytes
RID = REQUEST_IDS[0]
ALLOWED_CLOSES = {CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_PAYLOAD, CloseCode.MESSAGE_TOO_BIG}
frames = st.lists(st.one_of(client_texts, client_binaries), min_size=1, max_size=8)


def context(request_id: str) -> str:
    return encode_text("speech.context", request_id, '{"phraseDetection":{"language":"en-US"}}')


async def send_all(ws: aiohttp.ClientWebSocketResponse, sequence: list[Frame]) -> None:
    """Send in order; stop quietly once the gateway has closed the session."""
    for frame in sequence:
        if ws.closed:
            return
        try:
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError):
            return


async def fuzz_session(http: aiohttp.ClientSession, url: str, sequence: list[Frame]) -> int | None:
    """One session: its close code, or None when the probe turn started (still relaying)."""
    probe = new_request_id()
    async with (
        asyncio.timeout(ANSWER_TIMEOUT_S),
        http.ws_connect(url, headers=CLIENT, protocols=("USP",)) as ws,
    ):
        start = [
            encode_text("speech.config", None, '{"context":{}}'),
            context(RID),
            encode_binary("audio", RID, wave_header()),
        ]
        await send_all(ws, [*start, *sequence, context(probe)])
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                if f"X-RequestId:{probe}" in message.data and "Path:turn.start" in message.data:
                    return None
                continue
            if message.type is aiohttp.WSMsgType.BINARY:
                continue
            if message.type is aiohttp.WSMsgType.CLOSE:
                return int(message.data)
            raise AssertionError(f"the session ended without a close frame: {message}")


def test_random_frames_never_crash_or_hang_the_gateway(
    instant: LocalEmulator, tmp_path: Path
) -> None:
    """About a thousand random frames in 200 sessions: each session relays on or is closed with
    1002, 1007 or 1009; the gateway stays healthy, still recognises speech and logs no
    unhandled error."""
    settings_ = gateway_settings(tmp_path, {"alpha": instant.ws_url})
    outcomes: list[int | None] = []
    with asyncio.Runner() as runner, server_errors() as errors:
        stack = contextlib.AsyncExitStack()
        try:
            port = runner.run(stack.enter_async_context(running_gateway(settings_)))
            http = runner.run(_client_session())
            stack.push_async_callback(http.close)
            url = f"ws://127.0.0.1:{port}{CONVERSATION}?language=en-US"

            @settings(
                max_examples=200,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(sequence=frames)
            def fuzz(sequence: list[Frame]) -> None:
                code = runner.run(fuzz_session(http, url, sequence))
                assert code is None or code in ALLOWED_CLOSES, code
                outcomes.append(code)

            fuzz()
            runner.run(_check_healthy(http, port))
        finally:
            runner.run(stack.aclose())
    assert not errors.unexpected(), errors.unexpected()
    # The fuzzer reached both outcomes: sessions that survived and sessions it broke.
    assert None in outcomes
    assert set(outcomes) - {None}


async def _client_session() -> aiohttp.ClientSession:
    # A ClientSession must be created inside the loop that will use it.
    return aiohttp.ClientSession()


async def _check_healthy(http: aiohttp.ClientSession, port: int) -> None:
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        url = f"ws://127.0.0.1:{port}{CONVERSATION}?language=en-US"
        result = await recognize(http, url, silence(1.0), headers=CLIENT)
        assert result.texts() == [TRANSCRIPT]


INFINITE_CONTINUATION = encode_text(
    "speech.context", RID, '{"continuation":{"audio":{"streams":{"1":{"offset":1e999}}}}}'
)


async def test_a_hostile_speech_context_cannot_kill_its_session(
    instant: LocalEmulator, tmp_path: Path
) -> None:
    """A speech.context whose continuation offset overflows (1e999 parses as infinity) is
    relayed like any other context: the session goes on, nothing is logged as unhandled."""
    settings_ = gateway_settings(tmp_path, {"alpha": instant.ws_url})
    with server_errors() as errors:
        async with running_gateway(settings_) as port, aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{port}{CONVERSATION}?language=en-US"
            code = await fuzz_session(http, url, [INFINITE_CONTINUATION])
            await _check_healthy(http, port)
    assert code is None
    assert not errors.unexpected(), errors.unexpected()


@pytest.mark.parametrize(
    "reason",
    ["x" * 119 + "é" + "ab", "é" * 61 + "x", "🎙" * 30 + "abc", ""],
    ids=["split-at-120", "two-byte", "four-byte", "empty"],
)
async def test_a_backends_close_reason_reaches_the_client_as_valid_utf8(
    tmp_path: Path, reason: str
) -> None:
    """The backend closes with 4000 and a reason of up to 123 bytes of multi-byte UTF-8:
    the client gets a close frame with 4000 and the reason (whole, or cut at a character
    boundary), never a frame whose reason is cut inside a character (a 1007 error)."""

    async def backend(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        await ws.receive()
        await ws.close(code=4000, message=reason.encode())
        return ws

    app = web.Application()
    app.router.add_get(CONVERSATION, backend)
    async with serve(app) as backend_port:
        backends = {"alpha": f"ws://127.0.0.1:{backend_port}"}
        settings_ = gateway_settings(tmp_path, backends, [experiment((100, 0))])
        async with running_gateway(settings_) as port, aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{port}{CONVERSATION}?language=en-US"
            async with http.ws_connect(url, headers=CLIENT, protocols=("USP",)) as ws:
                await ws.send_str(encode_text("speech.config", None, "{}"))
                message = await ws.receive(timeout=ANSWER_TIMEOUT_S)
    assert message.type is aiohttp.WSMsgType.CLOSE, (message.type, message.data)
    assert message.data == 4000
    assert reason.startswith(message.extra or "")
    assert len(reason) - len(message.extra or "") <= 3  # at most a few characters cut
