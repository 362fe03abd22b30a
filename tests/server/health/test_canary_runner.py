"""Tests for gateway.server.health.canary_runner against the real emulator: the instant
engine (in-process) for the mechanics and the endpoint switch, PocketSphinx for a real WER
round, and backends that fail (a closed port, a refusal, an error status, a close, a stall)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs
from support import DATA, EMULATOR_KEY, silence, write_wav

from gateway.config.gateway import GatewaySettings
from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import EmulatorSettings
from gateway.control.model import GatewayConfig
from gateway.control.plane import ControlPlane
from gateway.emulator.server import create_app
from gateway.errors import ConfigError
from gateway.health.canary import CANARY_CLIENT, RoundResult
from gateway.outcomes.record import Kind, OutcomeRecord, Role, UnitSource
from gateway.server.health.canary_runner import CanaryRunner
from gateway.server.metrics import GatewayMetrics
from gateway.stores.control_store import FileControlStore
from gateway.stores.counter_store import LocalCounterStore
from gateway.tools.local_services import LocalEmulator, free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
KEY = "canary-runner-test-key"
CUSTOM_TEXT = "banking model answers"
BASE_TEXT = "base model answers"


def emulator_app(**faults: Any) -> web.Application:
    settings = EmulatorSettings.model_validate(
        {
            "engine": "instant",
            "key": KEY,
            "custom": {"banking": Path("unused.txt")},
            "instant_texts": {"banking": CUSTOM_TEXT, "base": BASE_TEXT},
            # One phrase per canary item: the items are shorter than this window.
            "instant_utterance_ms": 10_000,
            "faults": faults,
        }
    )
    return create_app(settings)


def canary_set(folder: Path, count: int = 3) -> Path:
    """`count` one-second items whose reference is the custom model's scripted text."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        write_wav(folder / f"c{index}.wav", silence(1.0))
        lines.append(json.dumps({"id": f"c{index}", "audio": f"c{index}.wav", "text": CUSTOM_TEXT}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def gateway_config(
    url: str, dataset: Path, *, key: str | None = KEY, **canary: Any
) -> GatewayConfig:
    backend: dict[str, Any] = {"url": url}
    if key is not None:
        backend["key"] = key
    return build_gateway_config(
        GatewaySettings.model_validate(
            {
                "backends": {"emu": backend},
                "experiments": [
                    {
                        "id": "ab",
                        "control": "base",
                        "variants": [
                            {"name": "base", "backend": "emu", "weight": 1},
                            {
                                "name": "custom",
                                "backend": "emu",
                                "endpoint_id": "banking",
                                "weight": 1,
                            },
                        ],
                        "targeting": {"modes": ["conversation"]},
                        "guardrails": {"max_error_rate_increase": 0.05, "min_outcomes": 20},
                        "canary": {"dataset": str(dataset), "timeout_s": 10, **canary},
                    },
                    {
                        "id": "plain",
                        "control": "only",
                        "variants": [{"name": "only", "backend": "emu", "weight": 1}],
                    },
                ],
            }
        )
    )


class Harness:
    """A runner with its records, rounds and metrics kept for the test."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        config: GatewayConfig,
        on_round: Callable[[Sequence[RoundResult]], Awaitable[None]] | None = None,
        **options: Any,
    ) -> None:
        self.records: list[OutcomeRecord] = []
        self.rounds: list[list[RoundResult]] = []
        self.metrics = GatewayMetrics()
        self.config = config
        self.runner = CanaryRunner(
            config=lambda: self.config,
            http=http,
            submit=self.records.append,
            metrics=self.metrics,
            on_round=on_round or self.keep,
            connect_timeout_s=2.0,
            **options,
        )

    async def keep(self, results: Sequence[RoundResult]) -> None:
        self.rounds.append(list(results))

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def serve(aiohttp_server: ServerFactory, app: web.Application) -> str:
    server = await aiohttp_server(app)
    return f"ws://127.0.0.1:{server.port}"


def by_variant(results: Sequence[RoundResult]) -> dict[str, RoundResult]:
    return {result.variant: result for result in results}


# -- the mechanics ------------------------------------------------------------------------------


async def test_a_round_scores_every_variant_records_and_reports_it(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, emulator_app())
    harness = Harness(http, gateway_config(url, canary_set(tmp_path / "set")))
    results = await harness.runner.run_round("ab")

    assert [r.variant for r in results] == ["base", "custom"]
    assert harness.rounds == [results]  # on_round got the round, one result per variant
    base, custom = results
    assert custom.wer == 0.0
    assert base.wer == pytest.approx(1 / 3)  # "base" for "banking": one of three words
    assert (custom.endpoint_id, base.endpoint_id) == ("banking", None)
    phase = harness.config.experiments[0].phase
    for result in results:
        assert (result.experiment, result.phase, result.backend) == ("ab", phase, "emu")
        assert [a.item_id for a in result.answers] == ["c0", "c1", "c2"]
        assert all(a.error_code is None and a.latency_ms is not None for a in result.answers)
        assert not result.failed

    assert len(harness.records) == 6
    for record in harness.records:
        assert (record.role, record.unit_source, record.client) == (
            Role.CANARY,
            UnitSource.CANARY,
            CANARY_CLIENT,
        )
        assert (record.kind, record.status, record.experiment, record.phase) == (
            Kind.UTTERANCE,
            "Success",
            "ab",
            phase,
        )
        assert record.final_latency_ms is not None
        assert record.final_latency_ms >= 0
    # The display text, as the SDK shows it, as in primary records.
    assert {r.text for r in harness.records if r.variant == "custom"} == {"Banking model answers."}
    assert {r.text for r in harness.records if r.variant == "base"} == {"Base model answers."}
    assert len({r.session_id for r in harness.records}) == 6  # a session per utterance
    assert {r.unit for r in harness.records} == {"c0", "c1", "c2"}

    assert harness.metric("speech_gateway_canary_wer", experiment="ab", variant="base") == (
        pytest.approx(1 / 3)
    )
    assert harness.metric("speech_gateway_canary_wer", experiment="ab", variant="custom") == 0.0
    latency = harness.metric("speech_gateway_canary_latency_ms", experiment="ab", variant="custom")
    assert latency is not None
    assert latency >= 0
    ok = {"experiment": "ab", "variant": "custom", "result": "ok"}
    assert harness.metric("speech_gateway_canary_rounds_total", **ok) == 1.0


async def test_a_model_switched_behind_the_endpoint_shows_in_the_next_round(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The emulator's endpoint switch (a silent fallback to the base model): the custom
    variant's canaries now read as the base model's."""
    server = await aiohttp_server(emulator_app())
    url = f"ws://127.0.0.1:{server.port}"
    harness = Harness(http, gateway_config(url, canary_set(tmp_path / "set")))
    before = by_variant(await harness.runner.run_round("ab"))
    async with http.put(
        f"http://127.0.0.1:{server.port}/emulator/endpoints/banking",
        json={"model": "base", "silent": True},
        headers={"Ocp-Apim-Subscription-Key": KEY},
    ) as response:
        assert response.status == 200, await response.text()
    after = by_variant(await harness.runner.run_round("ab"))
    assert before["custom"].wer == 0.0
    assert after["custom"].wer == pytest.approx(1 / 3)
    assert [a.text for a in after["custom"].answers] == [a.text for a in after["base"].answers]


async def test_the_round_uses_the_live_phase(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Records carry the experiment's phase as it is when the round runs."""
    url = await serve(aiohttp_server, emulator_app())
    harness = Harness(http, gateway_config(url, canary_set(tmp_path / "set", count=1)))
    experiment = dataclasses.replace(harness.config.experiments[0], phase="p-live")
    harness.config = dataclasses.replace(
        harness.config, experiments=(experiment, *harness.config.experiments[1:])
    )
    results = await harness.runner.run_round("ab")
    assert {r.phase for r in results} == {"p-live"}
    assert {r.phase for r in harness.records} == {"p-live"}


async def test_an_experiment_without_canary_has_no_round(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, emulator_app())
    harness = Harness(http, gateway_config(url, canary_set(tmp_path / "set")))
    for experiment in ("plain", "missing"):
        with pytest.raises(KeyError):
            await harness.runner.run_round(experiment)


async def test_start_runs_rounds_on_schedule_and_close_stops_them(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, emulator_app())
    config = gateway_config(url, canary_set(tmp_path / "set", count=1), interval_s=0.3)
    harness = Harness(http, config, first_round_s=0.1)
    await harness.runner.start()
    assert harness.runner.experiments == ("ab",)
    with pytest.raises(RuntimeError):
        await harness.runner.start()
    async with asyncio.timeout(10):
        while len(harness.rounds) < 3:  # noqa: ASYNC110 - polls what the rounds record
            await asyncio.sleep(0.05)
    await harness.runner.close()
    rounds = len(harness.rounds)
    await asyncio.sleep(0.6)
    assert len(harness.rounds) == rounds  # no task is left
    assert all(name != "canary-ab" for name in (t.get_name() for t in asyncio.all_tasks()))
    # Rounds start `interval_s` apart.
    starts = [results[0].at for results in harness.rounds]
    assert starts == sorted(starts)


async def test_a_failing_callback_is_logged_and_the_rounds_go_on(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, emulator_app())
    calls: list[int] = []

    async def broken(results: Sequence[RoundResult]) -> None:
        calls.append(len(results))
        raise ValueError("monitor bug")

    config = gateway_config(url, canary_set(tmp_path / "set", count=1), interval_s=0.2)
    harness = Harness(http, config, on_round=broken, first_round_s=0.05)
    with capture_logs() as logs:
        await harness.runner.start()
        async with asyncio.timeout(10):
            while len(calls) < 2:  # noqa: ASYNC110 - polls what the rounds record
                await asyncio.sleep(0.05)
        await harness.runner.close()
    assert calls[:2] == [2, 2]
    assert any(e["event"] == "canary_round_callback_failed" for e in logs)


async def test_a_bad_wav_fails_start_naming_the_setting(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The configuration check reads only the manifest; the audio is read at start."""
    folder = canary_set(tmp_path / "set", count=1)
    (folder / "c0.wav").write_bytes(b"RIFF....not a wave file")
    harness = Harness(http, gateway_config("ws://127.0.0.1:9", folder))
    with pytest.raises(ConfigError) as caught:
        await harness.runner.start()
    assert caught.value.field == "gateway.experiments[0].canary.dataset"
    await harness.runner.close()


async def test_canary_records_never_reach_the_guardrail_counts(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Every canary record goes to the control plane too (as GatewayState.submit does):
    none is counted; a primary record in the same phase is."""
    url = await serve(aiohttp_server, emulator_app())
    config = gateway_config(url, canary_set(tmp_path / "set", count=2))
    counters = LocalCounterStore()
    plane = ControlPlane(
        config,
        FileControlStore(tmp_path / "state.json"),
        counters,
        GatewayMetrics(),
        guardrail_interval_s=0.05,
    )
    await plane.start()
    try:
        harness = Harness(http, config)
        await harness.runner.run_round("ab")
        for record in harness.records:
            plane.observe(record)
        phase = config.experiments[0].phase
        await asyncio.sleep(0.3)
        assert await counters.read("ab", phase) == {}
        primary = OutcomeRecord.from_json(
            harness.records[0]
            .to_json()
            .replace('"role":"canary"', '"role":"primary"')
            .replace('"unit_source":"canary"', '"unit_source":"query"')
        )
        plane.observe(primary)
        async with asyncio.timeout(5):
            while not await counters.read("ab", phase):  # noqa: ASYNC110 - a store to poll
                await asyncio.sleep(0.05)
    finally:
        await plane.close()


# -- failures ---------------------------------------------------------------------------------


async def failed_round(harness: Harness) -> list[RoundResult]:
    results = await harness.runner.run_round("ab")
    assert len(results) == 2
    for result in results:
        assert result.failed
        assert result.wer is None
    for record in harness.records:
        assert (record.kind, record.role) == (Kind.SESSION_FAILURE, Role.CANARY)
        assert record.text is None
    failed = {"experiment": "ab", "variant": "custom", "result": "failed"}
    assert harness.metric("speech_gateway_canary_rounds_total", **failed) == 1.0
    assert harness.metric("speech_gateway_canary_wer", experiment="ab", variant="custom") is None
    return results


def codes(results: Sequence[RoundResult]) -> set[str | None]:
    return {answer.error_code for result in results for answer in result.answers}


async def test_an_unreachable_backend_gives_failed_answers_and_records(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    harness = Harness(http, gateway_config(url, canary_set(tmp_path / "set")))
    with capture_logs() as logs:
        results = await failed_round(harness)
    assert codes(results) == {"upstream_unreachable"}
    assert len(harness.records) == 6
    assert {r.error_code for r in harness.records} == {"upstream_unreachable"}
    failures = [e for e in logs if e["event"] == "canary_utterance_failed"]
    assert len(failures) == 6
    assert all(KEY not in str(e) for e in logs)


async def test_a_refusing_backend_is_an_http_error_answer(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, emulator_app())
    harness = Harness(http, gateway_config(url, canary_set(tmp_path / "set"), key="wrong-key"))
    assert codes(await failed_round(harness)) == {"upstream_http_401"}


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        (
            {"failure_rate": 1.0, "failure_kind": "usp", "failure_status": "Error"},
            "upstream_status_Error",
        ),
        (
            {"failure_rate": 1.0, "failure_kind": "close", "failure_status": "1011"},
            "upstream_close_1011",
        ),
        (
            {"failure_rate": 1.0, "failure_kind": "http", "failure_status": "503"},
            "upstream_http_503",
        ),
    ],
)
async def test_a_failing_backend_is_an_error_answer(
    aiohttp_server: ServerFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    faults: dict[str, Any],
    code: str,
) -> None:
    url = await serve(aiohttp_server, emulator_app(**faults))
    harness = Harness(http, gateway_config(url, canary_set(tmp_path / "set")))
    assert codes(await failed_round(harness)) == {code}


async def test_a_stalled_backend_times_out(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await serve(aiohttp_server, emulator_app(latency_ms=5000))
    config = gateway_config(url, canary_set(tmp_path / "set", count=1), timeout_s=0.5)
    harness = Harness(http, config)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await failed_round(harness)
    assert codes(results) == {"upstream_timeout"}
    assert loop.time() - started < 4  # two variants, one item each, 0.5 s apiece


# -- real recognition -------------------------------------------------------------------------


async def test_a_real_round_on_pocketsphinx(
    emulator: LocalEmulator, http: aiohttp.ClientSession
) -> None:
    """The demo canary set against the PocketSphinx emulator: every item answered; the
    banking custom model does better on banking speech than the base model."""
    harness = Harness(
        http, gateway_config(emulator.ws_url, DATA / "canary", key=EMULATOR_KEY, timeout_s=60)
    )
    results = by_variant(await harness.runner.run_round("ab"))
    for result in results.values():
        assert len(result.answered) == len(result.answers) == 8
        assert result.wer is not None
        assert all(a.latency_ms is not None and a.latency_ms < 30_000 for a in result.answers)
    custom_wer, base_wer = results["custom"].wer, results["base"].wer
    assert custom_wer is not None
    assert base_wer is not None
    print(f"canary WER: custom {custom_wer:.3f}, base {base_wer:.3f}")
    assert custom_wer < base_wer
    assert custom_wer < 0.25
