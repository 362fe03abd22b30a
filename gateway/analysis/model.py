"""The analysis's value types: how it decides (`AnalysisOptions`), what it knows of the
experiment (`ExperimentInfo`), the JSON shape of the report it produces (`Json`), and how a
window's bounds are read (`parse_moment`).

Every analysis module reads these; none of them computes anything, so this module sits below
the rest of the package and imports none of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the command line imports this module for its defaults
    from gateway.control.guardrails import Guardrails
    from gateway.control.model import Experiment

# A JSON object of the report (docs/analysis.md), or a part of one.
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """How the analysis decides; every default is documented in docs/analysis.md."""

    confidence: float = 0.95
    srm_threshold: float = 0.001
    resamples: int = 2000
    seed: int = 0
    min_labelled: int = 20  # labelled utterances per arm before WER can decide anything
    min_outcomes: int = 20  # outcomes per arm before a guardrail can trip
    rate_margin: float = 0.01  # a rate guardrail trips only above +1 point
    latency_margin_ms: float = 50.0  # a latency guardrail trips only above +50 ms ...
    latency_margin_share: float = 0.10  # ... and above +10 % of the control's median
    max_buckets: int = 48
    drift_window_s: int = 86400  # the drift section's windows (one day)
    # Above this many labelled utterances the error analysis reads a sample of units
    # (gateway.analysis.unit_sample); the headline numbers never sample.
    error_labelled: int = 5_000

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.resamples < 100:
            raise ValueError(f"resamples must be at least 100, got {self.resamples}")
        if self.min_labelled < 1 or self.min_outcomes < 1 or self.max_buckets < 1:
            raise ValueError("min_labelled, min_outcomes and max_buckets must be at least 1")
        if not 0 < self.rate_margin < 1:
            raise ValueError(f"rate_margin must be in (0, 1), got {self.rate_margin}")
        if not (self.latency_margin_ms > 0 and self.latency_margin_share >= 0):
            raise ValueError("latency_margin_ms must be > 0 and latency_margin_share >= 0")
        if self.error_labelled < 1:
            raise ValueError(f"error_labelled must be at least 1, got {self.error_labelled}")
        if self.drift_window_s < 60:
            raise ValueError(f"drift_window_s must be at least 60, got {self.drift_window_s}")

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    """What the configuration knows of an experiment: its control and current split."""

    control: str
    phase: str | None = None  # the current phase
    shares: Mapping[str, float] = field(default_factory=dict)  # current traffic shares
    # Earlier phases' shares, from the control plane's phase history: their SRM check.
    phase_shares: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # The action that opened each phase, where the phase history is known ("ship": the
    # drift section follows that phase).
    phase_origins: Mapping[str, str | None] = field(default_factory=dict)
    # The smallest WER gain worth shipping, as a fraction (0.01: one point); 0: any gain.
    min_wer_gain: float = 0.0
    # The experiment's configured guardrails: the analysis tests the same limits.
    guardrails: Guardrails | None = None

    @classmethod
    def of(
        cls,
        experiment: Experiment,
        history: Mapping[str, Mapping[str, float]] | None = None,
        origins: Mapping[str, str | None] | None = None,
    ) -> ExperimentInfo:
        """The experiment as configured now; `history` maps earlier phases to their
        weights and `origins` to the action that opened them (`ExperimentState.phases`)."""
        phase_shares = {
            phase: {name: w / sum(weights.values()) for name, w in weights.items()}
            for phase, weights in (history or {}).items()
            if sum(weights.values()) > 0
        }
        return cls(
            control=experiment.control,
            phase=experiment.phase,
            shares=experiment.shares,
            phase_shares=phase_shares,
            phase_origins=shipped_continues(origins or {}),
            min_wer_gain=experiment.min_wer_gain,
            guardrails=experiment.guardrails,
        )

    def shares_of(self, phase: str) -> Mapping[str, float] | None:
        """The traffic shares of `phase`, if known."""
        if phase == self.phase:
            return self.shares
        return self.phase_shares.get(phase)


def shipped_continues(origins: Mapping[str, str | None]) -> dict[str, str | None]:
    """The phases' origins (in the order they were opened), where a phase the health monitor
    opened after a model change (`new_phase`: the same split, another model behind an
    endpoint) continues a shipped phase as shipped: the drift watch goes on, on the new
    model's results alone."""
    found: dict[str, str | None] = {}
    before: str | None = None
    for phase, origin in origins.items():
        found[phase] = "ship" if origin == "new_phase" and before == "ship" else origin
        before = found[phase]
    return found


def parse_moment(value: str) -> datetime:
    """An ISO-8601 time with a time zone (window bounds); ValueError saying what is wrong."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO-8601 time such as 2026-01-31T12:00:00Z"
        ) from None
    if moment.utcoffset() is None:
        raise ValueError(f"{value!r} needs a time zone, e.g. a trailing Z for UTC")
    return moment
