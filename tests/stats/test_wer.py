"""Tests for gateway.stats.wer: alignment counts, empty cases and corpus sums."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.stats.wer import WerCounts, align, align_words, alignment, corpus_wer
from gateway.text.normalize import normalize_words


def _levenshtein(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word edit distance by the textbook dynamic programme, independent of jiwer."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (ref_word != hyp_word),
                )
            )
        previous = current
    return previous[-1]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("the cat sat", "the cat sat", WerCounts(0, 0, 0, 3)),
        ("the cat sat", "the bat sat", WerCounts(1, 0, 0, 2)),
        ("the cat sat", "the sat", WerCounts(0, 1, 0, 2)),
        ("the cat sat", "the cat sat down", WerCounts(0, 0, 1, 3)),
        ("", "", WerCounts(0, 0, 0, 0)),
        ("", "hello there", WerCounts(0, 0, 2, 0)),
        ("hello there", "", WerCounts(0, 2, 0, 0)),
        ("I paid $200.", "i paid two hundred dollars", WerCounts(0, 0, 0, 5)),
        ("Hello, World!", "hello world", WerCounts(0, 0, 0, 2)),
    ],
)
def test_align_counts(reference: str, hypothesis: str, expected: WerCounts) -> None:
    """Hand-computed substitutions, deletions, insertions and hits after normalisation."""
    assert align(reference, hypothesis) == expected


def test_wer_rates() -> None:
    """WER is errors over reference words; with no reference it is the insertion count."""
    assert WerCounts(1, 1, 1, 2).wer == pytest.approx(3 / 4)
    assert WerCounts(1, 1, 1, 2).reference_words == 4
    assert WerCounts(1, 1, 1, 2).errors == 3
    assert WerCounts().wer == 0.0
    assert WerCounts(insertions=2).wer == 2.0


def test_corpus_wer_sums_counts_not_rates() -> None:
    """Corpus WER is total errors over total reference words."""
    total = corpus_wer([("a b c d", "a b c d"), ("x", "y"), ("", "extra")])
    assert total == WerCounts(substitutions=1, deletions=0, insertions=1, hits=4)
    assert total.wer == pytest.approx(2 / 5)
    assert corpus_wer([]) == WerCounts()


def test_counts_add() -> None:
    """Adding counts adds every field."""
    assert WerCounts(1, 2, 3, 4) + WerCounts(10, 20, 30, 40) == WerCounts(11, 22, 33, 44)


_WORDS = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8)


@given(_WORDS, _WORDS)
@settings(deadline=None)  # the first call imports and warms jiwer; timing says nothing here
def test_align_matches_levenshtein(reference: list[str], hypothesis: list[str]) -> None:
    """Errors equal the word edit distance, and the counts cover both word sequences."""
    counts = align(" ".join(reference), " ".join(hypothesis))
    assert counts.errors == _levenshtein(reference, hypothesis)
    assert counts.reference_words == len(reference)
    assert counts.hits + counts.substitutions + counts.insertions == len(hypothesis)


WORDS = st.lists(st.sampled_from(["a", "b", "c", "balance", "today"]), max_size=8)


@given(WORDS, WORDS)
def test_an_alignment_rebuilds_both_texts_and_counts_as_align_does(
    reference: list[str], hypothesis: list[str]
) -> None:
    found = alignment(" ".join(reference), " ".join(hypothesis))
    assert found.counts == align(" ".join(reference), " ".join(hypothesis))
    assert [op.reference for op in found.ops if op.reference is not None] == reference
    assert [op.hypothesis for op in found.ops if op.hypothesis is not None] == hypothesis
    for op in found.ops:
        assert (op.kind == "equal") == (op.reference is not None and op.reference == op.hypothesis)


def test_an_alignment_names_the_words_of_each_error() -> None:
    found = alignment("what is my balance today", "what is the balance today please")
    errors = [(op.kind, op.reference, op.hypothesis) for op in found.ops if op.kind != "equal"]
    assert errors == [("substitute", "my", "the"), ("insert", None, "please")]


@pytest.mark.parametrize(
    ("reference", "hypothesis"),
    [("Pay $200, please.", "pay two hundred dollars"), ("hello", ""), ("", "uh"), ("", "")],
)
def test_align_words_is_align_of_normalised_words(reference: str, hypothesis: str) -> None:
    """Aligning pre-normalised words gives exactly the counts of aligning the texts."""
    words = align_words(normalize_words(reference), normalize_words(hypothesis))
    assert words == align(reference, hypothesis)
