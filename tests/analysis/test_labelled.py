"""The error analysis's labelled results are exactly the WER comparison's scored utterances."""

from __future__ import annotations

import dataclasses

from traffic import Traffic

from gateway.analysis.labelled import labelled_results, shadow_results
from gateway.outcomes.record import Role
from gateway.stats.wer import WerCounts


def test_the_labelled_results_add_up_to_the_reports_wer_counts() -> None:
    made = Traffic()
    made.ab(30, base_error=0.3, custom_error=0.1)
    made.utterance("custom", 100, word_error=0.5, forced=True)  # outside the split
    made.utterance("custom", 101, label=False)  # no label: not scored
    made.utterance("custom", 102, text=None, text_sha256="0" * 64)  # no text: unscorable
    made.failure("base", 103, "Error", "upstream_close_1011")
    results = labelled_results(made.records, made.labels)
    report = made.report()
    (phase,) = report["phases"]
    for variant in phase["variants"]:
        name = variant["name"]
        total = sum((r.alignment.counts for r in results if r.variant == name), WerCounts())
        wer = variant["wer"]
        assert (total.substitutions, total.deletions, total.insertions) == (
            wer["substitutions"],
            wer["deletions"],
            wer["insertions"],
        )
    assert len(results) == 60


def test_a_shadow_result_is_aligned_with_its_primarys_label() -> None:
    made = Traffic()
    primary = made.utterance("base", 0, word_error=0.0)
    shadow = dataclasses.replace(
        primary,
        record_id="f" * 32,
        role=Role.SHADOW,
        variant="custom",
        text="uh " + (primary.text or ""),
    )
    made.records.append(shadow)
    (found,) = shadow_results(made.records, made.labels)
    assert found.primary.record is primary
    assert found.shadow.record_id == shadow.record_id
    assert found.alignment.counts.insertions == 1
    assert found.primary.alignment.counts.errors == 0
