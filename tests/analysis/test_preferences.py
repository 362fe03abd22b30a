"""Tests for gateway.analysis.preferences: the blind preference rate clustered by unit, on
small cases worked out by hand, and the summary of how the labelled sample was drawn."""

from __future__ import annotations

import math
from typing import Any

import pytest
from review_fixtures import ReviewWorld
from scipy.stats import t as student_t

from gateway.analysis.preferences import labelled_sample, preference_rates
from gateway.outcomes.preference import Preference
from gateway.stores.audio_store import CaptureReason, CaptureSample


def judged(n: int, unit: str, choice: str | None, **changes: Any) -> Preference:
    """A preference where A was custom and B base (or the reverse with flip=True)."""
    flip = changes.pop("flip", False)
    a, b = ("base", "custom") if flip else ("custom", "base")
    values: dict[str, Any] = {
        "capture_id": f"{n:032x}",
        "experiment": "checkout",
        "unit": unit,
        "sample": "uniform",
        "reviewer": "rita",
        "choice": choice,
        "variant_a": a if choice else None,
        "variant_b": b if choice else None,
        "reviewed_at": "2026-12-07T10:00:00.000Z",
    }
    values.update(changes)
    return Preference(**values)


def wilson(x: float, n: float, q: float) -> tuple[float, float]:
    p = x / n
    centre = (p + q * q / (2 * n)) / (1 + q * q / n)
    half = q / (1 + q * q / n) * math.sqrt(p * (1 - p) / n + q * q / (4 * n * n))
    return centre - half, centre + half


def test_the_rate_counts_decisive_judgements_for_the_challenger() -> None:
    """Wins over decisive judgements, ties apart, whichever slot showed the challenger;
    withdrawn preferences and reviews without a choice do not count."""
    preferences = [
        judged(1, "u1", "a"),  # custom
        judged(2, "u1", "b", flip=True),  # custom, shown as B
        judged(3, "u2", "b"),  # base
        judged(4, "u3", "same"),
        judged(5, "u3", "a").withdraw("2026-12-07T11:00:00.000Z"),
        judged(6, "u4", None),
    ]
    (rate,) = preference_rates(preferences, "base")
    assert (rate.control, rate.challenger) == ("base", "custom")
    assert (rate.challenger_preferred, rate.control_preferred, rate.ties) == (2, 1, 1)
    assert rate.units == 2
    assert rate.rate == pytest.approx(2 / 3)


def test_the_interval_is_wilson_on_the_effective_sample_by_unit() -> None:
    """Three units judged (2 of 2, 1 of 2, 0 of 1 for the challenger): the interval is
    Wilson's on X / deff of N / deff with Student's t for 2 degrees of freedom, where deff
    comes from the cluster-robust variance with one pseudo-unit (x 1, n 2) added."""
    preferences = [
        judged(1, "u1", "a"),
        judged(2, "u1", "a"),
        judged(3, "u2", "a"),
        judged(4, "u2", "b"),
        judged(5, "u3", "b"),
    ]
    (rate,) = preference_rates(preferences, "base")
    # By hand: with the pseudo-unit, x = (2, 1, 0, 1), n = (2, 2, 1, 2): X 4, N 7, K 4.
    p = 4 / 7
    residuals = sum((x - p * n) ** 2 for x, n in ((2, 2), (1, 2), (0, 1), (1, 2)))
    clustered = 4 / 3 * residuals / 49
    deff = max(1.0, clustered / (p * (1 - p) / 7))
    expected = wilson(3 / deff, 5 / deff, float(student_t.ppf(0.975, 2)))
    assert rate.rate == pytest.approx(0.6)
    assert rate.interval == pytest.approx(expected)


def test_units_judged_alike_widen_the_interval() -> None:
    """The same 6-of-8 split from 8 units or from 2 units of 4 (all alike within a unit):
    the clustered interval of the second is wider."""
    spread = [judged(i, f"u{i}", "a" if i < 6 else "b") for i in range(8)]
    lumped = [judged(i, "u1" if i < 4 else "u2", "a" if i < 4 or i < 6 else "b") for i in range(8)]
    (wide_units,) = preference_rates(spread, "base")
    (two_units,) = preference_rates(lumped, "base")
    assert wide_units.rate == two_units.rate == 0.75
    width = wide_units.interval[1] - wide_units.interval[0]
    assert two_units.interval[1] - two_units.interval[0] > width


def test_no_decisive_judgement_gives_no_rate_and_the_whole_interval() -> None:
    """Only ties: the rate is NaN (None in JSON) and the interval is [0, 1]."""
    (rate,) = preference_rates([judged(1, "u1", "same")], "base")
    assert math.isnan(rate.rate)
    assert rate.interval == (0.0, 1.0)
    assert rate.to_dict()["rate"] is None


def test_pairs_are_oriented_against_the_control_and_filtered_by_sample() -> None:
    """Each pair of variants gets its rate, the control's pairs first with the control as
    control; `sample` keeps only captures of that sample."""
    preferences = [
        judged(1, "u1", "a"),
        judged(2, "u2", "a", variant_a="tuned", variant_b="custom"),
        judged(3, "u3", "a", variant_a="tuned", variant_b="base", sample="priority"),
    ]
    rates = preference_rates(preferences, "base")
    assert [(r.control, r.challenger) for r in rates] == [
        ("base", "custom"),
        ("base", "tuned"),
        ("custom", "tuned"),
    ]
    uniform = preference_rates(preferences, "base", sample="uniform")
    assert [(r.control, r.challenger) for r in uniform] == [("base", "custom"), ("custom", "tuned")]


async def test_the_labelled_sample_says_how_reviewed_captures_were_drawn(
    tmp_path: Any,
) -> None:
    """Captured and reviewed counts per sample, reviewed priority captures by reason, and a
    sentence that says which part stands for the traffic."""
    world = ReviewWorld(tmp_path)
    uniform = [await world.add(n) for n in range(1, 5)]
    failure = await world.add(5, sample=CaptureSample.PRIORITY, reason=CaptureReason.FAILURE)
    no_match = await world.add(6, sample=CaptureSample.PRIORITY, reason=CaptureReason.NO_MATCH)
    reviewed = [uniform[0].capture_id, uniform[1].capture_id, failure.capture_id]
    summary = labelled_sample(world.captures, reviewed)
    assert (summary.uniform.captured, summary.uniform.reviewed) == (4, 2)
    assert (summary.priority.captured, summary.priority.reviewed) == (2, 1)
    assert summary.priority.reviewed_by_reason == {"failure": 1}
    assert summary.reviewed == 3
    assert summary.describe() == (
        "3 reviewed captures: 2 of 4 from the uniform sample (they stand for the traffic), "
        "1 of 2 priority captures (1 failure; they over-represent hard cases, so rates over "
        "them are not traffic rates)."
    )
    assert no_match.capture_id not in reviewed
    assert labelled_sample(world.captures, []).describe().startswith("No captured")
    assert summary.to_dict()["priority"] == {
        "captured": 2,
        "reviewed": 1,
        "reviewed_by_reason": {"failure": 1},
    }
