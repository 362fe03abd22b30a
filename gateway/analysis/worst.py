"""The worst utterances: per variant the labelled utterances with most errors, as word diffs.

`worst_section` lists, per variant, the `top` utterances with at least one error, most
errors first (ties: the higher error rate, then the record id), each with its aligned
words after the documented normalisation: [kind, reference word, recognised word] with the
kinds of `gateway.stats.wer.Op` ("equal", "substitute", "delete", "insert"; the missing
side null). For shadow pairs (the same audio recognised by the served variant and a
shadow, aligned with the same label) it lists the `top` pairs whose error counts differ
most, both alignments side by side. The gateway keeps no audio, so every item's `audio` is
null.

The renderers show the alignments as compact diffs: in the terminal `[said->recognised]`,
`-deleted`, `+inserted`; in HTML the same marks in spans of the classes `op-equal`,
`op-sub`, `op-del` and `op-ins` with a title saying what happened (the page's stylesheet
colours them; without it the marks still tell the kinds apart). Every
string from the report is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.analysis.labelled import LabelledResult, ShadowResult
from gateway.analysis.report_fields import as_html, as_list, as_map, as_number, as_text
from gateway.stats.wer import Alignment

DEFAULT_TOP: Final = 10
# op kind -> CSS class; a class never comes from the report itself.
OP_CLASSES: Final[Mapping[str, str]] = {
    "equal": "op-equal",
    "substitute": "op-sub",
    "delete": "op-del",
    "insert": "op-ins",
}
_NONE: Final = "–"


def worst_section(
    results: Sequence[LabelledResult],
    shadows: Sequence[ShadowResult],
    *,
    variants: Sequence[str],
    top: int = DEFAULT_TOP,
) -> dict[str, Any]:
    """The `top` worst utterances per variant and shadow pairs (module doc)."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    by_variant: dict[str, list[LabelledResult]] = {name: [] for name in variants}
    for result in results:
        if result.variant in by_variant:
            by_variant[result.variant].append(result)
    return {
        "top": top,
        "variants": [
            _variant(name, by_variant[name], top) for name in variants if name in by_variant
        ],
        "shadow_pairs": _shadow_pairs(shadows, top),
    }


def _ops(found: Alignment) -> list[list[str | None]]:
    return [[op.kind, op.reference, op.hypothesis] for op in found.ops]


def _counts(found: Alignment) -> dict[str, Any]:
    counts = found.counts
    return {
        "errors": counts.errors,
        "substitutions": counts.substitutions,
        "deletions": counts.deletions,
        "insertions": counts.insertions,
        "reference_words": counts.reference_words,
        "wer": counts.wer,
    }


def _variant(name: str, results: Sequence[LabelledResult], top: int) -> dict[str, Any]:
    wrong = [r for r in results if r.alignment.counts.errors]
    wrong.sort(
        key=lambda r: (-r.alignment.counts.errors, -r.alignment.counts.wer, r.record.record_id)
    )
    items = [
        {
            "record_id": r.record.record_id,
            "unit": r.record.unit,
            "timestamp": r.record.timestamp,
            **_counts(r.alignment),
            "reference": list(r.alignment.reference),
            "label": r.reference,
            "text": r.record.text,
            "ops": _ops(r.alignment),
            "audio": None,
        }
        for r in wrong[:top]
    ]
    return {"name": name, "utterances": len(results), "with_errors": len(wrong), "items": items}


def _shadow_pairs(shadows: Sequence[ShadowResult], top: int) -> list[dict[str, Any]]:
    def difference(pair: ShadowResult) -> int:
        return pair.alignment.counts.errors - pair.primary.alignment.counts.errors

    differing = [pair for pair in shadows if difference(pair)]
    differing.sort(key=lambda p: (-abs(difference(p)), p.primary.record.record_id))
    pairs: list[dict[str, Any]] = []
    for pair in differing[:top]:
        primary = pair.primary
        pairs.append(
            {
                "record_id": primary.record.record_id,
                "unit": primary.record.unit,
                "timestamp": primary.record.timestamp,
                "reference": list(primary.alignment.reference),
                "label": primary.reference,
                "difference": difference(pair),
                "served": {
                    "variant": primary.variant,
                    "record_id": primary.record.record_id,
                    **_counts(primary.alignment),
                    "text": primary.record.text,
                    "ops": _ops(primary.alignment),
                },
                "shadow": {
                    "variant": pair.shadow.variant,
                    "record_id": pair.shadow.record_id,
                    **_counts(pair.alignment),
                    "text": pair.shadow.text,
                    "ops": _ops(pair.alignment),
                },
                "audio": None,
            }
        )
    return pairs


# -- reading the section back -----------------------------------------------------------------


def _op(value: object) -> tuple[str, str, str] | None:
    """(kind, reference, hypothesis) of one op of a report; None if it is not one."""
    found = as_list(value)
    if len(found) != 3 or as_text(found[0]) not in OP_CLASSES:
        return None
    return as_text(found[0]), as_text(found[1]), as_text(found[2])


def _read_ops(value: object) -> list[tuple[str, str, str]]:
    return [op for op in (_op(item) for item in as_list(value)) if op is not None]


def _count(entry: Mapping[str, Any], key: str) -> str:
    value = as_number(entry.get(key))
    return _NONE if value is None else f"{value:.0f}"


def _errors(entry: Mapping[str, Any]) -> str:
    value = as_number(entry.get("errors"))
    return f"{_NONE} errors" if value is None else f"{value:.0f} error{'' if value == 1 else 's'}"


def _rate(entry: Mapping[str, Any]) -> str:
    value = as_number(entry.get("wer"))
    return _NONE if value is None else f"{value * 100:.0f}%"


def _nothing(variant: Mapping[str, Any]) -> str:
    """Why a variant lists no utterance."""
    utterances = as_number(variant.get("utterances"))
    if not utterances:
        return "no labelled utterance"
    return f"none of its {utterances:.0f} labelled utterances has an error"


# -- text -------------------------------------------------------------------------------------


def diff_text(ops: Sequence[tuple[str, str, str]]) -> str:
    """A compact diff: equal words as they are, `[said->recognised]`, `-deleted`, `+inserted`."""
    words = []
    for kind, reference, hypothesis in ops:
        if kind == "equal":
            words.append(reference)
        elif kind == "substitute":
            words.append(f"[{reference}->{hypothesis}]")
        elif kind == "delete":
            words.append(f"-{reference}")
        else:
            words.append(f"+{hypothesis}")
    return " ".join(words)


def worst_text(section: Mapping[str, Any] | None) -> list[str]:
    """Terminal lines: each variant's worst utterances, then the shadow pairs."""
    found = as_map(section)
    variants = [as_map(v) for v in as_list(found.get("variants"))]
    pairs = [as_map(p) for p in as_list(found.get("shadow_pairs"))]
    if not variants and not pairs:
        return []
    lines = ["Worst utterances (aligned words: [said->recognised], -deleted, +inserted)"]
    for variant in variants:
        items = [as_map(item) for item in as_list(variant.get("items"))]
        name = as_text(variant.get("name"))
        if not items:
            lines.append(f"  {name}: {_nothing(variant)}")
            continue
        lines.append(
            f"  {name}: the {len(items)} worst of {_count(variant, 'with_errors')} utterances "
            f"with errors (of {_count(variant, 'utterances')} labelled)"
        )
        for item in items:
            lines.append(
                f"    {_errors(item)} ({_rate(item)})  "
                f"record {as_text(item.get('record_id'))}  unit {as_text(item.get('unit'))}"
            )
            lines.append(f"      {diff_text(_read_ops(item.get('ops')))}")
    if pairs:
        lines += ["", "Shadow pairs with the largest error difference (same audio, same label)"]
    for pair in pairs:
        served, shadow = as_map(pair.get("served")), as_map(pair.get("shadow"))
        lines.append(
            f"  record {as_text(pair.get('record_id'))}  unit {as_text(pair.get('unit'))}: "
            f"{as_text(served.get('variant'))} served {_errors(served)}, "
            f"{as_text(shadow.get('variant'))} shadow {_errors(shadow)}"
        )
        for side in (served, shadow):
            lines.append(
                f"    {as_text(side.get('variant'))}: {diff_text(_read_ops(side.get('ops')))}"
            )
    return lines


# -- HTML -------------------------------------------------------------------------------------


def _span(kind: str, reference: str, hypothesis: str) -> str:
    css = OP_CLASSES[kind]
    if kind == "equal":
        title, shown = "recognised as said", reference
    elif kind == "substitute":
        title, shown = (
            f"said {reference!r}, recognised {hypothesis!r}",
            f"{reference} → {hypothesis}",
        )
    elif kind == "delete":
        title, shown = f"said {reference!r}, not recognised", f"-{reference}"
    else:
        title, shown = f"recognised {hypothesis!r}, not said", f"+{hypothesis}"
    return f'<span class="{css}" title="{as_html(title)}">{as_html(shown)}</span>'


def diff_html(ops: Sequence[tuple[str, str, str]]) -> str:
    """The ops as spans (module doc), in a `<span class="ops">`."""
    return '<span class="ops">' + " ".join(_span(*op) for op in ops) + "</span>"


def _texts(entry: Mapping[str, Any]) -> str:
    """The recognised text as recorded, under the diff (formatting the diff normalised)."""
    text = entry.get("text")
    return "" if text is None else f"<small>recognised: {as_html(text)}</small>"


def _variant_html(variant: Mapping[str, Any]) -> str:
    name = as_text(variant.get("name"))
    items = [as_map(item) for item in as_list(variant.get("items"))]
    caption = f"{name}: the {len(items)} utterances with most errors"
    if not items:
        return (
            f'<p class="no-data" data-variant="{as_html(name)}">'
            f"{as_html(name)}: {as_html(_nothing(variant))}.</p>"
        )
    rows = []
    for item in items:
        label = item.get("label")
        said = "" if label is None else f"<small>said: {as_html(label)}</small>"
        rows.append(
            f'<tr data-record="{as_html(item.get("record_id"))}">'
            f"<td>{as_html(_count(item, 'errors'))}<small>{as_html(_rate(item))}</small></td>"
            f'<td class="diff">{diff_html(_read_ops(item.get("ops")))}{said}{_texts(item)}</td>'
            f"<td><code>{as_html(item.get('record_id'))}</code>"
            f"<small>unit {as_html(item.get('unit'))}</small>"
            f"<small>{as_html(item.get('timestamp'))}</small></td></tr>"
        )
    return _table(
        caption,
        ["Errors", "Aligned words", "Record"],
        rows,
        "worst",
        f' data-variant="{as_html(name)}"',
    )


def _side(entry: Mapping[str, Any], role: str) -> str:
    return (
        f'<td class="diff" data-variant="{as_html(entry.get("variant"))}">'
        f"<small>{as_html(entry.get('variant'))} ({role}): {as_html(_errors(entry))}"
        f"</small>{diff_html(_read_ops(entry.get('ops')))}{_texts(entry)}</td>"
    )


def _pairs_html(pairs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for pair in pairs:
        served, shadow = as_map(pair.get("served")), as_map(pair.get("shadow"))
        reference = " ".join(as_text(word) for word in as_list(pair.get("reference")))
        rows.append(
            f'<tr data-record="{as_html(pair.get("record_id"))}">'
            f"<td><code>{as_html(pair.get('record_id'))}</code>"
            f"<small>unit {as_html(pair.get('unit'))}</small></td>"
            f'<td class="diff">{as_html(reference)}</td>'
            f"{_side(served, 'served')}{_side(shadow, 'shadow')}</tr>"
        )
    return _table(
        "Shadow pairs: the same audio, served and shadowed, with the largest error difference",
        ["Record", "Said (normalised)", "Served", "Shadow"],
        rows,
        "shadow-pairs",
    )


def _table(
    caption: str, header: Sequence[str], rows: Sequence[str], kind: str, extra: str = ""
) -> str:
    head = "".join(f"<th>{as_html(h)}</th>" for h in header)
    return (
        f'<div class="table-wrap"><table data-table="{kind}"{extra}>'
        f"<caption>{as_html(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def worst_html(section: Mapping[str, Any] | None) -> str:
    """An HTML fragment: a table per variant and one of the shadow pairs side by side."""
    found = as_map(section)
    variants = [as_map(v) for v in as_list(found.get("variants"))]
    pairs = [as_map(p) for p in as_list(found.get("shadow_pairs"))]
    if not variants and not pairs:
        return ""
    parts = [
        '<section class="phase" data-section="worst">',
        "<h3>Worst utterances</h3>",
        '<p class="meta">Each variant\'s labelled utterances with most errors, aligned word by '
        "word after the documented normalisation: substituted words show said → recognised, "
        "deleted words were said and not recognised, inserted words recognised and not said. "
        "The gateway keeps no audio.</p>",
        *(_variant_html(variant) for variant in variants),
    ]
    if pairs:
        parts.append(_pairs_html(pairs))
    parts.append("</section>")
    return "\n".join(parts)
