"""Graceful drain of a real `speech-gateway serve` process on SIGTERM, with live Speech SDK
sessions through it: a session in flight finishes and is recorded, a long continuous one is
closed with 1012 when the grace period ends, new sessions are refused meanwhile while the
health endpoints keep answering, every record is flushed, and the process exits 0."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest
from conftest import ALPHA, gateway_for
from control_support import metric
from support import CLIENT_KEY, read_outcomes, silence

from gateway.protocol.usp import decode_text, encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.speech_client import speech_config

GRACE_S = 6.0
CLOSE_TIMEOUT_S = 5.0
# One path per session, so that each session's records are told apart by their mode.
SHORT = "/speech/recognition/interactive/cognitiveservices/v1"
LONG_SDK = "/speech/recognition/conversation/cognitiveservices/v1"
LONG_RAW = "/speech/recognition/dictation/cognitiveservices/v1"
FRAME = silence(0.1)
KEY = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
LIVE_USP = {"experiment": "drain", "variant": "a", "protocol": "usp"}


@pytest.fixture
def gateway(alpha: LocalEmulator, tmp_path: Path) -> Iterator[LocalGateway]:
    variant = {"name": "a", "backend": "alpha", "weight": 1}
    experiment = {"id": "drain", "control": "a", "variants": [variant]}
    drain = {"grace_s": GRACE_S, "close_timeout_s": CLOSE_TIMEOUT_S}
    with gateway_for(tmp_path, {"alpha": alpha.ws_url}, [experiment], drain=drain) as running:
        yield running


@dataclass
class SdkSession:
    """A Speech SDK recognizer fed from a push stream in real time, on its own threads."""

    recognized: list[str] = field(default_factory=list)
    canceled: Any = None  # the CancellationDetails, if canceled
    stopped: threading.Event = field(default_factory=threading.Event)
    first_result: threading.Event = field(default_factory=threading.Event)
    feeding: threading.Event = field(default_factory=threading.Event)

    def start(self, endpoint: str, *, seconds: float | None) -> None:
        """Continuous recognition of `seconds` of audio (None: until `stop_feeding`)."""
        stream = speechsdk.audio.PushAudioInputStream()
        audio = speechsdk.audio.AudioConfig(stream=stream)
        recognizer = speechsdk.SpeechRecognizer(
            speech_config=speech_config(endpoint, CLIENT_KEY), audio_config=audio
        )

        def on_recognized(event: Any) -> None:
            if event.result.reason == speechsdk.ResultReason.RecognizedSpeech:
                self.recognized.append(event.result.text)
                self.first_result.set()

        def on_canceled(event: Any) -> None:
            self.canceled = event.result.cancellation_details
            self.stopped.set()

        recognizer.recognized.connect(on_recognized)
        recognizer.canceled.connect(on_canceled)
        recognizer.session_stopped.connect(lambda _event: self.stopped.set())
        self.feeding.set()

        def feed() -> None:
            started = time.monotonic()
            while self.feeding.is_set():
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
                stream.write(FRAME)
                time.sleep(0.1)
            stream.close()

        recognizer.start_continuous_recognition()
        self._feeder = threading.Thread(target=feed, daemon=True)
        self._feeder.start()
        self._recognizer = recognizer

    def finish(self, timeout_s: float) -> bool:
        """Stop feeding; wait for the session to end; whether it ended in time."""
        ended = self.stopped.wait(timeout_s)
        self.feeding.clear()
        self._feeder.join(5)
        self._recognizer.stop_continuous_recognition()
        # The SDK keeps its connection while the recognizer lives: let it go.
        self._recognizer = None
        gc.collect()
        return ended


@dataclass
class RawSession:
    close_code: int | None = None
    close_reason: str = ""
    phrases: int = 0


async def raw_long_session(http: aiohttp.ClientSession, url: str, result: RawSession) -> None:
    """USP by hand, audio in real time until the gateway closes the connection."""
    request_id = new_request_id()
    async with http.ws_connect(url, headers=KEY, protocols=("USP",)) as ws:
        await ws.send_str(encode_text("speech.config", None, json.dumps({"context": {}})))
        context = json.dumps({"phraseDetection": {"language": "en-US"}})
        await ws.send_str(encode_text("speech.context", request_id, context))
        header = [("Content-Type", "audio/x-wav")]
        await ws.send_bytes(encode_binary("audio", request_id, wave_header(), extra_headers=header))

        async def feed() -> None:
            while True:
                await ws.send_bytes(encode_binary("audio", request_id, FRAME))
                await asyncio.sleep(0.1)

        feeder = asyncio.create_task(feed())
        try:
            while True:
                message = await ws.receive()
                if message.type is aiohttp.WSMsgType.TEXT:
                    result.phrases += decode_text(message.data).path == "speech.phrase"
                elif message.type is aiohttp.WSMsgType.CLOSE:
                    result.close_code, result.close_reason = message.data, message.extra or ""
                    break
                else:
                    break
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        await asyncio.sleep(0.05)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def until_draining(http: aiohttp.ClientSession, gateway: LocalGateway) -> None:
    deadline = time.monotonic() + 5
    while (await get(http, f"{gateway.http_url}/readyz"))[0] != 503:
        assert time.monotonic() < deadline, "the drain did not begin within 5 s"
        await asyncio.sleep(0.02)


def log_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def test_sigterm_drains_live_sessions_then_exits_zero(
    gateway: LocalGateway, tmp_path: Path
) -> None:
    """The whole drain, as an operator's SIGTERM meets real sessions."""
    long_sdk = SdkSession()
    long_sdk.start(f"{gateway.ws_url}{LONG_SDK}", seconds=None)
    short_sdk = SdkSession()
    raw = RawSession()
    async with aiohttp.ClientSession() as http:
        raw_task = asyncio.create_task(raw_long_session(http, f"{gateway.ws_url}{LONG_RAW}", raw))
        try:
            await wait_for(lambda: raw.phrases >= 1, 15, "a result on the raw session")
            await wait_for(long_sdk.first_result.is_set, 15, "a result on the SDK session")
            status, text = await get(http, f"{gateway.http_url}/metrics")
            assert metric(text, "speech_gateway_sessions_live", **LIVE_USP) == 2
            # A short session starts, and is in flight when SIGTERM arrives.
            short_sdk.start(f"{gateway.ws_url}{SHORT}", seconds=2.0)
            await asyncio.sleep(0.7)
            signalled = time.monotonic()
            stopping = asyncio.create_task(asyncio.to_thread(gateway.stop))
            await until_draining(http, gateway)
            # Draining: not ready, alive, new sessions refused (USP and REST), metrics up.
            assert await get(http, f"{gateway.http_url}/readyz") == (
                503,
                "draining: the gateway is shutting down\n",
            )
            assert (await get(http, f"{gateway.http_url}/healthz"))[0] == 200
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{gateway.ws_url}{SHORT}", headers=KEY)
            assert refused.value.status == 503
            async with http.post(
                f"{gateway.http_url}{SHORT}?language=en-US", headers=KEY, data=b"RIFF"
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
            status, text = await get(http, f"{gateway.http_url}/metrics")
            assert status == 200
            assert metric(text, "speech_gateway_draining") == 1

            # The short session finishes within the grace period, with its result.
            assert await asyncio.to_thread(short_sdk.finish, GRACE_S + 2)
            # (The end of a push stream ends continuous recognition as EndOfStream.)
            canceled = short_sdk.canceled
            assert canceled is None or canceled.reason == speechsdk.CancellationReason.EndOfStream
            assert short_sdk.recognized == [ALPHA]
            # The long ones are closed with 1012 once the grace period is over.
            await asyncio.wait_for(raw_task, GRACE_S + CLOSE_TIMEOUT_S + 5)
        finally:
            if not raw_task.done():
                raw_task.cancel()
    assert raw.close_code == 1012
    assert raw.close_reason == "Instance is shutting down"
    closed_after = time.monotonic() - signalled
    assert GRACE_S - 0.5 <= closed_after <= GRACE_S + 3, closed_after
    # The SDK reconnects on 1012 (a load balancer would send it to another replica); here
    # every retry is refused (503, then no listener), so it ends with that error, not with
    # "closed by the remote host. Error code: 1012", which would mean it gave up at once.
    assert await asyncio.to_thread(long_sdk.finish, 60)
    assert long_sdk.canceled is not None
    assert long_sdk.canceled.reason == speechsdk.CancellationReason.Error
    assert long_sdk.canceled.code in (
        speechsdk.CancellationErrorCode.ConnectionFailure,
        speechsdk.CancellationErrorCode.ServiceUnavailable,
    ), long_sdk.canceled.error_details
    assert "Error code: 1012" not in long_sdk.canceled.error_details
    assert len(long_sdk.recognized) >= 1

    assert await stopping == 0
    assert time.monotonic() - signalled < GRACE_S + CLOSE_TIMEOUT_S + 3

    # Every result a client saw has its record, flushed before the exit.
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    by_mode: dict[str | None, list[Any]] = {}
    for record in records:
        by_mode.setdefault(record.mode, []).append(record)
    assert [(r.status, r.text) for r in by_mode["interactive"]] == [("Success", ALPHA)]
    assert len(by_mode["dictation"]) >= raw.phrases >= 1
    sdk_successes = [r for r in by_mode["conversation"] if r.status == "Success"]
    assert len(sdk_successes) >= len(long_sdk.recognized)
    # The turns cut off by the close are recorded as the gateway's, not the model's, doing.
    for mode in ("dictation", "conversation"):
        cut = [r for r in by_mode[mode] if r.error_code == "gateway_shutdown"]
        assert len(cut) == 1, mode
        assert cut[0].kind.value == "session_failure"

    events = log_events(tmp_path / "gateway.log")
    names = [e["event"] for e in events]
    for name in ("shutdown_signal", "drain_started", "drain_grace_over", "drain_sessions_done"):
        assert name in names
    started = next(e for e in events if e["event"] == "drain_started")
    assert (started["live"], started["usp"], started["rest"]) == (3, 3, 0)
    done = next(e for e in events if e["event"] == "drain_sessions_done")
    assert (done["closed"], done["left"]) == (2, 0)
    flushed = next(e for e in events if e["event"] == "outcomes_flushed")
    assert flushed["written"] == len(records)
    assert flushed["dropped"] == 0
    assert names.index("outcomes_flushed") < names.index("gateway_stopped")


async def test_sigterm_with_no_live_session_exits_at_once(gateway: LocalGateway) -> None:
    """Nothing to wait for: the process stops within a second and exits 0."""
    started = time.monotonic()
    assert await asyncio.to_thread(gateway.stop) == 0
    assert time.monotonic() - started < 2.0
