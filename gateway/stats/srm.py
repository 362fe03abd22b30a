"""Sample-ratio-mismatch check: are the units split between variants as the weights say?

A split that departs from the configured weights means assignment or logging lost units
selectively (a variant that crashes before it logs, a bot that sticks to one arm), and then
every comparison between the variants is suspect. The check is Pearson's chi-square goodness
of fit of the unit counts against the weight shares; its threshold is strict (0.001 by
default) because the check runs on every analysis and a false alarm stops a good experiment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# scipy.special, not scipy.stats (whose chi2.sf is chdtrc): a second less to import.
from scipy.special import chdtrc


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """Result of the check: observed and expected unit counts per variant, and the verdict."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    flagged: bool


def _validate(observed: Mapping[str, int], weights: Mapping[str, float], threshold: float) -> None:
    if set(observed) != set(weights):
        raise ValueError(
            f"observed and weights must name the same variants, got {sorted(observed)} "
            f"and {sorted(weights)}"
        )
    if not weights:
        raise ValueError("at least one variant is needed")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    for name, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight of {name!r} must be finite and >= 0, got {weight!r}")
    if sum(weights.values()) <= 0.0:
        raise ValueError("the weights must not all be 0")
    for name, count in observed.items():
        if count < 0:
            raise ValueError(f"count of {name!r} must be >= 0, got {count}")


def sample_ratio_mismatch(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = 0.001
) -> SampleRatio:
    """Chi-square test of unit counts against the weight shares; flagged when p < threshold.

    A variant with weight 0 can receive no units, so any unit there is a mismatch for
    certain: chi2 is then inf, the p-value 0.0 and the result flagged. The other variants
    are tested against their shares with (number of them - 1) degrees of freedom; with only
    one of them, or no units at all, there is nothing to test and the p-value is 1.0.
    """
    _validate(observed, weights, threshold)
    counts = {name: int(observed[name]) for name in weights}
    total = sum(counts.values())
    weight_sum = sum(weights.values())
    expected = {name: total * weight / weight_sum for name, weight in weights.items()}
    if any(counts[name] > 0 for name, weight in weights.items() if weight == 0.0):
        return SampleRatio(counts, expected, math.inf, 0.0, True)
    tested = [name for name, weight in weights.items() if weight > 0.0]
    if total == 0 or len(tested) < 2:
        return SampleRatio(counts, expected, 0.0, 1.0, False)
    statistic = sum((counts[name] - expected[name]) ** 2 / expected[name] for name in tested)
    p_value = float(chdtrc(len(tested) - 1, statistic))
    return SampleRatio(counts, expected, statistic, p_value, p_value < threshold)
