"""Where the errors are: each variant's most frequent word errors, what a challenger changed,
and the export of every labelled utterance's alignment.

The report's `errors.words` section (`words_section`) reads the word alignments of the
labelled results (`gateway.analysis.labelled`), so its counts are exactly the WER counts.
An error key is a substitution pair (reference word -> recognised word), a deleted reference
word or an inserted recognised word. Per variant it lists the `top` most frequent keys of
each kind, with their count and share of the variant's errors (S + D + I); ties go to the
alphabetically first key, so the lists are the same on every run.

Per challenger it compares each key's rate per 1,000 reference words with the control's:
rates, not counts, because the arms rarely have the same number of labelled words (a 90/10
split, or a challenger labelled later). A key is "fixed" when the control has it at least
`MIN_COUNT` times and at least `RATIO` times as often per 1,000 words as the challenger,
"introduced" the reverse; both lists are ranked by the change in errors per 1,000 words.
The rule describes; it is no test (a rare key moves by chance), which is why the headline
WER comparison carries the intervals.

`alignment_rows` and `write_alignments` export one row per labelled utterance and variant
(`speech-gateway analyze --alignments FILE`) as JSON lines or CSV, for the team's own tools.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from gateway.analysis.labelled import LabelledResult
from gateway.analysis.report_fields import as_html, as_list, as_map, as_number, as_text
from gateway.analysis.text_tables import text_table
from gateway.errors import ConfigError
from gateway.stats.wer import Op

TOP: Final = 20  # keys per list in the report
TEXT_TOP: Final = 10  # of those, the terminal shows the first ones
MIN_COUNT: Final = 3  # occurrences a changed key needs in the arm where it is more frequent
RATIO: Final = 2.0  # how many times as frequent per 1,000 words that arm must have it
PER_WORDS: Final = 1000
EXPORT_FIELDS: Final = (
    "record_id",
    "variant",
    "phase",
    "unit",
    "reference",
    "hypothesis",
    "substitutions",
    "deletions",
    "insertions",
    "hits",
    "ops",
)
ErrorKind = Literal["substitution", "deletion", "insertion"]
Key = tuple[ErrorKind, str | None, str | None]  # (kind, reference word, recognised word)
_KINDS: Final[tuple[ErrorKind, ...]] = ("substitution", "deletion", "insertion")
_ORDER: Final = {kind: index for index, kind in enumerate(_KINDS)}
_NONE: Final = "–"


def _key(op: Op) -> Key | None:
    if op.kind == "substitute":
        return ("substitution", op.reference, op.hypothesis)
    if op.kind == "delete":
        return ("deletion", op.reference, None)
    if op.kind == "insert":
        return ("insertion", None, op.hypothesis)
    return None


def _tiebreak(key: Key) -> tuple[int, str, str]:
    return _ORDER[key[0]], key[1] or "", key[2] or ""


class _Arm:
    """One variant's error keys and reference words, summed over its labelled results."""

    def __init__(self, results: Iterable[LabelledResult]) -> None:
        self.keys: Counter[Key] = Counter()
        self.utterances = 0
        self.words = 0
        for result in results:
            self.utterances += 1
            self.words += result.alignment.counts.reference_words
            self.keys.update(k for k in map(_key, result.alignment.ops) if k is not None)
        self.errors = sum(self.keys.values())

    def rate(self, key: Key) -> float:
        return PER_WORDS * self.keys[key] / self.words

    def ranked(self, kind: ErrorKind) -> list[tuple[Key, int]]:
        found = [(error, count) for error, count in self.keys.items() if error[0] == kind]
        return sorted(found, key=lambda item: (-item[1], _tiebreak(item[0])))


def _entry(error: Key, count: int, errors: int) -> dict[str, Any]:
    share = count / errors
    kind, reference, hypothesis = error
    if kind == "substitution":
        return {"reference": reference, "hypothesis": hypothesis, "count": count, "share": share}
    word = reference if kind == "deletion" else hypothesis
    return {"word": word, "count": count, "share": share}


def _variant(name: str, arm: _Arm, top: int) -> dict[str, Any]:
    lists = {kind: arm.ranked(kind) for kind in _KINDS}
    return {
        "name": name,
        "utterances": arm.utterances,
        "reference_words": arm.words,
        "errors": arm.errors,
        "distinct": {f"{kind}s": len(lists[kind]) for kind in _KINDS},
        **{
            f"{kind}s": [_entry(key, count, arm.errors) for key, count in lists[kind][:top]]
            for kind in _KINDS
        },
    }


def _change(key: Key, control: _Arm, challenger: _Arm) -> dict[str, Any]:
    before, after = control.rate(key), challenger.rate(key)
    return {
        "kind": key[0],
        "reference": key[1],
        "hypothesis": key[2],
        "control_count": control.keys[key],
        "challenger_count": challenger.keys[key],
        "control_per_1000": before,
        "challenger_per_1000": after,
        "difference_per_1000": after - before,
    }


def _more_frequent(key: Key, more: _Arm, less: _Arm) -> bool:
    return more.keys[key] >= MIN_COUNT and more.rate(key) >= RATIO * less.rate(key)


def _changes(name: str, control: _Arm, challenger: _Arm, top: int) -> dict[str, Any]:
    found: dict[str, Any] = {"challenger": name, "fixed": [], "introduced": [], "note": None}
    empty = [arm for arm in (control, challenger) if arm.words == 0]
    if empty:
        # Rates per reference word need reference words in both arms.
        found["note"] = "no labelled reference words in " + (
            "either arm" if len(empty) == 2 else ("the control" if empty[0] is control else name)
        )
        return found
    keys = sorted(set(control.keys) | set(challenger.keys), key=_tiebreak)
    fixed = [k for k in keys if _more_frequent(k, control, challenger)]
    introduced = [k for k in keys if _more_frequent(k, challenger, control)]
    # Stable sorts: equal changes keep the keys' alphabetical order.
    fixed.sort(key=lambda k: challenger.rate(k) - control.rate(k))
    introduced.sort(key=lambda k: control.rate(k) - challenger.rate(k))
    found["fixed"] = [_change(k, control, challenger) for k in fixed[:top]]
    found["introduced"] = [_change(k, control, challenger) for k in introduced[:top]]
    return found


def words_section(
    results: Sequence[LabelledResult],
    *,
    control: str,
    variants: Sequence[str],
    top: int = TOP,
) -> dict[str, Any]:
    """Each listed variant's most frequent error keys, and per challenger the keys it fixed
    and introduced against `control` (the module's doc). Results of other variants are
    ignored; a listed variant without results has zero errors and empty lists."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    arms = {name: _Arm(r for r in results if r.variant == name) for name in variants}
    changes = []
    if control in arms:
        for name in variants:
            if name != control:
                changes.append(_changes(name, arms[control], arms[name], top))
    return {
        "control": control,
        "top": top,
        "min_count": MIN_COUNT,
        "ratio": RATIO,
        "variants": [_variant(name, arm, top) for name, arm in arms.items()],
        "changes": changes,
    }


# -- text ------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _rate(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if sign else f"{value:.1f}"


def _count(value: object) -> str:
    number = as_number(value)
    return "-" if number is None else f"{number:.0f}"


def _label(entry: Mapping[str, Any], kind: str, arrow: str = "->") -> str:
    """A key as one short phrase: "balance -> ballots", "deleted: please", "inserted: uh"."""
    if kind == "deletion":
        return f"deleted: {as_text(entry.get('reference') or entry.get('word'))}"
    if kind == "insertion":
        return f"inserted: {as_text(entry.get('hypothesis') or entry.get('word'))}"
    return f"{as_text(entry.get('reference'))} {arrow} {as_text(entry.get('hypothesis'))}"


_HEADS: Final = {"substitution": "substitution", "deletion": "deleted", "insertion": "inserted"}


def _key_cell(entry: Mapping[str, Any], kind: str) -> str:
    if kind == "substitution":
        return _label(entry, kind)
    return as_text(entry.get("word"))


def _variant_text(variant: Mapping[str, Any]) -> list[str]:
    name = as_text(variant.get("name"))
    errors = as_number(variant.get("errors")) or 0
    words, utterances = _count(variant.get("reference_words")), _count(variant.get("utterances"))
    if not as_number(variant.get("utterances")):
        return [f"{name}: no labelled utterances"]
    lines = [f"{name}: {errors:.0f} errors in {words} reference words ({utterances} utterances)"]
    for kind in _KINDS:
        entries = [as_map(e) for e in as_list(variant.get(f"{kind}s"))][:TEXT_TOP]
        if not entries:
            continue
        rows = [
            [_key_cell(e, kind), _count(e.get("count")), _pct(as_number(e.get("share")))]
            for e in entries
        ]
        lines += text_table([_HEADS[kind], "count", "share"], rows, "  ")
    return lines


def _changes_text(change: Mapping[str, Any], control: str) -> list[str]:
    name = as_text(change.get("challenger"))
    lines = [f"{name} vs {control}, errors per 1,000 reference words:"]
    note = as_text(change.get("note"))
    if note:
        return [*lines, f"  not compared: {note}"]
    for part, title in (("fixed", "fixed"), ("introduced", "introduced")):
        entries = [as_map(e) for e in as_list(change.get(part))][:TEXT_TOP]
        if not entries:
            lines.append(f"  {title}: none")
            continue
        rows = [
            [
                _label(e, as_text(e.get("kind"))),
                _rate(as_number(e.get("control_per_1000"))),
                _rate(as_number(e.get("challenger_per_1000"))),
                _rate(as_number(e.get("difference_per_1000")), sign=True),
            ]
            for e in entries
        ]
        lines.append(f"  {title}:")
        lines += text_table(["error", control, name, "change"], rows, "    ")
    return lines


def words_text(section: Mapping[str, Any] | None) -> list[str]:
    """Terminal lines: each variant's most frequent errors, then each challenger's changes."""
    words = as_map(section)
    variants = [as_map(v) for v in as_list(words.get("variants"))]
    if not variants:
        return []
    control = as_text(words.get("control"))
    lines = [
        "Where the errors are (the most frequent per variant; share = of the variant's errors)"
    ]
    for variant in variants:
        lines += _variant_text(variant)
    changes = [as_map(c) for c in as_list(words.get("changes"))]
    if changes:
        lines.append(
            f"Changed errors (a key counts when one arm has it at least "
            f"{_count(words.get('min_count'))} times and at least "
            f"{as_number(words.get('ratio')) or RATIO:g}x as often per 1,000 words)"
        )
        for change in changes:
            lines += _changes_text(change, control)
    return lines


# -- HTML ------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return f"<td>{as_html(text)}</td>"


def _html_table(caption: str, header: Sequence[str], rows: Sequence[str], attrs: str) -> str:
    head = "".join(f"<th>{as_html(h)}</th>" for h in header)
    return (
        f'<div class="table-wrap"><table {attrs}><caption>{as_html(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _variant_html(variant: Mapping[str, Any]) -> str:
    name = as_text(variant.get("name"))
    parts = [f'<div data-variant="{as_html(name)}">', f"<h4>{as_html(name)}</h4>"]
    if not as_number(variant.get("utterances")):
        parts += ['<p class="no-data">No labelled utterances.</p>', "</div>"]
        return "\n".join(parts)
    parts.append(
        f'<p class="meta">{_count(variant.get("errors"))} errors in '
        f"{_count(variant.get('reference_words'))} reference words "
        f"({_count(variant.get('utterances'))} utterances).</p>"
    )
    titles = {"substitution": "Substitutions", "deletion": "Deletions", "insertion": "Insertions"}
    for kind in _KINDS:
        entries = [as_map(e) for e in as_list(variant.get(f"{kind}s"))]
        if not entries:
            parts.append(f'<p class="meta">No {as_html(titles[kind].lower())}.</p>')
            continue
        rows = []
        for e in entries:
            if kind == "substitution":
                reference, hypothesis = as_text(e.get("reference")), as_text(e.get("hypothesis"))
                attrs = (
                    f'data-reference="{as_html(reference)}" data-hypothesis="{as_html(hypothesis)}"'
                )
                shown = f"{reference} → {hypothesis}"
            else:
                shown = as_text(e.get("word"))
                attrs = f'data-word="{as_html(shown)}"'
            rows.append(
                f"<tr {attrs}>{_cell(shown)}"
                f"{_cell(_count(e.get('count')))}{_cell(_pct(as_number(e.get('share'))))}</tr>"
            )
        header = "Reference word → recognised" if kind == "substitution" else "Word"
        parts.append(
            _html_table(
                f"{titles[kind]} by {name}",
                [header, "Count", "Share of errors"],
                rows,
                f'data-table="{kind}s"',
            )
        )
    parts.append("</div>")
    return "\n".join(parts)


def _changes_html(change: Mapping[str, Any], control: str) -> str:
    name = as_text(change.get("challenger"))
    note = as_text(change.get("note"))
    if note:
        return f'<p class="no-data" data-challenger="{as_html(name)}">{as_html(note)}</p>'
    parts = []
    for part, css, title in (("fixed", "ok", "Fixed"), ("introduced", "bad", "Introduced")):
        entries = [as_map(e) for e in as_list(change.get(part))]
        if not entries:
            parts.append(
                f'<p class="meta" data-challenger="{as_html(name)}" data-changes="{part}">'
                f"{title} by {as_html(name)}: none.</p>"
            )
            continue
        rows = []
        for e in entries:
            counts = f"{_count(e.get('control_count'))} / {_count(e.get('challenger_count'))}"
            moved = _rate(as_number(e.get("difference_per_1000")), sign=True)
            rows.append(
                f'<tr data-kind="{as_html(e.get("kind"))}">'
                f"{_cell(_label(e, as_text(e.get('kind')), '→'))}{_cell(counts)}"
                f"{_cell(_rate(as_number(e.get('control_per_1000'))))}"
                f"{_cell(_rate(as_number(e.get('challenger_per_1000'))))}"
                f'<td><span class="status {css}">{as_html(moved)}</span></td></tr>'
            )
        parts.append(
            _html_table(
                f"{title} by {name} (errors per 1,000 reference words)",
                ["Error", f"Count ({control} / {name})", control, name, "Change"],
                rows,
                f'data-table="{part}" data-challenger="{as_html(name)}"',
            )
        )
    return "\n".join(parts)


def words_html(section: Mapping[str, Any] | None) -> str:
    """Each variant's most frequent errors as tables, then each challenger's fixed and
    introduced errors; every word from the report is escaped."""
    words = as_map(section)
    variants = [as_map(v) for v in as_list(words.get("variants"))]
    if not variants:
        return ""
    control = as_text(words.get("control"))
    parts = [
        '<section data-section="words">',
        "<h3>Where the errors are</h3>",
        '<p class="meta">The most frequent substitutions (reference word → recognised word), '
        "deleted and inserted words per variant; the share is of the variant's errors "
        "(substitutions + deletions + insertions).</p>",
        *(_variant_html(v) for v in variants),
    ]
    changes = [as_map(c) for c in as_list(words.get("changes"))]
    if changes:
        ratio = f"{as_number(words.get('ratio')) or RATIO:g}"
        parts.append(
            f'<p class="meta">Errors each challenger fixed or introduced against '
            f"<code>{as_html(control)}</code>, per 1,000 reference words so that arms of "
            f"different sizes compare: an error counts when one arm has it at least "
            f"{as_html(_count(words.get('min_count')))} times and at least "
            f"{as_html(ratio)} times as often. "
            "A description, not a test: a rare error moves by chance.</p>"
        )
        parts += [_changes_html(c, control) for c in changes]
    parts.append("</section>")
    return "\n".join(parts)


# -- the export ------------------------------------------------------------------------------


def _op(op: Op) -> list[str | None]:
    return [op.kind, op.reference, op.hypothesis]


def alignment_rows(results: Iterable[LabelledResult]) -> Iterator[dict[str, Any]]:
    """One row per labelled utterance and variant: the normalised reference and hypothesis,
    the WER counts and the aligned operations ([kind, reference word, recognised word])."""
    for result in results:
        found = result.alignment
        counts = found.counts
        yield {
            "record_id": result.record.record_id,
            "variant": result.variant,
            "phase": result.record.phase,
            "unit": result.record.unit,
            "reference": " ".join(found.reference),
            "hypothesis": " ".join(found.hypothesis),
            "substitutions": counts.substitutions,
            "deletions": counts.deletions,
            "insertions": counts.insertions,
            "hits": counts.hits,
            "ops": [_op(op) for op in found.ops],
        }


def alignments_format(path: str | os.PathLike[str]) -> str:
    """The export's format from the file's extension: ".jsonl" or ".csv" (else a ConfigError)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ConfigError(
            "--alignments", f"expected a file name ending in .jsonl or .csv, got {str(path)!r}"
        )
    return suffix


def write_alignments(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Write the rows as JSON lines (".jsonl") or CSV (".csv", `ops` as a JSON string, a
    missing phase as an empty cell), chosen by the file's extension; return the rows written."""
    target = Path(path)
    suffix = alignments_format(target)
    written = 0
    try:
        with target.open("w", encoding="utf-8", newline="") as out:
            if suffix == ".jsonl":
                for row in rows:
                    out.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
                    written += 1
            else:
                writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
                writer.writeheader()
                for row in rows:
                    cells = dict(row)
                    cells["ops"] = json.dumps(cells.get("ops", []), ensure_ascii=False)
                    writer.writerow(cells)
                    written += 1
    except OSError as error:
        raise ConfigError(
            "--alignments", f"cannot write {str(path)!r}: {error.strerror}"
        ) from error
    return written
