"""REST speech-to-text for short audio (protocol.md §7) against real emulator processes."""

from __future__ import annotations

import asyncio
import io
import os
import time
import wave
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import pytest
from support import EMULATOR_KEY, read_pcm, silence

from gateway.stats.wer import align
from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator

KEY = {"Ocp-Apim-Subscription-Key": EMULATOR_KEY}
WAV_CONTENT_TYPE = {"Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000"}
TIMEOUT = aiohttp.ClientTimeout(total=120)
SMALL_BODY_LIMIT = 4096


def rest_url(emulator: LocalEmulator, mode: str = "conversation") -> str:
    return f"{emulator.http_url}/speech/recognition/{mode}/cognitiveservices/v1"


async def post(
    emulator: LocalEmulator,
    body: Any,
    *,
    mode: str = "conversation",
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    expect100: bool = False,
) -> tuple[int, dict[str, Any]]:
    """POST to the short-audio endpoint; (status, JSON body, or {"text": ...} for plain text)."""
    query = {"language": "en-US", "format": "simple"} if params is None else params
    sent = {**WAV_CONTENT_TYPE, **(KEY if headers is None else headers)}
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(
            rest_url(emulator, mode), params=query, data=body, headers=sent, expect100=expect100
        ) as response,
    ):
        if response.content_type != "application/json":
            return response.status, {"text": await response.text()}
        return response.status, await response.json()


def wav_bytes(pcm: bytes, sample_rate: int = 16000) -> bytes:
    """A mono 16-bit WAV file, in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


async def in_chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def item(datasets: dict[str, list[LabelledUtterance]]) -> LabelledUtterance:
    return datasets["banking"][0]


@pytest.fixture(scope="module")
def small_body_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant emulator that accepts REST bodies of at most SMALL_BODY_LIMIT bytes."""
    work = tmp_path_factory.mktemp("rest-limit")
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__MAX_REST_BODY_BYTES": str(SMALL_BODY_LIMIT)}
    with LocalEmulator("--engine", "instant", log_path=work / "emulator.log", env=env) as running:
        yield running


@pytest.mark.parametrize("mode", ["interactive", "conversation", "dictation"])
async def test_simple_format_recognises_the_utterance(
    emulator: LocalEmulator, item: LabelledUtterance, mode: str
) -> None:
    """Simple format on each v1 path answers 200 Success with DisplayText, Offset and Duration."""
    params = {"language": "en-US", "format": "simple", "cid": "banking"}
    status, body = await post(emulator, item.audio.read_bytes(), mode=mode, params=params)
    assert status == 200, body
    assert body["RecognitionStatus"] == "Success"
    assert align(item.text, body["DisplayText"]).wer < 0.5
    assert isinstance(body["Offset"], int)
    assert isinstance(body["Duration"], int)
    assert 0 <= body["Offset"] < body["Offset"] + body["Duration"]
    assert "NBest" not in body


async def test_detailed_format_has_nbest(emulator: LocalEmulator, item: LabelledUtterance) -> None:
    """Detailed format adds NBest entries with Confidence, Lexical, ITN, MaskedITN and Display."""
    params = {"language": "en-US", "format": "detailed", "cid": "banking"}
    status, body = await post(emulator, item.audio.read_bytes(), params=params)
    assert status == 200, body
    assert body["RecognitionStatus"] == "Success"
    best = body["NBest"][0]
    assert set(best) >= {"Confidence", "Lexical", "ITN", "MaskedITN", "Display"}
    assert 0.0 < best["Confidence"] <= 1.0
    assert best["Lexical"] == best["Lexical"].lower()
    assert best["Display"] == body["DisplayText"]
    assert align(item.text, best["Display"]).wer < 0.5


async def test_chunked_upload_gives_the_same_result(
    emulator: LocalEmulator, item: LabelledUtterance
) -> None:
    """A chunked body sent after 100-continue gets the same result as the plain body."""
    params = {"language": "en-US", "format": "detailed", "cid": "banking"}
    audio = item.audio.read_bytes()
    status, plain = await post(emulator, audio, params=params)
    assert status == 200, plain
    status, chunked = await post(emulator, in_chunks(audio), params=params, expect100=True)
    assert status == 200, chunked
    # Confidence may differ in the 4th decimal: a decoder's first utterance scores slightly
    # differently from later ones (decoder reuse), whatever the transfer encoding.
    confidences = [body["NBest"][0].pop("Confidence") for body in (plain, chunked)]
    assert confidences[1] == pytest.approx(confidences[0], abs=0.01)
    assert chunked == plain


async def test_chunked_upload_sends_chunked_encoding_and_expect(
    emulator: LocalEmulator, item: LabelledUtterance
) -> None:
    """The chunked request really carries Transfer-Encoding: chunked and Expect: 100-continue."""
    url = rest_url(emulator)
    headers = {**WAV_CONTENT_TYPE, **KEY}
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(
            url,
            params={"language": "en-US", "cid": "banking"},
            data=in_chunks(item.audio.read_bytes()),
            headers=headers,
            expect100=True,
        ) as response,
    ):
        assert response.status == 200
        sent = response.request_info.headers
        assert sent["Transfer-Encoding"] == "chunked"
        assert sent["Expect"] == "100-continue"
        assert (await response.json())["RecognitionStatus"] == "Success"


async def test_wrong_key_is_401(emulator: LocalEmulator, item: LabelledUtterance) -> None:
    """A wrong subscription key is refused with 401."""
    headers = {"Ocp-Apim-Subscription-Key": "wrong-key"}
    status, _ = await post(emulator, item.audio.read_bytes(), headers=headers)
    assert status == 401


async def test_missing_credentials_are_401(
    emulator: LocalEmulator, item: LabelledUtterance
) -> None:
    """A request without any key or token is refused with 401 when a key is configured."""
    status, _ = await post(emulator, item.audio.read_bytes(), headers={})
    assert status == 401


async def test_key_in_query_string_is_accepted(
    emulator: LocalEmulator, item: LabelledUtterance
) -> None:
    """The key as an Ocp-Apim-Subscription-Key query parameter authorises the request."""
    params = {"language": "en-US", "Ocp-Apim-Subscription-Key": EMULATOR_KEY}
    status, body = await post(emulator, item.audio.read_bytes(), params=params, headers={})
    assert status == 200, body
    assert body["RecognitionStatus"] == "Success"


async def test_issued_token_authorises_and_forged_token_does_not(
    emulator: LocalEmulator, item: LabelledUtterance
) -> None:
    """A Bearer token from issueToken is accepted; a forged one is refused with 401."""
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(
            f"{emulator.http_url}/sts/v1.0/issueToken",
            headers={**KEY, "Content-Type": "application/x-www-form-urlencoded"},
        ) as response,
    ):
        assert response.status == 200
        token = await response.text()
    audio = item.audio.read_bytes()
    status, body = await post(emulator, audio, headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    assert body["RecognitionStatus"] == "Success"
    expiry = int(time.time()) + 600
    for forged in (f"{expiry}.forged-signature", token[:-2] + "xx", "not-a-token"):
        status, _ = await post(emulator, audio, headers={"Authorization": f"Bearer {forged}"})
        assert status == 401, forged


async def test_token_needs_the_right_key(emulator: LocalEmulator) -> None:
    """issueToken refuses a wrong key with 401."""
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(
            f"{emulator.http_url}/sts/v1.0/issueToken",
            headers={"Ocp-Apim-Subscription-Key": "wrong-key"},
        ) as response,
    ):
        assert response.status == 401


@pytest.mark.parametrize(
    "credential",
    [
        b"Ocp-Apim-Subscription-Key: k\xff",
        b"Authorization: Bearer 99999999999.\xff",
        b"Authorization: Bearer \xc2\xb2.x",
        b"Authorization: Bearer " + b"9" * 5000 + b".x",
    ],
    ids=["key-not-utf8", "token-not-utf8", "token-unicode-digit", "token-5000-digits"],
)
async def test_garbage_credentials_are_401_not_500(
    emulator: LocalEmulator, credential: bytes
) -> None:
    """Credentials with undecodable bytes, Unicode digits or huge numbers are refused with 401."""
    path = "/speech/recognition/conversation/cognitiveservices/v1?language=en-US"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "Content-Length: 4\r\nConnection: close\r\n"
    request = head.encode() + credential + b"\r\n\r\nRIFF"
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=60)
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"401", status_line


async def test_missing_language_is_400_naming_it(
    emulator: LocalEmulator, item: LabelledUtterance
) -> None:
    """Without the language query parameter the request is a 400 whose message names it."""
    status, body = await post(emulator, item.audio.read_bytes(), params={"format": "simple"})
    assert status == 400
    assert "language" in body["error"]


async def test_body_that_is_not_wav_is_400(emulator: LocalEmulator) -> None:
    """A body that is not RIFF/WAVE audio is a 400."""
    status, body = await post(emulator, b"this is not a wave file at all" * 10)
    assert status == 400
    assert "RIFF" in body["error"]


async def test_empty_body_is_400(emulator: LocalEmulator) -> None:
    """An empty body is a 400, not a recognition of nothing."""
    status, _ = await post(emulator, b"")
    assert status == 400


async def test_non_16khz_wav_is_400_naming_the_format(emulator: LocalEmulator) -> None:
    """An 8 kHz WAV is a 400 whose message names the sample rate and the format needed."""
    status, body = await post(emulator, wav_bytes(silence(1.0), sample_rate=8000))
    assert status == 400
    assert "8000 Hz" in body["error"]
    assert "16 kHz" in body["error"]


async def test_unknown_cid_is_400(emulator: LocalEmulator, item: LabelledUtterance) -> None:
    """An endpoint id (cid) the emulator does not serve is a 400."""
    params = {"language": "en-US", "cid": "no-such-model"}
    status, body = await post(emulator, item.audio.read_bytes(), params=params)
    assert status == 400
    assert "cid" in body["error"]


async def test_silence_is_initial_silence_timeout(emulator: LocalEmulator) -> None:
    """A WAV of silence only answers 200 with RecognitionStatus InitialSilenceTimeout."""
    status, body = await post(emulator, wav_bytes(silence(3.0)))
    assert status == 200, body
    assert body["RecognitionStatus"] == "InitialSilenceTimeout"
    assert "DisplayText" not in body


@pytest.mark.parametrize("chunked", [False, True], ids=["plain", "chunked"])
async def test_body_over_the_limit_is_413(
    small_body_emulator: LocalEmulator, item: LabelledUtterance, chunked: bool
) -> None:
    """A body larger than max_rest_body_bytes is refused with 413, plain or chunked."""
    audio = item.audio.read_bytes()
    assert len(audio) > SMALL_BODY_LIMIT
    body = in_chunks(audio) if chunked else audio
    status, answer = await post(small_body_emulator, body, headers={})
    assert status == 413
    assert str(SMALL_BODY_LIMIT) in answer["error"]


async def test_body_under_the_limit_is_accepted(
    small_body_emulator: LocalEmulator, item: LabelledUtterance
) -> None:
    """A body within max_rest_body_bytes is recognised normally by the same emulator."""
    short = wav_bytes(read_pcm(item.audio)[: SMALL_BODY_LIMIT - 100])
    status, body = await post(small_body_emulator, short, headers={})
    assert status == 200, body
    assert body["RecognitionStatus"] == "Success"
