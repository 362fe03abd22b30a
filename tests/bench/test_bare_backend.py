"""bench/_bare_backend.py answers a stream exactly as the emulator's instant engine does.

The stream benchmark may front its targets with the bare backend instead of the emulator
(`usp_streams.py --backend bare`); its results mean the same only if its answers are the
same messages: the same paths, in the same order, with the same bodies (the turn's
service tag and each phrase's id aside, fresh random ids on both).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from gateway.protocol.usp import decode_text, encode_binary, encode_text
from gateway.protocol.wav import wave_header
from gateway.tools.local_services import LocalEmulator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _bare_backend import LocalBareBackend  # noqa: E402
from _wsclient import BINARY, TEXT, WsClient, encode_frame  # noqa: E402

UTTERANCE_MS = 1000
PATH = "/speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed"
CONTEXT = json.dumps({"phraseDetection": {"language": "en-US", "mode": "CONVERSATION"}})
REQUEST_ID = "0123456789abcdef0123456789abcdef"


async def answers(port: int, frames: int, frame_bytes: int) -> list[tuple[str, object]]:
    """(path, body) of every text message until turn.end, for one turn of `frames` audio
    frames of `frame_bytes` bytes each (odd sizes too: windows fall inside frames)."""
    received: list[tuple[str, object]] = []
    done = asyncio.get_running_loop().create_future()

    def on_message(opcode: int, payload: bytes) -> None:
        if opcode != TEXT:
            return
        message = decode_text(payload.decode("utf-8"))
        body = json.loads(message.body)
        if message.path == "turn.start":
            body["context"]["serviceTag"] = "-"  # random on both
        if "Id" in body:
            body["Id"] = "-"  # a phrase's id: random on both
        received.append((message.path, body))
        if message.path == "turn.end" and not done.done():
            done.set_result(None)

    client = await WsClient.connect("127.0.0.1", port, PATH, {}, ("USP",), on_message)
    client.send_text(encode_text("speech.config", None, "{}"))
    client.send_text(encode_text("speech.context", REQUEST_ID, CONTEXT))
    riff = [("Content-Type", "audio/x-wav")]
    client.send_binary(encode_binary("audio", REQUEST_ID, wave_header(), extra_headers=riff))
    for _ in range(frames):
        pcm = os.urandom(frame_bytes)
        client.write(encode_frame(BINARY, encode_binary("audio", REQUEST_ID, pcm)))
    client.send_binary(encode_binary("audio", REQUEST_ID, b""))
    async with asyncio.timeout(20):
        await done
        client.close()
        await client.closed  # the server's close reply ends the connection
    return received


@pytest.mark.parametrize(("frames", "frame_bytes"), [(26, 3200), (37, 2222)])
def test_the_bare_backend_answers_as_the_instant_emulator(
    tmp_path: Path, frames: int, frame_bytes: int
) -> None:
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__INSTANT_UTTERANCE_MS": str(UTTERANCE_MS)}
    emulator = LocalEmulator("--engine", "instant", log_path=tmp_path / "emulator.log", env=env)
    with emulator, LocalBareBackend(UTTERANCE_MS) as bare:
        expected = asyncio.run(answers(emulator.port, frames, frame_bytes))
        got = asyncio.run(answers(bare.port, frames, frame_bytes))
    paths = [path for path, _ in expected]
    assert paths.count("speech.phrase") >= 2  # several utterances, and the tail
    assert "speech.hypothesis" in paths
    assert got == expected


async def close_code(port: int, frame: bytes) -> int:
    """The close code the backend answers one raw client frame with, after a turn began."""
    client = await WsClient.connect("127.0.0.1", port, PATH, {}, ("USP",))
    client.send_text(encode_text("speech.context", REQUEST_ID, CONTEXT))
    client.write(frame)
    async with asyncio.timeout(10):
        return await client.closed


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # a first fragment (FIN clear): nothing in the benchmark fragments
        (bytes([0x02, 0x80 | 4]) + b"\0\0\0\0" + b"abcd", 1002),
        # reserved bits set
        (bytes([0x80 | 0x40 | 0x02, 0x80 | 4]) + b"\0\0\0\0" + b"abcd", 1002),
        # an unmasked client frame
        (bytes([0x82, 4]) + b"abcd", 1002),
        # a text message that is no UTF-8
        (encode_frame(TEXT, b"\xff\xfe"), 1007),
        # over the emulator's message bound (the length alone decides)
        (bytes([0x82, 0x80 | 127]) + (2 << 20).to_bytes(8, "big") + b"\0\0\0\0", 1009),
        # audio over the binary bound while streaming: decode_binary's own error
        (encode_frame(BINARY, encode_binary("audio", REQUEST_ID, b"\0" * 70_000)), 1009),
    ],
)
def test_the_bare_backend_closes_on_what_it_does_not_read(frame: bytes, code: int) -> None:
    with LocalBareBackend(UTTERANCE_MS) as bare:
        assert asyncio.run(close_code(bare.port, frame)) == code
