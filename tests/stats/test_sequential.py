"""Tests for gateway.stats.sequential: delta-method variance and the normal-mixture test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import norm

from gateway.stats.sequential import (
    DEFAULT_TAU,
    MIN_SESSIONS,
    AlwaysValid,
    always_valid,
    mixture_interval,
    mixture_p_value,
    ratio_variance,
)


def _likelihood_ratio(estimate: float, variance: float, tau2: float, theta: float) -> float:
    """Lambda(theta) from its definition: the marginal density of the estimate under the
    normal mixture of effects around theta, over its density at theta alone."""
    mixed = norm.pdf(estimate, loc=theta, scale=math.sqrt(variance + tau2))
    return float(mixed / norm.pdf(estimate, loc=theta, scale=math.sqrt(variance)))


def test_ratio_variance_hand_computed() -> None:
    """Errors (1, 3), words (10, 10): R = 0.2, residuals (-1, 1), V = 2 * 2 / 20**2."""
    assert ratio_variance([1.0, 3.0], [10.0, 10.0], min_sessions=2) == pytest.approx(0.01)


def test_ratio_variance_matches_direct_simulation() -> None:
    """The delta-method variance agrees with the variance of the ratio over many replicates."""
    rng = np.random.default_rng(20)
    replicates, sessions = 4000, 200
    words = 1 + rng.poisson(rng.gamma(2.0, 15.0, (replicates, sessions)))
    rates = rng.beta(1.5, 8.5, (replicates, sessions))
    errors = rng.binomial(words, rates).astype(float)
    ratios = errors.sum(axis=1) / words.sum(axis=1)
    estimated = [ratio_variance(e, w) for e, w in zip(errors, words, strict=True)]
    # 4000 replicates know the true variance to about 2.2 % (one standard error).
    assert float(np.mean(estimated)) == pytest.approx(float(np.var(ratios, ddof=1)), rel=0.08)


def test_ratio_variance_is_zero_without_spread() -> None:
    """Sessions with the same error rate leave no residuals; the look is then skipped."""
    assert ratio_variance([1.0, 2.0, 4.0], [10.0, 20.0, 40.0], min_sessions=2) == 0.0


def test_ratio_variance_accepts_paired_differences() -> None:
    """Negative errors (challenger minus control on the same audio) are allowed."""
    assert ratio_variance([-1.0, 1.0], [10.0, 10.0], min_sessions=2) == pytest.approx(0.01)


def test_ratio_variance_unknown_from_too_few_sessions() -> None:
    """Fewer than min_sessions sessions, or no words at all, give an infinite variance."""
    errors, words = [1.0] * (MIN_SESSIONS - 1), [10.0] * (MIN_SESSIONS - 1)
    assert ratio_variance(errors, words) == math.inf
    assert ratio_variance([*errors, 5.0], [*words, 10.0]) < math.inf
    assert ratio_variance([1.0, 2.0], [0.0, 0.0], min_sessions=2) == math.inf


@pytest.mark.parametrize(
    ("errors", "words", "kwargs", "match"),
    [
        ([1.0], [1.0, 2.0], {}, "one element per session"),
        ([], [], {}, "errors is empty"),
        ([1.0, 1.0], [1.0, -1.0], {}, "words must be >= 0"),
        ([1.0, 1.0], [1.0, 1.0], {"min_sessions": 1}, "min_sessions"),
    ],
)
def test_ratio_variance_bad_input(
    errors: list[float], words: list[float], kwargs: dict[str, int], match: str
) -> None:
    """Mismatched, empty or negative input is an error that names the problem."""
    with pytest.raises(ValueError, match=match):
        ratio_variance(errors, words, **kwargs)


@pytest.mark.parametrize(
    ("estimate", "variance", "tau2", "alpha"),
    [(0.01, 1e-4, 4e-4, 0.05), (-0.3, 0.02, 0.0025, 0.1), (120.0, 900.0, 1e4, 0.01)],
)
def test_mixture_interval_bounds_are_where_lambda_is_one_over_alpha(
    estimate: float, variance: float, tau2: float, alpha: float
) -> None:
    """At both bounds Lambda(theta) computed from normal densities equals 1/alpha."""
    low, high = mixture_interval(estimate, variance, tau2=tau2, alpha=alpha)
    assert _likelihood_ratio(estimate, variance, tau2, low) == pytest.approx(1 / alpha)
    assert _likelihood_ratio(estimate, variance, tau2, high) == pytest.approx(1 / alpha)
    assert _likelihood_ratio(estimate, variance, tau2, estimate) < 1 / alpha


@pytest.mark.parametrize(
    ("estimate", "variance", "tau2"),
    [(0.0, 1e-4, 4e-4), (0.02, 1e-4, 4e-4), (0.05, 1e-4, 4e-4), (-3.0, 4.0, 1.0)],
)
def test_mixture_p_value_is_one_over_lambda(estimate: float, variance: float, tau2: float) -> None:
    """The p-value is min(1, 1/Lambda(0)) with Lambda from the normal densities."""
    expected = min(1.0, 1.0 / _likelihood_ratio(estimate, variance, tau2, 0.0))
    assert mixture_p_value(estimate, variance, tau2=tau2) == pytest.approx(expected)


def test_mixture_p_value_of_a_huge_effect_is_zero() -> None:
    """An effect far beyond any float's likelihood ratio gives p 0.0, not an overflow."""
    assert mixture_p_value(1.0, 1e-8, tau2=1e-4) == 0.0


def test_mixture_is_wider_than_fixed_horizon() -> None:
    """Validity at every look costs width: wider than the fixed-horizon 95 % interval."""
    low, high = mixture_interval(0.0, 1e-4, tau2=4e-4)
    assert high > 1.96 * 0.01
    assert high == pytest.approx(-low)


@pytest.mark.parametrize(
    "call",
    [
        lambda: mixture_interval(0.0, 0.0, tau2=1.0),
        lambda: mixture_interval(0.0, math.inf, tau2=1.0),
        lambda: mixture_interval(0.0, 1.0, tau2=0.0),
        lambda: mixture_interval(0.0, 1.0, tau2=1.0, alpha=1.0),
        lambda: mixture_p_value(0.0, -1.0, tau2=1.0),
        lambda: always_valid([], tau2=-1.0),
        lambda: always_valid([], tau2=1.0, alpha=0.0),
    ],
)
def test_bad_parameters_raise(call: object) -> None:
    """Variances and tau2 must be finite and positive, alpha in (0, 1)."""
    assert callable(call)
    with pytest.raises(ValueError, match=r"variance|tau2|alpha"):
        call()


estimates = st.floats(-10.0, 10.0)
variances = st.floats(1e-6, 10.0)
tau2s = st.floats(1e-4, 10.0)
alphas = st.floats(0.001, 0.5)


@given(estimates, variances, tau2s, alphas)
def test_mixture_interval_symmetric_around_estimate(
    estimate: float, variance: float, tau2: float, alpha: float
) -> None:
    """The interval is centred on the estimate and contains it."""
    low, high = mixture_interval(estimate, variance, tau2=tau2, alpha=alpha)
    assert low < estimate < high
    assert estimate - low == pytest.approx(high - estimate)


@given(estimates, variances, variances, tau2s, alphas, alphas)
def test_mixture_interval_monotone(
    estimate: float, v1: float, v2: float, tau2: float, a1: float, a2: float
) -> None:
    """More variance or a smaller alpha never narrows the interval."""
    small_v, large_v = sorted((v1, v2))
    small_a, large_a = sorted((a1, a2))

    def width(variance: float, alpha: float) -> float:
        return mixture_interval(estimate, variance, tau2=tau2, alpha=alpha)[1] - estimate

    assert width(small_v, large_a) <= width(large_v, large_a) * (1 + 1e-12)
    assert width(small_v, large_a) <= width(small_v, small_a) * (1 + 1e-12)


@given(estimates, variances, tau2s, alphas)
def test_p_value_agrees_with_interval(
    estimate: float, variance: float, tau2: float, alpha: float
) -> None:
    """p <= alpha exactly when the interval excludes 0 (away from the boundary)."""
    p = mixture_p_value(estimate, variance, tau2=tau2)
    low, high = mixture_interval(estimate, variance, tau2=tau2, alpha=alpha)
    assert 0.0 <= p <= 1.0
    if not math.isclose(p, alpha, rel_tol=1e-9):
        assert (p <= alpha) == (not low <= 0.0 <= high)


def test_always_valid_intersects_and_takes_the_minimum() -> None:
    """The result is the intersection of the looks' intervals and the smallest p-value."""
    tau2 = 4e-4
    looks = [(0.03, 4e-4), (0.01, 1e-4), (0.02, 5e-5)]
    result = always_valid(looks, tau2=tau2)
    intervals = [mixture_interval(e, v, tau2=tau2) for e, v in looks]
    assert result.interval == (
        max(low for low, _ in intervals),
        min(high for _, high in intervals),
    )
    assert result.p_value == min(mixture_p_value(e, v, tau2=tau2) for e, v in looks)
    assert (result.looks, result.conflicts) == (3, 0)


def test_always_valid_skips_unusable_looks() -> None:
    """Looks with variance <= 0 or non-finite values are skipped; none left: no information."""
    bad = [(0.5, 0.0), (0.5, -1.0), (0.5, math.inf), (math.nan, 1.0), (0.1, math.nan)]
    assert always_valid(bad, tau2=1.0) == AlwaysValid((-math.inf, math.inf), 1.0, 0)
    assert always_valid([], tau2=1.0) == AlwaysValid((-math.inf, math.inf), 1.0, 0)
    good = always_valid([(0.01, 1e-4)], tau2=4e-4)
    assert always_valid([*bad, (0.01, 1e-4)], tau2=4e-4) == good
    assert good.looks == 1


def test_always_valid_counts_conflicting_looks() -> None:
    """A look whose interval misses the running one is counted, not intersected."""
    tau2 = 4e-4
    first, late = (0.0, 1e-6), (0.5, 1e-6)
    result = always_valid([first, late], tau2=tau2)
    assert result.interval == mixture_interval(*first, tau2=tau2)
    assert (result.looks, result.conflicts) == (2, 1)
    assert result.p_value == mixture_p_value(*late, tau2=tau2)


looks_strategy = st.lists(st.tuples(estimates, variances), min_size=1, max_size=20)


@given(looks_strategy, tau2s)
def test_always_valid_only_narrows(looks: list[tuple[float, float]], tau2: float) -> None:
    """Each further look keeps the interval inside the previous one and p from rising."""
    previous = always_valid([], tau2=tau2)
    for end in range(1, len(looks) + 1):
        current = always_valid(looks[:end], tau2=tau2)
        assert previous.interval[0] <= current.interval[0]
        assert current.interval[1] <= previous.interval[1]
        assert current.interval[0] <= current.interval[1]
        assert current.p_value <= previous.p_value
        previous = current


def test_default_tau_is_fixed() -> None:
    """The mixing scales are read-only and cover the metrics the analysis tests."""
    assert set(DEFAULT_TAU) == {"wer", "rate", "latency_ms"}
    assert all(tau > 0 for tau in DEFAULT_TAU.values())
    with pytest.raises(TypeError):
        DEFAULT_TAU["wer"] = 1.0  # type: ignore[index]
