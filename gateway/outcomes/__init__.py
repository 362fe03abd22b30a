"""Outcomes: the record of every utterance, its privacy rules, the sinks that store it,
and the pairing of shadow results with the primary's. See docs/outcomes.md."""

from gateway.outcomes.pairing import pair_shadows, unpaired
from gateway.outcomes.privacy import (
    TEXT_PRIVACY_CHOICES,
    TextPrivacy,
    load_or_create_key,
    pseudonymise,
    text_digest,
    transcript_fields,
)
from gateway.outcomes.record import (
    FIELD_NAMES,
    SCHEMA_VERSION,
    Kind,
    OutcomeRecord,
    Protocol,
    Role,
    UnitSource,
    new_record_id,
    now_iso,
)
from gateway.stores.jsonl_sink import JsonlSink, OutcomeSink, read_jsonl

__all__ = [
    "FIELD_NAMES",
    "SCHEMA_VERSION",
    "TEXT_PRIVACY_CHOICES",
    "JsonlSink",
    "Kind",
    "OutcomeRecord",
    "OutcomeSink",
    "Protocol",
    "Role",
    "TextPrivacy",
    "UnitSource",
    "load_or_create_key",
    "new_record_id",
    "now_iso",
    "pair_shadows",
    "pseudonymise",
    "read_jsonl",
    "text_digest",
    "transcript_fields",
    "unpaired",
]
