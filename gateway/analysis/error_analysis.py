"""The report's `errors` section: where each model errs, for whom, and whether it is style.

One phase is analysed (the selected one, else the current one, else the newest phase with
labelled results), from its labelled results (`labelled.labelled_results`: exactly the
utterances the WER comparison scores) and, for the outcome rates by segment, its records:

* `words`: the most frequent substitutions, deletions and insertions per variant, and the
  errors each challenger fixed and introduced (`word_errors`);
* `terms`: the domain terms' recall and precision, with a term list (`terms`);
* `segments`: WER and outcome rates by locale, client, mode, duration and confidence, with
  the headline's unit-clustered intervals and call-outs (`segments`);
* `style`: WER before and after the normalisation (and synonyms): style versus substance
  (`style`);
* `worst`: the utterances with most errors as aligned word diffs, and shadow pairs side by
  side (`worst`).

docs/error-analysis.md describes each part; the section is null without labelled results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.analysis.labelled import LabelledResult, labelled_results, shadow_results
from gateway.analysis.model import AnalysisOptions, Json
from gateway.analysis.report_fields import as_html, as_map, as_number
from gateway.analysis.segments import segments_html, segments_section, segments_text
from gateway.analysis.style import Synonyms, style_html, style_section, style_text
from gateway.analysis.terms import TermList, terms_html, terms_section, terms_text
from gateway.analysis.unit_sample import UnitSample
from gateway.analysis.word_errors import words_html, words_section, words_text
from gateway.analysis.worst import worst_html, worst_section, worst_text
from gateway.outcomes.labels import Label
from gateway.outcomes.record import OutcomeRecord


@dataclass(frozen=True, slots=True)
class ErrorInputs:
    """What the error analysis needs besides records and labels (docs/error-analysis.md)."""

    terms: TermList | None = None
    synonyms: Synonyms | None = None
    top: int = 20  # most error keys per list
    worst: int = 10  # worst utterances per variant, and shadow pairs


def errors_section(
    records: Sequence[OutcomeRecord],
    labels: Mapping[str, Label],
    *,
    phase: str | None,
    control: str | None,
    options: AnalysisOptions,
    inputs: ErrorInputs | None = None,
    selected: bool = False,
    sample: UnitSample | None = None,
) -> Json | None:
    """The `errors` section of `phase`; None: the newest phase with labelled results, as
    also when `phase` has none, unless the caller `selected` it (then the section is null:
    it never describes another phase than the one asked for). `sample`: the records are
    those of a sample of units (`unit_sample`), said in the section."""
    inputs = inputs or ErrorInputs()
    results = labelled_results(records, labels)
    if phase is None or not any(r.record.phase == phase for r in results):
        if selected:
            return None
        phase = _newest_phase(results)
    if phase is None or control is None:
        return None
    mine = [r for r in results if r.record.phase == phase]
    names = sorted({r.variant for r in mine} | {control})
    variants = [control, *[name for name in names if name != control]]
    phase_records = [record for record in records if record.phase == phase]
    shadows = shadow_results(phase_records, labels)
    return {
        "phase": phase,
        "control": control,
        "sample": None
        if sample is None
        else {
            "unit_share": sample.share,
            "labelled_in_window": sample.labelled,
            "labelled_in_sample": len(mine),
        },
        "words": words_section(mine, control=control, variants=variants, top=inputs.top),
        "terms": None
        if inputs.terms is None
        else terms_section(
            mine, inputs.terms, control=control, variants=variants, alpha=options.alpha
        ),
        "segments": segments_section(
            mine,
            phase_records,
            control=control,
            variants=variants,
            alpha=options.alpha,
            resamples=options.resamples,
            seed=options.seed,
        ),
        "style": style_section(
            mine, control=control, variants=variants, synonyms=inputs.synonyms, options=options
        ),
        "worst": worst_section(mine, shadows, variants=variants, top=inputs.worst),
    }


def _newest_phase(results: Iterable[LabelledResult]) -> str | None:
    newest: dict[str, str] = {}
    for result in results:
        if result.record.phase is not None:
            at = newest.get(result.record.phase, "")
            newest[result.record.phase] = max(at, result.record.timestamp)
    return max(newest, key=lambda phase: newest[phase]) if newest else None


def errors_text(section: Mapping[str, Any] | None) -> list[str]:
    """Terminal lines: a heading, then each part's own lines."""
    found = as_map(section)
    if not found:
        return []
    lines = [f"Error analysis (phase {found.get('phase')}; docs/error-analysis.md)"]
    note = sample_note(found.get("sample"))
    if note:
        lines.append(note)
    for part in (
        words_text(found.get("words")),
        terms_text(found.get("terms")),
        segments_text(found.get("segments")),
        style_text(found.get("style")),
        worst_text(found.get("worst")),
    ):
        if part:
            lines += ["", *part]
    return lines


def sample_note(sample: object) -> str:
    """One line on the sample of units the section was made of; empty when there is none."""
    found = as_map(sample)
    if not found:
        return ""
    share = as_number(found.get("unit_share")) or 0.0
    used = as_number(found.get("labelled_in_sample")) or 0.0
    window = as_number(found.get("labelled_in_window")) or 0.0
    return (
        f"A sample of units ({share:.1%} of them): {used:,.0f} labelled utterances of this "
        f"phase, of {window:,.0f} in the window."
    )


def errors_html(section: Mapping[str, Any] | None) -> str:
    """An HTML section: a heading, then each part's fragment."""
    found = as_map(section)
    if not found:
        return ""
    parts = [
        '<section class="errors" data-section="errors">',
        f"<h2>Where the errors are <small>phase {as_html(found.get('phase'))}</small></h2>",
        f'<p class="note">{as_html(sample_note(found.get("sample")))}</p>'
        if found.get("sample")
        else "",
        words_html(found.get("words")),
        terms_html(found.get("terms")),
        segments_html(found.get("segments")),
        style_html(found.get("style")),
        worst_html(found.get("worst")),
        "</section>",
    ]
    return "\n".join(part for part in parts if part)
