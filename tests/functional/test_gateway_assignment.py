"""Sticky assignment through real gateway processes: replicas and restarts agree."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import aiohttp
import azure.cognitiveservices.speech as speechsdk
from conftest import ALPHA, BRAVO, gateway_for, split_experiment
from support import CLIENT_KEY, QA_KEY, read_outcomes, silence

from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.speech_client import transcribe_file
from gateway.tools.usp_client import recognize

UNITS = [f"unit-{n:04d}" for n in range(400)]
PATH = "/speech/recognition/conversation/cognitiveservices/v1"
ANSWERS = {ALPHA: "a", BRAVO: "b"}


async def variants_seen(gateway: LocalGateway, units: list[str]) -> dict[str, str]:
    """Which variant answered each unit, by the instant emulators' scripted texts."""
    pcm = silence(0.3)
    limit = asyncio.Semaphore(16)

    async def one(http: aiohttp.ClientSession, unit: str) -> tuple[str, str]:
        url = f"{gateway.ws_url}{PATH}?language=en-US&gw-unit={unit}"
        async with limit:
            result = await recognize(
                http, url, pcm, headers={"Ocp-Apim-Subscription-Key": CLIENT_KEY}
            )
        (text,) = result.texts()
        return unit, ANSWERS[text]

    async with aiohttp.ClientSession() as http:
        return dict(await asyncio.gather(*(one(http, unit) for unit in units)))


def chi_square_p(observed: list[int], expected: list[float]) -> float:
    """Upper tail of chi-square with one degree of freedom (two cells)."""
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return math.erfc(math.sqrt(statistic / 2))


def test_two_replicas_and_a_restart_assign_every_unit_alike(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """400 units get the same variant from two gateway processes and after a restart,
    and the 50/50 split passes a sample-ratio chi-square test."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    first = gateway_for(tmp_path / "one", backends, [split_experiment()])
    second = gateway_for(tmp_path / "two", backends, [split_experiment()])
    with first, second:
        seen_first = asyncio.run(variants_seen(first, UNITS))
        seen_second = asyncio.run(variants_seen(second, UNITS))
    with first:  # the same process configuration, started again
        seen_again = asyncio.run(variants_seen(first, UNITS))
    assert seen_first == seen_second == seen_again
    counts = [sum(1 for v in seen_first.values() if v == name) for name in "ab"]
    assert chi_square_p(counts, [200.0, 200.0]) > 0.001
    records = read_outcomes(tmp_path / "one" / "outcomes.jsonl")
    assert len(records) == 800
    assert {r.variant for r in records} == {"a", "b"}
    assert len({r.phase for r in records}) == 1
    assert all(r.unit_source == "query" and r.unit not in UNITS for r in records)


def test_weights_change_opens_a_new_phase_and_zero_weight_gets_nothing(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """With weights 100/0 every unit gets variant a, under a different phase than 50/50."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    with gateway_for(tmp_path / "all-a", backends, [split_experiment((100, 0))]) as gateway:
        seen = asyncio.run(variants_seen(gateway, UNITS[:40]))
    assert set(seen.values()) == {"a"}
    with gateway_for(tmp_path / "half", backends, [split_experiment()]) as gateway:
        asyncio.run(variants_seen(gateway, UNITS[:4]))
    phases = {
        r.phase
        for name in ("all-a", "half")
        for r in read_outcomes(tmp_path / name / "outcomes.jsonl")
    }
    assert len(phases) == 2


def test_forcing_a_variant_works_only_for_permitted_keys(
    alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path
) -> None:
    """The QA key may force variant b through the SDK; the app key is refused (403)."""
    backends = {"alpha": alpha.ws_url, "bravo": bravo.ws_url}
    wav = Path(__file__).resolve().parents[2] / "data/demo/banking/audio/banking-001.wav"
    with gateway_for(tmp_path, backends, [split_experiment((100, 0))]) as gateway:
        results = {}
        for name, key in (("qa", QA_KEY), ("app", CLIENT_KEY)):
            config = speechsdk.SpeechConfig(endpoint=f"{gateway.ws_url}{PATH}", subscription=key)
            channel = speechsdk.ServicePropertyChannel.UriQueryParameter
            config.set_service_property("gw-variant", "b", channel)
            config.set_service_property("gw-unit", "someone", channel)
            results[name] = transcribe_file(config, wav)
    assert {r.text for r in results["qa"].recognized} == {BRAVO}
    assert results["app"].error_code == "AuthenticationFailure"
    forced = [r for r in read_outcomes(tmp_path / "outcomes.jsonl") if r.forced]
    assert forced
    assert {(r.variant, r.client) for r in forced} == {("b", "qa")}
