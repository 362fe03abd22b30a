"""Upstream failures reach the real SDK as protocol.md §5.3 prescribes, through real gateways.

Each case runs a gateway whose `failing` experiment (client `app`) routes to a broken backend
and whose `healthy` experiment (client `qa`) routes to an instant emulator; recognize_once
from the native SDK must fail with the error code §5 names, within a bounded time, and every
gateway session of the failing experiment must carry exactly one `session_failure` record.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest
from aiohttp import web
from conftest import ALPHA, gateway_for
from support import BACKEND_KEY, CLIENT_KEY, DATA, QA_KEY, read_outcomes, silence

from gateway.outcomes.record import Kind, OutcomeRecord
from gateway.protocol.usp import encode_binary, encode_text, new_request_id
from gateway.protocol.wav import wave_header
from gateway.tools.local_services import LocalEmulator, free_port
from gateway.tools.speech_client import Transcript, transcribe_file

WAV = DATA / "demo" / "banking" / "audio" / "banking-001.wav"
PATH = "/speech/recognition/interactive/cognitiveservices/v1"
# Generous: the SDK's retries (5 attempts, about 2.5 s) plus a 1 s connect timeout each.
BOUND_S = 45.0
TIMEOUT = aiohttp.ClientTimeout(total=60)


def experiments() -> list[dict[str, object]]:
    """`failing` for the app client, `healthy` for the qa client."""
    return [
        {
            "id": "failing",
            "control": "f",
            "variants": [{"name": "f", "backend": "broken", "weight": 1}],
            "targeting": {"clients": ["app"]},
        },
        {
            "id": "healthy",
            "control": "h",
            "variants": [{"name": "h", "backend": "alpha", "weight": 1}],
            "targeting": {"clients": ["qa"]},
        },
    ]


def sdk_recognize_once(gateway_url: str, key: str) -> Transcript:
    config = speechsdk.SpeechConfig(endpoint=f"{gateway_url}{PATH}", subscription=key)
    config.speech_recognition_language = "en-US"
    return transcribe_file(config, WAV, continuous=False)


@dataclass
class Timed:
    transcript: Transcript
    seconds: float


def timed(gateway_url: str, key: str) -> Timed:
    started = time.monotonic()
    transcript = sdk_recognize_once(gateway_url, key)
    return Timed(transcript, time.monotonic() - started)


class SilentServer:
    """A loopback TCP server that accepts connections and never sends a byte."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.accepted:
            connection.close()
        self._sock.close()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant emulator that requires BACKEND_KEY."""
    log = tmp_path_factory.mktemp("keyed") / "emulator.log"
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__KEY": BACKEND_KEY}
    with LocalEmulator("--engine", "instant", log_path=log, env=env) as running:
        yield running


def faulty(tmp_path_factory: pytest.TempPathFactory, kind: str, status: str) -> LocalEmulator:
    log = tmp_path_factory.mktemp(f"{kind}-{status}") / "emulator.log"
    args = ("--failure-rate", "1", "--failure-kind", kind, "--failure-status", status)
    return LocalEmulator("--engine", "instant", *args, log_path=log)


@pytest.fixture(scope="module")
def http_429(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    with faulty(tmp_path_factory, "http", "429") as running:
        yield running


@pytest.fixture(scope="module")
def close_1011(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    with faulty(tmp_path_factory, "close", "1011") as running:
        yield running


@pytest.fixture(scope="module")
def close_1007(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    with faulty(tmp_path_factory, "close", "1007") as running:
        yield running


CODES = speechsdk.CancellationErrorCode
CASES = {
    "unreachable": (CODES.ServiceError, "upstream_unreachable"),
    "http-401": (CODES.AuthenticationFailure, "upstream_http_401"),
    "http-429": (CODES.TooManyRequests, "upstream_http_429"),
    "close-1011": (CODES.ServiceError, "upstream_close_1011"),
    "close-1007": (CODES.BadRequest, "upstream_close_1007"),
    "timeout": (CODES.ServiceError, "upstream_timeout"),
}
# The native SDK does not retry after these (protocol.md §5.1, §5.2): one session only.
NOT_RETRIED = {"http-401", "close-1007"}


@dataclass
class Broken:
    case: str
    url: str
    env: dict[str, str]
    # How many connections the backend saw, where it can tell.
    attempts: Callable[[], int] | None = None


def served_sessions(emulator: LocalEmulator) -> int:
    with urllib.request.urlopen(f"{emulator.http_url}/status", timeout=10) as response:
        served: int = json.load(response)["served_sessions"]
        return served


@pytest.fixture
def broken(request: pytest.FixtureRequest) -> Iterator[Broken]:
    """The broken backend of a case, and the gateway environment that goes with it."""
    case: str = request.param
    env = {**os.environ}
    match case:
        case "unreachable":
            yield Broken(case, f"ws://127.0.0.1:{free_port()}", env)  # nobody listens
        case "http-401":
            emulator: LocalEmulator = request.getfixturevalue("keyed")
            env["SPEECH_GATEWAY_GATEWAY__BACKENDS__BROKEN__KEY"] = "not-" + BACKEND_KEY
            yield Broken(case, emulator.ws_url, env)
        case "http-429":
            yield Broken(case, request.getfixturevalue("http_429").ws_url, env)
        case "close-1011" | "close-1007":
            emulator = request.getfixturevalue(case.replace("-", "_"))
            before = served_sessions(emulator)
            yield Broken(case, emulator.ws_url, env, lambda: served_sessions(emulator) - before)
        case "timeout":
            with SilentServer() as server:
                url = f"ws://127.0.0.1:{server.port}"
                yield Broken(case, url, env, lambda: len(server.accepted))
        case _:
            raise AssertionError(case)


def failures_by_session(records: list[OutcomeRecord]) -> dict[str, list[OutcomeRecord]]:
    sessions: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for record in records:
        sessions[record.session_id].append(record)
    return sessions


@pytest.mark.parametrize("broken", list(CASES), indirect=True)
def test_upstream_failure_reaches_the_sdk_and_one_record_per_session(
    broken: Broken, alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A broken backend gives the SDK the error code of protocol.md §5.3 within a bounded time,
    and every gateway session it served has exactly one session_failure with its cause."""
    expected_code, expected_error = CASES[broken.case]
    backends = {"broken": broken.url, "alpha": alpha.ws_url}
    gateway = gateway_for(tmp_path, backends, experiments(), env=broken.env, connect_timeout_s=1.0)
    with gateway:
        outcome = timed(gateway.ws_url, CLIENT_KEY)
        attempts = broken.attempts() if broken.attempts is not None else None
    assert outcome.transcript.canceled_reason == "Error", outcome.transcript
    assert outcome.transcript.error_code == expected_code.name, outcome.transcript
    assert outcome.seconds < BOUND_S
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert records
    assert {r.experiment for r in records} == {"failing"}
    sessions = failures_by_session(records)
    for session_records in sessions.values():
        assert [(r.kind, r.error_code) for r in session_records] == [
            (Kind.SESSION_FAILURE, expected_error)
        ]
        assert session_records[0].status == "Error"
    if broken.case in NOT_RETRIED:
        assert len(sessions) == 1
    if attempts is not None:  # no backend connection went unrecorded
        assert len(sessions) == attempts


def test_a_healthy_experiment_is_unaffected_while_another_fails(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """While the app client's sessions time out on a silent backend, the qa client's
    concurrent session on a healthy emulator is recognised normally."""
    with SilentServer() as server:
        backends = {"broken": f"ws://127.0.0.1:{server.port}", "alpha": alpha.ws_url}
        with (
            gateway_for(tmp_path, backends, experiments(), connect_timeout_s=1.0) as gateway,
            ThreadPoolExecutor(max_workers=2) as pool,
        ):
            failing = pool.submit(timed, gateway.ws_url, CLIENT_KEY)
            # Started once the failing session is under way, so the two overlap.
            deadline = time.monotonic() + BOUND_S
            while not server.accepted:
                assert time.monotonic() < deadline, "the failing session never started"
                time.sleep(0.05)
            healthy = pool.submit(timed, gateway.ws_url, QA_KEY)
            failed, succeeded = failing.result(BOUND_S), healthy.result(BOUND_S)
    assert failed.transcript.error_code == CODES.ServiceError.name
    assert succeeded.transcript.canceled_reason is None, succeeded.transcript
    assert [r.text for r in succeeded.transcript.recognized] == [ALPHA]
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    healthy_records = [r for r in records if r.experiment == "healthy"]
    assert [(r.kind, r.text) for r in healthy_records] == [(Kind.UTTERANCE, ALPHA)]
    failing_records = [r for r in records if r.experiment == "failing"]
    assert failing_records
    assert {(r.kind, r.error_code) for r in failing_records} == {
        (Kind.SESSION_FAILURE, "upstream_timeout")
    }


async def emulator_status(http: aiohttp.ClientSession, emulator: LocalEmulator) -> Any:
    async with http.get(f"{emulator.http_url}/status") as response:
        assert response.status == 200
        return await response.json()


async def test_client_disconnect_closes_the_backend_session(tmp_path: Path) -> None:
    """A client that goes away mid-turn makes the gateway close its backend session promptly."""
    log = tmp_path / "emulator.log"
    with (
        LocalEmulator("--engine", "instant", log_path=log) as emulator,
        gateway_for(
            tmp_path, {"broken": emulator.ws_url, "alpha": emulator.ws_url}, experiments()
        ) as gateway,
    ):
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            url = f"{gateway.ws_url}{PATH}?language=en-US"
            headers = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
            ws = await http.ws_connect(url, headers=headers, protocols=("USP",))
            request_id = new_request_id()
            await ws.send_str(encode_text("speech.config", None, '{"context":{}}'))
            await ws.send_str(encode_text("speech.context", request_id, "{}"))
            await ws.send_bytes(encode_binary("audio", request_id, wave_header()))
            await ws.send_bytes(encode_binary("audio", request_id, silence(0.5)[:3200]))
            message = await ws.receive(timeout=30)
            assert message.type is aiohttp.WSMsgType.TEXT
            assert "turn.start" in message.data
            assert (await emulator_status(http, emulator))["active_sessions"] == 1
            await ws.close()
            deadline = time.monotonic() + 10
            while (await emulator_status(http, emulator))["active_sessions"] != 0:
                assert time.monotonic() < deadline, "the backend session outlived its client"
                await asyncio.sleep(0.05)


async def test_a_plain_get_on_a_usp_path_opens_no_backend_session(tmp_path: Path) -> None:
    """A GET that is no WebSocket upgrade is refused with 400 before any backend is dialled."""
    log = tmp_path / "emulator.log"
    with (
        LocalEmulator("--engine", "instant", log_path=log) as emulator,
        gateway_for(
            tmp_path, {"broken": emulator.ws_url, "alpha": emulator.ws_url}, experiments()
        ) as gateway,
    ):
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            headers = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
            for _ in range(3):
                url = f"{gateway.http_url}{PATH}?language=en-US"
                async with http.get(url, headers=headers) as response:
                    assert response.status == 400
            report = await emulator_status(http, emulator)
    assert (report["served_sessions"], report["active_sessions"]) == (0, 0)


class SlowUpgradeBackend:
    """An in-process WebSocket backend that answers the upgrade after `delay_s` and counts
    the sessions still open."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.upgraded = 0
        self.open = 0
        self.port = free_port()
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        self._runner = web.AppRunner(app)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        await asyncio.sleep(self.delay_s)
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        self.upgraded += 1
        self.open += 1
        try:
            async for _message in ws:
                pass
        finally:
            self.open -= 1
        return ws

    async def __aenter__(self) -> SlowUpgradeBackend:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


async def test_a_client_gone_before_the_backend_answered_leaves_no_backend_session(
    tmp_path: Path,
) -> None:
    """A client that disconnects while the gateway is still dialling the backend gets its
    late backend session closed as soon as it opens."""
    async with SlowUpgradeBackend(delay_s=1.0) as backend:
        url = f"ws://127.0.0.1:{backend.port}"
        with gateway_for(tmp_path, {"broken": url, "alpha": url}, experiments()) as gateway:
            _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(
                (
                    f"GET {PATH}?language=en-US HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{gateway.port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: USP\r\n"
                    f"Ocp-Apim-Subscription-Key: {CLIENT_KEY}\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            writer.close()  # gone before the backend answers the gateway's upgrade
            await writer.wait_closed()
            deadline = time.monotonic() + 30
            while backend.upgraded == 0:
                assert time.monotonic() < deadline, "the gateway never reached the backend"
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 10
            while backend.open:
                assert time.monotonic() < deadline, "the backend session outlived its client"
                await asyncio.sleep(0.05)
