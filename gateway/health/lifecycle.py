"""The lifecycle of a Custom Speech endpoint, read from the service's management answers.

Custom Speech REST API v3.2 describes an endpoint as `{self, model: {self}, displayName,
locale, ...}` and a model (custom under `/models/{id}`, base under `/models/base/{id}`) as
`{self, displayName, locale, properties: {deprecationDates: {adaptationDateTime,
transcriptionDateTime}}, ...}`. This module turns those JSON values into `EndpointInfo` and
`ModelInfo`, checks the links it will follow, and says which expiry dates are near. It does
no I/O: `gateway.server.health.management` fetches the JSON.

An answer of the wrong shape raises `UpstreamUnavailable("management_bad_answer")` naming
the field, as a broken service would: the caller reports it and tries again later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from urllib.parse import urlsplit

from gateway.errors import ConfigError, UpstreamUnavailable

API_PREFIX: Final = "/speechtotext/v3.2"
MODELS_PREFIX: Final = f"{API_PREFIX}/models/"
BAD_ANSWER: Final = "management_bad_answer"

# What follows MODELS_PREFIX in a model's link: a custom model's id, or `base/` and a base
# model's id. Only these characters: no `..`, no percent-escape, no other resource; a bare
# `base` is the list of base models, not a model.
_MODEL_REST: Final = re.compile(r"(base/)?((?!base\Z)[A-Za-z0-9_-]+)")
_ID: Final = re.compile(r"[A-Za-z0-9_-]+")
_SHOWN: Final = 80  # how much of an unexpected value an error message quotes

ExpiryKind = Literal["adaptation", "transcription"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A speech model as the management API describes it."""

    id: str
    url: str  # its `self` link
    kind: Literal["base", "custom"]
    display_name: str
    locale: str | None
    adaptation_expires: datetime | None  # properties.deprecationDates.adaptationDateTime
    transcription_expires: datetime | None  # properties.deprecationDates.transcriptionDateTime


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """A custom endpoint and the model it deploys."""

    id: str
    display_name: str
    model: ModelInfo


def endpoint_path(endpoint_id: str) -> str:
    """The API path of an endpoint; the id is checked, since it goes into a URL."""
    if not _ID.fullmatch(endpoint_id):
        raise ConfigError("endpoint_id", f"must be letters, digits, - or _, not {endpoint_id!r}")
    return f"{API_PREFIX}/endpoints/{endpoint_id}"


def model_path(link: str, where: str = "endpoint.model.self") -> str:
    """The path of a model link, refused unless it names one model of the v3.2 API.

    Only the path is kept: the caller requests it on its own configured host, so a link to
    another host never receives the key.
    """
    try:
        path = urlsplit(link).path
    except ValueError:
        raise _bad(where, f"not a URL: {_quote(link)}") from None
    rest = path[len(MODELS_PREFIX) :] if path.startswith(MODELS_PREFIX) else None
    if rest is None or not _MODEL_REST.fullmatch(rest):
        raise _bad(where, f"{_quote(path)} is not a model under {MODELS_PREFIX}")
    return path


def endpoint_model_link(data: object) -> str:
    """The link to the model an endpoint answer names (`model.self`)."""
    endpoint = _object(data, "endpoint")
    model = _object(endpoint.get("model"), "endpoint.model")
    return _string(model.get("self"), "endpoint.model.self")


def parse_endpoint(data: object, model: ModelInfo) -> EndpointInfo:
    """An endpoint answer, with the model its `model.self` link led to."""
    endpoint = _object(data, "endpoint")
    link = _string(endpoint.get("self"), "endpoint.self")
    segments = urlsplit(link).path.rstrip("/").split("/")
    if len(segments) < 2 or segments[-2] != "endpoints" or not _ID.fullmatch(segments[-1]):
        raise _bad("endpoint.self", f"{_quote(link)} is not an endpoint's link")
    endpoint_id = segments[-1]
    name = _optional_string(endpoint.get("displayName"), "endpoint.displayName")
    return EndpointInfo(id=endpoint_id, display_name=name or endpoint_id, model=model)


def parse_model(data: object) -> ModelInfo:
    """A model answer (custom or base); its kind follows from its own `self` link."""
    model = _object(data, "model")
    link = _string(model.get("self"), "model.self")
    match = _MODEL_REST.fullmatch(model_path(link, "model.self")[len(MODELS_PREFIX) :])
    assert match is not None  # model_path checked it
    model_id = match.group(2)
    name = _optional_string(model.get("displayName"), "model.displayName")
    properties = _optional_object(model.get("properties"), "model.properties")
    dates_field = "model.properties.deprecationDates"
    dates = _optional_object(properties.get("deprecationDates"), dates_field)
    return ModelInfo(
        id=model_id,
        url=link,
        kind="base" if match.group(1) else "custom",
        display_name=name or model_id,
        locale=_optional_string(model.get("locale"), "model.locale"),
        adaptation_expires=_date(dates, "adaptationDateTime", dates_field),
        transcription_expires=_date(dates, "transcriptionDateTime", dates_field),
    )


def expiring(endpoint: EndpointInfo, now: datetime, days: int) -> list[tuple[str, datetime]]:
    """The expiry dates of the endpoint's model that fall within `days` of `now` (the
    boundary included) or are past: [("adaptation" | "transcription", when)], soonest first."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 0:
        raise ValueError(f"days must be 0 or more, not {days}")
    horizon = now + timedelta(days=days)
    model = endpoint.model
    dates: list[tuple[ExpiryKind, datetime | None]] = [
        ("adaptation", model.adaptation_expires),
        ("transcription", model.transcription_expires),
    ]
    near = [(kind, when) for kind, when in dates if when is not None and when <= horizon]
    return sorted(near, key=lambda item: (item[1], item[0]))


def days_until(when: datetime, now: datetime) -> float:
    """Days from `now` to `when`, negative once past (the expiry gauge's value)."""
    return (when - now).total_seconds() / 86400.0


# -- reading the JSON ----------------------------------------------------------------------


def _bad(field: str, problem: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(BAD_ANSWER, f"the management API's {field}: {problem}")


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _object(value: object, field: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _bad(field, f"expected a JSON object, got {type(value).__name__}")
    return value


def _optional_object(value: object, field: str) -> Mapping[str, object]:
    return {} if value is None else _object(value, field)


def _string(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(field, f"expected a non-empty string, got {_quote(value)}")
    return value


def _optional_string(value: object, field: str) -> str | None:
    return None if value is None else _string(value, field)


def _date(dates: Mapping[str, object], name: str, where: str) -> datetime | None:
    """An ISO-8601 date-time (or date); one without a zone is UTC, as the API's are."""
    value, field = dates.get(name), f"{where}.{name}"
    if value is None:
        return None
    text = _string(value, field)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(field, f"not an ISO-8601 date-time: {_quote(text)}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
