"""Absurd numbers are refused where a record or label is built or read, naming the field."""

from __future__ import annotations

import json
import re

import pytest
from test_record import make

from gateway.errors import RestError
from gateway.outcomes.labels import parse_label_body
from gateway.outcomes.record import MAX_COUNT, MAX_MS, InvalidRecordError, OutcomeRecord


@pytest.mark.parametrize("name", ["final_latency_ms", "audio_offset_ms", "total_ms"])
@pytest.mark.parametrize("value", [1.7e308, MAX_MS * 2, 10**400], ids=["1.7e308", "2e15", "1e400"])
def test_absurd_times_are_refused_when_built(name: str, value: float) -> None:
    with pytest.raises(InvalidRecordError, match=f"field '{name}': expected at most 1e\\+15"):
        make(**{name: value})


def test_the_largest_time_and_count_are_accepted() -> None:
    record = make(final_latency_ms=MAX_MS, word_count=MAX_COUNT)
    assert OutcomeRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize("name", ["word_count", "utterance_index"])
def test_absurd_counts_are_refused(name: str) -> None:
    with pytest.raises(InvalidRecordError, match=f"field '{name}': expected at most"):
        make(**{name: MAX_COUNT + 1})


@pytest.mark.parametrize("raw", ["NaN", "-Infinity", "1.7e308", "1e999"])
def test_reading_names_the_record(raw: str) -> None:
    record = make()
    data = json.loads(record.to_json())
    line = record.to_json().replace(
        f'"total_ms":{json.dumps(data["total_ms"])}', f'"total_ms":{raw}'
    )
    assert line != record.to_json()
    with pytest.raises(InvalidRecordError, match=f"^record {record.record_id}: ") as caught:
        OutcomeRecord.from_json(line)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("index", "problem"),
    [
        ("1.7e308", "utterance_index: expected an integer 0..2147483647, got 1.7e+308"),
        ("1e400", "utterance_index: expected an integer >= 0, got inf"),
        ("NaN", "not valid JSON"),
    ],
)
def test_labels_refuse_absurd_numbers_too(index: str, problem: str) -> None:
    body = '{"labels": [{"unit": "u", "utterance_index": ' + index + ', "text": "x"}]}'
    with pytest.raises(RestError, match=re.escape(problem)):
        parse_label_body(body.encode())
