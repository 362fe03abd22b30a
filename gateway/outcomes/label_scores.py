"""Label scores: which records a label scores, and their WER counts, computed once per label.

A label names one record, but the same reference transcript also scores what each shadow
recognised from the same audio. `score_targets` picks the records to score: the labelled
record when it has recognised text, and, for a primary utterance or request, its shadow
partners (`gateway.outcomes.pairing`) that have text. A record without text (a failure, or
text kept only as a hash or not at all under the privacy settings) has nothing to score.
`scored` attaches the counts (as `gateway.stats.wer.align` gives them) to a label, with the current
normalisation version. The label stores call these when a label is stored and when
`speech-gateway label rescore` brings old or stale labels up to date; the analysis reads the
counts back with `gateway.outcomes.labels.stored_counts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.outcomes.labels import Label, RecordScore
from gateway.outcomes.pairing import pair_shadows
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.stats.wer import align_words
from gateway.text.normalize import normalize_words

# Records that have shadow partners: the primary's of one session, kind by kind.
SHADOWED_KINDS = frozenset({Kind.UTTERANCE, Kind.REQUEST})

# What a store reads to score labels: record_id -> (the labelled record, the shadow records
# of its session that the store found).
RecordsById = dict[str, tuple[OutcomeRecord, list[OutcomeRecord]]]


def has_shadows(record: OutcomeRecord) -> bool:
    """Whether shadow records of the same audio may score against this record's label."""
    return record.role is Role.PRIMARY and record.kind in SHADOWED_KINDS


def is_shadow_candidate(record: OutcomeRecord) -> bool:
    """Whether this record may be some primary's shadow partner (stores index these)."""
    return record.role is Role.SHADOW and record.kind in SHADOWED_KINDS


def score_targets(
    labelled: OutcomeRecord, session: Iterable[OutcomeRecord] = ()
) -> list[OutcomeRecord]:
    """The records that a label of `labelled` scores: itself, then its shadow partners among
    `session` (the other records of its session; others are ignored), each only if it
    has recognised text."""
    targets = [labelled] if labelled.text is not None else []
    if has_shadows(labelled):
        others = [r for r in session if r.record_id != labelled.record_id]
        for primary, shadow in pair_shadows([labelled, *others]):
            if primary.record_id == labelled.record_id and shadow.text is not None:
                targets.append(shadow)
    return targets


def needs_scores(label: Label, targets: Sequence[OutcomeRecord]) -> bool:
    """Whether `label` must be (re)scored: it has no counts, they were made under other
    normalisation rules, or they miss one of `targets` (say a shadow record that reached
    the store after the label). Counts of the same texts under the same rules never change,
    so a current label that covers every target is left alone, and so are the counts of a
    record the store no longer holds (trimmed by retention)."""
    if not label.scores_current or label.scores is None:
        return True
    scored_ids = {score.record_id for score in label.scores}
    return any(record.record_id not in scored_ids for record in targets)


def scored(label: Label, targets: Sequence[OutcomeRecord]) -> Label:
    """`label` with the counts of each target's text against its text, under the current
    normalisation version."""
    reference = normalize_words(label.text)  # once, for the record and its shadows
    scores = []
    for record in targets:
        assert record.text is not None, "score_targets keeps only records with text"
        counts = align_words(reference, normalize_words(record.text))
        scores.append(RecordScore.of(record.record_id, counts))
    return label.with_scores(scores)


def scored_if_found(label: Label, records: RecordsById) -> Label:
    """`label` with its counts if `records` holds its record; else unchanged (not scored
    yet: the record could not be read, and `label rescore` tries again)."""
    if label.record_id not in records:
        return label
    record, session = records[label.record_id]
    return scored(label, score_targets(record, session))
