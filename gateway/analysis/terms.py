"""Domain terms: how often each variant recognises the words that matter to the domain.

A term list (`load_terms`) is a UTF-8 text file, one term per line; `#` starts a comment
line and blank lines are ignored. Each term goes through the WER's normalisation
(`gateway.text.normalize.normalize_words`), so "$200" is "two hundred dollars" and "Savings
Account" is "savings account", as the WER sees them; a multi-word term counts as one term,
and spellings that normalise alike are one term (the first spelling's place is kept).

Matching, on each labelled result's alignment (`gateway.analysis.labelled`):

* A term is *said* at each occurrence of its word sequence in the normalised reference,
  whole words only ("loan" is not said in "loans"), counted left to right without overlap.
  A term inside a longer phrase is said there too ("credit card" in "business credit card
  was declined"); every term of the list is counted on its own.
* It is *recognised* at an occurrence when the alignment maps the occurrence's words, one
  to one and with nothing inserted between them, to equal words of the hypothesis: the ops
  from its first to its last word are all "equal".
* It is *recognised but not said* ("false") at each occurrence of its word sequence in the
  hypothesis that does not overlap the hypothesis side of a recognised occurrence (a term
  inserted, or put in place of other words).

recall = recognised / said; precision = recognised / (recognised + false); each is null
where its denominator is 0 (a term never said has no recall).

`terms_section` gives per variant the recall and precision over all terms with intervals
clustered by unit (each a ratio of per-unit sums, `gateway.stats.clustered`: Wilson's
interval on the units' effective sample, as the report's outcome rates; a unit with no term
said adds nothing to recall, one with no term recognised, rightly or not, nothing to
precision), the same counts per term,
and per challenger the difference to the control in recall and precision (the clustered
difference interval of the report's rate comparisons) and the terms said in both arms that
it recognises more often than the control ("gained") or less often ("lost"), ranked by the
change in recall. Those lists describe; a term said a few times moves by chance, which the
intervals show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.analysis.labelled import LabelledResult
from gateway.analysis.report_fields import as_html, as_interval, as_list, as_map, as_number, as_text
from gateway.analysis.text_tables import text_table
from gateway.errors import ConfigError
from gateway.stats import clustered
from gateway.stats.proportions import clustered_wilson_interval
from gateway.stats.wer import Alignment
from gateway.text.normalize import normalize_words

MAX_TERMS: Final = 1000  # a term list is a short list of domain words, not a lexicon
TEXT_LIST: Final = 12  # gained/lost terms the terminal names per challenger
_NONE: Final = "–"


@dataclass(frozen=True, slots=True)
class Term:
    """One term: its normalised words and the spelling it first had in the file."""

    words: tuple[str, ...]
    written: str

    @property
    def text(self) -> str:
        """The normalised term, the name it has in the report."""
        return " ".join(self.words)


@dataclass(frozen=True, slots=True)
class TermList:
    """The terms of one list, in file order, with where they came from."""

    terms: tuple[Term, ...]
    source: str

    def __len__(self) -> int:
        return len(self.terms)


def parse_terms(text: str, source: str) -> TermList:
    """The term list in `text` (module doc); `source` names it in errors (a file name)."""
    found: dict[tuple[str, ...], Term] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        written = line.strip()
        if not written or written.startswith("#"):
            continue
        words = tuple(normalize_words(written))
        if not words:
            raise ConfigError(
                f"{source}:{number}", f"term {written!r} has no words after normalisation"
            )
        found.setdefault(words, Term(words, written))
        if len(found) > MAX_TERMS:
            raise ConfigError(f"{source}:{number}", f"more than {MAX_TERMS} terms")
    if not found:
        raise ConfigError(source, "the term list has no terms (only comments or blank lines)")
    return TermList(tuple(found.values()), source)


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content (a leading BOM dropped); ConfigError naming the file (and
    the line of a bad byte). `what` names the file's role in the message."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(source, f"cannot read the {what}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{source}:{line}", f"not UTF-8 text: {exc.reason}") from exc
    return text.removeprefix("\ufeff")


def load_terms(path: str | Path) -> TermList:
    """Read and check a term list file (module doc); ConfigError naming the file (and line)."""
    return parse_terms(read_text_file(path, "term list"), str(path))


# -- matching --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tally:
    """Occurrences of a term (or of all terms): said, recognised, recognised but not said."""

    said: int = 0
    recognised: int = 0
    false: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.said + other.said,
            self.recognised + other.recognised,
            self.false + other.false,
        )

    @property
    def recall(self) -> float | None:
        return self.recognised / self.said if self.said else None

    @property
    def precision(self) -> float | None:
        found = self.recognised + self.false
        return self.recognised / found if found else None


def _by_first_word(terms: TermList) -> dict[str, list[int]]:
    """First word -> indices of the terms starting with it: each position is compared with
    a few candidate terms, not with the whole list."""
    index: dict[str, list[int]] = {}
    for number, term in enumerate(terms.terms):
        index.setdefault(term.words[0], []).append(number)
    return index


def _tally(
    alignment: Alignment, terms: TermList, starts: Mapping[str, list[int]]
) -> dict[int, Tally]:
    reference, hypothesis = alignment.reference, alignment.hypothesis
    # For each reference word: the index of its op and, for an equal op, its hypothesis word.
    ref_op: list[int] = []
    ref_equal: list[int | None] = []
    position = 0
    for number, op in enumerate(alignment.ops):
        if op.kind == "insert":
            position += 1
            continue
        ref_op.append(number)
        if op.kind == "delete":
            ref_equal.append(None)
        else:
            ref_equal.append(position if op.kind == "equal" else None)
            position += 1
    said: dict[int, int] = {}
    recognised: dict[int, set[int]] = {}  # term -> hypothesis start of each recognised one
    free: dict[int, int] = {}  # term -> first reference position not in a counted occurrence
    for i, word in enumerate(reference):
        for t in starts.get(word, ()):
            words = terms.terms[t].words
            k = len(words)
            if i < free.get(t, 0) or reference[i : i + k] != words:
                continue
            free[t] = i + k
            said[t] = said.get(t, 0) + 1
            # Consecutive ops, all equal: no insertion inside, every word recognised.
            span = range(i, i + k)
            if ref_op[i + k - 1] - ref_op[i] == k - 1 and all(
                ref_equal[j] is not None for j in span
            ):
                start = ref_equal[i]
                assert start is not None
                recognised.setdefault(t, set()).add(start)
    false: dict[int, int] = {}
    hyp_free: dict[int, int] = {}
    for j, word in enumerate(hypothesis):
        for t in starts.get(word, ()):
            words = terms.terms[t].words
            k = len(words)
            if j < hyp_free.get(t, 0) or hypothesis[j : j + k] != words:
                continue
            hits = recognised.get(t, set())
            if j in hits:
                hyp_free[t] = j + k
                continue
            # A match overlapping a recognised occurrence is that occurrence, not a new one.
            if any(j - k < start < j + k for start in hits):
                continue
            hyp_free[t] = j + k
            false[t] = false.get(t, 0) + 1
    return {
        t: Tally(said.get(t, 0), len(recognised.get(t, ())), false.get(t, 0))
        for t in said.keys() | false.keys()
    }


def tally_terms(alignment: Alignment, terms: TermList) -> dict[str, Tally]:
    """The terms said or recognised in one alignment (module doc), by normalised term."""
    found = _tally(alignment, terms, _by_first_word(terms))
    return {terms.terms[t].text: tally for t, tally in sorted(found.items())}


# -- the section -----------------------------------------------------------------------------


class _Arm:
    """One variant's term occurrences: per term and per unit (units for the intervals)."""

    def __init__(self, results: Iterable[LabelledResult], terms: TermList) -> None:
        starts = _by_first_word(terms)
        self.utterances = 0
        self.units: set[str] = set()
        self.per_term: dict[int, Tally] = {}
        self.per_unit: dict[str, Tally] = {}
        for result in results:
            self.utterances += 1
            unit = result.record.unit
            self.units.add(unit)
            for t, tally in _tally(result.alignment, terms, starts).items():
                self.per_term[t] = self.per_term.get(t, Tally()) + tally
                self.per_unit[unit] = self.per_unit.get(unit, Tally()) + tally

    @property
    def total(self) -> Tally:
        return sum(self.per_unit.values(), start=Tally())

    def recall_sums(self) -> clustered.UnitSums:
        """Recognised over said, per unit; units that said no term carry no information."""
        pairs = [(u.recognised, u.said) for u in self.per_unit.values() if u.said]
        return _sums(pairs)

    def precision_sums(self) -> clustered.UnitSums:
        pairs = [(u.recognised, u.recognised + u.false) for u in self.per_unit.values()]
        return _sums([(x, n) for x, n in pairs if n])


def _sums(pairs: Sequence[tuple[int, int]]) -> clustered.UnitSums:
    if not pairs:
        return clustered.UnitSums()
    return clustered.UnitSums.of([float(x) for x, _ in pairs], [float(n) for _, n in pairs])


def _rate(sums: clustered.UnitSums, confidence: float) -> dict[str, Any]:
    if sums.n <= 0:
        return {"value": None, "ci": None}
    low, high = clustered_wilson_interval(sums, confidence)
    return {"value": sums.rate, "ci": [low, high]}


def _difference(
    control: clustered.UnitSums, challenger: clustered.UnitSums, confidence: float
) -> dict[str, Any]:
    if control.n <= 0 or challenger.n <= 0:
        return {"difference": None, "ci": None}
    low, high = clustered.difference_interval(control, challenger, confidence)
    return {"difference": challenger.rate - control.rate, "ci": [low, high]}


def _term_row(term: Term, tally: Tally) -> dict[str, Any]:
    return {
        "term": term.text,
        "said": tally.said,
        "recognised": tally.recognised,
        "false": tally.false,
        "recall": tally.recall,
        "precision": tally.precision,
    }


def _side(tally: Tally) -> dict[str, Any]:
    return {"said": tally.said, "recognised": tally.recognised, "recall": tally.recall}


def _changed(terms: TermList, control: _Arm, challenger: _Arm) -> tuple[list[Any], list[Any]]:
    """Terms said in both arms whose recall differs: (gained, lost), each ranked by the
    size of the change, then by how often the better arm recognised the term."""
    gained: list[tuple[float, int, str, dict[str, Any]]] = []
    lost: list[tuple[float, int, str, dict[str, Any]]] = []
    for t, term in enumerate(terms.terms):
        ours, theirs = control.per_term.get(t, Tally()), challenger.per_term.get(t, Tally())
        if ours.recall is None or theirs.recall is None or ours.recall == theirs.recall:
            continue
        change = theirs.recall - ours.recall
        entry = {
            "term": term.text,
            "difference": change,
            "challenger": _side(theirs),
            "control": _side(ours),
        }
        if change > 0:
            gained.append((-change, -theirs.recognised, term.text, entry))
        else:
            lost.append((change, -ours.recognised, term.text, entry))
    return [e for *_, e in sorted(gained)], [e for *_, e in sorted(lost)]


def terms_section(
    results: Sequence[LabelledResult],
    terms: TermList,
    *,
    control: str,
    variants: Sequence[str],
    alpha: float,
) -> dict[str, Any]:
    """The report's `errors.terms` section (docs/analysis.md) for `variants`, the control
    among them; results of other variants are ignored."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    confidence = round(1.0 - alpha, 10)  # 0.95, not 0.9500000000000001, in the JSON
    names = list(dict.fromkeys(variants))
    arms = {name: _Arm((r for r in results if r.variant == name), terms) for name in names}
    rows = []
    for name, arm in arms.items():
        total = arm.total
        rows.append(
            {
                "name": name,
                "is_control": name == control,
                "utterances": arm.utterances,
                "units": len(arm.units),
                "said": total.said,
                "recognised": total.recognised,
                "false": total.false,
                "recall": _rate(arm.recall_sums(), confidence),
                "precision": _rate(arm.precision_sums(), confidence),
                "terms": [
                    _term_row(term, arm.per_term.get(t, Tally()))
                    for t, term in enumerate(terms.terms)
                ],
            }
        )
    comparisons = []
    if control in arms:
        base = arms[control]
        for name, arm in arms.items():
            if name == control:
                continue
            gained, lost = _changed(terms, base, arm)
            comparisons.append(
                {
                    "variant": name,
                    "control": control,
                    "recall": _difference(base.recall_sums(), arm.recall_sums(), confidence),
                    "precision": _difference(
                        base.precision_sums(), arm.precision_sums(), confidence
                    ),
                    "gained": gained,
                    "lost": lost,
                }
            )
    never = [
        term.text
        for t, term in enumerate(terms.terms)
        if not any(arm.per_term.get(t, Tally()).said for arm in arms.values())
    ]
    return {
        "source": terms.source,
        "count": len(terms),
        "control": control,
        "confidence": confidence,
        "variants": rows,
        "comparisons": comparisons,
        "never_said": never,
    }


# -- renderers -------------------------------------------------------------------------------


def _source(section: Mapping[str, Any]) -> str:
    """ "31 terms from FILE", "1 term derived from CORPUS": how many terms, and where from."""
    count = as_number(section.get("count")) or 0
    terms = "1 term" if count == 1 else f"{count:.0f} terms"
    source = as_text(section.get("source"))
    return f"{terms} {source}" if source.startswith("derived from ") else f"{terms} from {source}"


def _pct(value: object, none: str = "-") -> str:
    number = as_number(value)
    return none if number is None else f"{number * 100:.1f}%"


def _with_ci(entry: object, none: str = "-") -> str:
    found = as_map(entry)
    value = as_number(found.get("value"))
    if value is None:
        return none
    interval = as_interval(found.get("ci"))
    if interval is None or interval[0] is None or interval[1] is None:
        return _pct(value)
    return f"{value * 100:.1f}% [{interval[0] * 100:.1f}, {interval[1] * 100:.1f}]"


def _level(value: object) -> str:
    number = as_number(value)
    return "?" if number is None else f"{number * 100:g}%"


def _difference_text(entry: object, none: str = "-") -> str:
    found = as_map(entry)
    value = as_number(found.get("difference"))
    if value is None:
        return none
    text = f"{value * 100:+.1f} pp"
    interval = as_interval(found.get("ci"))
    if interval is None or interval[0] is None or interval[1] is None:
        return text
    return f"{text} [{interval[0] * 100:+.1f}, {interval[1] * 100:+.1f}]"


def _count(value: object) -> str:
    number = as_number(value)
    return "0" if number is None else f"{number:.0f}"


def _of(side: object) -> str:
    """'3 of 4' for one arm of a gained/lost term."""
    found = as_map(side)
    return f"{_count(found.get('recognised'))} of {_count(found.get('said'))}"


def _changed_text(entries: Sequence[Any], order: Sequence[tuple[str, str]]) -> str:
    """The first terms of a gained/lost list: 'term (custom 3 of 3, base 0 of 2)'; `order`
    gives the arms as (key in the entry, variant name), the better arm first."""
    names = []
    for found in entries[:TEXT_LIST]:
        entry = as_map(found)
        arms = ", ".join(f"{name} {_of(entry.get(key))}" for key, name in order)
        names.append(f"{as_text(entry.get('term'))} ({arms})")
    more = f", and {len(entries) - TEXT_LIST} more" if len(entries) > TEXT_LIST else ""
    return ", ".join(names) + more


def _variants(section: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [as_map(v) for v in as_list(section.get("variants"))]


def terms_text(section: Mapping[str, Any] | None) -> list[str]:
    """Recall and precision per variant, the challengers' differences and gained/lost terms,
    and a term-by-variant table of the terms that occurred."""
    found = as_map(section)
    variants = _variants(found)
    if not variants:
        return []
    lines = [
        f"Domain terms ({_source(found)}; {_level(found.get('confidence'))} intervals by unit)",
        "recall: the said terms recognised; precision: the recognised terms that were said",
    ]
    lines += text_table(
        ["variant", "utterances", "said", "recognised", "not said", "recall", "precision"],
        [
            [
                as_text(v.get("name")),
                _count(v.get("utterances")),
                _count(v.get("said")),
                _count(v.get("recognised")),
                _count(v.get("false")),
                _with_ci(v.get("recall")),
                _with_ci(v.get("precision")),
            ]
            for v in variants
        ],
    )
    for item in as_list(found.get("comparisons")):
        comparison = as_map(item)
        name, control = as_text(comparison.get("variant")), as_text(comparison.get("control"))
        lines.append(
            f"{name} - {control}: recall {_difference_text(comparison.get('recall'))}, "
            f"precision {_difference_text(comparison.get('precision'))}"
        )
        gained, lost = as_list(comparison.get("gained")), as_list(comparison.get("lost"))
        ours, theirs = ("control", control), ("challenger", name)
        if gained:
            lines.append(
                f"  Recognised by {name}, missed by {control}: "
                + _changed_text(gained, (theirs, ours))
            )
        if lost:
            lines.append(
                f"  Recognised by {control}, missed by {name}: "
                + _changed_text(lost, (ours, theirs))
            )
    rows = []
    names = [as_text(v.get("name")) for v in variants]
    columns = [[as_map(t) for t in as_list(v.get("terms"))] for v in variants]
    for index, first in enumerate(columns[0]):
        cells = [column[index] if index < len(column) else {} for column in columns]
        if not any(as_number(c.get("said")) or as_number(c.get("false")) for c in cells):
            continue
        row = [as_text(first.get("term"))]
        for cell in cells:
            extra = as_number(cell.get("false"))
            row.append(
                f"{_count(cell.get('recognised'))}/{_count(cell.get('said'))}"
                + (f" +{extra:.0f}" if extra else "")
            )
        rows.append(row)
    if rows:
        lines += [
            "",
            "Per term: recognised/said, +N recognised but not said",
            *text_table(["term", *names], rows),
        ]
    never = [as_text(t) for t in as_list(found.get("never_said"))]
    if never:
        lines.append(f"Never said: {', '.join(never)}")
    return lines


def _cell(text: str) -> str:
    return f"<td>{as_html(text)}</td>"


def _html_table(caption: str, header: Sequence[str], rows: Sequence[str], attributes: str) -> str:
    head = "".join(f"<th>{as_html(h)}</th>" for h in header)
    return (
        f'<div class="table-wrap"><table {attributes}><caption>{as_html(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _changed_html(entries: Sequence[Any], name: str, control: str, kind: str) -> str:
    """A challenger's gained or lost terms as a list, each with both arms' counts."""
    heading = (
        f"Recognised by {name}, missed by {control}"
        if kind == "gained"
        else f"Recognised by {control}, missed by {name}"
    )
    items = []
    for found in entries:
        entry = as_map(found)
        term = as_text(entry.get("term"))
        change = as_number(entry.get("difference"))
        recall = "" if change is None else f" (recall {change * 100:+.1f} pp)"
        items.append(
            f'<li data-term="{as_html(term)}"><code>{as_html(term)}</code>: {as_html(name)} '
            f"{as_html(_of(entry.get('challenger')))}, {as_html(control)} "
            f"{as_html(_of(entry.get('control')))}{as_html(recall)}</li>"
        )
    where = f'data-list="{kind}" data-variant="{as_html(name)}"'
    body = (
        f'<ul class="terms" {where}>{"".join(items)}</ul>'
        if items
        else f'<p class="meta" {where}>None.</p>'
    )
    return f"<h3>{as_html(heading)}</h3>{body}"


def terms_html(section: Mapping[str, Any] | None) -> str:
    """The summary table, per challenger its difference and gained/lost terms, and a table
    per variant with a row per term (`data-term`)."""
    found = as_map(section)
    variants = _variants(found)
    if not variants:
        return ""
    level = _level(found.get("confidence"))
    summary = [
        f'<tr data-variant="{as_html(v.get("name"))}">{_cell(as_text(v.get("name")))}'
        f"{_cell(_count(v.get('utterances')))}{_cell(_count(v.get('said')))}"
        f"{_cell(_count(v.get('recognised')))}{_cell(_count(v.get('false')))}"
        f"{_cell(_with_ci(v.get('recall'), _NONE))}"
        f"{_cell(_with_ci(v.get('precision'), _NONE))}</tr>"
        for v in variants
    ]
    parts = [
        '<section class="phase" data-section="terms">',
        "<h2>Domain terms</h2>",
        f'<p class="meta">{as_html(_source(found))}. A term is said where its words occur '
        "in the reference and recognised there when every one of them is recognised; "
        "recall is the share of said terms recognised, precision the share of recognised "
        f"terms that were said. Intervals: {as_html(level)}, by unit.</p>",
        _html_table(
            "Recall and precision per variant",
            [
                "Variant",
                "Utterances",
                "Said",
                "Recognised",
                "Recognised, not said",
                "Recall",
                "Precision",
            ],
            summary,
            'data-table="terms-summary"',
        ),
    ]
    for item in as_list(found.get("comparisons")):
        comparison = as_map(item)
        name, control = as_text(comparison.get("variant")), as_text(comparison.get("control"))
        parts.append(
            f'<p data-comparison="{as_html(name)}">{as_html(name)} − {as_html(control)}: recall '
            f"{as_html(_difference_text(comparison.get('recall'), _NONE))}, precision "
            f"{as_html(_difference_text(comparison.get('precision'), _NONE))}</p>"
        )
        parts.append(_changed_html(as_list(comparison.get("gained")), name, control, "gained"))
        parts.append(_changed_html(as_list(comparison.get("lost")), name, control, "lost"))
    for variant in variants:
        name = as_text(variant.get("name"))
        rows = []
        for item in as_list(variant.get("terms")):
            row = as_map(item)
            term = as_text(row.get("term"))
            said = as_number(row.get("said"))
            recall = _pct(row.get("recall"), "never said" if not said else _NONE)
            rows.append(
                f'<tr data-term="{as_html(term)}">{_cell(term)}{_cell(_count(said))}'
                f"{_cell(_count(row.get('recognised')))}{_cell(_count(row.get('false')))}"
                f"{_cell(recall)}{_cell(_pct(row.get('precision'), _NONE))}</tr>"
            )
        parts.append(
            _html_table(
                f"Terms: {name}",
                ["Term", "Said", "Recognised", "Recognised, not said", "Recall", "Precision"],
                rows,
                f'data-table="terms" data-variant="{as_html(name)}"',
            )
        )
    parts.append("</section>")
    return "\n".join(parts)
