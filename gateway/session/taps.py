"""Outcome taps: one record per utterance from what a backend answers, measured at the gateway.

A `ResultTap` watches one role's service messages (the primary's, or one shadow's) and the
session's turns. `speech.hypothesis` marks the first hypothesis of the utterance in progress;
each `speech.phrase` closes an utterance and yields an `OutcomeRecord` with its latencies:
first hypothesis and final result against the arrival of the utterance's first and last
audio. `EndOfDictation` phrases only acknowledge audio; error statuses yield one
session-failure record. `primary_failure` is the record of a session or request the gateway
answered itself. No I/O: the server submits the records.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.outcomes.privacy import TextPrivacy, transcript_fields
from gateway.outcomes.record import SCHEMA_VERSION, Kind, OutcomeRecord, Role, now_iso
from gateway.protocol.usp import Path, RecognitionStatus, TextMessage
from gateway.session.turns import TICKS_PER_MS, AudioTimeline
from gateway.text.normalize import normalize_words

FAILURE_STATUSES = frozenset(
    {
        RecognitionStatus.ERROR,
        RecognitionStatus.TOO_MANY_REQUESTS,
        RecognitionStatus.BAD_REQUEST,
        RecognitionStatus.FORBIDDEN,
        RecognitionStatus.SERVICE_UNAVAILABLE,
    }
)


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What every record of a session shares, decided at the upgrade."""

    experiment: str | None
    phase: str | None
    client: str
    unit: str  # already pseudonymised
    unit_source: str
    session_id: str
    protocol: str
    mode: str | None
    locale: str | None
    forced: bool
    text_privacy: TextPrivacy
    privacy_key: bytes
    failover_from: str | None = None  # the assigned variant, when control served instead
    client_session: str | None = None  # pseudonymised X-ConnectionId, shared by SDK retries


@dataclass(frozen=True, slots=True)
class RoleFacts:
    role: Role
    variant: str | None
    backend: str | None


@dataclass
class Turn:
    """One client turn: its request id, where it starts in the session, its audio arrivals."""

    request_id: str
    base_ticks: int
    timeline: AudioTimeline


def make_record(
    session: SessionFacts, role: RoleFacts, kind: Kind, status: str, **fields: Any
) -> OutcomeRecord:
    """A record with the session's and role's identity filled in; other fields default to None.

    Every field this leaves out has the default None in `OutcomeRecord`; those with another
    default are all given here.
    """
    values: dict[str, Any] = dict(
        schema_version=SCHEMA_VERSION,
        record_id=uuid.uuid4().hex,
        kind=kind,
        timestamp=now_iso(),
        experiment=session.experiment,
        phase=session.phase,
        variant=role.variant,
        backend=role.backend,
        role=role.role,
        forced=session.forced,
        client=session.client,
        unit=session.unit,
        unit_source=session.unit_source,
        session_id=session.session_id,
        protocol=session.protocol,
        mode=session.mode,
        locale=session.locale,
        status=status,
        failover_from=session.failover_from if role.role is Role.PRIMARY else None,
        client_session=session.client_session,
    )
    values.update(fields)
    return OutcomeRecord(**values)


def primary_failure(
    session: SessionFacts,
    variant: str,
    backend: str,
    *,
    status: str,
    error_code: str,
    detail: str,
) -> OutcomeRecord:
    """The `session_failure` record of a session or request the gateway answered itself
    (a limit, an open breaker, an unreachable backend), charged to the route's variant."""
    return make_record(
        session,
        RoleFacts(Role.PRIMARY, variant, backend),
        Kind.SESSION_FAILURE,
        status,
        error_code=error_code,
        error_detail=detail,
    )


class ResultTap:
    def __init__(self, session: SessionFacts, role: RoleFacts) -> None:
        self._session = session
        self._role = role
        self._utterances = 0
        self._first_hypothesis: float | None = None
        self.acked_ticks = 0  # session-global end of the audio this backend acknowledged
        self.failed = False
        self.shadow_drops = 0

    def observe(self, message: TextMessage, turn: Turn | None, now: float) -> OutcomeRecord | None:
        path = message.path
        if path == Path.SPEECH_HYPOTHESIS or path == Path.SPEECH_FRAGMENT:
            if self._first_hypothesis is None:
                self._first_hypothesis = now
            return None
        if path == Path.TURN_END:
            self._first_hypothesis = None
            return None
        if path != Path.SPEECH_PHRASE:
            return None
        try:
            phrase = json.loads(message.body)
        except ValueError:
            return None
        if not isinstance(phrase, dict):
            return None
        return self._phrase(phrase, message.request_id, turn, now)

    def failure(self, status: str, error_code: str, detail: str | None) -> OutcomeRecord | None:
        """The one failure record of this role's session (None once one was written)."""
        if self.failed:
            return None
        self.failed = True
        return make_record(
            self._session,
            self._role,
            Kind.SESSION_FAILURE,
            status,
            error_code=error_code,
            error_detail=detail,
            shadow_drops=self._drops(),
        )

    def _phrase(
        self, phrase: dict[str, Any], request_id: str | None, turn: Turn | None, now: float
    ) -> OutcomeRecord | None:
        status = str(phrase.get("RecognitionStatus") or "Unknown")[:64]
        offset = ticks_of(phrase.get("Offset"))
        duration = ticks_of(phrase.get("Duration"))
        base = turn.base_ticks if turn is not None else 0
        self.acked_ticks = max(self.acked_ticks, base + offset + duration)
        if status == RecognitionStatus.END_OF_DICTATION:
            return None
        if status in FAILURE_STATUSES:
            detail = "the service answered " + status
            return self.failure(status, f"upstream_status_{status}", detail)
        first_hypothesis, self._first_hypothesis = self._first_hypothesis, None
        start = end = None
        if turn is not None:
            start = turn.timeline.arrival(offset)
            end = turn.timeline.arrival(offset + duration, end=True)
        best = best_alternative(phrase)
        display = str(phrase.get("DisplayText") or best.get("Display") or "")
        lexical = str(best.get("Lexical") or "")
        text, text_hash = transcript_fields(
            display or None, self._session.text_privacy, self._session.privacy_key
        )
        index, self._utterances = self._utterances, self._utterances + 1
        return make_record(
            self._session,
            self._role,
            Kind.UTTERANCE,
            status,
            turn_id=request_id,
            utterance_index=index,
            audio_offset_ms=(base + offset) / TICKS_PER_MS,
            audio_duration_ms=duration / TICKS_PER_MS,
            first_hypothesis_ms=elapsed_ms(first_hypothesis, start),
            final_latency_ms=elapsed_ms(now, end),
            total_ms=elapsed_ms(now, start),
            text=text,
            text_sha256=text_hash,
            confidence=confidence_of(best),
            word_count=len(lexical.split()) if lexical else len(normalize_words(display)),
            shadow_drops=self._drops(),
        )

    def _drops(self) -> int | None:
        return self.shadow_drops if self._role.role == Role.SHADOW else None


def confidence_of(best: dict[str, Any]) -> float | None:
    """NBest[0].Confidence when it is a probability; a backend's nonsense is left out."""
    value = best.get("Confidence")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def best_alternative(phrase: dict[str, Any]) -> dict[str, Any]:
    nbest = phrase.get("NBest")
    if isinstance(nbest, list) and nbest and isinstance(nbest[0], dict):
        return nbest[0]
    return {}


def ticks_of(value: object) -> int:
    if isinstance(value, int | float) and value == value and abs(value) < 2**62:
        return max(0, int(value))
    return 0


def elapsed_ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round(max(0.0, later - earlier) * 1000, 3)
