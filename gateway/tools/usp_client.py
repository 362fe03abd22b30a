"""A minimal Speech-SDK-like USP client: one turn of audio, every service message back.

It sends what the native SDK sends (protocol.md §2.2): `speech.config`, `speech.context`,
a RIFF header, PCM in 3,200-byte frames, an empty audio message, then reads until
`turn.end`. Used by tests that need many sessions fast, and by the benchmarks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from gateway.protocol.usp import (
    TextMessage,
    decode_text,
    encode_binary,
    encode_text,
    new_request_id,
)
from gateway.protocol.wav import wave_header

FRAME_BYTES = 3200  # 100 ms of 16 kHz 16-bit mono, as the native SDK sends
_CONFIG = {"context": {"system": {"name": "SpeechSDK", "version": "usp-client"}}}


@dataclass
class TurnResult:
    request_id: str
    messages: list[TextMessage] = field(default_factory=list)
    close_code: int | None = None

    def paths(self) -> list[str]:
        return [m.path for m in self.messages]

    def phrases(self) -> list[dict[str, object]]:
        return [json.loads(m.body) for m in self.messages if m.path == "speech.phrase"]

    def texts(self) -> list[str]:
        return [str(p.get("DisplayText", "")) for p in self.phrases() if p.get("DisplayText")]


async def recognize(
    http: aiohttp.ClientSession,
    url: str,
    pcm: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    context: Mapping[str, object] | None = None,
    frame_interval_s: float = 0.0,
    timeout_s: float = 60.0,
) -> TurnResult:
    """One connection, one turn. `frame_interval_s=0.1` paces the audio in real time."""
    request_id = new_request_id()
    result = TurnResult(request_id)
    async with asyncio.timeout(timeout_s):
        async with http.ws_connect(url, headers=dict(headers or {}), protocols=("USP",)) as ws:
            await ws.send_str(encode_text("speech.config", None, json.dumps(_CONFIG)))
            body = json.dumps(context or {"phraseDetection": {"language": "en-US"}})
            await ws.send_str(encode_text("speech.context", request_id, body))
            header = [("Content-Type", "audio/x-wav")]
            await ws.send_bytes(
                encode_binary("audio", request_id, wave_header(), extra_headers=header)
            )
            for start in range(0, len(pcm), FRAME_BYTES):
                await ws.send_bytes(
                    encode_binary("audio", request_id, pcm[start : start + FRAME_BYTES])
                )
                if frame_interval_s:
                    await asyncio.sleep(frame_interval_s)
            await ws.send_bytes(encode_binary("audio", request_id, b""))
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                decoded = decode_text(message.data)
                result.messages.append(decoded)
                if decoded.path == "turn.end":
                    break
            result.close_code = ws.close_code
    return result
