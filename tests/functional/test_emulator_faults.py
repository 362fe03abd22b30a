"""Fault knobs, the concurrency bound and the instant engine, seen through the real SDK."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest

from gateway.protocol.usp import encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header
from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator

CODES = speechsdk.CancellationErrorCode
INSTANT_TEXT = "Please check my savings balance."
TIMEOUT = aiohttp.ClientTimeout(total=120)


def instant_emulator(tmp_path: Path, *args: str) -> LocalEmulator:
    """An instant-engine emulator without auth, logging into tmp_path."""
    return LocalEmulator("--engine", "instant", *args, log_path=tmp_path / "emulator.log")


def recognize_once(emulator: LocalEmulator, wav: Path) -> Any:
    """recognize_once with SpeechConfig(host=...), the container style (interactive path)."""
    config = speechsdk.SpeechConfig(host=emulator.ws_url)
    audio = speechsdk.audio.AudioConfig(filename=str(wav))
    recognizer = speechsdk.SpeechRecognizer(speech_config=config, audio_config=audio)
    return recognizer.recognize_once()


def error_code(result: Any) -> Any:
    assert result.reason == speechsdk.ResultReason.Canceled, result
    details = result.cancellation_details
    assert details.reason == speechsdk.CancellationReason.Error
    return details.code


async def status(emulator: LocalEmulator) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.get(f"{emulator.http_url}/status") as response,
    ):
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


@pytest.fixture
def wav(datasets: dict[str, list[LabelledUtterance]]) -> Path:
    return datasets["banking"][0].audio


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant emulator with a scripted transcript and no faults."""
    work = tmp_path_factory.mktemp("scripted")
    with instant_emulator(work, "--instant-text", INSTANT_TEXT) as running:
        yield running


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("http", "429", CODES.TooManyRequests),
        ("http", "401", CODES.AuthenticationFailure),
        ("http", "503", CODES.ServiceUnavailable),
        ("close", "1007", CODES.BadRequest),
        ("close", "4429", CODES.TooManyRequests),
        ("usp", "Error", CODES.ServiceError),
        ("usp", "TooManyRequests", CODES.TooManyRequests),
        ("usp", "BadRequest", CODES.BadRequest),
    ],
    ids=lambda value: str(value).rpartition(".")[2],
)
def test_injected_failure_reaches_the_sdk_as_its_error_code(
    tmp_path: Path, wav: Path, kind: str, value: str, expected: Any
) -> None:
    """Each fault kind and status reaches recognize_once as the error code protocol.md §5 names."""
    args = ("--failure-rate", "1", "--failure-kind", kind, "--failure-status", value)
    with instant_emulator(tmp_path, *args) as emulator:
        assert error_code(recognize_once(emulator, wav)) == expected


def test_latency_still_gives_the_result(tmp_path: Path, wav: Path) -> None:
    """With --latency-ms 300 the result still arrives, no sooner than the added latency."""
    with instant_emulator(tmp_path, "--latency-ms", "300", "--instant-text", INSTANT_TEXT) as em:
        started = time.monotonic()
        result = recognize_once(em, wav)
        elapsed = time.monotonic() - started
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech
    assert result.text == INSTANT_TEXT
    assert elapsed >= 0.3  # a lower bound: the phrase itself waits 300 ms


def test_seeded_failure_rate_fails_the_sessions_its_generator_picks(
    tmp_path: Path, wav: Path
) -> None:
    """--failure-rate 0.5 --failure-seed 1 fails exactly the sessions random.Random(1) picks."""
    rng = random.Random(1)
    expected = [rng.random() < 0.5 for _ in range(10)]
    assert any(expected)
    assert not all(expected)
    # A 4429 close is never retried by the SDK, so each recognize_once is one session and one
    # draw; status-phrase failures would be retried (see the test below) and hide the draws.
    args = ("--failure-rate", "0.5", "--failure-seed", "1", "--failure-kind", "close")
    with instant_emulator(tmp_path, *args, "--failure-status", "4429") as emulator:
        results = [recognize_once(emulator, wav) for _ in expected]
        served = asyncio.run(status(emulator))["served_sessions"]
    assert served == len(expected)
    failed = [r.reason == speechsdk.ResultReason.Canceled for r in results]
    assert failed == expected
    for result, fails in zip(results, failed, strict=True):
        if fails:
            assert error_code(result) == CODES.TooManyRequests
        else:
            assert result.reason == speechsdk.ResultReason.RecognizedSpeech
            assert result.text


@pytest.mark.parametrize(
    ("kind", "value", "retried"),
    [("usp", "TooManyRequests", True), ("close", "4429", False)],
    ids=["usp-phrase", "close-4429"],
)
def test_sdk_retries_a_failure_phrase_but_not_a_4429_close(
    tmp_path: Path, wav: Path, kind: str, value: str, retried: bool
) -> None:
    """The native SDK reconnects after a failure status phrase, but not after a 4429 close."""
    args = ("--failure-rate", "1", "--failure-kind", kind, "--failure-status", value)
    with instant_emulator(tmp_path, *args) as emulator:
        assert error_code(recognize_once(emulator, wav)) == CODES.TooManyRequests
        served = asyncio.run(status(emulator))["served_sessions"]
    assert (served > 1) is retried, served


async def open_held_session(emulator: LocalEmulator, http: aiohttp.ClientSession) -> Any:
    """A raw session that has started a turn (speech.context sent, turn.start received)."""
    path = "/speech/recognition/interactive/cognitiveservices/v1?language=en-US"
    ws = await http.ws_connect(f"{emulator.ws_url}{path}", protocols=("USP",))
    request_id = new_request_id()
    await ws.send_str(encode_text("speech.config", None, '{"context":{}}'))
    await ws.send_str(encode_text("speech.context", request_id, "{}"))
    await ws.send_bytes(encode_binary("audio", request_id, wave_header()))
    message = await ws.receive(timeout=60)
    assert message.type is aiohttp.WSMsgType.TEXT
    assert message.data.startswith("Path:turn.start")
    return ws


async def wait_for_active_sessions(emulator: LocalEmulator, count: int) -> None:
    """Poll /status until active_sessions is `count` (release follows the close shortly)."""
    deadline = time.monotonic() + 60
    while (await status(emulator))["active_sessions"] != count:
        assert time.monotonic() < deadline, f"active_sessions never became {count}"
        await asyncio.sleep(0.1)


async def test_max_sessions_bounds_concurrent_sessions(tmp_path: Path, wav: Path) -> None:
    """Past --max-sessions a session is refused as TooManyRequests; a freed slot is reusable."""
    with instant_emulator(tmp_path, "--max-sessions", "1") as emulator:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            held = await open_held_session(emulator, http)
            report = await status(emulator)
            assert report["active_sessions"] == 1
            assert report["max_sessions"] == 1
            refused = await asyncio.to_thread(recognize_once, emulator, wav)
            assert error_code(refused) == CODES.TooManyRequests
            assert (await status(emulator))["active_sessions"] == 1
            await held.close()
            await wait_for_active_sessions(emulator, 0)
        result = await asyncio.to_thread(recognize_once, emulator, wav)
        assert result.reason == speechsdk.ResultReason.RecognizedSpeech
        await wait_for_active_sessions(emulator, 0)


async def test_plain_get_on_a_websocket_path_holds_no_session_slot(tmp_path: Path) -> None:
    """A GET that is no WebSocket upgrade is refused and does not use up a session slot."""
    with instant_emulator(tmp_path, "--max-sessions", "1") as emulator:
        url = f"{emulator.http_url}/speech/recognition/interactive/cognitiveservices/v1"
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            for _ in range(3):
                async with http.get(url, params={"language": "en-US"}) as response:
                    assert response.status == 400
            assert (await status(emulator))["active_sessions"] == 0
            held = await open_held_session(emulator, http)
            assert (await status(emulator))["active_sessions"] == 1
            await held.close()


def test_instant_engine_answers_with_its_script(scripted: LocalEmulator, wav: Path) -> None:
    """The instant engine's result is the scripted --instant-text in Display form."""
    result = recognize_once(scripted, wav)
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech
    assert result.text == INSTANT_TEXT


async def test_status_names_the_instant_engine(scripted: LocalEmulator) -> None:
    """/status names the engine `instant`, so nobody mistakes its results for recognition."""
    report = await status(scripted)
    assert report["engine"] == "instant"
    assert report["status"] == "ok"


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("http", "200"),
        ("http", "²"),
        ("close", "999"),
        ("close", "1006"),
        ("close", "1" * 5000),
        ("usp", "NoSuchStatus"),
    ],
    ids=["http-200", "http-unicode-digit", "close-999", "close-1006", "close-5000-digits", "usp"],
)
def test_invalid_fault_config_exits_2_naming_the_field(kind: str, value: str) -> None:
    """An invalid failure status makes `speech-gateway emulate` exit 2 naming the field."""
    command = [sys.executable, "-m", "gateway", "emulate", "--engine", "instant"]
    command += ["--port", "0", "--failure-kind", kind, "--failure-status", value]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "emulator.faults.failure_status" in done.stderr
    assert "Traceback" not in done.stderr
