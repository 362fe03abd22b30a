"""The Custom Speech management client against real local HTTP servers.

A stand-in serves the v3.2 shapes (its `self` links name the real service's host, as the
service's own do); a second server plays "another host" and must never be asked anything.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import DOMAINS, EMULATOR_KEY

from gateway.config.settings import EmulatorSettings
from gateway.emulator.custom_speech import BASE_MODEL_ID
from gateway.emulator.server import create_app as create_emulator_app
from gateway.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from gateway.health.lifecycle import expiring
from gateway.server.health.management import KEY_HEADER, CustomSpeechClient

KEY = "management-secret-key-7d3e"
REAL_HOST = "https://westus.api.cognitive.microsoft.com"
API = "/speechtotext/v3.2"
ENDPOINT_ID = "afa0669c-a01e-4693-ae3a-93baf40f26d6"
CUSTOM_ID = "827712a5-f942-4997-91c3-7c6cde35600b"
BASE_ID = "8a043172-65b7-4cf3-a8b5-4449efa5a0f1"

Answer = tuple[int, Any] | Callable[[], Awaitable[web.StreamResponse]]


def endpoint_json(model_link: str) -> dict[str, Any]:
    return {
        "self": f"{REAL_HOST}{API}/endpoints/{ENDPOINT_ID}",
        "model": {"self": model_link},
        "links": {"logs": f"{REAL_HOST}{API}/endpoints/{ENDPOINT_ID}/files/logs"},
        "properties": {"loggingEnabled": False},
        "status": "Succeeded",
        "createdDateTime": "2024-03-15T10:10:00Z",
        "locale": "en-US",
        "displayName": "Banking endpoint",
    }


CUSTOM_MODEL = {
    "self": f"{REAL_HOST}{API}/models/{CUSTOM_ID}",
    "baseModel": {"self": f"{REAL_HOST}{API}/models/base/{BASE_ID}"},
    "properties": {"deprecationDates": {"transcriptionDateTime": "2026-07-15T00:00:00Z"}},
    "status": "Succeeded",
    "locale": "en-US",
    "displayName": "Banking model",
}
BASE_MODEL = {
    "self": f"{REAL_HOST}{API}/models/base/{BASE_ID}",
    "properties": {
        "deprecationDates": {
            "adaptationDateTime": "2025-01-15T00:00:00Z",
            "transcriptionDateTime": "2026-01-15T00:00:00Z",
        }
    },
    "status": "Succeeded",
    "locale": "en-US",
    "displayName": "20231015",
}


@dataclass
class Seen:
    path: str
    key: str | None


@dataclass
class StandIn:
    """A local HTTP server: what it was asked, and what it answers per path."""

    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)


ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


async def start_stand_in(aiohttp_server: ServerFactory) -> StandIn:
    stand_in = StandIn()

    async def handle(request: web.Request) -> web.StreamResponse:
        stand_in.requests.append(Seen(request.path, request.headers.get(KEY_HEADER)))
        answer = stand_in.answers.get(request.path, (404, {"code": "NotFound"}))
        if callable(answer):
            return await answer()
        status, body = answer
        if isinstance(body, bytes | str):
            return web.Response(status=status, body=body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    stand_in.url = str(server.make_url("")).rstrip("/")
    return stand_in


@pytest.fixture
async def service(aiohttp_server: ServerFactory) -> StandIn:
    """The management API, serving one endpoint that deploys the custom model."""
    stand_in = await start_stand_in(aiohttp_server)
    stand_in.answers = {
        f"{API}/endpoints/{ENDPOINT_ID}": (
            200,
            endpoint_json(f"{REAL_HOST}{API}/models/{CUSTOM_ID}"),
        ),
        f"{API}/models/{CUSTOM_ID}": (200, CUSTOM_MODEL),
        f"{API}/models/base/{BASE_ID}": (200, BASE_MODEL),
    }
    return stand_in


@pytest.fixture
async def elsewhere(aiohttp_server: ServerFactory) -> StandIn:
    """Another host: it answers anything, and must never be asked."""
    stand_in = await start_stand_in(aiohttp_server)
    stand_in.answers = {
        f"{API}/models/{CUSTOM_ID}": (200, CUSTOM_MODEL),
        f"{API}/endpoints/{ENDPOINT_ID}": (
            200,
            endpoint_json(f"{REAL_HOST}{API}/models/{CUSTOM_ID}"),
        ),
    }
    return stand_in


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def endpoint_answer(service: StandIn, body: Any, status: int = 200) -> None:
    service.answers[f"{API}/endpoints/{ENDPOINT_ID}"] = (status, body)


async def test_reads_the_endpoint_and_its_model_with_the_key(
    service: StandIn, http: aiohttp.ClientSession
) -> None:
    client = CustomSpeechClient(http, service.url + "/", KEY)
    endpoint = await client.endpoint(ENDPOINT_ID)
    assert (endpoint.id, endpoint.display_name) == (ENDPOINT_ID, "Banking endpoint")
    model = endpoint.model
    assert (model.id, model.kind, model.display_name) == (CUSTOM_ID, "custom", "Banking model")
    assert model.url == f"{REAL_HOST}{API}/models/{CUSTOM_ID}"
    assert model.transcription_expires == datetime(2026, 7, 15, tzinfo=UTC)
    assert model.adaptation_expires is None
    # The model link names the real service's host; only its path was requested, here.
    assert service.requests == [
        Seen(f"{API}/endpoints/{ENDPOINT_ID}", KEY),
        Seen(f"{API}/models/{CUSTOM_ID}", KEY),
    ]


async def test_an_endpoint_on_a_base_model(service: StandIn, http: aiohttp.ClientSession) -> None:
    endpoint_answer(service, endpoint_json(f"{REAL_HOST}{API}/models/base/{BASE_ID}"))
    endpoint = await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    assert (endpoint.model.id, endpoint.model.kind) == (BASE_ID, "base")
    assert endpoint.model.adaptation_expires == datetime(2025, 1, 15, tzinfo=UTC)
    assert service.requests[-1].path == f"{API}/models/base/{BASE_ID}"


async def test_without_a_key_no_key_header_is_sent(
    service: StandIn, http: aiohttp.ClientSession
) -> None:
    await CustomSpeechClient(http, service.url, None).endpoint(ENDPOINT_ID)
    assert [seen.key for seen in service.requests] == [None, None]


async def test_a_path_prefix_of_the_management_url_is_kept(
    service: StandIn, http: aiohttp.ClientSession
) -> None:
    for path, answer in list(service.answers.items()):
        service.answers[f"/proxy{path}"] = answer
    endpoint = await CustomSpeechClient(http, f"{service.url}/proxy", KEY).endpoint(ENDPOINT_ID)
    assert endpoint.model.id == CUSTOM_ID
    assert [seen.path for seen in service.requests] == [
        f"/proxy{API}/endpoints/{ENDPOINT_ID}",
        f"/proxy{API}/models/{CUSTOM_ID}",
    ]


async def test_a_model_link_on_another_host_is_asked_of_the_configured_host(
    service: StandIn, elsewhere: StandIn, http: aiohttp.ClientSession
) -> None:
    endpoint_answer(service, endpoint_json(f"{elsewhere.url}{API}/models/{CUSTOM_ID}"))
    endpoint = await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    assert endpoint.model.id == CUSTOM_ID
    assert service.requests[-1] == Seen(f"{API}/models/{CUSTOM_ID}", KEY)
    assert elsewhere.requests == []


async def test_a_link_outside_the_models_is_refused_without_a_request(
    service: StandIn, elsewhere: StandIn, http: aiohttp.ClientSession
) -> None:
    endpoint_answer(service, endpoint_json(f"{elsewhere.url}/steal?x={API}/models/{CUSTOM_ID}"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    assert caught.value.error_code == "management_bad_answer"
    assert "endpoint.model.self: '/steal' is not a model under" in caught.value.detail
    assert len(service.requests) == 1
    assert elsewhere.requests == []


async def test_a_redirect_is_not_followed(
    service: StandIn, elsewhere: StandIn, http: aiohttp.ClientSession
) -> None:
    async def redirect() -> web.StreamResponse:
        raise web.HTTPFound(location=f"{elsewhere.url}{API}/endpoints/{ENDPOINT_ID}")

    service.answers[f"{API}/endpoints/{ENDPOINT_ID}"] = redirect
    with pytest.raises(UpstreamRejected) as caught:
        await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    assert caught.value.status == 302
    assert "not followed" in caught.value.detail
    assert elsewhere.requests == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429])
async def test_a_4xx_is_rejected_without_the_key_even_when_echoed(
    service: StandIn, http: aiohttp.ClientSession, status: int
) -> None:
    echo = {"code": "InvalidSubscriptionKey", "message": f"the key {KEY} is not valid here"}
    endpoint_answer(service, echo, status)
    with pytest.raises(UpstreamRejected) as caught:
        await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    error = caught.value
    assert (error.status, error.error_code) == (status, f"upstream_http_{status}")
    assert f"GET {API}/endpoints/{ENDPOINT_ID}: HTTP {status}" in error.detail
    assert "InvalidSubscriptionKey: the key [redacted] is not valid here" in error.detail
    assert KEY not in str(error)
    assert KEY not in repr(error.args)


async def test_a_missing_model_is_rejected(service: StandIn, http: aiohttp.ClientSession) -> None:
    del service.answers[f"{API}/models/{CUSTOM_ID}"]
    with pytest.raises(UpstreamRejected) as caught:
        await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    assert caught.value.status == 404
    assert f"GET {API}/models/{CUSTOM_ID}: HTTP 404 (NotFound)" == caught.value.detail


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_is_unavailable(
    service: StandIn, http: aiohttp.ClientSession, status: int
) -> None:
    endpoint_answer(service, "<html>busy</html>", status)
    with pytest.raises(UpstreamUnavailable) as caught:
        await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    assert caught.value.error_code == f"management_http_{status}"
    assert caught.value.detail == f"GET {API}/endpoints/{ENDPOINT_ID}: HTTP {status}"


async def test_a_slow_answer_times_out(service: StandIn, http: aiohttp.ClientSession) -> None:
    async def slow() -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response(CUSTOM_MODEL)

    service.answers[f"{API}/models/{CUSTOM_ID}"] = slow
    client = CustomSpeechClient(http, service.url, KEY, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.endpoint(ENDPOINT_ID)
    elapsed = time.monotonic() - started
    assert caught.value.error_code == "management_timeout"
    assert caught.value.detail == f"GET {API}/models/{CUSTOM_ID}: no answer within 0.3 s"
    # The timeout is per request: the endpoint's fast answer did not use it up.
    assert 0.3 <= elapsed < 2.0


async def test_an_unreachable_service(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = CustomSpeechClient(http, f"http://127.0.0.1:{port}", KEY)
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.endpoint(ENDPOINT_ID)
    assert caught.value.error_code == "management_unreachable"
    assert caught.value.detail.startswith(f"GET {API}/endpoints/{ENDPOINT_ID}: Client")
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<html>maintenance</html>", "the answer is not JSON"),
        (b"\xff\xfe{", "the answer is not JSON"),
        ([1, 2], "endpoint: expected a JSON object, got list"),
        ({"self": f"{REAL_HOST}{API}/endpoints/x"}, "endpoint.model: expected a JSON object"),
        (b" " * (1 << 20) + b"{}", "the answer exceeds 1048576 bytes"),
    ],
    ids=["html", "not-utf8", "a-list", "no-model", "too-big"],
)
async def test_an_unexpected_body_is_unavailable(
    service: StandIn, http: aiohttp.ClientSession, body: Any, expected: str
) -> None:
    endpoint_answer(service, body)
    with pytest.raises(UpstreamUnavailable) as caught:
        await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)
    assert caught.value.error_code == "management_bad_answer"
    assert expected in caught.value.detail


async def test_a_bad_model_body_names_the_field(
    service: StandIn, http: aiohttp.ClientSession
) -> None:
    broken = json.loads(json.dumps(CUSTOM_MODEL))
    broken["properties"]["deprecationDates"]["transcriptionDateTime"] = "next summer"
    service.answers[f"{API}/models/{CUSTOM_ID}"] = (200, broken)
    with pytest.raises(UpstreamUnavailable, match="transcriptionDateTime: not an ISO-8601"):
        await CustomSpeechClient(http, service.url, KEY).endpoint(ENDPOINT_ID)


async def test_a_bad_endpoint_id_is_refused_before_any_request(
    service: StandIn, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(ConfigError, match="endpoint_id"):
        await CustomSpeechClient(http, service.url, KEY).endpoint("../models/x")
    assert service.requests == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://host", "must be an http:// or https:// URL with a host"),
        ("westus.api.cognitive.microsoft.com", "must be an http:// or https:// URL with a host"),
        ("https://user:pw@host", "without user, query or #"),
        ("https://host/?key=1", "without user, query or #"),
        ("https://host:0", "without user, query or #"),
        ("https://host:99999", "not a valid URL"),
        ("https://[::1", "not a valid URL"),
    ],
)
async def test_a_bad_management_url_is_a_config_error(
    http: aiohttp.ClientSession, url: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        CustomSpeechClient(http, url, KEY)
    assert caught.value.field == "management_url"
    assert "pw" not in str(caught.value)


async def test_a_timeout_must_be_positive(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError, match="timeout_s: must be more than 0"):
        CustomSpeechClient(http, "https://host", KEY, timeout_s=0)


# -- the real emulator ---------------------------------------------------------------------


async def test_against_the_emulator_a_switch_to_the_base_model_shows(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The emulator's Custom Speech API: the deployed model, its configured and default
    expiry dates, a redeploy to the base model (seen) and a silent fallback (not seen)."""
    near = (datetime.now(UTC) + timedelta(days=10)).date()
    settings = EmulatorSettings.model_validate(
        {
            "engine": "instant",
            "model_cache": tmp_path / "models",
            "key": EMULATOR_KEY,
            "custom": {"banking": DOMAINS["banking"] / "corpus.txt"},
            "model_expiry": {"banking": {"transcription": near.isoformat()}},
        }
    )
    server = await aiohttp_server(create_emulator_app(settings))
    url = str(server.make_url("")).rstrip("/")
    client = CustomSpeechClient(http, url, EMULATOR_KEY)

    endpoint = await client.endpoint("banking")
    model = endpoint.model
    assert (endpoint.id, model.id, model.kind) == ("banking", "banking", "custom")
    transcription = datetime(near.year, near.month, near.day, tzinfo=UTC)
    assert model.transcription_expires == transcription
    assert model.adaptation_expires is not None  # one year after the emulator started
    now = datetime.now(UTC)
    assert timedelta(days=364) < model.adaptation_expires - now <= timedelta(days=365)
    assert expiring(endpoint, now, 30) == [("transcription", transcription)]
    assert expiring(endpoint, now, 5) == []

    async def switch(model: str, *, silent: bool) -> None:
        async with http.put(
            f"{url}/emulator/endpoints/banking",
            json={"model": model, "silent": silent},
            headers={KEY_HEADER: EMULATOR_KEY},
        ) as answer:
            assert answer.status == 200, await answer.text()

    await switch("base", silent=False)
    redeployed = await client.endpoint("banking")
    assert (redeployed.model.id, redeployed.model.kind) == (BASE_MODEL_ID, "base")
    assert redeployed.model.transcription_expires is not None

    await switch("banking", silent=False)
    await switch("base", silent=True)  # as an expired model's fallback: the API does not tell
    assert (await client.endpoint("banking")).model.id == "banking"

    with pytest.raises(UpstreamRejected) as denied:
        await CustomSpeechClient(http, url, "not-the-key").endpoint("banking")
    assert denied.value.status == 401
    assert "(401: Access denied due to invalid subscription key" in denied.value.detail
    with pytest.raises(UpstreamRejected) as missing:
        await client.endpoint("travel")
    assert missing.value.status == 404
    assert "NotFound: The endpoint 'travel' does not exist." in missing.value.detail
