"""Blind preferences and the labelled sample, summarised for the report (pure functions).

`preference_rates` turns the review workbench's blind choices (`Preference`) into, for each
pair of variants judged against each other, the share of decisive judgements (A better or
B better; "same" is counted apart as a tie) that preferred the challenger, with a confidence
interval clustered by unit: a unit (speaker) judged several times is one cluster, x_u its
judgements for the challenger and n_u its decisive judgements, and the interval is Wilson's
on the effective sample with Student's quantile for K - 1 degrees of freedom
(`gateway.stats.proportions.clustered_wilson_interval`, docs/statistics.md). A rate above
0.5 whose interval excludes 0.5 says reviewers prefer the challenger's transcripts.

`labelled_sample` says how the reviewed captures were drawn: the uniform sample stands for
the traffic, the priority captures (failures, no-matches, disagreements, low confidence)
over-represent hard cases, so rates over them are not traffic rates. Captures are read
through the `SampledCapture` shape (`gateway.stores.audio_store.Capture` has it).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.outcomes.preference import Preference
from gateway.stats.clustered import UnitSums
from gateway.stats.proportions import clustered_wilson_interval


@dataclass(frozen=True, slots=True)
class PreferenceRate:
    """The blind preference of `challenger` over `control` (module doc)."""

    control: str
    challenger: str
    challenger_preferred: int
    control_preferred: int
    ties: int
    units: int  # units with at least one decisive judgement
    rate: float  # challenger_preferred / decisive; NaN without a decisive judgement
    interval: tuple[float, float]
    confidence: float

    @property
    def decisive(self) -> int:
        return self.challenger_preferred + self.control_preferred

    def to_dict(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "challenger": self.challenger,
            "challenger_preferred": self.challenger_preferred,
            "control_preferred": self.control_preferred,
            "ties": self.ties,
            "decisive": self.decisive,
            "units": self.units,
            "rate": None if math.isnan(self.rate) else self.rate,
            "interval": list(self.interval),
            "confidence": self.confidence,
        }


def preference_rates(
    preferences: Iterable[Preference],
    control: str,
    *,
    sample: str | None = None,
    confidence: float = 0.95,
) -> list[PreferenceRate]:
    """One `PreferenceRate` per pair of variants judged together, the control's pairs first
    (challenger = the other variant), other pairs oriented by name; withdrawn preferences and
    those without a choice are left out, and with `sample` only captures of that sample."""
    pairs: dict[tuple[str, str], list[Preference]] = defaultdict(list)
    for preference in preferences:
        if preference.withdrawn or preference.choice is None:
            continue
        if sample is not None and preference.sample != sample:
            continue
        shown = (preference.variant_a, preference.variant_b)
        if shown[0] is None or shown[1] is None:
            continue  # never: a Preference with a choice names both variants
        first, second = sorted((shown[0], shown[1]))
        if second == control:
            first, second = second, first
        pairs[(first, second)].append(preference)
    ordered = sorted(pairs, key=lambda pair: (pair[0] != control, pair))
    return [_rate(base, other, pairs[(base, other)], confidence) for base, other in ordered]


def _rate(
    control: str, challenger: str, judged: list[Preference], confidence: float
) -> PreferenceRate:
    wins: Counter[str] = Counter()
    decisive: Counter[str] = Counter()
    ties = 0
    for preference in judged:
        preferred = preference.preferred
        if preferred is None:
            ties += 1
            continue
        decisive[preference.unit] += 1
        if preferred == challenger:
            wins[preference.unit] += 1
    units = sorted(decisive)
    sums = UnitSums.of([wins[u] for u in units], [decisive[u] for u in units]) if units else None
    challenger_preferred = sum(wins.values())
    total = sum(decisive.values())
    return PreferenceRate(
        control=control,
        challenger=challenger,
        challenger_preferred=challenger_preferred,
        control_preferred=total - challenger_preferred,
        ties=ties,
        units=len(units),
        rate=challenger_preferred / total if total else math.nan,
        interval=clustered_wilson_interval(sums, confidence) if sums else (0.0, 1.0),
        confidence=confidence,
    )


class SampledCapture(Protocol):
    """What `labelled_sample` reads of a capture."""

    @property
    def capture_id(self) -> str: ...

    @property
    def sample(self) -> str: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SampleCounts:
    """Captures and reviewed captures of one sample, and the reviewed ones by reason."""

    captured: int
    reviewed: int
    reviewed_by_reason: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "captured": self.captured,
            "reviewed": self.reviewed,
            "reviewed_by_reason": dict(sorted(self.reviewed_by_reason.items())),
        }


@dataclass(frozen=True, slots=True)
class LabelledSample:
    """How the reviewed captures were drawn: per sample (`uniform`, `priority`)."""

    uniform: SampleCounts
    priority: SampleCounts

    @property
    def reviewed(self) -> int:
        return self.uniform.reviewed + self.priority.reviewed

    def describe(self) -> str:
        """One sentence for the report."""
        if self.reviewed == 0:
            return "No captured utterance has been reviewed yet."
        reasons = ", ".join(
            f"{count} {reason.replace('_', ' ')}"
            for reason, count in sorted(self.priority.reviewed_by_reason.items())
        )
        text = (
            f"{self.reviewed} reviewed captures: {self.uniform.reviewed} of "
            f"{self.uniform.captured} from the uniform sample (they stand for the traffic)"
        )
        if self.priority.reviewed:
            text += (
                f", {self.priority.reviewed} of {self.priority.captured} priority captures "
                f"({reasons}; they over-represent hard cases, so rates over them are not "
                "traffic rates)"
            )
        return text + "."

    def to_dict(self) -> dict[str, Any]:
        return {"uniform": self.uniform.to_dict(), "priority": self.priority.to_dict()}


def labelled_sample(captures: Iterable[SampledCapture], reviewed: Iterable[str]) -> LabelledSample:
    """Count the captures and the reviewed ones (capture ids in `reviewed`) per sample."""
    done = frozenset(reviewed)
    captured: Counter[str] = Counter()
    reviewed_count: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {"uniform": Counter(), "priority": Counter()}
    for capture in captures:
        sample = str(capture.sample)
        if sample not in reasons:
            raise ValueError(f"capture {capture.capture_id}: unknown sample {sample!r}")
        captured[sample] += 1
        if capture.capture_id in done:
            reviewed_count[sample] += 1
            reasons[sample][str(capture.reason)] += 1
    return LabelledSample(
        *(
            SampleCounts(captured[name], reviewed_count[name], dict(reasons[name]))
            for name in ("uniform", "priority")
        )
    )
