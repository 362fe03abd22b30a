"""Malformed USP input over a raw WebSocket: the right close code, and no collateral damage.

Every case runs next to a well-formed "bystander" session opened before the garbage and
kept open during it; afterwards `/status` must answer and the bystander must complete its
turn, so a bad peer can neither crash the server nor disturb other sessions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import CloseCode
from gateway.protocol.usp import encode_binary, encode_text, new_request_id
from gateway.protocol.wav import WaveFormat, wave_header
from gateway.tools.local_services import LocalEmulator

WS_PATH = "/speech/recognition/interactive/cognitiveservices/v1?language=en-US"
TIMEOUT_S = 60.0
PCM_SECOND = b"\0\1" * 16000
Frame = str | bytes


@pytest.fixture(scope="module")
def instant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant-engine emulator without auth, shared by this module's tests."""
    work = tmp_path_factory.mktemp("usp-malformed")
    with LocalEmulator("--engine", "instant", log_path=work / "emulator.log") as running:
        yield running


def ws_url(emulator: LocalEmulator) -> str:
    return f"{emulator.ws_url}{WS_PATH}"


def context(request_id: str) -> str:
    return encode_text("speech.context", request_id, '{"phraseDetection":{"language":"en-US"}}')


def audio(request_id: str, payload: bytes) -> bytes:
    return encode_binary("audio", request_id, payload)


@dataclass
class Bystander:
    """A well-formed session, opened mid-turn before the garbage and finished after it."""

    ws: aiohttp.ClientWebSocketResponse
    request_id: str = field(default_factory=new_request_id)
    paths: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, emulator: LocalEmulator) -> Bystander:
        """Start a turn and wait for its turn.start, so the server holds it before the garbage."""
        ws = await http.ws_connect(ws_url(emulator), protocols=("USP",))
        bystander = cls(ws)
        rid = bystander.request_id
        await ws.send_str(encode_text("speech.config", None, '{"context":{}}'))
        await ws.send_str(context(rid))
        await ws.send_bytes(audio(rid, wave_header()))
        await ws.send_bytes(audio(rid, PCM_SECOND))
        await bystander._receive_until("turn.start")
        return bystander

    async def complete_turn(self) -> None:
        """Send the rest of the turn's audio and check the whole turn arrives, in order."""
        await self.ws.send_bytes(audio(self.request_id, PCM_SECOND))
        await self.ws.send_bytes(audio(self.request_id, b""))
        await self._receive_until("turn.end")
        assert self.paths[0] == "turn.start"
        assert self.paths[-3:] == ["speech.endDetected", "speech.phrase", "turn.end"]
        await self.ws.close()

    async def _receive_until(self, path: str) -> None:
        while not self.paths or self.paths[-1] != path:
            message = await self.ws.receive(timeout=TIMEOUT_S)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            headers, _, body = message.data.partition("\r\n\r\n")
            fields = dict(line.split(":", 1) for line in headers.split("\r\n"))
            assert fields["X-RequestId"] == self.request_id
            self.paths.append(fields["Path"])
            if fields["Path"] == "speech.phrase":
                assert json.loads(body)["RecognitionStatus"] == "Success"


async def send_all(ws: aiohttp.ClientWebSocketResponse, frames: Sequence[Frame]) -> None:
    """Send frames in order; stop quietly once the server has closed the socket."""
    for frame in frames:
        try:
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError):
            return


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes: its close code (None for a close without a frame)."""
    while True:
        message = await ws.receive(timeout=TIMEOUT_S)
        if message.type is aiohttp.WSMsgType.CLOSE:
            return int(message.data)
        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return None


async def check_server_healthy(http: aiohttp.ClientSession, emulator: LocalEmulator) -> None:
    async with http.get(f"{emulator.http_url}/status") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


def text_frame(head: str, body: str = "{}") -> str:
    return f"{head}\r\n\r\n{body}"


def raw_binary(head: bytes, payload: bytes = b"") -> bytes:
    """A binary message with a correct length prefix around arbitrary header bytes."""
    return len(head).to_bytes(2, "big") + head + payload


RID = new_request_id()
AUDIO_HEAD = f"Path:audio\r\nX-RequestId:{RID}\r\n".encode()
NARROWBAND = WaveFormat(sample_rate=8000, channels=1, bits_per_sample=16)
MALFORMED: dict[str, tuple[list[Frame], int]] = {
    "text-without-path": (
        [text_frame(f"X-RequestId:{RID}\r\nContent-Type:application/json")],
        CloseCode.PROTOCOL_ERROR,
    ),
    "context-without-request-id": (
        [text_frame("Path:speech.context\r\nContent-Type:application/json")],
        CloseCode.PROTOCOL_ERROR,
    ),
    "text-without-separator": (
        [f"Path:speech.context\r\nX-RequestId:{RID}\r\n{{}}"],
        CloseCode.PROTOCOL_ERROR,
    ),
    "binary-empty": ([b""], CloseCode.PROTOCOL_ERROR),
    "binary-of-one-byte": ([b"\x00"], CloseCode.PROTOCOL_ERROR),
    "binary-header-length-too-large": (
        [(len(AUDIO_HEAD) + 1).to_bytes(2, "big") + AUDIO_HEAD],
        CloseCode.PROTOCOL_ERROR,
    ),
    "binary-header-latin1": (
        [context(RID), raw_binary(AUDIO_HEAD + b"X-Note:caf\xe9\r\n", wave_header())],
        CloseCode.PROTOCOL_ERROR,
    ),
    "binary-header-utf8-non-ascii": (
        [context(RID), raw_binary(AUDIO_HEAD + "X-Note:café\r\n".encode(), wave_header())],
        CloseCode.PROTOCOL_ERROR,
    ),
    "binary-over-64-KiB": (
        [context(RID), audio(RID, wave_header() + bytes(1 << 16))],
        CloseCode.MESSAGE_TOO_BIG,
    ),
    "text-over-1-MiB": (
        [encode_text("speech.context", RID, '{"pad":"' + "x" * (1 << 20) + '"}')],
        CloseCode.MESSAGE_TOO_BIG,
    ),
    "audio-before-context": ([audio(RID, wave_header())], CloseCode.PROTOCOL_ERROR),
    "audio-for-another-request-id": (
        [context(RID), audio(new_request_id(), wave_header())],
        CloseCode.PROTOCOL_ERROR,
    ),
    "first-audio-not-riff": (
        [context(RID), audio(RID, b"OggS" + bytes(100))],
        CloseCode.INVALID_PAYLOAD,
    ),
    "first-audio-8-kHz": (
        [context(RID), audio(RID, wave_header(NARROWBAND))],
        CloseCode.INVALID_PAYLOAD,
    ),
}


@pytest.mark.parametrize(("frames", "code"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_input_gets_its_close_code(
    instant: LocalEmulator, frames: list[Frame], code: int
) -> None:
    """Malformed input gets its close code without harming the server or another session."""
    async with aiohttp.ClientSession() as http:
        bystander = await Bystander.open(http, instant)
        async with http.ws_connect(ws_url(instant), protocols=("USP",)) as ws:
            await send_all(ws, frames)
            assert await close_code(ws) == code
        await check_server_healthy(http, instant)
        await bystander.complete_turn()


async def test_bystander_turn_completes_on_its_own(instant: LocalEmulator) -> None:
    """The bystander's turn alone completes normally: the baseline the other tests rely on."""
    async with aiohttp.ClientSession() as http:
        bystander = await Bystander.open(http, instant)
        await bystander.complete_turn()


# Binary messages for the fuzzer: raw random bytes, a random header block behind a correct
# length prefix, and well-formed audio messages whose payload is random or RIFF-like.
RANDOM_BINARY = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=120).map(raw_binary),
    st.binary(max_size=400).map(lambda payload: audio(RID, payload)),
    st.binary(max_size=400).map(lambda payload: audio(RID, b"RIFF" + payload)),
    st.binary(max_size=64).map(lambda tail: audio(RID, wave_header()[:-8] + tail)),
)
ALLOWED_CLOSES = {CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_PAYLOAD, CloseCode.MESSAGE_TOO_BIG}


async def fuzz_once(http: aiohttp.ClientSession, url: str, frames: list[bytes]) -> int | None:
    """Send a context then the frames; the server's close code, or None if it stayed open."""
    probe = new_request_id()
    async with http.ws_connect(url, protocols=("USP",)) as ws:
        await send_all(ws, [context(RID), *frames])
        # Messages are handled in order: the probe's turn.start proves that every frame
        # before it was processed without a close.
        await send_all(ws, [context(probe)])
        while True:
            message = await ws.receive(timeout=TIMEOUT_S)
            if message.type is aiohttp.WSMsgType.TEXT:
                if f"X-RequestId:{probe}" in message.data and "Path:turn.start" in message.data:
                    return None
                continue
            if message.type is aiohttp.WSMsgType.CLOSE:
                return int(message.data)
            raise AssertionError(f"connection ended without a close frame: {message}")


async def _client_session() -> aiohttp.ClientSession:
    # A ClientSession must be created inside the loop that will use it.
    return aiohttp.ClientSession()


def test_random_binary_messages_never_get_an_internal_error(instant: LocalEmulator) -> None:
    """Random binary messages get a 1002, 1007 or 1009 close or none, never 1011 or an abort."""
    with asyncio.Runner() as runner:
        http = runner.run(_client_session())
        try:
            bystander = runner.run(Bystander.open(http, instant))

            @settings(
                max_examples=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
            )
            @given(frames=st.lists(RANDOM_BINARY, min_size=1, max_size=4))
            def fuzz(frames: list[bytes]) -> None:
                code = runner.run(fuzz_once(http, ws_url(instant), frames))
                assert code is None or code in ALLOWED_CLOSES, code

            fuzz()
            runner.run(check_server_healthy(http, instant))
            runner.run(bystander.complete_turn())
        finally:
            runner.run(http.close())
