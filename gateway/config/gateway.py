"""The `[gateway]` settings section: its top-level model and the process-wide tables.

`GatewaySettings` holds the clients, backends (`gateway.config.backends`), experiments
(`gateway.config.experiments`), limits (`gateway.config.limits`) and the tables of this
process (control store, drain, health). The models only check shapes and types (the
settings loader maps their errors); `gateway.config.gateway_config.build_gateway_config`
validates the whole section into the frozen `GatewayConfig` that requests are served with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config.backends import BackendSettings, BreakerSettings
from gateway.config.capture import AudioSettings
from gateway.config.experiments import ExperimentSettings, VariantSettings
from gateway.config.limits import LimitSettings


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
