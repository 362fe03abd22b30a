"""Tests of the REST short-audio tap: the one record of a request, from what its backend
answered and when, without sockets."""

from __future__ import annotations

import dataclasses
import gzip
import json
import zlib
from collections.abc import Callable

import pytest

from gateway.outcomes.privacy import TextPrivacy, text_digest
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.session.rest_tap import broken_off_record, decoded, request_record
from gateway.session.taps import FAILURE_STATUSES, RoleFacts, SessionFacts

KEY = b"k" * 32
FACTS = SessionFacts(
    experiment="exp",
    phase="p-1",
    client="app",
    unit="u" * 32,
    unit_source="query",
    session_id="s" * 32,
    protocol="rest",
    mode="conversation",
    locale="en-us",
    forced=False,
    text_privacy="text",
    privacy_key=KEY,
    failover_from="challenger",
    client_session="c" * 32,
)
PRIMARY = RoleFacts(Role.PRIMARY, "control", "azure")
# The client's audio from 10.0 s to 12.5 s, the backend's answer at 12.75 s.
FIRST, LAST, ANSWERED = 10.0, 12.5, 12.75


def answer(payload: bytes, status: int = 200, facts: SessionFacts = FACTS) -> OutcomeRecord:
    return request_record(
        facts, PRIMARY, status, payload, first=FIRST, last=LAST, answered=ANSWERED
    )


def success(**changes: object) -> bytes:
    body: dict[str, object] = {
        "RecognitionStatus": "Success",
        "Offset": 5_000_000,
        "Duration": 18_000_000,
        "DisplayText": "Hello, wide world.",
        "NBest": [{"Confidence": 0.875, "Display": "Hello, wide world."}],
    }
    body.update(changes)
    return json.dumps(body).encode()


def test_a_recognised_answer_is_a_request_record_with_its_measures() -> None:
    record = answer(success())
    assert record.kind is Kind.REQUEST
    assert record.status == "Success"
    assert (record.error_code, record.error_detail) == (None, None)
    assert record.utterance_index == 0
    assert (record.audio_offset_ms, record.audio_duration_ms) == (500.0, 1800.0)
    assert record.text == "Hello, wide world."
    assert record.text_sha256 is None
    assert record.confidence == 0.875
    assert record.word_count == 3
    assert (record.final_latency_ms, record.total_ms) == (250.0, 2750.0)
    assert (record.turn_id, record.first_hypothesis_ms) == (None, None)


def test_the_record_carries_the_session_and_role_identity() -> None:
    record = answer(success())
    assert (record.experiment, record.phase, record.client) == ("exp", "p-1", "app")
    assert (record.unit, record.unit_source, record.session_id) == ("u" * 32, "query", "s" * 32)
    assert (record.protocol, record.mode, record.locale) == ("rest", "conversation", "en-us")
    assert (record.role, record.variant, record.backend) == (Role.PRIMARY, "control", "azure")
    assert record.failover_from == "challenger"
    assert record.client_session == "c" * 32
    assert record.shadow_drops is None
    assert OutcomeRecord.from_json(record.to_json()) == record


def test_the_best_alternative_stands_in_for_a_missing_display_text() -> None:
    record = answer(success(DisplayText=None, NBest=[{"Display": "One two.", "Confidence": 2}]))
    assert record.text == "One two."
    assert record.word_count == 2
    assert record.confidence is None  # not a probability: left out


def test_an_answer_without_text_has_no_text_and_no_words() -> None:
    record = answer(success(DisplayText="", NBest=[]))
    assert record.kind is Kind.REQUEST
    assert (record.text, record.text_sha256, record.confidence) == (None, None, None)
    assert record.word_count == 0


@pytest.mark.parametrize(
    ("privacy", "text", "hashed"),
    [("text", "Hello, wide world.", False), ("hash", None, True), ("none", None, False)],
)
def test_text_privacy_decides_text_and_hash(
    privacy: TextPrivacy, text: str | None, hashed: bool
) -> None:
    record = answer(success(), facts=dataclasses.replace(FACTS, text_privacy=privacy))
    assert record.text == text
    assert record.text_sha256 == (text_digest("Hello, wide world.", KEY) if hashed else None)
    assert record.word_count == 3  # counted whatever is kept


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_an_http_error_is_a_failure_with_its_latencies(status: int) -> None:
    record = answer(success(), status=status)
    assert record.kind is Kind.SESSION_FAILURE
    assert record.status == "Error"
    assert record.error_code == f"upstream_http_{status}"
    assert record.error_detail == f"the backend answered HTTP {status}"
    assert (record.final_latency_ms, record.total_ms) == (250.0, 2750.0)
    assert (record.text, record.word_count, record.utterance_index) == (None, None, None)


@pytest.mark.parametrize("status", sorted(FAILURE_STATUSES))
def test_a_failed_recognition_in_an_http_200_is_a_failure(status: str) -> None:
    record = answer(success(RecognitionStatus=status))
    assert record.kind is Kind.SESSION_FAILURE
    assert record.status == status
    assert record.error_code == f"upstream_status_{status}"
    assert record.error_detail == f"the service answered {status}"
    assert (record.final_latency_ms, record.total_ms) == (250.0, 2750.0)
    assert (record.text, record.word_count) == (None, None)


@pytest.mark.parametrize("status", ["NoMatch", "InitialSilenceTimeout"])
def test_other_recognition_statuses_are_requests(status: str) -> None:
    record = answer(success(RecognitionStatus=status, DisplayText=""))
    assert record.kind is Kind.REQUEST
    assert record.status == status


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b'{"RecognitionStatus": "Succ', b"[1, 2]", b'"Success"', b"\xff\xfe"],
)
def test_a_malformed_answer_is_a_request_of_unknown_status(payload: bytes) -> None:
    record = answer(payload)
    assert record.kind is Kind.REQUEST
    assert record.status == "Unknown"
    assert (record.audio_offset_ms, record.audio_duration_ms) == (0.0, 0.0)
    assert (record.text, record.confidence, record.word_count) == (None, None, 0)
    assert (record.final_latency_ms, record.total_ms) == (250.0, 2750.0)


def test_a_backend_status_is_cut_to_64_characters() -> None:
    record = answer(success(RecognitionStatus="X" * 100))
    assert record.status == "X" * 64


def test_nonsense_offsets_count_as_zero() -> None:
    record = answer(success(Offset=-5, Duration="long"))
    assert (record.audio_offset_ms, record.audio_duration_ms) == (0.0, 0.0)


def test_latencies_are_unknown_when_the_audio_times_are() -> None:
    """A body that never ended (or never began) has no last (or first) arrival."""
    record = request_record(FACTS, PRIMARY, 200, success(), first=None, last=None, answered=1.0)
    assert (record.final_latency_ms, record.total_ms) == (None, None)
    early = request_record(FACTS, PRIMARY, 200, success(), first=2.0, last=3.0, answered=1.0)
    assert (early.final_latency_ms, early.total_ms) == (0.0, 0.0)  # never negative


def test_an_answer_broken_off_is_an_error_failure_without_latencies() -> None:
    record = broken_off_record(FACTS, PRIMARY, "upstream_timeout", "TimeoutError")
    assert record.kind is Kind.SESSION_FAILURE
    assert record.status == "Error"
    assert (record.error_code, record.error_detail) == ("upstream_timeout", "TimeoutError")
    assert (record.final_latency_ms, record.total_ms) == (None, None)
    assert (record.role, record.variant, record.backend) == (Role.PRIMARY, "control", "azure")
    assert record.failover_from == "challenger"


def test_every_record_has_its_own_id() -> None:
    assert answer(success()).record_id != answer(success()).record_id


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        (None, lambda data: data),
        ("identity", lambda data: data),
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some send
    ],
)
def test_a_coded_answer_is_decoded_for_the_record(
    coding: str | None, encode: Callable[[bytes], bytes]
) -> None:
    """gzip and deflate (zlib or raw) answers are read as the plain JSON they carry."""
    payload = b'{"RecognitionStatus": "Success", "DisplayText": "hello"}'
    assert decoded(encode(payload), coding, 1 << 20) == payload


def test_an_unknown_or_corrupt_coding_gives_nothing_and_the_output_is_bounded() -> None:
    """br (not undone here), a corrupt gzip stream: b"" (status Unknown); a bomb stops at
    the limit."""
    assert decoded(b"\x1b\x00", "br", 1 << 20) == b""
    assert decoded(b"not gzip at all", "gzip", 1 << 20) == b""
    assert len(decoded(gzip.compress(b"0" * 10_000_000), "gzip", 4096)) == 4096
