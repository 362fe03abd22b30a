"""Tests for gateway.outcomes.record: the schema, validation, and the JSON line form."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.outcomes.record import (
    FIELD_NAMES,
    SCHEMA_VERSION,
    InvalidRecordError,
    Kind,
    OutcomeRecord,
    Protocol,
    Role,
    UnitSource,
    new_record_id,
    now_iso,
)

SCHEMA_V1_FIELDS = (
    "schema_version",
    "record_id",
    "kind",
    "timestamp",
    "experiment",
    "phase",
    "variant",
    "backend",
    "role",
    "forced",
    "client",
    "unit",
    "unit_source",
    "session_id",
    "protocol",
    "mode",
    "locale",
    "turn_id",
    "utterance_index",
    "status",
    "error_code",
    "error_detail",
    "audio_offset_ms",
    "audio_duration_ms",
    "first_hypothesis_ms",
    "final_latency_ms",
    "total_ms",
    "text",
    "text_sha256",
    "confidence",
    "word_count",
    "shadow_drops",
)
SCHEMA_V2_FIELDS = (*SCHEMA_V1_FIELDS, "failover_from")
SCHEMA_V3_FIELDS = (*SCHEMA_V2_FIELDS, "client_session")


def make(**changes: Any) -> OutcomeRecord:
    values: dict[str, Any] = {
        "record_id": "0123456789abcdef0123456789abcdef",
        "kind": Kind.UTTERANCE,
        "timestamp": "2025-01-31T12:00:00.123Z",
        "experiment": "checkout",
        "phase": "2",
        "variant": "custom",
        "backend": "westus-custom",
        "role": Role.SHADOW,
        "forced": True,
        "client": "shop-app",
        "unit": "5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b",
        "unit_source": UnitSource.HEADER,
        "session_id": "95B25A38E76441CB801B1A4BF8B3DB8C",
        "protocol": Protocol.USP,
        "mode": "conversation",
        "locale": "en-US",
        "turn_id": "7A3F0C1D2E4B4F5A8B9C0D1E2F3A4B5C",
        "utterance_index": 3,
        "status": "Success",
        "error_code": "shadow_dropped_audio",
        "error_detail": "2 frames dropped",
        "audio_offset_ms": 12_340.5,
        "audio_duration_ms": 2_100.0,
        "first_hypothesis_ms": 310.25,
        "final_latency_ms": 420.0,
        "total_ms": 2_530.75,
        "text": "Pay 20 € to Zoë\u2028now.",
        "text_sha256": None,
        "confidence": 0.8731,
        "word_count": 6,
        "shadow_drops": 2,
    }
    values.update(changes)
    return OutcomeRecord(**values)


def line_with(**changes: Any) -> str:
    data = json.loads(make().to_json())
    data.update(changes)
    return json.dumps(data)


def test_fields_are_the_schema_v3_fields_in_order() -> None:
    """The dataclass fields, and so the JSON keys, are exactly schema v3's, in its order:
    v1's, then the field v2 added, then the one v3 added (v4 added values, no field)."""
    assert SCHEMA_VERSION == 4
    assert FIELD_NAMES == SCHEMA_V3_FIELDS
    assert tuple(json.loads(make().to_json())) == SCHEMA_V3_FIELDS


def test_a_version_1_record_reads_with_the_later_fields_null() -> None:
    """A v1 line (no failover_from, no client_session) is read, keeps its version, and has
    both null."""
    data = json.loads(make(client_session="c" * 32).to_json())
    del data["failover_from"], data["client_session"]
    data["schema_version"] = 1
    record = OutcomeRecord.from_json(json.dumps(data))
    assert record.schema_version == 1
    assert (record.failover_from, record.client_session) == (None, None)


def test_a_version_2_record_reads_with_client_session_null_and_may_not_carry_it() -> None:
    data = json.loads(make(client_session="c" * 32).to_json())
    data["schema_version"] = 2
    with pytest.raises(ValueError, match="'client_session': unknown in schema version 2"):
        OutcomeRecord.from_json(json.dumps(data))
    del data["client_session"]
    record = OutcomeRecord.from_json(json.dumps(data))
    assert (record.schema_version, record.client_session) == (2, None)


def test_a_version_3_record_must_carry_client_session() -> None:
    data = json.loads(make().to_json())
    del data["client_session"]
    with pytest.raises(ValueError, match="'client_session': missing"):
        OutcomeRecord.from_json(json.dumps(data))


def test_client_session_round_trips_and_is_never_empty() -> None:
    """Attempts of one client session share it; "" would be a session nobody can group."""
    record = make(client_session="5f2b0c3e8a1d4e6f9a7b3c2d1e0f4a5b")
    assert OutcomeRecord.from_json(record.to_json()) == record
    with pytest.raises(ValueError, match="'client_session': must not be empty"):
        make(client_session="")


def test_a_version_1_record_may_not_carry_a_v2_field() -> None:
    """failover_from did not exist in v1: a v1 record that has it is corrupt."""
    data = json.loads(make().to_json())
    data["schema_version"] = 1
    with pytest.raises(ValueError, match="'failover_from': unknown in schema version 1"):
        OutcomeRecord.from_json(json.dumps(data))


def test_a_version_2_record_must_carry_failover_from() -> None:
    data = json.loads(make().to_json())
    del data["failover_from"]
    with pytest.raises(ValueError, match="'failover_from': missing"):
        OutcomeRecord.from_json(json.dumps(data))


def test_failover_from_is_only_on_primary_records_served_by_another_variant() -> None:
    primary = {"role": Role.PRIMARY, "shadow_drops": None, "variant": "base"}
    assert make(failover_from="custom", **primary).failover_from == "custom"
    with pytest.raises(ValueError, match="failover_from"):
        make(failover_from="base", **primary)
    with pytest.raises(ValueError, match="failover_from"):
        make(failover_from="custom", variant="base", role=Role.SHADOW)


def test_to_json_is_one_compact_ascii_line() -> None:
    """to_json gives one line without spaces between tokens, escaping non-ASCII text."""
    line = make().to_json()
    assert line.isascii()
    assert "\n" not in line
    assert ", " not in line
    assert '": ' not in line
    assert json.loads(line)["text"] == "Pay 20 € to Zoë\u2028now."


def test_round_trip_through_json_keeps_every_field() -> None:
    """from_json(to_json(r)) equals r, enums and floats included."""
    record = make()
    again = OutcomeRecord.from_json(record.to_json())
    assert again == record
    assert again.kind is Kind.UTTERANCE
    assert again.role is Role.SHADOW


def test_round_trip_of_a_sparse_failure_record() -> None:
    """A session-failure record with most fields null survives the round trip."""
    record = OutcomeRecord(
        kind=Kind.SESSION_FAILURE,
        experiment=None,
        phase=None,
        variant=None,
        backend=None,
        role=Role.PRIMARY,
        client="c",
        unit="u",
        unit_source=UnitSource.CONNECTION,
        session_id="s",
        protocol=Protocol.USP,
        status="Error",
        error_code="upstream_unreachable",
    )
    assert OutcomeRecord.from_json(record.to_json()) == record


def test_from_json_accepts_bytes() -> None:
    """A raw line from a file, as bytes with its newline, parses."""
    record = make()
    assert OutcomeRecord.from_json((record.to_json() + "\n").encode()) == record


def test_defaults_fill_version_id_and_timestamp() -> None:
    """Omitted schema_version, record_id and timestamp get the version, a uuid4 hex, now."""
    first = make(record_id=new_record_id(), timestamp=now_iso())
    fields = {f: getattr(first, f) for f in FIELD_NAMES}
    for name in ("schema_version", "record_id", "timestamp"):
        del fields[name]
    a, b = OutcomeRecord(**fields), OutcomeRecord(**fields)
    assert a.schema_version == SCHEMA_VERSION
    assert re.fullmatch(r"[0-9a-f]{32}", a.record_id)
    assert a.record_id != b.record_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", a.timestamp)


def test_now_iso_is_utc_with_milliseconds() -> None:
    """now_iso ends in .mmmZ and parses back to an aware UTC time."""
    stamp = now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert datetime.fromisoformat(stamp).utcoffset() == UTC.utcoffset(None)


def test_strings_become_enums_and_integers_floats() -> None:
    """Enum fields accept their string values and float fields integers, converted."""
    record = make(
        kind="utterance",
        role="primary",
        unit_source="query",
        protocol="usp",
        shadow_drops=None,
        audio_duration_ms=1500,
    )
    assert record.kind is Kind.UTTERANCE
    assert record.role is Role.PRIMARY
    assert record.unit_source is UnitSource.QUERY
    assert record.protocol is Protocol.USP
    assert type(record.audio_duration_ms) is float


def test_records_are_frozen_and_slotted() -> None:
    """A record cannot be changed in place and has no per-instance dict."""
    record = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "NoMatch"  # type: ignore[misc]
    assert not hasattr(record, "__dict__")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "speech"),
        ("role", "boss"),
        ("unit_source", "cookie"),
        ("protocol", "grpc"),
        ("forced", "yes"),
        ("forced", 1),
        ("utterance_index", True),
        ("utterance_index", 1.5),
        ("word_count", "6"),
        ("confidence", "high"),
        ("confidence", True),
        ("client", None),
        ("status", None),
        ("text", 5),
        ("experiment", ["a"]),
    ],
)
def test_from_json_refuses_a_wrong_type_naming_the_field(field: str, value: object) -> None:
    """A value of the wrong type or outside an enum raises ValueError naming the field."""
    with pytest.raises(ValueError, match=f"field '{field}'"):
        OutcomeRecord.from_json(line_with(**{field: value}))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"audio_duration_ms": -1.0}, "audio_duration_ms"),
        ({"final_latency_ms": -0.5}, "final_latency_ms"),
        ({"utterance_index": -1}, "utterance_index"),
        ({"shadow_drops": -3}, "shadow_drops"),
        ({"confidence": 1.5}, "confidence"),
        ({"record_id": "not-a-uuid"}, "record_id"),
        ({"record_id": "0123456789ABCDEF0123456789ABCDEF"}, "record_id"),
        ({"timestamp": "2025-01-31T12:00:00Z"}, "timestamp"),
        ({"timestamp": "2025-01-31T12:00:00.123+00:00"}, "timestamp"),
        ({"timestamp": "2025-13-31T12:00:00.123Z"}, "timestamp"),
        ({"client": ""}, "client"),
        ({"session_id": ""}, "session_id"),
        ({"protocol": Protocol.REST}, "protocol"),
        ({"kind": Kind.REQUEST}, "protocol"),
        ({"role": Role.PRIMARY}, "shadow_drops"),
        ({"text_sha256": "a" * 64}, "text_sha256"),
        ({"text": None, "text_sha256": "abc"}, "text_sha256"),
        ({"schema_version": 0}, "schema_version"),
    ],
)
def test_construction_refuses_inconsistent_values(changes: dict[str, Any], field: str) -> None:
    """Ranges, formats and cross-field rules are checked when a record is built."""
    with pytest.raises(ValueError, match=f"field '{field}'"):
        make(**changes)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(value: float) -> None:
    """NaN and infinities are refused when built, so to_json never writes them."""
    with pytest.raises(ValueError, match="field 'total_ms'"):
        make(total_ms=value)


def test_from_json_refuses_nan_tokens() -> None:
    """A NaN written by another JSON writer is refused, not read as a float."""
    line = make().to_json().replace('"total_ms":2530.75', '"total_ms":NaN')
    assert "NaN" in line
    with pytest.raises(ValueError, match="NaN"):
        OutcomeRecord.from_json(line)


def test_replace_validates_again() -> None:
    """dataclasses.replace goes through the same checks as construction."""
    with pytest.raises(ValueError, match="field 'confidence'"):
        dataclasses.replace(make(), confidence=2.0)


def test_from_json_names_a_missing_field() -> None:
    """A line without a schema field raises ValueError naming it."""
    data = json.loads(make().to_json())
    del data["locale"]
    with pytest.raises(ValueError, match="field 'locale': missing"):
        OutcomeRecord.from_json(json.dumps(data))


def test_unknown_field_is_refused_in_this_version() -> None:
    """An unknown field in a record of the reader's own version is an error."""
    with pytest.raises(ValueError, match="field 'colour': unknown"):
        OutcomeRecord.from_json(line_with(colour="blue"))


def test_unknown_field_of_a_newer_version_is_ignored() -> None:
    """A newer writer's added fields are skipped; the record keeps its version number."""
    newer = SCHEMA_VERSION + 1
    record = OutcomeRecord.from_json(line_with(schema_version=newer, colour="blue"))
    assert record.schema_version == newer
    assert dataclasses.replace(record, schema_version=SCHEMA_VERSION) == make()


def test_newer_version_still_needs_the_known_fields() -> None:
    """A newer record must still carry every field this reader knows."""
    data = json.loads(line_with(schema_version=SCHEMA_VERSION + 1))
    del data["status"]
    with pytest.raises(ValueError, match="field 'status': missing"):
        OutcomeRecord.from_json(json.dumps(data))


@pytest.mark.parametrize("version", [None, "1", 1.0, True, 0, -1])
def test_schema_version_must_be_a_positive_integer(version: object) -> None:
    """schema_version is checked first, before the field set it decides."""
    with pytest.raises(ValueError, match="field 'schema_version'"):
        OutcomeRecord.from_json(line_with(schema_version=version))


@pytest.mark.parametrize("line", ["", "{", "[1, 2]", '"record"', "null", b"\xff\xfe"])
def test_from_json_refuses_non_objects(line: str | bytes) -> None:
    """Invalid JSON, or JSON that is not an object, raises ValueError."""
    with pytest.raises(ValueError, match="outcome record"):
        OutcomeRecord.from_json(line)


def test_canary_values_are_new_in_version_4() -> None:
    """A canary record is written as version 4; a version 3 line claiming one is refused,
    naming the field, and so is a version 3 line with a canary unit source."""
    canary = make(role=Role.CANARY, unit_source=UnitSource.CANARY)
    assert OutcomeRecord.from_json(canary.to_json()).schema_version == 4
    for field, value in (("role", "canary"), ("unit_source", "canary")):
        with pytest.raises(InvalidRecordError, match=f"field '{field}': 'canary' is new in"):
            OutcomeRecord.from_json(line_with(schema_version=3, **{field: value}))
