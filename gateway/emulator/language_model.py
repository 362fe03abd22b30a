"""The custom model's n-gram language model: interpolated modified Kneser-Ney, as ARPA text.

Estimation follows Chen & Goodman (1998) as KenLM implements it:

* Each sentence is padded as "<s> w1 … wn </s>". The n-grams of every order are those of
  the padded sentences.
* Highest-order n-grams, and n-grams starting with "<s>" (nothing can precede them), keep
  their counts; every other n-gram's count is its number of distinct left extensions (its
  continuation count, the Kneser-Ney idea).
* Each order n has three discounts D1, D2, D3+ from the counts-of-counts t1…t4 of its
  (adjusted) counts: Y = t1 / (t1 + 2 t2), Dk = k − (k + 1) Y t(k+1) / tk. Tiny corpora can
  leave some tk at zero or a Dk outside (0, k); that order then uses the fallback
  D = 0.5, 1.0, 1.5 (KenLM's --discount_fallback).
* p(w | h) = (a(hw) − D(a(hw))) / Σv a(hv) + γ(h) p(w | h'), where h' drops h's first word and
  γ(h) = (D1 N1(h•) + D2 N2(h•) + D3+ N3+(h•)) / Σv a(hv). Unigrams interpolate with the
  uniform distribution over the vocabulary (the corpus words and "</s>"; "<s>" is never
  predicted and gets log10 probability -99).

Because the model is interpolated, the back-off weight of a context is exactly γ(h): an
unseen w gets γ(h) p(w | h'), which is what ARPA back-off computes, so every context's
distribution sums to 1. Below the top order every n-gram line has a back-off weight, 0
(log10 of 1) for n-grams that begin no longer n-gram.
Values are log10, n-grams are sorted, and the same corpus always gives the same text.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

BOS = "<s>"
EOS = "</s>"
_NO_PROBABILITY = -99.0  # ARPA's conventional log10 "never" for the <s> unigram

NGram = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Discounts:
    """Modified Kneser-Ney discounts for counts of 1, 2, and 3 or more."""

    d1: float
    d2: float
    d3: float

    def __call__(self, count: int) -> float:
        return self.d1 if count == 1 else self.d2 if count == 2 else self.d3


FALLBACK_DISCOUNTS = Discounts(0.5, 1.0, 1.5)


def estimate_discounts(counts: Iterable[int]) -> Discounts:
    """Chen & Goodman's discounts from one order's counts, or the fallback when they are not
    estimable (a zero count-of-counts) or not valid (some Dk outside (0, k))."""
    t = Counter(c for c in counts if c <= 4)
    if any(t[k] == 0 for k in (1, 2, 3, 4)):
        return FALLBACK_DISCOUNTS
    y = t[1] / (t[1] + 2 * t[2])
    d = [k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3)]
    if not all(0 < dk < k for k, dk in zip((1, 2, 3), d, strict=True)):
        return FALLBACK_DISCOUNTS
    return Discounts(d[0], d[1], d[2])


def _raw_counts(sentences: Iterable[Sequence[str]], order: int) -> list[Counter[NGram]]:
    counts: list[Counter[NGram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        if not sentence:
            continue
        for word in sentence:
            if not word or word in (BOS, EOS) or any(c.isspace() for c in word):
                raise ConfigError("corpus", f"invalid word {word!r} in the LM corpus")
        padded = (BOS, *sentence, EOS)
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                counts[n - 1][padded[i : i + n]] += 1
    if not counts[0]:
        raise ConfigError("corpus", "the LM corpus has no words")
    return counts


def _adjusted_counts(raw: list[Counter[NGram]]) -> list[dict[NGram, int]]:
    """Raw counts at the top order and after <s>; continuation counts elsewhere."""
    adjusted: list[dict[NGram, int]] = [dict(raw[-1])]
    for n in range(len(raw) - 1, 0, -1):
        extensions = Counter(ngram[1:] for ngram in raw[n])
        adjusted.insert(
            0,
            {g: c if g[0] == BOS else extensions[g] for g, c in raw[n - 1].items()},
        )
    del adjusted[0][(BOS,)]  # <s> is never predicted
    return adjusted


def _by_context(counts: Mapping[NGram, int]) -> dict[NGram, list[NGram]]:
    groups: dict[NGram, list[NGram]] = defaultdict(list)
    for ngram in counts:
        groups[ngram[:-1]].append(ngram)
    return groups


def _interpolate(
    adjusted: list[dict[NGram, int]],
) -> tuple[list[dict[NGram, float]], list[dict[NGram, float]]]:
    """Interpolated probabilities of every n-gram and back-off weights (γ) of every context."""
    vocabulary_size = len(adjusted[0])
    probs: list[dict[NGram, float]] = []
    gammas: list[dict[NGram, float]] = []
    for n, counts in enumerate(adjusted, start=1):
        discount = estimate_discounts(counts.values())
        level: dict[NGram, float] = {}
        level_gammas: dict[NGram, float] = {}
        for context, ngrams in _by_context(counts).items():
            total = sum(counts[g] for g in ngrams)
            gamma = sum(discount(counts[g]) for g in ngrams) / total
            level_gammas[context] = gamma
            for g in ngrams:
                lower = probs[-1][g[1:]] if n > 1 else 1 / vocabulary_size
                level[g] = (counts[g] - discount(counts[g])) / total + gamma * lower
        probs.append(level)
        gammas.append(level_gammas)
    return probs, gammas


def _log10(value: float) -> str:
    return f"{math.log10(value):.6f}"


def build_arpa(sentences: Iterable[Sequence[str]], order: int = 3) -> str:
    """ARPA text of the interpolated modified Kneser-Ney model of `sentences` (word lists).

    Empty sentences are skipped; raises ConfigError("corpus", …) when no words remain or a word
    is empty, contains whitespace or is a sentence marker, and ValueError for order < 1.
    """
    if order < 1:
        raise ValueError(f"n-gram order must be at least 1, got {order}")
    adjusted = _adjusted_counts(_raw_counts(sentences, order))
    probs, gammas = _interpolate(adjusted)
    sections: list[list[str]] = []
    for n in range(1, order + 1):
        # Contexts of the next order carry a back-off weight; the top order has none.
        backoffs = gammas[n] if n < order else None
        ngrams = sorted([*probs[n - 1], *([(BOS,)] if n == 1 else [])])
        lines = [f"\\{n}-grams:"]
        for ngram in ngrams:
            prob = f"{_NO_PROBABILITY:.6f}" if ngram == (BOS,) else _log10(probs[n - 1][ngram])
            line = f"{prob}\t{' '.join(ngram)}"
            if backoffs is not None:
                line += f"\t{_log10(backoffs.get(ngram, 1.0))}"
            lines.append(line)
        sections.append(lines)
    header = ["\\data\\", *(f"ngram {n}={len(s) - 1}" for n, s in enumerate(sections, 1))]
    blocks = ["\n".join(header), *("\n".join(s) for s in sections), "\\end\\"]
    return "\n\n".join(blocks) + "\n"


def write_arpa(path: Path, sentences: Iterable[Sequence[str]], order: int = 3) -> None:
    """Write `build_arpa(sentences, order)` to `path` (UTF-8)."""
    path.write_text(build_arpa(sentences, order), encoding="utf-8")
