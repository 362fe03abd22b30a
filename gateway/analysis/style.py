"""Style versus substance: how much of each variant's WER is formatting, not recognition.

Every labelled result is scored at up to three levels, each aligning the label with the
recognised text after turning both into words alike:

* raw (`raw_words`): lower case, split on whitespace, and from each token the
  punctuation at its two ends stripped (characters of the Unicode categories P*; a token
  left empty is dropped). Nothing else: "$200" stays "$200", "e-mail" stays "e-mail",
  "don't" and "u.s" keep their inner marks. This is what a WER without normalisation counts.
* normalised: the documented normalisation of the WER (`gateway.text.normalize`), so the
  counts are the headline WER's.
* synonyms: the normalised words with a synonyms file (`load_synonyms`) applied to the
  reference and the hypothesis alike, when the experiment has one.

The errors that disappear from raw to normalised are style (case, punctuation, digits
against words); what remains at the last level is substance. Per challenger the section
gives the WER difference to the control at each level; the substance difference is the one
at the last level and the style part is the raw difference minus it, so two variants that
recognise the same words and format them differently differ in style only. Each level has
its own reference words ("$200" is one raw word, three normalised ones), so a rate is that
level's errors over that level's reference words; the shares of errors a level removes are
counts over the raw errors, and negative where the level adds errors. Intervals are the
headline WER's: the cluster bootstrap over units at the report's confidence, for each
level's WER and difference (the style part, a difference of two differences, has none).

A synonyms file is UTF-8, one group of equivalent forms a line, separated by "=", the first
the canonical form (`okay = ok = o k`); "#" starts a comment. Each form is normalised like a
transcript, so it may have several words; in a text the longest form that matches at a
position is replaced first. A line without "=", an empty form, a form the normalisation
turns into no words or into another form of its own group, and a form in two groups are
ConfigErrors naming the file and the line.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from gateway.analysis.labelled import LabelledResult
from gateway.analysis.model import AnalysisOptions
from gateway.analysis.observations import wer_interval
from gateway.analysis.report_fields import (
    as_html,
    as_interval,
    as_list,
    as_map,
    as_number,
    as_text,
)
from gateway.analysis.terms import read_text_file
from gateway.analysis.text_tables import text_table
from gateway.errors import ConfigError
from gateway.stats.bootstrap import ratio_difference_interval
from gateway.stats.wer import WerCounts, alignment
from gateway.text.normalize import normalize_words

Level = Literal["raw", "normalised", "synonyms"]
LEVELS: Final[tuple[Level, ...]] = ("raw", "normalised", "synonyms")
LEVEL_NAMES: Final[Mapping[str, str]] = {
    "raw": "raw",
    "normalised": "normalised",
    "synonyms": "+ synonyms",
}
_NONE: Final = "–"


def raw_words(text: str) -> list[str]:
    """The words of `text` before normalisation (module doc): lower case, whitespace split,
    punctuation stripped from each token's ends, empty tokens dropped."""
    words = (_strip_punctuation(token) for token in text.lower().split())
    return [word for word in words if word]


def _strip_punctuation(token: str) -> str:
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(token[end - 1]).startswith("P"):
        end -= 1
    return token[start:end]


# -- synonyms --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Synonyms:
    """Equivalent forms: each form (normalised words) -> its group's canonical form."""

    source: str  # the file's name, for the report
    forms: Mapping[tuple[str, ...], tuple[str, ...]]
    groups: int

    def apply(self, words: Sequence[str]) -> list[str]:
        """The words with every form replaced by its canonical form, left to right, the
        longest form matching at a position first."""
        longest = max((len(form) for form in self.forms), default=0)
        out: list[str] = []
        index = 0
        while index < len(words):
            for size in range(min(longest, len(words) - index), 0, -1):
                canonical = self.forms.get(tuple(words[index : index + size]))
                if canonical is not None:
                    out.extend(canonical)
                    index += size
                    break
            else:
                out.append(words[index])
                index += 1
        return out

    def words(self, text: str) -> list[str]:
        """The normalised words of `text` with the synonyms applied."""
        return self.apply(normalize_words(text))


def load_synonyms(path: Path) -> Synonyms:
    """Read a synonyms file (module doc); ConfigError naming the file and line."""
    text = read_text_file(path, "synonyms file")
    return parse_synonyms(text, str(path), name=path.name)


def parse_synonyms(text: str, where: str, *, name: str | None = None) -> Synonyms:
    """The synonyms of a file's text; `where` names the file in errors, `name` in the
    report (default: `where`)."""
    forms: dict[tuple[str, ...], tuple[str, ...]] = {}
    lines_of: dict[tuple[str, ...], int] = {}
    groups = 0
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        at = f"{where}:{number}"
        group = _group(content, at)
        for form in group:
            if form in lines_of:
                raise ConfigError(
                    at,
                    f"the form {' '.join(form)!r} is already in the group of line "
                    f"{lines_of[form]}; a form belongs to one group",
                )
        for form in group:
            forms[form] = group[0]
            lines_of[form] = number
        groups += 1
    if not groups:
        raise ConfigError(where, "holds no synonym groups (one a line: okay = ok)")
    return Synonyms(source=name or where, forms=forms, groups=groups)


def _group(content: str, at: str) -> list[tuple[str, ...]]:
    """The distinct normalised forms of one line, the canonical first."""
    if "=" not in content:
        raise ConfigError(at, f"{content!r} has no '='; a line is a group such as 'okay = ok'")
    group: list[tuple[str, ...]] = []
    for position, raw in enumerate(content.split("="), start=1):
        written = raw.strip()
        if not written:
            raise ConfigError(at, f"form {position} is empty; write forms between the '=' signs")
        form = tuple(normalize_words(written))
        if not form:
            raise ConfigError(
                at,
                f"the form {written!r} has no words after the documented normalisation, which "
                "drops symbols and already reads '5%' as 'five percent' and '$5' as 'five "
                "dollars'",
            )
        if form in group:
            raise ConfigError(
                at,
                f"the form {written!r} is {' '.join(form)!r} after the documented "
                "normalisation, like an earlier form of the line: they are equal already",
            )
        group.append(form)
    return group


# -- the section -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scored:
    """One result's counts at each level, and its unit."""

    unit: str
    counts: Mapping[Level, WerCounts]


def style_section(
    results: Sequence[LabelledResult],
    *,
    control: str,
    variants: Sequence[str],
    synonyms: Synonyms | None = None,
    options: AnalysisOptions | None = None,
) -> dict[str, Any]:
    """Per variant the WER at each level (module doc) with its unit-clustered interval and
    the share of its raw errors each level removes; per challenger the difference to the
    control at each level and its style and substance parts."""
    options = options or AnalysisOptions()
    levels: tuple[Level, ...] = LEVELS if synonyms is not None else LEVELS[:2]
    scored: dict[str, list[_Scored]] = {name: [] for name in variants}
    for result in results:
        if result.variant in scored:
            scored[result.variant].append(_score(result, synonyms))
    return {
        "levels": list(levels),
        "substance_level": levels[-1],
        "synonyms": None
        if synonyms is None
        else {"file": synonyms.source, "groups": synonyms.groups, "forms": len(synonyms.forms)},
        "confidence": options.confidence,
        "variants": [_variant(name, scored[name], levels, options) for name in variants],
        "comparisons": [
            _comparison(control, name, scored[control], scored[name], levels, options)
            for name in variants
            if name != control and control in scored and scored[control] and scored[name]
        ],
    }


def _score(result: LabelledResult, synonyms: Synonyms | None) -> _Scored:
    text = result.record.text or ""
    counts: dict[Level, WerCounts] = {
        "raw": alignment(result.reference, text, normalise=raw_words).counts,
        "normalised": result.alignment.counts,
    }
    if synonyms is not None:
        counts["synonyms"] = alignment(result.reference, text, normalise=synonyms.words).counts
    return _Scored(result.record.unit, counts)


def _unit_sums(scored: Sequence[_Scored], level: Level) -> tuple[list[float], list[float]]:
    """Per unit, in order of first appearance: errors and reference words at the level."""
    totals: dict[str, tuple[int, int]] = {}
    for item in scored:
        errors, words = totals.get(item.unit, (0, 0))
        counts = item.counts[level]
        totals[item.unit] = (errors + counts.errors, words + counts.reference_words)
    return [float(e) for e, _ in totals.values()], [float(w) for _, w in totals.values()]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _level(scored: Sequence[_Scored], level: Level, options: AnalysisOptions) -> dict[str, Any]:
    total = sum((item.counts[level] for item in scored), start=WerCounts())
    errors, words = _unit_sums(scored, level)
    ci = wer_interval(errors, words, options)  # as the headline WER's
    return {
        "wer": total.wer,
        "ci": ci,
        "errors": total.errors,
        "substitutions": total.substitutions,
        "deletions": total.deletions,
        "insertions": total.insertions,
        "reference_words": total.reference_words,
    }


def _variant(
    name: str, scored: Sequence[_Scored], levels: Sequence[Level], options: AnalysisOptions
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "utterances": len(scored),
        "units": len({item.unit for item in scored}),
    }
    for level in LEVELS:
        entry[level] = _level(scored, level, options) if scored and level in levels else None
    raw_errors = entry["raw"]["errors"] if scored else 0
    removed: dict[str, float | None] = {}
    # Shares of the raw errors: negative where a level adds errors (a number whose words
    # outnumber its digits, "$250" -> "two hundred fifty dollars", misrecognised).
    for earlier, level in itertools.pairwise(levels):
        removed[level] = (
            (entry[earlier]["errors"] - entry[level]["errors"]) / raw_errors if raw_errors else None
        )
    entry["removed_by_normalisation"] = removed.get("normalised")
    entry["removed_by_synonyms"] = removed.get("synonyms")
    return entry


def _difference(
    control: Sequence[_Scored],
    challenger: Sequence[_Scored],
    level: Level,
    options: AnalysisOptions,
) -> dict[str, Any]:
    errors_a, words_a = _unit_sums(control, level)
    errors_b, words_b = _unit_sums(challenger, level)
    if sum(words_a) == 0 or sum(words_b) == 0:
        return {"difference": None, "ci": None}
    difference = sum(errors_b) / sum(words_b) - sum(errors_a) / sum(words_a)
    ci: list[float | None] | None = None
    if len(errors_a) > 1 and len(errors_b) > 1:
        estimate = ratio_difference_interval(
            errors_a,
            words_a,
            errors_b,
            words_b,
            confidence=options.confidence,
            resamples=options.resamples,
            seed=options.seed,
        )
        ci = [_finite(estimate.low), _finite(estimate.high)]
    return {"difference": difference, "ci": ci}


def _comparison(
    control: str,
    name: str,
    control_scored: Sequence[_Scored],
    scored: Sequence[_Scored],
    levels: Sequence[Level],
    options: AnalysisOptions,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"variant": name, "control": control}
    for level in LEVELS:
        entry[level] = (
            _difference(control_scored, scored, level, options) if level in levels else None
        )
    raw = entry["raw"]["difference"]
    substance = entry[levels[-1]]["difference"]
    entry["substance_difference"] = substance
    entry["style_difference"] = None if raw is None or substance is None else raw - substance
    return entry


# -- renderers -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return _NONE if value is None else f"{value * 100:.1f}%"


def _pp(value: float | None) -> str:
    return _NONE if value is None else f"{value * 100:+.1f} pp"


def _bound(value: float | None, signed: bool) -> str:
    if value is None:
        return "-inf" if signed else "0"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def _with_ci(entry: object, key: str, signed: bool) -> str:
    """ "12.3% [10.1, 14.6]" (a rate) or "+3.0 pp [+1.2, +4.9]" (a difference)."""
    found = as_map(entry)
    value = as_number(found.get(key))
    if value is None:
        return _NONE
    shown = _pp(value) if signed else _pct(value)
    interval = as_interval(found.get("ci"))
    if interval is None:
        return shown
    high = "inf" if interval[1] is None else _bound(interval[1], signed)
    return f"{shown} [{_bound(interval[0], signed)}, {high}]"


def _shown_levels(section: Mapping[str, Any]) -> list[str]:
    return [level for level in as_list(section.get("levels")) if level in LEVEL_NAMES]


def _groups(count: float) -> str:
    return "1 group" if count == 1 else f"{count:.0f} groups"


def _lead(section: Mapping[str, Any]) -> str:
    found = as_map(section.get("synonyms"))
    synonyms = (
        f", then with the synonyms of {as_text(found.get('file'))} "
        f"({_groups(as_number(found.get('groups')) or 0)})"
        if found
        else " (no synonyms file)"
    )
    return (
        "WER before normalisation (raw: lower case, edge punctuation stripped), after the "
        f"documented normalisation{synonyms}; style = raw difference - substance difference"
    )


def _variant_cells(variant: Mapping[str, Any], levels: Sequence[str]) -> list[str]:
    cells = [as_text(variant.get("name")), f"{as_number(variant.get('utterances')) or 0:.0f}"]
    cells += [_with_ci(variant.get(level), "wer", signed=False) for level in levels]
    cells.append(_pct(as_number(variant.get("removed_by_normalisation"))))
    if "synonyms" in levels:
        cells.append(_pct(as_number(variant.get("removed_by_synonyms"))))
    return cells


def _comparison_cells(comparison: Mapping[str, Any], levels: Sequence[str]) -> list[str]:
    cells = [f"{as_text(comparison.get('variant'))} - {as_text(comparison.get('control'))}"]
    cells += [_with_ci(comparison.get(level), "difference", signed=True) for level in levels]
    cells += [
        _pp(as_number(comparison.get("substance_difference"))),
        _pp(as_number(comparison.get("style_difference"))),
    ]
    return cells


def _headers(levels: Sequence[str]) -> tuple[list[str], list[str]]:
    names = [f"{LEVEL_NAMES[level]} WER" for level in levels]
    variant = ["variant", "utterances", *names, "removed by normalisation"]
    if "synonyms" in levels:
        variant.append("by synonyms")
    differences = [f"{LEVEL_NAMES[level]}" for level in levels]
    return variant, ["difference", *differences, "substance", "style"]


def style_text(section: Mapping[str, Any] | None) -> list[str]:
    """Terminal lines: each variant's WER per level, then each challenger's differences."""
    found = as_map(section)
    variants = [as_map(v) for v in as_list(found.get("variants"))]
    if not variants:
        return []
    levels = _shown_levels(found)
    variant_header, difference_header = _headers(levels)
    lines = [f"Style versus substance: {_lead(found)}"]
    lines += text_table(variant_header, [_variant_cells(v, levels) for v in variants])
    comparisons = [as_map(c) for c in as_list(found.get("comparisons"))]
    if comparisons:
        rows = [_comparison_cells(c, levels) for c in comparisons]
        lines += ["", *text_table(difference_header, rows)]
    return lines


def style_html(section: Mapping[str, Any] | None) -> str:
    """An HTML fragment: the two tables of `style_text`, every value escaped."""
    found = as_map(section)
    variants = [as_map(v) for v in as_list(found.get("variants"))]
    if not variants:
        return ""
    levels = _shown_levels(found)
    variant_header, difference_header = _headers(levels)
    parts = [
        '<section class="phase" data-section="style">',
        "<h3>Style versus substance</h3>",
        f'<p class="meta">{as_html(_lead(found))}.</p>',
        _html_table(
            "WER per level of normalisation",
            variant_header,
            [(as_text(v.get("name")), _variant_cells(v, levels)) for v in variants],
            "style-variants",
        ),
    ]
    comparisons = [as_map(c) for c in as_list(found.get("comparisons"))]
    if comparisons:
        parts.append(
            _html_table(
                "Difference to the control per level: substance and style",
                difference_header,
                [(as_text(c.get("variant")), _comparison_cells(c, levels)) for c in comparisons],
                "style-differences",
            )
        )
    parts.append("</section>")
    return "\n".join(parts)


def _html_table(
    caption: str, header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], kind: str
) -> str:
    head = "".join(f"<th>{as_html(h)}</th>" for h in header)
    body = "".join(
        f'<tr data-variant="{as_html(name)}">'
        + "".join(f"<td>{as_html(cell)}</td>" for cell in cells)
        + "</tr>"
        for name, cells in rows
    )
    return (
        f'<div class="table-wrap"><table data-table="{kind}"><caption>{as_html(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )
