"""Recognise WAV files with the real Azure Speech SDK: used by the demo, replay and tests.

The SDK is synchronous with callbacks on its own threads; these helpers block, so async
callers run them in a thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk

DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Recognized:
    reason: str  # RecognizedSpeech or NoMatch
    text: str
    json: str
    offset: int
    duration: int


@dataclass
class Transcript:
    """What one continuous-recognition session of a file produced."""

    recognized: list[Recognized] = field(default_factory=list)
    hypotheses: int = 0
    canceled_reason: str | None = None
    error_code: str | None = None
    error_details: str | None = None

    @property
    def text(self) -> str:
        return " ".join(r.text for r in self.recognized if r.text)


def speech_config(
    endpoint: str,
    key: str | None = None,
    *,
    endpoint_id: str | None = None,
    detailed: bool = False,
    language: str = "en-US",
) -> Any:
    config = speechsdk.SpeechConfig(endpoint=endpoint, subscription=key or "none")
    config.speech_recognition_language = language
    if endpoint_id:
        config.endpoint_id = endpoint_id
    if detailed:
        config.output_format = speechsdk.OutputFormat.Detailed
    return config


def transcribe_file(
    config: Any, wav: Path, *, continuous: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Transcript:
    """Recognise a WAV file: continuous (every utterance) or recognize_once (the first)."""
    audio = speechsdk.audio.AudioConfig(filename=str(wav))
    recognizer = speechsdk.SpeechRecognizer(speech_config=config, audio_config=audio)
    transcript = Transcript()
    if not continuous:
        _record(transcript, recognizer.recognize_once())
        return transcript
    done = threading.Event()

    def on_recognized(event: Any) -> None:
        _record(transcript, event.result)

    def on_recognizing(_event: Any) -> None:
        transcript.hypotheses += 1

    def on_canceled(event: Any) -> None:
        _record(transcript, event.result)
        done.set()

    recognizer.recognized.connect(on_recognized)
    recognizer.recognizing.connect(on_recognizing)
    recognizer.canceled.connect(on_canceled)
    recognizer.session_stopped.connect(lambda _event: done.set())
    recognizer.start_continuous_recognition()
    finished = done.wait(timeout_s)
    recognizer.stop_continuous_recognition()
    if not finished:
        transcript.canceled_reason = transcript.canceled_reason or "Timeout"
    return transcript


def _record(transcript: Transcript, result: Any) -> None:
    reason = result.reason
    if reason == speechsdk.ResultReason.Canceled:
        details = result.cancellation_details
        transcript.canceled_reason = details.reason.name
        if details.reason == speechsdk.CancellationReason.Error:
            transcript.error_code = details.code.name
            transcript.error_details = details.error_details
        return
    if reason in (speechsdk.ResultReason.RecognizedSpeech, speechsdk.ResultReason.NoMatch):
        transcript.recognized.append(
            Recognized(
                reason=reason.name,
                text=result.text,
                json=result.json,
                offset=result.offset,
                duration=result.duration,
            )
        )
