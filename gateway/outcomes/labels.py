"""Labels: reference transcripts that human review attaches to outcome records by record id.

A `LabelInput` is what a reviewer supplies (a record id and the reference text); a `Label`
is what is stored: the same, plus who gave it, when, and through which door (`api` or
`import`). A `UnitLabel` names its records instead by the raw unit id a client sent and the
utterance's position (a replay knows those, never the record ids); the API resolves it,
through the unit's pseudonym (`UnitQuery`), to record ids before anything is stored. The
parsers here are the two edges where labels enter: import files (CSV or JSON lines,
`parse_labels` / `scan_labels`, errors as `ConfigError` naming `file:line`) and the HTTP
API's body (`parse_label_body`, errors as `RestError` naming the index and field).
`gateway.stores.label_store` keeps labels beside the outcomes; `gateway.stats.wer` scores a
record's text against its label.

A stored label also carries the WER counts of the records it scores (`scores`: the labelled
record and the shadow records of the same audio, each with recognised text), computed once
when it is stored (`gateway.outcomes.label_scores`), with the normalisation version that
produced them (`normalisation`). `stored_counts` gives the analysis a record's counts when
they are current, and None when they are missing or were made under other normalisation
rules. docs/labels.md is the description for analysts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

from gateway.errors import ConfigError, RestError
from gateway.outcomes.privacy import pseudonymise
from gateway.outcomes.record import now_iso
from gateway.stats.wer import WerCounts
from gateway.text import normalize

LabelSource = Literal["api", "import", "review"]
LABEL_SOURCES: Final[tuple[LabelSource, ...]] = get_args(LabelSource)
MAX_TEXT_CHARS: Final = 10_000
MAX_BATCH: Final = 10_000  # labels in one API request
MAX_LABELLER_CHARS: Final = 200
_MAX_PROBLEMS: Final = 1_000  # bad lines kept for the report; the rest are only counted
# As the gateway accepts a unit id (gateway.control.routing.MAX_UNIT_ID): a longer one can
# have no records.
MAX_UNIT_CHARS: Final = 256
MAX_UTTERANCE_INDEX: Final = 2**31 - 1

_RECORD_ID = re.compile(r"[0-9a-f]{32}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_CSV_SUFFIXES = frozenset({".csv"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
_EXPERIMENT = re.compile(r"[A-Za-z0-9._-]{1,64}")  # an experiment id, or "_default"
_API_FIELDS = frozenset({"record_id", "text"})
_UNIT_FIELDS = frozenset({"unit", "utterance_index", "experiment", "text"})
# Records a label by unit names: one utterance of a USP session, or one REST request.
_UNIT_TARGET_KINDS = frozenset({"utterance", "request"})


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class LabelError(ValueError):
    """An invalid label value; `field` names it (None: the label as a whole)."""

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def check_record_id(value: object) -> str:
    """The record id if it is 32 lower-case hex digits; ValueError naming the field if not."""
    if not isinstance(value, str):
        raise LabelError("record_id", f"expected a string, got {_show(value)}")
    if not _RECORD_ID.fullmatch(value):
        raise LabelError("record_id", f"expected 32 lower-case hex digits, got {_show(value)}")
    return value


def _check_text(value: object) -> str:
    if not isinstance(value, str):
        raise LabelError("text", f"expected a string, got {_show(value)}")
    text = value.strip()
    if not text:
        raise LabelError("text", "must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise LabelError("text", f"{len(text):,} characters; at most {MAX_TEXT_CHARS:,}")
    return text


@dataclass(frozen=True, slots=True)
class LabelInput:
    """A reference transcript for one record, as a reviewer supplies it.

    `text` is stored stripped of leading and trailing white space; construction raises
    ValueError naming the field (`record_id: ...`, `text: ...`).
    """

    record_id: str
    text: str

    def __post_init__(self) -> None:
        check_record_id(self.record_id)
        text = _check_text(self.text)
        if text != self.text:
            object.__setattr__(self, "text", text)

    def label(self, labeller: str, source: LabelSource, labelled_at: str | None = None) -> Label:
        """The stored form: this label given by `labeller` through `source`, now or then."""
        return Label(
            record_id=self.record_id,
            text=self.text,
            labeller=labeller,
            labelled_at=labelled_at or now_iso(),
            source=source,
        )


def check_unit(value: object) -> str:
    """A raw unit id as the gateway accepts one: 1-256 printable characters."""
    if not isinstance(value, str):
        raise LabelError("unit", f"expected a string, got {_show(value)}")
    if not value or len(value) > MAX_UNIT_CHARS or not value.isprintable():
        raise LabelError(
            "unit", f"expected 1-{MAX_UNIT_CHARS} printable characters, got {_show(value)}"
        )
    return value


def check_utterance_index(value: object) -> int:
    """A 0-based utterance position: an integer 0..2**31-1, as an int. A JSON number with a
    zero fraction (`3.0`) is an integer too, as in JSON Schema (the OpenAPI document's
    `integer`); `3.5`, true, false and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LabelError("utterance_index", f"expected an integer >= 0, got {_show(value)}")
    if isinstance(value, float) and not value.is_integer():  # also NaN and infinities
        raise LabelError("utterance_index", f"expected an integer >= 0, got {_show(value)}")
    if not 0 <= value <= MAX_UTTERANCE_INDEX:
        raise LabelError(
            "utterance_index",
            f"expected an integer 0..{MAX_UTTERANCE_INDEX}, got {_show(value)}",
        )
    return int(value)


def check_experiment(value: object) -> str:
    """An experiment id (1-64 letters, digits, '.', '-', '_'; `_default` for the default route)."""
    if not isinstance(value, str) or not _EXPERIMENT.fullmatch(value):
        raise LabelError(
            "experiment",
            "expected an experiment id of 1-64 letters, digits, '.', '-' or '_', "
            f"got {_show(value)}",
        )
    return value


def unit_target(kind: object, role: object, unit: object, utterance_index: object) -> str | None:
    """The unit index key (`<unit>:<utterance_index>`) of a record that a label by unit can
    name, from its fields: a primary utterance or request record. None for the others."""
    if role != "primary" or kind not in _UNIT_TARGET_KINDS or not isinstance(unit, str):
        return None
    if isinstance(utterance_index, bool) or not isinstance(utterance_index, int):
        return None
    return f"{unit}:{utterance_index}"


@dataclass(frozen=True, slots=True)
class UnitQuery:
    """The primary utterance/request records of one unit pseudonym and utterance index, in
    one experiment or (None) in any: what a store looks up for a `UnitLabel`."""

    unit: str  # the pseudonym, as in the records' `unit` field
    utterance_index: int
    experiment: str | None = None  # an experiment key (NO_EXPERIMENT for the default route)

    @property
    def key(self) -> str:
        """The index key of the stores: `<unit>:<utterance_index>` (as `unit_target`)."""
        return f"{self.unit}:{self.utterance_index}"


@dataclass(frozen=True, slots=True)
class UnitLabel:
    """A reference transcript for the records that a unit's utterance made, as a client that
    never saw record ids supplies it: the raw unit id (`gw-unit`), the 0-based utterance
    index within the session, and optionally the experiment.

    Construction raises ValueError naming the field; `text` is stored stripped.
    """

    unit: str
    text: str
    utterance_index: int = 0
    experiment: str | None = None

    def __post_init__(self) -> None:
        check_unit(self.unit)
        index = check_utterance_index(self.utterance_index)
        if index is not self.utterance_index:  # 3.0 is stored, looked up and echoed as 3
            object.__setattr__(self, "utterance_index", index)
        if self.experiment is not None:
            check_experiment(self.experiment)
        text = _check_text(self.text)
        if text != self.text:
            object.__setattr__(self, "text", text)

    def query(self, pseudonym_key: bytes) -> UnitQuery:
        """What to look up: the unit's pseudonym under the gateway's key."""
        unit = pseudonymise(self.unit, pseudonym_key)
        return UnitQuery(unit, self.utterance_index, self.experiment)

    def selector(self) -> dict[str, object]:
        """The selector as the client gave it, for answers (never for logs: a raw unit id)."""
        out: dict[str, object] = {"unit": self.unit, "utterance_index": self.utterance_index}
        if self.experiment is not None:
            out["experiment"] = self.experiment
        return out


_SCORE_COUNTS: Final = ("substitutions", "deletions", "insertions", "hits")
_MAX_COUNT: Final = 2**53 - 1  # exact in every JSON reader


@dataclass(frozen=True, slots=True)
class RecordScore:
    """The WER counts of one record's recognised text against a label's text."""

    record_id: str
    substitutions: int
    deletions: int
    insertions: int
    hits: int

    def __post_init__(self) -> None:
        check_record_id(self.record_id)
        for name in _SCORE_COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise LabelError(f"scores.{name}", f"expected an integer, got {_show(value)}")
            if not 0 <= value <= _MAX_COUNT:
                raise LabelError(f"scores.{name}", f"expected 0..2**53-1, got {_show(value)}")

    @classmethod
    def of(cls, record_id: str, counts: WerCounts) -> RecordScore:
        return cls(
            record_id, counts.substitutions, counts.deletions, counts.insertions, counts.hits
        )

    @property
    def counts(self) -> WerCounts:
        return WerCounts(self.substitutions, self.deletions, self.insertions, self.hits)

    def to_dict(self) -> dict[str, str | int]:
        return {"record_id": self.record_id, **{n: getattr(self, n) for n in _SCORE_COUNTS}}

    @classmethod
    def from_dict(cls, value: object) -> RecordScore:
        """One entry of a stored label's `scores`; LabelError naming the field if bad."""
        if not isinstance(value, dict):
            raise LabelError("scores", f"expected objects, got {_show(value)}")
        missing = [name for name in ("record_id", *_SCORE_COUNTS) if name not in value]
        if missing:
            raise LabelError(f"scores.{missing[0]}", "missing")
        try:
            return cls(value["record_id"], *(value[name] for name in _SCORE_COUNTS))
        except LabelError as exc:
            if exc.field == "record_id":
                raise LabelError("scores.record_id", exc.problem) from None
            raise


@dataclass(frozen=True, slots=True, kw_only=True)
class Label:
    """A stored label; fields in the order of the JSON keys.

    `normalisation` and `scores` are both None (not scored yet: a label stored before labels
    carried counts, or whose record could not be read) or both set: the normalisation
    version and one `RecordScore` per scored record (possibly none: no record with text).
    """

    record_id: str
    text: str
    labeller: str  # the admin credential's name (API) or the CLI's --by
    labelled_at: str = field(default_factory=now_iso)  # UTC, 2025-01-31T12:00:00.123Z
    source: LabelSource
    normalisation: str | None = None  # gateway.text.normalize.NORMALISATION_VERSION
    scores: tuple[RecordScore, ...] | None = None

    def __post_init__(self) -> None:
        self._check_scores()
        check_record_id(self.record_id)
        if _check_text(self.text) != self.text:
            raise LabelError("text", "must be stripped of leading and trailing white space")
        check_labeller(self.labeller)
        if not isinstance(self.labelled_at, str) or not _TIMESTAMP.fullmatch(self.labelled_at):
            raise LabelError(
                "labelled_at",
                "expected UTC ISO-8601 with milliseconds "
                f"(2025-01-31T12:00:00.123Z), got {_show(self.labelled_at)}",
            )
        try:
            datetime.fromisoformat(self.labelled_at)
        except ValueError as exc:
            raise LabelError("labelled_at", str(exc)) from None
        if self.source not in LABEL_SOURCES:
            raise LabelError("source", f"expected 'api' or 'import', got {_show(self.source)}")

    def _check_scores(self) -> None:
        if (self.normalisation is None) != (self.scores is None):
            raise LabelError("scores", "normalisation and scores come together or not at all")
        if self.normalisation is not None and not (
            isinstance(self.normalisation, str) and 0 < len(self.normalisation) <= 64
        ):
            raise LabelError(
                "normalisation", f"expected a version string, got {_show(self.normalisation)}"
            )
        if self.scores is not None:
            if not isinstance(self.scores, tuple) or not all(
                isinstance(score, RecordScore) for score in self.scores
            ):
                raise LabelError("scores", "expected a tuple of RecordScore")
            if len({score.record_id for score in self.scores}) != len(self.scores):
                raise LabelError("scores", "a record is scored twice")

    def with_scores(self, scores: Iterable[RecordScore]) -> Label:
        """This label with `scores`, made under the current normalisation version."""
        return replace(self, normalisation=normalize.NORMALISATION_VERSION, scores=tuple(scores))

    @property
    def scores_current(self) -> bool:
        """Whether the stored counts were made under the current normalisation rules."""
        return self.scores is not None and self.normalisation == normalize.NORMALISATION_VERSION

    def to_json(self) -> str:
        """One compact ASCII JSON object (no newline), keys in field order; `normalisation`
        and `scores` only when the label is scored."""
        return json.dumps(self.to_dict(), ensure_ascii=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in LABEL_FIELDS}
        if self.scores is not None:
            out["normalisation"] = self.normalisation
            out["scores"] = [score.to_dict() for score in self.scores]
        return out

    @classmethod
    def from_json(cls, data: str | bytes) -> Label:
        """Parse and validate one stored label; fields it does not know are ignored (a newer
        writer may add some). ValueError names the offending field."""
        try:
            value = json.loads(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise LabelError(None, f"label is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise LabelError(None, "label must be a JSON object")
        missing = [name for name in LABEL_FIELDS if name not in value]
        if missing:
            raise LabelError(missing[0], "missing")
        scores = value.get("scores")
        if scores is not None and not isinstance(scores, list):
            raise LabelError("scores", f"expected a list, got {_show(scores)}")
        return cls(
            **{name: value[name] for name in LABEL_FIELDS},
            normalisation=value.get("normalisation"),
            scores=None if scores is None else tuple(map(RecordScore.from_dict, scores)),
        )


# The fields every stored label has; `normalisation` and `scores` are optional.
LABEL_FIELDS: Final = tuple(f.name for f in fields(Label))[:-2]
SCORE_FIELDS: Final = ("normalisation", "scores")


def stored_counts(label: Label, record_id: str) -> WerCounts | None:
    """The WER counts stored with `label` for `record_id` (the labelled record or a shadow
    of the same audio), if they were made under the current normalisation version; None
    if the label is not scored (yet), is stale, or does not score that record."""
    if not label.scores_current or label.scores is None:
        return None
    for score in label.scores:
        if score.record_id == record_id:
            return score.counts
    return None


def check_labeller(value: object) -> str:
    """A labeller name: 1-200 printable characters. ValueError naming the field if not."""
    if not isinstance(value, str) or not value.strip():
        raise LabelError("labeller", f"expected a non-empty name, got {_show(value)}")
    if len(value) > MAX_LABELLER_CHARS or not value.isprintable():
        raise LabelError(
            "labeller", f"at most {MAX_LABELLER_CHARS} printable characters, got {_show(value)}"
        )
    return value


# -- import files --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelLine:
    """A label read from an import file, with the line it starts on (1-based)."""

    line: int
    label: LabelInput


@dataclass(frozen=True, slots=True)
class ParsedLabels:
    """What an import file holds: its good labels, and a `ConfigError` per bad line.

    `problems` keeps the first 1,000 bad lines; `invalid` counts all of them.
    """

    path: Path
    format: Literal["csv", "jsonl"]
    lines: tuple[LabelLine, ...]
    problems: tuple[ConfigError, ...]
    invalid: int

    @property
    def labels(self) -> list[LabelInput]:
        return [entry.label for entry in self.lines]


def parse_labels(path: Path) -> list[LabelInput]:
    """The labels of a CSV or JSON-lines file, all or nothing.

    ConfigError(`path:line`, problem) for the first bad line (the message counts the others);
    see `scan_labels` for the formats.
    """
    parsed = scan_labels(path)
    raise_first_problem(parsed)
    return parsed.labels


def raise_first_problem(parsed: ParsedLabels) -> None:
    """Raise the first bad line of a parsed file as a ConfigError, if it has one."""
    if not parsed.invalid:
        return
    first = parsed.problems[0]
    more = parsed.invalid - 1
    problem = first.problem
    if more:
        problem += f" (and {more:,} more bad line{'s' if more > 1 else ''})"
    raise ConfigError(first.field, problem)


def scan_labels(path: Path) -> ParsedLabels:
    """Read an import file, keeping bad lines aside instead of failing on the first.

    The format is chosen by the extension (`.csv`; `.jsonl`, `.ndjson`, `.json`), else by
    the content (a first non-blank character `{` means JSON lines). Both are UTF-8 (a BOM is
    allowed); blank lines are skipped.

    * CSV: a header row naming `record_id` and `text` (any case, any order); other columns
      are ignored. Quoting follows the csv module (RFC 4180), so texts may hold commas,
      quotes and line breaks.
    * JSON lines: one object per line with string fields `record_id` and `text`; other
      fields are ignored.

    A file that cannot be read, is not UTF-8 (CSV), has no usable header, breaks the CSV
    quoting, or holds no label line at all raises ConfigError: no line of it can be trusted.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the label file: {exc.strerror}") from exc
    kind = _format(path, data)
    collector = _Problems(path)
    if kind == "csv":
        lines = list(_csv_lines(path, data, collector))
    else:
        lines = list(_jsonl_lines(path, data, collector))
    if not lines and not collector.count:
        raise ConfigError(str(path), "holds no labels")
    return ParsedLabels(path, kind, tuple(lines), tuple(collector.kept), collector.count)


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.kept: list[ConfigError] = []
        self.count = 0

    def add(self, line: int, problem: str) -> None:
        self.count += 1
        if len(self.kept) < _MAX_PROBLEMS:
            self.kept.append(ConfigError(f"{self.path}:{line}", problem))


def _format(path: Path, data: bytes) -> Literal["csv", "jsonl"]:
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return "csv"
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    return "jsonl" if data.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{") else "csv"


def _csv_lines(path: Path, data: bytes, problems: _Problems) -> Iterator[LabelLine]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}", f"not UTF-8 ({exc.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1  # the line the row being read starts on
    try:
        header = _next_row(reader)
        while header is not None and not any(cell.strip() for cell in header):
            start = reader.line_num + 1
            header = _next_row(reader)
        if header is None:
            raise ConfigError(str(path), "holds no labels (expected a header row record_id,text)")
        columns = [cell.strip().lower() for cell in header]
        where = f"{path}:{start}"
        for name in ("record_id", "text"):
            if name not in columns:
                raise ConfigError(where, f"the header has no {name!r} column: {_show(header)}")
            if columns.count(name) > 1:
                raise ConfigError(where, f"the header has two {name!r} columns")
        id_at, text_at = columns.index("record_id"), columns.index("text")
        needed = max(id_at, text_at) + 1
        while True:
            start = reader.line_num + 1
            row = _next_row(reader)
            if row is None:
                return
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < needed:
                problems.add(start, f"{len(row)} column(s); the header has {len(columns)}")
                continue
            try:
                label = LabelInput(row[id_at].strip(), row[text_at])
            except ValueError as exc:
                problems.add(start, str(exc))
                continue
            yield LabelLine(start, label)
    except csv.Error as exc:
        # Broken quoting: where the next row starts is unknown, so nothing after is trusted.
        raise ConfigError(f"{path}:{start}", f"invalid CSV: {exc}") from None


def _next_row(reader: Iterator[list[str]]) -> list[str] | None:
    return next(reader, None)


def _jsonl_lines(path: Path, data: bytes, problems: _Problems) -> Iterator[LabelLine]:
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw, parse_constant=_refuse_constant)
        except ValueError as exc:
            problems.add(number, f"not valid JSON: {exc}")
            continue
        try:
            label = _label_from_object(value, strict=False)
        except ValueError as exc:
            problems.add(number, str(exc))
            continue
        yield LabelLine(number, label)


def _label_from_object(value: object, *, strict: bool) -> LabelInput:
    """A LabelInput from a decoded JSON object; `strict` refuses fields other than ours."""
    if not isinstance(value, dict):
        raise LabelError(
            None, f"expected a JSON object with record_id and text, got {_show(value)}"
        )
    for name in ("record_id", "text"):
        if name not in value:
            raise LabelError(name, "missing")
    if strict:
        unknown = sorted(set(value) - _API_FIELDS)
        if unknown:
            raise LabelError(unknown[0], "unknown field (a label has record_id and text)")
    return LabelInput(value["record_id"], value["text"])


def _api_label(value: object) -> LabelInput | UnitLabel:
    """One label of the API body: by `record_id`, or by `unit` (+ `utterance_index`,
    `experiment`); fields other than those of its kind are refused."""
    if not isinstance(value, dict):
        raise LabelError(
            None, f"expected a JSON object with record_id (or unit) and text, got {_show(value)}"
        )
    if "unit" not in value:
        if "record_id" not in value:
            raise LabelError("record_id", "missing (or name the record by unit)")
        return _label_from_object(value, strict=True)
    if "record_id" in value:
        raise LabelError("unit", "give record_id or unit, not both")
    if "text" not in value:
        raise LabelError("text", "missing")
    unknown = sorted(set(value) - _UNIT_FIELDS)
    if unknown:
        raise LabelError(
            unknown[0],
            "unknown field (a label by unit has unit, utterance_index, experiment and text)",
        )
    return UnitLabel(
        value["unit"],
        value["text"],
        value.get("utterance_index", 0),
        value.get("experiment"),
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# -- the HTTP API's body ------------------------------------------------------------------


def parse_label_body(body: bytes) -> list[LabelInput | UnitLabel]:
    """The labels of a `POST /labels` body: one object `{"record_id": ..., "text": ...}` or
    `{"unit": ..., "utterance_index": 0, "experiment": ..., "text": ...}` (a `UnitLabel`;
    index and experiment optional), or a batch `{"labels": [...]}` of 1-10,000 such objects.

    Raises RestError(reason, 400) naming the problem, e.g. `labels[3].text: must not be
    empty`. Fields other than these are refused, so a misspelt field is not silently lost.
    """
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RestError('the body must be a JSON object: one label, or {"labels": [...]}')
    if "labels" not in value:
        try:
            return [_api_label(value)]
        except ValueError as exc:
            raise RestError(str(exc)) from None
    return _batch(value)


def _batch(value: Mapping[str, object]) -> list[LabelInput | UnitLabel]:
    extra = sorted(set(value) - {"labels"})
    if extra:
        raise RestError(f"{extra[0]}: unknown field beside 'labels'")
    items = value["labels"]
    if not isinstance(items, list):
        raise RestError(f"labels: expected a list of labels, got {_show(items)}")
    if not items:
        raise RestError("labels: the batch is empty")
    if len(items) > MAX_BATCH:
        raise RestError(f"labels: {len(items):,} labels; at most {MAX_BATCH:,} per request")
    labels: list[LabelInput | UnitLabel] = []
    for index, item in enumerate(items):
        try:
            labels.append(_api_label(item))
        except LabelError as exc:
            where = f"labels[{index}].{exc.field}" if exc.field else f"labels[{index}]"
            raise RestError(f"{where}: {exc.problem}") from None
    return labels
