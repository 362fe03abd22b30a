"""Circuit breakers with the real Speech SDK: with the custom backend down, sessions fail
over to control and the user gets results; the breaker opens, and half-open probes close it
once the backend is back. In reject mode, sessions get a clean error instead."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from conftest import ALPHA, BRAVO, split_experiment
from control_support import (
    PATH,
    admin,
    answered_by,
    control_gateway,
    failed,
    metric,
    metrics_text,
    sessions,
)
from support import CLIENT_KEY, read_pcm, write_wav

from gateway.stores.jsonl_sink import read_jsonl
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port
from gateway.tools.speech_client import speech_config, transcribe_file

BREAKER = {"consecutive_failures": 3, "open_s": 1.0}
DEMO_WAV = Path(__file__).resolve().parents[2] / "data/demo/banking/audio/banking-001.wav"


async def breaker_state(http: aiohttp.ClientSession, gateway: LocalGateway, name: str) -> str:
    status, answer = await admin(http, gateway, "GET", "/admin/backends")
    assert status == 200, answer
    states = {b["name"]: b["breaker"]["state"] for b in answer["backends"]}
    return states[name]


async def test_with_the_custom_backend_down_sessions_fail_over_and_recover(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    dead = free_port()
    backends = {"alpha": alpha.ws_url, "bravo": f"ws://127.0.0.1:{dead}"}
    work = tmp_path / "gw"
    # Every unit is assigned to the challenger b, whose backend is down.
    experiment = split_experiment((0, 100))
    with control_gateway(work, backends, experiment, breaker=BREAKER) as gateway:
        # The real SDK, first session on: results from control, no error.
        config = speech_config(f"{gateway.ws_url}{PATH}", CLIENT_KEY)
        wav = write_wav(tmp_path / "one.wav", read_pcm(DEMO_WAV))
        transcript = await asyncio.to_thread(transcribe_file, config, wav)
        assert transcript.error_code is None, transcript.error_details
        assert transcript.recognized
        assert {r.text for r in transcript.recognized} == {ALPHA}
        async with aiohttp.ClientSession() as http:
            results = await sessions(http, [gateway], [f"u{i}" for i in range(6)])
            assert {answered_by(r) for r in results} == {"alpha"}
            assert not any(failed(r) for r in results)
            assert await breaker_state(http, gateway, "bravo") == "open"
            text = await metrics_text(http, gateway)
            assert metric(text, "speech_gateway_failovers_total", experiment="ab", variant="b") == 7
            assert metric(text, "speech_gateway_breaker_state", backend="bravo") == 2

            # The backend comes back: after open_s a probe session reaches it and closes
            # the breaker; from then on b's units are served by b again.
            with LocalEmulator(
                "--engine",
                "instant",
                "--instant-text",
                BRAVO,
                port=dead,
                log_path=tmp_path / "bravo.log",
            ):
                await asyncio.sleep(BREAKER["open_s"] + 0.2)
                results = await sessions(http, [gateway], ["probe"])
                assert answered_by(results[0]) == "bravo"
                assert await breaker_state(http, gateway, "bravo") == "closed"
                results = await sessions(http, [gateway], [f"v{i}" for i in range(4)])
                assert {answered_by(r) for r in results} == {"bravo"}
    records = [r for r in read_jsonl(work / "outcomes.jsonl")]
    over = [r for r in records if r.failover_from is not None]
    assert len({r.session_id for r in over}) == 7
    assert {(r.variant, r.backend, r.failover_from, r.forced) for r in over} == {
        ("a", "alpha", "b", False)
    }
    assert {r.variant for r in records if r.failover_from is None} == {"b"}
    # The analysis counts them under b as failed over, and never compares them.
    log = (work / "gateway.log").read_text()
    assert '"event": "failover"' in log
    assert '"event": "breaker_state"' in log


async def test_reject_mode_gives_a_clean_error_without_dialling_an_open_backend(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    backends = {"alpha": alpha.ws_url, "bravo": f"ws://127.0.0.1:{free_port()}"}
    work = tmp_path / "gw"
    breaker = {**BREAKER, "on_open": "reject"}
    with control_gateway(work, backends, split_experiment((0, 100)), breaker=breaker) as gateway:
        async with aiohttp.ClientSession() as http:
            for index in range(5):
                [result] = await sessions(http, [gateway], [f"u{index}"])
                assert failed(result)  # an Error phrase, then turn.end: the SDK's error
                assert result.paths()[-1] == "turn.end"
            assert await breaker_state(http, gateway, "bravo") == "open"
    codes = [r.error_code for r in read_jsonl(work / "outcomes.jsonl")]
    assert codes == ["upstream_unreachable"] * 3 + ["breaker_open"] * 2


async def test_rest_requests_fail_over_too(alpha: LocalEmulator, tmp_path: Path) -> None:
    backends = {"alpha": alpha.http_url, "bravo": f"http://127.0.0.1:{free_port()}"}
    work = tmp_path / "gw"
    path = "/speech/recognition/conversation/cognitiveservices/v1?language=en-US"
    wav = DEMO_WAV.read_bytes()
    with control_gateway(work, backends, split_experiment((0, 100)), breaker=BREAKER) as gateway:
        async with aiohttp.ClientSession() as http:
            for _ in range(5):
                async with http.post(
                    f"{gateway.http_url}{path}",
                    data=wav,
                    headers={
                        "Ocp-Apim-Subscription-Key": CLIENT_KEY,
                        "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
                    },
                ) as response:
                    assert response.status == 200
                    assert (await response.json())["DisplayText"].startswith(ALPHA[:-1])
            assert await breaker_state(http, gateway, "bravo") == "open"
    records = list(read_jsonl(work / "outcomes.jsonl"))
    assert [(r.variant, r.failover_from) for r in records] == [("a", "b")] * 5
