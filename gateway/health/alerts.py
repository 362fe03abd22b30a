"""Health alerts and the latch that makes each one fire once.

An `Alert` is what the monitor logs, counts, writes to the experiment's audit and posts to
the webhook: `to_dict()` is its JSON form, the same everywhere. A condition such as "the
canary WER changed" holds round after round until someone acts; `AlertLatch` turns it into
one alert per (experiment, variant, kind, key) until it is cleared (a new phase, a reset
baseline), so an operator is told once, not every five minutes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

AlertKind = Literal[
    "canary_wer_change", "canary_matches_base", "model_changed", "model_expiring", "canary_failing"
]
ALERT_KINDS: Final[tuple[str, ...]] = get_args(AlertKind)


def utc_now() -> str:
    """The current time as an alert's `at`: ISO-8601 UTC to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Alert:
    """One health alert. `detail` must be JSON-able; `message` is one line."""

    experiment: str
    variant: str | None
    kind: AlertKind
    message: str  # one line, for logs and humans
    detail: Mapping[str, Any] = field(default_factory=dict)  # JSON-able
    at: str = field(default_factory=utc_now)  # ISO-8601 UTC

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ValueError("an alert needs an experiment")
        if self.kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {self.kind!r}; known: {', '.join(ALERT_KINDS)}")
        if not self.message or "\n" in self.message or "\r" in self.message:
            raise ValueError(f"an alert's message must be one non-empty line, got {self.message!r}")
        try:
            # allow_nan=False: NaN and infinity are not JSON, and a webhook receiver chokes.
            json.dumps(self.detail, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"alert detail is not JSON-able: {error}") from error
        try:
            moment = datetime.fromisoformat(self.at)
        except ValueError:
            raise ValueError(f"alert time must be ISO-8601, got {self.at!r}") from None
        if moment.utcoffset() is None or moment.utcoffset() != UTC.utcoffset(None):
            raise ValueError(f"alert time must be in UTC, got {self.at!r}")
        # A private copy: the caller's dict may change after the alert is made.
        object.__setattr__(self, "detail", MappingProxyType(json.loads(json.dumps(self.detail))))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (log event, audit entry, webhook body)."""
        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "kind": self.kind,
            "message": self.message,
            "detail": json.loads(json.dumps(dict(self.detail))),
            "at": self.at,
        }


_Key = tuple[str, str | None, str, str]


class AlertLatch:
    """An alert fires once per (experiment, variant, kind, key) until cleared.

    `key` separates conditions of one kind that deserve an alert each, e.g. the endpoint and
    the expiry kind of a `model_expiring` alert.
    """

    def __init__(self) -> None:
        self._fired: set[_Key] = set()

    def fire(self, alert: Alert, key: str = "") -> bool:
        """True the first time this (experiment, variant, kind, key) fires since its clear."""
        latch = (alert.experiment, alert.variant, alert.kind, key)
        if latch in self._fired:
            return False
        self._fired.add(latch)
        return True

    def clear(self, experiment: str, variant: str | None = None) -> None:
        """Re-arm an experiment's alerts: every variant's, or only `variant`'s."""
        self._fired = {
            latch
            for latch in self._fired
            if latch[0] != experiment or (variant is not None and latch[1] != variant)
        }

    def active(self, experiment: str) -> list[tuple[str | None, str, str]]:
        """(variant, kind, key) of the experiment's alerts that fired and are not cleared."""
        return sorted(
            ((v, kind, key) for e, v, kind, key in self._fired if e == experiment),
            key=lambda latch: (latch[0] or "", latch[1], latch[2]),
        )
