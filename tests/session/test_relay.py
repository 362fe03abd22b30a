"""Scripted tests of the USP relay state machine and its outcome taps, without sockets."""

from __future__ import annotations

import json

import pytest

from gateway.errors import UspError
from gateway.outcomes.record import Kind, Role
from gateway.protocol.usp import decode_text, encode_binary, encode_text
from gateway.protocol.wav import wave_header
from gateway.session.relay import (
    CloseClient,
    CloseUpstream,
    Emit,
    RelaySession,
    ToClient,
    ToUpstream,
)
from gateway.session.taps import RoleFacts, SessionFacts

RID = "9bed34362cbb4432963cb66e84906729"
FACTS = SessionFacts(
    experiment="exp",
    phase="p-1",
    client="app",
    unit="u" * 32,
    unit_source="query",
    session_id="s" * 32,
    protocol="usp",
    mode="conversation",
    locale="en-us",
    forced=False,
    text_privacy="text",
    privacy_key=b"k" * 32,
)
PRIMARY = RoleFacts(Role.PRIMARY, "base", "azure")
SHADOW = RoleFacts(Role.SHADOW, "custom", "azure")
SECOND = 10_000_000  # ticks


def context(rid: str = RID, body: dict[str, object] | None = None) -> str:
    return encode_text("speech.context", rid, json.dumps(body or {}))


def audio(payload: bytes, rid: str = RID) -> bytes:
    return encode_binary("audio", rid, payload)


def service(path: str, body: dict[str, object], rid: str = RID) -> str:
    return encode_text(path, rid, json.dumps(body))


def phrase(text: str, offset: int, duration: int, status: str = "Success") -> str:
    return service(
        "speech.phrase",
        {"RecognitionStatus": status, "Offset": offset, "Duration": duration, "DisplayText": text},
    )


def records(commands: list[object]) -> list[object]:
    return [c.record for c in commands if isinstance(c, Emit)]


def stream_audio(relay: RelaySession, seconds: int, start: float) -> None:
    """One second of 16 kHz audio per second of arrival time."""
    relay.client_binary(audio(wave_header()), start)
    for second in range(seconds):
        relay.client_binary(audio(b"\0" * 32000), start + second + 1)


def test_client_frames_are_forwarded_unchanged_and_teed() -> None:
    """Client text and binary frames go upstream as the same objects; contexts start turns."""
    relay = RelaySession(FACTS, PRIMARY, [SHADOW])
    frame = context()
    commands = relay.client_text(frame, 0.0)
    assert commands == [ToUpstream(frame, starts_turn=True)]
    assert commands[0].frame is frame  # type: ignore[union-attr]
    chunk = audio(b"\1\2" * 100)
    assert relay.client_binary(chunk, 0.1) == [ToUpstream(chunk)]


def test_malformed_client_frame_raises_usp_error_for_a_clean_close() -> None:
    """A client text frame without Path raises UspError (the driver closes with 1002)."""
    relay = RelaySession(FACTS, PRIMARY)
    with pytest.raises(UspError) as caught:
        relay.client_text("X-RequestId:" + RID + "\r\n\r\n{}", 0.0)
    assert caught.value.close_code == 1002


def test_phrase_yields_a_record_with_latencies_measured_at_the_gateway() -> None:
    """A phrase's record has first-hypothesis, final and total latency from audio arrival."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    stream_audio(relay, 3, start=10.0)  # second k of audio arrives at 10 + k + 1
    hyp = service("speech.hypothesis", {"Text": "hi", "Offset": SECOND, "Duration": SECOND})
    out = relay.upstream_text(hyp, 12.5)
    assert out == [ToClient(hyp)]
    out = relay.upstream_text(phrase("Hi there.", SECOND, SECOND), 13.25)
    (record,) = records(out)
    assert record.kind == Kind.UTTERANCE
    assert record.role == Role.PRIMARY
    assert (record.variant, record.backend, record.experiment) == ("base", "azure", "exp")
    assert record.turn_id == RID
    assert record.utterance_index == 0
    assert record.audio_offset_ms == 1000.0
    assert record.audio_duration_ms == 1000.0
    # The audio at 1 s arrived with the 2nd chunk (t=12); the end at 2 s with it too.
    assert record.first_hypothesis_ms == pytest.approx(500.0)
    assert record.final_latency_ms == pytest.approx(1250.0)
    assert record.total_ms == pytest.approx(1250.0)
    assert record.text == "Hi there."
    assert record.word_count == 2


def test_end_of_dictation_acknowledges_without_a_record() -> None:
    """EndOfDictation phrases are acknowledgements only: no outcome record."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    out = relay.upstream_text(phrase("", 0, 5 * SECOND, status="EndOfDictation"), 1.0)
    assert records(out) == []


def test_follow_up_turn_offsets_are_session_global() -> None:
    """A native follow-up turn's continuation offset makes record offsets session-global."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    relay.upstream_text(phrase("One.", 0, 2 * SECOND), 1.0)
    second = "0" * 31 + "1"
    body = {"continuation": {"audio": {"streams": {"1": {"offset": str(2 * SECOND)}}}}}
    relay.client_text(context(second, body), 2.0)
    (record,) = records(
        relay.upstream_text(phrase("Two.", SECOND, SECOND).replace(RID, second), 3.0)
    )
    assert record.audio_offset_ms == 3000.0
    assert record.utterance_index == 1


def test_js_style_follow_up_turn_starts_at_the_primary_acknowledgement() -> None:
    """Without a continuation block the next turn starts where the primary acknowledged."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    relay.upstream_text(phrase("One.", 0, 3 * SECOND), 1.0)
    second = "0" * 31 + "2"
    relay.client_text(context(second), 2.0)
    (record,) = records(relay.upstream_text(phrase("Two.", 0, SECOND).replace(RID, second), 3.0))
    assert record.audio_offset_ms == 3000.0


def test_error_status_yields_one_session_failure() -> None:
    """An upstream Error phrase is forwarded and recorded once as a session failure."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    frame = phrase("", 0, 0, status="Error")
    out = relay.upstream_text(frame, 1.0)
    assert out[0] == ToClient(frame)
    (record,) = records(out)
    assert record.kind == Kind.SESSION_FAILURE
    assert record.error_code == "upstream_status_Error"
    assert records(relay.upstream_text(frame, 1.1)) == []


def test_upstream_close_is_passed_on_with_its_code_and_recorded() -> None:
    """The backend's close code and reason reach the client; non-1000 closes are failures."""
    relay = RelaySession(FACTS, PRIMARY)
    out = relay.upstream_closed(1011, "boom")
    assert out[0] == CloseClient(1011, "boom")
    (record,) = records(out)
    assert record.error_code == "upstream_close_1011"
    assert records(RelaySession(FACTS, PRIMARY).upstream_closed(1000, "")) == []


def test_unavailable_upstream_answers_each_turn_with_error() -> None:
    """With no backend, each turn is answered turn.start, an Error phrase and turn.end."""
    relay = RelaySession(FACTS, PRIMARY)
    (failure,) = records(relay.upstream_unavailable("upstream_unreachable", "refused"))
    assert failure.kind == Kind.SESSION_FAILURE
    out = relay.client_text(context(), 0.0)
    sent = [decode_text(c.frame) for c in out if isinstance(c, ToClient)]  # type: ignore[arg-type]
    assert [m.path for m in sent] == ["turn.start", "speech.phrase", "turn.end"]
    assert all(m.request_id == RID for m in sent)
    assert json.loads(sent[1].body)["RecognitionStatus"] == "Error"
    assert relay.client_binary(audio(b"\0" * 10), 0.1) == []
    assert relay.client_closed() == []


def test_client_close_closes_upstream() -> None:
    """When the client leaves, the backend connection is closed normally."""
    assert RelaySession(FACTS, PRIMARY).client_closed() == [CloseUpstream(1000)]


def test_shadow_results_are_recorded_not_forwarded_and_carry_drops() -> None:
    """A shadow's phrase becomes a shadow record with its drop count; nothing goes to the client."""
    relay = RelaySession(FACTS, PRIMARY, [SHADOW])
    relay.client_text(context(), 0.0)
    stream_audio(relay, 2, start=0.0)
    relay.shadow_dropped("custom", 3)
    out = relay.shadow_text("custom", phrase("Hi.", 0, SECOND), 5.0)
    assert not any(isinstance(c, ToClient) for c in out)
    (record,) = records(out)
    assert record.role == Role.SHADOW
    assert record.variant == "custom"
    assert record.shadow_drops == 3
    (primary,) = records(relay.upstream_text(phrase("Hi.", 0, SECOND), 2.0))
    assert primary.shadow_drops is None
    assert primary.audio_offset_ms == record.audio_offset_ms


def test_unparseable_service_frame_is_still_forwarded() -> None:
    """The tap only reads: a service frame it cannot parse still reaches the client."""
    relay = RelaySession(FACTS, PRIMARY)
    assert relay.upstream_text("garbage", 0.0) == [ToClient("garbage")]


@pytest.mark.parametrize("code", [1006, 1005, 0])
def test_lost_backend_connection_answers_the_turn_with_error(code: int) -> None:
    """A backend lost without a sendable close code ends the SDK's turn with an Error
    phrase and a normal close, never an illegal close frame."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    relay.upstream_text(service("turn.start", {"context": {}}), 0.1)
    out = relay.upstream_closed(code, "")
    sent = [decode_text(c.frame) for c in out if isinstance(c, ToClient)]  # type: ignore[arg-type]
    assert [m.path for m in sent] == ["speech.phrase", "turn.end"]
    assert json.loads(sent[0].body)["RecognitionStatus"] == "Error"
    assert CloseClient(1000, "the backend connection was lost") in out
    (record,) = records(out)
    assert record.error_code == "upstream_lost"


def test_lost_backend_before_turn_start_starts_the_turn_first() -> None:
    """If the backend had not started the turn, the gateway sends turn.start itself."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    out = relay.upstream_closed(1006, "")
    paths = [decode_text(c.frame).path for c in out if isinstance(c, ToClient)]  # type: ignore[arg-type]
    assert paths == ["turn.start", "speech.phrase", "turn.end"]
