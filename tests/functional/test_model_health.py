"""Model health end to end: a real gateway sends its canaries to a real emulator, a webhook
receiver in the test gets the alerts.

The emulator's instant engine gives each model its own transcript, so the canary set's WER
is 0 on the custom endpoint and about 50 % on the base model. Switching the custom endpoint
to the base model silently (an expired model's fallback) must be found by the canaries
within two rounds, alert once (also over later rounds), reach the webhook, and, with
`pause_on_alert`, roll the challenger back in a new phase (whose baseline is the fallback:
so no second alert, and no "matches the base model" alert two rounds later). Redeploying
another model visibly must be found by the lifecycle check: `model_changed`, once, and a
new phase with the weights unchanged. Canary records never count as evidence.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from control_support import ADMIN, AUTH
from support import DATA, DOMAINS, EMULATOR_KEY, toml_value

from gateway.control.model import hash_key
from gateway.tools.local_services import LocalEmulator, LocalGateway, free_port

EXPERIMENT = "banking"
REFERENCE = "what is my available balance today"
TEXTS = {
    "banking": REFERENCE,  # the custom model gets every canary right
    "travel": "book a flight to boston",
    "base": "what is my variable balance to day",  # the base model: about 50 % WER
}
ROUND_TIMEOUT_S = 60.0
EXPIRES = (datetime.now(UTC) + timedelta(days=10)).date()  # the banking model's transcription


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def canary_set(folder: Path) -> Path:
    """Two canary items (real banking WAVs) whose reference is what the custom model says."""
    folder.mkdir(parents=True)
    audio = sorted((DATA / "demo" / "banking" / "audio").glob("*.wav"))[:2]
    items = [{"id": f"c{n}", "audio": str(wav), "text": REFERENCE} for n, wav in enumerate(audio)]
    write(folder / "manifest.jsonl", [json.dumps(item) for item in items])
    return folder


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[LocalEmulator]:
    expires = EXPIRES.isoformat()
    config = write(
        tmp_path / "emulator.toml",
        [
            "[emulator]",
            'engine = "instant"',
            "instant_utterance_ms = 60000",  # one phrase per canary file
            f"model_cache = {toml_value(str(tmp_path / 'models'))}",
            "[emulator.custom]",
            *(f"{n} = {toml_value(str(DOMAINS[n] / 'corpus.txt'))}" for n in ("banking", "travel")),
            "[emulator.instant_texts]",
            *(f"{model} = {toml_value(text)}" for model, text in TEXTS.items()),
            "[emulator.model_expiry.banking]",
            f"transcription = {expires}",  # within the 30-day warning window
        ],
    )
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__KEY": EMULATOR_KEY}
    with LocalEmulator("--config", str(config), log_path=tmp_path / "emulator.log", env=env) as em:
        yield em


class Receiver:
    """A webhook receiver: keeps every alert posted to it."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: web.Request) -> web.Response:
        self.alerts.append(await request.json())
        return web.Response(status=204)

    def kinds(self) -> list[str]:
        return sorted(alert["kind"] for alert in self.alerts)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    app = web.Application()
    app.router.add_post("/hook", made.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", made.port).start()
    yield made
    await runner.cleanup()


def gateway(
    tmp_path: Path, emulator: LocalEmulator, receiver: Receiver, *, pause: bool = True
) -> LocalGateway:
    canaries = canary_set(tmp_path / "canary")
    variants = [
        {"name": "base", "backend": "local", "weight": 50},
        {"name": "custom", "backend": "local", "endpoint_id": "banking", "weight": 50},
    ]
    config = write(
        tmp_path / "gateway.toml",
        [
            "[gateway]",
            f"admin_tokens_sha256 = {toml_value({'ops': hash_key(ADMIN)})}",
            "[gateway.health]",
            f"webhook_url = {toml_value(receiver.url)}",
            "lifecycle_interval_s = 1.0",
            "expiry_warning_days = 30",
            "[gateway.backends.local]",
            f"url = {toml_value(emulator.ws_url)}",
            f"management_url = {toml_value(emulator.http_url)}",
            "[[gateway.experiments]]",
            f"id = {toml_value(EXPERIMENT)}",
            'control = "base"',
            f"variants = {toml_value(variants)}",
            "[gateway.experiments.canary]",
            f"dataset = {toml_value(str(canaries))}",
            "interval_s = 1.0",
            "timeout_s = 10.0",
            "baseline_rounds = 2",
            f"pause_on_alert = {toml_value(pause)}",
            "[outcomes]",
            f"path = {toml_value(str(tmp_path / 'outcomes.jsonl'))}",
            "[logging]",
            'format = "json"',
        ],
    )
    env = {**os.environ, "SPEECH_GATEWAY_GATEWAY__BACKENDS__LOCAL__KEY": EMULATOR_KEY}
    return LocalGateway(config, log_path=tmp_path / "gateway.log", env=env)


def admin_list(gw: LocalGateway) -> str:
    """`speech-gateway admin list`, as an operator runs it."""
    env = {**os.environ, "SPEECH_GATEWAY_ADMIN_TOKEN": ADMIN}
    command = [sys.executable, "-m", "gateway", "admin", "--gateway", gw.http_url, "list"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def switch(emulator: LocalEmulator, model: str, *, silent: bool) -> None:
    body = json.dumps({"model": model, "silent": silent}).encode()
    request = urllib.request.Request(
        f"{emulator.http_url}/emulator/endpoints/banking",
        data=body,
        method="PUT",
        headers={"Ocp-Apim-Subscription-Key": EMULATOR_KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


async def get(http: aiohttp.ClientSession, gw: LocalGateway, path: str) -> Any:
    async with http.get(f"{gw.http_url}{path}", headers=AUTH) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def canary_rounds(http: aiohttp.ClientSession, gw: LocalGateway) -> int:
    view = await get(http, gw, f"/admin/experiments/{EXPERIMENT}")
    canary = view["health"]["variants"]["custom"]["canary"]
    return 0 if canary is None else int(canary["rounds"])


async def until(check: Any, what: str, timeout_s: float = ROUND_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_silent_fallback_and_a_visible_redeploy_are_found_and_alert_once(
    tmp_path: Path, emulator: LocalEmulator, receiver: Receiver
) -> None:
    with gateway(tmp_path, emulator, receiver) as gw:
        async with aiohttp.ClientSession() as http:

            async def rounds_at_least(n: int) -> Any:
                return await canary_rounds(http, gw) >= n

            async def got(kind: str) -> Any:
                return kind in receiver.kinds()

            # The baseline (2 rounds) and one more: no canary alert while nothing changed;
            # the near expiry of the banking model is reported once by the lifecycle check.
            await until(lambda: rounds_at_least(4), "four canary rounds")
            await until(lambda: got("model_expiring"), "the expiry warning")
            assert not [k for k in receiver.kinds() if k.startswith("canary")]
            listing = admin_list(gw)
            assert f"{EXPIRES.isoformat()}!" in listing, listing  # marked: within 30 days
            before = await get(http, gw, f"/admin/experiments/{EXPERIMENT}")

            # An expired model's fallback: the API still shows banking; only canaries see it.
            switch(emulator, "base", silent=True)
            switched_at = await canary_rounds(http, gw)
            await until(lambda: got("canary_wer_change"), "the canary WER alert")
            assert await canary_rounds(http, gw) - switched_at <= 3  # at most 2 rounds late
            alert = next(a for a in receiver.alerts if a["kind"] == "canary_wer_change")
            assert (alert["experiment"], alert["variant"]) == (EXPERIMENT, "custom")
            assert alert["text"] == alert["message"]

            # pause_on_alert: the challenger is rolled back in a new phase, by "health".
            after = await get(http, gw, f"/admin/experiments/{EXPERIMENT}")
            assert after["phase"] != before["phase"]
            weights = {v["name"]: v["weight"] for v in after["variants"]}
            assert weights["custom"] == 0.0
            audit = await get(http, gw, f"/admin/experiments/{EXPERIMENT}/audit?limit=50")
            entries = audit["entries"] if isinstance(audit, dict) else audit
            actions = [(e["actor"], e["action"]) for e in entries]
            assert ("health", "rollback") in actions
            assert ("health", "health_alert") in actions

            # Later rounds raise nothing again.
            now = await canary_rounds(http, gw)
            await until(lambda: rounds_at_least(now + 3), "three more rounds")
            kinds = receiver.kinds()
            assert kinds.count("canary_wer_change") == 1
            assert kinds.count("model_expiring") == 1

            # A visible redeploy to another custom model: the lifecycle check's model change.
            phase = (await get(http, gw, f"/admin/experiments/{EXPERIMENT}"))["phase"]
            switch(emulator, "travel", silent=False)
            await until(lambda: got("model_changed"), "the model-change alert")
            changed = await get(http, gw, f"/admin/experiments/{EXPERIMENT}")
            assert changed["phase"] != phase
            assert {v["name"]: v["weight"] for v in changed["variants"]} == weights
            model = changed["health"]["variants"]["custom"]["model"]
            assert model["id"] == "travel"
            await asyncio.sleep(2.5)  # two more lifecycle reads
            assert receiver.kinds().count("model_changed") == 1

            # Canaries never count as evidence: no client sent anything.
            report = await get(http, gw, f"/admin/experiments/{EXPERIMENT}/analysis")
            assert report["canary"] is not None
            for phase_report in report["phases"]:
                for variant in phase_report["variants"].values():
                    assert variant["outcomes"] == 0, variant

            # A ship keeps a holdout on control; the live report then tracks drift in it.
            async with http.post(
                f"{gw.http_url}/admin/experiments/{EXPERIMENT}/ship",
                json={"variant": "custom", "holdout": 0.05, "reason": "custom wins"},
                headers=AUTH,
            ) as answer:
                assert answer.status == 200, await answer.text()
            shipped = await get(http, gw, f"/admin/experiments/{EXPERIMENT}")
            assert shipped["phases"][0]["origin"] == "ship"

            async def drift() -> Any:  # the live report is cached for 2 s
                report = await get(http, gw, f"/admin/experiments/{EXPERIMENT}/analysis")
                return report["drift"]

            tracked = await until(drift, "the drift section")
            assert (tracked["shipped"], tracked["holdout"]) == ("custom", "base")


async def test_without_pause_a_fallback_alerts_both_ways_once_and_keeps_the_split(
    tmp_path: Path, emulator: LocalEmulator, receiver: Receiver
) -> None:
    """Without pause_on_alert the phase goes on: the WER alert comes first, then, two rounds
    of base-model answers later, `canary_matches_base`; each once, and the split unchanged."""
    with gateway(tmp_path, emulator, receiver, pause=False) as gw:
        async with aiohttp.ClientSession() as http:

            async def rounds_at_least(n: int) -> Any:
                return await canary_rounds(http, gw) >= n

            async def got(kind: str) -> Any:
                return kind in receiver.kinds()

            await until(lambda: rounds_at_least(3), "three canary rounds")
            before = await get(http, gw, f"/admin/experiments/{EXPERIMENT}")
            switch(emulator, "base", silent=True)
            await until(lambda: got("canary_wer_change"), "the canary WER alert")
            await until(lambda: got("canary_matches_base"), "the matches-base alert")
            now = await canary_rounds(http, gw)
            await until(lambda: rounds_at_least(now + 3), "three more rounds")
            kinds = receiver.kinds()
            assert kinds.count("canary_wer_change") == 1
            assert kinds.count("canary_matches_base") == 1
            after = await get(http, gw, f"/admin/experiments/{EXPERIMENT}")
            assert (after["phase"], after["variants"]) == (before["phase"], before["variants"])
