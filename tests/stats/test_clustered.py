"""Rates over randomisation units (gateway.stats.clustered) and their cluster bootstrap kin:
agreement with statsmodels' cluster-robust variance on fixed data, and the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm

from gateway.stats import proportions
from gateway.stats.bootstrap import (
    cluster_median_difference_interval,
    cluster_quantile_interval,
    quantile_interval,
)
from gateway.stats.clustered import (
    MIN_UNITS,
    UnitSums,
    design_effect,
    difference_interval,
    difference_variance,
    effective,
    rate_variance,
    ratio_variance,
    t_quantile,
)


def _experiment(seed: int) -> np.ndarray:
    """Rows (arm, unit, outcome) of two arms of 30 units with 1 to 11 outcomes each and a
    propensity per unit from Beta(1, 6)."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm in (0, 1):
        for unit in range(30):
            propensity = rng.beta(1, 6)
            for _ in range(rng.integers(1, 12)):
                rows.append((arm, 100 * arm + unit, float(rng.random() < propensity)))
    return np.array(rows)


def _sums(rows: np.ndarray, arm: int) -> UnitSums:
    chosen = rows[rows[:, 0] == arm]
    _, units = np.unique(chosen[:, 1], return_inverse=True)
    return UnitSums.of(np.bincount(units, weights=chosen[:, 2]), np.bincount(units))


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_difference_variance_matches_statsmodels_cluster_robust_ols(seed: int) -> None:
    """OLS of the outcome on an arm dummy, clustered by unit: its slope is the difference of
    the rates and its sandwich variance the sum of the arms' delta-method variances, without
    or with statsmodels' small-sample correction G / (G - 1) (N - 1) / (N - 2)."""
    rows = _experiment(seed)
    design = sm.add_constant(rows[:, 0])
    groups = rows[:, 1].astype(int)
    raw = sm.OLS(rows[:, 2], design).fit(
        cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False}
    )
    corrected = sm.OLS(rows[:, 2], design).fit(cov_type="cluster", cov_kwds={"groups": groups})
    control, challenger = _sums(rows, 0), _sums(rows, 1)
    assert challenger.rate - control.rate == pytest.approx(raw.params[1], rel=1e-12)
    ours = ratio_variance(control, small_sample=False) + ratio_variance(
        challenger, small_sample=False
    )
    assert ours == pytest.approx(raw.cov_params()[1, 1], rel=1e-10)
    groups_n, n = 60, rows.shape[0]
    factor = groups_n / (groups_n - 1) * (n - 1) / (n - 2)
    assert ours * factor == pytest.approx(corrected.cov_params()[1, 1], rel=1e-10)


def test_one_arm_variance_matches_statsmodels_intercept_only() -> None:
    """One arm alone: the intercept's cluster-robust variance is the rate's, K / (K - 1)
    being statsmodels' correction for one parameter but for (N - 1) / (N - 1) = 1."""
    rows = _experiment(7)
    arm = rows[rows[:, 0] == 0]
    fit = sm.OLS(arm[:, 2], np.ones(arm.shape[0])).fit(
        cov_type="cluster", cov_kwds={"groups": arm[:, 1].astype(int)}
    )
    assert ratio_variance(_sums(rows, 0)) == pytest.approx(fit.cov_params()[0, 0], rel=1e-10)


def test_sums_add_up_unit_by_unit() -> None:
    x, n = np.array([0.0, 2.0, 1.0, 5.0]), np.array([3.0, 2.0, 4.0, 9.0])
    whole = UnitSums.of(x, n)
    assert UnitSums.of(x[:2], n[:2]) + UnitSums.of(x[2:], n[2:]) == whole
    assert (whole.units, whole.x, whole.n) == (4, 8.0, 18.0)
    assert whole.xx == 30.0 and whole.nn == 110.0 and whole.xn == 53.0  # noqa: PT018


def test_independent_units_reduce_to_agresti_caffo() -> None:
    """Each outcome its own unit: the design effect is 1 and the variance Agresti-Caffo's,
    so the live guardrails' numbers are those of the binomial test."""
    for events, outcomes in [(0, 50), (3, 50), (25, 50), (50, 50), (7, 400)]:
        sums = UnitSums.independent(events, outcomes)
        assert design_effect(sums) == 1.0
        expected = proportions.difference_variance(events, outcomes, events, outcomes) / 2
        assert rate_variance(sums) == pytest.approx(expected, rel=1e-12)


def test_no_event_in_either_arm_keeps_a_positive_variance() -> None:
    """The first looks of a good variant: no error anywhere. The plain delta-method variance
    is 0; the adjusted one stays positive and shrinks with the outcomes."""
    small = UnitSums.of(np.zeros(20), np.full(20, 3.0))
    large = UnitSums.of(np.zeros(200), np.full(200, 3.0))
    assert ratio_variance(small) == 0.0
    assert 0.0 < difference_variance(large, large) < difference_variance(small, small)
    every = UnitSums.of(np.full(20, 3.0), np.full(20, 3.0))  # all outcomes are events
    assert difference_variance(every, every) > 0.0


def test_heterogeneous_units_inflate_the_variance() -> None:
    """Units that are all-or-nothing: the design effect is about the unit size."""
    x = np.array([0.0, 10.0] * 20)
    sums = UnitSums.of(x, np.full(40, 10.0))
    assert 8.0 < design_effect(sums) < 11.0
    events, outcomes = effective(sums)
    assert outcomes == pytest.approx(400.0 / design_effect(sums))
    assert events / outcomes == pytest.approx(0.5)
    low, high = proportions.clustered_wilson_interval(sums)
    plain_low, plain_high = proportions.wilson_interval(200, 400)
    assert high - low > 2.5 * (plain_high - plain_low)


def test_too_few_units_or_outcomes_are_unknown() -> None:
    few = UnitSums.of(np.ones(MIN_UNITS - 1), np.full(MIN_UNITS - 1, 5.0))
    enough = UnitSums.of(np.ones(MIN_UNITS), np.full(MIN_UNITS, 5.0))
    assert difference_variance(few, enough) == math.inf
    assert math.isfinite(difference_variance(enough, enough))
    assert rate_variance(UnitSums()) == math.inf
    assert ratio_variance(UnitSums.of([1.0], [2.0])) == math.inf
    assert proportions.clustered_wilson_interval(UnitSums()) == (0.0, 1.0)
    assert difference_interval(UnitSums(), enough) == (-1.0, 1.0)
    assert proportions.clustered_wilson_interval(UnitSums.of([1.0], [4.0])) == (0.0, 1.0)


def test_difference_interval_is_the_t_interval_of_the_adjusted_variance() -> None:
    control = UnitSums.of([0.0, 1.0, 2.0, 0.0], [3.0, 4.0, 5.0, 2.0])
    challenger = UnitSums.of([1.0, 3.0, 2.0], [2.0, 4.0, 6.0])
    half = t_quantile(0.9, 5) * math.sqrt(rate_variance(control) + rate_variance(challenger))
    difference = challenger.rate - control.rate
    assert difference_interval(control, challenger, 0.9) == pytest.approx(
        (difference - half, min(1.0, difference + half))
    )


@pytest.mark.parametrize(
    ("x", "n", "message"),
    [
        ([1.0, 3.0], [2.0, 2.0], "x must be <= n"),
        ([1.0], [2.0, 3.0], "one element per unit"),
        ([-1.0], [2.0], "x must be >= 0"),
        ([math.nan], [2.0], "x must be finite"),
    ],
)
def test_bad_unit_counts_are_rejected(x: list[float], n: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UnitSums.of(x, n)


def test_cluster_bootstrap_of_single_value_units_is_the_plain_bootstrap_in_law() -> None:
    """Every value its own unit: the cluster bootstrap resamples values, so its interval is
    close to the plain one (not equal: the random streams differ)."""
    values = np.random.default_rng(1).lognormal(6.0, 0.5, 400)
    units = [str(i) for i in range(400)]
    clustered = cluster_quantile_interval(values, units, 0.9, resamples=2000)
    plain = quantile_interval(values, 0.9, resamples=2000)
    assert clustered.value == plain.value
    width = plain.high - plain.low
    assert abs(clustered.low - plain.low) < 0.2 * width
    assert abs(clustered.high - plain.high) < 0.2 * width


def test_cluster_bootstrap_widens_with_unit_levels() -> None:
    """Latencies set mostly by the unit (its network): resampling units gives a far wider
    interval than resampling latencies, which pretends to 20 times the information."""
    rng = np.random.default_rng(2)
    levels = rng.lognormal(6.0, 0.6, 30)
    values = np.repeat(levels, 20) * rng.lognormal(0.0, 0.05, 600)
    units = np.repeat(np.arange(30), 20)
    clustered = cluster_quantile_interval(values, units, 0.5)
    plain = quantile_interval(values, 0.5)
    assert clustered.high - clustered.low > 2.0 * (plain.high - plain.low)
    difference = cluster_median_difference_interval(values, units, values, units)
    assert difference.value == 0.0
    assert difference.low < 0.0 < difference.high


def test_cluster_bootstrap_edge_cases() -> None:
    one_unit = cluster_quantile_interval([1.0, 2.0, 3.0], ["u", "u", "u"], 0.5)
    assert (one_unit.value, one_unit.low, one_unit.high) == (2.0, -math.inf, math.inf)
    with pytest.raises(ValueError, match="one element per value"):
        cluster_quantile_interval([1.0, 2.0], ["u"], 0.5)
    with pytest.raises(ValueError, match="values is empty"):
        cluster_quantile_interval([], [], 0.5)
    same = cluster_quantile_interval([5.0, 5.0, 5.0], ["a", "b", "c"], 0.9, seed=3)
    assert (same.value, same.low, same.high) == (5.0, 5.0, 5.0)
