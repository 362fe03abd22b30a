"""The experiment model the per-request path reads: frozen, slotted values, no pydantic.

`gateway.config.gateway_config.build_gateway_config` is the only producer of a
`GatewayConfig`; it validates everything, so the values here trust their fields.
`gateway.control.assignment` turns an `Experiment` and a unit id into a `Variant`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.control.guardrails import Guardrails

Mode = Literal["interactive", "conversation", "dictation"]
Status = Literal["running", "paused", "stopped"]
STATUSES: tuple[Status, ...] = ("running", "paused", "stopped")
MODES: tuple[Mode, ...] = ("interactive", "conversation", "dictation")

_WS_SCHEME = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a client key, as written in `gateway.clients[].key_sha256`.

    surrogatepass: aiohttp decodes non-UTF-8 header bytes as lone surrogates; such a key
    must hash (and match nothing), not raise.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Backend:
    """A speech service: Azure (a region's host) or an Azure-compatible one such as the
    emulator. `url` is the service root without a trailing slash, e.g. `ws://127.0.0.1:5000`."""

    name: str
    url: str
    # The backend's own subscription key; it never leaves the gateway, so never in a repr.
    key: str | None = field(default=None, repr=False)
    # The Speech resource's management API root (Custom Speech REST API), e.g.
    # `https://westus.api.cognitive.microsoft.com`; None: no lifecycle checks.
    management_url: str | None = None
    # The key of that API: the configured management key, else the backend's own key.
    management_key: str | None = field(default=None, repr=False)

    def ws_url(self, path: str, query: str) -> str:
        """The WebSocket URL of `path` (with `query`, without its "?") on this backend."""
        return self._url(_WS_SCHEME, path, query)

    def http_url(self, path: str, query: str) -> str:
        """The HTTP URL of `path` (with `query`, without its "?") on this backend."""
        return self._url(_HTTP_SCHEME, path, query)

    def _url(self, schemes: dict[str, str], path: str, query: str) -> str:
        if path and not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/'")
        scheme, rest = self.url.split("://", 1)
        url = f"{schemes[scheme]}://{rest}{path}"
        return f"{url}?{query}" if query else url


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an experiment: a backend, and a Custom Speech endpoint or the base model."""

    name: str
    backend: Backend
    endpoint_id: str | None  # sent upstream as `cid`; None: the base model
    weight: float  # >= 0, finite; shares are weight / total weight of the experiment


@dataclass(frozen=True, slots=True)
class Targeting:
    """Which requests an experiment takes. An empty set means "any"; a request whose mode or
    locale is unknown (None, e.g. the universal v2 path carries neither) matches only a rule
    that does not restrict that dimension (unless its experiment assumes a locale,
    `Experiment.locale`)."""

    modes: frozenset[str] = frozenset()
    locales: frozenset[str] = frozenset()  # lower case, e.g. "en-us"
    clients: frozenset[str] = frozenset()  # client names

    def matches(self, mode: str | None, locale: str | None, client: str) -> bool:
        """Whether a request with this mode, locale (any case) and client is targeted."""
        if self.modes and mode not in self.modes:
            return False
        if self.locales and (locale is None or locale.lower() not in self.locales):
            return False
        return not self.clients or client in self.clients


@dataclass(frozen=True, slots=True)
class Canary:
    """An experiment's canary set and schedule (docs/health.md): the gateway itself sends
    the set to every variant every `interval_s` and watches its WER for changes."""

    dataset: Path  # a replay-format folder (manifest.jsonl with id, audio, text)
    interval_s: float
    timeout_s: float  # per canary utterance
    baseline_rounds: int
    alpha: float  # false-alarm probability of the change test over all rounds
    min_change_points: float  # the smallest WER change worth an alert, in points
    pause_on_alert: bool  # an alert also rolls the challenger back to weight 0


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """The model-health machinery of this process: canaries, lifecycle checks, alerts."""

    run: bool = True  # canaries and lifecycle checks run here (several replicas: on one)
    # Alerts are POSTed here as JSON; None: no webhook. It may carry a token: no repr.
    webhook_url: str | None = field(default=None, repr=False)
    webhook_timeout_s: float = 5.0
    webhook_attempts: int = 3
    lifecycle_interval_s: float = 3600.0
    expiry_warning_days: int = 30


@dataclass(frozen=True, slots=True)
class Experiment:
    """Variants, their weights and how a session picks one (see `docs/assignment.md`)."""

    id: str
    seed: str  # hashing seed; the id unless configured
    control: str  # name of the control variant
    variants: tuple[Variant, ...]
    # Variants that also receive every session's audio; the session's own variant is never
    # its own shadow (`assignment.shadow_variants`).
    shadows: tuple[str, ...]
    targeting: Targeting
    phase: str  # `assignment.phase_id(variants)`: changes whenever a weight changes
    unit_param: str = "gw-unit"  # query parameter carrying the unit id
    guardrails: Guardrails | None = None  # None: no automatic rollback
    # The control plane's live state (`gateway.control.state`): weights above are the
    # effective ones, and these units get their variant whatever their bucket.
    status: Status = "running"
    forced_units: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The locale (lower case) assumed for a session whose request names none, e.g. the
    # native SDK's with an endpoint id; None: such a session has no locale.
    locale: str | None = None
    # The smallest WER gain worth shipping, as a fraction (0.01: one point): the analysis
    # recommends "ship custom" only when the gain is shown to be at least this.
    min_wer_gain: float = 0.0
    # The canary set sent to every variant on a schedule; None: no canaries.
    canary: Canary | None = None
    # Control's share of the traffic once a challenger is shipped (the holdout that keeps
    # measuring the shipped model against the one it replaced).
    holdout_share: float = 0.05
    # The error analysis's term list and synonyms files (docs/error-analysis.md); None: none.
    terms: Path | None = None
    terms_corpus: Path | None = None  # a training corpus the term list is derived from
    synonyms: Path | None = None

    def session_locale(self, locale: str | None) -> str | None:
        """The locale of a session this experiment takes: its own, else the assumed one."""
        return locale or self.locale

    def matches(self, mode: str | None, locale: str | None, client: str) -> bool:
        """Whether the experiment takes a request with this mode, locale and client."""
        return self.targeting.matches(mode, self.session_locale(locale), client)

    def variant(self, name: str) -> Variant:
        """The variant called `name`; KeyError if there is none."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    @property
    def control_variant(self) -> Variant:
        return self.variant(self.control)

    @property
    def shares(self) -> dict[str, float]:
        """Each variant's share of the traffic: its weight over the total (0 if all are 0)."""
        total = sum(v.weight for v in self.variants)
        return {v.name: (v.weight / total if total else 0.0) for v in self.variants}


@dataclass(frozen=True, slots=True)
class Client:
    """An application allowed to use the gateway, known by the SHA-256 of its key."""

    name: str
    key_sha256: str  # lower-case hex digest; the key itself is never stored
    can_force: bool = False  # may force a variant (QA)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The validated snapshot of clients and experiments that requests are served with."""

    clients: tuple[Client, ...]
    experiments: tuple[Experiment, ...]
    # Serves requests that no experiment targets; None: such requests are refused.
    default_variant: Variant | None
    health: HealthConfig = HealthConfig()

    def authenticate(self, key: str) -> Client | None:
        """The client whose key this is, or None.

        Every client's digest is compared in constant time and the loop never stops early,
        so the time taken does not reveal which client, or how much of a digest, matched.
        """
        if not key:
            return None
        offered = hash_key(key).encode("ascii")
        found: Client | None = None
        for client in self.clients:
            if hmac.compare_digest(offered, client.key_sha256.encode("ascii")):
                found = client
        return found

    def select(self, mode: str | None, locale: str | None, client: str) -> Experiment | None:
        """The first experiment, in configuration order, whose targeting matches (a request
        without a locale is matched with the locale the experiment assumes, if any)."""
        for experiment in self.experiments:
            if experiment.matches(mode, locale, client):
                return experiment
        return None
