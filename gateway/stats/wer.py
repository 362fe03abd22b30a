"""Word error rate: align a reference with a hypothesis after the documented normalisation.

Both texts go through `gateway.text.normalize.normalize_words`, so "$200" and "two hundred
dollars" are the same words, and are then aligned by jiwer's minimum edit distance. Counts
from many utterances add up (`WerCounts.__add__`), and the corpus WER is the total errors
over the total reference words, not a mean of per-utterance rates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

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
    return align_words(normalize_words(reference), normalize_words(hypothesis))


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> WerCounts:
    """`align` of texts already normalised into words (one reference, many hypotheses)."""
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


OpKind = Literal["equal", "substitute", "delete", "insert"]


@dataclass(frozen=True, slots=True)
class Op:
    """One word of an alignment: a hit, a substitution (reference word -> recognised word),
    a deleted reference word or an inserted recognised word."""

    kind: OpKind
    reference: str | None  # None for an insertion
    hypothesis: str | None  # None for a deletion


@dataclass(frozen=True, slots=True)
class Alignment:
    """The word-by-word alignment of a reference and a hypothesis, after normalisation."""

    reference: tuple[str, ...]
    hypothesis: tuple[str, ...]
    ops: tuple[Op, ...]

    @property
    def counts(self) -> WerCounts:
        kinds = [op.kind for op in self.ops]
        return WerCounts(
            substitutions=kinds.count("substitute"),
            deletions=kinds.count("delete"),
            insertions=kinds.count("insert"),
            hits=kinds.count("equal"),
        )


def alignment(
    reference: str,
    hypothesis: str,
    normalise: Callable[[str], list[str]] = normalize_words,
) -> Alignment:
    """The word operations of the best alignment (the one `align` counts), in order;
    `normalise` turns a text into words (the documented normalisation by default)."""
    ref = tuple(normalise(reference))
    hyp = tuple(normalise(hypothesis))
    if not ref or not hyp:
        ops = [Op("delete", word, None) for word in ref]
        ops += [Op("insert", None, word) for word in hyp]
        return Alignment(ref, hyp, tuple(ops))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    words: list[Op] = []
    for chunk in out.alignments[0]:
        refs = ref[chunk.ref_start_idx : chunk.ref_end_idx]
        hyps = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "delete":
            words += [Op("delete", word, None) for word in refs]
        elif chunk.type == "insert":
            words += [Op("insert", None, word) for word in hyps]
        else:  # equal and substitute chunks pair their words one to one
            kind: OpKind = "equal" if chunk.type == "equal" else "substitute"
            words += [Op(kind, r, h) for r, h in zip(refs, hyps, strict=True)]
    return Alignment(ref, hyp, tuple(words))


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> WerCounts:
    """Summed counts over (reference, hypothesis) pairs; `.wer` is the corpus WER."""
    total = WerCounts()
    for reference, hypothesis in pairs:
        total += align(reference, hypothesis)
    return total
