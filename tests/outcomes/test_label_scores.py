"""Tests for gateway.outcomes.label_scores: which records a label scores, and their counts."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.outcomes.label_scores import needs_scores, score_targets, scored, scored_if_found
from gateway.outcomes.labels import Label, RecordScore, stored_counts
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource
from gateway.stats.wer import WerCounts, align
from gateway.text import normalize


def rid(n: int) -> str:
    return f"{n:032x}"


def record(n: int, **changes: Any) -> OutcomeRecord:
    values: dict[str, Any] = {
        "record_id": rid(n),
        "kind": Kind.UTTERANCE,
        "experiment": "checkout",
        "phase": "1",
        "variant": "base",
        "backend": "westus",
        "role": Role.PRIMARY,
        "client": "shop-app",
        "unit": "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        "unit_source": UnitSource.QUERY,
        "session_id": "session-1",
        "protocol": Protocol.USP,
        "utterance_index": 0,
        "status": "Success",
        "audio_offset_ms": 0.0,
        "audio_duration_ms": 1000.0,
        "text": "pay my bill",
    }
    values.update(changes)
    return OutcomeRecord(**values)


def shadow(n: int, **changes: Any) -> OutcomeRecord:
    return record(n, role=Role.SHADOW, variant="custom", **changes)


def label(text: str = "pay my bill", record_id: str = rid(1)) -> Label:
    return Label(
        record_id=record_id,
        text=text,
        labeller="alice",
        labelled_at="2025-03-02T09:15:00.120Z",
        source="api",
    )


def ids(records: list[OutcomeRecord]) -> list[str]:
    return [r.record_id for r in records]


def test_a_primary_scores_itself_and_its_overlapping_shadow() -> None:
    """A primary's label scores the primary and the shadow of the same audio, not a shadow
    of other audio or of another session."""
    session = [
        shadow(2),
        shadow(3, utterance_index=1, audio_offset_ms=5000.0),
        shadow(4, session_id="session-2"),
    ]
    assert ids(score_targets(record(1), session)) == [rid(1), rid(2)]


def test_records_without_text_get_no_score() -> None:
    """A record without text (hashed or dropped by privacy, a failure) is not scored, but
    its shadow with text still is."""
    assert ids(score_targets(record(1, text=None, text_sha256="0" * 64), [shadow(2)])) == [rid(2)]
    assert ids(score_targets(record(1), [shadow(2, text=None)])) == [rid(1)]
    failure = record(1, kind=Kind.SESSION_FAILURE, text=None, status="Error", utterance_index=None)
    assert score_targets(failure, [shadow(2)]) == []


def test_a_labelled_shadow_scores_only_itself() -> None:
    """A label given to a shadow record scores that record only."""
    assert ids(score_targets(shadow(2), [record(1)])) == [rid(2)]


def test_scored_counts_equal_align_including_numbers_and_punctuation() -> None:
    """Stored counts are exactly what align() gives for the same texts, with numbers,
    money, percent and punctuation normalised alike."""
    pairs = [
        ("I'd like to pay $200, please.", "i'd like to pay two hundred dollars please"),
        ("Transfer 1,200.50 to savings!", "transfer one thousand two hundred point five"),
        ("It's the 3rd time: 5% off?", "it's the third time five percent of"),
        ("e-mail me at 9", "email me at nine"),
        ("hello", ""),
    ]
    for n, (reference, hypothesis) in enumerate(pairs, start=1):
        made = scored(label(reference, rid(n)), [record(n, text=hypothesis)])
        assert made.scores == (RecordScore.of(rid(n), align(reference, hypothesis)),)
        assert stored_counts(made, rid(n)) == align(reference, hypothesis)
    assert scored(label("$200"), [record(1, text="two hundred dollars")]).scores == (
        RecordScore(rid(1), 0, 0, 0, 3),
    )


def test_scored_carries_the_current_version_and_keeps_the_label() -> None:
    """A scored label keeps text, labeller, time and source and names the version."""
    made = scored(label(), [record(1)])
    assert made.normalisation == normalize.NORMALISATION_VERSION
    assert (made.text, made.labeller, made.labelled_at, made.source) == (
        "pay my bill",
        "alice",
        "2025-03-02T09:15:00.120Z",
        "api",
    )


def test_scored_if_found_leaves_a_label_without_its_record_unscored() -> None:
    """A label whose record could not be read is stored without counts (not scored yet)."""
    assert scored_if_found(label(), {}) == label()
    found = scored_if_found(label(), {rid(1): (record(1), [shadow(2)])})
    assert [s.record_id for s in found.scores or ()] == [rid(1), rid(2)]


def test_needs_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A label needs scoring when unscored, stale, or missing a record it scores now; a
    current one that covers every such record does not."""
    targets = [record(1), shadow(2)]
    assert needs_scores(label(), targets)
    done = scored(label(), targets)
    assert not needs_scores(done, targets)
    assert needs_scores(scored(label(), targets[:1]), targets)  # a shadow arrived since
    assert not needs_scores(done, targets[:1])  # a shadow trimmed since keeps its counts
    monkeypatch.setattr(normalize, "NORMALISATION_VERSION", "2")
    assert needs_scores(done, targets)
    assert stored_counts(done, rid(1)) is None  # stale counts are not used


def test_stored_counts_of_an_unscored_record_is_none() -> None:
    """Counts are given only for a record the label scores."""
    done = scored(label(), [record(1)])
    assert stored_counts(done, rid(1)) == WerCounts(hits=3)
    assert stored_counts(done, rid(9)) is None
    assert stored_counts(label(), rid(1)) is None
