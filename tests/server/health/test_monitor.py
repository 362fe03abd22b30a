"""The health monitor with a real control plane on a file store: canary rounds raise each
alert once (log, metric, audit, webhook), pause_on_alert rolls the challenger back, a new
phase starts afresh, and lifecycle reads of a local Custom Speech API warn of expiry and
open a new phase when the model behind an endpoint changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import Settings
from gateway.control.model import GatewayConfig
from gateway.control.plane import ControlPlane
from gateway.control.state import Changes, ExperimentState
from gateway.health.canary import RoundResult, failed_answer, load_references, scored_answer
from gateway.server.health.monitor import HealthMonitor
from gateway.stores.control_store import FileControlStore
from gateway.stores.counter_store import LocalCounterStore

CANARY = Path(__file__).resolve().parents[3] / "data" / "canary"
REFERENCES = load_references(CANARY)
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


class Recorded:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class Family:
    def __init__(self) -> None:
        self.children: dict[tuple[str, ...], Recorded] = {}

    def labels(self, *values: str) -> Recorded:
        return self.children.setdefault(values, Recorded())


class Metrics:
    """The control plane's and the monitor's metrics, recorded (no Prometheus registry)."""

    def __init__(self) -> None:
        self.control_changes = Family()
        self.control_version = Family()
        self.control_store_up = Recorded()
        self.guardrail_rollbacks = Family()
        self.alerts: list[tuple[str, str | None, str]] = []
        self.expiry: dict[tuple[str, str, str], float] = {}

    def health_alert(self, experiment: str, variant: str | None, kind: str) -> None:
        self.alerts.append((experiment, variant, kind))

    def model_expiry(self, backend: str, endpoint: str, kind: str, days: float) -> None:
        self.expiry[(backend, endpoint, kind)] = days


def config(
    *,
    pause_on_alert: bool = False,
    management_url: str | None = None,
    webhook_url: str | None = None,
    run: bool = True,
) -> GatewayConfig:
    azure: dict[str, Any] = {"url": "ws://127.0.0.1:1", "key": "backend-key-0123"}
    if management_url is not None:
        azure["management_url"] = management_url
    health: dict[str, Any] = {"expiry_warning_days": 30, "run": run}
    if webhook_url is not None:
        health["webhook_url"] = webhook_url
        health["webhook_timeout_s"] = 2.0
    settings = Settings.model_validate(
        {
            "gateway": {
                "health": health,
                "backends": {"azure": azure},
                "experiments": [
                    {
                        "id": "banking",
                        "control": "base",
                        "variants": [
                            {"name": "base", "backend": "azure", "weight": 50},
                            {
                                "name": "custom",
                                "backend": "azure",
                                "endpoint_id": "cust-1",
                                "weight": 50,
                            },
                        ],
                        "canary": {
                            "dataset": str(CANARY),
                            "baseline_rounds": 3,
                            "alpha": 0.01,
                            "min_change_points": 2.0,
                            "pause_on_alert": pause_on_alert,
                        },
                    }
                ],
            }
        }
    )
    return build_gateway_config(settings.gateway)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def plane_of(base: GatewayConfig, tmp_path: Path, metrics: Metrics) -> ControlPlane:
    plane = ControlPlane(
        base, FileControlStore(tmp_path / "control.json"), LocalCounterStore(), metrics
    )
    await plane.start()
    return plane


def base_text(reference: str) -> str:
    """What the base model answers: the reference without its last word (domain misses)."""
    return " ".join(reference.split()[:-1])


def round_of(
    plane: ControlPlane, texts: dict[str, Callable[[str], str | None]]
) -> list[RoundResult]:
    """One round of every variant: each one's answers made from the references."""
    experiment = plane.experiment("banking")
    results = []
    for variant in experiment.variants:
        make = texts[variant.name]
        answers = []
        for item, reference in REFERENCES.items():
            text = make(reference)
            answers.append(
                failed_answer(item, reference, "upstream_unavailable")
                if text is None
                else scored_answer(item, reference, text, 420.0)
            )
        results.append(
            RoundResult(
                experiment="banking",
                phase=experiment.phase,
                variant=variant.name,
                backend=variant.backend.name,
                endpoint_id=variant.endpoint_id,
                at="2026-12-07T10:00:00.000Z",
                answers=tuple(answers),
            )
        )
    return results


HEALTHY = {"base": base_text, "custom": lambda reference: reference}
FALLEN_BACK = {"base": base_text, "custom": base_text}


async def audit_actions(plane: ControlPlane) -> list[tuple[str, str | None]]:
    """(action, alert kind) of the audit entries, oldest first."""
    entries = await plane.audit("banking", 1000)
    return [(e["action"], e["detail"].get("kind")) for e in reversed(entries)]


async def test_a_fallback_to_the_base_model_alerts_once_everywhere(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    metrics = Metrics()
    plane = await plane_of(config(webhook_url=f"http://127.0.0.1:{port}/hook"), tmp_path, metrics)
    monitor = HealthMonitor(plane, metrics, clock=lambda: NOW)
    await monitor.start(http)
    try:
        phase = plane.experiment("banking").phase
        with capture_logs() as logs:
            for _ in range(5):
                await monitor.round_finished(round_of(plane, HEALTHY))
            assert metrics.alerts == []
            detected: dict[str, int] = {}
            for n in range(1, 11):
                await monitor.round_finished(round_of(plane, FALLEN_BACK))
                for _e, _v, kind in metrics.alerts:
                    detected.setdefault(kind, n)
        # A noise-free jump of several points: the first round after the switch; identical
        # to the base model for two rounds: the second.
        assert detected == {"canary_wer_change": 1, "canary_matches_base": 2}
        kinds = sorted(kind for _e, _v, kind in metrics.alerts)
        assert kinds == ["canary_matches_base", "canary_wer_change"]
        assert {v for _e, v, _k in metrics.alerts} == {"custom"}
        assert sorted(await audit_actions(plane)) == [
            ("health_alert", "canary_matches_base"),
            ("health_alert", "canary_wer_change"),
        ]
        assert plane.experiment("banking").phase == phase  # no pause configured
        events = [e for e in logs if e["event"] == "health_alert"]
        assert len(events) == 2
        assert all(e["log_level"] == "warning" for e in events)
        async with asyncio.timeout(5):
            while len(received) < 2:  # noqa: ASYNC110 - the webhook signals nothing
                await asyncio.sleep(0.01)
        assert sorted(body["kind"] for body in received) == kinds
        view = monitor.experiment_health(plane.experiment("banking"))
        custom = view["variants"]["custom"]
        assert custom["endpoint_id"] == "cust-1"
        assert custom["canary"]["rounds"] == 15
        assert custom["canary"]["failed_rounds"] == 0
        assert custom["canary"]["wer"] == pytest.approx(
            monitor_wer(round_of(plane, FALLEN_BACK)[1])
        )
        assert custom["canary"]["latency_ms"] == 420.0
        assert {a["kind"] for a in custom["alerts"]} == set(kinds)
        assert view["variants"]["base"]["alerts"] == []
    finally:
        await monitor.close()
        await plane.close()
        await runner.cleanup()


def monitor_wer(result: RoundResult) -> float:
    wer = result.wer
    assert wer is not None
    return wer


async def test_pause_on_alert_rolls_the_challenger_back_and_the_new_phase_starts_afresh(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    plane = await plane_of(config(pause_on_alert=True), tmp_path, metrics)
    monitor = HealthMonitor(plane, metrics, clock=lambda: NOW)
    await monitor.start(http)
    try:
        phase = plane.experiment("banking").phase
        for _ in range(4):
            await monitor.round_finished(round_of(plane, HEALTHY))
        for _ in range(3):
            await monitor.round_finished(round_of(plane, FALLEN_BACK))
        state = plane.state("banking")
        assert state.weights == {"base": 50.0, "custom": 0.0}
        assert state.phase != phase
        actions = await audit_actions(plane)
        assert ("rollback", None) in actions
        rollbacks = [e for e in await plane.audit("banking", 100) if e["action"] == "rollback"]
        assert len(rollbacks) == 1
        assert rollbacks[0]["actor"] == "health"
        assert rollbacks[0]["detail"]["phase"] == phase
        alerts_before = len(metrics.alerts)
        # The new phase: its rounds start a new baseline, in which the custom endpoint
        # already answers as the base model; nothing fires again.
        for _ in range(20):
            await monitor.round_finished(round_of(plane, FALLEN_BACK))
        assert len(metrics.alerts) == alerts_before
        assert len([a for a in await audit_actions(plane) if a[0] == "rollback"]) == 1
    finally:
        await monitor.close()
        await plane.close()


async def test_an_admins_new_phase_rearms_the_alerts(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    plane = await plane_of(config(), tmp_path, metrics)
    monitor = HealthMonitor(plane, metrics, clock=lambda: NOW)
    await monitor.start(http)
    try:
        for texts in (HEALTHY,) * 4 + (FALLEN_BACK,) * 4:
            await monitor.round_finished(round_of(plane, texts))
        assert len(metrics.alerts) == 2

        def ramp(changes: Changes, state: ExperimentState) -> Any:
            return changes.set_weights(state, {"custom": 20})

        await plane.change("banking", "alice", ramp)
        # A new phase: a new baseline (the model was fixed meanwhile), then the same fall.
        for texts in (HEALTHY,) * 4 + (FALLEN_BACK,) * 4:
            await monitor.round_finished(round_of(plane, texts))
        assert len(metrics.alerts) == 4
    finally:
        await monitor.close()
        await plane.close()


async def test_a_round_in_which_every_variant_failed_alerts_once(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    plane = await plane_of(config(), tmp_path, metrics)
    monitor = HealthMonitor(plane, metrics, clock=lambda: NOW)
    await monitor.start(http)
    down: dict[str, Callable[[str], str | None]] = {
        "base": lambda _r: None,
        "custom": lambda _r: None,
    }
    try:
        for _ in range(3):
            await monitor.round_finished(round_of(plane, down))
        assert metrics.alerts == [("banking", None, "canary_failing")]
        view = monitor.experiment_health(plane.experiment("banking"))
        assert view["variants"]["base"]["canary"]["failed_rounds"] == 3
        assert view["variants"]["base"]["canary"]["wer"] is None
        assert [a["kind"] for a in view["alerts"]] == ["canary_failing"]
        assert view["alerts"][0]["detail"]["errors"] == ["upstream_unavailable"]
        assert await audit_actions(plane) == [("health_alert", "canary_failing")]
        # One variant failing alone is not this alert (its failed rounds are reported).
        one_down = {"base": base_text, "custom": lambda _r: None}
        await monitor.round_finished(round_of(plane, one_down))
        assert len(metrics.alerts) == 1
    finally:
        await monitor.close()
        await plane.close()


class CustomSpeech:
    """A local Custom Speech API (v3.2 endpoints and models) whose endpoint can be re-pointed."""

    KEY = "management-key-0123"

    def __init__(self) -> None:
        self.model = "m1"  # "base" or a custom model id
        self.fail = False
        self.keys: list[str | None] = []
        self.origin = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/speechtotext/v3.2/endpoints/{id}", self.endpoint)
        app.router.add_get("/speechtotext/v3.2/models/base/{id}", self.base_model)
        app.router.add_get("/speechtotext/v3.2/models/{id}", self.custom_model)
        return app

    async def endpoint(self, request: web.Request) -> web.Response:
        self.keys.append(request.headers.get("Ocp-Apim-Subscription-Key"))
        if self.fail:
            return web.Response(status=503)
        endpoint_id = request.match_info["id"]
        link = "models/base/base-1" if self.model == "base" else f"models/{self.model}"
        return web.json_response(
            {
                "self": f"{self.origin}/speechtotext/v3.2/endpoints/{endpoint_id}",
                "displayName": "banking endpoint",
                "model": {"self": f"{self.origin}/speechtotext/v3.2/{link}"},
            }
        )

    async def custom_model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["id"]
        soon = NOW + timedelta(days=10)
        return web.json_response(
            {
                "self": f"{self.origin}/speechtotext/v3.2/models/{model_id}",
                "displayName": f"banking {model_id}",
                "locale": "en-US",
                "properties": {
                    "deprecationDates": {
                        "adaptationDateTime": (NOW - timedelta(days=1)).isoformat(),
                        "transcriptionDateTime": soon.isoformat(),
                    }
                },
            }
        )

    async def base_model(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "self": f"{self.origin}/speechtotext/v3.2/models/base/{request.match_info['id']}",
                "displayName": "base 2026",
                "locale": "en-US",
                "properties": {
                    "deprecationDates": {
                        "adaptationDateTime": "2028-01-15T00:00:00Z",
                        "transcriptionDateTime": "2028-07-15T00:00:00Z",
                    }
                },
            }
        )


@pytest.fixture
async def custom_speech() -> AsyncIterator[CustomSpeech]:
    service = CustomSpeech()
    runner = web.AppRunner(service.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    service.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield service
    await runner.cleanup()


async def test_lifecycle_reads_warn_of_expiry_once_and_a_model_change_opens_a_phase(
    tmp_path: Path, http: aiohttp.ClientSession, custom_speech: CustomSpeech
) -> None:
    metrics = Metrics()
    # run = false: no lifecycle loop of its own; the test reads when it wants to.
    base = config(management_url=custom_speech.origin, run=False)
    plane = await plane_of(base, tmp_path, metrics)
    monitor = HealthMonitor(plane, metrics, clock=lambda: NOW)
    await monitor.start(http)
    try:
        phase = plane.experiment("banking").phase
        await monitor.check_lifecycle()
        await monitor.check_lifecycle()
        assert custom_speech.keys == ["backend-key-0123"] * 2  # the backend's own key
        assert metrics.expiry[("azure", "cust-1", "transcription")] == pytest.approx(10.0)
        assert metrics.expiry[("azure", "cust-1", "adaptation")] == pytest.approx(-1.0)
        assert metrics.alerts == [("banking", "custom", "model_expiring")]
        assert plane.experiment("banking").phase == phase  # the first read compares nothing
        model = monitor.experiment_health(plane.experiment("banking"))["variants"]["custom"]
        assert model["model"]["id"] == "m1"
        assert model["model"]["kind"] == "custom"
        assert model["model"]["expiring_within_days"] == pytest.approx(-1.0)
        assert model["model"]["expiring"] == ["adaptation", "transcription"]
        assert model["model"]["transcription_expires"].startswith("2026-12-17")

        custom_speech.model = "base"  # the endpoint now deploys the base model
        with capture_logs() as logs:
            await monitor.check_lifecycle()
            await monitor.check_lifecycle()
        changed = [a for a in metrics.alerts if a[2] == "model_changed"]
        assert changed == [("banking", "custom", "model_changed")]
        assert plane.experiment("banking").phase != phase
        entries = await plane.audit("banking", 100)
        (opened,) = [e for e in entries if e["action"] == "new_phase"]
        assert opened["actor"] == "health"
        assert opened["detail"]["old_model"]["id"] == "m1"
        assert opened["detail"]["new_model"]["id"] == "base-1"
        assert opened["detail"]["new_model"]["kind"] == "base"
        assert plane.state("banking").weights == {"base": 50.0, "custom": 50.0}
        assert any(e["event"] == "health_alert" for e in logs)

        custom_speech.fail = True
        with capture_logs() as logs:
            await monitor.check_lifecycle()  # logged and counted, never raised
        assert monitor.lifecycle_failures == 1
        (failure,) = [e for e in logs if e["event"] == "model_lifecycle_read_failed"]
        assert "backend-key-0123" not in repr(failure)
        view = monitor.experiment_health(plane.experiment("banking"))["variants"]["custom"]
        assert view["model_error"]
        assert view["model"]["id"] == "base-1"  # the last model read stays shown
    finally:
        await monitor.close()
        await plane.close()


async def test_the_lifecycle_loop_runs_on_start_and_stops_on_close(
    tmp_path: Path, http: aiohttp.ClientSession, custom_speech: CustomSpeech
) -> None:
    metrics = Metrics()
    plane = await plane_of(config(management_url=custom_speech.origin), tmp_path, metrics)
    monitor = HealthMonitor(plane, metrics, clock=lambda: NOW)
    await monitor.start(http)
    async with asyncio.timeout(5):
        while not custom_speech.keys:  # noqa: ASYNC110 - the loop signals nothing
            await asyncio.sleep(0.01)
    await monitor.close()
    reads = len(custom_speech.keys)
    await asyncio.sleep(0.05)
    assert len(custom_speech.keys) == reads
    await plane.close()
