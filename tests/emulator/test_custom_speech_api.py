"""The Custom Speech API subset and the endpoint switch, served by the emulator app in-process
(instant engine): auth, shapes, errors, and that recognition follows a switch."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config.settings import EmulatorSettings
from gateway.emulator.auth import issue_token
from gateway.emulator.custom_speech import API_ROOT, BASE_MODEL_ID
from gateway.emulator.server import create_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
KEY = "custom-speech-api-test-key"
HEADERS = {"Ocp-Apim-Subscription-Key": KEY}
BANKING_TEXT = "Banking model answers."
BASE_TEXT = "Base model answers."


def settings(**extra: Any) -> EmulatorSettings:
    return EmulatorSettings.model_validate(
        {
            "engine": "instant",
            "key": KEY,
            "custom": {"banking": Path("unused.txt"), "travel": Path("unused.txt")},
            "instant_texts": {"banking": BANKING_TEXT, "base": BASE_TEXT},
            "model_expiry": {"banking": {"transcription": "2027-07-15"}},
            **extra,
        }
    )


@pytest.fixture
async def client(aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(create_app(settings()))


async def get(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path, headers=HEADERS)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def put(client: Client, endpoint: str, body: Any, status: int = 200) -> Any:
    response = await client.put(f"/emulator/endpoints/{endpoint}", json=body, headers=HEADERS)
    assert response.status == status, await response.text()
    return await response.json()


def wav(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * int(16000 * seconds))
    return buffer.getvalue()


async def recognise(client: Client, endpoint: str) -> str:
    """What the REST short-audio path recognises on this endpoint (instant engine)."""
    response = await client.post(
        "/speech/recognition/conversation/cognitiveservices/v1",
        params={"language": "en-US", "cid": endpoint},
        data=wav(),
        headers={**HEADERS, "Content-Type": "audio/wav"},
    )
    assert response.status == 200
    body = await response.json()
    assert body["RecognitionStatus"] == "Success"
    text: str = body["DisplayText"]
    return text


@pytest.mark.parametrize(
    "path",
    [
        f"{API_ROOT}/endpoints",
        f"{API_ROOT}/endpoints/banking",
        f"{API_ROOT}/models",
        f"{API_ROOT}/models/banking",
        f"{API_ROOT}/models/base",
        f"{API_ROOT}/models/base/{BASE_MODEL_ID}",
        "/emulator/endpoints",
    ],
)
async def test_every_route_wants_the_key(client: Client, path: str) -> None:
    """No key or a wrong key: 401 with API Management's error shape; the key as header or a
    Bearer token from issueToken: 200."""
    for headers in ({}, {"Ocp-Apim-Subscription-Key": "wrong"}):
        response = await client.get(path, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "401"
    assert (await client.get(path, headers=HEADERS)).status == 200
    bearer = {"Authorization": f"Bearer {issue_token(KEY)}"}
    assert (await client.get(path, headers=bearer)).status == 200


async def test_the_switch_wants_the_key(client: Client) -> None:
    response = await client.put("/emulator/endpoints/banking", json={"model": "base"})
    assert response.status == 401
    assert (await get(client, "/emulator/endpoints"))["banking"]["model"] == "banking"


async def test_lists_and_items(client: Client) -> None:
    """Lists are {"values": [...]}; items link each other by absolute URLs on this origin."""
    origin = str(client.make_url(""))
    endpoints = (await get(client, f"{API_ROOT}/endpoints"))["values"]
    assert [e["displayName"] for e in endpoints] == ["banking", "travel"]
    endpoint = await get(client, f"{API_ROOT}/endpoints/banking")
    assert endpoint == endpoints[0]
    assert endpoint["self"] == f"{origin}{API_ROOT}/endpoints/banking"
    model_url = endpoint["model"]["self"]
    assert model_url == f"{origin}{API_ROOT}/models/banking"
    model = await get(client, model_url.removeprefix(origin))
    assert model["properties"]["deprecationDates"]["transcriptionDateTime"] == (
        "2027-07-15T00:00:00Z"
    )
    models = (await get(client, f"{API_ROOT}/models"))["values"]
    assert [m["self"] for m in models] == [model_url, f"{origin}{API_ROOT}/models/travel"]
    base = await get(client, model["baseModel"]["self"].removeprefix(origin))
    assert base == (await get(client, f"{API_ROOT}/models/base"))["values"][0]


@pytest.mark.parametrize(
    "path",
    [
        f"{API_ROOT}/endpoints/nope",
        f"{API_ROOT}/models/nope",
        f"{API_ROOT}/models/{BASE_MODEL_ID}",  # the base model is not a custom model
        f"{API_ROOT}/models/base/banking",
    ],
)
async def test_unknown_ids_are_not_found(client: Client, path: str) -> None:
    body = await get(client, path, status=404)
    assert body["code"] == "NotFound"
    assert path.rsplit("/", 1)[1] in body["message"]


async def test_a_redeploy_shows_everywhere_and_recognition_follows(client: Client) -> None:
    assert await recognise(client, "banking") == BANKING_TEXT
    answer = await put(client, "banking", {"model": "base", "silent": False})
    assert answer == {"banking": {"model": "base", "api_model": "base"}}
    assert await recognise(client, "banking") == BASE_TEXT
    endpoint = await get(client, f"{API_ROOT}/endpoints/banking")
    assert endpoint["model"]["self"].endswith(f"/models/base/{BASE_MODEL_ID}")
    assert endpoint["lastActionDateTime"] >= endpoint["createdDateTime"]
    assert (await get(client, "/emulator/endpoints")) == {
        "banking": {"model": "base", "api_model": "base"},
        "travel": {"model": "travel", "api_model": "travel"},
    }
    # Back to a custom model, named by its id (the base model also by its API id).
    await put(client, "banking", {"model": "banking"})
    assert await recognise(client, "banking") == BANKING_TEXT
    await put(client, "banking", {"model": BASE_MODEL_ID})
    assert await recognise(client, "banking") == BASE_TEXT


async def test_a_silent_switch_hides_from_the_api(client: Client) -> None:
    """silent=true: recognition changes, the endpoint document does not."""
    before = await get(client, f"{API_ROOT}/endpoints/banking")
    answer = await put(client, "banking", {"model": "base", "silent": True})
    assert answer == {"banking": {"model": "base", "api_model": "banking"}}
    assert await recognise(client, "banking") == BASE_TEXT
    assert await get(client, f"{API_ROOT}/endpoints/banking") == before


async def test_another_custom_model_behind_an_endpoint(client: Client) -> None:
    """travel has no script of its own: it answers instant_text."""
    await put(client, "banking", {"model": "travel"})
    default = EmulatorSettings().instant_text
    assert await recognise(client, "banking") == default
    endpoint = await get(client, f"{API_ROOT}/endpoints/banking")
    assert endpoint["model"]["self"].endswith("/models/travel")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "nope"}, 400, "no model 'nope' (known: banking, base, travel)"),
        ({"silent": True}, 400, "'model' must be"),
        ({"model": "base", "silent": "yes"}, 400, "'silent' must be true or false"),
        ({"model": "base", "force": True}, 400, "unknown field(s): force"),
        (["base"], 400, "must be a JSON object"),
    ],
)
async def test_bad_switch_requests_say_what_is_wrong(
    client: Client, body: Any, status: int, words: str
) -> None:
    answer = await put(client, "banking", body, status=status)
    assert words in answer["error"]
    assert (await get(client, "/emulator/endpoints"))["banking"]["model"] == "banking"


async def test_bad_switch_targets_and_bodies(client: Client) -> None:
    answer = await put(client, "nope", {"model": "base"}, status=404)
    assert answer == {"error": "no custom endpoint 'nope'"}
    for data, status in ((b"{not json", 400), (b"x" * 5000, 413)):
        response = await client.put("/emulator/endpoints/banking", data=data, headers=HEADERS)
        assert response.status == status
        assert "error" in await response.json()


async def test_the_fallback_knob_switches_recognition_silently(aiohttp_client: MakeClient) -> None:
    """fallback_after_s after start-up every custom endpoint recognises with the base model;
    the API keeps showing the custom models."""
    app = create_app(settings(faults={"fallback_after_s": 0.5}))
    client = await aiohttp_client(app)
    assert await recognise(client, "banking") == BANKING_TEXT
    await asyncio.sleep(0.6)
    assert await recognise(client, "banking") == BASE_TEXT
    assert (await get(client, "/emulator/endpoints")) == {
        "banking": {"model": "base", "api_model": "banking"},
        "travel": {"model": "base", "api_model": "travel"},
    }
    endpoint = await get(client, f"{API_ROOT}/endpoints/travel")
    assert endpoint["model"]["self"].endswith("/models/travel")


async def test_without_a_key_there_is_no_auth(aiohttp_client: MakeClient) -> None:
    """Like recognition: an emulator without a key (container style) asks for none."""
    app = create_app(settings(key=None))
    client = await aiohttp_client(app)
    assert (await client.get(f"{API_ROOT}/endpoints")).status == 200
    response = await client.put("/emulator/endpoints/banking", json={"model": "base"})
    assert response.status == 200
