"""The report's `review` section: what reviewers of captured live traffic found.

Captured utterances (docs/capture.md) reviewed in the workbench (docs/review.md) get a
label (source `review`) and, where the capture had two hypotheses, a blind preference. The
section says how the reviewed captures were drawn (`preferences.labelled_sample`), the WER
of each variant on them, and the blind preference rates (`preferences.preference_rates`).

WER is given apart for the two samples. The uniform sample stands for the traffic; priority
captures (failures, no-matches, disagreeing shadows, low confidence) were chosen because they
are hard, so their WER is no traffic WER. For the same reason `headline_labels` leaves the
review labels of priority captures out of the report's headline WER: priorities never bias
the estimate that decides. A variant's WER here is the corpus WER of its hypotheses in the
reviewed captures (the primary's and each shadow's, against the capture's label) with the
report's cluster-bootstrap interval over units (`gateway.stats.bootstrap.ratio_interval`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.analysis.model import AnalysisOptions, Json
from gateway.analysis.observations import counts_of, wer_interval
from gateway.analysis.preferences import labelled_sample, preference_rates
from gateway.outcomes.labels import Label
from gateway.outcomes.preference import Preference

SAMPLES = ("uniform", "priority")


class ReviewedResult(Protocol):
    """One recognition of a capture (`gateway.session.capture.CapturedResult`)."""

    @property
    def record_id(self) -> str: ...

    @property
    def variant(self) -> str: ...

    @property
    def text(self) -> str | None: ...


class ReviewedCapture(Protocol):
    """What the section reads of a capture (`gateway.stores.audio_store.Capture`)."""

    @property
    def capture_id(self) -> str: ...

    @property
    def phase(self) -> str: ...

    @property
    def unit(self) -> str: ...

    @property
    def sample(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def captured_at(self) -> str: ...

    @property
    def primary(self) -> ReviewedResult: ...

    @property
    def shadows(self) -> Sequence[ReviewedResult]: ...


@dataclass(frozen=True, slots=True)
class ReviewInputs:
    """An experiment's captures, its current (not withdrawn) preferences, and `reviewed`:
    the latest preference of every capture ever reviewed, withdrawn ones included (they
    outlive the captures, which expire)."""

    captures: Sequence[ReviewedCapture] = ()
    preferences: Sequence[Preference] = field(default_factory=tuple)
    reviewed: Sequence[Preference] = field(default_factory=tuple)


def _records_of(reviews: ReviewInputs, preference: Preference) -> Iterable[str]:
    """The records a review labelled: kept in the preference; for one written before it
    kept them, read from its capture while the capture is still there."""
    if preference.records:
        return preference.records
    return (
        result.record_id
        for capture in reviews.captures
        if capture.capture_id == preference.capture_id
        for result in (capture.primary, *capture.shadows)
    )


def withdrawn_records(reviews: ReviewInputs) -> frozenset[str]:
    """The records of reviews withdrawn (undone) and not saved again: their review labels
    are retracted, evidence nowhere."""
    return frozenset(
        rid for p in reviews.reviewed if p.withdrawn for rid in _records_of(reviews, p)
    )


def priority_records(reviews: ReviewInputs) -> frozenset[str]:
    """The record ids of the priority captures, whose review labels are no headline
    evidence: from the captures, and from the preferences, which outlive them."""
    return frozenset(
        result.record_id
        for capture in reviews.captures
        if str(capture.sample) == "priority"
        for result in (capture.primary, *capture.shadows)
    ) | frozenset(
        rid for p in reviews.reviewed if p.sample == "priority" for rid in _records_of(reviews, p)
    )


def held_back_records(reviews: ReviewInputs) -> frozenset[str]:
    """The records whose review labels the headline leaves out: those of priority captures
    and those of withdrawn reviews."""
    return priority_records(reviews) | withdrawn_records(reviews)


def captured_records(reviews: ReviewInputs) -> frozenset[str]:
    """The record ids of every capture: the labels the review section reads."""
    return frozenset(
        result.record_id
        for capture in reviews.captures
        for result in (capture.primary, *capture.shadows)
    )


def headline_labels(labels: Mapping[str, Label], reviews: ReviewInputs) -> dict[str, Label]:
    """The labels the headline WER may use: all but the review labels of priority captures
    and of withdrawn reviews (`held_back_records`)."""
    return _without_reviews_of(labels, held_back_records(reviews))


def _without_reviews_of(labels: Mapping[str, Label], records: frozenset[str]) -> dict[str, Label]:
    return {
        rid: label
        for rid, label in labels.items()
        if not (rid in records and label.source == "review")
    }


def review_section(
    reviews: ReviewInputs,
    labels: Mapping[str, Label],
    *,
    control: str | None,
    options: AnalysisOptions,
    phase: str | None = None,
) -> Json | None:
    """The section (module doc); None without captures. `phase`: only its captures."""
    captures = sorted(
        (c for c in reviews.captures if phase is None or c.phase == phase),
        key=lambda c: (c.captured_at, c.capture_id),
    )
    if not captures:
        return None
    ids = {c.capture_id for c in captures}
    preferences = [p for p in reviews.preferences if p.capture_id in ids and not p.withdrawn]
    labels = _without_reviews_of(labels, withdrawn_records(reviews))
    drawn = labelled_sample(captures, [p.capture_id for p in preferences])
    return {
        "description": drawn.describe(),
        "sample": drawn.to_dict(),
        "wer": {name: _wer(captures, labels, name, options) for name in SAMPLES},
        # Per sample, like the WER: the priority captures' judgements (disagreements, most
        # of them) say nothing of how often the traffic's transcripts differ.
        "preferences": [
            {"sample": name, **rate.to_dict()}
            for name in SAMPLES
            for rate in preference_rates(
                preferences, control or "", sample=name, confidence=options.confidence
            )
        ],
    }


def _wer(
    captures: Iterable[ReviewedCapture],
    labels: Mapping[str, Label],
    sample: str,
    options: AnalysisOptions,
) -> list[Json]:
    sums: dict[str, dict[str, list[int]]] = {}  # variant -> unit -> [errors, words, count]
    for capture in captures:
        if str(capture.sample) != sample:
            continue
        label = labels.get(capture.primary.record_id)
        if label is None:
            continue
        for result in (capture.primary, *capture.shadows):
            if result.text is None:
                continue
            counts = counts_of(label, result.record_id, result.text)
            unit = sums.setdefault(result.variant, {}).setdefault(capture.unit, [0, 0, 0])
            unit[0] += counts.errors
            unit[1] += counts.reference_words
            unit[2] += 1
    return [_variant(name, units, options) for name, units in sorted(sums.items())]


def _variant(name: str, units: Mapping[str, list[int]], options: AnalysisOptions) -> Json:
    errors = [float(u[0]) for u in units.values()]
    words = [float(u[1]) for u in units.values()]
    found: dict[str, Any] = {
        "variant": name,
        "utterances": sum(u[2] for u in units.values()),
        "units": len(units),
        "errors": int(sum(errors)),
        "reference_words": int(sum(words)),
        "wer": sum(errors) / sum(words) if sum(words) else None,
        "ci": wer_interval(errors, words, options),
    }
    return found


def review_text(section: Mapping[str, Any] | None) -> list[str]:
    """Terminal lines of the section; none without it."""
    if not section:
        return []
    lines = ["Reviewed live traffic (docs/review.md)", str(section.get("description", ""))]
    for sample in SAMPLES:
        for entry in section.get("wer", {}).get(sample, []):
            ci = entry.get("ci")
            interval = f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else ""
            wer = entry.get("wer")
            shown = "-" if wer is None else f"{wer:.1%}{interval}"
            lines.append(
                f"  {sample:<8} {entry['variant']:<12} WER {shown} "
                f"({entry['utterances']} utterances, {entry['units']} units)"
            )
    for rate in section.get("preferences", []):
        value = rate.get("rate")
        low, high = rate.get("interval", (0.0, 1.0))
        shown = "-" if value is None else f"{value:.0%} [{low:.0%}, {high:.0%}]"
        lines.append(
            f"  {rate.get('sample', ''):<8} blind preference for {rate['challenger']} over "
            f"{rate['control']}: {shown} of {rate['decisive']} decisive ({rate['ties']} same)"
        )
    return lines
