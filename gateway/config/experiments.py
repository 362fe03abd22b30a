"""The settings of an experiment: its variants, targeting, guardrails and canary set.

These models check shapes and types only; `gateway.config.gateway_config` checks the rest
(names, weights, the variants' backends, overlapping targeting) and builds the frozen
`Experiment`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway.config.capture import CaptureSettings
from gateway.control.model import Mode


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSettings(_Model):
    name: str = Field(description="The variant's name: 1-64 letters, digits, `.`, `-` or `_`.")
    backend: str = Field(description="A key of `gateway.backends`.")
    endpoint_id: str | None = Field(
        None, description="The Custom Speech endpoint id (sent as `cid`); unset: the base model."
    )
    weight: float | None = Field(
        None,
        description="The relative share of new sessions, finite and >= 0; required in an "
        "experiment, refused for `default_variant`.",
    )


class TargetingSettings(_Model):
    modes: list[Mode] = Field(
        default_factory=list, description="The recognition modes it takes; empty: any."
    )
    locales: list[str] = Field(
        default_factory=list,
        description="The locales it takes, e.g. `en-us` (any case; compared in lower case); "
        "empty: any.",
    )
    clients: list[str] = Field(
        default_factory=list,
        description="The client names (from `gateway.clients`) it takes; empty: any.",
    )


class GuardrailSettings(_Model):
    """Automatic rollback of a challenger that does worse than control (docs/admin.md).

    Each limit is the largest increase over control tolerated; unset turns that guardrail
    off. Nothing is tested before both arms of the current phase have `min_outcomes`.
    """

    max_error_rate_increase: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="The largest tolerated increase of the error rate (0.05: 5 points).",
    )
    max_cancellation_rate_increase: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="The largest tolerated increase of the cancellation rate (refusals: "
        "throttling, bad or forbidden requests).",
    )
    max_no_match_rate_increase: float | None = Field(
        None, gt=0, lt=1, description="The largest tolerated increase of the no-match rate."
    )
    latency_quantile: float = Field(
        0.9, gt=0, lt=1, description="The quantile of final-result latency compared (0.9: p90)."
    )
    max_latency_increase_ms: float | None = Field(
        None,
        gt=0,
        le=600_000,
        description="The largest tolerated increase of that latency quantile, in ms.",
    )
    min_outcomes: int = Field(
        50,
        ge=20,
        le=1_000_000,
        description="The outcomes each arm of the phase needs before anything is tested.",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        le=0.5,
        description="The largest chance that any guardrail of a challenger ever trips while "
        "every true increase is within its limit (shared by its guardrails).",
    )


class CanarySettings(_Model):
    """A labelled canary set the gateway sends to every variant on a schedule, to notice a
    model that changed under a variant (docs/health.md)."""

    dataset: Path = Field(
        description='A folder in the replay format: `manifest.jsonl` (one `{"id", '
        '"audio", "text"}` a line, audio relative to the folder) and 16 kHz 16-bit '
        "mono WAV files. Relative to the settings file."
    )
    interval_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="How often a round starts, in seconds; a round sends every item to "
        "every variant, one utterance at a time, and rounds never overlap.",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="How long one canary utterance may take, connection included, in "
        "seconds; past it the utterance counts as failed (`timeout`).",
    )
    baseline_rounds: int = Field(
        3,
        ge=1,
        le=1000,
        description="Rounds that make a variant's baseline (after start, a new phase or a "
        "model change) before its WER is tested for a change.",
    )
    alpha: float = Field(
        0.01,
        gt=0,
        le=0.5,
        description="The largest chance that the change test ever raises a false alarm for "
        "a variant whose model did not change, over any number of rounds.",
    )
    min_change_points: float = Field(
        2.0,
        ge=0,
        lt=100,
        description="The smallest change of a variant's canary WER worth an alert, in "
        "percentage points.",
    )
    pause_on_alert: bool = Field(
        False,
        description="An alert about a challenger also rolls it back to weight 0 (a new "
        "phase), as a guardrail does.",
    )


class ExperimentSettings(_Model):
    id: str = Field(
        description="The experiment's id: 1-64 letters, digits, `.`, `-` or `_`; not `_default`."
    )
    seed: str | None = Field(
        None,
        description="The assignment hash's seed; unset: the id. Changing it re-randomises "
        "every unit.",
    )
    control: str = Field(
        description="The variant challengers are compared with; it serves paused and "
        "failed-over sessions."
    )
    variants: list[VariantSettings] = Field(
        description="The variants; at least one, and not every weight 0."
    )
    shadows: list[str] = Field(
        default_factory=list,
        description="Variants that also get every WebSocket session's audio, live; their "
        "results are recorded, never sent to the client.",
    )
    targeting: TargetingSettings = Field(
        TargetingSettings(),
        description="The requests it takes; a request goes to the first experiment that matches.",
    )
    locale: str | None = Field(
        None,
        description="The locale it assumes for a session whose URL names none (the native "
        "SDK omits `language` when an `endpoint_id` is set and no recognition language is; "
        "the universal v2 path carries it only inside the session), e.g. `en-US`: matched "
        "against `targeting.locales` and recorded as the session's `locale` (in lower "
        "case). It must be one of `targeting.locales` when those are set. Unset: such "
        "sessions have no locale and match only experiments without `targeting.locales`.",
    )
    unit_param: str = Field(
        "gw-unit",
        description="The query parameter that carries the unit id (or the `X-Gateway-Unit` "
        "header); neither given: the connection id.",
    )
    guardrails: GuardrailSettings | None = Field(
        None, description="Automatic rollback of a challenger; unset: none."
    )
    min_wer_gain_points: float = Field(
        0.0,
        ge=0,
        lt=100,
        description="The smallest WER gain worth shipping, in percentage points (1.0: from "
        "12 % to 11 %): the analysis recommends shipping a challenger only when its gain is "
        "shown to be at least this; 0: any gain.",
    )
    holdout_share: float = Field(
        0.05,
        gt=0,
        le=0.5,
        description="Control's share of the traffic once a challenger is shipped (`admin "
        "ship`): the holdout that keeps measuring the shipped model against the old one.",
    )
    canary: CanarySettings | None = Field(
        None, description="A canary set sent to every variant on a schedule; unset: none."
    )
    terms: Path | None = Field(
        None,
        description="The domain terms whose recall and precision the error analysis reports "
        "per variant: a text file, one term per line (docs/error-analysis.md); unset: none.",
    )
    terms_corpus: Path | None = Field(
        None,
        description="A custom model's training corpus (plain text, a sentence a line) from "
        "which the error analysis derives its term list by a documented rule, instead of "
        "`terms` (docs/error-analysis.md); unset: none.",
    )
    synonyms: Path | None = Field(
        None,
        description="Equivalent forms (`okay = ok`) the error analysis applies to both arms "
        "when it separates style from substance (docs/error-analysis.md); unset: none.",
    )
    capture: CaptureSettings | None = Field(
        None,
        description="Sampled audio capture for human labelling (docs/capture.md); unset: none.",
    )
