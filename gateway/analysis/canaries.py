"""The report's canary section: each variant's canary WER, failures and latency per round.

Canary records (`Role.CANARY`) are the utterances of an experiment's canary set that the
gateway sends to every variant's backend itself, on a schedule; a record's `unit` is the
canary item's id. They are no traffic of the experiment, so nothing else in the report
counts them (`gateway.analysis.observations`); here they are scored against the set's
reference transcripts (item id -> text), exactly as labelled outcomes are
(`gateway.stats.wer.align`).

Rounds: the records carry no round number, so the analysis rebuilds the rounds from the
times. The records of one variant, in time order, start a new round when the phase changes,
when an item comes again (a round sends each item once), or after a gap of more than
`ROUND_GAP_S` since the variant's previous canary record. A round's time is its first
record's.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from gateway.analysis.model import Json
from gateway.analysis.observations import epoch_seconds
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.stats.wer import align

ROUND_GAP_S: Final = 600.0
MAX_ROUNDS: Final = 500  # the latest rounds a variant lists; the totals count them all


@dataclass(frozen=True, slots=True)
class CanaryAnswer:
    """One canary record, scored: `errors` is None when it failed or its item is unknown."""

    at: float  # epoch seconds
    phase: str
    variant: str
    backend: str | None
    item: str
    failed: bool
    errors: int | None
    words: int  # the reference's words (0 for an item without a reference)
    latency_ms: float | None

    @property
    def scored(self) -> bool:
        return self.errors is not None


@dataclass(slots=True)
class CanaryRound:
    """The answers of one variant in one round, in time order."""

    phase: str
    answers: list[CanaryAnswer] = field(default_factory=list)

    @property
    def at(self) -> float:
        return self.answers[0].at

    @property
    def items(self) -> set[str]:
        return {answer.item for answer in self.answers}


def canary_answers(
    records: Iterable[OutcomeRecord], references: Mapping[str, str]
) -> list[CanaryAnswer]:
    """The canary records with a phase and a variant, scored, in time order.

    A failed session (no answer at all) is a failure; an answer with no text (a no-match)
    is scored as an empty hypothesis: every reference word deleted.
    """
    answers: list[CanaryAnswer] = []
    for record in records:
        if record.role is not Role.CANARY or record.phase is None or record.variant is None:
            continue
        failed = record.kind is Kind.SESSION_FAILURE
        reference = references.get(record.unit)
        errors: int | None = None
        words = 0
        if reference is not None:
            counts = align(reference, "" if failed else record.text or "")
            words = counts.reference_words
            errors = None if failed else counts.errors
        answers.append(
            CanaryAnswer(
                at=epoch_seconds(record.timestamp),
                phase=record.phase,
                variant=record.variant,
                backend=record.backend,
                item=record.unit,
                failed=failed,
                errors=errors,
                words=words,
                latency_ms=None if failed else record.final_latency_ms,
            )
        )
    answers.sort(key=lambda answer: answer.at)
    return answers


def rounds_of(answers: Sequence[CanaryAnswer]) -> dict[str, list[CanaryRound]]:
    """Variant -> its rounds in time order (the module's doc says how rounds are found)."""
    rounds: dict[str, list[CanaryRound]] = {}
    last_at: dict[str, float] = {}
    for answer in answers:
        found = rounds.setdefault(answer.variant, [])
        current = found[-1] if found else None
        if (
            current is None
            or current.phase != answer.phase
            or answer.item in current.items
            or answer.at - last_at[answer.variant] > ROUND_GAP_S
        ):
            current = CanaryRound(answer.phase)
            found.append(current)
        current.answers.append(answer)
        last_at[answer.variant] = answer.at
    return rounds


def wer_of(answers: Iterable[CanaryAnswer]) -> tuple[int, int, float | None]:
    """(errors, words, WER) over the scored answers; WER None without reference words."""
    errors = words = 0
    for answer in answers:
        if answer.errors is not None:
            errors += answer.errors
            words += answer.words
    return errors, words, errors / words if words else None


def canary_section(
    answers: Sequence[CanaryAnswer], references: Mapping[str, str], control: str | None
) -> Json | None:
    """The report's `canary` object (docs/analysis.md); None without canary records or
    without the set's references."""
    if not answers or not references:
        return None
    by_variant = rounds_of(answers)
    names = sorted(by_variant, key=lambda name: (name != control, name))
    return {
        "round_gap_s": ROUND_GAP_S,
        "items": len(references),
        "variants": [_variant(name, by_variant[name]) for name in names],
    }


def _variant(name: str, rounds: Sequence[CanaryRound]) -> Json:
    answers = [answer for found in rounds for answer in found.answers]
    phases: dict[str, list[CanaryRound]] = {}
    for found in rounds:
        phases.setdefault(found.phase, []).append(found)
    return {
        "name": name,
        "backends": sorted({a.backend for a in answers if a.backend is not None}),
        "rounds_total": len(rounds),
        "rounds": [_round(found) for found in rounds[-MAX_ROUNDS:]],
        "phases": [
            {"phase": phase, "rounds": len(found), **_summary(a for r in found for a in r.answers)}
            for phase, found in phases.items()
        ],
    }


def _round(found: CanaryRound) -> Json:
    return {"at": _iso(found.at), "phase": found.phase, **_summary(found.answers)}


def _summary(answers: Iterable[CanaryAnswer]) -> Json:
    listed = list(answers)
    errors, words, wer = wer_of(listed)
    latencies = [a.latency_ms for a in listed if a.latency_ms is not None]
    return {
        "answers": len(listed),
        "failed": sum(a.failed for a in listed),
        "unknown_items": sum(not a.failed and not a.scored for a in listed),
        "errors": errors,
        "words": words,
        "wer": wer,
        "latency_ms": statistics.median(latencies) if latencies else None,
    }


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
