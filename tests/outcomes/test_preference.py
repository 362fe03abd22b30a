"""Tests for gateway.outcomes.preference: the blind choice, its mapping back and its JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.outcomes.preference import Preference, PreferenceError


def make(**changes: Any) -> Preference:
    values: dict[str, Any] = {
        "capture_id": "c" * 32,
        "experiment": "checkout",
        "unit": "unit-1",
        "sample": "uniform",
        "reviewer": "rita",
        "choice": "b",
        "variant_a": "custom",
        "variant_b": "base",
        "reviewed_at": "2026-12-07T10:00:00.000Z",
    }
    values.update(changes)
    return Preference(**values)


def test_the_choice_maps_back_to_the_variant_shown_in_that_slot() -> None:
    """a is variant_a, b is variant_b; same and no choice prefer nobody."""
    assert make(choice="a").preferred == "custom"
    assert make(choice="b").preferred == "base"
    assert make(choice="same").preferred is None
    assert make(choice=None, variant_a=None, variant_b=None).preferred is None


def test_it_round_trips_through_json_and_withdraws() -> None:
    """to_json/from_json keep every field; withdraw marks it and keeps the rest."""
    preference = make(records=("1" * 32, "2" * 32))
    assert Preference.from_json(preference.to_json()) == preference
    assert Preference.from_json(preference.to_json()).records == ("1" * 32, "2" * 32)
    # A preference written before `records` existed reads back with none.
    older = {k: v for k, v in json.loads(preference.to_json()).items() if k != "records"}
    assert Preference.from_json(json.dumps(older)).records == ()
    undone = preference.withdraw("2026-12-07T11:00:00.000Z")
    assert undone.withdrawn
    assert undone.records == preference.records
    assert undone.choice == preference.choice
    assert undone.reviewed_at == "2026-12-07T11:00:00.000Z"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"capture_id": "XYZ"}, "capture_id"),
        ({"choice": "c"}, "choice"),
        ({"variant_b": "custom"}, "variant_b"),
        ({"choice": None}, "choice"),
        ({"variant_a": None}, "variant_a"),
        ({"reviewer": "a b"}, "reviewer"),
        ({"unit": ""}, "unit"),
        ({"sample": "random"}, "sample"),
        ({"records": ("not-a-record-id",)}, "records"),
        ({"records": "1" * 32}, "records"),
    ],
)
def test_an_invalid_preference_names_its_field(changes: dict[str, Any], field: str) -> None:
    """Construction refuses bad values with a PreferenceError that names the field."""
    with pytest.raises(PreferenceError, match=f"^{field}:"):
        make(**changes)


@pytest.mark.parametrize("text", ["", "not json", "[1]", '{"capture_id": 1}'])
def test_text_that_is_not_a_preference_is_refused(text: str) -> None:
    """from_json raises PreferenceError, never a TypeError or KeyError."""
    with pytest.raises(PreferenceError):
        Preference.from_json(text)
