"""The settings of a speech backend: where it is, its keys, and the circuit breaker each gets.

`gateway.config.gateway_config` checks what involves more than one field (the URL's shape,
key or key file) and builds the frozen `Backend`; `BreakerSettings.policy()` is the
breaker's frozen `BreakerPolicy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.control.breaker import BreakerPolicy


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
