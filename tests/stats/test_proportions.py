"""Tests for gateway.stats.proportions: Wilson and Newcombe intervals, the sequential variance."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from gateway.stats.proportions import (
    difference_variance,
    newcombe_difference_interval,
    wilson_interval,
)

FIXED_COUNTS = [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (7, 93), (50, 100), (1, 1000)]
CONFIDENCES = [0.8, 0.9, 0.95, 0.99]


@st.composite
def counts(draw: st.DrawFn, min_total: int = 0) -> tuple[int, int]:
    total = draw(st.integers(min_total, 10_000))
    return draw(st.integers(0, total)), total


confidences = st.floats(0.5, 0.999)


@pytest.mark.parametrize(("successes", "total"), FIXED_COUNTS)
@pytest.mark.parametrize("confidence", CONFIDENCES)
def test_wilson_matches_statsmodels(successes: int, total: int, confidence: float) -> None:
    """The Wilson interval equals statsmodels' proportion_confint(method="wilson")."""
    expected = proportion_confint(successes, total, alpha=1 - confidence, method="wilson")
    assert wilson_interval(successes, total, confidence) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("a", "b"), [(a, b) for a in FIXED_COUNTS for b in FIXED_COUNTS[::3]])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_newcombe_matches_statsmodels(
    a: tuple[int, int], b: tuple[int, int], confidence: float
) -> None:
    """Newcombe's interval for p_b - p_a equals statsmodels' "newcomb" for count1 = b."""
    # statsmodels compares its first sample minus its second, so the challenger goes first.
    expected = confint_proportions_2indep(
        b[0], b[1], a[0], a[1], method="newcomb", compare="diff", alpha=1 - confidence
    )
    actual = newcombe_difference_interval(a[0], a[1], b[0], b[1], confidence)
    assert actual == pytest.approx(expected, abs=1e-12)


def test_newcombe_hand_computed() -> None:
    """Newcombe's own worked example (1998, table II, 56/70 vs 48/80) gives his bounds."""
    low, high = newcombe_difference_interval(48, 80, 56, 70)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_empty_samples() -> None:
    """No trials give the whole range: (0, 1) for a rate, (-1, 1) for a difference."""
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert newcombe_difference_interval(0, 0, 5, 10) == (-1.0, 1.0)
    assert newcombe_difference_interval(5, 10, 0, 0) == (-1.0, 1.0)
    assert difference_variance(0, 0, 5, 10) == math.inf


@pytest.mark.parametrize(
    "call",
    [
        lambda: wilson_interval(-1, 10),
        lambda: wilson_interval(11, 10),
        lambda: wilson_interval(1, -1),
        lambda: wilson_interval(1, 10, confidence=1.0),
        lambda: wilson_interval(1, 10, confidence=0.0),
        lambda: newcombe_difference_interval(1, 10, 11, 10),
        lambda: newcombe_difference_interval(1, 10, 1, 10, confidence=1.5),
        lambda: difference_variance(-1, 10, 1, 10),
    ],
)
def test_bad_input_raises(call: object) -> None:
    """Counts outside [0, total], negative totals and confidences outside (0, 1) are errors."""
    assert callable(call)
    with pytest.raises(ValueError, match=r"successes|total|confidence"):
        call()


@given(counts(min_total=1), confidences)
def test_wilson_contains_rate_within_unit_interval(c: tuple[int, int], confidence: float) -> None:
    """The Wilson interval lies in [0, 1] and contains the observed rate."""
    successes, total = c
    low, high = wilson_interval(successes, total, confidence)
    assert 0.0 <= low <= successes / total <= high <= 1.0


@given(counts(), confidences, confidences)
def test_wilson_nested_in_confidence(c: tuple[int, int], first: float, second: float) -> None:
    """A higher confidence gives an interval that contains the lower one's."""
    lower, higher = sorted((first, second))
    low_1, high_1 = wilson_interval(*c, lower)
    low_2, high_2 = wilson_interval(*c, higher)
    assert low_2 <= low_1 + 1e-12
    assert high_1 <= high_2 + 1e-12


@given(counts(min_total=1))
def test_wilson_symmetric_in_failures(c: tuple[int, int]) -> None:
    """Counting failures instead of successes mirrors the interval around 1/2."""
    successes, total = c
    low, high = wilson_interval(successes, total)
    mirrored_low, mirrored_high = wilson_interval(total - successes, total)
    assert (mirrored_low, mirrored_high) == pytest.approx((1 - high, 1 - low), abs=1e-12)


@given(counts(min_total=1), counts(min_total=1), confidences)
def test_newcombe_contains_difference_within_bounds(
    a: tuple[int, int], b: tuple[int, int], confidence: float
) -> None:
    """The interval lies in [-1, 1] and contains the observed difference p_b - p_a."""
    low, high = newcombe_difference_interval(*a, *b, confidence)
    difference = b[0] / b[1] - a[0] / a[1]
    assert -1.0 <= low <= difference + 1e-12
    assert difference - 1e-12 <= high <= 1.0


@given(counts(), counts(), confidences)
def test_newcombe_swapping_arms_negates(
    a: tuple[int, int], b: tuple[int, int], confidence: float
) -> None:
    """Swapping control and challenger negates and reverses the interval."""
    low, high = newcombe_difference_interval(*a, *b, confidence)
    swapped = newcombe_difference_interval(*b, *a, confidence)
    assert swapped == pytest.approx((-high, -low), abs=1e-12)


@given(counts(min_total=1), counts(min_total=1), confidences, confidences)
def test_newcombe_nested_in_confidence(
    a: tuple[int, int], b: tuple[int, int], first: float, second: float
) -> None:
    """A higher confidence gives an interval that contains the lower one's."""
    lower, higher = sorted((first, second))
    low_1, high_1 = newcombe_difference_interval(*a, *b, lower)
    low_2, high_2 = newcombe_difference_interval(*a, *b, higher)
    assert low_2 <= low_1 + 1e-12
    assert high_1 <= high_2 + 1e-12


def test_difference_variance_agresti_caffo() -> None:
    """One success and one failure are added per arm: 0/10 vs 0/10 has p~ = 1/12 in each."""
    assert difference_variance(0, 10, 0, 10) == pytest.approx(2 * (1 / 12) * (11 / 12) / 12)
    expected = (4 / 12) * (8 / 12) / 12 + (8 / 22) * (14 / 22) / 22
    assert difference_variance(3, 10, 7, 20) == pytest.approx(expected)


@given(counts(min_total=1), counts(min_total=1))
def test_difference_variance_positive_and_symmetric(a: tuple[int, int], b: tuple[int, int]) -> None:
    """The variance is finite and positive, even at rates 0 or 1, and symmetric in the arms."""
    variance = difference_variance(*a, *b)
    assert 0.0 < variance < math.inf
    assert difference_variance(*b, *a) == pytest.approx(variance)


@given(counts(min_total=1), counts(min_total=1), st.integers(2, 50))
def test_difference_variance_shrinks_with_more_data(
    a: tuple[int, int], b: tuple[int, int], k: int
) -> None:
    """The same rates on k times the trials have a smaller variance."""
    bigger = difference_variance(a[0] * k, a[1] * k, b[0] * k, b[1] * k)
    assert bigger < difference_variance(*a, *b)
