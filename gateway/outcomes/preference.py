"""Blind preferences: which of two hypotheses a reviewer judged better, without their names.

The review workbench (`gateway.server.admin.review`) shows two variants' hypotheses of one
captured utterance as "A" and "B" in a random order. A `Preference` keeps the reviewer's
choice (`a`, `b` or `same`) together with the blind mapping (which variant was A, which B),
so the choice maps back to variants only afterwards (`preferred`). It is keyed by the
capture it judged; a later preference of the same capture replaces the earlier one, and a
withdrawn one (the reviewer's undo) counts as none. `gateway.stores.preference_store`
keeps them; `gateway.analysis.preferences` turns them into a preference rate by unit.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, get_args

Choice = Literal["a", "b", "same"]
CHOICES: Final[tuple[Choice, ...]] = get_args(Choice)
Sample = Literal["uniform", "priority"]
SAMPLES: Final[tuple[Sample, ...]] = get_args(Sample)

_CAPTURE_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_UNIT_CHARS: Final = 256


class PreferenceError(ValueError):
    """A preference that is not valid; the message names the field."""


def _name(field: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise PreferenceError(f"{field}: expected 1-64 letters, digits, '.', '-' or '_'")
    return value


@dataclass(frozen=True, slots=True)
class Preference:
    """One reviewer's review of one capture, with the blind choice between its hypotheses.

    `variant_a` and `variant_b` are the variants shown as A and B, and `choice` the verdict;
    all three are None when the capture had a single hypothesis (the review only labelled
    it). `unit` is the capture's
    pseudonymised unit (the analysis clusters by it); `sample` says how the capture was
    drawn (`uniform` or `priority`); `withdrawn` marks an undone preference. `records` are
    the outcome records the review labelled (the capture's primary and shadows): kept here,
    beside `sample`, because the capture itself expires and the analysis must still know
    which review labels came from priority captures or were withdrawn (empty in
    preferences written before the field existed).
    """

    capture_id: str
    experiment: str
    unit: str
    sample: Sample
    reviewer: str
    choice: Choice | None
    variant_a: str | None
    variant_b: str | None
    reviewed_at: str
    withdrawn: bool = False
    records: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.records, list):  # as JSON gives it back
            object.__setattr__(self, "records", tuple(self.records))
        if not isinstance(self.records, tuple) or not all(
            isinstance(rid, str) and _CAPTURE_ID.fullmatch(rid) for rid in self.records
        ):
            raise PreferenceError("records: expected record ids (32 lower-case hex digits)")
        if not isinstance(self.capture_id, str) or not _CAPTURE_ID.fullmatch(self.capture_id):
            raise PreferenceError("capture_id: expected 32 lower-case hex digits")
        _name("experiment", self.experiment)
        _name("reviewer", self.reviewer)
        if self.choice is None:
            # One hypothesis only: the review labelled it, there was nothing to compare.
            if self.variant_a is not None or self.variant_b is not None:
                raise PreferenceError("choice: needed when variant_a and variant_b are given")
        else:
            _name("variant_a", self.variant_a)
            _name("variant_b", self.variant_b)
            if self.variant_a == self.variant_b:
                raise PreferenceError("variant_b: must differ from variant_a")
        if not isinstance(self.unit, str) or not 0 < len(self.unit) <= _MAX_UNIT_CHARS:
            raise PreferenceError(f"unit: expected 1-{_MAX_UNIT_CHARS} characters")
        if self.choice is not None and self.choice not in CHOICES:
            raise PreferenceError(f"choice: expected one of {', '.join(CHOICES)}")
        if self.sample not in SAMPLES:
            raise PreferenceError(f"sample: expected one of {', '.join(SAMPLES)}")
        if not isinstance(self.reviewed_at, str) or not self.reviewed_at:
            raise PreferenceError("reviewed_at: expected an ISO time")

    @property
    def preferred(self) -> str | None:
        """The variant judged better; None for `same` or without a choice."""
        match self.choice:
            case "a":
                return self.variant_a
            case "b":
                return self.variant_b
            case "same" | None:
                return None

    def withdraw(self, at: str) -> Preference:
        """This preference, undone at `at`."""
        return Preference(**{**asdict(self), "withdrawn": True, "reviewed_at": at})

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Preference:
        """A preference from `to_json`'s text; PreferenceError if it is not one."""
        try:
            data: Any = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PreferenceError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PreferenceError("expected a JSON object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise PreferenceError(f"fields: {exc}") from None
