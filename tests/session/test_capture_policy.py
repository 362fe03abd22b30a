"""Scripted tests of sampled capture (gateway.session.capture) inside the relay state machine:
the policy's shares, priorities and caps, the cut by offsets, and the buffer bounds."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date

import pytest

from gateway.outcomes.record import OutcomeRecord, Role
from gateway.protocol.usp import encode_binary, encode_text
from gateway.protocol.wav import wave_header
from gateway.session.capture import (
    CaptureBudget,
    CapturedUtterance,
    CaptureIdentity,
    CapturePolicy,
    CaptureQuota,
    CaptureReason,
    CaptureSample,
    DropReason,
    SessionCapture,
)
from gateway.session.relay import RelaySession
from gateway.session.rest_tap import request_record
from gateway.session.taps import RoleFacts, SessionFacts

RID = "9bed34362cbb4432963cb66e84906729"
SECOND = 10_000_000  # ticks
BYTES_PER_SECOND = 32_000
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
EVERYTHING = CapturePolicy(share=1.0, utterance_share=1.0)
PRIORITIES_ONLY = CapturePolicy(share=1.0, utterance_share=0.0)


class Harness:
    """A relay with a capture, the audio it was sent, and what the capture emitted."""

    def __init__(
        self,
        policy: CapturePolicy = EVERYTHING,
        *,
        shadows: bool = False,
        quota: CaptureQuota | None = None,
        budget: CaptureBudget | None = None,
    ) -> None:
        self.emitted: list[CapturedUtterance] = []
        self.dropped: list[DropReason] = []
        self.budget = budget or CaptureBudget(10**9)
        self.capture = SessionCapture(
            policy,
            CaptureIdentity("exp", "p-1", FACTS.unit, "app", FACTS.session_id),
            ("custom",) if shadows else (),
            quota=quota or CaptureQuota(),
            budget=self.budget,
            emit=self.emitted.append,
            drop=self.dropped.append,
        )
        self.relay = RelaySession(FACTS, PRIMARY, [SHADOW] if shadows else [], capture=self.capture)
        self.pcm = b""

    def turn(
        self, seconds: float, rid: str = RID, context: dict[str, object] | None = None
    ) -> bytes:
        """A turn of `seconds` of random audio in 3200-byte frames; its PCM."""
        self.relay.client_text(encode_text("speech.context", rid, json.dumps(context or {})), 0.0)
        pcm = os.urandom(int(seconds * BYTES_PER_SECOND))
        self.relay.client_binary(encode_binary("audio", rid, wave_header()), 0.0)
        for at in range(0, len(pcm), 3200):
            self.relay.client_binary(encode_binary("audio", rid, pcm[at : at + 3200]), 0.0)
        self.pcm += pcm
        return pcm

    def primary(
        self, text: str, offset_s: float, duration_s: float, rid: str = RID, **extra: object
    ) -> None:
        self.relay.upstream_text(phrase(text, offset_s, duration_s, rid, **extra), 1.0)

    def shadow(self, text: str, offset_s: float, duration_s: float, rid: str = RID) -> None:
        self.relay.shadow_text("custom", phrase(text, offset_s, duration_s, rid), 1.0)


def phrase(text: str, offset_s: float, duration_s: float, rid: str, **extra: object) -> str:
    body: dict[str, object] = {
        "RecognitionStatus": "Success",
        "Offset": int(offset_s * SECOND),
        "Duration": int(duration_s * SECOND),
        "DisplayText": text,
        **extra,
    }
    return encode_text("speech.phrase", rid, json.dumps(body))


def cut(pcm: bytes, offset_s: float, duration_s: float) -> bytes:
    start = int(offset_s * SECOND) * BYTES_PER_SECOND // SECOND
    end = int((offset_s + duration_s) * SECOND) * BYTES_PER_SECOND // SECOND
    return pcm[start - start % 2 : end - end % 2]


def test_each_utterance_is_cut_from_the_turn_by_its_offsets() -> None:
    """Two utterances of one turn: each capture holds exactly the PCM at its offsets."""
    harness = Harness()
    pcm = harness.turn(3.0)
    harness.primary("one", 0.3, 0.9)
    harness.primary("two", 1.7, 1.1)
    assert [u.pcm for u in harness.emitted] == [cut(pcm, 0.3, 0.9), cut(pcm, 1.7, 1.1)]
    assert [u.utterance_index for u in harness.emitted] == [0, 1]
    assert [u.primary.text for u in harness.emitted] == ["one", "two"]
    assert {(u.reason, u.sample) for u in harness.emitted} == {
        (CaptureReason.UNIFORM, CaptureSample.UNIFORM)
    }
    assert harness.emitted[0].duration_ms == 900


def test_a_follow_up_turn_is_cut_from_its_own_audio() -> None:
    """A native SDK's second turn states its session offset; the cut uses its own PCM."""
    harness = Harness()
    harness.turn(1.0)
    harness.primary("first", 0.1, 0.5)
    second = "0" * 31 + "2"
    pcm = harness.turn(
        2.0, second, {"continuation": {"audio": {"streams": {"1": {"offset": 10_000_000}}}}}
    )
    harness.primary("second", 0.4, 1.0, rid=second)
    assert harness.emitted[-1].pcm == cut(pcm, 0.4, 1.0)


def test_the_capture_waits_for_the_shadow_and_keeps_its_result() -> None:
    """With a shadow, an utterance is decided once the shadow's result is in; a different
    transcript is a disagreement, captured even with no uniform share."""
    harness = Harness(PRIORITIES_ONLY, shadows=True)
    pcm = harness.turn(2.0)
    harness.primary("pay the bill", 0.2, 1.0)
    assert harness.emitted == []
    harness.shadow("pay the bell", 0.2, 1.0)
    (captured,) = harness.emitted
    assert captured.reason is CaptureReason.DISAGREEMENT
    assert captured.sample is CaptureSample.PRIORITY
    assert [s.text for s in captured.shadows] == ["pay the bell"]
    assert captured.pcm == cut(pcm, 0.2, 1.0)


def test_agreeing_shadows_are_not_a_priority() -> None:
    """Transcripts equal after normalisation are no disagreement; a shadow answering first
    is paired all the same."""
    harness = Harness(PRIORITIES_ONLY, shadows=True)
    harness.turn(2.0)
    harness.shadow("Pay the bill.", 0.2, 1.0)
    harness.primary("pay the bill", 0.2, 1.0)
    assert harness.emitted == []
    assert harness.capture.buffered_bytes < 2 * BYTES_PER_SECOND  # released up to its end


def test_a_shadow_that_segments_differently_is_matched_by_audio_span() -> None:
    """A shadow that splits an utterance in two: the primary waits until the shadow has
    answered past its end, takes the result overlapping it most, and the next utterance is
    matched with the shadow's result for the same audio, not with the shadow's next index."""
    for policy in (EVERYTHING, PRIORITIES_ONLY):
        harness = Harness(policy, shadows=True)
        harness.turn(4.0)
        harness.primary("pay the bill please", 0.2, 1.8)
        harness.shadow("pay the bill", 0.2, 1.2)
        assert harness.emitted == []  # the shadow has not heard the utterance's end yet
        harness.shadow("please", 1.5, 0.5)
        harness.shadow("thank you", 2.5, 0.6)
        harness.primary("thank you", 2.5, 0.6)
        if policy is EVERYTHING:
            first, second = harness.emitted
            assert [s.text for s in first.shadows] == ["pay the bill"]
            assert [s.text for s in second.shadows] == ["thank you"]
        else:
            # Only the disagreement is a priority: the second utterance agrees with the
            # shadow's result for its audio ("thank you", not the shadow's next "please").
            (first,) = harness.emitted
            assert first.reason is CaptureReason.DISAGREEMENT
            assert [s.text for s in first.shadows] == ["pay the bill"]


def test_a_shadow_result_overlapping_nothing_is_no_partner() -> None:
    """A shadow that heard something where the primary heard nothing pairs with nothing."""
    harness = Harness(EVERYTHING, shadows=True)
    harness.turn(3.0)
    harness.shadow("uh", 0.1, 0.3)
    harness.shadow("hello", 1.0, 0.5)
    harness.primary("hello", 1.0, 0.5)
    (captured,) = harness.emitted
    assert [s.text for s in captured.shadows] == ["hello"]


def test_a_failed_shadow_is_not_waited_for() -> None:
    """A shadow that failed releases the utterances waiting for it."""
    harness = Harness(shadows=True)
    harness.turn(1.0)
    harness.primary("hello", 0.1, 0.5)
    assert harness.emitted == []
    harness.relay.shadow_failed("custom", "upstream_unreachable", "down")
    assert len(harness.emitted) == 1
    assert harness.emitted[0].shadows == ()


def test_session_end_decides_what_waits() -> None:
    """At the session's end, utterances still waiting for a shadow are decided."""
    harness = Harness(shadows=True)
    harness.turn(1.0)
    harness.primary("hello", 0.1, 0.5)
    harness.relay.finish_capture()
    assert len(harness.emitted) == 1
    assert harness.capture.buffered_bytes == 0
    assert harness.budget.used == 0


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"NBest": [{"Confidence": 0.2, "Display": "x"}]}, CaptureReason.LOW_CONFIDENCE),
        ({"RecognitionStatus": "NoMatch", "DisplayText": ""}, CaptureReason.NO_MATCH),
    ],
)
def test_priorities_select_without_a_uniform_share(
    extra: dict[str, object], reason: CaptureReason
) -> None:
    """Low confidence and no match are captured with a zero uniform share; a confident
    match is not."""
    harness = Harness(PRIORITIES_ONLY)
    harness.turn(2.0)
    harness.primary("sure", 0.1, 0.4, NBest=[{"Confidence": 0.95}])
    harness.primary("x", 0.8, 0.4, **extra)
    assert [u.reason for u in harness.emitted] == [reason]


def test_the_uniform_sample_is_drawn_whatever_the_results() -> None:
    """The uniform draw depends on the utterance's index alone: the same utterances are in
    the uniform sample whether they were recognised confidently or not, so hard utterances
    are in it as often as in live traffic; the priorities take the rest."""
    policy = CapturePolicy(share=1.0, utterance_share=0.5)
    drawn = {}
    for confidence in (0.95, 0.1):
        harness = Harness(policy)
        harness.turn(40.0)
        for i in range(40):
            harness.primary("words", i * 1.0, 0.5, NBest=[{"Confidence": confidence}])
        drawn[confidence] = [
            u.utterance_index for u in harness.emitted if u.sample is CaptureSample.UNIFORM
        ]
        if confidence < 0.5:  # every low-confidence utterance the draw left is a priority
            priority = [u for u in harness.emitted if u.sample is CaptureSample.PRIORITY]
            assert {u.reason for u in priority} == {CaptureReason.LOW_CONFIDENCE}
            assert len(priority) + len(drawn[confidence]) == 40
    assert drawn[0.95] == drawn[0.1]
    assert 10 <= len(drawn[0.95]) <= 30


def test_priorities_apply_in_the_configured_order() -> None:
    """An utterance that is both low-confidence and disputed gets the first listed reason."""
    order = (CaptureReason.LOW_CONFIDENCE, CaptureReason.DISAGREEMENT)
    harness = Harness(CapturePolicy(share=1.0, utterance_share=0.0, priorities=order), shadows=True)
    harness.turn(1.0)
    harness.primary("a", 0.1, 0.5, NBest=[{"Confidence": 0.1}])
    harness.shadow("b", 0.1, 0.5)
    assert [u.reason for u in harness.emitted] == [CaptureReason.LOW_CONFIDENCE]


def test_a_backend_failure_captures_the_audio_after_the_last_utterance() -> None:
    """A primary that closes abnormally: the turn's audio after its last result is kept."""
    harness = Harness(PRIORITIES_ONLY)
    pcm = harness.turn(2.0)
    harness.primary("ok", 0.0, 0.5, NBest=[{"Confidence": 0.9}])
    harness.relay.upstream_closed(1011, "internal error")
    (captured,) = harness.emitted
    assert captured.reason is CaptureReason.FAILURE
    assert captured.pcm == pcm[cut_end(0.0, 0.5) :]


def cut_end(offset_s: float, duration_s: float) -> int:
    end = int((offset_s + duration_s) * SECOND) * BYTES_PER_SECOND // SECOND
    return end - end % 2


def test_the_daily_cap_keeps_a_reserve_for_priorities() -> None:
    """Uniform captures stop at the cap less its reserve; priorities go on to the cap; a
    new day starts again."""
    today = [date(2026, 1, 1)]
    quota = CaptureQuota(lambda: today[0])
    policy = CapturePolicy(share=1.0, utterance_share=1.0, daily_cap=4, priority_reserve=0.5)
    harness = Harness(policy, quota=quota)
    harness.turn(8.0)
    for i in range(4):  # confident: uniform
        harness.primary("fine", i * 1.0, 0.5, NBest=[{"Confidence": 0.9}])
    assert len(harness.emitted) == 2
    assert harness.dropped == [DropReason.DAILY_CAP] * 2
    for i in range(4, 7):  # low confidence: priority
        harness.primary("hmm", i * 1.0, 0.5, NBest=[{"Confidence": 0.1}])
    assert [u.reason for u in harness.emitted[2:]] == [CaptureReason.LOW_CONFIDENCE] * 2
    assert harness.dropped[-1] is DropReason.DAILY_CAP
    today[0] = date(2026, 1, 2)
    harness.primary("fine", 7.0, 0.5, NBest=[{"Confidence": 0.9}])
    assert len(harness.emitted) == 5


def test_session_share_is_per_variant_and_stable() -> None:
    """A session is considered by a hash of its id: the same answer every time, about the
    configured share over many sessions, and the variant's own share when it has one."""
    policy = CapturePolicy(share=0.1, variant_shares={"custom": 0.0, "all": 1.0})
    ids = [f"{n:032x}" for n in range(4000)]
    considered = sum(policy.considers("exp", "base", sid) for sid in ids)
    assert 300 < considered < 500
    assert [policy.considers("exp", "base", s) for s in ids[:50]] == [
        policy.considers("exp", "base", s) for s in ids[:50]
    ]
    assert not any(policy.considers("exp", "custom", sid) for sid in ids[:200])
    assert all(policy.considers("exp", "all", sid) for sid in ids[:200])
    assert not any(CapturePolicy().considers("exp", "base", sid) for sid in ids[:200])


def test_the_session_bound_drops_and_counts() -> None:
    """Audio beyond the session's bound is not kept; an utterance in it is dropped and
    counted, one before it is still captured."""
    harness = Harness(CapturePolicy(share=1.0, max_session_bytes=BYTES_PER_SECOND))
    pcm = harness.turn(3.0)
    harness.primary("early", 0.1, 0.5)
    harness.primary("late", 2.0, 0.5)
    assert [u.pcm for u in harness.emitted] == [cut(pcm, 0.1, 0.5)]
    assert harness.dropped == [DropReason.SESSION_BYTES]


def test_the_process_budget_is_shared_and_given_back() -> None:
    """The process-wide budget bounds every session together and is returned at the end."""
    budget = CaptureBudget(BYTES_PER_SECOND)
    first, second = Harness(budget=budget), Harness(budget=budget)
    first.turn(0.75)
    second.turn(0.75)
    assert budget.used <= BYTES_PER_SECOND
    second.primary("x", 0.1, 0.5)
    assert second.dropped == [DropReason.TOTAL_BYTES]
    first.relay.finish_capture()
    second.relay.finish_capture()
    assert budget.used == 0


def test_the_session_gives_an_utterance_back_before_the_writer_takes_it() -> None:
    """The writer reserves a capture's bytes in the same budget: the session's copy is
    released first, so an utterance near the budget is not counted twice and dropped."""
    budget = CaptureBudget(int(1.2 * BYTES_PER_SECOND))
    harness = Harness(budget=budget)
    taken: list[bool] = []
    harness.capture._emit = lambda utterance: taken.append(budget.take(len(utterance.pcm)))
    harness.turn(1.0)
    harness.primary("x", 0.1, 0.8)
    assert taken == [True]


def test_a_capture_that_raises_never_fails_the_session() -> None:
    """A bug in the capture disables it for the session; the frames still go through."""

    def explode(_utterance: CapturedUtterance) -> None:
        raise RuntimeError("boom")

    harness = Harness()
    harness.capture._emit = explode  # type: ignore[method-assign]
    harness.turn(1.0)
    harness.primary("x", 0.1, 0.5)
    assert harness.relay.forward_binary(encode_binary("audio", RID, b"\0" * 3200), 2.0) is None
    assert harness.budget.used == 0


def rest_record(body: dict[str, object], status: int = 200) -> OutcomeRecord:
    role = RoleFacts(Role.PRIMARY, "base", "azure")
    payload = json.dumps(body).encode()
    facts = dataclasses.replace(FACTS, protocol="rest", mode=None)
    return request_record(facts, role, status, payload, first=0.0, last=1.0, answered=1.5)


def test_a_rest_body_is_cut_by_the_answers_offsets_whatever_its_chunks() -> None:
    """A REST body arriving in chunks that split its header: the capture is the PCM at the
    answer's offsets, and the body's buffer is given back."""
    harness = Harness()
    pcm = os.urandom(2 * BYTES_PER_SECOND)
    body = wave_header(data_bytes=len(pcm)) + pcm
    for at in range(0, len(body), 10):
        harness.capture.request_audio(body[at : at + 10])
    harness.capture.request_record(
        rest_record(
            {
                "RecognitionStatus": "Success",
                "DisplayText": "hi",
                "Offset": 3_000_000,
                "Duration": 9_000_000,
            }
        )
    )
    (captured,) = harness.emitted
    assert captured.pcm == cut(pcm, 0.3, 0.9)
    assert captured.utterance_index == 0
    assert harness.budget.used == 0


def test_a_failed_rest_request_keeps_its_whole_audio_and_a_non_wav_body_nothing() -> None:
    """A backend's HTTP error is a failure priority (the whole PCM is kept); a body that
    is not WAV is never captured."""
    harness = Harness(PRIORITIES_ONLY)
    pcm = os.urandom(BYTES_PER_SECOND)
    harness.capture.request_audio(wave_header(data_bytes=len(pcm)) + pcm)
    harness.capture.request_record(rest_record({}, status=503))
    (captured,) = harness.emitted
    assert (captured.reason, captured.pcm) == (CaptureReason.FAILURE, pcm)
    other = Harness()
    other.capture.request_audio(b"OggS" + os.urandom(4000))
    other.capture.request_record(rest_record({"RecognitionStatus": "Success", "Duration": 1}))
    assert other.emitted == []
    assert other.budget.used == 0


def test_a_turn_begun_again_gives_its_bytes_back() -> None:
    """A client that sends speech.context again with the same request id: the audio buffered
    for the turn so far is given back, to the session's bound and the process's budget."""
    harness = Harness(PRIORITIES_ONLY)
    harness.turn(1.0)
    harness.turn(1.0)
    assert harness.capture.buffered_bytes == harness.budget.used == BYTES_PER_SECOND
    harness.relay.finish_capture()
    assert harness.capture.buffered_bytes == harness.budget.used == 0


def test_a_session_without_its_backend_buffers_no_audio() -> None:
    """A session answered by the gateway because its backend is unreachable keeps none of
    its audio: no result will ever cut it, and it would starve the process's budget."""
    harness = Harness()
    harness.relay.upstream_unavailable("upstream_unreachable", "connection refused")
    harness.turn(2.0)
    assert harness.capture.buffered_bytes == harness.budget.used == 0
    harness.relay.finish_capture()
    assert harness.emitted == []


def test_a_turn_over_a_bound_is_kept_again_once_results_cover_its_buffer() -> None:
    """A long turn that hit the process budget is not lost for good: once the results
    have covered what was kept, its audio is kept again, cut at the right offsets."""
    harness = Harness(budget=CaptureBudget(BYTES_PER_SECOND))
    harness.relay.client_text(encode_text("speech.context", RID, "{}"), 0.0)
    harness.relay.client_binary(encode_binary("audio", RID, wave_header()), 0.0)
    pcm = os.urandom(3 * BYTES_PER_SECOND)

    def send(start_s: float, end_s: float) -> None:
        for at in range(int(start_s * BYTES_PER_SECOND), int(end_s * BYTES_PER_SECOND), 3200):
            harness.relay.client_binary(encode_binary("audio", RID, pcm[at : at + 3200]), 0.0)

    send(0.0, 1.5)  # the budget holds the first second
    harness.primary("one", 0.1, 0.4)
    harness.primary("across the gap", 0.8, 0.4)
    send(1.5, 3.0)
    harness.primary("two", 1.6, 0.6)
    assert [u.pcm for u in harness.emitted] == [cut(pcm, 0.1, 0.4), cut(pcm, 1.6, 0.6)]
    assert harness.dropped == [DropReason.TOTAL_BYTES]
    harness.relay.finish_capture()
    assert harness.budget.used == 0
