"""Confidence intervals for a rate and for the difference of two rates between variants.

The analysis reports rates such as the session failure rate or the no-match rate per variant.
`wilson_interval` bounds one rate; `newcombe_difference_interval` bounds the difference
challenger minus control for a fixed-horizon report; `difference_variance` feeds the same
difference to the always-valid test in `gateway.stats.sequential`. These treat outcomes as
independent; the analysis uses `clustered_wilson_interval`, Wilson's formula on the
effective sample of `gateway.stats.clustered` (outcomes divided by the design effect of the
units), and for differences `gateway.stats.clustered.difference_interval` and
`gateway.stats.clustered.difference_variance`. Arm "a" is always the
control and arm "b" the challenger, so a positive difference means the challenger's rate is
higher. Formulas and their references are in docs/statistics.md.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from gateway.stats.clustered import UnitSums, effective, t_quantile


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile for a confidence level in (0, 1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_counts(successes: int, total: int, name: str = "") -> None:
    label = f" of {name}" if name else ""
    if total < 0:
        raise ValueError(f"total{label} must be >= 0, got {total}")
    if not 0 <= successes <= total:
        raise ValueError(f"successes{label} must be in [0, total={total}], got {successes}")


def _wilson(successes: float, total: float, z: float) -> tuple[float, float]:
    p = successes / total
    z2n = z * z / total
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / total + z2n / (4.0 * total))
    # Clamped because rounding can leave a bound a hair beyond the rate (0 at no successes).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for successes / total; with no trials it is the whole (0.0, 1.0)."""
    _check_counts(successes, total)
    z = _z(confidence)
    if total == 0:
        return 0.0, 1.0
    return _wilson(successes, total, z)


def clustered_wilson_interval(sums: UnitSums, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's interval on the effective sample of clustered outcomes, with Student's
    quantile for K - 1 degrees of freedom; (0.0, 1.0) with no outcome or a single unit."""
    _z(confidence)
    if sums.n <= 0.0 or sums.units < 2:
        return 0.0, 1.0
    return _wilson(*effective(sums), t_quantile(confidence, sums.units - 1))


def newcombe_difference_interval(
    successes_a: int,
    total_a: int,
    successes_b: int,
    total_b: int,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for p_b - p_a, b the challenger.

    Each arm's Wilson interval supplies the distances from its rate to its bounds, and the
    difference's bounds combine them in quadrature. With either arm empty the difference is
    unknown, so the interval is the whole (-1.0, 1.0).
    """
    _check_counts(successes_a, total_a, "a")
    _check_counts(successes_b, total_b, "b")
    z = _z(confidence)
    if total_a == 0 or total_b == 0:
        return -1.0, 1.0
    return _newcombe(successes_a, total_a, successes_b, total_b, z)


def _newcombe(
    successes_a: float, total_a: float, successes_b: float, total_b: float, z: float
) -> tuple[float, float]:
    p_a = successes_a / total_a
    p_b = successes_b / total_b
    low_a, high_a = _wilson(successes_a, total_a, z)
    low_b, high_b = _wilson(successes_b, total_b, z)
    difference = p_b - p_a
    low = difference - math.hypot(p_b - low_b, high_a - p_a)
    high = difference + math.hypot(high_b - p_b, p_a - low_a)
    return max(-1.0, low), min(1.0, high)


def difference_variance(successes_a: int, total_a: int, successes_b: int, total_b: int) -> float:
    """Variance of p_b - p_a with the Agresti-Caffo adjustment, for the sequential test.

    Each arm's rate is estimated as (successes + 1) / (total + 2), that is one success and
    one failure are added per arm, and its variance divided by total + 2. So the variance is
    positive for every finite sample, even when a rate is 0 or 1 in both arms, where the
    plain binomial variance would be 0 and the sequential test would divide by it. An empty
    arm carries no information about the difference: the variance is then math.inf, which
    `gateway.stats.sequential.always_valid` skips.
    """
    _check_counts(successes_a, total_a, "a")
    _check_counts(successes_b, total_b, "b")
    if total_a == 0 or total_b == 0:
        return math.inf
    p_a = (successes_a + 1) / (total_a + 2)
    p_b = (successes_b + 1) / (total_b + 2)
    return p_a * (1.0 - p_a) / (total_a + 2) + p_b * (1.0 - p_b) / (total_b + 2)
