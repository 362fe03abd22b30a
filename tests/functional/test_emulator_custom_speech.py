"""The emulator's Custom Speech lifecycle against real emulator processes: the `models` and
`endpoints` API, switching an endpoint's model at run time (seen by the real Speech SDK),
and the fallback fault knob."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import DOMAINS, EMULATOR_KEY, toml_value

from gateway.emulator.custom_speech import API_ROOT, BASE_MODEL_ID
from gateway.stats.wer import corpus_wer
from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator, LocalService
from gateway.tools.speech_client import speech_config, transcribe_file

V1_CONVERSATION = "/speech/recognition/conversation/cognitiveservices/v1"
KEY_HEADERS = {"Ocp-Apim-Subscription-Key": EMULATOR_KEY}
BANKING_TEXT = "Banking model answers here."
BASE_TEXT = "Base model answers here."
FALLBACK_AFTER_S = 4.0
# One scripted phrase per file: the instant engine answers each window of this much audio.
INSTANT = {"engine": "instant", "instant_utterance_ms": 60_000}


def write_config(path: Path, emulator: dict[str, Any], tables: dict[str, dict[str, Any]]) -> Path:
    lines = ["[emulator]"] + [f"{k} = {toml_value(v)}" for k, v in emulator.items()]
    for name, table in tables.items():
        lines.append(f"[emulator.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_emulator(work: Path, tables: dict[str, dict[str, Any]], **emulator: Any) -> LocalEmulator:
    work.mkdir(parents=True, exist_ok=True)
    settings = {
        "custom": {name: str(DOMAINS[name] / "corpus.txt") for name in ("banking", "travel")},
        "model_cache": str(work / "models"),
        **emulator,
    }
    config = write_config(work / "emulator.toml", settings, tables)
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__KEY": EMULATOR_KEY}
    return LocalEmulator("--config", str(config), log_path=work / "emulator.log", env=env)


def instant_tables(**faults: Any) -> dict[str, dict[str, Any]]:
    return {
        # A date, and a date-time with an offset (reported in UTC).
        "model_expiry.banking": {
            "adaptation": "2027-01-15",
            "transcription": "2027-07-15T12:00:00+02:00",
        },
        "instant_texts": {"banking": BANKING_TEXT, "base": BASE_TEXT},
        **({"faults": faults} if faults else {}),
    }


@pytest.fixture(scope="module")
def instant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    work = tmp_path_factory.mktemp("custom-speech-instant")
    with start_emulator(work, instant_tables(), **INSTANT) as running:
        yield running


def call(
    emulator: LocalService,
    path: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """An HTTP call to the emulator; (status, JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    sent = {**(KEY_HEADERS if headers is None else headers), "Content-Type": "application/json"}
    url = path if path.startswith("http") else f"{emulator.http_url}{path}"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(emulator: LocalService, path: str) -> Any:
    status, body = call(emulator, path)
    assert status == 200, body
    return body


def switch(emulator: LocalService, endpoint: str, model: str, *, silent: bool) -> Any:
    status, body = call(
        emulator,
        f"/emulator/endpoints/{endpoint}",
        method="PUT",
        body={"model": model, "silent": silent},
    )
    assert status == 200, body
    return body


def sdk_text(emulator: LocalService, endpoint_id: str, wav: Path) -> str:
    """What the real Speech SDK recognises on this custom endpoint (USP over WebSocket)."""
    config = speech_config(
        f"{emulator.ws_url}{V1_CONVERSATION}", EMULATOR_KEY, endpoint_id=endpoint_id
    )
    transcript = transcribe_file(config, wav)
    assert transcript.error_code is None, transcript.error_details
    return transcript.text


def test_the_api_describes_endpoints_and_models(instant: LocalService) -> None:
    """The endpoint links its model, the model its base model, by absolute URLs on the
    emulator's origin; the configured deprecation dates are reported in UTC; the defaults
    lie in the future."""
    status, listing = call(instant, f"{API_ROOT}/endpoints")
    assert status == 200
    assert [e["displayName"] for e in listing["values"]] == ["banking", "travel"]
    endpoint = listing["values"][0]
    assert endpoint["self"] == f"{instant.http_url}{API_ROOT}/endpoints/banking"
    assert endpoint["status"] == "Succeeded"
    assert endpoint["links"]["webSocketConversation"] == (
        f"{instant.ws_url}{V1_CONVERSATION}?cid=banking"
    )
    status, model = call(instant, endpoint["model"]["self"])
    assert status == 200
    assert model["self"] == endpoint["model"]["self"]
    assert model["properties"]["deprecationDates"] == {
        "adaptationDateTime": "2027-01-15T00:00:00Z",
        "transcriptionDateTime": "2027-07-15T10:00:00Z",
    }
    status, base = call(instant, model["baseModel"]["self"])
    assert status == 200
    assert base["self"].endswith(f"/models/base/{BASE_MODEL_ID}")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    assert base["properties"]["deprecationDates"]["transcriptionDateTime"] > now
    models = get(instant, f"{API_ROOT}/models")
    assert [m["displayName"] for m in models["values"]] == ["banking", "travel"]
    assert get(instant, f"{API_ROOT}/models/base") == {"values": [base]}


def test_the_api_wants_the_key_and_names_unknown_ids(instant: LocalService) -> None:
    for headers in ({}, {"Ocp-Apim-Subscription-Key": "wrong"}):
        status, body = call(instant, f"{API_ROOT}/endpoints", headers=headers)
        assert (status, body["error"]["code"]) == (401, "401")
        status, body = call(
            instant,
            "/emulator/endpoints/banking",
            method="PUT",
            body={"model": "base"},
            headers=headers,
        )
        assert status == 401
    status, body = call(instant, f"{API_ROOT}/endpoints/nope")
    assert (status, body["code"]) == (404, "NotFound")
    assert "nope" in body["message"]


def test_switches_are_seen_by_the_sdk_and_by_the_api(
    instant: LocalService, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """A silent switch to the base model changes what the SDK gets on the custom endpoint but
    not what the API shows; a redeploy changes both; a switch back restores it."""
    wav = datasets["banking"][0].audio
    try:
        assert sdk_text(instant, "banking", wav) == BANKING_TEXT
        switch(instant, "banking", "base", silent=True)
        assert sdk_text(instant, "banking", wav) == BASE_TEXT
        endpoint = get(instant, f"{API_ROOT}/endpoints/banking")
        assert endpoint["model"]["self"].endswith("/models/banking")
        switch(instant, "banking", "base", silent=False)
        endpoint = get(instant, f"{API_ROOT}/endpoints/banking")
        assert endpoint["model"]["self"].endswith(f"/models/base/{BASE_MODEL_ID}")
        assert call(instant, "/emulator/endpoints")[1]["banking"] == {
            "model": "base",
            "api_model": "base",
        }
        status, body = call(
            instant, "/emulator/endpoints/banking", method="PUT", body={"model": "nope"}
        )
        assert status == 400
        assert "nope" in body["error"]
    finally:
        switch(instant, "banking", "banking", silent=False)
    assert sdk_text(instant, "banking", wav) == BANKING_TEXT


def test_the_fallback_knob_falls_back_silently(
    tmp_path: Path, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """fallback_after_s after start-up the custom endpoint answers with the base model, while
    the API still shows the custom model (as an expired model does)."""
    wav = datasets["banking"][0].audio
    tables = instant_tables(fallback_after_s=FALLBACK_AFTER_S)
    with start_emulator(tmp_path, tables, **INSTANT) as emulator:
        started = time.monotonic()
        before = sdk_text(emulator, "banking", wav)
        if time.monotonic() - started < FALLBACK_AFTER_S:  # the first session was in time
            assert before == BANKING_TEXT
        time.sleep(max(0.0, FALLBACK_AFTER_S + 0.5 - (time.monotonic() - started)))
        assert sdk_text(emulator, "banking", wav) == BASE_TEXT
        endpoint = get(emulator, f"{API_ROOT}/endpoints/banking")
        assert endpoint["model"]["self"].endswith("/models/banking")
        assert call(emulator, "/emulator/endpoints")[1] == {
            "banking": {"model": "base", "api_model": "banking"},
            "travel": {"model": "base", "api_model": "travel"},
        }


def test_a_switch_to_base_changes_real_recognition(
    tmp_path: Path, datasets: dict[str, list[LabelledUtterance]]
) -> None:
    """PocketSphinx and the real SDK: the banking endpoint recognises banking speech well with
    its custom model and clearly worse once it silently falls back to the base model."""
    items = datasets["banking"][:6]
    # One custom model only: building a model is most of this test's time.
    banking = {"banking": str(DOMAINS["banking"] / "corpus.txt")}
    with start_emulator(tmp_path, {}, workers=1, custom=banking) as emulator:
        custom = [sdk_text(emulator, "banking", item.audio) for item in items]
        switch(emulator, "banking", "base", silent=True)
        base = [sdk_text(emulator, "banking", item.audio) for item in items]
    references = [item.text for item in items]
    custom_wer = corpus_wer(zip(references, custom, strict=True)).wer
    base_wer = corpus_wer(zip(references, base, strict=True)).wer
    assert custom != base
    assert custom_wer < 0.15
    assert base_wer > custom_wer + 0.1, (custom_wer, base_wer)
