"""Tests of the session layer's record builders shared by both protocols."""

from __future__ import annotations

import dataclasses

from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.session.taps import SessionFacts, primary_failure

FACTS = SessionFacts(
    experiment="exp",
    phase="p-1",
    client="app",
    unit="u" * 32,
    unit_source="connection",
    session_id="s" * 32,
    protocol="usp",
    mode="interactive",
    locale="de-de",
    forced=True,
    text_privacy="hash",
    privacy_key=b"k" * 32,
    failover_from="challenger",
    client_session="c" * 32,
)


def test_a_primary_failure_is_charged_to_the_variant_and_backend_given() -> None:
    record = primary_failure(
        FACTS,
        "control",
        "azure",
        status="TooManyRequests",
        error_code="limit_connection_rate",
        detail="more than 5 new sessions at once",
    )
    assert record.kind is Kind.SESSION_FAILURE
    assert (record.role, record.variant, record.backend) == (Role.PRIMARY, "control", "azure")
    assert record.status == "TooManyRequests"
    assert record.error_code == "limit_connection_rate"
    assert record.error_detail == "more than 5 new sessions at once"
    assert (record.experiment, record.phase, record.client) == ("exp", "p-1", "app")
    assert (record.unit, record.unit_source, record.session_id) == (
        "u" * 32,
        "connection",
        "s" * 32,
    )
    assert (record.protocol, record.mode, record.locale, record.forced) == (
        "usp",
        "interactive",
        "de-de",
        True,
    )
    assert record.failover_from == "challenger"
    assert record.client_session == "c" * 32
    assert OutcomeRecord.from_json(record.to_json()) == record


def test_a_primary_failure_measures_nothing() -> None:
    record = primary_failure(
        dataclasses.replace(FACTS, experiment=None, phase=None, client_session=None),
        "base",
        "local",
        status="Error",
        error_code="breaker_open",
        detail="the backend local is unavailable",
    )
    assert (record.experiment, record.phase, record.client_session) == (None, None, None)
    measures = (
        record.turn_id,
        record.utterance_index,
        record.audio_offset_ms,
        record.audio_duration_ms,
        record.first_hypothesis_ms,
        record.final_latency_ms,
        record.total_ms,
        record.text,
        record.text_sha256,
        record.confidence,
        record.word_count,
        record.shadow_drops,
    )
    assert measures == (None,) * len(measures)
