"""The real Azure Speech SDK against the emulator over loopback."""

from __future__ import annotations

import json
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import pytest
from support import EMULATOR_KEY, read_pcm, silence, write_wav

from gateway.stats.wer import align, corpus_wer
from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator
from gateway.tools.speech_client import speech_config, transcribe_file

V1_CONVERSATION = "/speech/recognition/conversation/cognitiveservices/v1"
UNIVERSAL_V2 = "/stt/speech/universal/v2"


def endpoint(emulator: LocalEmulator, path: str = V1_CONVERSATION) -> str:
    return f"{emulator.ws_url}{path}"


def recognize_once(config: object, wav: Path) -> speechsdk.SpeechRecognitionResult:
    audio = speechsdk.audio.AudioConfig(filename=str(wav))
    recognizer = speechsdk.SpeechRecognizer(speech_config=config, audio_config=audio)
    return recognizer.recognize_once()


def test_recognize_once_with_host_config(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """SpeechConfig(host=...) with recognize_once returns the utterance's text."""
    item = datasets["banking"][0]
    config = speechsdk.SpeechConfig(host=emulator.ws_url, subscription=EMULATOR_KEY)
    config.endpoint_id = "banking"
    result = recognize_once(config, item.audio)
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech
    assert align(item.text, result.text).wer < 0.5


@pytest.mark.parametrize("path", [V1_CONVERSATION, UNIVERSAL_V2])
def test_endpoint_config_v1_and_universal_v2_agree(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]], path: str
) -> None:
    """SpeechConfig(endpoint=...) works with a v1 path and with the universal v2 path."""
    item = datasets["banking"][1]
    config = speech_config(endpoint(emulator, path), EMULATOR_KEY, endpoint_id="banking")
    reference = speech_config(endpoint(emulator), EMULATOR_KEY, endpoint_id="banking")
    transcript = transcribe_file(config, item.audio)
    assert transcript.error_code is None
    assert transcript.text
    assert transcript.text == transcribe_file(reference, item.audio).text


def test_continuous_recognition_gives_one_event_per_utterance_in_order(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]], tmp_path: Path
) -> None:
    """A file with four utterances gives four recognized events, in order, and hypotheses."""
    items = datasets["banking"][2:6]
    pcm = b"".join(read_pcm(item.audio) + silence(1.2) for item in items)
    wav = write_wav(tmp_path / "four.wav", pcm)
    config = speech_config(endpoint(emulator), EMULATOR_KEY, endpoint_id="banking")
    transcript = transcribe_file(config, wav)
    assert transcript.canceled_reason == "EndOfStream"
    assert transcript.error_code is None
    texts = [r.text for r in transcript.recognized if r.reason == "RecognizedSpeech"]
    assert len(texts) == len(items)
    for item, text in zip(items, texts, strict=True):
        own = align(item.text, text).wer
        assert all(own <= align(other.text, text).wer for other in items), (item.text, text)
    offsets = [r.offset for r in transcript.recognized]
    assert offsets == sorted(offsets)
    assert transcript.hypotheses > len(items)


def test_detailed_output_has_nbest_and_word_timings(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """Detailed output carries NBest with Confidence, Lexical, ITN, MaskedITN, Display, Words."""
    item = datasets["banking"][6]
    config = speech_config(endpoint(emulator), EMULATOR_KEY, endpoint_id="banking", detailed=True)
    config.request_word_level_timestamps()
    transcript = transcribe_file(config, item.audio)
    body = json.loads(transcript.recognized[0].json)
    best = body["NBest"][0]
    assert set(best) >= {"Confidence", "Lexical", "ITN", "MaskedITN", "Display", "Words"}
    assert 0.0 < best["Confidence"] <= 1.0
    assert best["Display"] == transcript.recognized[0].text
    words = best["Words"]
    assert [w["Word"] for w in words] == best["Lexical"].split()
    # Word offsets are absolute (the SDK rebases them) and increase.
    starts = [w["Offset"] for w in words]
    assert starts == sorted(starts)
    assert body["Offset"] <= starts[0]


@pytest.mark.parametrize("interactive", [True, False])
def test_silence_gives_initial_silence_timeout(
    emulator: LocalEmulator, tmp_path: Path, interactive: bool
) -> None:
    """recognize_once on silence is NoMatch/InitialSilenceTimeout, on either path kind."""
    wav = write_wav(tmp_path / "silence.wav", silence(7.0))
    if interactive:  # host= picks the interactive path, which times out after 5 s
        config = speechsdk.SpeechConfig(host=emulator.ws_url, subscription=EMULATOR_KEY)
    else:  # an explicit endpoint is used verbatim, even for recognize_once
        config = speech_config(endpoint(emulator), EMULATOR_KEY)
    result = recognize_once(config, wav)
    assert result.reason == speechsdk.ResultReason.NoMatch
    details = result.no_match_details
    assert details.reason == speechsdk.NoMatchReason.InitialSilenceTimeout


def test_continuous_silence_ends_cleanly_without_results(
    emulator: LocalEmulator, tmp_path: Path
) -> None:
    """Continuous recognition of 25 s of silence ends with EndOfStream and no text."""
    wav = write_wav(tmp_path / "silence.wav", silence(25.0))
    transcript = transcribe_file(speech_config(endpoint(emulator), EMULATOR_KEY), wav)
    assert transcript.canceled_reason == "EndOfStream"
    assert transcript.error_code is None
    assert transcript.text == ""


def test_noise_gives_no_match(emulator: LocalEmulator, tmp_path: Path) -> None:
    """Speech-like noise that decodes to nothing is reported as NoMatch, not an error."""
    import random

    rng = random.Random(7)
    burst = bytes(rng.randrange(256) for _ in range(16000))  # 0.5 s of loud noise
    wav = write_wav(tmp_path / "noise.wav", silence(0.5) + burst + silence(1.5))
    result = recognize_once(speech_config(endpoint(emulator), EMULATOR_KEY), wav)
    assert result.reason in (
        speechsdk.ResultReason.NoMatch,
        speechsdk.ResultReason.RecognizedSpeech,
    )
    assert result.reason != speechsdk.ResultReason.Canceled


def test_wrong_key_is_authentication_failure(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """A wrong subscription key cancels with AuthenticationFailure (HTTP 401 at upgrade)."""
    result = recognize_once(
        speech_config(endpoint(emulator), "wrong-key"), datasets["banking"][0].audio
    )
    assert result.reason == speechsdk.ResultReason.Canceled
    details = result.cancellation_details
    assert details.code == speechsdk.CancellationErrorCode.AuthenticationFailure


def test_endpoint_id_selects_the_custom_model(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """endpoint_id (cid) routes to the custom model, which recognises the domain better."""
    items = datasets["banking"][:8]
    base = speech_config(endpoint(emulator), EMULATOR_KEY)
    custom = speech_config(endpoint(emulator), EMULATOR_KEY, endpoint_id="banking")
    base_wer = corpus_wer((i.text, transcribe_file(base, i.audio).text) for i in items).wer
    custom_wer = corpus_wer((i.text, transcribe_file(custom, i.audio).text) for i in items).wer
    assert custom_wer < base_wer


def test_unknown_endpoint_id_is_bad_request(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """An endpoint id the emulator does not serve is rejected as a bad request."""
    config = speech_config(endpoint(emulator), EMULATOR_KEY, endpoint_id="no-such-model")
    result = recognize_once(config, datasets["banking"][0].audio)
    assert result.reason == speechsdk.ResultReason.Canceled
    assert result.cancellation_details.code == speechsdk.CancellationErrorCode.BadRequest
