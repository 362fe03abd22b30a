"""Sampled audio capture through a real gateway process with the real Speech SDK: the stored
WAVs are the PCM the client sent for each utterance, a client without consent leaves no
audio anywhere, a killed Blob service drops captures without failing a session, and
deletion by unit removes a unit's audio from either store."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from conftest import gateway_for
from support import CLIENT_KEY, QA_KEY, read_pcm, silence, toml_value, write_wav
from test_gateway_shadow import (
    PATH,
    keyed_env,
    of_role,
    shadow_experiment,
    wait_for_records,
)

from gateway.control.model import hash_key
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.protocol.wav import parse_wave_header, wave_header
from gateway.stores.audio_store import AudioStore, Capture, LocalAudioStore
from gateway.stores.blob_audio_store import BlobAudioStore
from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.speech_client import Transcript, speech_config, transcribe_file
from tests.azurite import AzuriteServer

ADMIN_TOKEN = "capture-test-admin-token"
TICKS_PER_SECOND = 10_000_000
WAIT_S = 60.0


def capture_gateway(
    work: Path,
    emulator: LocalEmulator,
    audio: dict[str, object],
    *,
    capture: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
) -> LocalGateway:
    """A gateway whose experiment captures every session of client `app` (consenting);
    client `qa` does not consent. Variant `custom` shadows `base`."""
    experiment = shadow_experiment("emu", "emu", names=("base", "custom"), endpoint_id="banking")
    experiment["capture"] = capture or {"share": 1.0, "utterance_share": 1.0}
    gateway = gateway_for(
        work,
        {"emu": emulator.ws_url},
        [experiment],
        env={**keyed_env("emu"), **(env or {})},
        audio=audio,
        admin_tokens_sha256={"ops": hash_key(ADMIN_TOKEN)},
    )
    config = work / "gateway.toml"
    clients = [
        {"name": "app", "key_sha256": hash_key(CLIENT_KEY), "capture_consent": True},
        {"name": "qa", "key_sha256": hash_key(QA_KEY), "can_force": True},
    ]
    text = re.sub(
        r"^clients = .*$", f"clients = {toml_value(clients)}", config.read_text(), flags=re.M
    )
    config.write_text(text)
    return gateway


def four_utterances(datasets: dict[str, list[LabelledUtterance]], tmp_path: Path) -> Path:
    items = datasets["banking"][2:6]
    pcm = b"".join(read_pcm(item.audio) + silence(1.2) for item in items)
    return write_wav(tmp_path / "four.wav", pcm)


def transcribe(gateway: LocalGateway, key: str, wav: Path) -> Transcript:
    transcript = transcribe_file(speech_config(f"{gateway.ws_url}{PATH}", key), wav)
    assert transcript.error_code is None, transcript.error_details
    return transcript


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def all_captures(store: AudioStore, experiment: str = "shadowed") -> list[Capture]:
    try:
        return await store.captures(experiment)
    finally:
        await store.close()


async def wav_of(store: AudioStore, capture_id: str) -> bytes:
    try:
        return await store.wav(capture_id)
    finally:
        await store.close()


def wait_until(check: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)  # polling another process's files: there is nothing to await
    return True


def utterance_pcm(sent: bytes, record: OutcomeRecord) -> bytes:
    """The bytes of `sent` (one turn's PCM, 16 kHz 16-bit mono) the record's offsets name."""
    assert record.audio_offset_ms is not None
    assert record.audio_duration_ms is not None
    start = round(record.audio_offset_ms * 10_000) * 32_000 // TICKS_PER_SECOND
    end = (
        round((record.audio_offset_ms + record.audio_duration_ms) * 10_000)
        * 32_000
        // TICKS_PER_SECOND
    )
    return sent[start - start % 2 : end - end % 2]


def metric(gateway: LocalGateway, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{gateway.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def delete_unit(gateway: LocalGateway, unit: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{gateway.http_url}/admin/units/{unit}/audio?pseudonymised=true",
        method="DELETE",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_stored_wavs_are_the_clients_pcm_per_utterance_with_the_shadows_results(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]], tmp_path: Path
) -> None:
    """Continuous recognition of four utterances with a shadow: one capture per utterance,
    its WAV byte-identical to the PCM the client sent at the service's offsets, with the
    primary's and the shadow's record ids and hypotheses; a client without consent leaves
    nothing; deleting the unit removes every capture."""
    wav = four_utterances(datasets, tmp_path)
    sent = read_pcm(wav)
    work = tmp_path / "gateway"
    audio_dir = tmp_path / "audio"
    with capture_gateway(work, emulator, {"directory": str(audio_dir)}) as gateway:
        transcript = transcribe(gateway, CLIENT_KEY, wav)
        records = wait_for_records(
            work / "outcomes.jsonl",
            lambda found: len(of_role(found, Role.SHADOW, Kind.UTTERANCE)) >= 4,
        )
        primaries = of_role(records, Role.PRIMARY, Kind.UTTERANCE)
        assert len(primaries) == len(transcript.recognized) == 4
        assert wait_until(lambda: len(run(all_captures(LocalAudioStore(audio_dir)))) >= 4)
        captures = run(all_captures(LocalAudioStore(audio_dir)))
        assert len(captures) == 4
        shadows = {r.record_id: r for r in of_role(records, Role.SHADOW, Kind.UTTERANCE)}
        by_record = {r.record_id: r for r in primaries}
        for capture in captures:
            record = by_record[capture.primary.record_id]
            stored = run(wav_of(LocalAudioStore(audio_dir), capture.capture_id))
            fmt, offset = parse_wave_header(stored)
            assert (fmt.sample_rate, fmt.channels, fmt.bits_per_sample) == (16000, 1, 16)
            pcm = stored[offset:]
            assert pcm == utterance_pcm(sent, record)
            assert len(pcm) > 16000  # a real utterance, not an empty cut
            assert capture.primary.text == record.text
            assert capture.utterance_index == record.utterance_index
            assert (capture.client, capture.unit, capture.session_id) == (
                "app",
                record.unit,
                record.session_id,
            )
            assert [s.variant for s in capture.shadows] == ["custom"]
            assert capture.shadows[0].record_id in shadows
            assert capture.reason in ("uniform", "disagreement", "low_confidence", "no_match")
        stored_metric = metric(gateway, "speech_gateway_captures_stored_total")
        assert stored_metric == 4

        # The qa client has no consent: its session leaves no audio.
        transcribe(gateway, QA_KEY, wav)
        wait_for_records(
            work / "outcomes.jsonl",
            lambda found: (
                len({r.session_id for r in found}) >= 2
                and len(of_role(found, Role.SHADOW, Kind.UTTERANCE)) >= 8
            ),
        )
        assert len(run(all_captures(LocalAudioStore(audio_dir)))) == 4
        assert {c.client for c in run(all_captures(LocalAudioStore(audio_dir)))} == {"app"}

        answer = delete_unit(gateway, captures[0].unit)
        assert answer == {"unit": captures[0].unit, "deleted": 4}
        assert run(all_captures(LocalAudioStore(audio_dir))) == []
        assert not list((audio_dir / "shadowed").glob("*.wav"))


def test_a_killed_blob_service_drops_captures_and_no_session_fails(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]], tmp_path: Path
) -> None:
    """Captures go to Blob Storage (Azurite), none of a client without consent; deleting
    the unit removes its audio from Blob Storage; with Azurite killed the next session
    still succeeds with every record, and its captures are dropped and counted."""
    wav = four_utterances(datasets, tmp_path)
    work = tmp_path / "gateway"
    with AzuriteServer(tmp_path / "azurite") as azurite:
        credential = azurite.credential
        audio = {
            "store": "blob",
            "blob_account_url": azurite.account_url,
            "blob_container": "captures",
            "blob_account_name": credential["account_name"],
            "blob_timeout_s": 2.0,
        }
        env = {"SPEECH_GATEWAY_GATEWAY__AUDIO__BLOB_CREDENTIAL": credential["account_key"]}

        def blob_store() -> BlobAudioStore:
            return BlobAudioStore(azurite.account_url, "captures", credential)

        with capture_gateway(work, emulator, audio, env=env) as gateway:
            transcribe(gateway, CLIENT_KEY, wav)
            assert wait_until(lambda: len(run(all_captures(blob_store()))) >= 4)
            captures = run(all_captures(blob_store()))
            assert len(captures) == 4
            # The qa client has no consent: nothing of its session reaches Blob Storage.
            transcribe(gateway, QA_KEY, wav)
            wait_for_records(
                work / "outcomes.jsonl",
                lambda found: len(of_role(found, Role.PRIMARY, Kind.UTTERANCE)) >= 8,
            )
            assert [c.client for c in run(all_captures(blob_store()))] == ["app"] * 4
            first = run(wav_of(blob_store(), captures[0].capture_id))
            assert first[:4] == b"RIFF"
            assert len(first) == captures[0].wav_bytes

            answer = delete_unit(gateway, captures[0].unit)
            assert answer["deleted"] == 4
            assert run(all_captures(blob_store())) == []

            azurite.kill()
            transcript = transcribe(gateway, CLIENT_KEY, wav)
            assert len(transcript.recognized) == 4
            records = wait_for_records(
                work / "outcomes.jsonl",
                lambda found: len(of_role(found, Role.PRIMARY, Kind.UTTERANCE)) >= 12,
            )
            assert len(of_role(records, Role.PRIMARY, Kind.UTTERANCE)) == 12
            assert not [r for r in records if r.kind is Kind.SESSION_FAILURE]
            assert wait_until(lambda: metric(gateway, "speech_gateway_captures_dropped_total") >= 4)
            dropped = metric(
                gateway, "speech_gateway_captures_dropped_total", cause="store_unavailable"
            )
            assert dropped == 4
            assert metric(gateway, "speech_gateway_captures_stored_total") == 4


def test_a_rest_request_is_captured_by_its_answers_offsets(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]], tmp_path: Path
) -> None:
    """A short-audio request, its body sent in small chunks: the capture is the PCM the
    client sent at the answer's offsets, attached to the request's record."""
    pcm = read_pcm(datasets["banking"][2].audio)
    body = wave_header(data_bytes=len(pcm)) + pcm
    work = tmp_path / "gateway"
    audio_dir = tmp_path / "audio"

    async def post(gateway: LocalGateway) -> int:
        async def chunks() -> AsyncIterator[bytes]:
            for at in range(0, len(body), 1000):
                yield body[at : at + 1000]

        headers = {
            "Ocp-Apim-Subscription-Key": CLIENT_KEY,
            "Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{gateway.http_url}{PATH}",
                params={"language": "en-US", "format": "detailed"},
                data=chunks(),
                headers=headers,
            ) as answer,
        ):
            await answer.read()
            return answer.status

    with capture_gateway(work, emulator, {"directory": str(audio_dir)}) as gateway:
        assert run(post(gateway)) == 200
        assert wait_until(lambda: len(run(all_captures(LocalAudioStore(audio_dir)))) >= 1)
        (capture,) = run(all_captures(LocalAudioStore(audio_dir)))
        # The capture and the outcome record are written by different tasks: wait for both.
        records = wait_for_records(
            work / "outcomes.jsonl",
            lambda found: any(r.kind is Kind.REQUEST for r in found),
        )
        (record,) = [r for r in records if r.kind is Kind.REQUEST]
        assert capture.primary.record_id == record.record_id
        assert capture.shadows == ()
        stored = run(wav_of(LocalAudioStore(audio_dir), capture.capture_id))
        assert stored[44:] == utterance_pcm(pcm, record)
        assert len(stored) > 44 + 16000
