"""The dashboard's model-health block in headless Chromium: each variant's model, expiry
(marked when near), canary WER, latency and rounds, and the latest alerts, as text."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from browser import chromium, console_errors
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.control.model import hash_key
from gateway.server.admin.auth import AdminTokens
from gateway.server.admin.dashboard import add_dashboard_routes

TOKEN = "dashboard-health-token-0123456789"
WAIT = 10.0
HOSTILE = '<img src=x onerror="document.title=1">'

ALERT = {
    "experiment": "banking",
    "variant": "custom",
    "kind": "canary_matches_base",
    "message": "banking/custom: answers as the base model " + HOSTILE,
    "detail": {},
    "at": "2026-12-07T10:05:00.000Z",
}


def variant_health(endpoint: str | None, model: dict[str, Any] | None, **canary: Any) -> Any:
    return {
        "endpoint_id": endpoint,
        "model": model,
        "model_checked_at": None,
        "model_error": None,
        "canary": canary or None,
        "alerts": [],
    }


def listing() -> dict[str, Any]:
    model = {
        "id": "m1",
        "display_name": "banking v3",
        "kind": "custom",
        "locale": "en-US",
        "adaptation_expires": "2026-12-20T00:00:00.000Z",
        "transcription_expires": "2027-01-04T00:00:00.000Z",
        "expiring_within_days": 13.0,
        "expiring": ["adaptation"],
    }
    canary = {"last_round_at": "2026-12-07T10:05:00.000Z", "rounds": 12}
    custom = variant_health("ep-1", model, wer=0.05, latency_ms=380.0, failed_rounds=1, **canary)
    base = variant_health(None, None, wer=0.125, latency_ms=410.0, failed_rounds=0, **canary)
    failing = {**ALERT, "variant": None, "kind": "canary_failing", "at": "2026-12-07T09:00:00Z"}
    view = {
        "id": "banking",
        "control": "base",
        "phase": "p-3f9a0c1d2e",
        "shadows": [],
        "variants": [
            {"name": "base", "backend": "azure", "endpoint_id": None, "weight": 50, "share": 0.5},
            {
                "name": "custom",
                "backend": "azure",
                "endpoint_id": "ep-1",
                "weight": 50,
                "share": 0.5,
            },
        ],
        "health": {
            "variants": {"base": base, "custom": {**custom, "alerts": [ALERT]}},
            "alerts": [failing],
        },
    }
    quiet = {**view, "id": "quiet", "health": {"variants": {}, "alerts": []}}
    return {"experiments": [view, quiet]}


# A report with a canary section only: seven rounds of the custom variant, the last a
# fallback to the base model; the table shows the latest six, oldest first.
REPORT = {
    "phases": [],
    "recommendation": None,
    "canary": {
        "variants": [
            {
                "name": "custom",
                "rounds": [{"wer": wer} for wer in (0.5, 0.0, 0.0, 0.01, 0.0, 0.0, 0.333)],
            }
        ]
    },
}


def app() -> web.Application:
    admins = AdminTokens.from_digests({"alice": hash_key(TOKEN)})

    async def experiments(request: web.Request) -> web.Response:
        if admins.authenticate(request.headers.get("Authorization")) is None:
            return web.json_response({"error": "an admin token is required"}, status=401)
        return web.json_response(listing())

    async def analysis(request: web.Request) -> web.Response:
        if request.match_info["id"] != "banking":
            return web.json_response({"error": "no outcome store"}, status=503)
        return web.json_response(REPORT)

    application = web.Application()
    add_dashboard_routes(application, refresh_seconds=1.0)
    application.router.add_get("/admin/experiments", experiments)
    application.router.add_get("/admin/experiments/{id}/analysis", analysis)
    return application


@contextmanager
def serving(application: web.Application) -> Iterator[str]:
    """Serve on 127.0.0.1 from a thread with its own loop (the browser blocks this one)."""
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def main() -> None:
        runner = web.AppRunner(application)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        found["port"] = runner.addresses[0][1]
        found["stop"] = stop = asyncio.Event()
        found["loop"] = asyncio.get_running_loop()
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(WAIT), "the server did not start"
    try:
        yield f"http://127.0.0.1:{found['port']}"
    finally:
        found["loop"].call_soon_threadsafe(found["stop"].set)
        thread.join(WAIT)


def test_the_health_block_shows_models_canaries_and_alerts(tmp_path: Path) -> None:
    with serving(app()) as base, chromium(tmp_path) as driver:
        driver.get(f"{base}/dashboard")
        driver.execute_script(
            "sessionStorage.setItem('speech-gateway.admin-token', arguments[0])", TOKEN
        )
        driver.get(f"{base}/dashboard")
        wait = WebDriverWait(
            driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
        )
        table = 'section[data-experiment="banking"] table[data-table="health"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, table), "the health table")

        def cell(variant: str, column: str) -> list[str]:
            selector = f'{table} tr[data-variant="{variant}"] [data-col="{column}"]'
            return list(driver.find_element(By.CSS_SELECTOR, selector).text.splitlines())

        assert cell("custom", "model") == ["banking v3", "custom · endpoint ep-1"]
        assert cell("custom", "expires") == ["2027-01-04", "adaptation 2026-12-20"]
        expires = f'{table} tr[data-variant="custom"] [data-col="expires"]'
        assert driver.find_element(By.CSS_SELECTOR, expires).get_attribute("data-expiring") == (
            "yes"
        )
        assert cell("custom", "canary_wer") == ["5.0%"]
        assert cell("custom", "canary_trend") == ["0.0% · 0.0% · 1.0% · 0.0% · 0.0% · 33.3%"]
        assert cell("base", "canary_trend") == ["–"]
        assert cell("custom", "canary_latency") == ["380 ms"]
        assert cell("custom", "canary_rounds") == ["12", "1 failed"]
        assert cell("custom", "last_round") == ["2026-12-07T10:05:00.000Z"]
        assert cell("base", "model") == ["–"]
        assert cell("base", "expires") == ["–"]
        assert cell("base", "canary_wer") == ["12.5%"]
        assert cell("base", "canary_rounds") == ["12"]
        alerts = driver.find_elements(
            By.CSS_SELECTOR, 'section[data-experiment="banking"] [data-alert]'
        )
        # Newest first; the message is text, never markup.
        assert [a.get_attribute("data-alert") for a in alerts] == [
            "canary_matches_base",
            "canary_failing",
        ]
        assert HOSTILE in alerts[0].text
        assert driver.title != "1"
        # An experiment without canaries or lifecycle reads shows no health block.
        quiet = driver.find_elements(
            By.CSS_SELECTOR, 'section[data-experiment="quiet"] table[data-table="health"]'
        )
        assert quiet == []
        # The only console errors are the analysis route's 503s (the browser logs them).
        assert all("503" in error for error in console_errors(driver))
