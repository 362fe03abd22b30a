"""Word error rate: align a reference with a hypothesis after the documented normalisation.

Both texts go through `gateway.text.normalize.normalize_words`, so "$200" and "two hundred
dollars" are the same words, and are then aligned by jiwer's minimum edit distance. Counts
from many utterances add up (`WerCounts.__add__`), and the corpus WER is the total errors
over the total reference words, not a mean of per-utterance rates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import jiwer

from gateway.text.normalize import normalize_words


@dataclass(frozen=True, slots=True)
class WerCounts:
    """Edit operations of one alignment, or the sum over many."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def reference_words(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """errors / reference words. With no reference words the rate is undefined; it is then
        reported as float(insertions), so silence recognised as silence scores 0.0 and every
        inserted word counts as one full error."""
        if self.reference_words == 0:
            return float(self.insertions)
        return self.errors / self.reference_words

    def __add__(self, other: WerCounts) -> WerCounts:
        return WerCounts(
            substitutions=self.substitutions + other.substitutions,
            deletions=self.deletions + other.deletions,
            insertions=self.insertions + other.insertions,
            hits=self.hits + other.hits,
        )


def align(reference: str, hypothesis: str) -> WerCounts:
    """Normalise both texts and count the edit operations of their best alignment."""
    ref = normalize_words(reference)
    hyp = normalize_words(hypothesis)
    # Older jiwer releases reject empty input, and the answer needs no alignment anyway.
    if not ref or not hyp:
        return WerCounts(deletions=len(ref), insertions=len(hyp))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return WerCounts(
        substitutions=int(out.substitutions),
        deletions=int(out.deletions),
        insertions=int(out.insertions),
        hits=int(out.hits),
    )


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> WerCounts:
    """Summed counts over (reference, hypothesis) pairs; `.wer` is the corpus WER."""
    total = WerCounts()
    for reference, hypothesis in pairs:
        total += align(reference, hypothesis)
    return total
