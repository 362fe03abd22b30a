"""Scripted tests of the USP relay state machine and its outcome taps, without sockets."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

import pytest

from gateway.errors import LifecycleError, Limit
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.protocol.usp import UspLimits, decode_text, encode_binary, encode_text
from gateway.protocol.wav import wave_header
from gateway.session.relay import (
    CloseClient,
    CloseUpstream,
    Command,
    Emit,
    Lifecycle,
    LimitHit,
    RelaySession,
    SessionLimits,
    ToClient,
    ToUpstream,
    transition,
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


def context(rid: str = RID, body: Mapping[str, object] | None = None) -> str:
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


def records(commands: Sequence[object]) -> list[OutcomeRecord]:
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


def test_malformed_client_frame_closes_with_the_codec_close_code() -> None:
    """A client text frame without Path closes the client with 1002 and the backend
    normally; no record (it is no limit), and nothing is relayed after it."""
    relay = RelaySession(FACTS, PRIMARY)
    out = relay.client_text("X-RequestId:" + RID + "\r\n\r\n{}", 0.0)
    assert out == [CloseClient(1002, "missing Path header"), CloseUpstream(1000)]
    assert relay.ended
    assert relay.client_text(context(), 0.1) == []
    assert relay.upstream_text(phrase("Hi.", 0, SECOND), 0.2) == []
    assert relay.upstream_closed(1000, "") == []
    assert relay.client_closed() == []


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


# -- limits ------------------------------------------------------------------------------


def limit_of(commands: list[Command]) -> tuple[Limit, OutcomeRecord]:
    """The one LimitHit of `commands` and the one failure record beside it."""
    (hit,) = [c for c in commands if isinstance(c, LimitHit)]
    (record,) = records(commands)
    assert isinstance(record, OutcomeRecord)
    assert (record.kind, record.role, record.error_code) == (
        Kind.SESSION_FAILURE,
        Role.PRIMARY,
        hit.limit.error_code,
    )
    return hit.limit, record


def test_turn_audio_limit_closes_with_1007() -> None:
    """Audio past the turn limit is not forwarded: the client is closed with 1007 and the
    limit as the reason (SDK: BadRequest, no retry), then the backend; one record and one
    LimitHit, and nothing is relayed afterwards."""
    relay = RelaySession(FACTS, PRIMARY, limits=SessionLimits(max_turn_audio_bytes=1000))
    relay.client_text(context(), 0.0)
    within = audio(b"\0" * 1000)
    assert relay.client_binary(within, 0.1) == [ToUpstream(within)]
    out = relay.client_binary(audio(b"\0" * 2), 0.2)
    assert out[:2] == [
        CloseClient(1007, "the turn's audio exceeds 1000 bytes"),
        CloseUpstream(1000),
    ]
    assert not any(isinstance(c, ToUpstream | ToClient) for c in out)
    limit, record = limit_of(out)
    assert (limit, record.status) == (Limit.TURN_AUDIO, "BadRequest")
    assert relay.ended
    assert relay.client_binary(within, 0.3) == []
    assert relay.upstream_text(service("turn.start", {}), 0.4) == []
    assert relay.client_closed() == []


def test_each_turn_has_its_own_budget_and_the_session_one_over_all_turns() -> None:
    """The turn limit applies per speech.context; the session limit to the sum of turns."""
    limits = SessionLimits(max_turn_audio_bytes=600, max_session_audio_bytes=1000)
    relay = RelaySession(FACTS, PRIMARY, limits=limits)
    relay.client_text(context(), 0.0)
    assert not relay.ended
    assert relay.client_binary(audio(b"\0" * 600), 0.1)
    second = "0" * 31 + "2"
    relay.client_text(context(second), 0.2)
    relay.client_binary(audio(b"\0" * 400, second), 0.3)  # 1000 in all: still within
    assert not relay.ended
    third = "0" * 31 + "3"
    relay.client_text(context(third), 0.4)
    out = relay.client_binary(audio(b"\0", third), 0.5)
    limit, record = limit_of(out)
    assert limit is Limit.SESSION_AUDIO
    assert record.error_detail == "the session's audio exceeds 1000 bytes"
    assert out[0] == CloseClient(1007, "the session's audio exceeds 1000 bytes")


def test_audio_limit_in_an_unavailable_session_keeps_its_one_record() -> None:
    """A session that already failed (backend unreachable) keeps its one failure record;
    the limit hit is still closed and noted."""
    relay = RelaySession(FACTS, PRIMARY, limits=SessionLimits(max_turn_audio_bytes=10))
    relay.upstream_unavailable("upstream_unreachable", "refused")
    relay.client_text(context(), 0.0)
    out = relay.client_binary(audio(b"\0" * 11), 0.1)
    assert out[0] == CloseClient(1007, "the turn's audio exceeds 10 bytes")
    assert records(out) == []
    assert [c.limit for c in out if isinstance(c, LimitHit)] == [Limit.TURN_AUDIO]


def test_oversized_binary_message_closes_with_1009_and_records_a_limit() -> None:
    """A binary message over the codec's bound closes with 1009: a message_size hit."""
    limits = SessionLimits(usp=UspLimits(max_binary_bytes=100))
    relay = RelaySession(FACTS, PRIMARY, limits=limits)
    out = relay.client_binary(audio(b"\0" * 200), 0.0)
    assert isinstance(out[0], CloseClient)
    assert out[0].code == 1009
    assert CloseUpstream(1000) in out
    limit, record = limit_of(out)
    assert (limit, record.status) == (Limit.MESSAGE_SIZE, "BadRequest")


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_oversized_headers_close_with_1002_and_record_a_limit(kind: str) -> None:
    """Headers over max_header_bytes close with the codec's 1002: a usp_header hit."""
    relay = RelaySession(FACTS, PRIMARY, limits=SessionLimits(usp=UspLimits(max_header_bytes=200)))
    pad = [("X-Pad", "x" * 300)]
    if kind == "text":
        out = relay.client_text(encode_text("speech.context", RID, "{}", extra_headers=pad), 0.0)
    else:
        out = relay.client_binary(encode_binary("audio", RID, b"", extra_headers=pad), 0.0)
    assert isinstance(out[0], CloseClient)
    assert out[0].code == 1002
    limit, _record = limit_of(out)
    assert limit is Limit.USP_HEADER


def test_websocket_layer_refusal_is_a_message_size_hit() -> None:
    """A message aiohttp refused (it closed with 1009 itself) closes the backend and is
    recorded once; the client is not closed again."""
    relay = RelaySession(FACTS, PRIMARY)
    out = relay.client_too_big(4096)
    assert not any(isinstance(c, CloseClient) for c in out)
    assert CloseUpstream(1000) in out
    limit, record = limit_of(out)
    assert limit is Limit.MESSAGE_SIZE
    assert record.error_detail == "a message exceeds 4096 bytes"
    assert relay.client_too_big(4096) == []


def test_idle_deadline_moves_with_client_frames_only() -> None:
    """The idle deadline is the client's last frame plus the timeout; backend frames do not
    move it, and before it nothing happens."""
    relay = RelaySession(FACTS, PRIMARY, limits=SessionLimits(idle_timeout_s=5.0), started=100.0)
    assert relay.next_deadline() == 105.0
    relay.client_text(context(), 102.0)
    relay.upstream_text(service("turn.start", {}), 106.0)
    assert relay.next_deadline() == 107.0
    assert relay.check_deadlines(106.9) == []
    out = relay.check_deadlines(107.0)
    reason = "Exceeded maximum websocket connection idle duration(> 5000ms)"
    assert out[:2] == [CloseClient(1000, reason), CloseUpstream(1000)]
    limit, record = limit_of(out)
    assert (limit, record.status, record.error_detail) == (Limit.IDLE_TIMEOUT, "Error", reason)
    assert relay.check_deadlines(200.0) == []
    assert relay.client_text(context(), 200.0) == []


def test_session_duration_ends_an_active_session() -> None:
    """Past max_session_s the session is closed with 1000 however busy the client is."""
    limits = SessionLimits(max_session_s=10.0, idle_timeout_s=5.0)
    relay = RelaySession(FACTS, PRIMARY, limits=limits, started=0.0)
    relay.client_text(context(), 0.0)
    for tick in range(1, 10):
        relay.client_binary(audio(b"\0" * 10), float(tick))
        assert relay.check_deadlines(float(tick)) == []
    assert relay.next_deadline() == 10.0
    out = relay.check_deadlines(10.0)
    reason = "Exceeded maximum websocket connection duration(> 10000ms)"
    assert out[0] == CloseClient(1000, reason)
    assert limit_of(out)[0] is Limit.SESSION_DURATION


def test_unlimited_by_default() -> None:
    """Without limits a relay has no deadline and counts no audio against anything."""
    relay = RelaySession(FACTS, PRIMARY)
    assert relay.next_deadline() == float("inf")
    relay.client_text(context(), 0.0)
    stream_audio(relay, 30, start=0.0)
    assert not relay.ended


def test_shut_down_closes_both_sides_and_records_a_turn_cut_off() -> None:
    """A drain closes the client with its code; only a turn in progress leaves a record."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    relay.upstream_text(service("turn.start", {}), 0.1)
    out = relay.shut_down(1012, "Instance is shutting down")
    assert out[:2] == [CloseClient(1012, "Instance is shutting down"), CloseUpstream(1000)]
    (record,) = records(out)
    assert isinstance(record, OutcomeRecord)
    assert (record.kind, record.error_code) == (Kind.SESSION_FAILURE, "gateway_shutdown")
    assert relay.ended
    assert relay.shut_down(1012, "again") == []
    assert relay.upstream_text(phrase("late", 0, SECOND), 0.2) == []


def test_shut_down_between_turns_records_nothing() -> None:
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_text(context(), 0.0)
    relay.upstream_text(service("turn.start", {}), 0.1)
    relay.upstream_text(service("turn.end", {}), 0.2)
    out = relay.shut_down(1012, "Instance is shutting down")
    assert out == [CloseClient(1012, "Instance is shutting down"), CloseUpstream(1000)]


# -- the lifecycle -----------------------------------------------------------------------

ALLOWED = {
    (Lifecycle.RELAYING, Lifecycle.UNAVAILABLE),
    (Lifecycle.RELAYING, Lifecycle.ENDED),
    (Lifecycle.UNAVAILABLE, Lifecycle.ENDED),
}


@pytest.mark.parametrize("target", list(Lifecycle))
@pytest.mark.parametrize("current", list(Lifecycle))
def test_transition_table(current: Lifecycle, target: Lifecycle) -> None:
    """A session only moves forward, RELAYING → UNAVAILABLE → ENDED, or straight to ENDED;
    every other move, staying put included, is refused."""
    if (current, target) in ALLOWED:
        assert transition(current, target) is target
    else:
        with pytest.raises(LifecycleError, match=f"from {current.name} to {target.name}"):
            transition(current, target)


def test_a_forbidden_transition_leaves_the_session_as_it_was() -> None:
    relay = RelaySession(FACTS, PRIMARY)
    relay.shut_down(1012, "Instance is shutting down")
    with pytest.raises(LifecycleError):
        relay._become(Lifecycle.RELAYING)
    assert relay.lifecycle is Lifecycle.ENDED


def test_lifecycle_follows_the_session() -> None:
    """A new session relays; an unreachable primary makes it UNAVAILABLE, where the client's
    frames are still read, and a limit then ends it."""
    relay = RelaySession(FACTS, PRIMARY, limits=SessionLimits(max_turn_audio_bytes=10))
    seen = [(relay.lifecycle, relay.ended)]
    relay.upstream_unavailable("upstream_unreachable", "refused")
    seen.append((relay.lifecycle, relay.ended))
    relay.client_text(context(), 0.0)
    seen.append((relay.lifecycle, relay.ended))
    relay.client_binary(audio(b"\0" * 11), 0.1)
    seen.append((relay.lifecycle, relay.ended))
    assert seen == [
        (Lifecycle.RELAYING, False),
        (Lifecycle.UNAVAILABLE, False),
        (Lifecycle.UNAVAILABLE, False),
        (Lifecycle.ENDED, True),
    ]


@pytest.mark.parametrize(
    "end",
    [
        lambda relay: relay.client_text("X-RequestId:" + RID + "\r\n\r\n{}", 0.0),
        lambda relay: relay.client_too_big(4096),
        lambda relay: relay.check_deadlines(1e9),
        lambda relay: relay.shut_down(1012, "Instance is shutting down"),
    ],
    ids=["client_violation", "client_too_big", "deadline", "shut_down"],
)
@pytest.mark.parametrize("unavailable", [False, True], ids=["relaying", "unavailable"])
def test_every_end_of_the_session_is_the_ended_state(
    end: Callable[[RelaySession], list[Command]], unavailable: bool
) -> None:
    """Whatever ends the session, from either state, leaves it ENDED."""
    relay = RelaySession(FACTS, PRIMARY, limits=SessionLimits(idle_timeout_s=5.0))
    if unavailable:
        relay.upstream_unavailable("upstream_unreachable", "refused")
    assert end(relay)
    assert relay.lifecycle is Lifecycle.ENDED


def test_upstream_unavailable_after_the_end_records_but_stays_ended() -> None:
    """A late dial failure cannot revive a session the gateway ended: it stays ENDED and
    only its failure record (the session's first) is returned."""
    relay = RelaySession(FACTS, PRIMARY)
    relay.client_too_big(4096)  # its limit's failure record is the session's one record
    assert records(relay.upstream_unavailable("upstream_unreachable", "refused")) == []
    assert relay.lifecycle is Lifecycle.ENDED
    fresh = RelaySession(FACTS, PRIMARY)
    fresh.shut_down(1012, "Instance is shutting down")  # between turns: no record
    (record,) = records(fresh.upstream_unavailable("upstream_unreachable", "refused"))
    assert record.error_code == "upstream_unreachable"
    assert fresh.lifecycle is Lifecycle.ENDED
    assert fresh.client_text(context(), 0.0) == []


def test_upstream_unavailable_twice_stays_unavailable() -> None:
    relay = RelaySession(FACTS, PRIMARY)
    relay.upstream_unavailable("upstream_unreachable", "refused")
    assert records(relay.upstream_unavailable("breaker_open", "open")) == []
    assert relay.lifecycle is Lifecycle.UNAVAILABLE
