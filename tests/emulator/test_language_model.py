"""Tests for gateway.emulator.language_model: KN estimation, ARPA form, PocketSphinx loading."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pocketsphinx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.emulator.language_model import (
    FALLBACK_DISCOUNTS,
    Discounts,
    build_arpa,
    estimate_discounts,
    write_arpa,
)
from gateway.emulator.lexicon import Lexicon, write_dictionary
from gateway.errors import ConfigError

NGram = tuple[str, ...]

CORPUS = [
    ["check", "my", "balance", "please"],
    ["check", "my", "savings", "balance"],
    ["what", "is", "my", "balance"],
    ["transfer", "money", "to", "savings"],
    ["transfer", "my", "money"],
    ["what", "is", "my", "cashback"],
    ["check", "my", "balance"],
]


@dataclass(frozen=True, slots=True)
class Arpa:
    """An ARPA model read back: log10 probabilities and back-off weights by n-gram."""

    order: int
    probs: dict[NGram, float]
    backoffs: dict[NGram, float]

    @property
    def vocabulary(self) -> list[str]:
        """Every word the model can predict: the unigrams less <s>."""
        return sorted(g[0] for g in self.probs if len(g) == 1 and g != ("<s>",))

    def contexts(self) -> list[NGram]:
        """Every n-gram that can be a context, plus the empty context."""
        return [(), *(g for g in self.probs if len(g) < self.order)]

    def prob(self, context: NGram, word: str) -> float:
        """P(word | context) by standard ARPA back-off."""
        context = context[max(0, len(context) - self.order + 1) :] if self.order > 1 else ()
        if (*context, word) in self.probs:
            return 10 ** self.probs[(*context, word)]
        if not context:
            raise KeyError(word)
        return 10 ** self.backoffs.get(context, 0.0) * self.prob(context[1:], word)


def read_arpa(text: str) -> Arpa:
    """Parse ARPA text, checking the header counts against the sections."""
    declared: dict[int, int] = {}
    probs: dict[NGram, float] = {}
    backoffs: dict[NGram, float] = {}
    n = 0
    for line in text.splitlines():
        line = line.strip()
        if header := re.fullmatch(r"ngram (\d+)=(\d+)", line):
            declared[int(header[1])] = int(header[2])
        elif section := re.fullmatch(r"\\(\d+)-grams:", line):
            n = int(section[1])
        elif line and n and not line.startswith("\\"):
            fields = line.split()
            assert len(fields) in (n + 1, n + 2), line
            ngram = tuple(fields[1 : n + 1])
            probs[ngram] = float(fields[0])
            if len(fields) == n + 2:
                backoffs[ngram] = float(fields[n + 1])
    assert text.rstrip().endswith("\\end\\")
    for order, count in declared.items():
        assert sum(1 for g in probs if len(g) == order) == count
    return Arpa(max(declared), probs, backoffs)


def assert_normalised(arpa: Arpa, extra_contexts: list[NGram] = []) -> None:  # noqa: B006
    """Every context's distribution over the vocabulary (with </s>) sums to one."""
    for context in [*arpa.contexts(), *extra_contexts]:
        total = sum(arpa.prob(context, w) for w in arpa.vocabulary)
        assert total == pytest.approx(1.0, abs=1e-4), context


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(order: int) -> None:
    """Back-off weights make every seen and unseen context a proper distribution."""
    arpa = read_arpa(build_arpa(CORPUS, order))
    assert arpa.order == order
    assert_normalised(arpa, [("balance", "balance"), ("zzz", "check"), ("please", "transfer")])


def test_sentence_markers() -> None:
    """<s> has log10 probability -99 and is never predicted; </s> is in the vocabulary."""
    arpa = read_arpa(build_arpa(CORPUS, 3))
    assert arpa.probs[("<s>",)] == -99.0
    assert "</s>" in arpa.vocabulary
    assert "<s>" not in arpa.vocabulary


def test_order_one_has_no_backoff_column() -> None:
    """A unigram model is the top order, so its lines carry no back-off weights."""
    arpa = read_arpa(build_arpa(CORPUS, 1))
    assert arpa.backoffs == {}
    assert {len(g) for g in arpa.probs} == {1}


def test_hand_computed_kneser_ney() -> None:
    """A tiny bigram corpus gives the hand-computed continuation and bigram probabilities."""
    # Unigram continuation counts: a 1 (<s>), b 2 (a, c), c 1 (<s>), </s> 1 (b); t3 = 0 so
    # the fallback D1 = 0.5, D2 = 1.0 applies. Total 5, γ = (3·0.5 + 1.0)/5 = 0.5, |V| = 4.
    arpa = read_arpa(build_arpa([["a", "b"], ["a", "b"], ["c", "b"]], order=2))
    p_a, p_b = 0.5 / 5 + 0.5 / 4, 1.0 / 5 + 0.5 / 4
    assert 10 ** arpa.probs[("a",)] == pytest.approx(p_a, abs=1e-5)
    assert 10 ** arpa.probs[("b",)] == pytest.approx(p_b, abs=1e-5)
    assert 10 ** arpa.probs[("c",)] == pytest.approx(p_a, abs=1e-5)
    assert 10 ** arpa.probs[("</s>",)] == pytest.approx(p_a, abs=1e-5)
    # Bigram context "a": count(a b) = 2 (top order keeps raw counts), D2 = 1.0, γ(a) = 0.5.
    assert 10 ** arpa.probs[("a", "b")] == pytest.approx((2 - 1.0) / 2 + 0.5 * p_b, abs=1e-5)
    assert 10 ** arpa.backoffs[("a",)] == pytest.approx(0.5, abs=1e-5)
    # Context <s>: a 2, c 1 → γ = (1.0 + 0.5)/3.
    assert 10 ** arpa.backoffs[("<s>",)] == pytest.approx(1.5 / 3, abs=1e-5)
    assert 10 ** arpa.probs[("<s>", "c")] == pytest.approx(0.5 / 3 + 0.5 * p_a, abs=1e-5)


def test_hand_computed_unigrams_with_estimated_discounts() -> None:
    """Continuation counts with t1…t4 all present use Chen & Goodman's discounts."""
    corpus = ["p x", "q x", "r x", "s x", "p y", "q y", "r y", "p z", "q z", "p w", "q w", "v"]
    arpa = read_arpa(build_arpa([s.split() for s in corpus], order=2))
    # Continuation counts: p q r s v 1 (after <s>); z w 2; y 3; x 4; </s> 5 (after x y z w v).
    # t1 = 5, t2 = 2, t3 = 1, t4 = 1 → Y = 5/9, D1 = 5/9, D2 = 7/6, D3+ = 7/9.
    d1, d2, d3 = 5 / 9, 7 / 6, 7 / 9
    total = 5 * 1 + 2 * 2 + 3 + 4 + 5
    gamma = (5 * d1 + 2 * d2 + 3 * d3) / total
    uniform = gamma / 10  # nine words and </s>
    expected = {"p": (1 - d1) / total, "z": (2 - d2) / total, "y": (3 - d3) / total}
    expected |= {"x": (4 - d3) / total, "</s>": (5 - d3) / total}
    for word, discounted in expected.items():
        assert 10 ** arpa.probs[(word,)] == pytest.approx(discounted + uniform, abs=1e-5)


def test_estimate_discounts() -> None:
    """Chen & Goodman's formulas from counts-of-counts, with the fallback when not estimable."""
    counts = [1, 1, 1, 1, 2, 2, 3, 4, 7]  # t1 = 4, t2 = 2, t3 = 1, t4 = 1 → Y = 0.5
    assert estimate_discounts(counts) == Discounts(0.5, 1.25, 1.0)
    assert estimate_discounts([1, 1, 2, 3]) == FALLBACK_DISCOUNTS  # t4 = 0
    # t1 = t2 = 1, t3 = 10 → Y = 1/3, D2 = 2 − 3 · (1/3) · 10 < 0: not a valid discount.
    assert estimate_discounts([1, 2, *[3] * 10, 4]) == FALLBACK_DISCOUNTS
    assert FALLBACK_DISCOUNTS(1) == 0.5
    assert FALLBACK_DISCOUNTS(2) == 1.0
    assert FALLBACK_DISCOUNTS(9) == 1.5


def test_output_is_deterministic_and_sorted() -> None:
    """The same corpus gives identical text, with each section's n-grams sorted."""
    text = build_arpa(CORPUS, 3)
    assert build_arpa(CORPUS, 3) == text
    for section in re.findall(r"-grams:\n(.*?)\n\n", text, flags=re.DOTALL):
        ngrams = [line.split("\t")[1] for line in section.splitlines()]
        assert ngrams == sorted(ngrams, key=lambda g: tuple(g.split()))


@pytest.mark.parametrize("corpus", [[], [[]], [[], []]])
def test_empty_corpus_is_a_config_error(corpus: list[list[str]]) -> None:
    """A corpus without words raises ConfigError naming the corpus."""
    with pytest.raises(ConfigError) as error:
        build_arpa(corpus)
    assert error.value.field == "corpus"


@pytest.mark.parametrize("word", ["", "two words", "<s>", "</s>"])
def test_invalid_words_are_config_errors(word: str) -> None:
    """Empty words, words with whitespace and sentence markers are rejected."""
    with pytest.raises(ConfigError, match="invalid word"):
        build_arpa([["fine", word]])


def test_order_below_one_is_rejected() -> None:
    """An n-gram order below one raises ValueError."""
    with pytest.raises(ValueError, match="order"):
        build_arpa(CORPUS, 0)


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.load()


@pytest.mark.parametrize("order", [1, 2, 3])
def test_pocketsphinx_loads_the_model(tmp_path: Path, lexicon: Lexicon, order: int) -> None:
    """PocketSphinx loads the ARPA file, knows its vocabulary and agrees on probabilities."""
    lm_path, dict_path = tmp_path / "custom.lm", tmp_path / "custom.dict"
    write_arpa(lm_path, CORPUS, order)
    arpa = read_arpa(lm_path.read_text(encoding="utf-8"))
    words = [w for w in arpa.vocabulary if w != "</s>"]
    assert write_dictionary(dict_path, words, lexicon) == ["cashback"]
    decoder = pocketsphinx.Decoder(lm=str(lm_path), dict=str(dict_path), loglevel="FATAL")
    for word in words:
        assert decoder.lookup_word(word)
    # The model as PocketSphinx read it, written back as ARPA, has the same unigrams.
    model = pocketsphinx.NGramModel.readfile(str(lm_path))
    model.write(str(tmp_path / "back.lm"), pocketsphinx.NGramModel.str_to_type("arpa"))
    back = read_arpa((tmp_path / "back.lm").read_text(encoding="utf-8"))
    assert back.vocabulary == arpa.vocabulary
    # NGramModel.prob takes the word first, then its history, newest first; it answers in
    # the decoder's log base 1.0001.
    lm = decoder.get_lm()
    history = ("check", "my")[3 - order :] if order > 1 else ()
    expected = math.log10(arpa.prob(history, "balance"))
    got = lm.prob(["balance", *reversed(history)]) * math.log10(1.0001)
    assert got == pytest.approx(expected, abs=1e-3)


_CORPORA = st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=6), max_size=8)


@settings(max_examples=60, deadline=None)
@given(_CORPORA.filter(lambda c: any(c)), st.integers(min_value=1, max_value=4))
def test_random_corpora_are_normalised(corpus: list[list[str]], order: int) -> None:
    """Any small corpus at any order gives distributions that sum to one."""
    arpa = read_arpa(build_arpa(corpus, order))
    assert_normalised(arpa, [("e", "e", "e"), ("d", "a")])
