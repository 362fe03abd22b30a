"""Tests for gateway.text.numbers: spelling numbers and inverse text normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text.numbers import (
    inverse_normalize,
    number_to_words,
    ordinal_suffix,
    ordinal_to_words,
)


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (21, "twenty one"),
        (100, "one hundred"),
        (205, "two hundred five"),
        (1023, "one thousand twenty three"),
        (1_000_000, "one million"),
        (2_000_300_000, "two billion three hundred thousand"),
        (
            999_999_999_999,
            "nine hundred ninety nine billion nine hundred ninety nine million"
            " nine hundred ninety nine thousand nine hundred ninety nine",
        ),
    ],
)
def test_number_to_words(n: int, words: str) -> None:
    """Cardinals are spelled without "and" or hyphens, with every scale word."""
    assert number_to_words(n) == words


@pytest.mark.parametrize("n", [-1, 10**12])
def test_number_to_words_rejects_out_of_range(n: int) -> None:
    """Numbers outside 0 ≤ n < 10**12 raise ValueError."""
    with pytest.raises(ValueError, match="out of range"):
        number_to_words(n)


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (1, "first"),
        (2, "second"),
        (3, "third"),
        (5, "fifth"),
        (8, "eighth"),
        (9, "ninth"),
        (12, "twelfth"),
        (20, "twentieth"),
        (23, "twenty third"),
        (100, "one hundredth"),
        (101, "one hundred first"),
        (1000, "one thousandth"),
    ],
)
def test_ordinal_to_words(n: int, words: str) -> None:
    """Only the last word of an ordinal changes, with the irregular English forms."""
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize(
    ("n", "suffix"),
    [
        (1, "st"),
        (2, "nd"),
        (3, "rd"),
        (4, "th"),
        (11, "th"),
        (12, "th"),
        (13, "th"),
        (21, "st"),
        (102, "nd"),
        (111, "th"),
        (113, "th"),
    ],
)
def test_ordinal_suffix(n: int, suffix: str) -> None:
    """Numbers ending in 11, 12 and 13 take "th"; others follow their last digit."""
    assert ordinal_suffix(n) == suffix


@pytest.mark.parametrize(
    ("spoken", "written"),
    [
        ("two hundred fifty dollars", "$250"),
        ("one dollar", "$1"),
        ("one thousand two hundred dollars and fifty cents", "$1200.50"),
        ("ten dollars and five cents back", "$10.05 back"),
        ("five percent", "5%"),
        ("one point five percent", "1.5%"),
        ("twenty third", "23rd"),
        ("the twenty first century", "the 21st century"),
        ("one hundredth", "100th"),
        ("first time", "first time"),
        ("one two three four", "1234"),
        ("nine one one", "911"),
        ("one question", "one question"),
        ("zero", "zero"),
        ("ten", "10"),
        ("two thousand twenty four", "2024"),
        ("a hundred dollars", "$100"),
        ("a dollar", "a dollar"),
        ("a thousand", "1000"),
        ("twenty twenty", "20 20"),
        ("four five hundred", "four 500"),
        ("hundred", "hundred"),
        ("Call me Maybe", "Call me Maybe"),
    ],
)
def test_inverse_normalize(spoken: str, written: str) -> None:
    """Number word runs become digits by the documented rules; other words are unchanged."""
    assert inverse_normalize(spoken.split()) == written


def test_inverse_normalize_empty() -> None:
    """No words give the empty string."""
    assert inverse_normalize([]) == ""


@given(st.integers(min_value=10, max_value=10**12 - 1))
def test_cardinals_round_trip(n: int) -> None:
    """Every spelled cardinal of ten or more reads back as its digits."""
    assert inverse_normalize(number_to_words(n).split()) == str(n)


@given(st.integers(min_value=10, max_value=10**12 - 1))
def test_ordinals_round_trip(n: int) -> None:
    """Every spelled ordinal of ten or more reads back as digits plus its suffix."""
    assert inverse_normalize(ordinal_to_words(n).split()) == f"{n}{ordinal_suffix(n)}"


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_dollar_amounts_round_trip(n: int) -> None:
    """Any spelled amount followed by "dollars" reads back as "$" and digits."""
    assert inverse_normalize([*number_to_words(n).split(), "dollars"]) == f"${n}"
