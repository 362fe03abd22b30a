"""Parsing Custom Speech v3.2 endpoint and model answers; the links it follows; `expiring`.

The samples have the shapes of the API reference's examples (Endpoints - Get, Models - Get
Custom Model, Models - Get Base Model, v3.2).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.errors import ConfigError, UpstreamUnavailable
from gateway.health.lifecycle import (
    EndpointInfo,
    ModelInfo,
    days_until,
    endpoint_model_link,
    endpoint_path,
    expiring,
    model_path,
    parse_endpoint,
    parse_model,
)

HOST = "https://westus.api.cognitive.microsoft.com"
API = f"{HOST}/speechtotext/v3.2"
ENDPOINT_ID = "afa0669c-a01e-4693-ae3a-93baf40f26d6"
CUSTOM_ID = "827712a5-f942-4997-91c3-7c6cde35600b"
BASE_ID = "8a043172-65b7-4cf3-a8b5-4449efa5a0f1"


def endpoint_json(model_link: str = f"{API}/models/{CUSTOM_ID}") -> dict[str, Any]:
    return {
        "self": f"{API}/endpoints/{ENDPOINT_ID}",
        "model": {"self": model_link},
        "links": {
            "logs": f"{API}/endpoints/{ENDPOINT_ID}/files/logs",
            "webSocketInteractive": "wss://westus.stt.speech.microsoft.com/speech/recognition/"
            f"interactive/cognitiveservices/v1?cid={ENDPOINT_ID}",
        },
        "properties": {"loggingEnabled": True},
        "lastActionDateTime": "2024-03-15T10:12:00Z",
        "status": "Succeeded",
        "createdDateTime": "2024-03-15T10:10:00Z",
        "locale": "en-US",
        "displayName": "Banking endpoint",
        "description": "the banking domain's model",
    }


def custom_model_json() -> dict[str, Any]:
    return {
        "self": f"{API}/models/{CUSTOM_ID}",
        "baseModel": {"self": f"{API}/models/base/{BASE_ID}"},
        "datasets": [{"self": f"{API}/datasets/cdc91c24-3972-496d-a12f-209c35f4cc6c"}],
        "links": {"manifest": f"{API}/models/{CUSTOM_ID}/manifest"},
        "properties": {
            "deprecationDates": {"transcriptionDateTime": "2026-07-15T00:00:00Z"},
            "features": {"supportsTranscriptions": True},
        },
        "lastActionDateTime": "2024-03-15T09:00:00Z",
        "status": "Succeeded",
        "createdDateTime": "2024-03-15T08:00:00Z",
        "locale": "en-US",
        "displayName": "Banking model",
    }


def base_model_json() -> dict[str, Any]:
    return {
        "self": f"{API}/models/base/{BASE_ID}",
        "links": {"manifest": f"{API}/models/base/{BASE_ID}/manifest"},
        "properties": {
            "deprecationDates": {
                "adaptationDateTime": "2025-01-15T00:00:00Z",
                "transcriptionDateTime": "2026-01-15T00:00:00Z",
            },
            "features": {"supportsAdaptationsWith": ["Language"]},
            "chargeForAdaptation": True,
        },
        "lastActionDateTime": "2023-10-20T00:00:00Z",
        "status": "Succeeded",
        "createdDateTime": "2023-10-15T00:00:00Z",
        "locale": "en-US",
        "displayName": "20231015",
        "description": "en-US base model",
    }


# -- parsing ---------------------------------------------------------------------------------


def test_a_custom_model_endpoint() -> None:
    data = endpoint_json()
    link = endpoint_model_link(data)
    assert model_path(link) == f"/speechtotext/v3.2/models/{CUSTOM_ID}"
    model = parse_model(custom_model_json())
    assert model == ModelInfo(
        id=CUSTOM_ID,
        url=f"{API}/models/{CUSTOM_ID}",
        kind="custom",
        display_name="Banking model",
        locale="en-US",
        adaptation_expires=None,
        transcription_expires=datetime(2026, 7, 15, tzinfo=UTC),
    )
    endpoint = parse_endpoint(data, model)
    assert endpoint == EndpointInfo(id=ENDPOINT_ID, display_name="Banking endpoint", model=model)


def test_an_endpoint_deploying_a_base_model() -> None:
    data = endpoint_json(model_link=f"{API}/models/base/{BASE_ID}")
    assert model_path(endpoint_model_link(data)) == f"/speechtotext/v3.2/models/base/{BASE_ID}"
    model = parse_model(base_model_json())
    assert (model.id, model.kind, model.display_name) == (BASE_ID, "base", "20231015")
    assert model.adaptation_expires == datetime(2025, 1, 15, tzinfo=UTC)
    assert model.transcription_expires == datetime(2026, 1, 15, tzinfo=UTC)
    assert parse_endpoint(data, model).model.kind == "base"


@pytest.mark.parametrize(
    "properties",
    [None, {}, {"deprecationDates": None}, {"deprecationDates": {}}],
    ids=["no-properties", "empty-properties", "null-dates", "empty-dates"],
)
def test_missing_deprecation_dates_are_none(properties: dict[str, Any] | None) -> None:
    data = custom_model_json()
    if properties is None:
        del data["properties"]
    else:
        data["properties"] = properties
    model = parse_model(data)
    assert model.adaptation_expires is None
    assert model.transcription_expires is None
    endpoint = parse_endpoint(endpoint_json(), model)
    assert expiring(endpoint, datetime(2100, 1, 1, tzinfo=UTC), 30) == []


def test_names_default_to_ids_and_dates_without_a_zone_are_utc() -> None:
    data = custom_model_json()
    del data["displayName"], data["locale"]
    data["properties"]["deprecationDates"] = {
        "adaptationDateTime": "2027-01-15",
        "transcriptionDateTime": "2027-07-15T12:30:00",
    }
    model = parse_model(data)
    assert (model.display_name, model.locale) == (CUSTOM_ID, None)
    assert model.adaptation_expires == datetime(2027, 1, 15, tzinfo=UTC)
    assert model.transcription_expires == datetime(2027, 7, 15, 12, 30, tzinfo=UTC)
    offset = copy.deepcopy(custom_model_json())
    offset["properties"]["deprecationDates"]["transcriptionDateTime"] = "2027-07-15T02:00:00+02:00"
    assert parse_model(offset).transcription_expires == datetime(2027, 7, 15, tzinfo=UTC)
    endpoint = endpoint_json()
    del endpoint["displayName"]
    assert parse_endpoint(endpoint, model).display_name == ENDPOINT_ID


def bad_answer(call: Any, *args: Any) -> str:
    with pytest.raises(UpstreamUnavailable) as caught:
        call(*args)
    assert caught.value.error_code == "management_bad_answer"
    return caught.value.detail


def test_bad_model_shapes_name_the_field() -> None:
    assert "model: expected a JSON object, got list" in bad_answer(parse_model, [1])
    missing_self = custom_model_json()
    del missing_self["self"]
    assert "model.self: expected a non-empty string, got None" in bad_answer(
        parse_model, missing_self
    )
    not_a_model = custom_model_json() | {"self": f"{API}/datasets/{CUSTOM_ID}"}
    assert "model.self: '/speechtotext/v3.2/datasets/" in bad_answer(parse_model, not_a_model)
    named_5 = custom_model_json() | {"displayName": 5}
    assert "model.displayName: expected a non-empty string, got 5" in bad_answer(
        parse_model, named_5
    )
    dates_text = custom_model_json()
    dates_text["properties"]["deprecationDates"] = "2026-07-15"
    assert "model.properties.deprecationDates: expected a JSON object, got str" in bad_answer(
        parse_model, dates_text
    )
    not_a_date = custom_model_json()
    not_a_date["properties"]["deprecationDates"]["transcriptionDateTime"] = "soon"
    detail = bad_answer(parse_model, not_a_date)
    assert "deprecationDates.transcriptionDateTime: not an ISO-8601 date-time: 'soon'" in detail
    numeric = custom_model_json()
    numeric["properties"]["deprecationDates"]["adaptationDateTime"] = 1700000000
    assert "deprecationDates.adaptationDateTime: expected a non-empty string" in bad_answer(
        parse_model, numeric
    )


def test_bad_endpoint_shapes_name_the_field() -> None:
    assert "endpoint: expected a JSON object, got str" in bad_answer(endpoint_model_link, "x")
    no_model = endpoint_json()
    del no_model["model"]
    assert "endpoint.model: expected a JSON object, got NoneType" in bad_answer(
        endpoint_model_link, no_model
    )
    model_string = endpoint_json() | {"model": f"{API}/models/{CUSTOM_ID}"}
    assert "endpoint.model: expected a JSON object" in bad_answer(endpoint_model_link, model_string)
    model = parse_model(custom_model_json())
    not_an_endpoint = endpoint_json() | {"self": f"{API}/models/{ENDPOINT_ID}"}
    assert "endpoint.self:" in bad_answer(parse_endpoint, not_an_endpoint, model)
    no_self = endpoint_json()
    del no_self["self"]
    assert "endpoint.self: expected a non-empty string" in bad_answer(
        parse_endpoint, no_self, model
    )


def test_a_long_value_is_cut_in_the_message() -> None:
    data = custom_model_json()
    data["properties"]["deprecationDates"]["transcriptionDateTime"] = "x" * 5000
    detail = bad_answer(parse_model, data)
    assert len(detail) < 250
    assert detail.endswith("...")


# -- the links the client follows ------------------------------------------------------------


def test_a_model_link_keeps_only_its_path() -> None:
    assert (
        model_path(f"https://elsewhere.example:8443/speechtotext/v3.2/models/{CUSTOM_ID}?x=1")
        == f"/speechtotext/v3.2/models/{CUSTOM_ID}"
    )
    assert model_path("/speechtotext/v3.2/models/base/b1") == "/speechtotext/v3.2/models/base/b1"


@pytest.mark.parametrize(
    "path",
    [
        "/speechtotext/v3.2/datasets/x",
        "/speechtotext/v3.1/models/x",
        "/speechtotext/v3.2/models/",
        "/speechtotext/v3.2/models/base",
        "/speechtotext/v3.2/models/base/",
        "/speechtotext/v3.2/models/x/files",
        "/speechtotext/v3.2/models/../endpoints/x",
        "/speechtotext/v3.2/models/%2e%2e",
        "/speechtotext/v3.2/models/a.b",
        "/other/speechtotext/v3.2/models/x",
    ],
)
def test_a_link_that_is_not_one_model_is_refused(path: str) -> None:
    detail = bad_answer(model_path, f"{HOST}{path}")
    assert "is not a model under /speechtotext/v3.2/models/" in detail


def test_endpoint_paths_take_only_plain_ids() -> None:
    assert endpoint_path(ENDPOINT_ID) == f"/speechtotext/v3.2/endpoints/{ENDPOINT_ID}"
    assert endpoint_path("banking_2") == "/speechtotext/v3.2/endpoints/banking_2"
    for bad in ("", "..", "a/b", "a?b", "é"):
        with pytest.raises(ConfigError, match="endpoint_id: must be letters, digits, - or _"):
            endpoint_path(bad)


# -- expiry ----------------------------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def endpoint_expiring(adaptation: datetime | None, transcription: datetime | None) -> EndpointInfo:
    model = ModelInfo(
        id="m",
        url=f"{API}/models/m",
        kind="custom",
        display_name="m",
        locale="en-US",
        adaptation_expires=adaptation,
        transcription_expires=transcription,
    )
    return EndpointInfo(id="e", display_name="e", model=model)


def test_expiring_includes_the_boundary_and_excludes_a_second_later() -> None:
    edge = NOW + timedelta(days=30)
    assert expiring(endpoint_expiring(None, edge), NOW, 30) == [("transcription", edge)]
    later = edge + timedelta(seconds=1)
    assert expiring(endpoint_expiring(None, later), NOW, 30) == []
    assert expiring(endpoint_expiring(None, later), NOW, 31) == [("transcription", later)]


def test_expiring_includes_past_dates_soonest_first() -> None:
    past = NOW - timedelta(days=400)
    soon = NOW + timedelta(days=3)
    endpoint = endpoint_expiring(adaptation=soon, transcription=past)
    assert expiring(endpoint, NOW, 30) == [("transcription", past), ("adaptation", soon)]
    assert expiring(endpoint, NOW, 0) == [("transcription", past)]
    assert expiring(endpoint_expiring(NOW, None), NOW, 0) == [("adaptation", NOW)]
    same = endpoint_expiring(soon, soon)
    assert expiring(same, NOW, 30) == [("adaptation", soon), ("transcription", soon)]


def test_expiring_compares_across_time_zones() -> None:
    tokyo = timezone(timedelta(hours=9))
    edge = (NOW + timedelta(days=30)).astimezone(tokyo)
    assert expiring(endpoint_expiring(None, edge), NOW, 30) == [("transcription", edge)]


def test_expiring_refuses_a_naive_now_and_negative_days() -> None:
    endpoint = endpoint_expiring(None, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        expiring(endpoint, NOW.replace(tzinfo=None), 30)
    with pytest.raises(ValueError, match="days must be 0 or more, not -1"):
        expiring(endpoint, NOW, -1)


def test_days_until_is_negative_once_past() -> None:
    assert days_until(NOW + timedelta(days=1, hours=12), NOW) == 1.5
    assert days_until(NOW - timedelta(days=2), NOW) == -2.0
