"""The canary section: rounds, canary WER, failures and latency; canaries are never evidence."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from traffic import INFO, Traffic, stamp

from gateway.analysis.canaries import MAX_ROUNDS, ROUND_GAP_S, canary_answers, rounds_of
from gateway.analysis.model import ExperimentInfo
from gateway.analysis.report import build_report
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource

REFERENCES = {
    "item-0": "what is my available balance today",
    "item-1": "send two hundred dollars to my savings account",
    "item-2": "close my retirement account please",
}
NOW = datetime(2026, 11, 22, tzinfo=UTC)
_SESSIONS = itertools.count()


def canary(
    variant: str,
    at: int,
    item: str,
    text: str | None = None,
    *,
    failed: bool = False,
    phase: str = "p1",
    **values: Any,
) -> OutcomeRecord:
    """A canary record as the canary runner writes it."""
    fields: dict[str, Any] = {
        "kind": Kind.SESSION_FAILURE if failed else Kind.UTTERANCE,
        "timestamp": stamp(at),
        "experiment": "e",
        "phase": phase,
        "variant": variant,
        "backend": "local",
        "role": Role.CANARY,
        "client": "_canary",
        "unit": item,
        "unit_source": UnitSource.CANARY,
        "session_id": f"canary-{next(_SESSIONS)}",
        "protocol": Protocol.USP,
        "status": "Error" if failed else "Success",
        "error_code": "upstream_unreachable" if failed else None,
        "text": None if failed else REFERENCES.get(item, "") if text is None else text,
        "final_latency_ms": None if failed else 400.0,
    }
    fields.update(values)
    return OutcomeRecord(**fields)


def without_health(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("canary", "drift")}


def test_canary_records_change_nothing_but_the_canary_section() -> None:
    traffic = Traffic()
    traffic.ab(30, base_error=0.3, custom_error=0.05)
    traffic.failure("custom", 70, "Error", "upstream_close_1011")
    primary = traffic.records[0]
    alone = build_report("e", traffic.records, traffic.labels, info=INFO, now=NOW)
    canaries = [
        canary("base", 5, "item-0"),
        canary("custom", 6, "item-1", "send two dollars"),
        canary("custom", 7, "item-2", failed=True),
        # The same session and audio as a labelled primary: pairing must not take it for a
        # shadow; and a unit id that is also a user's.
        canary(
            "custom",
            8,
            primary.unit,
            primary.text,
            session_id=primary.session_id,
            audio_offset_ms=primary.audio_offset_ms,
            audio_duration_ms=primary.audio_duration_ms,
        ),
        # A phase with canaries only, and a variant that has no traffic.
        canary("base", 9, "item-0", phase="p0"),
        canary("extra", 10, "item-0"),
    ]
    mixed = build_report(
        "e",
        [*canaries, *traffic.records],
        traffic.labels,
        info=INFO,
        now=NOW,
        canary_references=REFERENCES,
    )
    assert without_health(mixed) == without_health(alone)
    assert alone["canary"] is None
    assert mixed["canary"] is not None
    json.dumps(mixed, allow_nan=False)
    # The same again without the references: no canary section at all.
    unscored = build_report("e", [*canaries, *traffic.records], traffic.labels, info=INFO, now=NOW)
    assert unscored == alone


def test_rounds_wer_failures_and_latency_per_variant() -> None:
    records = [
        # Round 1 of custom: two answers (one word wrong of 6), one failure.
        canary("custom", 0, "item-0", "what is my available balance", final_latency_ms=300.0),
        canary("custom", 2, "item-1", final_latency_ms=500.0),
        canary("custom", 4, "item-2", failed=True),
        # Round 2: item-0 again starts it; an item without a reference is not scored.
        canary("custom", 10, "item-0", final_latency_ms=350.0),
        canary("custom", 11, "item-9", "whatever"),
        # Base: one round, then one after a gap longer than ROUND_GAP_S.
        canary("base", 1, "item-0"),
        canary("base", 3 + int(ROUND_GAP_S) + 1, "item-1", "send two hundred dollars"),
    ]
    report = build_report("e", records, {}, info=INFO, now=NOW, canary_references=REFERENCES)
    section = report["canary"]
    assert section["items"] == 3
    assert section["round_gap_s"] == ROUND_GAP_S
    base, custom = section["variants"]  # control first
    assert (base["name"], custom["name"]) == ("base", "custom")
    first, second = custom["rounds"]
    assert first["at"] == "2026-11-21T12:00:00.000Z"
    assert (first["answers"], first["failed"], first["unknown_items"]) == (3, 1, 0)
    assert (first["errors"], first["words"]) == (1, 6 + 8)
    assert first["wer"] == pytest.approx(1 / 14)
    assert first["latency_ms"] == 400.0  # the median of 300 and 500
    assert (second["answers"], second["unknown_items"], second["wer"]) == (2, 1, 0.0)
    (phase,) = custom["phases"]
    assert (phase["phase"], phase["rounds"], phase["failed"]) == ("p1", 2, 1)
    assert phase["wer"] == pytest.approx(1 / 20)
    assert custom["rounds_total"] == 2
    assert [r["wer"] for r in base["rounds"]] == [0.0, pytest.approx(4 / 8)]


def test_a_phase_change_starts_a_round_and_the_phase_filter_applies() -> None:
    records = [
        canary("custom", 0, "item-0", phase="p0"),
        canary("custom", 1, "item-1", phase="p1"),
        canary("custom", 2, "item-2", phase="p1"),
    ]
    answers = canary_answers(records, REFERENCES)
    assert [len(r.answers) for r in rounds_of(answers)["custom"]] == [1, 2]
    report = build_report(
        "e", records, {}, info=INFO, phase="p1", now=NOW, canary_references=REFERENCES
    )
    (variant,) = report["canary"]["variants"]
    assert [p["phase"] for p in variant["phases"]] == ["p1"]


def test_only_the_latest_rounds_are_listed() -> None:
    records = [canary("base", i, "item-0") for i in range(MAX_ROUNDS + 5)]
    (variant,) = build_report("e", records, {}, info=INFO, now=NOW, canary_references=REFERENCES)[
        "canary"
    ]["variants"]
    assert variant["rounds_total"] == MAX_ROUNDS + 5
    assert len(variant["rounds"]) == MAX_ROUNDS
    assert variant["rounds"][-1]["at"] == stamp(MAX_ROUNDS + 4)
    assert variant["phases"][0]["rounds"] == MAX_ROUNDS + 5


def test_no_canary_records_give_no_section() -> None:
    traffic = Traffic()
    traffic.ab(5, 0.2, 0.2)
    report = traffic.report(info=ExperimentInfo(control="base"))
    assert report["canary"] is None
    assert (
        build_report("e", traffic.records, traffic.labels, canary_references=REFERENCES)["canary"]
        is None
    )
