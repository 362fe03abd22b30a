"""Settings of sampled audio capture: an experiment's `capture` policy and the audio store
(`[gateway.audio]`), and their one validation point.

`capture_policies` turns the experiments' `capture` sections into the session layer's
`CapturePolicy` values (ConfigError naming the field otherwise); `consenting_clients` names
the client keys whose sessions may be captured at all. The store itself is built by
`gateway.stores.factory.create_audio_store` from `AudioSettings`. docs/capture.md explains
both to operators.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.config.secrets import read_secret_file
from gateway.errors import ConfigError
from gateway.session.capture import CapturePolicy, CaptureReason

Priority = Literal["disagreement", "low_confidence", "no_match", "failure"]


def _all_priorities() -> list[Priority]:
    return ["disagreement", "low_confidence", "no_match", "failure"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptureSettings(_Model):
    share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The share of sessions whose audio is buffered and whose utterances are "
        "considered for capture (by a hash of the session id), for a variant not in "
        "`variant_shares`; 0: none.",
    )
    variant_shares: dict[str, float] = Field(
        default_factory=dict,
        description="`share` per variant (the session's primary variant), e.g. "
        "`{candidate = 0.2}`.",
    )
    utterance_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="The share of a considered session's utterances captured without a "
        "priority (the uniform sample); 0: priorities only.",
    )
    priorities: list[Priority] = Field(
        default_factory=_all_priorities,
        description="What makes an utterance worth a human's time, in order (the first that "
        "applies is its reason): `disagreement` (a shadow's transcript differs), "
        "`low_confidence`, `no_match`, `failure` (a backend failure the guardrails count).",
    )
    low_confidence_below: float = Field(
        0.5, ge=0, le=1, description="A primary confidence below this is `low_confidence`."
    )
    daily_cap: int = Field(
        1000,
        ge=0,
        description="Captures per UTC day and gateway process; later ones are dropped "
        "(counted as `daily_cap`).",
    )
    priority_reserve: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The share of `daily_cap` that only priority captures may use: uniform "
        "captures stop earlier.",
    )
    max_session_bytes: int = Field(
        4 * 1024 * 1024,
        ge=0,
        description="PCM bytes one session may buffer while its utterances wait for their "
        "results; audio beyond is not kept (a capture that needs it is dropped).",
    )


class AudioSettings(_Model):
    store: Literal["local", "blob"] = Field(
        "local",
        description="Where captured audio is kept: `local` (a directory) or `blob` (Azure "
        "Blob Storage).",
    )
    directory: Path = Field(
        Path("var/audio"), description='The local store\'s directory (`store = "local"`).'
    )
    max_bytes: int | None = Field(
        10 * 1024**3,
        ge=0,
        description="The WAV bytes the local store may hold; captures beyond are dropped "
        "(`store_full`); unset: no bound.",
    )
    blob_account_url: str | None = Field(
        None,
        description='The Blob service\'s account URL (`store = "blob"`), e.g. '
        "`https://<account>.blob.core.windows.net`.",
    )
    blob_container: str = Field(
        "speech-gateway-audio", description="The container; created when missing."
    )
    blob_account_name: str | None = Field(
        None,
        description="With `blob_credential` an account key: the account's name (a "
        "credential without it is a SAS token).",
    )
    blob_credential: SecretStr | None = Field(
        None,
        description="An account key or SAS token for the Blob service; environment only, or "
        "`blob_credential_file`.",
    )
    blob_credential_file: Path | None = Field(None, description="A file holding `blob_credential`.")
    blob_timeout_s: float = Field(
        5.0,
        gt=0,
        description="How long the Blob store waits to connect, and for each answer, before "
        "a request fails and the capture drops; per request, not per capture (docs/capture.md).",
    )
    retention_days: float = Field(
        30.0,
        gt=0,
        description="Captures older than this are deleted by a sweep (hourly, and at start).",
    )
    queue_captures: int = Field(
        64,
        ge=1,
        description="Captures waiting for the store; when full, new ones are dropped "
        "(`queue_full`).",
    )
    max_buffered_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="PCM bytes a gateway process may hold for capture: what its sessions "
        "buffer and the captures waiting for the store, together; audio beyond is not kept "
        "(`total_bytes`).",
    )

    def blob_credential_value(self) -> str | dict[str, str] | None:
        """The credential the Blob client takes; reads `blob_credential_file`."""
        if self.blob_credential is not None:
            secret = self.blob_credential.get_secret_value()
        elif self.blob_credential_file is not None:
            secret = read_secret_file(
                self.blob_credential_file, "gateway.audio.blob_credential_file"
            )
        else:
            return None
        if self.blob_account_name is not None:
            return {"account_name": self.blob_account_name, "account_key": secret}
        return secret

    def check(self) -> None:
        """ConfigError for a store that cannot be built from these settings."""
        if self.store == "blob" and not self.blob_account_url:
            raise ConfigError("gateway.audio.blob_account_url", 'required with store = "blob"')


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Experiment(Protocol):
    """What of `gateway.config.experiments.ExperimentSettings` the policies need (that module
    imports this one, so it is not imported here)."""

    @property
    def id(self) -> str: ...

    @property
    def variants(self) -> Sequence[_Named]: ...

    @property
    def capture(self) -> CaptureSettings | None: ...


class _Client(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def capture_consent(self) -> bool: ...


def capture_policies(experiments: Sequence[_Experiment]) -> dict[str, CapturePolicy]:
    """The capture policy of each experiment that has a `capture` section."""
    policies: dict[str, CapturePolicy] = {}
    for index, experiment in enumerate(experiments):
        settings = experiment.capture
        if settings is None:
            continue
        where = f"gateway.experiments[{index}].capture"
        if experiment.id.startswith("_"):
            raise ConfigError(where, "an experiment whose id starts with `_` cannot capture")
        variants = {variant.name for variant in experiment.variants}
        for variant, share in settings.variant_shares.items():
            if variant not in variants:
                raise ConfigError(f"{where}.variant_shares", f"{variant!r} is not a variant")
            if not 0 <= share <= 1:
                raise ConfigError(f"{where}.variant_shares.{variant}", "must be within 0..1")
        if len(set(settings.priorities)) != len(settings.priorities):
            raise ConfigError(f"{where}.priorities", "a priority is listed twice")
        policies[experiment.id] = CapturePolicy(
            share=settings.share,
            variant_shares=dict(settings.variant_shares),
            utterance_share=settings.utterance_share,
            priorities=tuple(CaptureReason(name) for name in settings.priorities),
            low_confidence_below=settings.low_confidence_below,
            daily_cap=settings.daily_cap,
            priority_reserve=settings.priority_reserve,
            max_session_bytes=settings.max_session_bytes,
        )
    return policies


def consenting_clients(clients: Sequence[_Client]) -> frozenset[str]:
    """The names of the client keys whose sessions may be captured."""
    return frozenset(client.name for client in clients if client.capture_consent)
