"""The SDK through the gateway behaves as it does against the backend directly."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest
from conftest import gateway_for
from support import CLIENT_KEY, EMULATOR_KEY, read_outcomes, read_pcm, silence, write_wav

from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.speech_client import speech_config, transcribe_file
from gateway.tools.usp_client import recognize

V1 = "/speech/recognition/conversation/cognitiveservices/v1"
UNIVERSAL = "/stt/speech/universal/v2"


@pytest.fixture(scope="module")
def gateway(
    emulator: LocalEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalGateway]:
    """A gateway sending every session to the custom banking model of the real emulator."""
    experiment = {
        "id": "custom-only",
        "control": "custom",
        "variants": [{"name": "custom", "backend": "local", "endpoint_id": "banking", "weight": 1}],
    }
    env = {**os.environ, "SPEECH_GATEWAY_GATEWAY__BACKENDS__LOCAL__KEY": EMULATOR_KEY}
    work = tmp_path_factory.mktemp("relay-gateway")
    with gateway_for(work, {"local": emulator.ws_url}, [experiment], env=env) as running:
        yield running


def direct(emulator: LocalEmulator, path: str = V1, detailed: bool = False) -> object:
    return speech_config(
        f"{emulator.ws_url}{path}", EMULATOR_KEY, endpoint_id="banking", detailed=detailed
    )


def through(gateway: LocalGateway, path: str = V1, detailed: bool = False) -> object:
    return speech_config(f"{gateway.ws_url}{path}", CLIENT_KEY, detailed=detailed)


def recognize_once(config: object, wav: Path) -> speechsdk.SpeechRecognitionResult:
    audio = speechsdk.audio.AudioConfig(filename=str(wav))
    return speechsdk.SpeechRecognizer(speech_config=config, audio_config=audio).recognize_once()


def test_recognize_once_gives_the_same_text(
    emulator: LocalEmulator, gateway: LocalGateway, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """recognize_once through the gateway (host= style) equals the direct result."""
    for item in datasets["banking"][:3]:
        config = speechsdk.SpeechConfig(host=gateway.ws_url, subscription=CLIENT_KEY)
        via = recognize_once(config, item.audio)
        config = speechsdk.SpeechConfig(host=emulator.ws_url, subscription=EMULATOR_KEY)
        config.endpoint_id = "banking"
        assert via.reason == speechsdk.ResultReason.RecognizedSpeech
        assert via.text == recognize_once(config, item.audio).text


@pytest.mark.parametrize("path", [V1, UNIVERSAL])
def test_continuous_multi_utterance_gives_the_same_texts(
    emulator: LocalEmulator,
    gateway: LocalGateway,
    datasets: dict[str, list[LabelledUtterance]],
    tmp_path: Path,
    path: str,
) -> None:
    """A five-utterance continuous session gives the same results in the same order."""
    items = datasets["banking"][10:15]
    wav = write_wav(
        tmp_path / "five.wav", b"".join(read_pcm(i.audio) + silence(1.2) for i in items)
    )
    via = transcribe_file(through(gateway, path), wav)
    plain = transcribe_file(direct(emulator, path), wav)
    assert via.error_code is None
    assert via.canceled_reason == "EndOfStream"
    assert [r.text for r in via.recognized] == [r.text for r in plain.recognized]
    assert len([r for r in via.recognized if r.text]) == len(items)
    assert [r.offset for r in via.recognized] == [r.offset for r in plain.recognized]


def test_detailed_output_passes_through(
    emulator: LocalEmulator, gateway: LocalGateway, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """Detailed results (NBest with confidences and word timings) arrive unchanged.

    Confidences are compared to two decimals: the recogniser's own confidences can differ
    in the fourth between a fresh and a reused decoder (docs/emulator.md), not the relay."""
    item = datasets["banking"][20]
    via = transcribe_file(through(gateway, detailed=True), item.audio).recognized[0]
    plain = transcribe_file(direct(emulator, detailed=True), item.audio).recognized[0]
    via_json, plain_json = json.loads(via.json), json.loads(plain.json)
    for body in (via_json, plain_json):
        body.pop("Id", None)
        for entry in body["NBest"]:
            entry["Confidence"] = round(entry["Confidence"], 2)
            for word in entry.get("Words", []):
                word.pop("Confidence", None)
    assert via_json == plain_json
    assert via_json["NBest"][0]["Words"]


def test_js_style_query_string_key_works_like_the_header(gateway: LocalGateway) -> None:
    """The key as an Ocp-Apim-Subscription-Key query parameter (as the JS SDK sends it) works."""
    pcm = read_pcm(Path(__file__).resolve().parents[2] / "data/demo/banking/audio/banking-002.wav")

    async def run() -> list[str]:
        async with aiohttp.ClientSession() as http:
            url = f"{gateway.ws_url}{UNIVERSAL}?Ocp-Apim-Subscription-Key={CLIENT_KEY}"
            context = {"phraseDetection": {"mode": "CONVERSATION", "language": "en-US"}}
            result = await recognize(http, url, pcm, context=context)
            return result.texts()

    texts = asyncio.run(run())
    assert texts
    assert all(texts)


def test_bearer_token_form_of_the_client_key_works(
    gateway: LocalGateway, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """A client key sent as an authorization token (Authorization: Bearer) is accepted."""
    config = speechsdk.SpeechConfig(auth_token=CLIENT_KEY, region="westus")
    config.set_property(
        speechsdk.PropertyId.SpeechServiceConnection_Endpoint, f"{gateway.ws_url}{V1}"
    )
    config = speechsdk.SpeechConfig(endpoint=f"{gateway.ws_url}{V1}")
    config.authorization_token = CLIENT_KEY
    transcript = transcribe_file(config, datasets["banking"][4].audio)
    assert transcript.error_code is None, transcript.error_details
    assert transcript.text


def test_wrong_client_key_is_authentication_failure(
    gateway: LocalGateway, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """A key the gateway did not issue is refused with 401 (SDK: AuthenticationFailure)."""
    config = speech_config(f"{gateway.ws_url}{V1}", "not-a-gateway-key")
    result = recognize_once(config, datasets["banking"][0].audio)
    assert result.reason == speechsdk.ResultReason.Canceled
    assert result.cancellation_details.code == speechsdk.CancellationErrorCode.AuthenticationFailure


def test_every_utterance_has_one_outcome_with_latencies(
    gateway: LocalGateway, datasets: dict[str, list[LabelledUtterance]], tmp_path: Path
) -> None:
    """Each recognised utterance of a session yields one outcome with gateway-side latencies."""
    items = datasets["banking"][30:33]
    wav = write_wav(
        tmp_path / "three.wav", b"".join(read_pcm(i.audio) + silence(1.2) for i in items)
    )
    before = {r.record_id for r in read_outcomes(gateway.config.parent / "outcomes.jsonl")}
    transcript = transcribe_file(through(gateway), wav)
    records = [
        r
        for r in read_outcomes(gateway.config.parent / "outcomes.jsonl")
        if r.record_id not in before and r.kind == "utterance"
    ]
    assert [r.text for r in records] == [r.text for r in transcript.recognized if r.text]
    assert len({r.session_id for r in records}) == 1
    assert [r.utterance_index for r in records] == [0, 1, 2]
    for record in records:
        assert record.variant == "custom"
        assert record.first_hypothesis_ms is not None
        assert record.final_latency_ms is not None
        assert record.total_ms is not None
        assert record.total_ms >= record.final_latency_ms
        assert record.word_count is not None
        assert record.word_count > 3
