"""The `[gateway]` section's one validation point: `build_gateway_config`.

The settings models (`gateway.config.gateway` and the tables it holds) only check shapes
and types. `build_gateway_config` checks everything that involves more than one field, reads
the backends' secrets, and returns the frozen `GatewayConfig` that requests are served
with. Every problem is a `ConfigError` naming the dotted field an operator can find, e.g.
`gateway.experiments[0].variants[1].weight`; nothing is ever repaired.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config.backends import BackendSettings
from gateway.config.capture import capture_policies
from gateway.config.experiments import (
    CanarySettings,
    ExperimentSettings,
    GuardrailSettings,
    TargetingSettings,
    VariantSettings,
)
from gateway.config.gateway import ClientSettings, GatewaySettings, HealthSettings
from gateway.config.secrets import read_secret_file
from gateway.constants import NO_EXPERIMENT
from gateway.control.assignment import phase_id
from gateway.control.guardrails import Guardrails
from gateway.control.model import (
    Backend,
    Canary,
    Client,
    Experiment,
    GatewayConfig,
    HealthConfig,
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
