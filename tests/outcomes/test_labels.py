"""Tests for gateway.outcomes.labels: label values, import files and the API body parser."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gateway.errors import ConfigError, RestError
from gateway.outcomes.labels import (
    LABEL_FIELDS,
    MAX_BATCH,
    MAX_TEXT_CHARS,
    SCORE_FIELDS,
    Label,
    LabelError,
    LabelInput,
    RecordScore,
    UnitLabel,
    UnitQuery,
    parse_label_body,
    parse_labels,
    scan_labels,
)
from gateway.outcomes.privacy import pseudonymise
from gateway.text.normalize import NORMALISATION_VERSION

A = "a" * 32
B = "b" * 32
C = "c" * 32
SCORE = {"record_id": A, "substitutions": 0, "deletions": 0, "insertions": 0, "hits": 1}


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# -- values ---------------------------------------------------------------------------------


def test_label_input_strips_text() -> None:
    """Leading and trailing white space of a reference text is not part of the label."""
    assert LabelInput(A, "  hello world \n").text == "hello world"


@pytest.mark.parametrize(
    ("record_id", "text", "field"),
    [
        ("A" * 32, "x", "record_id"),
        ("a" * 31, "x", "record_id"),
        ("5f2b0c3e-8a1d-4e6f-9a7b-3c2d1e0f4a5b", "x", "record_id"),
        (123, "x", "record_id"),
        (A, "   ", "text"),
        (A, "", "text"),
        (A, None, "text"),
        (A, "x" * (MAX_TEXT_CHARS + 1), "text"),
    ],
)
def test_label_input_refuses_bad_values(record_id: object, text: object, field: str) -> None:
    """A bad record id (not 32 lower-case hex) or text (empty, too long) names its field."""
    with pytest.raises(LabelError) as caught:
        LabelInput(record_id, text)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_label_text_at_the_limit_is_accepted() -> None:
    """A text of exactly 10,000 characters is a valid label."""
    assert len(LabelInput(A, "x" * MAX_TEXT_CHARS).text) == MAX_TEXT_CHARS


def test_label_json_round_trip_keeps_field_order() -> None:
    """A label's JSON has its five fields in order, is ASCII, and reads back equal."""
    label = LabelInput(A, "Zoë paid $20").label("alice", "api", "2025-01-31T12:00:00.123Z")
    line = label.to_json()
    assert line.isascii()
    assert list(json.loads(line)) == list(LABEL_FIELDS)
    assert LABEL_FIELDS == ("record_id", "text", "labeller", "labelled_at", "source")
    assert Label.from_json(line) == label
    assert Label.from_json(line.encode()) == label


def test_label_from_json_ignores_fields_it_does_not_know() -> None:
    """A label written by a newer version with an extra field still reads."""
    data = LabelInput(A, "hi").label("bob", "import").to_dict()
    assert Label.from_json(json.dumps({**data, "comment": "later field"})).text == "hi"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"labeller": ""}, "labeller"),
        ({"labeller": "a\nb"}, "labeller"),
        ({"labelled_at": "2025-01-31 12:00:00"}, "labelled_at"),
        ({"labelled_at": "2025-02-30T12:00:00.000Z"}, "labelled_at"),
        ({"source": "email"}, "source"),
        ({"text": " padded "}, "text"),
    ],
)
def test_label_refuses_bad_values(change: dict[str, str], field: str) -> None:
    """A stored label with a bad labeller, time, source or unstripped text names the field."""
    label = LabelInput(A, "hi").label("bob", "api")
    with pytest.raises(LabelError) as caught:
        dataclasses.replace(label, **change)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "label is not valid JSON"),
        ("[1]", "label must be a JSON object"),
        ('{"record_id": "' + A + '", "text": "x"}', "labeller: missing"),
    ],
)
def test_label_from_json_refuses_malformed_lines(line: str, message: str) -> None:
    """A stored label that is not a complete JSON object is refused with the reason."""
    with pytest.raises(ValueError, match=message):
        Label.from_json(line)


def test_scored_label_json_round_trip() -> None:
    """A scored label's JSON ends with `normalisation` and `scores` (the fixed names other
    readers use) and reads back equal."""
    label = LabelInput(A, "pay my bill").label("alice", "api", "2025-01-31T12:00:00.123Z")
    label = label.with_scores([RecordScore(A, 1, 0, 2, 3), RecordScore(B, 0, 0, 0, 4)])
    data = json.loads(label.to_json())
    assert list(data) == [*LABEL_FIELDS, *SCORE_FIELDS]
    assert data["normalisation"] == NORMALISATION_VERSION
    assert data["scores"][0] == {
        "record_id": A,
        "substitutions": 1,
        "deletions": 0,
        "insertions": 2,
        "hits": 3,
    }
    assert Label.from_json(label.to_json()) == label
    assert label.with_scores([]).to_dict()["scores"] == []


def test_old_labels_without_scores_still_load() -> None:
    """A label stored before labels carried counts reads as not scored yet."""
    old = {"record_id": A, "text": "hi", "labeller": "bob"}
    old |= {"labelled_at": "2025-01-31T12:00:00.123Z", "source": "api"}
    label = Label.from_json(json.dumps(old))
    assert (label.normalisation, label.scores, label.scores_current) == (None, None, False)
    assert list(json.loads(label.to_json())) == list(LABEL_FIELDS)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"scores": []}, "scores: normalisation and scores come together"),
        ({"normalisation": "1"}, "scores: normalisation and scores come together"),
        ({"normalisation": "1", "scores": {}}, "scores: expected a list"),
        ({"normalisation": 1, "scores": []}, "normalisation: expected a version string"),
        ({"normalisation": "1", "scores": [1]}, "scores: expected objects"),
        ({"normalisation": "1", "scores": [{"record_id": A}]}, "scores.substitutions: missing"),
        (
            {"normalisation": "1", "scores": [{**SCORE, "hits": -1}]},
            "scores.hits: expected 0..2",
        ),
        (
            {"normalisation": "1", "scores": [{**SCORE, "hits": True}]},
            "scores.hits: expected an integer",
        ),
        (
            {"normalisation": "1", "scores": [{**SCORE, "record_id": "x"}]},
            "scores.record_id: expected 32",
        ),
        ({"normalisation": "1", "scores": [SCORE, SCORE]}, "scores: a record is scored twice"),
    ],
)
def test_label_refuses_bad_scores(extra: dict[str, object], message: str) -> None:
    """Malformed stored counts are refused naming the field, as any other bad label value."""
    data = LabelInput(A, "hi").label("bob", "api").to_dict() | extra
    with pytest.raises(LabelError, match=message):
        Label.from_json(json.dumps(data))


def test_labelled_at_defaults_to_now() -> None:
    """A label made without a time is stamped with the current UTC time in milliseconds."""
    label = LabelInput(A, "hi").label("bob", "api")
    assert label.labelled_at.endswith("Z")
    assert len(label.labelled_at) == len("2025-01-31T12:00:00.123Z")


# -- CSV import files -----------------------------------------------------------------------


def test_csv_with_quotes_commas_line_breaks_and_extra_columns(tmp_path: Path) -> None:
    """CSV cells may quote commas, quotes and line breaks; extra columns are ignored."""
    path = write(
        tmp_path / "labels.csv",
        "reviewer,record_id,text,notes\r\n"
        f'ann,{A},"Hello, world",ok\r\n'
        f'ann,{B},"She said ""yes""",\r\n'
        f'bob,{C},"two\nlines",multi\r\n',
    )
    labels = parse_labels(path)
    assert labels == [
        LabelInput(A, "Hello, world"),
        LabelInput(B, 'She said "yes"'),
        LabelInput(C, "two\nlines"),
    ]


def test_csv_header_is_matched_without_case_or_spaces_and_with_a_bom(tmp_path: Path) -> None:
    """A spreadsheet's header ("Text", " Record_ID ") and UTF-8 BOM are accepted."""
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbfText, Record_ID \n" + f"caf\u00e9 au lait, {A} \n".encode())
    assert parse_labels(path) == [LabelInput(A, "café au lait")]


def test_csv_blank_lines_are_skipped_and_line_numbers_count_them(tmp_path: Path) -> None:
    """Blank lines are ignored, and a bad row is located by its physical line."""
    path = write(
        tmp_path / "labels.csv",
        f'record_id,text\n\n{A},"multi\nline"\n\n{"z" * 32},bad id\n',
    )
    with pytest.raises(ConfigError) as caught:
        parse_labels(path)
    assert caught.value.field == f"{path}:6"
    assert "record_id" in caught.value.problem


def test_csv_bad_lines_reject_the_whole_file_and_are_counted(tmp_path: Path) -> None:
    """The first bad line is named and the others counted: no half import."""
    path = write(
        tmp_path / "labels.csv",
        f"record_id,text\n{A},fine\n{B},\nnot-an-id,x\n{C}\n",
    )
    with pytest.raises(ConfigError) as caught:
        parse_labels(path)
    assert caught.value.field == f"{path}:3"
    assert caught.value.problem == "text: must not be empty (and 2 more bad lines)"
    parsed = scan_labels(path)
    assert parsed.labels == [LabelInput(A, "fine")]
    assert [(p.field, p.problem) for p in parsed.problems] == [
        (f"{path}:3", "text: must not be empty"),
        (f"{path}:4", "record_id: expected 32 lower-case hex digits, got 'not-an-id'"),
        (f"{path}:5", "1 column(s); the header has 2"),
    ]
    assert parsed.invalid == 3


@pytest.mark.parametrize(
    ("content", "field", "problem"),
    [
        ("id,text\nx,y\n", ":1", "the header has no 'record_id' column"),
        ("record_id,transcript\n", ":1", "the header has no 'text' column"),
        ("record_id,text,text\n", ":1", "the header has two 'text' columns"),
        ("", "", "holds no labels"),
        ("\n\n", "", "holds no labels"),
        ("record_id,text\n", "", "holds no labels"),
        (f'record_id,text\n{A},"never closed\n', ":2", "invalid CSV"),
        (f'record_id,text\n{A},ok\n\n{B},"x"y\n', ":4", "invalid CSV"),
    ],
)
def test_csv_files_that_cannot_be_trusted_raise(
    tmp_path: Path, content: str, field: str, problem: str
) -> None:
    """A missing or doubled column, an empty file or broken quoting fails the whole file."""
    path = write(tmp_path / "labels.csv", content)
    with pytest.raises(ConfigError) as caught:
        scan_labels(path)
    assert caught.value.field == f"{path}{field}"
    assert problem in caught.value.problem


def test_csv_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    """A CSV in another encoding fails with the line of the first undecodable byte."""
    path = tmp_path / "labels.csv"
    path.write_bytes(f"record_id,text\n{A},ok\n{B},caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        scan_labels(path)
    assert caught.value.field == f"{path}:3"
    assert "not UTF-8" in caught.value.problem


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A label file that cannot be read is named in the error."""
    with pytest.raises(ConfigError, match="cannot read the label file"):
        scan_labels(tmp_path / "absent.csv")


# -- JSON-lines import files ----------------------------------------------------------------


def test_jsonl_labels_with_extra_fields(tmp_path: Path) -> None:
    """JSON lines give one label each; fields other than record_id and text are ignored."""
    path = write(
        tmp_path / "labels.jsonl",
        json.dumps({"record_id": A, "text": "one", "reviewer": "ann"})
        + "\n\n"
        + json.dumps({"text": "two, with comma", "record_id": B})
        + "\n",
    )
    assert parse_labels(path) == [LabelInput(A, "one"), LabelInput(B, "two, with comma")]


def test_jsonl_bad_lines_name_line_and_problem(tmp_path: Path) -> None:
    """Invalid JSON, a non-object, a missing field and a wrong type are each located."""
    path = write(
        tmp_path / "labels.jsonl",
        "\n".join(
            [
                json.dumps({"record_id": A, "text": "good"}),
                "{not json",
                "[1, 2]",
                json.dumps({"record_id": B}),
                json.dumps({"record_id": C, "text": 7}),
                '{"record_id": "' + A + '", "text": NaN}',
            ]
        ),
    )
    parsed = scan_labels(path)
    assert parsed.format == "jsonl"
    assert parsed.labels == [LabelInput(A, "good")]
    problems = [(p.field.rsplit(":", 1)[1], p.problem.split(":")[0]) for p in parsed.problems]
    assert problems == [
        ("2", "not valid JSON"),
        ("3", "expected a JSON object with record_id and text, got [1, 2]"),
        ("4", "text"),
        ("5", "text"),
        ("6", "not valid JSON"),
    ]
    with pytest.raises(ConfigError, match=r"labels.jsonl:2: not valid JSON.*and 4 more"):
        parse_labels(path)


def test_format_is_chosen_by_content_without_a_known_extension(tmp_path: Path) -> None:
    """A file named .txt is read as JSON lines if it starts with "{", else as CSV."""
    jsonl = write(tmp_path / "a.txt", "\ufeff" + json.dumps({"record_id": A, "text": "x"}))
    csv_file = write(tmp_path / "b.txt", f"record_id,text\n{B},y\n")
    assert scan_labels(jsonl).format == "jsonl"
    assert parse_labels(jsonl) == [LabelInput(A, "x")]
    assert scan_labels(csv_file).format == "csv"
    assert parse_labels(csv_file) == [LabelInput(B, "y")]


def test_extension_wins_over_content(tmp_path: Path) -> None:
    """A .csv file is read as CSV even if its first line looks like JSON."""
    path = write(tmp_path / "labels.csv", '{"record_id": "x"}\n')
    with pytest.raises(ConfigError, match="header has no 'record_id' column"):
        scan_labels(path)


def test_problems_kept_are_capped_but_all_counted(tmp_path: Path) -> None:
    """A file of 1,500 bad lines keeps 1,000 problems for the report and counts all."""
    path = write(tmp_path / "labels.jsonl", "{}\n" * 1500)
    parsed = scan_labels(path)
    assert (len(parsed.problems), parsed.invalid) == (1000, 1500)


# -- the API body ---------------------------------------------------------------------------


def test_body_with_one_label() -> None:
    """One object is one label."""
    body = json.dumps({"record_id": A, "text": "hello"}).encode()
    assert parse_label_body(body) == [LabelInput(A, "hello")]


def test_body_with_a_batch() -> None:
    """{"labels": [...]} is a batch, in order."""
    body = json.dumps({"labels": [{"record_id": A, "text": "1"}, {"record_id": B, "text": "2"}]})
    assert parse_label_body(body.encode()) == [LabelInput(A, "1"), LabelInput(B, "2")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "the body is not valid JSON"),
        (b"\xff\xfe", "the body is not valid JSON"),
        (b"", "the body is not valid JSON"),
        (b"[]", "the body must be a JSON object"),
        (json.dumps({"text": "x"}).encode(), "record_id: missing"),
        (json.dumps({"record_id": A}).encode(), "text: missing"),
        (json.dumps({"record_id": A, "text": ""}).encode(), "text: must not be empty"),
        (
            json.dumps({"record_id": A, "text": "x", "labeller": "me"}).encode(),
            "labeller: unknown field",
        ),
        (json.dumps({"labels": {}}).encode(), "labels: expected a list of labels"),
        (json.dumps({"labels": []}).encode(), "labels: the batch is empty"),
        (json.dumps({"labels": [], "x": 1}).encode(), "x: unknown field beside 'labels'"),
        (
            json.dumps({"labels": [{"record_id": A, "text": "ok"}, {"record_id": B}]}).encode(),
            "labels[1].text: missing",
        ),
        (
            json.dumps({"labels": [{"record_id": "B" * 32, "text": "x"}]}).encode(),
            "labels[0].record_id: expected 32 lower-case hex digits",
        ),
        (json.dumps({"labels": ["x"]}).encode(), "labels[0]: expected a JSON object"),
        (
            json.dumps({"labels": [{"record_id": A, "text": "x", "txt": "y"}]}).encode(),
            "labels[0].txt: unknown field",
        ),
        (json.dumps({"unit": "u", "record_id": A, "text": "x"}).encode(), "unit: give record_id"),
        (json.dumps({"unit": "u"}).encode(), "text: missing"),
        (json.dumps({"unit": "", "text": "x"}).encode(), "unit: expected 1-256 printable"),
        (json.dumps({"unit": "u" * 257, "text": "x"}).encode(), "unit: expected 1-256 printable"),
        (json.dumps({"unit": "a\tb", "text": "x"}).encode(), "unit: expected 1-256 printable"),
        (json.dumps({"unit": 7, "text": "x"}).encode(), "unit: expected a string"),
        (
            json.dumps({"unit": "u", "utterance_index": -1, "text": "x"}).encode(),
            "utterance_index: expected an integer 0..",
        ),
        (
            json.dumps({"unit": "u", "utterance_index": "0", "text": "x"}).encode(),
            "utterance_index: expected an integer >= 0",
        ),
        (
            json.dumps({"unit": "u", "utterance_index": True, "text": "x"}).encode(),
            "utterance_index: expected an integer >= 0",
        ),
        (
            json.dumps({"unit": "u", "utterance_index": 1.5, "text": "x"}).encode(),
            "utterance_index: expected an integer >= 0, got 1.5",
        ),
        (
            json.dumps({"unit": "u", "utterance_index": -1.0, "text": "x"}).encode(),
            "utterance_index: expected an integer 0..2147483647, got -1.0",
        ),
        (
            json.dumps({"unit": "u", "utterance_index": 2.0**31, "text": "x"}).encode(),
            "utterance_index: expected an integer 0..2147483647",
        ),
        (
            json.dumps({"unit": "u", "utterance_index": 2**31, "text": "x"}).encode(),
            "utterance_index: expected an integer 0..2147483647",
        ),
        (
            json.dumps({"unit": "u", "experiment": "no spaces", "text": "x"}).encode(),
            "experiment: expected an experiment id",
        ),
        (
            json.dumps({"unit": "u", "text": "x", "record": A}).encode(),
            "record: unknown field (a label by unit",
        ),
        (
            json.dumps(
                {"labels": [{"record_id": A, "text": "x"}, {"unit": "u", "text": " "}]}
            ).encode(),
            "labels[1].text: must not be empty",
        ),
        (
            json.dumps({"labels": [{"unit": "u", "utterance_index": -2, "text": "x"}]}).encode(),
            "labels[0].utterance_index: expected an integer",
        ),
    ],
)
def test_body_errors_name_index_and_field(body: bytes, reason: str) -> None:
    """Every malformed body is a 400 whose reason names the offending index and field."""
    with pytest.raises(RestError) as caught:
        parse_label_body(body)
    assert caught.value.status == 400
    assert caught.value.reason.startswith(reason)


def test_body_batch_limit() -> None:
    """A batch of 10,000 labels is accepted and one of 10,001 refused."""
    item = {"record_id": A, "text": "x"}
    assert len(parse_label_body(json.dumps({"labels": [item] * MAX_BATCH}).encode())) == MAX_BATCH
    with pytest.raises(RestError, match="10,001 labels; at most 10,000"):
        parse_label_body(json.dumps({"labels": [item] * (MAX_BATCH + 1)}).encode())


def test_body_with_labels_by_unit() -> None:
    """A label may name its records by unit; the index defaults to 0, the experiment to any."""
    body = json.dumps(
        {
            "labels": [
                {"unit": "user-1", "text": " pay my bill "},
                {"record_id": A, "text": "2"},
                {"unit": "user 2", "utterance_index": 3, "experiment": "ab", "text": "x"},
            ]
        }
    )
    assert parse_label_body(body.encode()) == [
        UnitLabel("user-1", "pay my bill", 0),
        LabelInput(A, "2"),
        UnitLabel("user 2", "x", 3, "ab"),
    ]
    assert parse_label_body(json.dumps({"unit": "u", "text": "t"}).encode()) == [
        UnitLabel("u", "t")
    ]


@pytest.mark.parametrize("number", ["3.0", "3.00", "3e0", "0.3e1"])
def test_integral_json_numbers_are_utterance_indexes(number: str) -> None:
    """A JSON number with a zero fraction is an integer (as in the OpenAPI document's JSON
    Schema): it is taken, and stored, queried and echoed as the int 3."""
    body = b'{"labels": [{"unit": "u", "utterance_index": ' + number.encode() + b', "text": "x"}]}'
    (label,) = parse_label_body(body)
    assert isinstance(label, UnitLabel)
    assert label.utterance_index == 3
    assert type(label.utterance_index) is int
    assert label.query(b"0123456789abcdef").key.endswith(":3")
    assert label.selector() == {"unit": "u", "utterance_index": 3}


@pytest.mark.parametrize("value", [3.5, True, False, "3", None, [3]])
def test_other_utterance_indexes_are_refused(value: object) -> None:
    """A fraction, a boolean, a string or anything else is no utterance index."""
    with pytest.raises(ValueError, match=r"^utterance_index: expected an integer >= 0"):
        UnitLabel("u", "x", value)  # type: ignore[arg-type]


def test_unit_label_queries_by_the_pseudonym() -> None:
    """The store is asked for the unit's keyed pseudonym, never the raw id; the selector
    echoes what the client sent."""
    key = b"0123456789abcdef0123"
    label = UnitLabel("user-1", "hello", 2, "ab")
    query = label.query(key)
    assert query == UnitQuery(pseudonymise("user-1", key), 2, "ab")
    assert query.key == f"{pseudonymise('user-1', key)}:2"
    assert label.selector() == {"unit": "user-1", "utterance_index": 2, "experiment": "ab"}
    assert UnitLabel("u", "t").selector() == {"unit": "u", "utterance_index": 0}
