"""The Custom Speech API documents: the service's shapes, links and deprecation dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.config.settings import ModelExpirySettings
from gateway.emulator import custom_speech
from gateway.emulator.custom_speech import API_ROOT, BASE_MODEL_ID, Catalog
from gateway.emulator.endpoints import Deployment

STARTED = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
ORIGIN = "http://127.0.0.1:5000"
COMMON_KEYS = {
    "self",
    "displayName",
    "description",
    "locale",
    "createdDateTime",
    "lastActionDateTime",
    "status",
    "links",
    "properties",
}


def catalog(**expiry: ModelExpirySettings) -> Catalog:
    return Catalog(frozenset({"banking", "travel"}), expiry, STARTED)


def test_unset_deprecation_dates_are_one_and_two_years_after_start() -> None:
    dates = catalog().dates("banking")
    assert dates.adaptation == STARTED + timedelta(days=365)
    assert dates.transcription == STARTED + timedelta(days=730)
    assert catalog().dates("base") == dates


def test_configured_dates_win_and_the_other_keeps_its_default() -> None:
    expiry = ModelExpirySettings.model_validate({"transcription": "2027-07-15"})
    dates = catalog(banking=expiry).dates("banking")
    assert dates.transcription == datetime(2027, 7, 15, tzinfo=UTC)
    assert dates.adaptation == STARTED + timedelta(days=365)
    assert catalog(banking=expiry).dates("travel").transcription == STARTED + timedelta(days=730)


def test_a_custom_model_has_the_service_shape() -> None:
    expiry = ModelExpirySettings.model_validate(
        {"adaptation": "2027-01-15", "transcription": "2027-07-15T06:00:00"}
    )
    document = custom_speech.custom_model_json(catalog(banking=expiry), ORIGIN, "banking")
    assert set(document) == COMMON_KEYS | {"baseModel"}
    assert document["self"] == f"{ORIGIN}{API_ROOT}/models/banking"
    assert document["baseModel"] == {"self": f"{ORIGIN}{API_ROOT}/models/base/{BASE_MODEL_ID}"}
    assert document["status"] == "Succeeded"
    assert document["locale"] == "en-US"
    assert document["createdDateTime"] == "2026-03-01T12:30:05Z"
    assert document["properties"]["deprecationDates"] == {
        "adaptationDateTime": "2027-01-15T00:00:00Z",
        "transcriptionDateTime": "2027-07-15T06:00:00Z",
    }


def test_the_base_model_has_the_service_shape() -> None:
    document = custom_speech.base_model_json(catalog(), ORIGIN)
    assert set(document) == COMMON_KEYS
    assert document["self"] == f"{ORIGIN}{API_ROOT}/models/base/{BASE_MODEL_ID}"
    assert set(document["properties"]["deprecationDates"]) == {
        "adaptationDateTime",
        "transcriptionDateTime",
    }


def test_an_endpoint_links_the_model_the_api_shows_and_its_recognition_urls() -> None:
    """The endpoint's `model` is the API model (not the one a silent switch put behind it);
    its links are the recognition URLs with its id as cid, on the same origin."""
    changed = STARTED + timedelta(hours=1)
    deployment = Deployment(model="base", api_model="banking", changed_at=changed)
    document = custom_speech.endpoint_json(catalog(), ORIGIN, "banking", deployment)
    assert set(document) == COMMON_KEYS | {"model"}
    assert document["self"] == f"{ORIGIN}{API_ROOT}/endpoints/banking"
    assert document["model"] == {"self": f"{ORIGIN}{API_ROOT}/models/banking"}
    assert document["lastActionDateTime"] == "2026-03-01T13:30:05Z"
    links = document["links"]
    path = "/speech/recognition/conversation/cognitiveservices/v1?cid=banking"
    assert links["restConversation"] == f"{ORIGIN}{path}"
    assert links["webSocketConversation"] == f"ws://127.0.0.1:5000{path}"
    secure = custom_speech.endpoint_json(catalog(), "https://emu.example", "banking", deployment)
    assert secure["links"]["webSocketDictation"].startswith("wss://emu.example/")
    on_base = Deployment(model="base", api_model="base", changed_at=changed)
    assert custom_speech.endpoint_json(catalog(), ORIGIN, "banking", on_base)["model"] == {
        "self": f"{ORIGIN}{API_ROOT}/models/base/{BASE_MODEL_ID}"
    }


def test_model_names_from_api_ids() -> None:
    assert catalog().model_name(BASE_MODEL_ID) == "base"
    assert catalog().model_name("base") == "base"
    assert catalog().model_name("travel") == "travel"
    assert catalog().model_name("nope") is None
