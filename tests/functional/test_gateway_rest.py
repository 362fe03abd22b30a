"""REST short audio through a real gateway process: the backend's answer unchanged, the
client's credentials in every form, sticky units, failures and body limits, one outcome
record per request."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import socket
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import ALPHA, BRAVO, gateway_for, split_experiment
from support import CLIENT_KEY, EMULATOR_KEY, QA_KEY, read_outcomes, read_pcm, silence

from gateway.outcomes.privacy import pseudonymise, text_digest
from gateway.outcomes.record import Kind, Role
from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
WAV_CONTENT_TYPE = {"Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000"}
TIMEOUT = aiohttp.ClientTimeout(total=120)
SIMPLE = {"language": "en-US", "format": "simple"}
BODY_LIMIT = 4096
ANSWERS = {ALPHA: "a", BRAVO: "b"}
PSEUDONYM_KEY = "rest-test-pseudonym-key-0123456789"


def wav_bytes(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm)
    return buffer.getvalue()


async def in_chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def post(
    service: LocalEmulator | LocalGateway,
    body: Any,
    *,
    params: Mapping[str, str] = SIMPLE,
    headers: Mapping[str, str] | None = None,
    expect100: bool = False,
) -> tuple[int, dict[str, Any]]:
    """POST to the short-audio endpoint; (status, JSON body, or {"text": ...})."""
    sent = {**WAV_CONTENT_TYPE, **(headers or {})}
    url = f"{service.http_url}{PATH}"
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(url, params=params, data=body, headers=sent, expect100=expect100) as answer,
    ):
        if answer.content_type != "application/json":
            return answer.status, {"text": await answer.text()}
        return answer.status, await answer.json()


def client(key: str = CLIENT_KEY, **headers: str) -> dict[str, str]:
    """Headers of a gateway client: its key and any others."""
    return {"Ocp-Apim-Subscription-Key": key, **headers}


def instant_gateway(
    work: Path, backend: LocalEmulator, env: Mapping[str, str] | None = None, **gateway: object
) -> LocalGateway:
    """A gateway (not started) whose every request goes to `backend` as variant a."""
    backends = {"alpha": backend.ws_url, "bravo": backend.ws_url}
    environment = {
        **os.environ,
        "SPEECH_GATEWAY_OUTCOMES__PSEUDONYM_KEY": PSEUDONYM_KEY,
        **(env or {}),
    }
    return gateway_for(work, backends, [split_experiment((100, 0))], env=environment, **gateway)


def without_confidence(body: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """The body less its NBest confidences, and those confidences.

    A PocketSphinx decoder's confidence differs in the 4th decimal from request to request
    (decoder reuse), so it is compared with a tolerance; everything else must be equal.
    """
    nbest = [dict(entry) for entry in body.get("NBest", [])]
    confidences = [entry.pop("Confidence") for entry in nbest]
    return ({**body, "NBest": nbest} if "NBest" in body else body), confidences


@pytest.fixture(scope="module")
def split_gateway(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalGateway]:
    """A gateway splitting 50/50 between the instant emulators alpha (a) and bravo (b)."""
    work = tmp_path_factory.mktemp("split-gateway")
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    env = {**os.environ, "SPEECH_GATEWAY_OUTCOMES__PSEUDONYM_KEY": PSEUDONYM_KEY}
    with gateway_for(work, backends, [split_experiment()], env=env) as gateway:
        yield gateway


@pytest.mark.parametrize("fmt", ["simple", "detailed"])
@pytest.mark.parametrize("chunked", [False, True], ids=["plain", "chunked"])
@pytest.mark.parametrize("variant", ["base", "custom"])
async def test_gateway_answers_exactly_what_the_backend_answers(
    emulator: LocalEmulator,
    datasets: dict[str, list[LabelledUtterance]],
    tmp_path: Path,
    fmt: str,
    chunked: bool,
    variant: str,
) -> None:
    """Simple and detailed results through the gateway, plain or chunked, equal the
    emulator's direct answer for the same WAV and model (base, or custom forced by QA)."""
    audio = datasets["banking"][0].audio.read_bytes()
    params = {"language": "en-US", "format": fmt}
    direct_params = {**params, "cid": "banking"} if variant == "custom" else params
    status, direct = await post(
        emulator, audio, params=direct_params, headers={"Ocp-Apim-Subscription-Key": EMULATOR_KEY}
    )
    assert status == 200, direct
    experiment = {
        "id": "models",
        "control": "base",
        "variants": [
            {"name": "base", "backend": "emu", "weight": 100},
            {"name": "custom", "backend": "emu", "endpoint_id": "banking", "weight": 0},
        ],
    }
    env = {**os.environ, "SPEECH_GATEWAY_GATEWAY__BACKENDS__EMU__KEY": EMULATOR_KEY}
    headers = client(QA_KEY, **{"X-Gateway-Variant": variant})
    with gateway_for(tmp_path, {"emu": emulator.ws_url}, [experiment], env=env) as gateway:
        # A chunked upload as the SDKs send it: after the server's 100-continue.
        body = in_chunks(audio) if chunked else audio
        status, through = await post(
            gateway, body, params=params, headers=headers, expect100=chunked
        )
    assert status == 200, through
    assert through["RecognitionStatus"] == "Success"
    assert through.get("DisplayText")
    direct_rest, direct_confidences = without_confidence(direct)
    through_rest, through_confidences = without_confidence(through)
    assert through_rest == direct_rest
    assert through_confidences == pytest.approx(direct_confidences, abs=0.01)
    assert ("NBest" in through) == (fmt == "detailed")
    (record,) = read_outcomes(tmp_path / "outcomes.jsonl")
    assert (record.kind, record.protocol, record.variant, record.forced) == (
        Kind.REQUEST,
        "rest",
        variant,
        True,
    )
    assert record.text == through["DisplayText"]
    assert record.confidence == (through_confidences[0] if through_confidences else None)


@pytest.mark.parametrize("credential", ["header", "query", "bearer"])
async def test_the_client_key_is_accepted_as_header_query_or_bearer(
    split_gateway: LocalGateway, credential: str
) -> None:
    """The gateway client key works as a header, a query parameter or a Bearer token."""
    params = dict(SIMPLE)
    headers: dict[str, str] = {}
    if credential == "header":
        headers["Ocp-Apim-Subscription-Key"] = CLIENT_KEY
    elif credential == "query":
        params["Ocp-Apim-Subscription-Key"] = CLIENT_KEY
    else:
        headers["Authorization"] = f"Bearer {CLIENT_KEY}"
    status, body = await post(
        split_gateway, wav_bytes(silence(1.0)), params=params, headers=headers
    )
    assert status == 200, body
    assert body["DisplayText"] in ANSWERS


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        (SIMPLE, {"Ocp-Apim-Subscription-Key": "wrong-key"}),
        ({**SIMPLE, "Ocp-Apim-Subscription-Key": "wrong-key"}, {}),
        (SIMPLE, {"Authorization": "Bearer wrong-key"}),
        (SIMPLE, {"Ocp-Apim-Subscription-Key": EMULATOR_KEY}),  # a backend key is no client key
        (SIMPLE, {}),
    ],
    ids=["wrong-header", "wrong-query", "wrong-bearer", "backend-key", "none"],
)
async def test_a_wrong_or_missing_key_is_401(
    split_gateway: LocalGateway, params: dict[str, str], headers: dict[str, str]
) -> None:
    """Without a valid gateway client key the request is refused with 401."""
    status, _ = await post(split_gateway, wav_bytes(silence(1.0)), params=params, headers=headers)
    assert status == 401


async def test_the_unit_header_gives_sticky_assignment_and_one_record_per_request(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """The same X-Gateway-Unit gets the same variant on 20 requests, each request writes one
    request record (unit from the header, latencies and text set), and both variants serve."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    env = {**os.environ, "SPEECH_GATEWAY_OUTCOMES__PSEUDONYM_KEY": PSEUDONYM_KEY}
    audio = wav_bytes(silence(1.0))
    units = [f"rest-unit-{n}" for n in range(8)]

    async def one(gateway: LocalGateway, unit: str) -> str:
        status, body = await post(gateway, audio, headers=client(**{"X-Gateway-Unit": unit}))
        assert status == 200, body
        return ANSWERS[body["DisplayText"]]

    with gateway_for(tmp_path, backends, [split_experiment()], env=env) as gateway:
        seen = {u: await asyncio.gather(*(one(gateway, u) for _ in range(20))) for u in units}
    for unit, variants in seen.items():
        assert len(set(variants)) == 1, (unit, variants)
    assert {variants[0] for variants in seen.values()} == {"a", "b"}
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert len(records) == 20 * len(units)
    assert len({r.session_id for r in records}) == len(records)
    pseudonyms = {pseudonymise(unit, PSEUDONYM_KEY.encode()): unit for unit in units}
    for record in records:
        unit = pseudonyms[record.unit]  # pseudonymised, never the unit id itself
        assert record.variant == seen[unit][0]
        assert (record.kind, record.protocol, record.role) == (Kind.REQUEST, "rest", Role.PRIMARY)
        assert (record.status, record.unit_source, record.utterance_index) == (
            "Success",
            "header",
            0,
        )
        assert record.text == {"a": ALPHA, "b": BRAVO}[record.variant]
        assert record.final_latency_ms is not None
        assert record.total_ms is not None
        assert record.total_ms >= record.final_latency_ms
        assert record.audio_duration_ms is not None
        assert record.audio_duration_ms > 0
    assert sorted(r.unit for r in records) == sorted(p for p in pseudonyms for _ in range(20))


async def test_text_privacy_hash_keeps_no_text_in_request_records(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """With text_privacy "hash" a request record has the text's keyed hash and no text."""
    privacy = {"SPEECH_GATEWAY_OUTCOMES__TEXT_PRIVACY": "hash"}
    with instant_gateway(tmp_path, alpha, privacy) as gateway:
        status, body = await post(gateway, wav_bytes(silence(1.0)), headers=client())
    assert status == 200, body
    (record,) = read_outcomes(tmp_path / "outcomes.jsonl")
    assert record.text is None
    assert record.text_sha256 == text_digest(ALPHA, PSEUDONYM_KEY.encode())
    assert record.word_count == 3


async def test_missing_language_gets_the_backends_400(alpha: LocalEmulator, tmp_path: Path) -> None:
    """Without `language` the backend's own 400 reaches the client unchanged, and the request
    is recorded as a session failure with that status."""
    audio = wav_bytes(silence(1.0))
    status, direct = await post(alpha, audio, params={"format": "simple"})
    assert status == 400
    assert "language" in direct["error"]
    with instant_gateway(tmp_path, alpha) as gateway:
        status, through = await post(gateway, audio, params={"format": "simple"}, headers=client())
    assert status == 400
    assert through == direct
    (record,) = read_outcomes(tmp_path / "outcomes.jsonl")
    assert (record.kind, record.protocol, record.error_code) == (
        Kind.SESSION_FAILURE,
        "rest",
        "upstream_http_400",
    )


@pytest.mark.parametrize(
    ("kind", "failure", "status", "error_code"),
    [("http", "429", 429, "upstream_http_429"), ("usp", "Error", 200, "upstream_status_Error")],
    ids=["http-429", "status-error"],
)
async def test_a_failing_backend_answer_is_relayed_and_recorded_as_a_failure(
    tmp_path: Path, kind: str, failure: str, status: int, error_code: str
) -> None:
    """A backend's HTTP error, or its HTTP 200 carrying RecognitionStatus Error, reaches the
    client as the backend sent it and is recorded as one session_failure, not a result."""
    faults = ("--failure-rate", "1", "--failure-kind", kind, "--failure-status", failure)
    audio = wav_bytes(silence(1.0))
    with LocalEmulator("--engine", "instant", *faults, log_path=tmp_path / "emu.log") as failing:
        direct_status, direct = await post(failing, audio)
        with instant_gateway(tmp_path / "gateway", failing) as gateway:
            through_status, through = await post(gateway, audio, headers=client())
    assert (through_status, through) == (direct_status, direct)
    assert through_status == status
    (record,) = read_outcomes(tmp_path / "gateway" / "outcomes.jsonl")
    assert (record.kind, record.protocol, record.error_code) == (
        Kind.SESSION_FAILURE,
        "rest",
        error_code,
    )
    assert record.status == "Error"
    assert record.final_latency_ms is not None


async def test_an_unreachable_backend_is_503_and_one_failure_record(tmp_path: Path) -> None:
    """A backend on a closed port gives the client HTTP 503 and writes one session_failure
    per request."""
    dead = f"ws://127.0.0.1:{free_port()}"
    experiment = split_experiment((100, 0))
    with gateway_for(tmp_path, {"alpha": dead, "bravo": dead}, [experiment]) as gateway:
        answers = [await post(gateway, wav_bytes(silence(1.0)), headers=client()) for _ in "12"]
    assert [status for status, _ in answers] == [503, 503], answers
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert len(records) == 2
    assert len({r.session_id for r in records}) == 2
    for record in records:
        assert (record.kind, record.protocol, record.role) == (
            Kind.SESSION_FAILURE,
            "rest",
            Role.PRIMARY,
        )
        assert (record.variant, record.backend, record.error_code) == (
            "a",
            "alpha",
            "upstream_unreachable",
        )


@contextmanager
def unanswered_listener() -> Iterator[str]:
    """A listening socket that never accepts, its accept queue filled: a new connection's
    handshake is never answered. Yields its URL."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers: list[socket.socket] = []
        try:
            while True:
                assert len(fillers) < 16, "the accept queue never filled"
                filler = socket.socket()
                filler.settimeout(0.5)
                try:
                    filler.connect(listener.getsockname())
                except TimeoutError:
                    filler.close()
                    break
                fillers.append(filler)
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            for filler in fillers:
                filler.close()


async def test_a_backend_that_cannot_be_connected_in_time_is_503_and_a_timeout_record(
    tmp_path: Path,
) -> None:
    """A backend whose connection handshake never completes gives HTTP 503 after
    connect_timeout_s and one session_failure with error_code upstream_timeout."""
    experiment = split_experiment((100, 0))
    with unanswered_listener() as url:
        backends = {"alpha": url, "bravo": url}
        with gateway_for(tmp_path, backends, [experiment], connect_timeout_s=1) as gateway:
            status, body = await post(gateway, wav_bytes(silence(1.0)), headers=client())
    assert status == 503, body
    (record,) = read_outcomes(tmp_path / "outcomes.jsonl")
    assert (record.kind, record.error_code) == (Kind.SESSION_FAILURE, "upstream_timeout")


@pytest.mark.parametrize("chunked", [False, True], ids=["plain", "chunked"])
async def test_a_body_over_the_limit_is_413_and_the_gateway_keeps_serving(
    alpha: LocalEmulator,
    datasets: dict[str, list[LabelledUtterance]],
    tmp_path: Path,
    chunked: bool,
) -> None:
    """A body over gateway.limits.max_rest_body_bytes is refused with 413, plain or chunked,
    and recorded as a limit_rest_body failure; the requests within the limit that follow
    are served."""
    pcm = read_pcm(datasets["banking"][0].audio)
    audio, small = wav_bytes(pcm), wav_bytes(pcm[: BODY_LIMIT - 100])
    assert len(audio) > BODY_LIMIT >= len(small)
    with instant_gateway(tmp_path, alpha, limits={"max_rest_body_bytes": BODY_LIMIT}) as gateway:
        status, answer = await post(
            gateway, in_chunks(audio) if chunked else audio, headers=client()
        )
        assert status == 413, answer
        for _ in range(3):
            body = in_chunks(small) if chunked else small
            status, answer = await post(gateway, body, headers=client())
            assert status == 200, answer
            assert answer["DisplayText"] == ALPHA
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert [(r.kind, r.error_code, r.text) for r in records] == [
        (Kind.SESSION_FAILURE, "limit_rest_body", None),
        *[(Kind.REQUEST, None, ALPHA)] * 3,
    ]


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """An HTTP backend answering POSTs to the short-audio path with `handler`. Yields its
    URL."""
    app = web.Application()
    app.router.add_post(PATH, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()


@asynccontextmanager
async def breaking_backend() -> AsyncIterator[str]:
    """An HTTP backend that reads the request, starts a 200 JSON answer and then drops the
    connection halfway through it. Yields its URL."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        await answer.prepare(request)
        await answer.write(b'{"RecognitionStatus": "Succ')
        assert request.transport is not None
        request.transport.close()
        return answer

    async with serving(handler) as url:
        yield url


async def test_a_backend_breaking_off_its_answer_breaks_off_the_clients(tmp_path: Path) -> None:
    """When the backend drops the connection mid-answer, the client's response is cut off
    too (not left hanging, nor completed as if whole) and a session_failure is written."""
    async with breaking_backend() as url:
        backends = {"alpha": url, "bravo": url}
        gateway = gateway_for(tmp_path, backends, [split_experiment((100, 0))])
        await asyncio.to_thread(gateway.start)
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                for _ in range(2):  # and the gateway serves the next request alike
                    async with http.post(
                        f"{gateway.http_url}{PATH}",
                        params=SIMPLE,
                        data=wav_bytes(silence(1.0)),
                        headers={**WAV_CONTENT_TYPE, **client()},
                    ) as answer:
                        assert answer.status == 200
                        with pytest.raises(aiohttp.ClientPayloadError):
                            await answer.read()
        finally:
            await asyncio.to_thread(gateway.stop)
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert [(r.kind, r.error_code, r.error_detail) for r in records] == [
        (Kind.SESSION_FAILURE, "upstream_unreachable", "ClientPayloadError")
    ] * 2


@asynccontextmanager
async def compressing_backend(seen: list[str | None]) -> AsyncIterator[str]:
    """An HTTP backend that answers a recognition in gzip when the request accepts it, and
    notes each request's Accept-Encoding. Yields its URL."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        accepted = request.headers.get("Accept-Encoding")
        seen.append(accepted)
        answer = web.json_response(
            {
                "RecognitionStatus": "Success",
                "DisplayText": "Pay the bill.",
                "Offset": 0,
                "Duration": 10_000_000,
            }
        )
        if accepted is not None and "gzip" in accepted:
            answer.enable_compression(web.ContentCoding.gzip)
        return answer

    async with serving(handler) as url:
        yield url


async def test_content_coding_is_the_clients_as_directly(tmp_path: Path) -> None:
    """The backend is asked for what the client accepts, nothing when it accepts nothing;
    a gzip answer reaches the client with its Content-Encoding, and the record reads it."""
    seen: list[str | None] = []
    async with compressing_backend(seen) as url:
        gateway = gateway_for(tmp_path, {"alpha": url, "bravo": url}, [split_experiment((100, 0))])
        await asyncio.to_thread(gateway.start)
        try:
            answers = []
            for accepted in ("gzip", None):
                headers = {**WAV_CONTENT_TYPE, **client()}
                async with (
                    aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False) as http,
                    http.post(
                        f"{gateway.http_url}{PATH}",
                        params=SIMPLE,
                        data=wav_bytes(silence(1.0)),
                        headers=headers
                        if accepted is None
                        else {**headers, "Accept-Encoding": accepted},
                        skip_auto_headers=("Accept-Encoding",),
                    ) as answer,
                ):
                    answers.append((answer.headers.get("Content-Encoding"), await answer.read()))
        finally:
            await asyncio.to_thread(gateway.stop)
    assert seen == ["gzip", None]
    (coding, body), (plain_coding, plain) = answers
    assert (coding, plain_coding) == ("gzip", None)
    assert gzip.decompress(body) == plain
    records = read_outcomes(tmp_path / "outcomes.jsonl")
    assert [(r.kind, r.status, r.word_count) for r in records] == [(Kind.REQUEST, "Success", 3)] * 2
