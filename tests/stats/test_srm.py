"""Tests for gateway.stats.srm: the chi-square sample-ratio-mismatch check."""

from __future__ import annotations

import math
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from gateway.stats.srm import sample_ratio_mismatch


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ({"a": 5000, "b": 5000}, {"a": 50.0, "b": 50.0}),
        ({"a": 5100, "b": 4900}, {"a": 1.0, "b": 1.0}),
        ({"a": 812, "b": 1190, "c": 2003}, {"a": 0.2, "b": 0.3, "c": 0.5}),
        ({"control": 90, "x": 3, "y": 7}, {"control": 90.0, "x": 5.0, "y": 5.0}),
    ],
)
def test_matches_scipy_chisquare(observed: dict[str, int], weights: dict[str, float]) -> None:
    """chi2 and p equal scipy.stats.chisquare against the weight shares of the total."""
    total = sum(observed.values())
    names = list(observed)
    expected = [total * weights[n] / sum(weights.values()) for n in names]
    reference = chisquare([observed[n] for n in names], expected)
    result = sample_ratio_mismatch(observed, weights)
    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.expected == pytest.approx(dict(zip(names, expected, strict=True)))
    assert result.observed == observed


def test_planted_imbalance_is_flagged_and_balance_is_not() -> None:
    """52/48 of 20,000 units is flagged at 0.001; 50.3/49.7 is not."""
    flagged = sample_ratio_mismatch({"a": 10_400, "b": 9_600}, {"a": 1, "b": 1})
    assert flagged.flagged
    assert flagged.p_value < 1e-6
    fine = sample_ratio_mismatch({"a": 10_060, "b": 9_940}, {"a": 1, "b": 1})
    assert not fine.flagged
    assert fine.p_value > 0.3


def test_threshold_decides() -> None:
    """The verdict is p < threshold, so a stricter threshold flags less."""
    observed, weights = {"a": 5_150, "b": 4_850}, {"a": 1.0, "b": 1.0}
    p = sample_ratio_mismatch(observed, weights).p_value
    assert 0.001 < p < 0.01
    assert not sample_ratio_mismatch(observed, weights).flagged
    assert sample_ratio_mismatch(observed, weights, threshold=0.01).flagged


def test_zero_weight_variant_with_units_is_flagged() -> None:
    """Units in a variant of weight 0 are a mismatch for certain: chi2 inf, p 0."""
    result = sample_ratio_mismatch({"a": 500, "b": 500, "off": 1}, {"a": 1, "b": 1, "off": 0})
    assert result.flagged
    assert result.p_value == 0.0
    assert result.chi2 == math.inf
    assert result.expected["off"] == 0.0


def test_zero_weight_variant_without_units_is_ignored() -> None:
    """An empty variant of weight 0 changes nothing: the others are tested on their own."""
    with_off = sample_ratio_mismatch({"a": 530, "b": 470, "off": 0}, {"a": 1, "b": 1, "off": 0})
    without = sample_ratio_mismatch({"a": 530, "b": 470}, {"a": 1, "b": 1})
    assert (with_off.chi2, with_off.p_value) == (without.chi2, without.p_value)


def test_nothing_to_test() -> None:
    """No units, or a single variant with weight, give p 1 and no flag."""
    empty = sample_ratio_mismatch({"a": 0, "b": 0}, {"a": 1, "b": 1})
    assert (empty.chi2, empty.p_value, empty.flagged) == (0.0, 1.0, False)
    single = sample_ratio_mismatch({"a": 10, "off": 0}, {"a": 1, "off": 0})
    assert (single.chi2, single.p_value, single.flagged) == (0.0, 1.0, False)


@pytest.mark.parametrize(
    ("observed", "weights", "match"),
    [
        ({"a": 1, "b": 1}, {"a": 1, "c": 1}, "same variants"),
        ({}, {}, "at least one"),
        ({"a": 1, "b": 1}, {"a": 0, "b": 0}, "all be 0"),
        ({"a": 1, "b": 1}, {"a": -1, "b": 2}, "weight of 'a'"),
        ({"a": 1, "b": 1}, {"a": math.nan, "b": 2}, "weight of 'a'"),
        ({"a": -1, "b": 1}, {"a": 1, "b": 1}, "count of 'a'"),
    ],
)
def test_bad_input_raises(observed: dict[str, int], weights: dict[str, float], match: str) -> None:
    """Mismatched keys, bad weights and negative counts are errors that name the problem."""
    with pytest.raises(ValueError, match=match):
        sample_ratio_mismatch(observed, weights)


def test_bad_threshold_raises() -> None:
    """The threshold is a probability strictly between 0 and 1."""
    with pytest.raises(ValueError, match="threshold"):
        sample_ratio_mismatch({"a": 1}, {"a": 1}, threshold=0.0)


splits = st.lists(
    st.tuples(st.integers(0, 100_000), st.floats(0.01, 100.0)), min_size=2, max_size=6
)


@given(splits, st.randoms(use_true_random=False))
def test_invariants(split: list[tuple[int, float]], random: Random) -> None:
    """p is in [0, 1], expected counts add up to the total, flagged iff p < threshold, and
    the result does not depend on the order of the variants."""
    observed = {f"v{i}": count for i, (count, _) in enumerate(split)}
    weights = {f"v{i}": weight for i, (_, weight) in enumerate(split)}
    result = sample_ratio_mismatch(observed, weights)
    assert 0.0 <= result.p_value <= 1.0
    assert result.chi2 >= 0.0
    assert sum(result.expected.values()) == pytest.approx(sum(observed.values()))
    assert result.flagged == (result.p_value < 0.001)
    names = list(observed)
    random.shuffle(names)
    shuffled = sample_ratio_mismatch(
        {n: observed[n] for n in names}, {n: weights[n] for n in reversed(names)}
    )
    assert shuffled.chi2 == pytest.approx(result.chi2)
    assert shuffled.p_value == pytest.approx(result.p_value)


@given(st.integers(1, 10_000), st.integers(2, 5), st.floats(0.1, 10.0))
def test_exact_split_is_never_flagged(per_variant: int, variants: int, weight: float) -> None:
    """Counts exactly proportional to the weights give chi2 0 and p 1."""
    names = [f"v{i}" for i in range(variants)]
    result = sample_ratio_mismatch(dict.fromkeys(names, per_variant), dict.fromkeys(names, weight))
    assert result.chi2 == pytest.approx(0.0, abs=1e-9)
    assert result.p_value == pytest.approx(1.0)
    assert not result.flagged
