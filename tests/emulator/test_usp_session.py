"""Scripted tests of the emulator's USP turn state machine, without sockets."""

from __future__ import annotations

import json

import pytest

from gateway.emulator.endpoints import EndpointTable
from gateway.emulator.options import Mode, RecognitionOptions
from gateway.emulator.recognition import (
    Alternative,
    Final,
    Partial,
    SpeechStarted,
    Word,
    ticks,
)
from gateway.emulator.usp_session import (
    Close,
    CloseStream,
    Command,
    Failure,
    Feed,
    Finish,
    OpenStream,
    Send,
    TurnState,
    UspSession,
)
from gateway.errors import UspError
from gateway.protocol.usp import (
    RecognitionStatus,
    decode_binary,
    decode_text,
    encode_binary,
    encode_text,
)
from gateway.protocol.wav import wave_header

RID = "9bed34362cbb4432963cb66e84906729"
V1_CONVERSATION = "/speech/recognition/conversation/cognitiveservices/v1"
V1_INTERACTIVE = "/speech/recognition/interactive/cognitiveservices/v1"
# The endpoint "banking" deploys the model "banking"; no endpoint id: the base model.
MODELS = EndpointTable(["banking"]).resolve


def context(rid: str = RID, body: dict[str, object] | None = None) -> object:
    return decode_text(encode_text("speech.context", rid, json.dumps(body or {})))


def audio(payload: bytes, rid: str = RID) -> object:
    return decode_binary(encode_binary("audio", rid, payload))


def sent(commands: list[Command]) -> list[tuple[str, dict[str, object]]]:
    """The (path, body) of every Send, checking the request id echoes the turn's."""
    out = []
    for command in commands:
        if isinstance(command, Send):
            message = decode_text(command.frame)
            assert message.request_id == RID
            out.append((message.path, json.loads(message.body) if message.body else {}))
    return out


def start_turn(session: UspSession, body: dict[str, object] | None = None) -> list[Command]:
    commands = session.receive_text(context(body=body))  # type: ignore[arg-type]
    commands += session.receive_binary(audio(wave_header()))  # type: ignore[arg-type]
    return commands


def final(words: tuple[str, ...], offset: int = 0, duration: int = ticks(1.0)) -> Final:
    timed = tuple(Word(w, offset, duration // max(1, len(words)), 0.9) for w in words)
    return Final(offset, duration, timed, 0.9, (Alternative(words, 0.9),))


def test_turn_start_echoes_request_id_and_stream_opens_after_riff_header() -> None:
    """speech.context starts a turn with turn.start; the RIFF header opens the recogniser."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(mode=Mode.CONVERSATION), MODELS)
    commands = start_turn(session)
    assert [path for path, _ in sent(commands)] == ["turn.start"]
    opens = [c for c in commands if isinstance(c, OpenStream)]
    assert len(opens) == 1
    assert opens[0].config.model == "base"
    assert session.state is TurnState.STREAMING


def test_audio_before_context_is_a_protocol_error() -> None:
    """Audio with no speech.context for its request id closes the connection with 1002."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(), MODELS)
    with pytest.raises(UspError) as caught:
        session.receive_binary(audio(wave_header()))  # type: ignore[arg-type]
    assert caught.value.close_code == 1002


def test_bad_riff_header_is_invalid_payload() -> None:
    """A first audio chunk that is not RIFF/WAVE closes with 1007 (bad audio format)."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(), MODELS)
    session.receive_text(context())  # type: ignore[arg-type]
    with pytest.raises(UspError) as caught:
        session.receive_binary(audio(b"NOTRIFF!" * 8))  # type: ignore[arg-type]
    assert caught.value.close_code == 1007


def test_continuous_turn_sends_one_phrase_per_utterance_then_end_sequence() -> None:
    """Continuous mode: a phrase per utterance as it ends; endDetected, EndOfDictation, turn.end."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(mode=Mode.CONVERSATION), MODELS)
    start_turn(session)
    for _ in range(40):  # 4 s of audio in 100 ms messages, as the SDK sends it
        assert isinstance(session.receive_binary(audio(b"\0" * 3200))[0], Feed)  # type: ignore[arg-type]
    out = session.recognized(
        [SpeechStarted(0), Partial(("hello",), 0, ticks(0.3)), final(("hello", "world"))]
    )
    out += session.recognized([SpeechStarted(ticks(2)), final(("again",), ticks(2), ticks(1))])
    paths = [path for path, _ in sent(out)]
    assert paths == ["speech.startDetected", "speech.hypothesis", "speech.phrase", "speech.phrase"]
    assert sent(out)[2][1]["DisplayText"] == "Hello world."
    assert isinstance(session.receive_binary(audio(b""))[0], Finish)  # type: ignore[arg-type]
    end = session.stream_finished(())
    assert [path for path, _ in sent(end)] == ["speech.endDetected", "speech.phrase", "turn.end"]
    assert sent(end)[1][1]["RecognitionStatus"] == "EndOfDictation"
    assert sent(end)[1][1]["Offset"] == ticks(4.0)
    assert any(isinstance(c, CloseStream) for c in end)
    assert session.state is TurnState.DONE


def test_tiny_follow_up_turn_ends_without_any_phrase() -> None:
    """A turn of under 100 ms of audio ends with endDetected and turn.end only (§10)."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(mode=Mode.CONVERSATION), MODELS)
    start_turn(session)
    session.receive_binary(audio(b"\0" * 6))  # type: ignore[arg-type]
    session.receive_binary(audio(b""))  # type: ignore[arg-type]
    paths = [path for path, _ in sent(session.stream_finished(()))]
    assert paths == ["speech.endDetected", "turn.end"]


def test_interactive_turn_ends_after_first_utterance() -> None:
    """Interactive mode: endDetected, the phrase, then turn.end; later audio is dropped."""
    session = UspSession(V1_INTERACTIVE, RecognitionOptions(mode=Mode.INTERACTIVE), MODELS)
    start_turn(session)
    session.receive_binary(audio(b"\0" * 32000))  # type: ignore[arg-type]
    out = session.recognized([SpeechStarted(0), final(("hi",))])
    assert [p for p, _ in sent(out)] == [
        "speech.startDetected",
        "speech.endDetected",
        "speech.phrase",
        "turn.end",
    ]
    assert session.receive_binary(audio(b"\0" * 3200)) == []  # type: ignore[arg-type]
    assert session.receive_binary(audio(b"")) == []  # type: ignore[arg-type]


def test_interactive_silence_times_out_with_initial_silence_timeout() -> None:
    """Five seconds of silence in an interactive turn gives InitialSilenceTimeout and turn.end."""
    session = UspSession(V1_INTERACTIVE, RecognitionOptions(mode=Mode.INTERACTIVE), MODELS)
    start_turn(session)
    out: list[Command] = []
    for _ in range(50):
        session.receive_binary(audio(b"\0" * 3200))  # type: ignore[arg-type]
        out += session.recognized(())
    phrases = [body for path, body in sent(out) if path == "speech.phrase"]
    assert phrases == [
        {"RecognitionStatus": "InitialSilenceTimeout", "Offset": 0, "Duration": ticks(5)}
    ]
    assert sent(out)[-1][0] == "turn.end"


def test_continuous_silence_is_acknowledged_every_ten_seconds() -> None:
    """Long silence in continuous mode is acknowledged with invisible EndOfDictation phrases."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(mode=Mode.CONVERSATION), MODELS)
    start_turn(session)
    out: list[Command] = []
    for _ in range(250):  # 25 s of silence
        session.receive_binary(audio(b"\0" * 3200))  # type: ignore[arg-type]
        out += session.recognized(())
    acks = [body for path, body in sent(out) if path == "speech.phrase"]
    assert [a["RecognitionStatus"] for a in acks] == ["EndOfDictation", "EndOfDictation"]
    assert acks[0]["Offset"] == 0
    assert acks[1]["Offset"] == acks[0]["Offset"] + acks[0]["Duration"]  # type: ignore[operator]


def test_new_context_mid_turn_abandons_the_open_stream() -> None:
    """A new speech.context while a turn is open closes its stream and starts a new turn."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(mode=Mode.CONVERSATION), MODELS)
    start_turn(session)
    other = "0" * 32
    commands = session.receive_text(context(rid=other))  # type: ignore[arg-type]
    assert isinstance(commands[0], CloseStream)
    assert decode_text(commands[1].frame).request_id == other  # type: ignore[union-attr]


def test_detailed_context_gives_nbest_with_word_timings() -> None:
    """phraseOutput.format Detailed with WordTimings yields NBest entries with Words."""
    session = UspSession("/stt/speech/universal/v2", RecognitionOptions(), MODELS)
    body = {
        "phraseDetection": {"mode": "CONVERSATION", "language": "en-US"},
        "phraseOutput": {"format": "Detailed", "detailed": {"options": ["WordTimings"]}},
    }
    start_turn(session, body)
    session.receive_binary(audio(b"\0" * 32000))  # type: ignore[arg-type]
    out = session.recognized([SpeechStarted(0), final(("two", "hundred", "dollars"))])
    phrase = next(b for p, b in sent(out) if p == "speech.phrase")
    best = phrase["NBest"][0]  # type: ignore[index]
    assert best["Lexical"] == "two hundred dollars"
    assert best["Display"] == "$200."
    assert [w["Word"] for w in best["Words"]] == ["two", "hundred", "dollars"]
    assert "Confidence" not in best["Words"][0]


def test_unknown_custom_endpoint_in_context_is_bad_request() -> None:
    """A customModels endpoint the emulator does not serve answers a BadRequest phrase."""
    session = UspSession("/stt/speech/universal/v2", RecognitionOptions(), MODELS)
    body = {"phraseDetection": {"customModels": [{"endpoint": "nope"}]}}
    out = session.receive_text(context(body=body))  # type: ignore[arg-type]
    assert [p for p, _ in sent(out)] == ["turn.start", "speech.phrase", "turn.end"]
    assert sent(out)[1][1]["RecognitionStatus"] == "BadRequest"


def test_unsupported_language_is_bad_request() -> None:
    """Only English models exist, so another language answers a BadRequest phrase."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(), MODELS)
    out = session.receive_text(context(body={"phraseDetection": {"language": "de-DE"}}))  # type: ignore[arg-type]
    assert sent(out)[1][1]["RecognitionStatus"] == "BadRequest"


@pytest.mark.parametrize("status", [RecognitionStatus.TOO_MANY_REQUESTS, RecognitionStatus.ERROR])
def test_scripted_status_failure_answers_in_the_first_turn(status: RecognitionStatus) -> None:
    """An injected USP failure answers turn.start, the status phrase and turn.end."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(), MODELS, Failure(status=status))
    out = session.receive_text(context())  # type: ignore[arg-type]
    assert [p for p, _ in sent(out)] == ["turn.start", "speech.phrase", "turn.end"]
    assert sent(out)[1][1]["RecognitionStatus"] == status.value


def test_scripted_close_failure_closes_after_turn_start() -> None:
    """An injected close failure sends turn.start and then closes with the chosen code."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(), MODELS, Failure(close_code=1011))
    out = session.receive_text(context())  # type: ignore[arg-type]
    assert isinstance(out[-1], Close)
    assert out[-1].code == 1011


def test_recognizer_failure_mid_turn_answers_error_status() -> None:
    """When the recogniser fails, the turn ends with an Error phrase (SDK ServiceError)."""
    session = UspSession(V1_CONVERSATION, RecognitionOptions(mode=Mode.CONVERSATION), MODELS)
    start_turn(session)
    out = session.recognizer_failed()
    assert [b["RecognitionStatus"] for p, b in sent(out) if p == "speech.phrase"] == ["Error"]
    assert session.state is TurnState.DONE


def test_an_endpoint_switch_applies_from_the_next_turn() -> None:
    """A turn keeps the model its endpoint had at its speech.context; the next turn on the
    same connection recognises with the model the endpoint was switched to."""
    table = EndpointTable(["banking"])
    session = UspSession(V1_CONVERSATION, RecognitionOptions(endpoint_id="banking"), table.resolve)
    session.receive_text(context())  # type: ignore[arg-type]
    table.switch("banking", "base", silent=True)
    first = session.receive_binary(audio(wave_header()))  # type: ignore[arg-type]
    assert [c.config.model for c in first if isinstance(c, OpenStream)] == ["banking"]
    session.receive_text(context(rid="1" * 32))  # type: ignore[arg-type]
    second = session.receive_binary(audio(wave_header(), rid="1" * 32))  # type: ignore[arg-type]
    assert [c.config.model for c in second if isinstance(c, OpenStream)] == ["base"]
