"""The labelled results the error analysis reads: each scored utterance with its alignment.

A result is labelled evidence exactly when the WER comparison scores it
(`observations.observe`): a primary, non-forced record of an utterance or request, served
by its own variant (not failed over), that has a label and carries its text. Its alignment
is the word-by-word alignment of the label with the recognised text after the documented
normalisation (`gateway.stats.wer.alignment`), so its counts are the WER counts. A shadow's
result for the same audio is aligned with the same label (`shadow_results`).

Only labelled results are aligned, so the cost grows with the labelled utterances, not with
all outcomes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.outcomes.labels import Label
from gateway.outcomes.pairing import pair_shadows
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.stats.wer import Alignment, alignment


@dataclass(frozen=True, slots=True)
class LabelledResult:
    """One scored utterance of one variant."""

    record: OutcomeRecord
    reference: str  # the label's text, as labelled
    alignment: Alignment

    @property
    def variant(self) -> str:
        assert self.record.variant is not None  # a scored record has its variant
        return self.record.variant


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """A shadow's result for the audio of a labelled primary result, aligned alike."""

    primary: LabelledResult
    shadow: OutcomeRecord
    alignment: Alignment


def is_scored(record: OutcomeRecord) -> bool:
    """Whether a record is labelled evidence once it has a label (the module's doc)."""
    return (
        record.role is Role.PRIMARY
        and not record.forced
        and record.failover_from is None
        and record.kind is not Kind.SESSION_FAILURE
        and record.variant is not None
        and record.text is not None
    )


def labelled_results(
    records: Iterable[OutcomeRecord], labels: Mapping[str, Label]
) -> list[LabelledResult]:
    """Every scored utterance with its alignment, in the records' order."""
    found: list[LabelledResult] = []
    for record in records:
        label = labels.get(record.record_id)
        if label is None or not is_scored(record):
            continue
        assert record.text is not None
        found.append(LabelledResult(record, label.text, alignment(label.text, record.text)))
    return found


def shadow_results(
    records: Iterable[OutcomeRecord], labels: Mapping[str, Label]
) -> list[ShadowResult]:
    """Each shadow result whose primary is a scored, labelled utterance, aligned with the
    primary's label."""
    found: list[ShadowResult] = []
    for primary, shadow in pair_shadows(list(records)):
        label = labels.get(primary.record_id)
        if label is None or not is_scored(primary) or shadow.text is None:
            continue
        assert primary.text is not None
        ours = LabelledResult(primary, label.text, alignment(label.text, primary.text))
        found.append(ShadowResult(ours, shadow, alignment(label.text, shadow.text)))
    return found
