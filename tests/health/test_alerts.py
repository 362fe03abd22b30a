"""Health alerts: their checks and JSON form, and the latch that makes each fire once."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from gateway.health.alerts import ALERT_KINDS, Alert, AlertLatch, utc_now

AT = "2026-12-07T06:00:00+00:00"


def alert(kind: Any = "canary_wer_change", variant: str | None = "custom", **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "experiment": "exp-1",
        "variant": variant,
        "kind": kind,
        "message": "canary WER of custom moved from 10.0 % to 25.0 %",
        "detail": {"baseline_wer": 0.1, "recent_wer": 0.25, "rounds": 5},
        "at": AT,
    }
    fields.update(changes)
    return Alert(**fields)


def test_the_kinds_are_the_documented_ones() -> None:
    assert set(ALERT_KINDS) == {
        "canary_wer_change",
        "canary_matches_base",
        "model_changed",
        "model_expiring",
        "canary_failing",
    }


def test_to_dict_is_the_json_form() -> None:
    made = alert()
    as_dict = made.to_dict()
    assert as_dict == {
        "experiment": "exp-1",
        "variant": "custom",
        "kind": "canary_wer_change",
        "message": "canary WER of custom moved from 10.0 % to 25.0 %",
        "detail": {"baseline_wer": 0.1, "recent_wer": 0.25, "rounds": 5},
        "at": AT,
    }
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_the_alert_keeps_its_own_copy_of_the_detail() -> None:
    detail: dict[str, Any] = {"endpoints": ["e1"]}
    made = alert(detail=detail)
    detail["endpoints"].append("e2")
    detail["late"] = True
    assert made.to_dict()["detail"] == {"endpoints": ["e1"]}
    made.to_dict()["detail"]["endpoints"].append("e3")
    assert made.detail["endpoints"] == ["e1"]
    with pytest.raises(TypeError):
        made.detail["x"] = 1  # type: ignore[index]


def test_the_time_defaults_to_now_in_utc() -> None:
    made = Alert("exp-1", None, "model_expiring", "endpoint e1 expires in 10 days")
    moment = datetime.fromisoformat(made.at)
    assert moment.utcoffset() is not None
    assert moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert made.detail == {}
    assert datetime.fromisoformat(utc_now()) >= moment


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "canary_exploded"}, "unknown alert kind 'canary_exploded'"),
        ({"experiment": ""}, "needs an experiment"),
        ({"message": "two\nlines"}, "one non-empty line"),
        ({"message": ""}, "one non-empty line"),
        ({"detail": {"when": datetime(2026, 1, 1)}}, "not JSON-able"),
        ({"detail": {"evidence": float("inf")}}, "not JSON-able"),
        ({"at": "yesterday"}, "ISO-8601"),
        ({"at": "2026-12-07T06:00:00"}, "UTC"),
        ({"at": "2026-12-07T06:00:00+01:00"}, "UTC"),
    ],
)
def test_bad_alerts_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        alert(**changes)


def test_an_alert_fires_once_until_cleared() -> None:
    latch = AlertLatch()
    assert latch.fire(alert()) is True
    assert latch.fire(alert(message="later round, same condition")) is False
    assert latch.active("exp-1") == [("custom", "canary_wer_change", "")]
    latch.clear("exp-1")
    assert latch.active("exp-1") == []
    assert latch.fire(alert()) is True


def test_variant_kind_key_and_experiment_each_separate_alerts() -> None:
    latch = AlertLatch()
    assert latch.fire(alert())
    assert latch.fire(alert(variant="other"))
    assert latch.fire(alert(kind="canary_matches_base"))
    assert latch.fire(alert(experiment="exp-2"))
    expiring = alert(kind="model_expiring", variant=None)
    assert latch.fire(expiring, key="e1/transcription")
    assert latch.fire(expiring, key="e1/adaptation")
    assert not latch.fire(expiring, key="e1/transcription")


def test_clearing_one_variant_leaves_the_others_latched() -> None:
    latch = AlertLatch()
    for variant in ("custom", "other", None):
        latch.fire(alert(variant=variant))
    latch.fire(alert(experiment="exp-2"))
    latch.clear("exp-1", "custom")
    assert latch.fire(alert()) is True
    assert latch.fire(alert(variant="other")) is False
    assert latch.fire(alert(variant=None)) is False
    assert latch.fire(alert(experiment="exp-2")) is False
    latch.clear("exp-1")
    assert latch.fire(alert(variant=None)) is True
    assert latch.fire(alert(experiment="exp-2")) is False
