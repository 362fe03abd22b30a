"""Tests for gateway.server.state's record path: the guardrails' feed behind the retry hold.

The sink and the metrics take every record as it comes (the functional breaker and drain
tests pin that end to end); here, what the control plane is given: at once for everything
but a primary failure of a client session, which waits until it is due, retried, or
released by the drain.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

from redis_servers import outcome

from gateway.outcomes.privacy import pseudonymise
from gateway.outcomes.record import Kind, OutcomeRecord
from gateway.server.state import GuardrailFeed

KEY = b"k" * 32


class Control:
    """Stands in for the control plane: keeps what it was asked to count."""

    def __init__(self) -> None:
        self.observed: list[str] = []

    def observe(self, record: OutcomeRecord) -> None:
        self.observed.append(record.record_id)


def feed() -> tuple[GuardrailFeed, Control]:
    control = Control()
    control_plane: Any = control
    return GuardrailFeed(control_plane, KEY), control


def failure(n: int, connection: str | None) -> OutcomeRecord:
    """A primary session failure of client session `connection` (None: no X-ConnectionId)."""
    return dataclasses.replace(
        outcome(n),
        kind=Kind.SESSION_FAILURE,
        status="Error",
        utterance_index=None,
        audio_offset_ms=None,
        audio_duration_ms=None,
        text=None,
        word_count=None,
        error_code="upstream_closed_1011",
        client_session=None if connection is None else pseudonymise(connection, KEY),
    )


def route(connection: str, session_id: str) -> Any:
    return SimpleNamespace(
        client=SimpleNamespace(name="shop-app"), client_session=connection, session_id=session_id
    )


def test_utterances_and_failures_without_a_client_session_are_counted_at_once() -> None:
    guardrails, control = feed()
    guardrails.observe(outcome(1))
    guardrails.observe(failure(2, None))
    assert control.observed == [outcome(1).record_id, failure(2, None).record_id]


def test_a_failure_of_a_client_session_waits_and_the_drain_releases_it() -> None:
    guardrails, control = feed()
    held = failure(3, "conn-a")
    guardrails.observe(held)
    assert control.observed == []
    guardrails.release_held()
    assert control.observed == [held.record_id]
    later = failure(4, "conn-a")
    guardrails.observe(later)  # after the drain, nothing is held any more
    assert control.observed == [held.record_id, later.record_id]


def test_a_retried_failure_is_never_counted() -> None:
    guardrails, control = feed()
    held = failure(5, "conn-b")
    guardrails.observe(held)
    guardrails.attempt_started(route("conn-b", "a-later-attempt"))
    guardrails.release_held()
    assert control.observed == []


def test_another_client_sessions_attempt_does_not_release_it() -> None:
    guardrails, control = feed()
    held = failure(6, "conn-c")
    guardrails.observe(held)
    guardrails.attempt_started(route("conn-other", "another-session"))
    guardrails.release_held()
    assert control.observed == [held.record_id]
