"""The emulator's USP connection as a state machine: messages in, commands out. No I/O.

`emulator.server` drives it: it decodes client frames, hands them here, executes the
commands that come back (send a frame, open/feed/finish the recognition stream, close), and
reports the recogniser's events. The turn sequence follows protocol.md §10:

    turn.start → speech.startDetected → speech.hypothesis* → speech.phrase* → … → turn.end

Interactive turns end after the first utterance (endDetected, phrase, turn.end). Continuous
turns send one phrase per utterance as it ends, acknowledge long silences with invisible
EndOfDictation phrases (so the SDK's replay buffer never overflows, §12) and close with
endDetected, a final EndOfDictation and turn.end when the client's audio for the turn ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, auto

from gateway.emulator import options as opts
from gateway.emulator import phrases
from gateway.emulator.options import RecognitionOptions
from gateway.emulator.recognition import (
    Final,
    Partial,
    RecognitionEvent,
    SpeechStarted,
    StreamConfig,
    ticks,
)
from gateway.errors import UspError
from gateway.protocol.usp import BinaryMessage, Path, RecognitionStatus, TextMessage, encode_text
from gateway.protocol.wav import WaveHeaderReader, require_pcm16_mono_16k

# The model an endpoint id (None: no endpoint) recognises with now; None: no such endpoint.
ModelResolver = Callable[[str | None], str | None]
# Silence is acknowledged in steps this long, keeping unacknowledged audio far below the
# native SDK's 66 s overflow limit; the margin leaves room for the VAD's look-back.
SILENCE_ACK_STEP = ticks(10.0)
SILENCE_ACK_MARGIN = ticks(1.0)
# The native SDK opens a short follow-up turn for audio left unacknowledged by rounding;
# such a turn must end with no phrase at all, or the SDK opens yet another one.
TINY_TURN = ticks(0.1)


@dataclass(frozen=True, slots=True)
class Send:
    frame: str
    is_result: bool = False  # hypotheses and phrases: what the latency knob delays


@dataclass(frozen=True, slots=True)
class OpenStream:
    config: StreamConfig


@dataclass(frozen=True, slots=True)
class Feed:
    pcm: bytes


@dataclass(frozen=True, slots=True)
class Finish:
    pass


@dataclass(frozen=True, slots=True)
class CloseStream:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    code: int  # a CloseCode, or any code a fault test injects
    reason: str


Command = Send | OpenStream | Feed | Finish | CloseStream | Close


class TurnState(Enum):
    IDLE = auto()  # no speech.context yet, or the last turn ended
    AWAITING_HEADER = auto()  # context received, RIFF header not complete
    STREAMING = auto()  # PCM flows to the recogniser
    FINISHING = auto()  # the client ended the turn's audio, the stream is flushing
    DONE = auto()  # turn.end sent; late audio of this turn is dropped


@dataclass(frozen=True, slots=True)
class Failure:
    """A scripted failure for fault tests: a status phrase, or a close, on the first turn."""

    status: RecognitionStatus | None = None
    close_code: int | None = None


class UspSession:
    def __init__(
        self,
        url_path: str,
        url_options: RecognitionOptions,
        resolve: ModelResolver,
        failure: Failure | None = None,
    ) -> None:
        self._path_mode = opts.mode_from_path(url_path)
        self._url_options = url_options
        self._resolve = resolve
        self._model: str | None = None  # the turn's model, resolved at its speech.context
        self._failure = failure
        self._state = TurnState.IDLE
        self._request_id: str | None = None
        self._options = url_options
        self._header = WaveHeaderReader()
        self._stream_open = False
        self._audio_bytes = 0
        self._acked = 0
        self._in_speech = False
        self._start_sent = False
        self._utterances = 0
        self._sample_rate = 16000

    @property
    def state(self) -> TurnState:
        return self._state

    # -- client messages -------------------------------------------------------------------

    def receive_text(self, message: TextMessage) -> list[Command]:
        if message.path.lower() != Path.SPEECH_CONTEXT.lower():
            return []  # speech.config, telemetry and unknown paths need no answer
        commands = self._abandon_turn()
        assert message.request_id is not None  # the codec requires it on speech.context
        self._begin_turn(message.request_id)
        commands.append(self._send(Path.TURN_START, {"context": {"serviceTag": uuid.uuid4().hex}}))
        if self._failure is not None:
            failure, self._failure = self._failure, None
            if failure.close_code is not None:
                return [*commands, Close(failure.close_code, "injected failure")]
            if failure.status is not None:
                return commands + self._fail_turn(failure.status)
        try:
            context = opts.parse_context(message.body)
            self._options = opts.with_context(self._url_options, context, path_mode=self._path_mode)
            self._options.check_language()
        except UspError:
            return commands + self._fail_turn(RecognitionStatus.BAD_REQUEST)
        # Resolved once per turn: an endpoint switched meanwhile applies from the next turn.
        self._model = self._resolve(self._options.endpoint_id)
        if self._model is None:
            return commands + self._fail_turn(RecognitionStatus.BAD_REQUEST)
        return commands

    def receive_binary(self, message: BinaryMessage) -> list[Command]:
        if message.path.lower() != Path.AUDIO.lower():
            return []
        if self._state is TurnState.IDLE or message.request_id != self._request_id:
            raise UspError("audio before speech.context for its X-RequestId")
        if self._state in (TurnState.DONE, TurnState.FINISHING):
            return []
        if not message.payload:
            return self._end_of_audio()
        if self._state is TurnState.AWAITING_HEADER:
            done = self._header.feed(message.payload)
            if done is None:
                return []
            fmt, pcm = done
            require_pcm16_mono_16k(fmt)
            self._state = TurnState.STREAMING
            self._stream_open = True
            assert self._model is not None  # a turn without a model ended at its context
            config = StreamConfig(
                model=self._model,
                segmentation_silence_ms=self._options.segmentation_silence_ms,
                sample_rate=fmt.sample_rate,
            )
            commands: list[Command] = [OpenStream(config)]
            return commands + self._feed(pcm) if pcm else commands
        return self._feed(message.payload)

    def connection_closed(self) -> list[Command]:
        return self._abandon_turn()

    # -- recogniser reports ------------------------------------------------------------------

    def recognized(self, events: Iterable[RecognitionEvent]) -> list[Command]:
        commands: list[Command] = []
        for event in events:
            if self._state is TurnState.DONE:
                break
            commands.extend(self._on_event(event))
        if self._state is TurnState.STREAMING:
            commands.extend(self._silence_checks())
        return commands

    def stream_finished(self, events: Iterable[RecognitionEvent]) -> list[Command]:
        """The stream flushed after the end of the turn's audio: close the turn."""
        commands = self.recognized(events)
        if self._state is TurnState.DONE:
            return commands
        end = self._audio_ticks()
        commands.append(self._send(Path.SPEECH_END_DETECTED, {"Offset": end}))
        if not self._options.mode.continuous:
            status = RecognitionStatus.INITIAL_SILENCE_TIMEOUT
            commands.append(self._status(status, 0, end))
        elif end - self._acked < TINY_TURN:
            pass
        elif self._utterances == 0:
            # Silence only: say so visibly, as the service does. An SDK calling
            # recognize_once on a continuous path needs a result to complete.
            status = RecognitionStatus.INITIAL_SILENCE_TIMEOUT
            commands.append(self._status(status, self._acked, end - self._acked))
        else:
            commands.append(self._status(RecognitionStatus.END_OF_DICTATION, end, 0))
        return commands + self._end_turn()

    def recognizer_failed(self) -> list[Command]:
        if self._state in (TurnState.IDLE, TurnState.DONE):
            return []
        return self._fail_turn(RecognitionStatus.ERROR)

    # -- internals ---------------------------------------------------------------------------

    def _on_event(self, event: RecognitionEvent) -> list[Command]:
        match event:
            case SpeechStarted(offset=offset):
                self._in_speech = True
                if self._start_sent:
                    return []
                self._start_sent = True
                return [self._send(Path.SPEECH_START_DETECTED, {"Offset": offset})]
            case Partial():
                body = phrases.hypothesis_body(event, self._options.profanity)
                return [self._send_raw(Path.SPEECH_HYPOTHESIS, body, is_result=True)]
            case Final():
                self._in_speech = False
                self._utterances += 1
                self._acked = max(self._acked, event.offset + event.duration)
                phrase = self._send_raw(
                    Path.SPEECH_PHRASE, phrases.phrase_body(event, self._options), is_result=True
                )
                if self._options.mode.continuous:
                    return [phrase]
                end = {"Offset": event.offset + event.duration}
                return [self._send(Path.SPEECH_END_DETECTED, end), phrase, *self._end_turn()]

    def _silence_checks(self) -> list[Command]:
        if self._in_speech:
            return []
        now = self._audio_ticks()
        timeout_ms = self._options.effective_initial_silence_ms
        if timeout_ms is not None and not self._start_sent and now >= ticks(timeout_ms / 1000):
            status = RecognitionStatus.INITIAL_SILENCE_TIMEOUT
            if not self._options.mode.continuous:
                return [
                    self._send(Path.SPEECH_END_DETECTED, {"Offset": now}),
                    self._status(status, 0, now),
                    *self._end_turn(),
                ]
            self._start_sent = True  # one timeout per turn, as the service does
            acked, self._acked = self._acked, now
            return [self._status(status, acked, now - acked)]
        if self._options.mode.continuous and now - self._acked >= SILENCE_ACK_STEP:
            upto = now - SILENCE_ACK_MARGIN
            acked, self._acked = self._acked, upto
            return [self._status(RecognitionStatus.END_OF_DICTATION, acked, upto - acked)]
        return []

    def _feed(self, pcm: bytes) -> list[Command]:
        self._audio_bytes += len(pcm)
        return [Feed(pcm)]

    def _end_of_audio(self) -> list[Command]:
        if self._state is TurnState.AWAITING_HEADER:
            # A turn without audio: the real service answers an empty file with Error.
            return self._fail_turn(RecognitionStatus.ERROR)
        self._state = TurnState.FINISHING
        return [Finish()]

    def _begin_turn(self, request_id: str) -> None:
        self._request_id = request_id
        self._state = TurnState.AWAITING_HEADER
        self._header = WaveHeaderReader()
        self._options = self._url_options
        self._model = None
        self._audio_bytes = 0
        self._acked = 0
        self._in_speech = False
        self._start_sent = False
        self._utterances = 0

    def _abandon_turn(self) -> list[Command]:
        if self._stream_open:
            self._stream_open = False
            return [CloseStream()]
        return []

    def _end_turn(self) -> list[Command]:
        self._state = TurnState.DONE
        return [self._send_raw(Path.TURN_END, "{}"), *self._abandon_turn()]

    def _fail_turn(self, status: RecognitionStatus) -> list[Command]:
        return [self._status(status, 0, 0), *self._end_turn()]

    def _audio_ticks(self) -> int:
        return ticks(self._audio_bytes / (self._sample_rate * 2))

    def _status(self, status: RecognitionStatus, offset: int, duration: int) -> Send:
        body = phrases.status_body(status, offset, duration)
        return self._send_raw(Path.SPEECH_PHRASE, body, is_result=True)

    def _send(self, path: Path, body: Mapping[str, object]) -> Send:
        return self._send_raw(path, json.dumps(body, separators=(",", ":")))

    def _send_raw(self, path: Path, body: str, *, is_result: bool = False) -> Send:
        return Send(encode_text(path.value, self._request_id, body), is_result=is_result)
