"""Tests for the `[gateway]` section (gateway.config.gateway and the backends, experiments
and limits tables it holds), its validation in gateway.config.gateway_config (each rule names
its field) and gateway.control.model: client authentication, targeting and selection."""

from __future__ import annotations

import dataclasses
import hmac
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config.gateway import GatewaySettings
from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import load_settings
from gateway.control.assignment import phase_id
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

AZURE_KEY = "azure-secret-key-0123"


def valid() -> dict[str, Any]:
    """A valid section with two experiments, three clients and two backends."""
    return {
        "clients": [
            {"name": "app", "key_sha256": hash_key("app-key")},
            {"name": "qa", "key_sha256": hash_key("qa-key"), "can_force": True},
            {"name": "batch", "key_sha256": hash_key("batch-key")},
        ],
        "backends": {
            "local": {"url": "ws://127.0.0.1:5000/"},
            "azure": {"url": "wss://westus.stt.speech.microsoft.com", "key": AZURE_KEY},
        },
        "experiments": [
            {
                "id": "banking-ab",
                "control": "base",
                "variants": [
                    {"name": "base", "backend": "azure", "weight": 90},
                    {"name": "custom", "backend": "local", "endpoint_id": "banking", "weight": 10},
                ],
                "shadows": ["custom"],
                "targeting": {
                    "modes": ["conversation", "dictation"],
                    "locales": ["en-US"],
                    "clients": ["app", "qa"],
                },
            },
            {
                "id": "everyone",
                "seed": "everyone-2024",
                "control": "base",
                "variants": [
                    {"name": "base", "backend": "local", "weight": 1},
                    {"name": "off", "backend": "local", "weight": 0},
                ],
                "unit_param": "user",
            },
        ],
        "default_variant": {"name": "fallback", "backend": "local"},
    }


def build(data: dict[str, Any]) -> GatewayConfig:
    return build_gateway_config(GatewaySettings.model_validate(data))


def put(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set `value` at a dotted path (list indexes as numbers) and return `data`."""
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def field_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        build(data)
    return caught.value.field


def test_valid_config_builds_expected_model() -> None:
    """A valid section becomes exactly the expected frozen model."""
    local = Backend("local", "ws://127.0.0.1:5000")
    azure = Backend("azure", "wss://westus.stt.speech.microsoft.com", AZURE_KEY)
    banking = (Variant("base", azure, None, 90.0), Variant("custom", local, "banking", 10.0))
    everyone = (Variant("base", local, None, 1.0), Variant("off", local, None, 0.0))
    expected = GatewayConfig(
        clients=(
            Client("app", hash_key("app-key")),
            Client("qa", hash_key("qa-key"), can_force=True),
            Client("batch", hash_key("batch-key")),
        ),
        experiments=(
            Experiment(
                id="banking-ab",
                seed="banking-ab",
                control="base",
                variants=banking,
                shadows=("custom",),
                targeting=Targeting(
                    modes=frozenset({"conversation", "dictation"}),
                    locales=frozenset({"en-us"}),
                    clients=frozenset({"app", "qa"}),
                ),
                phase=phase_id(banking),
                unit_param="gw-unit",
            ),
            Experiment(
                id="everyone",
                seed="everyone-2024",
                control="base",
                variants=everyone,
                shadows=(),
                targeting=Targeting(),
                phase=phase_id(everyone),
                unit_param="user",
            ),
        ),
        default_variant=Variant("fallback", local, None, 1.0),
    )
    assert build(valid()) == expected


def test_model_is_frozen() -> None:
    """The built configuration cannot be changed in place."""
    config = build(valid())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.experiments[0].variants[0].weight = 50.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.clients[0].can_force = True  # type: ignore[misc]


def test_settings_defaults() -> None:
    """An empty section has the documented defaults and builds an empty config."""
    settings = GatewaySettings()
    assert (settings.host, settings.port, settings.force_param) == ("127.0.0.1", 8080, "gw-variant")
    assert (settings.connect_timeout_s, settings.shadow_queue_frames) == (5.0, 200)
    assert (settings.shadow_grace_s, settings.limits.max_rest_body_bytes) == (5.0, 10 * 1024 * 1024)
    assert build_gateway_config(settings) == GatewayConfig((), (), None)


def test_experiment_accessors() -> None:
    """variant() finds by name, raises KeyError otherwise; control_variant is the control."""
    experiment = build(valid()).experiments[0]
    assert experiment.variant("custom").endpoint_id == "banking"
    assert experiment.control_variant.name == "base"
    with pytest.raises(KeyError):
        experiment.variant("nope")


def test_phase_changes_with_weights() -> None:
    """Two configs that differ only in a weight have different phases."""
    changed = put(valid(), "experiments.0.variants.1.weight", 20)
    assert build(valid()).experiments[0].phase != build(changed).experiments[0].phase
    assert build(valid()).experiments[0].phase == build(valid()).experiments[0].phase


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        # variants and weights
        ("experiments.0.variants.1.backend", "nope", "gateway.experiments[0].variants[1].backend"),
        ("experiments.0.variants.1.weight", -1, "gateway.experiments[0].variants[1].weight"),
        ("experiments.0.variants.1.weight", -1e-9, "gateway.experiments[0].variants[1].weight"),
        ("experiments.0.variants.1.weight", "nan", "gateway.experiments[0].variants[1].weight"),
        ("experiments.0.variants.1.weight", "inf", "gateway.experiments[0].variants[1].weight"),
        ("experiments.0.variants.1.weight", None, "gateway.experiments[0].variants[1].weight"),
        ("experiments.1.variants.0.weight", 0, "gateway.experiments[1].variants"),
        ("experiments.0.variants.0.name", "custom", "gateway.experiments[0].variants[1].name"),
        ("experiments.0.variants.1.name", "base", "gateway.experiments[0].variants[1].name"),
        ("experiments.0.variants.1.name", "has space", "gateway.experiments[0].variants[1].name"),
        ("experiments.0.variants.1.name", "", "gateway.experiments[0].variants[1].name"),
        ("experiments.0.variants", [], "gateway.experiments[0].variants"),
        # endpoint ids
        (
            "experiments.0.variants.1.endpoint_id",
            "",
            "gateway.experiments[0].variants[1].endpoint_id",
        ),
        (
            "experiments.0.variants.1.endpoint_id",
            "a b",
            "gateway.experiments[0].variants[1].endpoint_id",
        ),
        (
            "experiments.0.variants.1.endpoint_id",
            "a/b",
            "gateway.experiments[0].variants[1].endpoint_id",
        ),
        (
            "experiments.0.variants.1.endpoint_id",
            "a&x=1",
            "gateway.experiments[0].variants[1].endpoint_id",
        ),
        # experiments
        ("experiments.1.id", "banking-ab", "gateway.experiments[1].id"),
        ("experiments.1.id", "", "gateway.experiments[1].id"),
        ("experiments.1.id", "_default", "gateway.experiments[1].id"),
        ("experiments.1.control", "custom", "gateway.experiments[1].control"),
        ("experiments.0.shadows", ["custom", "nope"], "gateway.experiments[0].shadows[1]"),
        ("experiments.0.shadows", ["custom", "custom"], "gateway.experiments[0].shadows[1]"),
        ("experiments.0.seed", "", "gateway.experiments[0].seed"),
        ("experiments.0.seed", "a\x1fb", "gateway.experiments[0].seed"),
        ("experiments.0.unit_param", "", "gateway.experiments[0].unit_param"),
        ("experiments.0.unit_param", "gw unit", "gateway.experiments[0].unit_param"),
        ("experiments.0.unit_param", "gw&unit", "gateway.experiments[0].unit_param"),
        ("experiments.0.unit_param", "gw-variant", "gateway.experiments[0].unit_param"),
        ("experiments.0.unit_param", "language", "gateway.experiments[0].unit_param"),
        ("force_param", "", "gateway.force_param"),
        ("force_param", "gw=variant", "gateway.force_param"),
        ("force_param", "cid", "gateway.force_param"),
        # targeting
        (
            "experiments.0.targeting.clients",
            ["app", "ghost"],
            "gateway.experiments[0].targeting.clients[1]",
        ),
        (
            "experiments.0.targeting.locales",
            ["en_US"],
            "gateway.experiments[0].targeting.locales[0]",
        ),
        ("experiments.0.targeting.locales", [""], "gateway.experiments[0].targeting.locales[0]"),
        ("experiments.0.targeting", {}, "gateway.experiments[1].targeting"),
        # clients
        ("clients.1.name", "app", "gateway.clients[1].name"),
        ("clients.1.name", "", "gateway.clients[1].name"),
        ("clients.2.key_sha256", hash_key("app-key"), "gateway.clients[2].key_sha256"),
        ("clients.2.key_sha256", hash_key("batch-key").upper(), "gateway.clients[2].key_sha256"),
        ("clients.2.key_sha256", hash_key("batch-key")[:63], "gateway.clients[2].key_sha256"),
        ("clients.2.key_sha256", "g" * 64, "gateway.clients[2].key_sha256"),
        ("clients.2.key_sha256", "batch-key", "gateway.clients[2].key_sha256"),
        ("clients.2.key_sha256", hash_key(""), "gateway.clients[2].key_sha256"),
        # backends
        ("backends.azure.url", "ftp://westus.example.com", "gateway.backends.azure.url"),
        ("backends.azure.url", "westus.stt.speech.microsoft.com", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss:///speech", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://host?region=westus", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://host?", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://host#frag", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://user:pw@host", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://user@host", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://host:99999", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://host:port", "gateway.backends.azure.url"),
        ("backends.azure.url", "wss://ho st", "gateway.backends.azure.url"),
        ("backends.azure.key", "", "gateway.backends.azure.key"),
        ("backends.bad name", {"url": "ws://h"}, "gateway.backends.bad name"),
        # the default variant
        ("default_variant.weight", 1, "gateway.default_variant.weight"),
        ("default_variant.backend", "nope", "gateway.default_variant.backend"),
        ("default_variant.endpoint_id", "a b", "gateway.default_variant.endpoint_id"),
    ],
)
def test_invalid_config_names_field(path: str, value: Any, field: str) -> None:
    """Each invalid setting fails with a ConfigError naming exactly its field."""
    assert field_of(put(valid(), path, value)) == field


def test_all_zero_weights_fail() -> None:
    """An experiment whose weights are all zero is refused, not split equally."""
    data = put(valid(), "experiments.0.variants.0.weight", 0)
    put(data, "experiments.0.variants.1.weight", 0.0)
    assert field_of(data) == "gateway.experiments[0].variants"


def test_infinite_total_weight_fails() -> None:
    """Finite weights whose sum overflows to infinity are refused."""
    data = put(valid(), "experiments.0.variants.0.weight", 1e308)
    put(data, "experiments.0.variants.1.weight", 1e308)
    assert field_of(data) == "gateway.experiments[0].variants"


def test_zero_weight_control_is_allowed() -> None:
    """A control at weight zero (the challenger takes all traffic) is valid."""
    data = put(valid(), "experiments.0.variants.0.weight", 0)
    assert build(data).experiments[0].control_variant.weight == 0.0


def test_key_and_key_file_together_fail(tmp_path: Path) -> None:
    """A backend may take its key from the environment or a file, not both."""
    secret = tmp_path / "azure.key"
    secret.write_text("from-file\n", encoding="utf-8")
    data = put(valid(), "backends.azure.key_file", str(secret))
    assert field_of(data) == "gateway.backends.azure.key_file"


def test_key_file_is_read(tmp_path: Path) -> None:
    """A backend key comes from key_file, stripped of surrounding whitespace."""
    secret = tmp_path / "azure.key"
    secret.write_text("  from-file\n", encoding="utf-8")
    data = valid()
    data["backends"]["azure"] = {"url": "wss://westus.example.com", "key_file": str(secret)}
    assert build(data).experiments[0].variants[0].backend.key == "from-file"


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_unreadable_or_empty_key_file_fails(tmp_path: Path, content: str | None) -> None:
    """A missing or empty key file is an error at the key_file field."""
    secret = tmp_path / "azure.key"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    data = valid()
    data["backends"]["azure"] = {"url": "wss://westus.example.com", "key_file": str(secret)}
    assert field_of(data) == "gateway.backends.azure.key_file"


def test_backend_without_key_is_allowed() -> None:
    """A backend without a key (emulator, container) has key None."""
    assert build(valid()).default_variant == Variant(
        "fallback", Backend("local", "ws://127.0.0.1:5000"), None, 1.0
    )


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("ws://127.0.0.1:5000", "ws://127.0.0.1:5000"),
        ("ws://127.0.0.1:5000/", "ws://127.0.0.1:5000"),
        ("https://westus.stt.speech.microsoft.com", "https://westus.stt.speech.microsoft.com"),
        ("wss://[::1]:8443/stt/", "wss://[::1]:8443/stt"),
    ],
)
def test_backend_url_root(url: str, root: str) -> None:
    """A backend URL is kept as its root without a trailing slash."""
    data = put(valid(), "backends.local.url", url)
    assert build(data).default_variant is not None
    assert build(data).experiments[1].variants[0].backend.url == root


def test_backend_repr_hides_key() -> None:
    """Neither repr nor str of a backend, variant or config shows the backend key."""
    config = build(valid())
    for value in (config.experiments[0].variants[0].backend, config.experiments[0], config):
        assert AZURE_KEY not in repr(value)
        assert AZURE_KEY not in str(value)


@pytest.mark.parametrize(
    ("root", "ws", "http"),
    [
        ("ws://h:5000", "ws://h:5000/p?a=1", "http://h:5000/p?a=1"),
        ("wss://h", "wss://h/p?a=1", "https://h/p?a=1"),
        ("http://h:5000", "ws://h:5000/p?a=1", "http://h:5000/p?a=1"),
        ("https://h/prefix", "wss://h/prefix/p?a=1", "https://h/prefix/p?a=1"),
    ],
)
def test_backend_urls(root: str, ws: str, http: str) -> None:
    """ws_url and http_url swap the scheme family and append path and query."""
    backend = Backend("b", root)
    assert backend.ws_url("/p", "a=1") == ws
    assert backend.http_url("/p", "a=1") == http


def test_backend_url_without_query_has_no_question_mark() -> None:
    """An empty query adds no "?"; a path must start with "/"."""
    backend = Backend("b", "wss://h")
    assert backend.ws_url("/speech/v1", "") == "wss://h/speech/v1"
    assert backend.http_url("", "") == "https://h"
    with pytest.raises(ValueError, match="start with"):
        backend.ws_url("speech", "")


def test_modes_outside_the_three_fail_in_pydantic() -> None:
    """A mode other than interactive/conversation/dictation is a validation error."""
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate(put(valid(), "experiments.0.targeting.modes", ["batch"]))


def test_unknown_settings_keys_fail_in_pydantic() -> None:
    """A misspelt key anywhere in the section is a validation error, not ignored."""
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate(put(valid(), "experiments.0.variants.0.wieght", 5))
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate({"force_parm": "x"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("connect_timeout_s", 0),
        ("connect_timeout_s", 61),
        ("shadow_queue_frames", 0),
        ("shadow_grace_s", 0),
        ("limits", {"max_rest_body_bytes": 100}),
        ("limits", {"idle_timeout_s": 0}),
        ("limits", {"max_sessions_per_client": 0}),
        ("port", 70000),
    ],
)
def test_bounded_numbers_fail_in_pydantic(field: str, value: float) -> None:
    """Timeouts and queue sizes outside their bounds are validation errors."""
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate({field: value})


def test_authenticate() -> None:
    """The right key finds its client; a wrong, near or empty key finds none."""
    config = build(valid())
    assert config.authenticate("qa-key") == Client("qa", hash_key("qa-key"), can_force=True)
    assert config.authenticate("app-key") == Client("app", hash_key("app-key"))
    assert config.authenticate("wrong") is None
    assert config.authenticate("app-key ") is None
    assert config.authenticate("") is None
    assert config.authenticate(hash_key("app-key")) is None


def test_authenticate_compares_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authentication compares the digest with every client, even after a match."""
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert build(valid()).authenticate("app-key") is not None
    assert len(compared) == 3


def test_hash_key_is_sha256_hex() -> None:
    """hash_key is the lower-case hex SHA-256 of the UTF-8 key."""
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("mode", "locale", "client", "selected"),
    [
        ("conversation", "en-US", "app", "banking-ab"),
        ("dictation", "EN-us", "qa", "banking-ab"),
        ("interactive", "en-US", "app", "everyone"),
        ("conversation", "de-DE", "app", "everyone"),
        ("conversation", "en-US", "batch", "everyone"),
        (None, "en-US", "app", "everyone"),
        ("conversation", None, "app", "everyone"),
        (None, None, "batch", "everyone"),
    ],
)
def test_select_respects_order_and_targeting(
    mode: str | None, locale: str | None, client: str, selected: str
) -> None:
    """The first experiment whose targeting matches is selected, unknowns match only "any"."""
    experiment = build(valid()).select(mode, locale, client)
    assert experiment is not None
    assert experiment.id == selected


def test_select_none_when_nothing_matches() -> None:
    """Without a matching experiment select returns None (the default variant applies)."""
    data = valid()
    del data["experiments"][1]
    assert build(data).select("interactive", "en-US", "app") is None


def test_targeting_empty_matches_everything() -> None:
    """An empty rule matches any mode, locale and client, known or not."""
    assert Targeting().matches(None, None, "anyone")
    assert Targeting().matches("dictation", "fr-fr", "x")


def test_targeting_later_experiment_may_be_wider() -> None:
    """A later experiment that also takes requests the first one does not is valid."""
    data = valid()
    data["experiments"][1]["targeting"] = {"modes": ["conversation"]}
    config = build(data)
    assert config.experiments[1].targeting.modes == frozenset({"conversation"})
    assert config.select("conversation", "de-DE", "app") == config.experiments[1]


def test_later_experiment_fully_covered_fails() -> None:
    """A later experiment whose every request an earlier one takes is refused as dead."""
    data = valid()
    data["experiments"][1]["targeting"] = {
        "modes": ["conversation"],
        "locales": ["en-us"],
        "clients": ["app"],
    }
    assert field_of(data) == "gateway.experiments[1].targeting"


def test_seed_defaults_to_id_and_locales_lower_case() -> None:
    """Without a seed the id is the seed; locales are kept in lower case."""
    experiment = build(valid()).experiments[0]
    assert experiment.seed == "banking-ab"
    assert experiment.targeting.locales == frozenset({"en-us"})


def test_config_error_message_names_field() -> None:
    """The ConfigError message starts with the field and says the problem."""
    with pytest.raises(ConfigError) as caught:
        build(put(valid(), "experiments.0.variants.1.weight", -1))
    assert str(caught.value).startswith("gateway.experiments[0].variants[1].weight: ")
    assert "-1" in caught.value.problem


# -- the locale an experiment assumes ---------------------------------------------------------


def selected(config: GatewayConfig, mode: str | None, locale: str | None, client: str) -> str:
    experiment = config.select(mode, locale, client)
    return experiment.id if experiment is not None else "(none)"


def assuming(locale: str | None, targeting: dict[str, Any] | None = None) -> dict[str, Any]:
    """valid(), its first experiment assuming `locale` (and targeted as given)."""
    data = valid()
    first = data["experiments"][0]
    if locale is not None:
        first["locale"] = locale
    if targeting is not None:
        first["targeting"] = targeting
    return data


def test_a_request_without_locale_is_matched_by_the_assumed_one() -> None:
    """A session with no `language` (the native SDK with an endpoint id) is taken by an
    experiment that assumes a locale among its targeted ones, and gets that locale (lower
    case); one that names a language is matched and kept with it."""
    config = build(assuming("en-US"))
    experiment = config.select("conversation", None, "app")
    assert experiment is not None
    assert experiment.id == "banking-ab"
    assert experiment.locale == "en-us"
    assert experiment.session_locale(None) == "en-us"
    assert experiment.session_locale("en-gb") == "en-gb"
    other = config.select("conversation", "de-DE", "app")
    assert other is not None
    assert other.id == "everyone"
    assert other.session_locale(None) is None
    assert selected(build(valid()), "conversation", None, "app") == "everyone"


def test_the_assumed_locale_applies_to_its_own_experiment_only() -> None:
    """Each experiment matches a locale-less request with its own assumption: a French one
    first does not take it, an English one after it does."""
    data = valid()
    data["experiments"].insert(
        0,
        {
            "id": "french",
            "control": "base",
            "variants": [{"name": "base", "backend": "local", "weight": 1}],
            "targeting": {"locales": ["fr-FR"]},
            "locale": "fr-FR",
        },
    )
    data["experiments"][1]["locale"] = "en-us"
    config = build(data)
    assert selected(config, "conversation", None, "app") == "french"
    data["experiments"][0]["locale"] = None
    config = build(data)
    assert selected(config, "conversation", None, "app") == "banking-ab"


@pytest.mark.parametrize(
    ("locale", "targeting", "problem"),
    [
        ("english", None, "'english' is not a locale"),
        ("en_US", None, "'en_US' is not a locale"),
        ("de-DE", None, "'de-DE' is not one of targeting.locales (en-us)"),
    ],
)
def test_a_bad_assumed_locale_names_the_field(
    locale: str, targeting: dict[str, Any] | None, problem: str
) -> None:
    """A malformed locale, or one the experiment's own targeting would never take, is
    refused naming `experiments[i].locale`."""
    with pytest.raises(ConfigError) as caught:
        build(assuming(locale, targeting))
    assert caught.value.field == "gateway.experiments[0].locale"
    assert caught.value.problem.startswith(problem)


def test_an_assumed_locale_without_targeted_locales_is_recorded_only() -> None:
    """Without `targeting.locales` any request matches anyway; the assumed locale is what
    locale-less sessions are recorded with."""
    config = build(assuming("EN-gb", {"clients": ["app"]}))
    experiment = config.select("interactive", None, "app")
    assert experiment is not None
    assert experiment.id == "banking-ab"
    assert experiment.session_locale(None) == "en-gb"


def test_a_later_experiment_assuming_a_locale_is_not_covered() -> None:
    """An earlier experiment with the same locales but no assumption leaves locale-less
    requests to a later one that assumes a locale: that one is valid, and takes them. With
    the same assumption the later one is dead again, and refused."""
    data = valid()
    same = {"locales": ["en-us"]}
    data["experiments"][0]["targeting"] = same
    data["experiments"][1]["targeting"] = same
    data["experiments"][1]["locale"] = "en-US"
    config = build(data)
    assert selected(config, "conversation", None, "batch") == "everyone"
    assert selected(config, "conversation", "en-us", "batch") == "banking-ab"
    data["experiments"][0]["locale"] = "en-us"
    assert field_of(data) == "gateway.experiments[1].targeting"


# -- model health: canaries, holdout, management API, [gateway.health] --------------------

ROOT = Path(__file__).resolve().parents[2]
CANARY_SET = ROOT / "data" / "canary"


def with_canary(dataset: Path | str, **extra: Any) -> dict[str, Any]:
    return put(valid(), "experiments.0.canary", {"dataset": str(dataset), **extra})


def test_health_defaults_and_no_canary_by_default() -> None:
    """Without the new tables: the documented defaults, no canary, a 5 % holdout."""
    config = build(valid())
    assert config.health == HealthConfig()
    assert (config.health.run, config.health.webhook_url) == (True, None)
    assert (config.health.webhook_timeout_s, config.health.webhook_attempts) == (5.0, 3)
    assert (config.health.lifecycle_interval_s, config.health.expiry_warning_days) == (3600.0, 30)
    assert all(e.canary is None and e.holdout_share == 0.05 for e in config.experiments)
    backend = config.experiments[0].variants[0].backend
    assert (backend.management_url, backend.management_key) == (None, None)


def test_a_canary_table_builds_the_frozen_canary() -> None:
    """Every canary setting reaches the model; unset ones take their defaults."""
    data = with_canary(CANARY_SET, interval_s=60, alpha=0.05, pause_on_alert=True)
    put(data, "experiments.0.holdout_share", 0.1)
    experiment = build(data).experiments[0]
    assert experiment.canary == Canary(
        dataset=CANARY_SET,
        interval_s=60.0,
        timeout_s=30.0,
        baseline_rounds=3,
        alpha=0.05,
        min_change_points=2.0,
        pause_on_alert=True,
    )
    assert experiment.holdout_share == 0.1


def test_the_canary_dataset_is_relative_to_the_settings_file(tmp_path: Path) -> None:
    """`dataset` in the TOML file is read relative to the file's folder, as other paths."""
    canary = tmp_path / "sets" / "canary"
    canary.mkdir(parents=True)
    (canary / "a.wav").write_bytes(b"")
    (canary / "manifest.jsonl").write_text(
        '{"id": "a", "audio": "a.wav", "text": "hello"}\n', encoding="utf-8"
    )
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "gateway.toml").write_text(
        "[[gateway.experiments]]\n"
        'id = "e"\ncontrol = "a"\n'
        'variants = [{name = "a", backend = "local", weight = 1}]\n'
        "[gateway.experiments.canary]\n"
        'dataset = "../sets/canary"\n'
        "[gateway.backends.local]\n"
        'url = "ws://127.0.0.1:5000"\n',
        encoding="utf-8",
    )
    settings = load_settings(folder / "gateway.toml")
    built = build_gateway_config(settings.gateway).experiments[0].canary
    assert built is not None
    assert built.dataset.is_absolute()
    assert built.dataset.resolve() == canary.resolve()


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (None, "cannot read manifest"),
        ("", "lists no utterances"),
        ("not json\n", "not JSON"),
        ('{"id": "a", "audio": "a.wav"}\n', "'text'"),
        ('{"id": "a", "audio": "missing.wav", "text": "hello"}\n', "does not exist"),
    ],
)
def test_a_bad_canary_dataset_names_the_setting(
    tmp_path: Path, manifest: str | None, problem: str
) -> None:
    """The manifest is read at load (not the audio): its problem is reported at
    `gateway.experiments[i].canary.dataset`, with the file and line."""
    if manifest is not None:
        (tmp_path / "manifest.jsonl").write_text(manifest, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        build(with_canary(tmp_path))
    assert caught.value.field == "gateway.experiments[0].canary.dataset"
    assert problem in caught.value.problem
    assert "manifest.jsonl" in caught.value.problem


def test_a_canary_dataset_that_is_no_folder_fails(tmp_path: Path) -> None:
    assert field_of(with_canary(tmp_path / "nothing")) == "gateway.experiments[0].canary.dataset"


def test_the_config_check_does_not_read_the_audio(tmp_path: Path) -> None:
    """A manifest whose audio exists but is no WAV passes the configuration check (the
    runner reads the audio when it starts, and reports it there)."""
    (tmp_path / "a.wav").write_bytes(b"not a wav")
    (tmp_path / "manifest.jsonl").write_text(
        '{"id": "a", "audio": "a.wav", "text": "hello"}\n', encoding="utf-8"
    )
    assert build(with_canary(tmp_path)).experiments[0].canary is not None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"interval_s": 0}, "interval_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 601}, "timeout_s"),
        ({"baseline_rounds": 0}, "baseline_rounds"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": 0.6}, "alpha"),
        ({"min_change_points": -1}, "min_change_points"),
        ({"min_change_points": 100}, "min_change_points"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_canary_numbers_out_of_bounds_fail_in_pydantic(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GatewaySettings.model_validate(with_canary(CANARY_SET, **extra))
    assert caught.value.errors()[0]["loc"][-1] == field


@pytest.mark.parametrize("share", [0, -0.1, 0.51, 1])
def test_holdout_share_must_be_within_0_and_half(share: float) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate(put(valid(), "experiments.0.holdout_share", share))


def test_holdout_share_of_half_is_allowed() -> None:
    assert (
        build(put(valid(), "experiments.0.holdout_share", 0.5)).experiments[0].holdout_share == 0.5
    )


def test_management_url_uses_the_backend_key_unless_its_own_is_set(tmp_path: Path) -> None:
    """With `management_url` the management key defaults to the backend's own key; a
    management key (or key file) overrides it; the root loses its trailing slash."""
    data = put(valid(), "backends.azure.management_url", "https://westus.api.example.com/")
    backend = build(data).experiments[0].variants[0].backend
    assert backend.management_url == "https://westus.api.example.com"
    assert backend.management_key == AZURE_KEY
    put(data, "backends.azure.management_key", "management-secret-0123")
    assert build(data).experiments[0].variants[0].backend.management_key == (
        "management-secret-0123"
    )
    secret = tmp_path / "management.key"
    secret.write_text(" from-file \n", encoding="utf-8")
    del data["backends"]["azure"]["management_key"]
    put(data, "backends.azure.management_key_file", str(secret))
    assert build(data).experiments[0].variants[0].backend.management_key == "from-file"


def test_management_without_any_key_is_allowed() -> None:
    """A keyless backend (the emulator without auth) has a keyless management API too."""
    data = put(valid(), "backends.local.management_url", "http://127.0.0.1:5000")
    backend = build(data).experiments[0].variants[1].backend
    assert (backend.management_url, backend.management_key) == ("http://127.0.0.1:5000", None)


def test_management_key_never_in_a_repr() -> None:
    data = put(valid(), "backends.azure.management_url", "https://westus.api.example.com")
    put(data, "backends.azure.management_key", "management-secret-0123")
    config = build(data)
    assert "management-secret-0123" not in repr(config)
    assert AZURE_KEY not in repr(config)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("wss://westus.api.example.com", "scheme"),
        ("ftp://westus.api.example.com", "scheme"),
        ("https://", "no host"),
        ("https://user:pw@westus.api.example.com", "credentials"),
        ("https://westus.api.example.com?key=1", "query"),
        ("https://westus.api.example.com#x", "query or fragment"),
        ("https://westus.api.example.com:99999", "port"),
        ("https://west us.example.com", "whitespace"),
    ],
)
def test_a_bad_management_url_names_the_field(url: str, problem: str) -> None:
    data = put(valid(), "backends.azure.management_url", url)
    with pytest.raises(ConfigError) as caught:
        build(data)
    assert caught.value.field == "gateway.backends.azure.management_url"
    assert problem in caught.value.problem
    assert "pw" not in str(caught.value)


def test_management_key_without_url_fails() -> None:
    data = put(valid(), "backends.azure.management_key", "management-secret-0123")
    assert field_of(data) == "gateway.backends.azure.management_key"


def test_management_key_and_file_together_fail(tmp_path: Path) -> None:
    secret = tmp_path / "management.key"
    secret.write_text("from-file", encoding="utf-8")
    data = put(valid(), "backends.azure.management_url", "https://westus.api.example.com")
    put(data, "backends.azure.management_key", "management-secret-0123")
    put(data, "backends.azure.management_key_file", str(secret))
    assert field_of(data) == "gateway.backends.azure.management_key_file"


@pytest.mark.parametrize("content", [None, "  \n"])
def test_unreadable_or_empty_management_key_file_fails(tmp_path: Path, content: str | None) -> None:
    secret = tmp_path / "management.key"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    data = put(valid(), "backends.azure.management_url", "https://westus.api.example.com")
    put(data, "backends.azure.management_key_file", str(secret))
    assert field_of(data) == "gateway.backends.azure.management_key_file"


def test_the_management_key_is_refused_in_the_toml_file(tmp_path: Path) -> None:
    """Like every key, the management key may not be written in the settings file."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[gateway.backends.azure]\n"
        'url = "wss://westus.stt.speech.microsoft.com"\n'
        'management_url = "https://westus.api.cognitive.microsoft.com"\n'
        'management_key = "management-secret-0123"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.field == "gateway.backends.azure.management_key"
    assert "management-secret-0123" not in str(caught.value)


def test_health_table_builds_the_health_config() -> None:
    data = put(
        valid(),
        "health",
        {
            "run": False,
            "webhook_url": "https://hooks.example.com/alerts?token=abc123",
            "webhook_timeout_s": 2.5,
            "webhook_attempts": 5,
            "lifecycle_interval_s": 60,
            "expiry_warning_days": 10,
        },
    )
    health = build(data).health
    assert health == HealthConfig(
        run=False,
        webhook_url="https://hooks.example.com/alerts?token=abc123",
        webhook_timeout_s=2.5,
        webhook_attempts=5,
        lifecycle_interval_s=60.0,
        expiry_warning_days=10,
    )
    assert "abc123" not in repr(health)
    assert "abc123" not in repr(GatewaySettings.model_validate(data))


def test_an_empty_webhook_url_means_none() -> None:
    assert build(put(valid(), "health", {"webhook_url": ""})).health.webhook_url is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x?token=abc123",
        "https:///x?token=abc123",
        "https://hooks.example.com/x?token=abc123#f",
        "https://hooks.example.com:99999/x?token=abc123",
        "https://hooks.example.com/x y?token=abc123",
    ],
)
def test_a_bad_webhook_url_names_the_field_and_never_shows_it(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(put(valid(), "health", {"webhook_url": url}))
    assert caught.value.field == "gateway.health.webhook_url"
    assert "abc123" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("webhook_timeout_s", 0),
        ("webhook_timeout_s", 61),
        ("webhook_attempts", 0),
        ("webhook_attempts", 11),
        ("lifecycle_interval_s", 0),
        ("expiry_warning_days", -1),
    ],
)
def test_health_numbers_out_of_bounds_fail_in_pydantic(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings.model_validate({"health": {field: value}})


def test_the_canary_client_name_is_reserved() -> None:
    """Canary records carry the client `_canary`: no configured client may be called so."""
    assert field_of(put(valid(), "clients.2.name", "_canary")) == "gateway.clients[2].name"


def test_the_error_analysis_files_are_checked_to_exist(tmp_path: Path) -> None:
    """`terms` and `synonyms` reach the model; a missing file names its setting."""
    terms, synonyms = tmp_path / "terms.txt", tmp_path / "synonyms.txt"
    terms.write_text("overdraft\n", encoding="utf-8")
    synonyms.write_text("okay = ok\n", encoding="utf-8")
    data = put(valid(), "experiments.0.terms", str(terms))
    data = put(data, "experiments.0.synonyms", str(synonyms))
    experiment = build(data).experiments[0]
    assert (experiment.terms, experiment.synonyms) == (terms, synonyms)
    assert build(valid()).experiments[0].terms is None
    corpus = put(valid(), "experiments.0.terms_corpus", str(terms))
    assert build(corpus).experiments[0].terms_corpus == terms
    both = put(corpus, "experiments.0.terms", str(terms))
    assert field_of(both) == "gateway.experiments[0].terms_corpus"
    for name in ("terms", "terms_corpus", "synonyms"):
        missing = put(valid(), f"experiments.0.{name}", str(tmp_path / "nowhere.txt"))
        assert field_of(missing) == f"gateway.experiments[0].{name}"
