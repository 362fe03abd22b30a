"""Shadow mode through a real gateway process: the client sees only the primary, both are
recorded and paired, and a slow, failing or stalled shadow never holds the primary up."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from conftest import ALPHA, BRAVO, gateway_for
from support import CLIENT_KEY, EMULATOR_KEY, read_outcomes, read_pcm, silence, write_wav

from gateway.outcomes.pairing import pair_shadows, unpaired
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.protocol.usp import (
    TextMessage,
    decode_text,
    encode_binary,
    encode_text,
    new_request_id,
)
from gateway.protocol.wav import wave_header
from gateway.tools.dataset import LabelledUtterance
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port
from gateway.tools.speech_client import Transcript, speech_config, transcribe_file
from gateway.tools.usp_client import recognize

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
KEY_HEADER = {"Ocp-Apim-Subscription-Key": CLIENT_KEY}
SHADOW_LATENCY_MS = 5000
RECORDS_TIMEOUT_S = 60.0


def shadow_experiment(
    primary: str, shadow: str, *, names: tuple[str, str] = ("a", "b"), **shadow_variant: object
) -> dict[str, object]:
    """Every session goes to variant names[0] on `primary`; names[1] on `shadow` shadows it."""
    return {
        "id": "shadowed",
        "control": names[0],
        "shadows": [names[1]],
        "variants": [
            {"name": names[0], "backend": primary, "weight": 100},
            {"name": names[1], "backend": shadow, "weight": 0, **shadow_variant},
        ],
    }


def keyed_env(*backends: str) -> dict[str, str]:
    """The gateway's environment with the emulator's key for each named backend."""
    keys = {
        f"SPEECH_GATEWAY_GATEWAY__BACKENDS__{name.upper()}__KEY": EMULATOR_KEY for name in backends
    }
    return {**os.environ, **keys}


def wait_for_records(
    path: Path, done: Callable[[list[OutcomeRecord]], bool], timeout_s: float = RECORDS_TIMEOUT_S
) -> list[OutcomeRecord]:
    """The outcome records once `done` holds for them (polled; bounded by `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_outcomes(path)
        if done(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def of_role(records: list[OutcomeRecord], role: Role, kind: Kind) -> list[OutcomeRecord]:
    return [r for r in records if r.role is role and r.kind is kind]


def sdk_transcript(service: LocalEmulator | LocalGateway, key: str, wav: Path) -> Transcript:
    return transcribe_file(speech_config(f"{service.ws_url}{PATH}", key), wav)


def test_pocketsphinx_shadow_is_recorded_and_paired_while_the_client_sees_the_primary(
    emulator: LocalEmulator, datasets: dict[str, list[LabelledUtterance]], tmp_path: Path
) -> None:
    """Four utterances through the SDK give exactly the base model's direct results, and
    one primary and one custom-model shadow record per utterance, all paired."""
    items = datasets["banking"][2:6]
    pcm = b"".join(read_pcm(item.audio) + silence(1.2) for item in items)
    wav = write_wav(tmp_path / "four.wav", pcm)
    direct = sdk_transcript(emulator, EMULATOR_KEY, wav)
    experiment = shadow_experiment("emu", "emu", names=("base", "custom"), endpoint_id="banking")
    work = tmp_path / "gateway"
    outcomes = work / "outcomes.jsonl"
    with gateway_for(work, {"emu": emulator.ws_url}, [experiment], env=keyed_env("emu")) as gw:
        through = sdk_transcript(gw, CLIENT_KEY, wav)
        records = wait_for_records(
            outcomes,
            lambda found: (
                len(of_role(found, Role.SHADOW, Kind.UTTERANCE)) >= len(items)
                and len(of_role(found, Role.PRIMARY, Kind.UTTERANCE)) >= len(items)
            ),
        )
    assert direct.error_code is None, direct.error_details
    assert through.error_code is None, through.error_details
    assert through.canceled_reason == "EndOfStream"
    assert len(direct.recognized) == len(items)
    assert [(r.reason, r.text) for r in through.recognized] == [
        (r.reason, r.text) for r in direct.recognized
    ]
    primaries = of_role(records, Role.PRIMARY, Kind.UTTERANCE)
    shadows = of_role(records, Role.SHADOW, Kind.UTTERANCE)
    assert len(primaries) == len(shadows) == len(items)
    assert [r.text for r in primaries] == [r.text for r in direct.recognized]
    assert len({r.session_id for r in records}) == 1
    assert all(r.kind is not Kind.SESSION_FAILURE for r in records)
    assert {(r.variant, r.backend, r.shadow_drops) for r in shadows} == {("custom", "emu", 0)}
    assert {(r.variant, r.shadow_drops) for r in primaries} == {("base", None)}
    pairs = pair_shadows(records)
    assert [primary.record_id for primary, _ in pairs] == [r.record_id for r in primaries]
    assert unpaired(records) == []
    # Same audio, same segmentation: each primary pairs with the shadow of its own index.
    assert all(p.utterance_index == s.utterance_index for p, s in pairs)


def test_unreachable_shadow_is_one_failure_record_and_the_primary_is_unharmed(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A shadow on a closed port leaves the primary session's results intact and writes one
    shadow session_failure (upstream_unreachable)."""
    wav = write_wav(tmp_path / "speech.wav", silence(4.0))
    backends = {"alpha": alpha.ws_url, "dead": f"ws://127.0.0.1:{free_port()}"}
    work = tmp_path / "gateway"
    with gateway_for(work, backends, [shadow_experiment("alpha", "dead")]) as gw:
        through = sdk_transcript(gw, CLIENT_KEY, wav)
        records = wait_for_records(
            work / "outcomes.jsonl",
            lambda found: bool(of_role(found, Role.SHADOW, Kind.SESSION_FAILURE)),
        )
    assert through.error_code is None, through.error_details
    assert through.canceled_reason == "EndOfStream"
    assert [r.text for r in through.recognized] == [ALPHA, ALPHA]
    primaries = [r for r in records if r.role is Role.PRIMARY]
    assert [(r.kind, r.variant, r.text) for r in primaries] == [(Kind.UTTERANCE, "a", ALPHA)] * 2
    (failure,) = [r for r in records if r.role is Role.SHADOW]
    assert failure.kind is Kind.SESSION_FAILURE
    assert (failure.variant, failure.backend, failure.error_code) == (
        "b",
        "dead",
        "upstream_unreachable",
    )
    assert failure.session_id == primaries[0].session_id


def test_a_slow_shadow_never_delays_the_primary_and_still_reports_afterwards(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """With a shadow 5 s late the SDK session ends as fast as a direct one, primary
    latencies stay far below 5 s, and the shadow's results are recorded afterwards."""
    args = ("--engine", "instant", "--instant-text", BRAVO, "--latency-ms", str(SHADOW_LATENCY_MS))
    wav = write_wav(tmp_path / "speech.wav", silence(2.0))
    work = tmp_path / "gateway"
    with LocalEmulator(*args, log_path=tmp_path / "slow.log") as slow:
        backends = {"alpha": alpha.ws_url, "slow": slow.ws_url}
        experiment = shadow_experiment("alpha", "slow")
        with gateway_for(work, backends, [experiment], shadow_grace_s=15) as gw:
            started = time.monotonic()
            direct = sdk_transcript(alpha, "any-key", wav)
            direct_s = time.monotonic() - started
            started = time.monotonic()
            through = sdk_transcript(gw, CLIENT_KEY, wav)
            through_s = time.monotonic() - started
            primaries_done = read_outcomes(work / "outcomes.jsonl")
            records = wait_for_records(
                work / "outcomes.jsonl",
                lambda found: bool(of_role(found, Role.SHADOW, Kind.UTTERANCE)),
            )
    assert through.error_code is None, through.error_details
    assert [r.text for r in through.recognized] == [r.text for r in direct.recognized] == [ALPHA]
    # Decoupled: the shadow's 5 s per result would show up as at least 5 s more here.
    assert through_s < direct_s + SHADOW_LATENCY_MS / 2000
    primaries = of_role(records, Role.PRIMARY, Kind.UTTERANCE)
    assert len(primaries) == 1
    latency = primaries[0].final_latency_ms
    assert latency is not None
    assert latency < SHADOW_LATENCY_MS / 2
    # When the SDK session was over, the shadow had not answered yet ...
    assert not [r for r in primaries_done if r.role is Role.SHADOW]
    # ... and its result still arrived afterwards, within the grace period.
    (shadow,) = [r for r in records if r.role is Role.SHADOW]
    assert (shadow.kind, shadow.variant, shadow.text, shadow.shadow_drops) == (
        Kind.UTTERANCE,
        "b",
        BRAVO,
        0,
    )
    final = shadow.final_latency_ms
    assert final is not None
    assert final >= SHADOW_LATENCY_MS
    assert pair_shadows(records) == [(primaries[0], shadow)]


@asynccontextmanager
async def stalled_shadow() -> AsyncIterator[tuple[int, list[str]]]:
    """A WebSocket server that accepts the USP upgrade and then never reads: its socket
    buffers fill up, like a shadow backend that cannot keep up. Yields its port and the
    paths of the upgrades it accepted."""
    release = asyncio.Event()
    upgraded: list[str] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        upgraded.append(request.path)
        await release.wait()
        return ws

    app = web.Application()
    app.router.add_get(PATH, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after kilobytes
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield sock.getsockname()[1], upgraded
    finally:
        release.set()
        await runner.cleanup()
        sock.close()


async def burst_session(url: str, seconds: int, settle_s: float) -> list[TextMessage]:
    """One USP turn whose audio, after `settle_s` (shadows connect), comes all at once in
    one-second frames; the service messages up to turn.end."""
    request_id = new_request_id()
    context = json.dumps({"phraseDetection": {"language": "en-US"}})
    messages: list[TextMessage] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers=KEY_HEADER, protocols=("USP",)) as ws,
    ):
        await ws.send_str(encode_text("speech.config", None, "{}"))
        await ws.send_str(encode_text("speech.context", request_id, context))
        await ws.send_bytes(encode_binary("audio", request_id, wave_header()))
        await asyncio.sleep(settle_s)
        second = encode_binary("audio", request_id, silence(1.0))
        for _ in range(seconds):
            await ws.send_bytes(second)
        await ws.send_bytes(encode_binary("audio", request_id, b""))
        async with asyncio.timeout(RECORDS_TIMEOUT_S):
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    messages.append(decode_text(message.data))
                    if messages[-1].path == "turn.end":
                        break
    return messages


async def test_a_stalled_shadow_drops_and_counts_frames_while_the_primary_completes(
    alpha: LocalEmulator, tmp_path: Path
) -> None:
    """A shadow whose socket stops taking data fills its one-frame queue: frames are dropped,
    the primary session still gets every result, and a shadow record counts the drops."""
    work = tmp_path / "gateway"
    seconds = 600  # 19 MB of audio: more than loopback socket buffers absorb
    async with stalled_shadow() as (port, upgraded):
        backends = {"alpha": alpha.ws_url, "stalled": f"ws://127.0.0.1:{port}"}
        experiment = shadow_experiment("alpha", "stalled")
        gateway = gateway_for(work, backends, [experiment], shadow_queue_frames=1, shadow_grace_s=1)
        await asyncio.to_thread(gateway.start)
        try:
            messages = await burst_session(
                f"{gateway.ws_url}{PATH}?language=en-US", seconds, settle_s=1.0
            )
            records = await asyncio.to_thread(
                wait_for_records,
                work / "outcomes.jsonl",
                lambda found: any(r.role is Role.SHADOW for r in found),
            )
        finally:
            await asyncio.to_thread(gateway.stop)
    assert upgraded == [PATH]  # the shadow was connected: the drops are its stalled socket's
    phrases = [json.loads(m.body) for m in messages if m.path == "speech.phrase"]
    assert [p["DisplayText"] for p in phrases] == [ALPHA] * (seconds // 3)
    assert messages[-1].path == "turn.end"
    primaries = of_role(records, Role.PRIMARY, Kind.UTTERANCE)
    assert [r.text for r in primaries] == [ALPHA] * (seconds // 3)
    shadows = [r for r in records if r.role is Role.SHADOW]
    assert [(r.kind, r.variant, r.error_code) for r in shadows] == [
        (Kind.SESSION_FAILURE, "b", "shadow_dropped_audio")
    ]
    drops = shadows[0].shadow_drops
    # Some frames got through before the socket stalled; later ones were dropped and counted.
    assert drops is not None
    assert 0 < drops < seconds


async def test_the_client_never_sees_a_shadow_message(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """A raw USP client gets only the primary's messages, all under its own request id,
    while the shadow's (different) texts are recorded."""
    work = tmp_path / "gateway"
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    gateway = gateway_for(work, backends, [shadow_experiment("alpha", "bravo")])
    await asyncio.to_thread(gateway.start)
    try:
        async with aiohttp.ClientSession() as http:
            result = await recognize(
                http,
                f"{gateway.ws_url}{PATH}?language=en-US",
                silence(7.0),
                headers=KEY_HEADER,
                frame_interval_s=0.01,
            )
        records = await asyncio.to_thread(
            wait_for_records,
            work / "outcomes.jsonl",
            lambda found: len(of_role(found, Role.SHADOW, Kind.UTTERANCE)) >= 3,
        )
    finally:
        await asyncio.to_thread(gateway.stop)
    assert {m.request_id for m in result.messages} == {result.request_id}
    assert result.texts() == [ALPHA] * 3
    assert result.paths().count("turn.start") == 1
    assert result.paths().count("turn.end") == 1
    assert result.paths().count("speech.phrase") == 3
    for message in result.messages:
        assert "bravo" not in message.body.lower(), message.path
    hypotheses = [
        json.loads(m.body)["Text"] for m in result.messages if m.path == "speech.hypothesis"
    ]
    assert hypotheses
    assert all(ALPHA.lower().startswith(h.lower()) for h in hypotheses)
    shadows = of_role(records, Role.SHADOW, Kind.UTTERANCE)
    assert [(r.variant, r.text) for r in shadows] == [("b", BRAVO)] * 3
    assert [r.text for r in of_role(records, Role.PRIMARY, Kind.UTTERANCE)] == [ALPHA] * 3
