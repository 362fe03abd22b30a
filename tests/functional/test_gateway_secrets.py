"""No backend key, and no client key, ever leaves the gateway.

A gateway whose backends are keyed emulators (keys given through the environment only) is
driven with a varied workload: native SDK sessions, a JS-style client with its key in the
query string, REST short-audio requests, a forced variant, a failing backend, a backend the
gateway holds a stale key for, and a wrong client key. Everything the clients received
(HTTP statuses, headers and bodies, WebSocket frames and close reasons, the SDK's own log of
what it received), the gateway's log and the outcome file are searched for every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest
from aiohttp import web
from conftest import ALPHA, BRAVO, gateway_for
from support import BACKEND_KEY, CLIENT_KEY, DATA, QA_KEY, read_outcomes, read_pcm

from gateway.protocol.usp import decode_text, encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header
from gateway.tools.local_services import LocalEmulator, free_port
from gateway.tools.speech_client import Transcript, transcribe_file

WAV = DATA / "demo" / "banking" / "audio" / "banking-001.wav"
INTERACTIVE = "/speech/recognition/interactive/cognitiveservices/v1"
CONVERSATION = "/speech/recognition/conversation/cognitiveservices/v1"
DICTATION = "/speech/recognition/dictation/cognitiveservices/v1"
TIMEOUT = aiohttp.ClientTimeout(total=120)
FRAME_BYTES = 3200
WAV_TYPE = "audio/wav; codecs=audio/pcm; samplerate=16000"

ALPHA_KEY = BACKEND_KEY
BRAVO_KEY = "backend-bravo-secret-9e27d0"
BROKEN_KEY = "backend-broken-secret-31c8aa"
STALE_KEY = "backend-stale-secret-5b60f2"  # what the gateway holds for alpha under "stale"
GONE_KEY = "backend-gone-secret-c04d19"  # of a backend nobody listens for
WRONG_CLIENT_KEY = "not-a-client-key-77aa01"
BACKEND_KEYS = (ALPHA_KEY, BRAVO_KEY, BROKEN_KEY, STALE_KEY, GONE_KEY)
CLIENT_KEYS = (CLIENT_KEY, QA_KEY, WRONG_CLIENT_KEY)

EXPERIMENTS: list[dict[str, object]] = [
    {  # dictation goes to a backend that closes every session with 1011
        "id": "broken",
        "control": "x",
        "variants": [{"name": "x", "backend": "broken", "weight": 1}],
        "targeting": {"modes": ["dictation"]},
    },
    {  # en-GB goes to alpha with a key alpha does not accept
        "id": "stale",
        "control": "s",
        "variants": [{"name": "s", "backend": "stale", "weight": 1}],
        "targeting": {"locales": ["en-GB"]},
    },
    {  # en-AU goes to a backend that cannot be reached
        "id": "gone",
        "control": "g",
        "variants": [{"name": "g", "backend": "gone", "weight": 1}],
        "targeting": {"locales": ["en-AU"]},
    },
    {
        "id": "ab",
        "control": "a",
        "variants": [
            {"name": "a", "backend": "alpha", "weight": 100},
            {"name": "b", "backend": "bravo", "weight": 0},
        ],
    },
]


def keyed_emulator(work: Path, key: str, *args: str) -> LocalEmulator:
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__KEY": key}
    return LocalEmulator("--engine", "instant", *args, log_path=work / "emulator.log", env=env)


@dataclass
class Seen:
    """Everything a client received, as text to search."""

    texts: list[str] = field(default_factory=list)

    def add(self, value: object) -> None:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        self.texts.append(str(value))

    def trace_config(self) -> aiohttp.TraceConfig:
        """Records the status and headers of every HTTP answer, WebSocket upgrades included."""

        async def on_end(
            _session: aiohttp.ClientSession,
            _context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            self.add(params.response.status)
            for name, value in params.response.headers.items():
                self.add(f"{name}: {value}")

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_end)
        return trace


@dataclass
class Workload:
    work: Path
    seen: Seen
    transcripts: dict[str, Transcript]
    raw: dict[str, Any]
    alpha: LocalEmulator  # still running: it requires ALPHA_KEY


def sdk(gateway_url: str, path: str, key: str, log: Path, **params: str) -> Transcript:
    """recognize_once through the gateway, the SDK logging what it receives into `log`."""
    config = speechsdk.SpeechConfig(endpoint=f"{gateway_url}{path}", subscription=key)
    config.set_property(speechsdk.PropertyId.Speech_LogFilename, str(log))
    for name, value in params.items():
        config.set_service_property(name, value, speechsdk.ServicePropertyChannel.UriQueryParameter)
    if "language" not in params:
        config.speech_recognition_language = "en-US"
    return transcribe_file(config, WAV, continuous=False)


async def usp_turn(
    http: aiohttp.ClientSession,
    url: str,
    seen: Seen,
    *,
    headers: dict[str, str] | None = None,
    protocols: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One turn with every frame and the close reason recorded; the paths and texts back."""
    request_id = new_request_id()
    paths: list[str] = []
    texts: list[str] = []
    close: tuple[int, str] | None = None
    pcm = read_pcm(WAV)
    async with (
        asyncio.timeout(60),
        http.ws_connect(url, headers=headers or {}, protocols=protocols) as ws,
    ):
        # Send while receiving: a failing backend may close the session while the audio is
        # still going out, and its close frame must be read as it arrives.
        async def send_turn() -> None:
            with contextlib.suppress(ConnectionResetError):
                await ws.send_str(encode_text("speech.config", None, '{"context":{}}'))
                await ws.send_str(encode_text("speech.context", request_id, "{}"))
                header = [("Content-Type", "audio/x-wav")]
                await ws.send_bytes(
                    encode_binary("audio", request_id, wave_header(), extra_headers=header)
                )
                for start in range(0, len(pcm), FRAME_BYTES):
                    await ws.send_bytes(
                        encode_binary("audio", request_id, pcm[start : start + FRAME_BYTES])
                    )
                await ws.send_bytes(encode_binary("audio", request_id, b""))

        sender = asyncio.create_task(send_turn())
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                seen.add(message.data)
                decoded = decode_text(message.data)
                paths.append(decoded.path)
                if decoded.path == "speech.phrase":
                    texts.append(json.loads(decoded.body).get("DisplayText", ""))
                if decoded.path == "turn.end":
                    break
            elif message.type is aiohttp.WSMsgType.BINARY:
                seen.add(message.data)
            else:
                if message.type is aiohttp.WSMsgType.CLOSE:
                    close = (int(message.data), str(message.extra or ""))
                    seen.add(close)
                break
        await sender
    return {"paths": paths, "texts": texts, "close": close}


async def malformed(http: aiohttp.ClientSession, url: str, seen: Seen) -> tuple[int, str]:
    """A message without a Path header: the gateway closes with 1002 and logs why."""
    async with asyncio.timeout(60), http.ws_connect(url) as ws:
        await ws.send_str(f"X-RequestId: {new_request_id()}\r\n\r\n{{}}")
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        seen.add(message.extra)
        return int(message.data), str(message.extra or "")


async def upgrade_answer(
    http: aiohttp.ClientSession, url: str, seen: Seen, headers: dict[str, str]
) -> int:
    """A WebSocket upgrade the gateway refuses: its status, headers and body recorded."""
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "USP",
    }
    async with http.get(url, headers={**upgrade, **headers}) as response:
        seen.add(await response.read())
        return response.status


async def rest(
    http: aiohttp.ClientSession, url: str, seen: Seen, headers: dict[str, str]
) -> tuple[int, Any]:
    """A short-audio POST with the WAV; its status and parsed body (JSON or text)."""
    headers = {"Content-Type": WAV_TYPE, **headers}
    async with http.post(url, data=WAV.read_bytes(), headers=headers) as response:
        body = await response.read()
        seen.add(body)
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, body.decode("utf-8", "replace")


async def raw_workload(gateway_ws: str, gateway_http: str, seen: Seen) -> dict[str, Any]:
    key = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
    query_key = f"Ocp-Apim-Subscription-Key={CLIENT_KEY}"
    js_query = f"language=en-US&format=simple&{query_key}&X-ConnectionId={new_request_id()}"
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=TIMEOUT, trace_configs=[seen.trace_config()]) as http:
        # The JS SDK: no subprotocol, every header repeated in the query string.
        out["js"] = await usp_turn(http, f"{gateway_ws}{CONVERSATION}?{js_query}", seen)
        out["js_broken"] = await usp_turn(http, f"{gateway_ws}{DICTATION}?{js_query}", seen)
        out["bearer"] = await usp_turn(
            http,
            f"{gateway_ws}{INTERACTIVE}?language=en-US",
            seen,
            headers={"Authorization": f"Bearer {QA_KEY}"},
            protocols=("USP",),
        )
        stale = f"{gateway_ws}{INTERACTIVE}?language=en-GB"
        out["stale_upgrade"] = await upgrade_answer(http, stale, seen, key)
        wrong = {"Ocp-Apim-Subscription-Key": WRONG_CLIENT_KEY}
        out["wrong_upgrade"] = await upgrade_answer(
            http, f"{gateway_ws}{INTERACTIVE}?language=en-US", seen, wrong
        )
        base = f"{gateway_http}{CONVERSATION}"
        out["rest_simple"] = await rest(http, f"{base}?language=en-US", seen, key)
        out["rest_detailed"] = await rest(
            http, f"{base}?language=en-US&format=detailed&{query_key}", seen, {}
        )
        out["rest_forced"] = await rest(
            http,
            f"{base}?language=en-US&gw-variant=b",
            seen,
            {"Authorization": f"Bearer {QA_KEY}"},
        )
        out["rest_wrong_key"] = await rest(http, f"{base}?language=en-US", seen, wrong)
        out["rest_broken"] = await rest(
            http, f"{gateway_http}{DICTATION}?language=en-US", seen, key
        )
        out["rest_stale"] = await rest(http, f"{base}?language=en-GB", seen, key)
        out["rest_gone"] = await rest(http, f"{base}?language=en-AU", seen, key)
        out["malformed"] = await malformed(http, f"{gateway_ws}{INTERACTIVE}?{js_query}", seen)
    return out


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    """Keyed emulators, a gateway holding their keys, and every kind of traffic through it."""
    work = tmp_path_factory.mktemp("secrets")
    for name in ("alpha", "bravo", "broken"):
        (work / name).mkdir()
    faults = ("--failure-rate", "1", "--failure-kind", "close", "--failure-status", "1011")
    with (
        keyed_emulator(work / "alpha", ALPHA_KEY, "--instant-text", ALPHA) as alpha,
        keyed_emulator(work / "bravo", BRAVO_KEY, "--instant-text", BRAVO) as bravo,
        keyed_emulator(work / "broken", BROKEN_KEY, *faults) as broken,
    ):
        env = {
            **os.environ,
            "SPEECH_GATEWAY_GATEWAY__BACKENDS__ALPHA__KEY": ALPHA_KEY,
            "SPEECH_GATEWAY_GATEWAY__BACKENDS__BRAVO__KEY": BRAVO_KEY,
            "SPEECH_GATEWAY_GATEWAY__BACKENDS__BROKEN__KEY": BROKEN_KEY,
            "SPEECH_GATEWAY_GATEWAY__BACKENDS__STALE__KEY": STALE_KEY,
            "SPEECH_GATEWAY_GATEWAY__BACKENDS__GONE__KEY": GONE_KEY,
            "SPEECH_GATEWAY_LOGGING__LEVEL": "debug",  # as much log as there is to search
        }
        backends = {
            "alpha": alpha.ws_url,
            "bravo": bravo.ws_url,
            "broken": broken.ws_url,
            "stale": alpha.ws_url,
            "gone": f"ws://127.0.0.1:{free_port()}",
        }
        seen = Seen()
        log = work / "sdk.log"
        with gateway_for(work / "gateway", backends, EXPERIMENTS, env=env) as gateway:
            url = gateway.ws_url
            transcripts = {
                "app": sdk(url, INTERACTIVE, CLIENT_KEY, log),
                "forced": sdk(url, INTERACTIVE, QA_KEY, log, **{"gw-variant": "b"}),
                "broken": sdk(url, DICTATION, CLIENT_KEY, log),
                "stale": sdk(url, INTERACTIVE, CLIENT_KEY, log, language="en-GB"),
                "wrong_key": sdk(url, INTERACTIVE, WRONG_CLIENT_KEY, log),
                "gone": sdk(url, INTERACTIVE, CLIENT_KEY, log, language="en-AU"),
            }
            raw = asyncio.run(raw_workload(gateway.ws_url, gateway.http_url, seen))
        for transcript in transcripts.values():
            seen.add(transcript)
        seen.add(log.read_text(encoding="utf-8", errors="replace"))
        yield Workload(work, seen, transcripts, raw, alpha)


def test_the_workload_did_what_it_claims(workload: Workload) -> None:
    """Every part of the workload reached its backend and got the expected answer, so the
    key search below covers successes, a forced variant and each kind of failure."""
    t, raw = workload.transcripts, workload.raw
    assert [r.text for r in t["app"].recognized] == [ALPHA]
    assert [r.text for r in t["forced"].recognized] == [BRAVO]
    assert t["broken"].error_code == "ServiceError"
    assert t["stale"].error_code == "AuthenticationFailure"
    assert t["wrong_key"].error_code == "AuthenticationFailure"
    assert set(raw["js"]["texts"]) == {ALPHA}
    # Also when the backend fails while the client is still streaming audio (the gateway
    # drains the client before closing, so no TCP reset swallows the close frame).
    assert raw["js_broken"]["close"] == (1011, "injected failure")
    assert raw["bearer"]["texts"] == [ALPHA]
    assert (raw["stale_upgrade"], raw["wrong_upgrade"]) == (401, 401)
    assert raw["rest_simple"][0] == 200
    # REST joins the instant engine's windows into one result: "Alpha answers here alpha ..."
    assert raw["rest_simple"][1]["DisplayText"].startswith(ALPHA.rstrip("."))
    assert raw["rest_detailed"][0] == 200
    assert raw["rest_detailed"][1]["NBest"][0]["Display"].startswith(ALPHA.rstrip("."))
    assert raw["rest_forced"][0] == 200
    assert raw["rest_forced"][1]["DisplayText"].startswith(BRAVO.rstrip("."))
    assert raw["rest_wrong_key"][0] == 401
    assert raw["rest_broken"][1]["RecognitionStatus"] == "Error"
    assert raw["rest_stale"][0] == 401
    assert t["gone"].error_code == "ServiceError"
    assert raw["rest_gone"][0] == 503
    assert raw["malformed"][0] == 1002
    records = read_outcomes(workload.work / "gateway" / "outcomes.jsonl")
    assert {r.experiment for r in records} == {"ab", "broken", "stale", "gone"}
    assert {r.variant for r in records if r.forced} == {"b"}


@pytest.mark.parametrize("secret", BACKEND_KEYS + CLIENT_KEYS)
def test_no_key_appears_in_answers_logs_or_outcomes(workload: Workload, secret: str) -> None:
    """No backend key or client key appears in anything a client received, in the gateway's
    log or in the outcome file."""
    assert workload.seen.texts
    for text in workload.seen.texts:
        assert secret not in text
    gateway_log = (workload.work / "gateway" / "gateway.log").read_text(encoding="utf-8")
    assert gateway_log
    assert secret not in gateway_log
    outcomes = (workload.work / "gateway" / "outcomes.jsonl").read_text(encoding="utf-8")
    assert outcomes
    assert secret not in outcomes


async def test_the_emulator_accepts_only_the_backend_key(workload: Workload) -> None:
    """The keyed emulator that served the gateway's sessions refuses the client's key with
    401 and accepts its own, so what the gateway presented to it was the backend's key."""
    alpha = workload.alpha
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = f"{alpha.http_url}{CONVERSATION}?language=en-US"
        for key, status in ((CLIENT_KEY, 401), (STALE_KEY, 401), (ALPHA_KEY, 200)):
            answer, _ = await rest(http, url, Seen(), {"Ocp-Apim-Subscription-Key": key})
            assert answer == status, key
        upgrade = f"{alpha.ws_url}{INTERACTIVE}?language=en-US"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(upgrade, headers={"Ocp-Apim-Subscription-Key": CLIENT_KEY})
        assert refused.value.status == 401


@dataclass
class Received:
    path_qs: str
    headers: dict[str, str]


class RecordingBackend:
    """An in-process backend that records what each request carried and refuses it (503)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.port = free_port()
        app = web.Application()
        for path in (INTERACTIVE, CONVERSATION):
            app.router.add_get(path, self._record)
            app.router.add_post(path, self._record)
        self._runner = web.AppRunner(app)

    async def _record(self, request: web.Request) -> web.Response:
        await request.read()
        self.received.append(Received(request.path_qs, dict(request.headers)))
        return web.Response(status=503, text="recorded")

    async def __aenter__(self) -> RecordingBackend:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


async def test_a_backend_sees_its_own_key_and_no_client_credentials(tmp_path: Path) -> None:
    """Whether the client's key came as a header, a query parameter or a Bearer token, the
    backend receives only its own key in the Ocp-Apim-Subscription-Key header."""
    async with RecordingBackend() as backend:
        url = f"ws://127.0.0.1:{backend.port}"
        env = {**os.environ, "SPEECH_GATEWAY_GATEWAY__BACKENDS__ALPHA__KEY": ALPHA_KEY}
        experiment = {
            "id": "one",
            "control": "a",
            "variants": [{"name": "a", "backend": "alpha", "weight": 1}],
        }
        # The backend refuses every request with 503: its breaker must stay out of the way.
        breaker = {"consecutive_failures": 1000, "min_attempts": 1000}
        gateway = gateway_for(tmp_path, {"alpha": url}, [experiment], env=env, breaker=breaker)
        credentials = [
            ({"Ocp-Apim-Subscription-Key": CLIENT_KEY}, ""),
            ({}, f"&Ocp-Apim-Subscription-Key={CLIENT_KEY}"),
            ({"Authorization": f"Bearer {QA_KEY}"}, ""),
            ({}, f"&Authorization=Bearer%20{QA_KEY}"),
        ]
        with gateway:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                for headers, query in credentials:
                    ws_url = f"{gateway.ws_url}{INTERACTIVE}?language=en-US{query}"
                    assert await upgrade_answer(http, ws_url, Seen(), headers) == 503
                    rest_url = f"{gateway.http_url}{CONVERSATION}?language=en-US{query}"
                    status, _ = await rest(http, rest_url, Seen(), headers)
                    assert status == 503
    assert len(backend.received) == 2 * len(credentials)
    for received in backend.received:
        assert received.headers["Ocp-Apim-Subscription-Key"] == ALPHA_KEY
        assert "Authorization" not in received.headers
        seen = [received.path_qs, *received.headers.values()]
        for secret in CLIENT_KEYS:
            assert not any(secret in text for text in seen), received
