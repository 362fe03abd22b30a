"""The Custom Speech REST API v3.2 documents the emulator serves (`models`, `endpoints`).

Pure functions from the emulator's models and live endpoint table to the service's JSON
shapes: a model or endpoint is an object with `self` (its absolute URL on the emulator's own
origin), `displayName`, `description`, `locale`, `createdDateTime`, `lastActionDateTime`,
`status` and `links`; a model has `properties.deprecationDates.{adaptationDateTime,
transcriptionDateTime}`, a custom model its `baseModel` link, an endpoint its `model` link.
Lists are `{"values": [...]}`, errors `{"code": ..., "message": ...}`.

Ids: each custom model has its configured id; the base model has the fixed id
`BASE_MODEL_ID` in the API and the name `base` in the emulator's settings and admin calls.
Deprecation dates come from `[emulator.model_expiry.<model>]`; unset, adaptation ends one
year and transcription two years after the emulator started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.config.settings import ModelExpirySettings
from gateway.emulator.endpoints import BASE_MODEL, Deployment

API_ROOT = "/speechtotext/v3.2"
BASE_MODEL_ID = "513e3135-fb3f-5d68-9122-136a528c6a82"
LOCALE = "en-US"
DEFAULT_ADAPTATION = timedelta(days=365)
DEFAULT_TRANSCRIPTION = timedelta(days=730)
_FEATURES = {
    "supportsTranscriptions": True,
    "supportsEndpoints": True,
    "supportsTranscriptionsOnSpeechContainers": False,
    "supportedOutputFormats": ["Display", "Lexical"],
}


@dataclass(frozen=True, slots=True)
class ModelDates:
    adaptation: datetime
    transcription: datetime


class Catalog:
    """The emulator's models as the Custom Speech API describes them."""

    def __init__(
        self,
        custom_ids: frozenset[str],
        expiry: Mapping[str, ModelExpirySettings],
        created_at: datetime,
    ) -> None:
        self.created_at = created_at
        self.custom_ids = custom_ids
        self._dates: dict[str, ModelDates] = {}
        for model in (BASE_MODEL, *sorted(custom_ids)):
            dates = expiry.get(model, ModelExpirySettings())
            self._dates[model] = ModelDates(
                adaptation=dates.adaptation or created_at + DEFAULT_ADAPTATION,
                transcription=dates.transcription or created_at + DEFAULT_TRANSCRIPTION,
            )

    def dates(self, model: str) -> ModelDates:
        return self._dates[model]

    def model_name(self, api_id: str) -> str | None:
        """The emulator's name of a model from its API id (None: no such model)."""
        if api_id in (BASE_MODEL_ID, BASE_MODEL):
            return BASE_MODEL
        return api_id if api_id in self.custom_ids else None


def timestamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def model_url(origin: str, model: str) -> str:
    if model == BASE_MODEL:
        return f"{origin}{API_ROOT}/models/base/{BASE_MODEL_ID}"
    return f"{origin}{API_ROOT}/models/{model}"


def endpoint_url(origin: str, endpoint_id: str) -> str:
    return f"{origin}{API_ROOT}/endpoints/{endpoint_id}"


def _common(catalog: Catalog, self_url: str, name: str, description: str) -> dict[str, Any]:
    return {
        "self": self_url,
        "displayName": name,
        "description": description,
        "locale": LOCALE,
        "createdDateTime": timestamp(catalog.created_at),
        "lastActionDateTime": timestamp(catalog.created_at),
        "status": "Succeeded",
    }


def _properties(catalog: Catalog, model: str) -> dict[str, Any]:
    dates = catalog.dates(model)
    return {
        "deprecationDates": {
            "adaptationDateTime": timestamp(dates.adaptation),
            "transcriptionDateTime": timestamp(dates.transcription),
        },
        "features": dict(_FEATURES),
    }


def base_model_json(catalog: Catalog, origin: str) -> dict[str, Any]:
    url = model_url(origin, BASE_MODEL)
    document = _common(
        catalog, url, f"{LOCALE} base model (emulator)", "The emulator's PocketSphinx en-US model."
    )
    document["links"] = {"manifest": f"{origin}{API_ROOT}/models/base/{BASE_MODEL_ID}/manifest"}
    document["properties"] = _properties(catalog, BASE_MODEL)
    return document


def custom_model_json(catalog: Catalog, origin: str, model: str) -> dict[str, Any]:
    url = model_url(origin, model)
    document = _common(
        catalog, url, model, "A language model the emulator adapted from domain text."
    )
    document["baseModel"] = {"self": model_url(origin, BASE_MODEL)}
    document["links"] = {"manifest": f"{url}/manifest"}
    document["properties"] = _properties(catalog, model)
    return document


def endpoint_json(
    catalog: Catalog, origin: str, endpoint_id: str, deployment: Deployment
) -> dict[str, Any]:
    document = _common(
        catalog, endpoint_url(origin, endpoint_id), endpoint_id, "A custom endpoint."
    )
    document["lastActionDateTime"] = timestamp(deployment.changed_at)
    document["model"] = {"self": model_url(origin, deployment.api_model)}
    document["links"] = _recognition_links(origin, endpoint_id)
    document["properties"] = {"loggingEnabled": False}
    return document


def _recognition_links(origin: str, endpoint_id: str) -> dict[str, str]:
    ws_origin = "ws" + origin.removeprefix("http")  # http -> ws, https -> wss
    links: dict[str, str] = {}
    for mode in ("interactive", "conversation", "dictation"):
        path = f"/speech/recognition/{mode}/cognitiveservices/v1?cid={endpoint_id}"
        links[f"rest{mode.capitalize()}"] = f"{origin}{path}"
        links[f"webSocket{mode.capitalize()}"] = f"{ws_origin}{path}"
    return links


def values(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A list as the service pages it (everything fits one page here)."""
    return {"values": items}


def error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}
