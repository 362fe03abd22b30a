"""Tests for gateway.stats.bootstrap: quantiles and percentile-bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import bootstrap

from gateway.stats import bootstrap as module
from gateway.stats.bootstrap import (
    Estimate,
    median_difference_interval,
    paired_ratio_difference_interval,
    quantile,
    quantile_interval,
    ratio_difference_interval,
    ratio_interval,
)

# scipy and we draw different resamples, so endpoints agree only up to Monte Carlo error.
# With 20,000 resamples that error is about 0.03 bootstrap standard errors per endpoint and
# method; the tolerance, 3 % of the interval's width (about 0.12 standard errors), is four
# times the error of the difference, yet far below what a wrong confidence level (0.9 for
# 0.95 moves the endpoints by 0.3 standard errors) or a wrong method would change.
# A resampled quantile only takes values at (or between) data points, so its endpoints can
# also land one data point apart: the tolerance adds the largest gap between them there.
REFERENCE_RESAMPLES = 20_000
WIDTH_TOLERANCE = 0.03


def _sessions(rng: np.random.Generator, n: int, rate: float) -> tuple[Any, Any]:
    """Errors and words of n sessions whose error rates vary between sessions."""
    words = 1 + rng.poisson(rng.gamma(2.0, 15.0, n))
    errors = rng.binomial(words, rng.beta(10 * rate, 10 * (1 - rate), n))
    return errors.astype(float), words.astype(float)


def _gap_at(values: Any, x: float) -> float:
    """The width of the two gaps between sorted values around x: one data point either way."""
    ordered = np.sort(values)
    i = int(np.clip(np.searchsorted(ordered, x), 1, ordered.size - 2))
    return float(ordered[i + 1] - ordered[i - 1])


def _assert_agrees(ours: Estimate, theirs: Any, values: Any = None) -> None:
    low, high = theirs.confidence_interval
    tolerance = WIDTH_TOLERANCE * (high - low)
    grain_low = 0.0 if values is None else _gap_at(values, low)
    grain_high = 0.0 if values is None else _gap_at(values, high)
    assert ours.low == pytest.approx(low, abs=tolerance + grain_low)
    assert ours.high == pytest.approx(high, abs=tolerance + grain_high)


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0])
def test_quantile_matches_numpy(q: float) -> None:
    """quantile is numpy's default ('linear') quantile, including the extremes 0 and 1."""
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
    assert quantile([7.0], q) == 7.0


def test_quantile_interpolates_linearly() -> None:
    """Between order statistics the quantile interpolates: 0.25 of [0, 10, 20] is 5."""
    assert quantile([20.0, 0.0, 10.0], 0.25) == 5.0


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_quantile_interval_matches_scipy(q: float) -> None:
    """The percentile interval of a quantile agrees with scipy.stats.bootstrap."""
    values = np.random.default_rng(1).lognormal(5.0, 0.6, 1001)
    ours = quantile_interval(values, q, resamples=REFERENCE_RESAMPLES, seed=2)
    theirs = bootstrap(
        (values,),
        lambda x, axis: np.quantile(x, q, axis=axis),
        method="percentile",
        n_resamples=REFERENCE_RESAMPLES,
        rng=np.random.default_rng(3),
    )
    assert ours.value == pytest.approx(float(np.quantile(values, q)))
    _assert_agrees(ours, theirs, values)


def test_median_difference_matches_scipy() -> None:
    """Independent two-sample resampling of the median difference agrees with scipy."""
    rng = np.random.default_rng(4)
    control, challenger = rng.lognormal(5.0, 0.5, 1001), rng.lognormal(5.1, 0.5, 801)
    ours = median_difference_interval(control, challenger, resamples=REFERENCE_RESAMPLES, seed=5)
    theirs = bootstrap(
        (control, challenger),
        lambda x, y, axis: np.median(y, axis=axis) - np.median(x, axis=axis),
        method="percentile",
        n_resamples=REFERENCE_RESAMPLES,
        rng=np.random.default_rng(6),
    )
    assert ours.value == pytest.approx(float(np.median(challenger) - np.median(control)))
    # A difference of resampled medians lies on the grid of pairwise differences of data
    # points; one step of that grid near the medians is the allowance for discreteness.
    near = np.subtract.outer(np.sort(challenger)[380:420], np.sort(control)[480:520]).ravel()
    _assert_agrees(ours, theirs, near)


def test_ratio_interval_matches_scipy() -> None:
    """The cluster bootstrap of sum(errors)/sum(words) agrees with scipy's paired bootstrap."""
    errors, words = _sessions(np.random.default_rng(7), 400, 0.15)
    ours = ratio_interval(errors, words, resamples=REFERENCE_RESAMPLES, seed=8)
    theirs = bootstrap(
        (errors, words),
        lambda e, w, axis: e.sum(axis=axis) / w.sum(axis=axis),
        paired=True,
        method="percentile",
        n_resamples=REFERENCE_RESAMPLES,
        rng=np.random.default_rng(9),
    )
    assert ours.value == pytest.approx(errors.sum() / words.sum())
    _assert_agrees(ours, theirs)


def test_ratio_difference_matches_scipy() -> None:
    """Arms resampled independently, sessions kept whole, agree with scipy on session indices."""
    rng = np.random.default_rng(10)
    (ea, wa), (eb, wb) = _sessions(rng, 300, 0.15), _sessions(rng, 500, 0.12)

    def statistic(i: Any, j: Any, axis: int) -> Any:
        # scipy resamples the index arrays; the statistic looks the whole sessions up.
        i, j = i.astype(int), j.astype(int)
        return eb[j].sum(axis=axis) / wb[j].sum(axis=axis) - ea[i].sum(axis=axis) / wa[i].sum(
            axis=axis
        )

    ours = ratio_difference_interval(ea, wa, eb, wb, resamples=REFERENCE_RESAMPLES, seed=11)
    theirs = bootstrap(
        (np.arange(300.0), np.arange(500.0)),
        statistic,
        method="percentile",
        n_resamples=REFERENCE_RESAMPLES,
        rng=np.random.default_rng(12),
    )
    assert ours.value == pytest.approx(eb.sum() / wb.sum() - ea.sum() / wa.sum())
    _assert_agrees(ours, theirs)


def test_paired_ratio_difference_matches_scipy() -> None:
    """Pairs resampled jointly agree with scipy's paired bootstrap over three arrays."""
    rng = np.random.default_rng(13)
    control_errors, words = _sessions(rng, 400, 0.15)
    # The challenger errs on the same hard sessions, a little less: strongly paired.
    challenger_errors = rng.binomial(control_errors.astype(int), 0.9).astype(float)
    ours = paired_ratio_difference_interval(
        words, control_errors, challenger_errors, resamples=REFERENCE_RESAMPLES, seed=14
    )
    theirs = bootstrap(
        (words, control_errors, challenger_errors),
        lambda w, a, b, axis: (b.sum(axis=axis) - a.sum(axis=axis)) / w.sum(axis=axis),
        paired=True,
        method="percentile",
        n_resamples=REFERENCE_RESAMPLES,
        rng=np.random.default_rng(15),
    )
    _assert_agrees(ours, theirs)
    unpaired = ratio_difference_interval(
        control_errors, words, challenger_errors, words, resamples=REFERENCE_RESAMPLES, seed=14
    )
    assert ours.high - ours.low < (unpaired.high - unpaired.low) / 2


_RNG = np.random.default_rng(16)
_A, _B = _RNG.lognormal(size=200).tolist(), _RNG.lognormal(size=150).tolist()
_E, _W = (arm.tolist() for arm in _sessions(_RNG, 25, 0.15))
_F = _RNG.binomial(np.array(_E, dtype=int), 0.8).tolist()
ALL_INTERVALS: list[Callable[..., Estimate]] = [
    lambda **kw: quantile_interval(_A, 0.9, **kw),
    lambda **kw: median_difference_interval(_A, _B, **kw),
    lambda **kw: ratio_interval(_E, _W, **kw),
    lambda **kw: ratio_difference_interval(_E, _W, _F, _W, **kw),
    lambda **kw: paired_ratio_difference_interval(_W, _E, _F, **kw),
]


@pytest.mark.parametrize("interval", ALL_INTERVALS)
def test_deterministic_for_a_seed(interval: Callable[..., Estimate]) -> None:
    """The same seed gives the same interval; another seed another one."""
    assert interval(seed=3) == interval(seed=3)
    assert interval(seed=3) != interval(seed=4)


@pytest.mark.parametrize("interval", ALL_INTERVALS)
def test_blocks_do_not_change_the_result(
    interval: Callable[..., Estimate], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawing the resamples in blocks of one row gives what one block gives."""
    whole = interval(seed=5, resamples=300)
    monkeypatch.setattr(module, "_BLOCK_ELEMENTS", 1)
    assert interval(seed=5, resamples=300) == whole


@pytest.mark.parametrize("confidence", [0.5, 0.9])
@pytest.mark.parametrize("interval", ALL_INTERVALS)
def test_higher_confidence_is_wider(interval: Callable[..., Estimate], confidence: float) -> None:
    """With the same resamples, the 0.99 interval contains the lower-confidence one."""
    narrow, wide = interval(confidence=confidence), interval(confidence=0.99)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


def test_single_value_gives_unbounded_interval() -> None:
    """One value (or one session in an arm) shows no spread: the interval is (-inf, inf)."""
    assert quantile_interval([4.0], 0.5) == Estimate(4.0, -math.inf, math.inf)
    assert ratio_interval([2.0], [10.0]) == Estimate(0.2, -math.inf, math.inf)
    unbounded = median_difference_interval([1.0], [2.0, 3.0])
    assert (unbounded.value, unbounded.low, unbounded.high) == (1.5, -math.inf, math.inf)
    assert ratio_difference_interval([1.0, 2.0], [10.0, 10.0], [1.0], [5.0]).low == -math.inf
    assert paired_ratio_difference_interval([10.0], [1.0], [2.0]).high == math.inf


def test_zero_word_resamples_are_the_error_total() -> None:
    """A resample without words has ratio sum(errors), as WerCounts.wer defines, never NaN."""
    # Session 0 is an insertion on silence (1 error, 0 words); session 1 has 10 words, no error.
    # The possible resample ratios are 2 (session 0 twice), 0.1 and 0 (session 1 twice).
    estimate = ratio_interval([1.0, 0.0], [0.0, 10.0], confidence=0.99, resamples=400)
    assert estimate.value == pytest.approx(0.1)
    assert estimate.low == 0.0
    assert estimate.high == 2.0
    no_words = ratio_interval([1.0, 2.0], [0.0, 0.0])
    assert (no_words.value, no_words.low, no_words.high) == (3.0, 2.0, 4.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantile([], 0.5), "values is empty"),
        (lambda: quantile([1.0], 1.5), "q must be"),
        (lambda: quantile([1.0, math.nan], 0.5), "finite"),
        (lambda: quantile(np.ones((1, 2)), 0.5), "one-dimensional"),
        (lambda: quantile_interval([1.0], 0.5, confidence=1.0), "confidence"),
        (lambda: quantile_interval([1.0], 0.5, resamples=0), "resamples"),
        (lambda: median_difference_interval([], [1.0]), "control is empty"),
        (lambda: ratio_interval([1.0], []), "words is empty"),
        (lambda: ratio_interval([1.0, 2.0], [3.0]), "one element per session"),
        (lambda: ratio_interval([-1.0], [3.0]), "errors must be >= 0"),
        (lambda: ratio_difference_interval([1.0], [2.0], [1.0], [-2.0]), "challenger words"),
        (lambda: paired_ratio_difference_interval([1.0], [1.0], [1.0, 2.0]), "challenger"),
    ],
)
def test_bad_input_raises(call: Callable[[], object], match: str) -> None:
    """Empty, non-finite, mismatched or negative input is a ValueError that names it."""
    with pytest.raises(ValueError, match=match):
        call()


floats = st.floats(-1e6, 1e6, allow_nan=False)
samples = st.lists(floats, min_size=2, max_size=40)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    n = draw(st.integers(2, 30))
    words = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    errors = [draw(st.integers(0, 2 * w)) for w in words]
    return [float(e) for e in errors], [float(w) for w in words]


@settings(max_examples=50)
@given(samples, st.floats(0.0, 1.0), st.integers(0, 2**32))
def test_quantile_interval_within_data(values: list[float], q: float, seed: int) -> None:
    """The bounds are ordered and lie between the smallest and largest value."""
    estimate = quantile_interval(values, q, resamples=200, seed=seed)
    assert min(values) <= estimate.low <= estimate.high <= max(values)
    assert min(values) <= estimate.value <= max(values)


@settings(max_examples=50)
@given(samples, samples, st.floats(-1e3, 1e3))
def test_median_difference_shifts_with_the_challenger(
    control: list[float], challenger: list[float], shift: float
) -> None:
    """Adding a constant to every challenger value moves the estimate and both bounds by it."""
    base = median_difference_interval(control, challenger, resamples=200)
    moved = median_difference_interval(control, [v + shift for v in challenger], resamples=200)
    for before, after in zip(
        (base.value, base.low, base.high), (moved.value, moved.low, moved.high), strict=True
    ):
        assert after == pytest.approx(before + shift, abs=1e-6)


@settings(max_examples=50)
@given(sessions(), st.integers(1, 1000))
def test_ratio_interval_within_session_rates_and_scale_free(
    data: tuple[list[float], list[float]], scale: int
) -> None:
    """sum(e)/sum(w) is a weighted mean of session rates, so every resample lies between the
    smallest and largest; scaling errors and words alike changes nothing."""
    errors, words = data
    rates = [e / w for e, w in zip(errors, words, strict=True)]
    estimate = ratio_interval(errors, words, resamples=200)
    assert min(rates) - 1e-12 <= estimate.low <= estimate.high <= max(rates) + 1e-12
    scaled = ratio_interval([e * scale for e in errors], [w * scale for w in words], resamples=200)
    assert (scaled.value, scaled.low, scaled.high) == pytest.approx(
        (estimate.value, estimate.low, estimate.high)
    )


@settings(max_examples=50)
@given(sessions())
def test_identical_arms_have_no_paired_difference(data: tuple[list[float], list[float]]) -> None:
    """When both variants make the same errors on the same audio, the difference is exactly 0."""
    errors, words = data
    assert paired_ratio_difference_interval(words, errors, errors, resamples=200) == Estimate(
        0.0, 0.0, 0.0
    )


@pytest.mark.parametrize("q", [0.1, 0.5, 0.99])
def test_the_quantile_window_changes_nothing(monkeypatch: pytest.MonkeyPatch, q: float) -> None:
    """Cluster quantiles found in a narrow window around the rank (most resamples outside
    it: the fall-back computes those over all values) equal those over all values."""
    rng = np.random.default_rng(3)
    codes = np.concatenate([np.arange(300), rng.integers(0, 300, 2700)]).astype(np.intp)
    values = np.round(rng.lognormal(5, 0.5, codes.size) + codes * 0.05, 1)  # ties too

    def replicates(minimum: int, spread: float) -> np.ndarray:
        monkeypatch.setattr(module, "_WINDOW_MIN", minimum)
        monkeypatch.setattr(module, "_WINDOW_SPREAD", spread)
        rng = np.random.default_rng(7)
        return module._resampled_cluster_quantiles(rng, values, codes, q, 300)

    everything = replicates(values.size, 0.0)
    assert np.array_equal(replicates(2, 0.0), everything)  # nearly all fall back
    assert np.array_equal(replicates(2048, 40.0), everything)  # the defaults


def _clustered_latencies(units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latencies of `units` units of 1-11 values each, a unit effect shared by its values."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, units)
    codes = np.repeat(np.arange(units), sizes).astype(np.intp)
    effect = rng.normal(0.0, 0.3, units)
    values = np.round(np.exp(6.0 + effect[codes] + rng.normal(0.0, 0.4, codes.size)), 1)
    return values, codes


def _same_distribution(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Two sets of bootstrap replicates from one law: equal means and spreads within their
    Monte Carlo error, and percentiles within a tenth of the spread."""
    error = math.sqrt(ours.var() / ours.size + theirs.var() / theirs.size)
    assert abs(ours.mean() - theirs.mean()) < 4.5 * error
    assert 0.9 < ours.std() / theirs.std() < 1.1
    tails = np.quantile(ours, [0.025, 0.975]) - np.quantile(theirs, [0.025, 0.975])
    assert np.all(np.abs(tails) < 0.25 * theirs.std())


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_grouped_cluster_quantiles_resample_as_unit_by_unit(
    monkeypatch: pytest.MonkeyPatch, q: float
) -> None:
    """From GROUPED_FROM units the cluster quantile's resamples are drawn by groups: the
    same distribution as drawing unit by unit (not the same draws)."""
    values, codes = _clustered_latencies(3000, seed=11)
    monkeypatch.setattr(module, "GROUPED_FROM", 10**9)
    exact = module._resampled_cluster_quantiles(np.random.default_rng(1), values, codes, q, 4000)
    monkeypatch.setattr(module, "GROUPED_FROM", 1000)
    grouped = module._resampled_cluster_quantiles(np.random.default_rng(2), values, codes, q, 4000)
    _same_distribution(grouped, exact)
    # A window so narrow that most resamples fall outside it: those are computed over every
    # value, with the profile draws spread over their units, and the law stays the same.
    monkeypatch.setattr(module, "_WINDOW_MIN", 2)
    monkeypatch.setattr(module, "_GROUPED_SPREAD", 0.0)
    narrow = module._resampled_cluster_quantiles(np.random.default_rng(3), values, codes, q, 1500)
    _same_distribution(narrow, exact)


def test_grouped_ratio_resampling_has_the_unit_by_unit_law(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions with equal (errors, words) resampled as groups, Multinomial(K, shares):
    the WER interval's replicates have the law of drawing session by session."""
    rng = np.random.default_rng(4)
    errors = rng.poisson(2.0, 5000).astype(np.float64)
    words = errors + rng.poisson(20.0, 5000)
    sessions = np.stack([errors, words])
    monkeypatch.setattr(module, "GROUPED_FROM", 10**9)
    exact = module._resampled_ratios(np.random.default_rng(1), sessions, 4000)
    monkeypatch.setattr(module, "GROUPED_FROM", 1000)
    grouped = module._resampled_ratios(np.random.default_rng(2), sessions, 4000)
    _same_distribution(grouped, exact)
    # Deterministic for a seed, as every interval.
    again = module._resampled_ratios(np.random.default_rng(2), sessions, 4000)
    assert np.array_equal(grouped, again)


def test_few_distinct_rows_are_needed_for_grouping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows nearly all distinct are resampled one by one, as below GROUPED_FROM: the
    same draws as the unit-by-unit resampling."""
    rng = np.random.default_rng(5)
    columns = np.stack([rng.normal(10, 1, 4000), rng.normal(50, 1, 4000)])
    monkeypatch.setattr(module, "GROUPED_FROM", 1000)
    ours = module._resampled_sums(np.random.default_rng(1), columns, 50)
    monkeypatch.setattr(module, "GROUPED_FROM", 10**9)
    assert np.array_equal(ours, module._resampled_sums(np.random.default_rng(1), columns, 50))
