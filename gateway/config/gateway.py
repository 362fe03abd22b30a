"""The `[gateway]` settings section and its one validation point.

The pydantic models below only check shapes and types (the settings loader maps their
errors). `build_gateway_config` checks everything that involves more than one field, reads
the backends' secrets, and returns the frozen `GatewayConfig` that requests are served
with. Every problem is a `ConfigError` naming the dotted field an operator can find, e.g.
`gateway.experiments[0].variants[1].weight`; nothing is ever repaired.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gateway.config.capture import AudioSettings, CaptureSettings, capture_policies
from gateway.config.secrets import read_secret_file
from gateway.constants import NO_EXPERIMENT
from gateway.control.assignment import phase_id
from gateway.control.breaker import BreakerPolicy
from gateway.control.guardrails import Guardrails
from gateway.control.model import (
    Backend,
    Canary,
    Client,
    Experiment,
    GatewayConfig,
    HealthConfig,
    Mode,
    Targeting,
    Variant,
    hash_key,
)
from gateway.errors import ConfigError
from gateway.health.canary import CANARY_CLIENT, load_references

# Names travel in query parameters (`gw-variant`), records and metric labels.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENDPOINT_ID = re.compile(r"[A-Za-z0-9_-]+")
_DIGEST = re.compile(r"[0-9a-f]{64}")
# RFC 3986 "unreserved": safe in a query string without percent-encoding.
_PARAM = re.compile(r"[A-Za-z0-9._~-]+")
# Query parameters the Speech service or the gateway's auth reads: a unit or force parameter
# of the same name would be taken from the client and never reach the backend.
_RESERVED_PARAMS = frozenset(
    {"language", "format", "cid", "profanity", "ocp-apim-subscription-key", "authorization"}
    | {"x-connectionid", "storeaudio", "wordleveltimestamps", "deploymentid"}
)
_LOCALE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")
_SCHEMES = ("ws", "wss", "http", "https")
_EMPTY_KEY_DIGEST = hash_key("")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSettings(_Model):
    url: str = Field(
        description="The service root: `ws`, `wss`, `http` or `https`, a host, optionally a "
        "port and a path prefix; no credentials, query or fragment."
    )
    key: SecretStr | None = Field(None, description="The backend's subscription key.")
    key_file: Path | None = Field(
        None,
        description="A file holding `key`; set one of them, or neither for a backend "
        "without auth (a local emulator, a Speech container).",
    )
    management_url: str | None = Field(
        None,
        description="The Speech resource's management API root (`http` or `https`, no "
        "credentials, query or fragment), e.g. `https://westus.api.cognitive.microsoft.com`: "
        "the gateway reads its Custom Speech models and endpoints there (expiry dates, the "
        "model behind each custom endpoint). Unset: no lifecycle checks.",
    )
    management_key: SecretStr | None = Field(
        None,
        description="The Speech resource key for `management_url`; with neither it nor "
        "`management_key_file`, the backend's own key.",
    )
    management_key_file: Path | None = Field(None, description="A file holding `management_key`.")


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


class HealthSettings(_Model):
    """The model-health machinery of this process: canaries, lifecycle checks, alerts."""

    run: bool = Field(
        True,
        description="Canaries and lifecycle checks run in this process; with several "
        "replicas, turn it on in one only.",
    )
    webhook_url: str | None = Field(
        None,
        repr=False,
        description="Alerts are POSTed here as JSON (`http` or `https`); unset or empty: "
        "no webhook. It may carry a token; it is never logged.",
    )
    webhook_timeout_s: float = Field(
        5.0, gt=0, le=60, description="How long one webhook delivery may take, in seconds."
    )
    webhook_attempts: int = Field(
        3, ge=1, le=10, description="Deliveries tried per alert before it is given up."
    )
    lifecycle_interval_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86_400,
        description="How often the Custom Speech API of each backend with a "
        "`management_url` is read, in seconds.",
    )
    expiry_warning_days: int = Field(
        30,
        ge=0,
        le=3650,
        description="A custom model whose adaptation or transcription expiry is this many "
        "days away or less raises a warning.",
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


class ClientSettings(_Model):
    name: str = Field(
        description="The client's name, recorded on its outcomes: 1-64 letters, digits, `.`, "
        "`-` or `_`."
    )
    key_sha256: str = Field(
        description="The SHA-256 of the client key, 64 lower-case hex digits (`speech-gateway "
        "keygen` prints it for a new key); the key is never stored."
    )
    can_force: bool = Field(
        False,
        description="The client may force a variant (`force_param` or the `X-Gateway-Variant` "
        "header), for QA.",
    )
    capture_consent: bool = Field(
        False,
        description="Its sessions' audio may be captured for labelling (docs/capture.md); "
        "off: never.",
    )


class BreakerSettings(_Model):
    """The circuit breaker each backend gets (`gateway.control.breaker`). It counts client
    sessions: the SDK's retries of one session (same X-ConnectionId) count once."""

    consecutive_failures: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Failing client sessions in a row that open the breaker (an SDK session's "
        "retries count once; any dial that connects ends the run).",
    )
    failure_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Or: this share of failing client sessions within `window_s` opens it.",
    )
    window_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="The window of `failure_rate`, in seconds; a failed client session's "
        "further dials within it are retries.",
    )
    min_attempts: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description="Client sessions within the window before `failure_rate` applies.",
    )
    open_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="How long it stays open before it turns half-open, in seconds.",
    )
    half_open_probes: int = Field(
        1, ge=1, le=1000, description="Sessions let through at once while half-open."
    )
    on_open: Literal["failover", "reject"] = Field(
        "failover",
        description="While it is open, sessions assigned to the backend go to the "
        "experiment's control variant (`failover`, recorded as such) or are refused "
        "(`reject`).",
    )

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            consecutive_failures=self.consecutive_failures,
            failure_rate=self.failure_rate,
            window_s=self.window_s,
            min_attempts=self.min_attempts,
            open_s=self.open_s,
            half_open_probes=self.half_open_probes,
        )


class ControlSettings(_Model):
    """Where the experiments' live state is kept and how often it is checked."""

    store: Literal["auto", "file", "redis"] = Field(
        "auto",
        description="`redis`: in the `[redis]` Redis, shared by every replica; `file`: one "
        "process; `auto`: Redis when `outcomes.store` is `redis`, else the file.",
    )
    state_path: Path | None = Field(
        None,
        description="The file store's state; unset: `control-state.json` beside `outcomes.path`.",
    )
    # Pub/sub notices can be lost; this check bounds how late such a change arrives.
    reconcile_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often every replica compares its state versions with the store, "
        "in seconds.",
    )
    guardrail_interval_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description="How often counts are shared and guardrails tested, in seconds.",
    )


class DrainSettings(_Model):
    """What `speech-gateway serve` does on SIGTERM (docs/observability.md)."""

    grace_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="How long live sessions may go on after SIGTERM, in seconds; then they "
        "are closed with 1012 (the SDKs reconnect). Keep it below the orchestrator's kill "
        "timeout (Kubernetes: terminationGracePeriodSeconds) minus `close_timeout_s`.",
    )
    close_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long the sessions closed at the end of the grace period may take "
        "to end, and the server's handlers to finish, in seconds.",
    )


_KIB = 1024
_MIB = 1024 * _KIB
_GIB = 1024 * _MIB


class LimitSettings(_Model):
    """What one client, session or request may use (docs/gateway.md, "Limits"). Every limit
    applies per gateway process. Past one, the client gets the answer the Speech SDKs map to
    a precise error, and the session gets one `session_failure` record with `error_code`
    `limit_<name>`. The defaults never bother a normal Speech SDK user (a continuous
    recognition of an hour-long file included) but bound what one misbehaving client costs.
    """

    max_ws_message_bytes: int = Field(
        1 * _MIB,
        ge=4 * _KIB,
        le=64 * _MIB,
        description="The largest WebSocket message a client may send; past it the connection "
        "is closed with 1009 (native SDK: ConnectionFailure). Binary (audio) messages are "
        "bounded by the smaller of this and 64 KiB (the native SDK sends 3,200-byte chunks). "
        "The default leaves room for a `speech.context` with long phrase lists.",
    )
    max_usp_header_bytes: int = Field(
        8 * _KIB,
        ge=256,
        le=64 * _KIB,
        description="The largest headers block of one USP message; past it the connection "
        "is closed with 1002 (a protocol violation). 8 KiB is the limit of the service's "
        "protocol documentation.",
    )
    max_turn_audio_bytes: int = Field(
        256 * _MIB,
        ge=4 * _KIB,
        le=64 * _GIB,
        description="The audio one turn may carry, in bytes (replayed audio included). Past "
        "it the connection is closed with 1007 and the limit as the reason (SDK: BadRequest, "
        "no retry). The default is about 2 h 20 min of 16 kHz 16-bit mono PCM: the real "
        "service ends turns every 10 minutes, but a backend that does not (the emulator) "
        "takes an hour-long file in one turn.",
    )
    max_session_audio_bytes: int = Field(
        1 * _GIB,
        ge=4 * _KIB,
        le=256 * _GIB,
        description="The audio one WebSocket session may carry over all its turns, in bytes. "
        "Past it, as for `max_turn_audio_bytes`. The default is about 9 h of 16 kHz 16-bit "
        "mono PCM, more than `max_session_s` allows at real time.",
    )
    max_session_s: float = Field(
        4 * 3600.0,
        gt=0,
        le=7 * 86400.0,
        description="How long one WebSocket session may last, in seconds; then it is closed "
        "with 1000, as the service closes its own long connections: the SDK reconnects and "
        "replays the unacknowledged audio, unnoticed by the application.",
    )
    idle_timeout_s: float = Field(
        300.0,
        gt=0,
        le=86400.0,
        description="How long a client may send nothing on its WebSocket, in seconds; then it "
        "is closed with 1000 and `Exceeded maximum websocket connection idle duration`, as "
        "the service does after the same 300 s. The SDKs reconnect when next needed.",
    )
    max_sessions_total: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Concurrent sessions (WebSocket connections and REST requests) of the "
        "process; past it new ones get HTTP 503 (SDK: ServiceUnavailable, retried), so a load "
        "balancer's other replicas take them. Twice the 1,000 streams one process is sized for.",
    )
    max_sessions_per_client: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Concurrent sessions of one client key; past it new ones get HTTP 429 "
        "(SDK: TooManyRequests), so one application cannot take the whole process.",
    )
    connections_per_client_per_s: float = Field(
        200.0,
        gt=0,
        le=1_000_000.0,
        description="New sessions (WebSocket upgrades and REST requests) one client key may "
        "open per second, on average (a token bucket); past it HTTP 429 with Retry-After "
        "(SDK: TooManyRequests). It stops a client stuck in a reconnect loop.",
    )
    connection_burst: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="How many new sessions one client key may open at once before "
        "`connections_per_client_per_s` applies (the token bucket's size): a fleet of "
        "devices reconnecting together after a network outage is let in.",
    )
    max_rest_body_bytes: int = Field(
        10 * _MIB,
        ge=1 * _KIB,
        le=1 * _GIB,
        description="The largest REST short-audio request body; past it HTTP 413. The REST "
        "API takes at most 60 s of audio (about 2 MB of 16 kHz PCM).",
    )
    rest_body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long a REST request's body may pause between two reads, in "
        "seconds; past it HTTP 408. Bounds clients that open a request and stall, each "
        "holding a session slot.",
    )


class GatewaySettings(_Model):
    host: str = Field("127.0.0.1", description="The address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="The port to listen on (0: a free one).")
    clients: list[ClientSettings] = Field(
        default_factory=list, description="The applications' client keys."
    )
    backends: dict[str, BackendSettings] = Field(
        default_factory=dict,
        description="The speech services, by name (1-64 letters, digits, `.`, `-` or `_`).",
    )
    experiments: list[ExperimentSettings] = Field(
        default_factory=list,
        description="The experiments, in order: a request goes to the first that matches.",
    )
    default_variant: VariantSettings | None = Field(
        None, description="Where requests no experiment matches go; unset: refused (400)."
    )
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="The handshake timeout to a backend, primary or shadow, in seconds.",
    )
    # The default: 60 s of audio (the REST maximum) plus a margin.
    rest_timeout_s: float = Field(
        90.0,
        gt=0,
        le=600,
        description="REST: the longest a backend may stay silent while answering, in seconds "
        "(past it: 503).",
    )
    shadow_queue_frames: int = Field(
        200, ge=1, description="Audio frames queued per shadow; past it frames are dropped."
    )
    shadow_grace_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="How long shadows may take to deliver their final results after the "
        "primary session ended, in seconds.",
    )
    force_param: str = Field(
        "gw-variant",
        description="The query parameter a permitted client forces a variant with (QA).",
    )
    admin_tokens_sha256: dict[str, str] = Field(
        default_factory=dict,
        description="Admin credentials (admin and labels APIs, dashboard): name = SHA-256 of "
        "the bearer token. Digests only.",
    )
    reviewer_tokens_sha256: dict[str, str] = Field(
        default_factory=dict,
        description="Reviewer credentials, accepted by the review workbench only (docs/"
        "review.md): name = SHA-256 of the bearer token. Digests only.",
    )
    breaker: BreakerSettings = Field(
        BreakerSettings(), description="The circuit breaker of each backend."
    )
    control: ControlSettings = Field(
        ControlSettings(), description="Where the experiments' live state is kept."
    )
    drain: DrainSettings = Field(
        DrainSettings(), description="The graceful drain on SIGTERM (`serve`)."
    )
    limits: LimitSettings = Field(
        LimitSettings(), description="What one client, session or request may use."
    )
    health: HealthSettings = Field(
        HealthSettings(), description="Canaries, lifecycle checks and their alerts."
    )
    audio: AudioSettings = Field(
        AudioSettings(), description="The store of captured audio (docs/capture.md)."
    )
    ready_requires_redis: bool = Field(
        False,
        description="`/readyz` answers 503 while a Redis the gateway uses does not answer "
        "(the load balancer then takes the replica out). Off: it stays ready through a Redis "
        "outage, since the gateway serves on (records wait in the journal; the state it "
        "holds keeps serving) and names the outage in its answer; every replica would "
        "otherwise be taken out at once.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_rest_body_bytes" in data:
            raise ValueError(
                "max_rest_body_bytes has moved to gateway.limits.max_rest_body_bytes "
                "(environment: SPEECH_GATEWAY_GATEWAY__LIMITS__MAX_REST_BODY_BYTES)"
            )
        return data


def build_gateway_config(settings: GatewaySettings) -> GatewayConfig:
    """Validate the whole section and build the frozen model; ConfigError on any problem."""
    prefix = "gateway"
    _check_param(settings.force_param, f"{prefix}.force_param")
    backends = {
        name: _backend(name, backend, f"{prefix}.backends.{name}")
        for name, backend in settings.backends.items()
    }
    clients = _clients(settings.clients, f"{prefix}.clients")
    client_names = {client.name for client in clients}
    experiments: list[Experiment] = []
    seen_ids: set[str] = set()
    for index, experiment_settings in enumerate(settings.experiments):
        where = f"{prefix}.experiments[{index}]"
        experiment = _experiment(experiment_settings, where, backends, client_names)
        if experiment.id in seen_ids:
            raise ConfigError(f"{where}.id", f"duplicate experiment id {experiment.id!r}")
        seen_ids.add(experiment.id)
        if experiment.unit_param.lower() == settings.force_param.lower():
            raise ConfigError(
                f"{where}.unit_param",
                f"{experiment.unit_param!r} is also {prefix}.force_param",
            )
        for earlier_index, earlier in enumerate(experiments):
            if _covers(earlier, experiment):
                raise ConfigError(
                    f"{where}.targeting",
                    f"never selected: {prefix}.experiments[{earlier_index}] ({earlier.id!r}) "
                    "comes first and matches every request this one targets",
                )
        experiments.append(experiment)
    capture_policies(settings.experiments)
    settings.audio.check()
    default = None
    if settings.default_variant is not None:
        default = _default_variant(settings.default_variant, f"{prefix}.default_variant", backends)
    return GatewayConfig(
        clients=clients,
        experiments=tuple(experiments),
        default_variant=default,
        health=_health(settings.health, f"{prefix}.health"),
    )


def _backend(name: str, settings: BackendSettings, where: str) -> Backend:
    _check_name(name, where)
    url = settings.url
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(f"{where}.url", "contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"{where}.url", f"scheme must be one of {', '.join(_SCHEMES)}, not {parts.scheme!r}"
        )
    if not parts.hostname:
        raise ConfigError(f"{where}.url", "has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}.url", "carries credentials; use key or key_file")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"{where}.url", "must be the service root, without query or fragment")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ConfigError(f"{where}.url", f"bad port: {exc}") from exc
    # "ws://host:5000/" and "ws://host:5000" name the same root; paths are appended to it.
    root = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    key = _backend_key(settings, where)
    management_url = None
    management_key = None
    if settings.management_url is not None:
        management_url = _http_root(settings.management_url, f"{where}.management_url")
        management_key = _management_key(settings, where)
        if management_key is None:
            management_key = key  # one Speech resource key serves both APIs
    elif settings.management_key is not None or settings.management_key_file is not None:
        field = "management_key" if settings.management_key is not None else "management_key_file"
        raise ConfigError(f"{where}.{field}", "has no use without management_url")
    return Backend(
        name=name,
        url=root,
        key=key,
        management_url=management_url,
        management_key=management_key,
    )


def _http_root(url: str, where: str) -> str:
    """An `http(s)` API root without credentials, query or fragment, no trailing slash."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(where, "contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(where, f"scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise ConfigError(where, "has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(where, "carries credentials; use management_key or management_key_file")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(where, "must be the API root, without query or fragment")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ConfigError(where, f"bad port: {exc}") from exc
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _management_key(settings: BackendSettings, where: str) -> str | None:
    if settings.management_key is not None and settings.management_key_file is not None:
        raise ConfigError(
            f"{where}.management_key_file", "set management_key or management_key_file, not both"
        )
    if settings.management_key is not None:
        key, field = settings.management_key.get_secret_value(), f"{where}.management_key"
    elif settings.management_key_file is not None:
        field = f"{where}.management_key_file"
        key = read_secret_file(settings.management_key_file, field)
    else:
        return None
    if not key:
        raise ConfigError(field, "the key is empty; leave it unset to use the backend's key")
    return key


def _health(settings: HealthSettings, where: str) -> HealthConfig:
    webhook_url = settings.webhook_url or None  # "" as in the example file: no webhook
    if webhook_url is not None:
        _check_webhook_url(webhook_url, f"{where}.webhook_url")
    return HealthConfig(
        run=settings.run,
        webhook_url=webhook_url,
        webhook_timeout_s=settings.webhook_timeout_s,
        webhook_attempts=settings.webhook_attempts,
        lifecycle_interval_s=settings.lifecycle_interval_s,
        expiry_warning_days=settings.expiry_warning_days,
    )


def _check_webhook_url(url: str, where: str) -> None:
    # Messages never repeat the URL: its path or query may hold the receiver's token.
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(where, "contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(where, "scheme must be http or https")
    if not parts.hostname:
        raise ConfigError(where, "has no host")
    if parts.fragment or url.endswith("#"):
        raise ConfigError(where, "must not have a fragment")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise ConfigError(where, "has a bad port") from None


def _text_file(path: Path | None, where: str) -> Path | None:
    """A file the analysis reads (its content is checked there, with its line numbers)."""
    if path is not None and not path.is_file():
        raise ConfigError(where, f"{path} is not a readable file")
    return path


def _canary(settings: CanarySettings | None, where: str) -> Canary | None:
    if settings is None:
        return None
    try:
        load_references(settings.dataset)
    except ConfigError as exc:
        raise ConfigError(f"{where}.dataset", f"{exc.field}: {exc.problem}") from exc
    return Canary(
        dataset=settings.dataset,
        interval_s=settings.interval_s,
        timeout_s=settings.timeout_s,
        baseline_rounds=settings.baseline_rounds,
        alpha=settings.alpha,
        min_change_points=settings.min_change_points,
        pause_on_alert=settings.pause_on_alert,
    )


def _backend_key(settings: BackendSettings, where: str) -> str | None:
    if settings.key is not None and settings.key_file is not None:
        raise ConfigError(f"{where}.key_file", "set key or key_file, not both")
    if settings.key is not None:
        key, field = settings.key.get_secret_value(), f"{where}.key"
    elif settings.key_file is not None:
        field = f"{where}.key_file"
        key = read_secret_file(settings.key_file, field)
    else:
        return None  # e.g. a local emulator or a Speech container without auth
    if not key:
        raise ConfigError(field, "the key is empty; leave it unset for a backend without auth")
    return key


def _clients(settings: list[ClientSettings], where: str) -> tuple[Client, ...]:
    names: set[str] = set()
    digests: set[str] = set()
    clients: list[Client] = []
    for index, client in enumerate(settings):
        at = f"{where}[{index}]"
        _check_name(client.name, f"{at}.name")
        if client.name == CANARY_CLIENT:
            raise ConfigError(f"{at}.name", f"{CANARY_CLIENT!r} is reserved for canary records")
        if client.name in names:
            raise ConfigError(f"{at}.name", f"duplicate client name {client.name!r}")
        if not _DIGEST.fullmatch(client.key_sha256):
            raise ConfigError(f"{at}.key_sha256", "must be 64 lower-case hex digits (SHA-256)")
        if client.key_sha256 in digests:
            raise ConfigError(f"{at}.key_sha256", "the same key digest as an earlier client")
        if client.key_sha256 == _EMPTY_KEY_DIGEST:
            raise ConfigError(f"{at}.key_sha256", "is the digest of the empty key")
        names.add(client.name)
        digests.add(client.key_sha256)
        clients.append(Client(client.name, client.key_sha256, client.can_force))
    return tuple(clients)


def _experiment(
    settings: ExperimentSettings,
    where: str,
    backends: dict[str, Backend],
    client_names: set[str],
) -> Experiment:
    _check_name(settings.id, f"{where}.id")
    if settings.id == NO_EXPERIMENT:
        # Outcomes of sessions no experiment matched are stored under this id.
        raise ConfigError(f"{where}.id", f"{NO_EXPERIMENT!r} is reserved")
    seed = settings.id if settings.seed is None else settings.seed
    if not seed or not seed.isprintable():
        raise ConfigError(
            f"{where}.seed", "must be non-empty printable text; leave it unset for the id"
        )
    _check_param(settings.unit_param, f"{where}.unit_param")
    targeting = _targeting(settings.targeting, f"{where}.targeting", client_names)
    locale = _assumed_locale(settings.locale, targeting, f"{where}.locale")
    if not settings.variants:
        raise ConfigError(f"{where}.variants", "the experiment has no variants")
    variants: list[Variant] = []
    for index, variant_settings in enumerate(settings.variants):
        at = f"{where}.variants[{index}]"
        if variant_settings.name in {variant.name for variant in variants}:
            raise ConfigError(f"{at}.name", f"duplicate variant name {variant_settings.name!r}")
        weight = variant_settings.weight
        if weight is None:
            raise ConfigError(f"{at}.weight", "is required")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{at}.weight", f"must be a finite number >= 0, not {weight!r}")
        variants.append(_variant(variant_settings, at, backends, weight))
    # Summed left to right, as `assignment.edges` does.
    total = sum(variant.weight for variant in variants)
    if not math.isfinite(total):
        raise ConfigError(f"{where}.variants", "the weights add up to infinity")
    if total == 0:
        raise ConfigError(f"{where}.variants", "every weight is zero; no variant gets traffic")
    names = [variant.name for variant in variants]
    if settings.control not in names:
        raise ConfigError(
            f"{where}.control", f"{settings.control!r} is not a variant ({', '.join(names)})"
        )
    for index, shadow in enumerate(settings.shadows):
        at = f"{where}.shadows[{index}]"
        if shadow not in names:
            raise ConfigError(at, f"{shadow!r} is not a variant ({', '.join(names)})")
        if shadow in settings.shadows[:index]:
            raise ConfigError(at, f"duplicate shadow {shadow!r}")
    if settings.terms is not None and settings.terms_corpus is not None:
        raise ConfigError(f"{where}.terms_corpus", "set terms or terms_corpus, not both")
    return Experiment(
        id=settings.id,
        seed=seed,
        control=settings.control,
        variants=tuple(variants),
        shadows=tuple(settings.shadows),
        targeting=targeting,
        phase=phase_id(variants),
        unit_param=settings.unit_param,
        guardrails=_guardrails(settings.guardrails, f"{where}.guardrails"),
        locale=locale,
        min_wer_gain=settings.min_wer_gain_points / 100,
        canary=_canary(settings.canary, f"{where}.canary"),
        holdout_share=settings.holdout_share,
        terms=_text_file(settings.terms, f"{where}.terms"),
        terms_corpus=_text_file(settings.terms_corpus, f"{where}.terms_corpus"),
        synonyms=_text_file(settings.synonyms, f"{where}.synonyms"),
    )


def _assumed_locale(locale: str | None, targeting: Targeting, where: str) -> str | None:
    """The experiment's `locale`, in lower case as requests' locales are compared."""
    if locale is None:
        return None
    lowered = locale.lower()
    if not _LOCALE.fullmatch(lowered):
        raise ConfigError(where, f"{locale!r} is not a locale")
    if targeting.locales and lowered not in targeting.locales:
        listed = ", ".join(sorted(targeting.locales))
        raise ConfigError(
            where,
            f"{locale!r} is not one of targeting.locales ({listed}); sessions without a "
            "locale would never be taken",
        )
    return lowered


def _guardrails(settings: GuardrailSettings | None, where: str) -> Guardrails | None:
    if settings is None:
        return None
    limits = (
        settings.max_error_rate_increase,
        settings.max_cancellation_rate_increase,
        settings.max_no_match_rate_increase,
        settings.max_latency_increase_ms,
    )
    if all(limit is None for limit in limits):
        raise ConfigError(where, "sets no limit; set at least one max_* or remove the table")
    return Guardrails(
        max_error_rate_increase=settings.max_error_rate_increase,
        max_cancellation_rate_increase=settings.max_cancellation_rate_increase,
        max_no_match_rate_increase=settings.max_no_match_rate_increase,
        latency_quantile=settings.latency_quantile,
        max_latency_increase_ms=settings.max_latency_increase_ms,
        min_outcomes=settings.min_outcomes,
        alpha=settings.alpha,
    )


def _variant(
    settings: VariantSettings, where: str, backends: dict[str, Backend], weight: float
) -> Variant:
    _check_name(settings.name, f"{where}.name")
    backend = backends.get(settings.backend)
    if backend is None:
        known = ", ".join(sorted(backends)) or "none configured"
        raise ConfigError(
            f"{where}.backend", f"unknown backend {settings.backend!r} (known: {known})"
        )
    endpoint_id = settings.endpoint_id
    if endpoint_id is not None and not _ENDPOINT_ID.fullmatch(endpoint_id):
        raise ConfigError(
            f"{where}.endpoint_id",
            "must be letters, digits, - or _; leave it unset for the base model",
        )
    return Variant(settings.name, backend, endpoint_id, weight)


def _default_variant(
    settings: VariantSettings, where: str, backends: dict[str, Backend]
) -> Variant:
    if settings.weight is not None:
        raise ConfigError(f"{where}.weight", "has no meaning for the default variant")
    return _variant(settings, where, backends, 1.0)


def _targeting(settings: TargetingSettings, where: str, client_names: set[str]) -> Targeting:
    locales: list[str] = []
    for index, locale in enumerate(settings.locales):
        lowered = locale.lower()
        if not _LOCALE.fullmatch(lowered):
            raise ConfigError(f"{where}.locales[{index}]", f"{locale!r} is not a locale")
        locales.append(lowered)
    for index, client in enumerate(settings.clients):
        if client not in client_names:
            raise ConfigError(f"{where}.clients[{index}]", f"unknown client {client!r}")
    return Targeting(
        modes=frozenset(settings.modes),
        locales=frozenset(locales),
        clients=frozenset(settings.clients),
    )


def _covers(first: Experiment, later: Experiment) -> bool:
    """Whether every request `later` matches is already taken by `first`."""
    wide, narrow = first.targeting, later.targeting
    if not all(
        not outer or (inner and inner <= outer)
        for outer, inner in ((wide.modes, narrow.modes), (wide.clients, narrow.clients))
    ):
        return False
    if not wide.locales:
        return True
    # A request without a locale goes to `later` by its assumed one; `first` takes it only
    # if it assumes one too (validated to be among its own locales).
    return (
        bool(narrow.locales)
        and narrow.locales <= wide.locales
        and (later.locale is None or first.locale is not None)
    )


def _check_name(name: str, field: str) -> None:
    if not _NAME.fullmatch(name):
        raise ConfigError(field, f"{name!r}: use 1-64 letters, digits, '.', '-' or '_'")


def _check_param(name: str, field: str) -> None:
    if not _PARAM.fullmatch(name):
        raise ConfigError(field, f"{name!r}: use letters, digits, '.', '-', '_' or '~'")
    if name.lower() in _RESERVED_PARAMS:
        raise ConfigError(field, f"{name!r} is a query parameter of the speech service")
