"""/metrics of a real gateway process after real Speech SDK sessions, a REST request and a
failing session: every series agrees with the outcome records the gateway wrote."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from conftest import ALPHA, BRAVO, gateway_for, split_experiment
from control_support import metric
from support import CLIENT_KEY, QA_KEY, read_outcomes, silence, write_wav

from gateway.outcomes.record import OutcomeRecord
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port
from gateway.tools.speech_client import speech_config, transcribe_file
from gateway.tools.usp_client import recognize

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
SDK_SESSIONS = 3


async def scrape(http: aiohttp.ClientSession, gateway: LocalGateway) -> str:
    async with http.get(f"{gateway.http_url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        return await response.text()


async def until_written(
    http: aiohttp.ClientSession, gateway: LocalGateway, outcomes: Path, expected_at_least: int
) -> tuple[str, list[OutcomeRecord]]:
    """The scrape and the records once every session has ended and the sink has written
    everything it was given: the written count equals the file's records, nothing queued."""
    for _ in range(100):
        text = await scrape(http, gateway)
        records = read_outcomes(outcomes)
        written = metric(text, "speech_gateway_outcomes_written_total")
        queued = metric(text, "speech_gateway_outcome_queue_depth")
        live = sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("speech_gateway_sessions_live{")
        )
        settled = written == len(records) and queued == 0 and live == 0
        if len(records) >= expected_at_least and settled:
            return text, records
        await asyncio.sleep(0.1)
    raise AssertionError(f"the sink did not settle: {len(records)} records, {written} written")


def labels_of(record: OutcomeRecord) -> dict[str, str]:
    return {
        "experiment": record.experiment or "_default",
        "variant": record.variant or "_none",
        "role": record.role.value,
        "protocol": record.protocol.value,
    }


async def test_metrics_agree_with_the_records(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """Sessions, outcomes by status, error codes, both latency histograms, the sink's
    counters and depths, all per experiment and variant, as the records say."""
    dead = f"ws://127.0.0.1:{free_port()}"  # nothing listens: every dial fails
    experiments: list[dict[str, Any]] = [
        {
            "id": "outage",
            "control": "x",
            "variants": [{"name": "x", "backend": "dead", "weight": 1}],
            "targeting": {"clients": ["qa"]},
        },
        split_experiment((100, 0), shadows=["b"]),
    ]
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url, "dead": dead}
    outcomes = tmp_path / "outcomes.jsonl"
    wav = write_wav(tmp_path / "speech.wav", silence(5.0))
    with gateway_for(tmp_path, backends, experiments) as gateway:
        config = speech_config(f"{gateway.ws_url}{PATH}", CLIENT_KEY)
        transcripts = await asyncio.gather(
            *(asyncio.to_thread(transcribe_file, config, wav) for _ in range(SDK_SESSIONS))
        )
        gc.collect()  # the SDK holds its connection until its recognizer is collected
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{gateway.http_url}{PATH}",
                params={"language": "en-US"},
                data=wav.read_bytes(),
                headers={
                    "Ocp-Apim-Subscription-Key": CLIENT_KEY,
                    "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
                },
            ) as response:
                assert response.status == 200
            failed = await recognize(
                http,
                f"{gateway.ws_url}{PATH}",
                silence(1.0),
                headers={"Ocp-Apim-Subscription-Key": QA_KEY},
            )
            assert failed.phrases()[-1]["RecognitionStatus"] == "Error"
            text, records = await until_written(http, gateway, outcomes, SDK_SESSIONS + 2)

    # What the SDK saw is what the primary records (and the metrics) say.
    recognized = sum(len(t.recognized) for t in transcripts)
    assert recognized >= SDK_SESSIONS
    assert {r.text for t in transcripts for r in t.recognized} == {ALPHA}
    primary = {"experiment": "ab", "variant": "a", "role": "primary", "protocol": "usp"}
    shadow = {"experiment": "ab", "variant": "b", "role": "shadow", "protocol": "usp"}
    outcomes_total = "speech_gateway_outcomes_total"
    assert metric(text, outcomes_total, **primary, kind="utterance", status="Success") == (
        recognized
    )
    shadow_texts = {r.text for r in records if r.role.value == "shadow"}
    assert shadow_texts == {BRAVO}
    assert metric(text, outcomes_total, **shadow, kind="utterance", status="Success") == sum(
        1 for r in records if r.role.value == "shadow" and r.status == "Success"
    )

    # Every series of the outcome counters, and each histogram, against the records.
    by_series = Counter(
        tuple(sorted((labels_of(r) | {"kind": r.kind.value, "status": r.status}).items()))
        for r in records
    )
    for labels, count in by_series.items():
        assert metric(text, outcomes_total, **dict(labels)) == count, labels
    errors = Counter(
        tuple(sorted((labels_of(r) | {"error_code": r.error_code}).items()))
        for r in records
        if r.error_code is not None
    )
    assert errors, "the outage session left an error record"
    for labels, count in errors.items():
        assert metric(text, "speech_gateway_outcome_errors_total", **dict(labels)) == count
    outage = {"experiment": "outage", "variant": "x", "role": "primary", "protocol": "usp"}
    assert any(dict(labels).items() >= outage.items() for labels in errors)
    for name, field in (
        ("speech_gateway_final_latency_ms", "final_latency_ms"),
        ("speech_gateway_first_hypothesis_ms", "first_hypothesis_ms"),
    ):
        groups: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for record in records:
            value = getattr(record, field)
            if value is not None:
                groups.setdefault(tuple(sorted(labels_of(record).items())), []).append(value)
        assert groups, field
        for labels, values in groups.items():
            assert metric(text, f"{name}_count", **dict(labels)) == len(values)
            assert abs(metric(text, f"{name}_sum", **dict(labels)) - sum(values)) < 1e-6
            assert metric(text, f"{name}_bucket", **dict(labels), le="+Inf") == len(values)

    # Sessions: started per protocol, none live any more.
    started = "speech_gateway_sessions_started_total"
    usp = {"experiment": "ab", "variant": "a", "protocol": "usp"}
    assert metric(text, started, **usp) == SDK_SESSIONS
    assert metric(text, started, **(usp | {"protocol": "rest"})) == 1
    assert metric(text, started, experiment="outage", variant="x", protocol="usp") == 1
    assert metric(text, "speech_gateway_sessions_live", **usp) == 0
    # The sink and the process.
    assert metric(text, "speech_gateway_outcomes_written_total") == len(records)
    assert metric(text, "speech_gateway_outcomes_dropped_total") == 0
    assert metric(text, "speech_gateway_outcome_queue_depth") == 0
    assert metric(text, "speech_gateway_draining") == 0
    assert "# TYPE speech_gateway_breaker_state gauge" in text
    assert "# TYPE speech_gateway_shadow_dropped_frames_total counter" in text
    assert "speech_gateway_shadow_dropped_frames_total{" not in text  # none was dropped
    # No id of a session, unit or record is a label value.
    for record in records:
        for value in (record.session_id, record.unit, record.record_id):
            assert value not in text
