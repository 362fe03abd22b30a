"""Tests for gateway.text.normalize: lexical normalisation and the Display/ITN forms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text.normalize import (
    Profanity,
    corpus_sentences,
    display_text,
    itn_text,
    masked_itn_text,
    normalize_words,
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("$1,200.50", "one thousand two hundred dollars and fifty cents"),
        ("$200", "two hundred dollars"),
        ("$1", "one dollar"),
        ("$1.01", "one dollar and one cent"),
        ("$0.50", "fifty cents"),
        ("$3.5", "three dollars and fifty cents"),
        ("$7.00", "seven dollars"),
        ("5%", "five percent"),
        ("2.5 %", "two point five percent"),
        ("3rd", "third"),
        ("the 21st", "the twenty first"),
        ("1,200", "one thousand two hundred"),
        ("1,2", "one two"),
        ("007", "zero zero seven"),
        ("3.14", "three point one four"),
        ("1000000000000", "one zero zero zero zero zero zero zero zero zero zero zero zero"),
        ("mp3", "mp three"),
        ("Tom & Jerry", "tom and jerry"),
        ("e-mail and/or fax", "e mail and or fax"),
        ("wait—what", "wait what"),
        ("Don't", "don't"),
        ("DON’T", "don't"),
        ("'cause the students' books", "cause the students books"),
        ("U.S. policy!", "us policy"),
        ("Hello,   world?!", "hello world"),
        ("ﬁne", "fine"),
        ("", ""),
        ("  ... ", ""),
    ],
)
def test_normalize_words(text: str, words: str) -> None:
    """Each documented rule maps written text to the expected lexical words."""
    assert normalize_words(text) == words.split()


_TEXT = st.text(alphabet=st.characters(codec="ascii") | st.sampled_from("’é—ﬁ½"), max_size=40)


@given(_TEXT)
def test_normalize_words_is_idempotent(text: str) -> None:
    """Normalising already normalised words changes nothing."""
    words = normalize_words(text)
    assert normalize_words(" ".join(words)) == words


@given(_TEXT)
def test_normalized_words_hold_only_letters_and_inner_apostrophes(text: str) -> None:
    """Output words are non-empty, lower case, and apostrophes never start or end them."""
    for word in normalize_words(text):
        assert word
        assert word == word.lower()
        assert not word.startswith("'")
        assert not word.endswith("'")
        assert all(c.isalnum() or c == "'" for c in word)
        assert not any(c.isdigit() for c in word)


def test_corpus_sentences_split_on_lines_and_sentence_ends() -> None:
    """Lines and . ! ? ; followed by space end sentences; empty ones are dropped."""
    text = "Pay $200 now. Really? Yes!\n\n  ...  \nFirst; second;third\n3.5 stays one"
    assert corpus_sentences(text) == [
        ["pay", "two", "hundred", "dollars", "now"],
        ["really"],
        ["yes"],
        ["first"],
        ["secondthird"],
        ["three", "point", "five", "stays", "one"],
    ]


def test_corpus_sentences_of_empty_text() -> None:
    """Empty text has no sentences."""
    assert corpus_sentences("") == []


def test_display_text_applies_itn_capitals_and_period() -> None:
    """Display is ITN with a capital first letter, a capital "I" and a final period."""
    words = ["i", "think", "i'm", "owed", "two", "hundred", "fifty", "dollars"]
    assert display_text(words) == "I think I'm owed $250."
    assert display_text(["twenty", "third", "of", "may"]) == "23rd of may."


def test_display_text_of_nothing_is_empty() -> None:
    """No words give an empty Display, not a lone period."""
    assert display_text([]) == ""
    assert display_text(["damn"], profanity="removed") == ""


def test_itn_text_is_lower_case_without_sentence_punctuation() -> None:
    """The ITN form has digits and symbols but no capitals or final period."""
    assert itn_text(["I", "owe", "five", "percent"]) == "i owe 5%"


@pytest.mark.parametrize(
    ("profanity", "itn", "display"),
    [
        ("masked", "well **** it costs $5", "Well **** it costs $5."),
        ("removed", "well it costs $5", "Well it costs $5."),
        ("raw", "well damn it costs $5", "Well damn it costs $5."),
    ],
)
def test_profanity_modes(profanity: Profanity, itn: str, display: str) -> None:
    """Profane words are masked with same-length asterisks, removed, or kept."""
    words = ["well", "damn", "it", "costs", "five", "dollars"]
    assert masked_itn_text(words, profanity) == itn
    assert display_text(words, profanity=profanity) == display


def test_unknown_profanity_mode_is_rejected() -> None:
    """An unknown profanity option raises ValueError instead of leaking words."""
    with pytest.raises(ValueError, match="profanity"):
        masked_itn_text(["damn"], "hidden")  # type: ignore[arg-type]
