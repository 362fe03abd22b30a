"""Configured limits (`gateway.limits`) through real gateway processes: what the real Speech
SDK reports past each one, the close codes and HTTP answers it hides (raw clients), and the
one outcome record, log line and metric every limit hit leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest
from aiohttp import web
from conftest import ALPHA, gateway_for
from support import CLIENT_KEY, DATA, QA_KEY, read_outcomes, read_pcm, silence, write_wav

from gateway.config.settings import load_settings
from gateway.errors import ConfigError
from gateway.outcomes.record import Kind, OutcomeRecord
from gateway.protocol.usp import encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port
from gateway.tools.speech_client import Transcript, transcribe_file

AUDIO = DATA / "demo" / "banking" / "audio"
WAV = AUDIO / "banking-001.wav"  # 3.7 s, 118 KB of PCM
INTERACTIVE = "/speech/recognition/interactive/cognitiveservices/v1"
CONVERSATION = "/speech/recognition/conversation/cognitiveservices/v1"
TIMEOUT = aiohttp.ClientTimeout(total=60)
CODES = speechsdk.CancellationErrorCode
HEADERS = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
QA_HEADERS = {"Ocp-Apim-Subscription-Key": QA_KEY}
WAV_CONTENT_TYPE = {"Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000"}


def experiment() -> dict[str, object]:
    return {
        "id": "lim",
        "control": "a",
        "variants": [{"name": "a", "backend": "alpha", "weight": 1}],
    }


def limited(work: Path, backend: str, **limits: object) -> LocalGateway:
    """A gateway (not started) routing every session to `backend`, with these limits."""
    return gateway_for(work, {"alpha": backend}, [experiment()], limits=limits)


def sdk_config(gateway: LocalGateway, path: str = INTERACTIVE, key: str = CLIENT_KEY) -> Any:
    config = speechsdk.SpeechConfig(endpoint=f"{gateway.ws_url}{path}", subscription=key)
    config.speech_recognition_language = "en-US"
    return config


def recognize_once(gateway: LocalGateway, key: str = CLIENT_KEY) -> Transcript:
    return transcribe_file(sdk_config(gateway, key=key), WAV, continuous=False, timeout_s=60)


def by_session(records: list[OutcomeRecord]) -> dict[str, list[tuple[Kind, str | None, str]]]:
    """(kind, error_code, status) of each session's records, in the order written."""
    sessions: dict[str, list[tuple[Kind, str | None, str]]] = defaultdict(list)
    for record in records:
        sessions[record.session_id].append((record.kind, record.error_code, record.status))
    return dict(sessions)


def limit_hits(gateway: LocalGateway) -> dict[str, float]:
    """speech_gateway_limit_hits_total by limit, from /metrics."""
    with urllib.request.urlopen(f"{gateway.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    hits: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("speech_gateway_limit_hits_total{"):
            labels, value = line.rsplit(" ", 1)
            hits[labels.split('limit="', 1)[1].split('"', 1)[0]] = float(value)
    return hits


def logged_limits(work: Path) -> list[str]:
    """The `limit` of each limit_hit line in the gateway's log (JSON lines)."""
    limits = []
    for line in (work / "gateway.log").read_text(encoding="utf-8").splitlines():
        if '"limit_hit"' in line:
            entry = json.loads(line)
            assert CLIENT_KEY not in line
            assert QA_KEY not in line
            limits.append(entry["limit"])
    return limits


async def open_usp(
    http: aiohttp.ClientSession, gateway: LocalGateway, headers: dict[str, str] = HEADERS
) -> aiohttp.ClientWebSocketResponse:
    """A raw USP connection that has sent speech.config."""
    ws = await http.ws_connect(
        f"{gateway.ws_url}{CONVERSATION}?language=en-US", headers=headers, protocols=("USP",)
    )
    await ws.send_str(encode_text("speech.config", None, '{"context":{}}'))
    return ws


async def upgrade_status(
    http: aiohttp.ClientSession, gateway: LocalGateway, headers: dict[str, str] = HEADERS
) -> tuple[int, str | None]:
    """The status of a refused upgrade and its Retry-After (101 for an accepted one)."""
    try:
        ws = await open_usp(http, gateway, headers)
    except aiohttp.WSServerHandshakeError as exc:
        retry = exc.headers.get("Retry-After") if exc.headers is not None else None
        return exc.status, retry
    await ws.close()
    return 101, None


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the server's close; its code and reason."""
    while True:
        message = await ws.receive(timeout=30)
        if message.type is aiohttp.WSMsgType.CLOSE:
            return message.data, str(message.extra or "")
        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code, ""


# -- audio per turn and per session: close 1007, BadRequest in the SDK, no retry -------------


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 21.6 s of speech: six banking utterances in a row."""
    pcm = b"".join(read_pcm(AUDIO / f"banking-{n:03d}.wav") for n in range(1, 7))
    return write_wav(tmp_path_factory.mktemp("long") / "long.wav", pcm)


def test_turn_audio_limit_cancels_the_sdk_with_bad_request(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A turn over max_turn_audio_bytes: the SDK cancels with BadRequest, the limit in its
    details, and does not retry; one session, one limit_turn_audio record, one log line
    without keys, one count of the metric."""
    with limited(tmp_path, alpha.ws_url, max_turn_audio_bytes=64 * 1024) as gateway:
        transcript = recognize_once(gateway)
        hits = limit_hits(gateway)
    assert (transcript.canceled_reason, transcript.error_code) == ("Error", CODES.BadRequest.name)
    assert "Error code: 1007" in (transcript.error_details or "")
    assert "the turn's audio exceeds 65536 bytes" in (transcript.error_details or "")
    assert transcript.recognized == []
    sessions = by_session(read_outcomes(tmp_path / "outcomes.jsonl"))
    assert list(sessions.values()) == [[(Kind.SESSION_FAILURE, "limit_turn_audio", "BadRequest")]]
    assert hits == {"turn_audio": 1.0}
    assert logged_limits(tmp_path) == ["turn_audio"]


def test_session_audio_limit_cancels_a_continuous_recognition(
    alpha: LocalEmulator, long_wav: Path, tmp_path: Path
) -> None:
    """Continuous recognition past max_session_audio_bytes keeps the results it had and is
    then cancelled with BadRequest, once: the session's utterances and one failure."""
    with limited(
        tmp_path,
        alpha.ws_url,
        max_turn_audio_bytes=1024 * 1024,
        max_session_audio_bytes=300 * 1024,  # about 9.6 s of the 21.6 s
    ) as gateway:
        config = sdk_config(gateway, CONVERSATION)
        transcript = transcribe_file(config, long_wav, continuous=True, timeout_s=60)
    assert (transcript.canceled_reason, transcript.error_code) == ("Error", CODES.BadRequest.name)
    assert "the session's audio exceeds 307200 bytes" in (transcript.error_details or "")
    assert [r.text for r in transcript.recognized] == [ALPHA] * len(transcript.recognized)
    assert 1 <= len(transcript.recognized) <= 3  # 3 s utterances of the first 9.6 s
    (session,) = by_session(read_outcomes(tmp_path / "outcomes.jsonl")).values()
    assert session[-1] == (Kind.SESSION_FAILURE, "limit_session_audio", "BadRequest")
    assert session[:-1] == [(Kind.UTTERANCE, None, "Success")] * len(transcript.recognized)


# -- idle and duration: close 1000 with the service's words; the SDK reconnects -------------


async def test_an_idle_connection_is_closed_with_1000_and_the_service_reason(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A client that sends nothing for idle_timeout_s is closed with 1000 and the service's
    own words; one that keeps sending is not. Each idle close leaves one record."""
    with limited(tmp_path, alpha.ws_url, idle_timeout_s=0.5) as gateway:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            idle = await open_usp(http, gateway)
            started = time.monotonic()
            code, reason = await closed_with(idle)
            waited = time.monotonic() - started
            assert (code, reason) == (
                1000,
                "Exceeded maximum websocket connection idle duration(> 500ms)",
            )
            assert 0.3 < waited < 15
            busy = await open_usp(http, gateway)
            request_id = new_request_id()
            await busy.send_str(encode_text("speech.context", request_id, "{}"))
            await busy.send_bytes(encode_binary("audio", request_id, wave_header()))
            for _ in range(8):  # 1.6 s, never 0.5 s without a frame
                await asyncio.sleep(0.2)
                await busy.send_bytes(encode_binary("audio", request_id, silence(0.1)))
            assert not busy.closed
            await busy.close()
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert [(r.kind, r.error_code, r.status) for r in records if r.error_code] == [
        (Kind.SESSION_FAILURE, "limit_idle_timeout", "Error")
    ]


def test_the_sdk_reconnects_unnoticed_after_an_idle_close(
    alpha: LocalEmulator, long_wav: Path, tmp_path: Path
) -> None:
    """Between recognize_once calls the recognizer's connection goes idle and is closed;
    the next call reconnects by itself and is recognised, as after the service's closes."""
    with limited(tmp_path, alpha.ws_url, idle_timeout_s=0.5) as gateway:
        audio = speechsdk.audio.AudioConfig(filename=str(long_wav))
        recognizer = speechsdk.SpeechRecognizer(
            speech_config=sdk_config(gateway), audio_config=audio
        )
        results = []
        for _ in range(2):
            results.append(recognizer.recognize_once())
            time.sleep(1.5)  # three idle timeouts
        del recognizer
    assert [(r.reason, r.text) for r in results] == [
        (speechsdk.ResultReason.RecognizedSpeech, ALPHA)
    ] * 2
    sessions = list(by_session(read_outcomes(tmp_path / "outcomes.jsonl")).values())
    assert (
        sessions
        == [
            [
                (Kind.UTTERANCE, None, "Success"),
                (Kind.SESSION_FAILURE, "limit_idle_timeout", "Error"),
            ]
        ]
        * 2
    )


async def test_a_busy_session_is_closed_at_max_session_s(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """However busy, a session is closed with 1000 and the service-style reason once it is
    max_session_s old, and leaves one limit_session_duration record."""
    with limited(tmp_path, alpha.ws_url, max_session_s=1.0) as gateway:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            ws = await open_usp(http, gateway)
            started = time.monotonic()
            request_id = new_request_id()
            await ws.send_str(encode_text("speech.context", request_id, "{}"))
            await ws.send_bytes(encode_binary("audio", request_id, wave_header()))

            async def keep_sending() -> None:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    while not ws.closed:
                        await ws.send_bytes(encode_binary("audio", request_id, silence(0.1)))
                        await asyncio.sleep(0.1)

            sender = asyncio.create_task(keep_sending())
            closed = await closed_with(ws)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            assert closed == (1000, "Exceeded maximum websocket connection duration(> 1000ms)")
            assert 0.8 < time.monotonic() - started < 15
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert [(r.kind, r.error_code, r.status) for r in records if r.error_code] == [
        (Kind.SESSION_FAILURE, "limit_session_duration", "Error")
    ]


def test_continuous_recognition_survives_session_duration_closes(
    alpha: LocalEmulator, long_wav: Path, tmp_path: Path
) -> None:
    """Sessions cut every 3 s: the SDK reconnects and replays what was not acknowledged,
    and the application gets every utterance of the 21.6 s file and a normal end."""
    with limited(tmp_path, alpha.ws_url, max_session_s=3.0) as gateway:
        config = sdk_config(gateway, CONVERSATION)
        transcript = transcribe_file(config, long_wav, continuous=True, timeout_s=90)
    assert (transcript.canceled_reason, transcript.error_code) == ("EndOfStream", None)
    offsets = [(r.offset, r.duration) for r in transcript.recognized]
    # Contiguous 3 s utterances over the whole file: nothing lost or repeated.
    assert [start for start, _ in offsets] == [n * 30_000_000 for n in range(len(offsets))]
    assert sum(duration for _, duration in offsets) == pytest.approx(216_141_875, abs=10_000)
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    cut = [r for r in records if r.error_code == "limit_session_duration"]
    assert cut  # it did reconnect
    assert {r.status for r in cut} == {"Error"}
    assert len({r.session_id for r in records}) > len(cut)


# -- message and header sizes: close codes the SDK reports as ConnectionFailure ---------------


async def test_oversized_messages_and_headers_are_closed_with_the_codec_codes(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A text message over max_ws_message_bytes and a binary one over 64 KiB are closed with
    1009, headers over max_usp_header_bytes with 1002; each leaves one record and count."""
    with limited(
        tmp_path, alpha.ws_url, max_ws_message_bytes=128 * 1024, max_usp_header_bytes=512
    ) as gateway:
        request_id = new_request_id()
        frames: list[str | bytes] = [
            encode_text("speech.context", request_id, "x" * (130 * 1024)),
            encode_binary("audio", request_id, bytes(70 * 1024)),
            encode_text("speech.context", request_id, "{}", extra_headers=[("X-Pad", "p" * 1024)]),
        ]
        closes = []
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            for frame in frames:
                ws = await open_usp(http, gateway)
                if isinstance(frame, str):
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
                closes.append((await closed_with(ws))[0])
                await ws.close()
        hits = limit_hits(gateway)
    assert closes == [1009, 1009, 1002]
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert sorted((r.error_code, r.status) for r in records) == [
        ("limit_message_size", "BadRequest"),
        ("limit_message_size", "BadRequest"),
        ("limit_usp_header", "BadRequest"),
    ]
    assert hits == {"message_size": 2.0, "usp_header": 1.0}


# -- admission: 429 / 503 on the upgrade and on REST ----------------------------------------


async def hold_sessions(
    http: aiohttp.ClientSession, gateway: LocalGateway, count: int, headers: dict[str, str]
) -> list[aiohttp.ClientWebSocketResponse]:
    return [await open_usp(http, gateway, headers) for _ in range(count)]


async def test_concurrent_sessions_per_client_and_in_total(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """Past its concurrent sessions a client's upgrade gets 429 with Retry-After (the SDK:
    TooManyRequests); past the process's, anyone's gets 503 (ServiceUnavailable). Each
    refusal is one record; sessions that end make room again."""
    with limited(
        tmp_path, alpha.ws_url, max_sessions_per_client=2, max_sessions_total=3
    ) as gateway:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            held = await hold_sessions(http, gateway, 2, HEADERS)
            assert await upgrade_status(http, gateway) == (429, "5")
            app_sdk = await asyncio.to_thread(recognize_once, gateway)
            held += await hold_sessions(http, gateway, 1, QA_HEADERS)
            assert await upgrade_status(http, gateway, QA_HEADERS) == (503, "5")
            qa_sdk = await asyncio.to_thread(recognize_once, gateway, QA_KEY)
            for ws in held:
                await ws.close()
            # Closed on the client's side; the gateway lets go of them a moment later.
            deadline = time.monotonic() + 15
            while (status := await upgrade_status(http, gateway))[0] != 101:
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.1)
        hits = limit_hits(gateway)
    assert app_sdk.error_code == CODES.TooManyRequests.name
    assert qa_sdk.error_code == CODES.ServiceUnavailable.name
    refusals = {
        (r.client, r.error_code, r.status)
        for r in read_outcomes(tmp_path / "outcomes.jsonl")
        if r.kind is Kind.SESSION_FAILURE
    }
    assert refusals == {
        ("app", "limit_client_sessions", "TooManyRequests"),
        ("qa", "limit_total_sessions", "ServiceUnavailable"),
    }
    assert set(hits) == {"client_sessions", "total_sessions"}


class SlowUpgradeBackend:
    """An in-process WebSocket backend that answers every upgrade after `delay_s`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.upgrades = 0
        self.port = free_port()
        app = web.Application()
        app.router.add_get(CONVERSATION, self._handle)
        self._runner = web.AppRunner(app)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        self.upgrades += 1
        await asyncio.sleep(self.delay_s)
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        async for _message in ws:
            pass
        return ws

    async def __aenter__(self) -> SlowUpgradeBackend:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


async def test_concurrent_upgrades_cannot_all_pass_while_the_backend_is_dialled(
    tmp_path: Path,
) -> None:
    """A session counts from its admission, not from its backend's answer: of ten upgrades
    arriving together while the backend takes a second to answer, exactly the three the
    client may have open are dialled and accepted, the other seven get 429 at once."""
    async with SlowUpgradeBackend(delay_s=1.0) as backend:
        url = f"ws://127.0.0.1:{backend.port}"
        with limited(tmp_path, url, max_sessions_per_client=3) as gateway:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                sockets: list[aiohttp.ClientWebSocketResponse] = []

                async def one() -> int:
                    try:
                        sockets.append(await open_usp(http, gateway))
                    except aiohttp.WSServerHandshakeError as exc:
                        return exc.status
                    return 101

                statuses = await asyncio.gather(*(one() for _ in range(10)))
                for ws in sockets:
                    await ws.close()
            assert sorted(statuses) == [101] * 3 + [429] * 7
            assert backend.upgrades == 3


async def test_connection_rate_per_client_on_upgrades_and_rest(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """Past its burst a client's upgrades and REST requests get 429 with the Retry-After its
    token bucket needs; another client is not affected."""
    with limited(
        tmp_path, alpha.ws_url, connections_per_client_per_s=0.05, connection_burst=2
    ) as gateway:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            assert await upgrade_status(http, gateway) == (101, None)
            assert await upgrade_status(http, gateway) == (101, None)
            assert await upgrade_status(http, gateway) == (429, "20")
            async with http.post(
                f"{gateway.http_url}{CONVERSATION}?language=en-US",
                data=WAV.read_bytes(),
                headers={**HEADERS, **WAV_CONTENT_TYPE},
            ) as answer:
                assert answer.status == 429
                assert answer.headers["Retry-After"] == "20"
                assert "Too many requests" in (await answer.json())["error"]
            assert await upgrade_status(http, gateway, QA_HEADERS) == (101, None)
    refusals = [
        (r.protocol, r.client, r.error_code, r.status)
        for r in read_outcomes(tmp_path / "outcomes.jsonl")
        if r.error_code
    ]
    assert refusals == [
        ("usp", "app", "limit_connection_rate", "TooManyRequests"),
        ("rest", "app", "limit_connection_rate", "TooManyRequests"),
    ]
    assert logged_limits(tmp_path) == ["connection_rate"] * 2


# -- REST ----------------------------------------------------------------------------------


async def slow_body(release: asyncio.Event) -> AsyncIterator[bytes]:
    """A WAV body whose second half waits for `release`."""
    data = WAV.read_bytes()
    yield data[: len(data) // 2]
    await release.wait()
    yield data[len(data) // 2 :]


async def test_rest_requests_count_as_sessions_and_oversized_bodies_get_413(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A REST request in flight counts against the client's sessions (a second one gets 429
    with Retry-After); a body over max_rest_body_bytes gets 413, known from Content-Length or
    found while streaming. Each refusal is one record."""
    with limited(
        tmp_path, alpha.ws_url, max_sessions_per_client=1, max_rest_body_bytes=64 * 1024
    ) as gateway:
        url = f"{gateway.http_url}{CONVERSATION}?language=en-US&format=simple"
        headers = {**HEADERS, **WAV_CONTENT_TYPE}
        small = write_wav(tmp_path / "small.wav", silence(1.0))
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            release = asyncio.Event()
            first = None
            deadline = time.monotonic() + 15
            while True:  # until the slow request is in flight and the probe is refused
                assert time.monotonic() < deadline
                if first is not None and first.done():  # refused: the probe came first
                    first.result().release()
                    first = None
                if first is None:
                    first = asyncio.ensure_future(
                        http.post(url, data=slow_body(release), headers=headers)
                    )
                await asyncio.sleep(0.2)
                async with http.post(url, data=small.read_bytes(), headers=headers) as answer:
                    if answer.status == 429:
                        assert answer.headers["Retry-After"] == "5"
                        break
            release.set()
            async with await first as answer:
                assert answer.status == 413  # 118 KB streamed in, over the 64 KiB limit
            async with http.post(url, data=WAV.read_bytes(), headers=headers) as answer:
                assert answer.status == 413
            async with http.post(url, data=small.read_bytes(), headers=headers) as answer:
                assert answer.status == 200
                assert (await answer.json())["DisplayText"] == ALPHA
    records = [(r.kind, r.error_code, r.status) for r in read_outcomes(tmp_path / "outcomes.jsonl")]
    assert records.count((Kind.SESSION_FAILURE, "limit_rest_body", "BadRequest")) == 2
    assert (Kind.SESSION_FAILURE, "limit_client_sessions", "TooManyRequests") in records
    assert records[-1][:2] == (Kind.REQUEST, None)


async def test_a_stalled_rest_body_gets_408_and_frees_its_session(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A client that sends half its body and stalls gets 408 after rest_body_timeout_s, is
    recorded as a limit hit, and no longer holds its session slot."""
    with limited(
        tmp_path, alpha.ws_url, max_sessions_per_client=1, rest_body_timeout_s=0.5
    ) as gateway:
        url = f"{gateway.http_url}{CONVERSATION}?language=en-US&format=simple"
        headers = {**HEADERS, **WAV_CONTENT_TYPE}
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            never = asyncio.Event()
            started = time.monotonic()
            async with http.post(url, data=slow_body(never), headers=headers) as answer:
                assert answer.status == 408
            assert time.monotonic() - started < 10
            async with http.post(url, data=WAV.read_bytes(), headers=headers) as answer:
                assert answer.status == 200
        hits = limit_hits(gateway)
    assert hits.get("rest_body_timeout") == 1
    records = [(r.kind, r.error_code, r.status) for r in read_outcomes(tmp_path / "outcomes.jsonl")]
    assert records.count((Kind.SESSION_FAILURE, "limit_rest_body_timeout", "BadRequest")) == 1


# -- configuration -------------------------------------------------------------------------


def test_the_former_rest_body_setting_fails_with_a_pointer_to_its_new_place(
    tmp_path: Path,
) -> None:
    """`gateway.max_rest_body_bytes` (before `gateway.limits`) is refused, naming the new
    field and its environment variable, rather than being ignored or half-applied."""
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway]\nmax_rest_body_bytes = 4096\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "gateway.limits.max_rest_body_bytes" in str(caught.value)
    assert "SPEECH_GATEWAY_GATEWAY__LIMITS__MAX_REST_BODY_BYTES" in str(caught.value)
    config.write_text("[gateway.limits]\nmax_rest_body_bytes = 4096\n", encoding="utf-8")
    assert load_settings(config).gateway.limits.max_rest_body_bytes == 4096
