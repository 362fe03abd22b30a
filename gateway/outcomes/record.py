"""The outcome record: one flat, versioned row per utterance, REST request or failed session.

The session layer builds records (`gateway.session.taps`), a sink (`gateway.stores.jsonl_sink`)
stores them as JSON lines, and the analysis reads them back with `OutcomeRecord.from_json`.
Every record is validated when it is built, so a bad value fails where it was made, with the
field named, instead of in an analyst's notebook weeks later. `docs/outcomes.md` is the
analysts' description of the fields; keep the two in step.

Schema evolution: a new version may add fields but never remove, rename or re-mean one. So
`from_json` reads records of any version >= 1 up to its own exactly (a field added after the
record's version reads as null), and reads records of a newer version too, ignoring the
fields it does not know. An unknown field in a record that claims this reader's version (or
an older one) is a bug or corruption and is refused.
"""

from __future__ import annotations

import json
import math
import re
import types
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal, get_args, get_type_hints

SCHEMA_VERSION: Final = 4
# The largest time a record may carry, in milliseconds (about 31,700 years): far beyond any
# session or backend offset the gateway measures, and small enough that the sums and squares
# the analysis forms over billions of records stay finite. A larger value is corruption.
MAX_MS: Final = 1e15
# The largest count (index, words, dropped audio): the largest integer JSON readers and
# floats hold exactly.
MAX_COUNT: Final = 2**53 - 1
# Fields added after version 1, with the version that added them.
ADDED_IN: Final = {"failover_from": 2, "client_session": 3}
# The version that added a value to an enumeration: an older record cannot hold it.
VALUE_ADDED_IN: Final = {("role", "canary"): 4, ("unit_source", "canary"): 4}


class InvalidRecordError(ValueError):
    """A record that fails validation; the message names the field and, when it can be
    read, the record's id ("record 0123...: field 'final_latency_ms': ...")."""


class Kind(StrEnum):
    UTTERANCE = "utterance"  # one recognised phrase of a USP session
    REQUEST = "request"  # one REST short-audio request, whatever its result
    SESSION_FAILURE = "session_failure"  # a USP session (of one role) that failed


class Role(StrEnum):
    PRIMARY = "primary"  # the variant whose results the client saw
    SHADOW = "shadow"  # a challenger fed the same audio; the client never saw its results
    # A canary utterance the gateway sent itself to watch a variant's model; never part of
    # an experiment's evidence, its guardrails or its shadow pairs.
    CANARY = "canary"


class UnitSource(StrEnum):
    QUERY = "query"
    HEADER = "header"
    CONNECTION = "connection"  # no unit id given: the connection id stands in
    CANARY = "canary"  # a canary record: the unit is the canary item's id, not a user


class Protocol(StrEnum):
    USP = "usp"
    REST = "rest"


def new_record_id() -> str:
    """A fresh idempotency key: uuid4 as 32 lower-case hex digits."""
    return uuid.uuid4().hex


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds and a Z: 2025-01-31T12:00:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeRecord:
    """One outcome; fields in schema order (the order of the JSON keys). See docs/outcomes.md."""

    schema_version: int = SCHEMA_VERSION
    record_id: str = field(default_factory=new_record_id)
    kind: Kind
    timestamp: str = field(default_factory=now_iso)
    experiment: str | None
    phase: str | None
    variant: str | None
    backend: str | None
    role: Role
    forced: bool = False
    client: str
    unit: str
    unit_source: UnitSource
    session_id: str
    protocol: Protocol
    mode: str | None = None
    locale: str | None = None
    turn_id: str | None = None
    utterance_index: int | None = None
    status: str
    error_code: str | None = None
    error_detail: str | None = None
    audio_offset_ms: float | None = None
    audio_duration_ms: float | None = None
    first_hypothesis_ms: float | None = None
    final_latency_ms: float | None = None
    total_ms: float | None = None
    text: str | None = None
    text_sha256: str | None = None
    confidence: float | None = None
    word_count: int | None = None
    shadow_drops: int | None = None
    # The variant the unit was assigned when its backend's circuit breaker was open or
    # unreachable and the session was served by control instead (`variant`). Version 2.
    failover_from: str | None = None
    # The client's own session: its X-ConnectionId, pseudonymised like the unit. The Speech
    # SDKs keep it across the retries and reconnects of one recognition, each of which is a
    # gateway session (`session_id`) of its own; null when the client sent none. Version 3.
    client_session: str | None = None

    def __post_init__(self) -> None:
        for name, (base, nullable) in _SPEC.items():
            value = getattr(self, name)
            checked = _check(name, base, nullable, value)
            if checked is not value:
                object.__setattr__(self, name, checked)
        _check_semantics(self)

    def to_json(self) -> str:
        """One compact ASCII JSON line (no newline), keys in field order, no NaN or Infinity."""
        return json.dumps(
            {name: getattr(self, name) for name in FIELD_NAMES},
            ensure_ascii=True,  # ASCII lines: no encoding errors, no U+2028 "line breaks"
            allow_nan=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str | bytes) -> OutcomeRecord:
        """Parse and validate one JSON line; an InvalidRecordError names the offending field
        and, when it can be read, the record's id."""
        try:
            data = json.loads(line, parse_constant=_refuse_constant)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise InvalidRecordError(
                f"{_record_of(line)}outcome record is not valid JSON: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise InvalidRecordError("outcome record must be a JSON object")
        try:
            return cls._from_dict(data)
        except ValueError as exc:
            raise InvalidRecordError(f"{_record_of(data)}{exc}") from exc

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> OutcomeRecord:
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidRecordError(
                f"field 'schema_version': expected an integer >= 1, got {_show(version)}"
            )
        if version <= SCHEMA_VERSION:
            unknown = [
                name for name in data if name not in _SPEC or ADDED_IN.get(name, 1) > version
            ]
            if unknown:
                raise InvalidRecordError(
                    f"field {unknown[0]!r}: unknown in schema version {version} "
                    f"(this reader knows versions up to {SCHEMA_VERSION})"
                )
        missing = [
            name for name in FIELD_NAMES if name not in data and ADDED_IN.get(name, 1) <= version
        ]
        if missing:
            raise InvalidRecordError(f"field {missing[0]!r}: missing")
        values: dict[str, Any] = {name: data.get(name) for name in FIELD_NAMES}
        return cls(**values)


FIELD_NAMES: Final = tuple(f.name for f in fields(OutcomeRecord))

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_RECORD_ID = re.compile(r"[0-9a-f]{32}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _spec() -> dict[str, tuple[type, bool]]:
    """Field name -> (base type, nullable), read from the annotations so it cannot drift."""
    spec: dict[str, tuple[type, bool]] = {}
    for name, hint in get_type_hints(OutcomeRecord).items():
        args = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        bases = [arg for arg in args if arg is not type(None)]
        assert len(bases) == 1, f"{name}: one base type expected"
        spec[name] = (bases[0], len(bases) != len(args))
    return spec


_SPEC: Final = _spec()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(name: str, base: type, nullable: bool, value: Any) -> Any:
    """The value, converted to `base` where that is lossless (str -> enum, int -> float)."""
    if value is None:
        if nullable:
            return None
        raise InvalidRecordError(f"field {name!r}: must not be null")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise InvalidRecordError(f"field {name!r}: expected true or false, got {_show(value)}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_COUNT:
                raise InvalidRecordError(
                    f"field {name!r}: expected at most {MAX_COUNT}, got {_show(value)}"
                )
            return value
        raise InvalidRecordError(f"field {name!r}: expected an integer, got {_show(value)}")
    if base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > MAX_MS:
                raise InvalidRecordError(
                    f"field {name!r}: expected at most {MAX_MS:g}, got {_show(value)}"
                )
            if not math.isfinite(value):
                raise InvalidRecordError(f"field {name!r}: expected a finite number, got {value}")
            if abs(value) > MAX_MS:
                raise InvalidRecordError(
                    f"field {name!r}: expected at most {MAX_MS:g}, got {value:g}"
                )
            return value if type(value) is float else float(value)
        raise InvalidRecordError(f"field {name!r}: expected a number, got {_show(value)}")
    if base is str:
        if isinstance(value, str):
            return value
        raise InvalidRecordError(f"field {name!r}: expected a string, got {_show(value)}")
    if issubclass(base, StrEnum):
        if isinstance(value, base):
            return value
        if isinstance(value, str):
            try:
                return base(value)
            except ValueError:
                pass
        allowed = ", ".join(repr(member.value) for member in base)
        raise InvalidRecordError(f"field {name!r}: expected one of {allowed}, got {_show(value)}")
    raise AssertionError(f"field {name!r}: no check for {base!r}")  # a new field type


def _check_semantics(record: OutcomeRecord) -> None:
    """Rules across fields and ranges that types alone do not express."""
    if record.schema_version < 1:
        raise InvalidRecordError("field 'schema_version': must be >= 1")
    for (name, value), added in VALUE_ADDED_IN.items():
        if getattr(record, name) == value and record.schema_version < added:
            raise InvalidRecordError(
                f"field {name!r}: {value!r} is new in schema version {added}, "
                f"not in a version {record.schema_version} record"
            )
    if not _RECORD_ID.fullmatch(record.record_id):
        raise InvalidRecordError(
            f"field 'record_id': expected 32 lower-case hex digits, got {_show(record.record_id)}"
        )
    if not _TIMESTAMP.fullmatch(record.timestamp):
        raise InvalidRecordError(
            "field 'timestamp': expected UTC ISO-8601 with milliseconds "
            f"(2025-01-31T12:00:00.123Z), got {_show(record.timestamp)}"
        )
    try:
        datetime.fromisoformat(record.timestamp)
    except ValueError as exc:
        raise InvalidRecordError(f"field 'timestamp': {exc}") from None
    for name in ("client", "unit", "session_id", "status"):
        if not getattr(record, name):
            raise InvalidRecordError(f"field {name!r}: must not be empty")
    if record.client_session == "":
        raise InvalidRecordError("field 'client_session': must not be empty (null when unknown)")
    for name in (
        "utterance_index",
        "audio_offset_ms",
        "audio_duration_ms",
        "first_hypothesis_ms",
        "final_latency_ms",
        "total_ms",
        "word_count",
        "shadow_drops",
    ):
        value = getattr(record, name)
        if value is not None and value < 0:
            raise InvalidRecordError(f"field {name!r}: must not be negative, got {value}")
    if record.confidence is not None and not 0.0 <= record.confidence <= 1.0:
        raise InvalidRecordError(f"field 'confidence': expected 0..1, got {record.confidence}")
    if record.kind is Kind.UTTERANCE and record.protocol is not Protocol.USP:
        raise InvalidRecordError("field 'protocol': an utterance record comes from a USP session")
    if record.kind is Kind.REQUEST and record.protocol is not Protocol.REST:
        raise InvalidRecordError("field 'protocol': a request record comes from the REST API")
    if record.failover_from is not None and (
        record.role is not Role.PRIMARY or record.failover_from == record.variant
    ):
        raise InvalidRecordError(
            "field 'failover_from': only a primary record served by another variant"
        )
    if record.role is Role.PRIMARY and record.shadow_drops is not None:
        raise InvalidRecordError("field 'shadow_drops': only shadow records count dropped audio")
    if record.text_sha256 is not None and not _DIGEST.fullmatch(record.text_sha256):
        got = _show(record.text_sha256)
        raise InvalidRecordError(
            f"field 'text_sha256': expected 64 lower-case hex digits, got {got}"
        )
    # Both at once would defeat the privacy setting that chose the hash.
    if record.text is not None and record.text_sha256 is not None:
        raise InvalidRecordError(
            "field 'text_sha256': a record carries the text or its hash, not both"
        )


def _record_of(data: object) -> str:
    """ "record <id>: " for a message about `data` (a parsed object or a raw line) when its
    record_id can be read, even from a line the strict parser refused; else ""."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)  # lenient: NaN and Infinity parse, to find the id
        except ValueError:
            return ""
    record_id = data.get("record_id") if isinstance(data, dict) else None
    if isinstance(record_id, str) and _RECORD_ID.fullmatch(record_id):
        return f"record {record_id}: "
    return ""


def _refuse_constant(name: str) -> Any:
    raise InvalidRecordError(f"{name} is not a valid number in an outcome record")


# Outcome categories (docs/analysis.md, "Outcome categories"): what the analysis and the
# live guardrails count.
Category = Literal["success", "no_match", "error", "cancellation"]
CATEGORIES: Final[tuple[Category, ...]] = ("success", "no_match", "error", "cancellation")

NO_MATCH_STATUSES: Final = frozenset({"NoMatch", "InitialSilenceTimeout", "BabbleTimeout"})
# The backend refused the session rather than failing at it: throttling, a bad or forbidden
# request. The SDK reports these as cancellations with a client-side reason.
REFUSAL_STATUSES: Final = frozenset({"TooManyRequests", "BadRequest", "Forbidden"})
# Sessions ended by the gateway, not by the variant: a limit (`limit_*`, gateway.limits) or
# a shutdown's drain. Like refusals they say nothing about the model, so they are not errors.
CANCELLED_PREFIXES: Final = ("upstream_http_4", "limit_", "gateway_shutdown")


def category(record: OutcomeRecord) -> Category:
    """The outcome category of a record (see docs/analysis.md, "Outcome categories")."""
    if record.kind is Kind.SESSION_FAILURE:
        code = record.error_code or ""
        if record.status in REFUSAL_STATUSES or code.startswith(CANCELLED_PREFIXES):
            return "cancellation"
        return "error"
    if record.status == "Success":
        return "success"
    if record.status in NO_MATCH_STATUSES:
        return "no_match"
    return "error"
