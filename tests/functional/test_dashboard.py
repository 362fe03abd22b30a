"""The live dashboard in headless Chromium, against a fake of the two admin endpoints.

The app mounts the real dashboard route and a small fake of `GET /admin/experiments` and
`GET /admin/experiments/{id}/analysis` that serves fixture reports, runs on loopback in a
thread of its own (Selenium blocks), and lets a test change the data it serves.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from browser import assert_not_blank, chromium, console_errors
from report_fixtures import empty_report, experiments_listing, two_variant_report
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.analysis.preferences import LabelledSample, PreferenceRate, SampleCounts
from gateway.control.model import hash_key
from gateway.server.admin.auth import AdminTokens
from gateway.server.admin.dashboard import Dashboard, add_dashboard_routes

TOKEN = "dashboard-admin-token-5c1e9f"
REFRESH_SECONDS = 1.0
WAIT = 10.0  # generous for a loaded CI machine; the waits return as soon as the page is ready
HOSTILE = '<img src=x onerror="document.title=1">'

Client = TestClient[web.Request, web.Application]


class FakeAdmin:
    """The admin endpoints the dashboard polls, answering from fixtures a test may replace."""

    def __init__(self) -> None:
        self.admins = AdminTokens.from_digests({"alice": hash_key(TOKEN)})
        # Replaced whole (never mutated in place) by the test thread: the server reads one
        # consistent snapshot per request.
        self.listing: dict[str, Any] = experiments_listing()
        self.reports: dict[str, dict[str, Any]] = {"banking-custom": two_variant_report()}
        self.requests = 0

    def mount(self, app: web.Application) -> None:
        app.router.add_get("/admin/experiments", self.experiments)
        app.router.add_get("/admin/experiments/{id}/analysis", self.analysis)

    def _refused(self, request: web.Request) -> web.Response | None:
        self.requests += 1
        if self.admins.authenticate(request.headers.get("Authorization")) is None:
            return web.json_response({"error": "an admin token is required"}, status=401)
        return None

    async def experiments(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.json_response(self.listing)

    async def analysis(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        report = self.reports.get(request.match_info["id"])
        if report is None:
            return web.json_response({"error": "no such experiment"}, status=404)
        return web.json_response(report)


def dashboard_app(fake: FakeAdmin) -> web.Application:
    app = web.Application()
    add_dashboard_routes(app, refresh_seconds=REFRESH_SECONDS)
    fake.mount(app)
    return app


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve app on 127.0.0.1 from a thread with its own event loop; yields the base URL."""
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def main() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        found["port"] = runner.addresses[0][1]
        found["stop"] = stop = asyncio.Event()
        found["loop"] = asyncio.get_running_loop()
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test thread below
            found["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="dashboard-server", daemon=True)
    thread.start()
    assert ready.wait(WAIT), "the server did not start"
    if "error" in found:
        raise found["error"]
    try:
        yield f"http://127.0.0.1:{found['port']}"
    finally:
        found["loop"].call_soon_threadsafe(found["stop"].set)
        thread.join(WAIT)
        assert not thread.is_alive(), "the server did not stop"
        if "error" in found:
            raise found["error"]


def wait_for(driver: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    # A redraw between finding an element and reading it makes it stale: look again.
    wait = WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(check, f"waiting for {what}")


def status(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "status").get_attribute("data-state"))


def wait_for_state(driver: WebDriver, state: str) -> None:
    wait_for(driver, lambda d: status(d) == state, f"the {state!r} state")


def enter_token(driver: WebDriver, token: str) -> None:
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def cell(driver: WebDriver, variant: str, column: str) -> str:
    """The first line of a cell (its value; details follow on later lines)."""
    selector = f'tr[data-variant="{variant}"] [data-col="{column}"]'
    return str(
        wait_for(
            driver,
            lambda d: d.find_element(By.CSS_SELECTOR, selector).text.splitlines()[0],
            f"the {column} cell of {variant}",
        )
    )


def cell_is(variant: str, column: str, text: str) -> Callable[[WebDriver], bool]:
    def check(driver: WebDriver) -> bool:
        found = driver.find_elements(
            By.CSS_SELECTOR, f'tr[data-variant="{variant}"] [data-col="{column}"]'
        )
        return bool(found) and found[0].text.splitlines()[0] == text

    return check


@pytest.fixture
def fake() -> FakeAdmin:
    return FakeAdmin()


async def test_page_is_static_with_a_strict_content_security_policy(
    fake: FakeAdmin, aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    """The page needs no credential, holds no secret, and its CSP allows only its own code."""
    client = await aiohttp_client(dashboard_app(fake))
    response = await client.get("/dashboard")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    csp = response.headers["Content-Security-Policy"]
    assert csp == Dashboard.load().content_security_policy
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    assert "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script src" not in page
    assert "http://" not in page
    assert "https://" not in page
    assert TOKEN not in page
    assert fake.requests == 0  # serving the page touched no admin data
    assert 'data-refresh-ms="1000"' in page


def test_wrong_token_shows_the_refusal_then_a_right_token_shows_data(
    fake: FakeAdmin, tmp_path: Path
) -> None:
    """No token: the form; a wrong token: the 401 state and the form again; then the data,
    until the token is forgotten."""
    with serving(dashboard_app(fake)) as base, chromium(tmp_path) as driver:
        driver.get(f"{base}/dashboard")
        wait_for_state(driver, "no-token")
        assert driver.find_element(By.ID, "login").is_displayed()
        assert driver.find_elements(By.CSS_SELECTOR, "table") == []
        enter_token(driver, "not-the-admin-token")
        wait_for_state(driver, "unauthorized")
        assert "401" in driver.find_element(By.ID, "status").text
        assert driver.find_element(By.ID, "login").is_displayed()
        assert driver.find_elements(By.CSS_SELECTOR, "table") == []
        assert driver.execute_script("return sessionStorage.length") == 0  # forgotten
        assert_not_blank(driver.get_screenshot_as_png(), min_colours=4, max_background=0.995)
        enter_token(driver, TOKEN)
        wait_for_state(driver, "ok")
        assert not driver.find_element(By.ID, "login").is_displayed()
        assert cell(driver, "base", "units") == "24"
        driver.find_element(By.ID, "forget").click()
        wait_for_state(driver, "no-token")
        assert driver.find_elements(By.CSS_SELECTOR, "table") == []
        assert driver.execute_script("return sessionStorage.length") == 0


def test_live_counts_weights_and_refresh(fake: FakeAdmin, tmp_path: Path) -> None:
    """The table shows weights, counts, rates, latency and WER, and follows the data live."""
    with serving(dashboard_app(fake)) as base, chromium(tmp_path) as driver:
        driver.get(f"{base}/dashboard")
        wait_for_state(driver, "no-token")
        enter_token(driver, TOKEN)
        wait_for(driver, cell_is("custom", "units", "24"), "custom's units")
        assert wait_for(driver, lambda d: status(d) == "ok", "the ok state")
        section = driver.find_element(By.CSS_SELECTOR, 'section[data-experiment="banking-custom"]')
        assert section.get_attribute("data-state") == "data"
        assert "3f9a0c1d2e4b" in section.find_element(By.CSS_SELECTOR, "[data-field=phase]").text
        rows = section.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [r.get_attribute("data-variant") for r in rows] == ["base", "custom"]
        assert cell(driver, "base", "weight") == "50"
        assert cell(driver, "custom", "share") == "50.0%"
        assert cell(driver, "base", "success") == "91.7%"
        assert cell(driver, "base", "final_p50") == "310 ms"
        assert cell(driver, "custom", "wer") == "2.5%"
        assert cell(driver, "custom", "wer_difference") == "-35.5 pp"
        recommendation = section.find_element(By.CSS_SELECTOR, ".recommendation")
        assert recommendation.get_attribute("data-action") == "ship_custom"
        assert "custom lowers WER" in recommendation.text
        assert_not_blank(driver.get_screenshot_as_png())

        # New weights and more traffic: the page follows within a few polling intervals.
        report = two_variant_report()
        report["phases"][0]["variants"][1]["units"] = 31
        fake.reports = {"banking-custom": report}
        fake.listing = experiments_listing((20.0, 80.0))
        wait_for(driver, cell_is("custom", "units", "31"), "the new unit count")
        wait_for(driver, cell_is("custom", "weight", "80"), "the new weight")
        assert cell(driver, "custom", "share") == "80.0%"

        # A hostile variant name is shown as text, never as markup.
        listing = experiments_listing()
        listing["experiments"][0]["variants"][1]["name"] = HOSTILE
        fake.listing = listing
        wait_for(
            driver,
            lambda d: HOSTILE in d.find_element(By.ID, "experiments").text,
            "the hostile name as text",
        )
        assert driver.find_elements(By.CSS_SELECTOR, "#experiments img") == []
        assert driver.title == "speech-gateway · experiments"

        # The token lives in the tab: a reload goes straight to the data.
        driver.refresh()
        wait_for(driver, cell_is("base", "units", "24"), "the data after a reload")
        assert not driver.find_element(By.ID, "login").is_displayed()
        assert [m for m in console_errors(driver) if "Content Security Policy" in m] == []


def test_no_data_yet_and_unreachable_states(fake: FakeAdmin, tmp_path: Path) -> None:
    """An experiment without records says "no data yet"; a stopped gateway says unreachable."""
    fake.reports = {"banking-custom": empty_report()}
    with chromium(tmp_path) as driver:
        with serving(dashboard_app(fake)) as base:
            driver.get(f"{base}/dashboard")
            wait_for_state(driver, "no-token")
            enter_token(driver, TOKEN)
            wait_for_state(driver, "ok")
            section = driver.find_element(By.CSS_SELECTOR, "section[data-experiment]")
            assert section.get_attribute("data-state") == "no-data"
            assert "No data yet" in section.text
            assert cell(driver, "base", "weight") == "50"  # the configuration is still shown
            assert cell(driver, "base", "units") == "–"
            assert_not_blank(driver.get_screenshot_as_png(), max_background=0.995)
        wait_for_state(driver, "unreachable")
        assert "unreachable" in driver.find_element(By.ID, "status").text
        stale = driver.find_element(By.ID, "experiments").get_attribute("class")
        assert stale == "stale"  # the last data stay, marked as old
        assert driver.find_elements(By.CSS_SELECTOR, "section[data-experiment]")


def review_section(variant_name: str = "custom") -> dict[str, Any]:
    """A report's `review` section (docs/analysis.md), its sample and preference parts made
    by the analysis' own types: 10 of 12 uniform captures reviewed, 3 of 5 priority ones."""
    drawn = LabelledSample(
        SampleCounts(12, 10, {"uniform": 10}),
        SampleCounts(5, 3, {"low_confidence": 2, "no_match": 1}),
    )
    rate = PreferenceRate("base", variant_name, 6, 1, 2, 6, 6 / 7, (0.49, 0.97), 0.95)
    return {
        "description": drawn.describe(),
        "sample": drawn.to_dict(),
        "wer": {
            "uniform": [
                {
                    "variant": "base",
                    "wer": 0.4,
                    "ci": [0.182, 0.636],
                    "utterances": 5,
                    "units": 5,
                    "errors": 16,
                    "reference_words": 40,
                },
                {
                    "variant": variant_name,
                    "wer": 0.05,
                    "ci": [0.0, 0.125],
                    "utterances": 5,
                    "units": 5,
                    "errors": 2,
                    "reference_words": 40,
                },
            ],
            "priority": [
                {
                    "variant": "base",
                    "wer": 0.5,
                    "ci": None,
                    "utterances": 3,
                    "units": 1,
                    "errors": 12,
                    "reference_words": 24,
                },
            ],
        },
        "preferences": [{"sample": "uniform", **rate.to_dict()}],
    }


def review_cell(driver: WebDriver, sample: str, variant: str, column: str) -> str:
    selector = (
        f'table[data-table="review"] tr[data-sample="{sample}"][data-variant="{variant}"] '
        f'[data-col="{column}"]'
    )
    return str(wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).text, selector))


def test_reviewed_live_traffic(fake: FakeAdmin, tmp_path: Path) -> None:
    """The report's review section: how the reviewed captures were drawn, WER per variant on
    the uniform and the priority sample apart with their intervals, the blind preference rate
    with its interval; a report without it shows none, and names stay text."""
    report = two_variant_report()
    report["review"] = review_section()
    fake.reports = {"banking-custom": report}
    with serving(dashboard_app(fake)) as base, chromium(tmp_path) as driver:
        driver.get(f"{base}/dashboard")
        wait_for_state(driver, "no-token")
        enter_token(driver, TOKEN)
        description = wait_for(
            driver, lambda d: d.find_element(By.CSS_SELECTOR, "[data-review=description]"), "it"
        )
        assert description.text == (
            "13 reviewed captures: 10 of 12 from the uniform sample (they stand for the "
            "traffic), 3 of 5 priority captures (2 low confidence, 1 no match; they "
            "over-represent hard cases, so rates over them are not traffic rates)."
        )
        assert review_cell(driver, "uniform", "base", "review_wer").splitlines() == [
            "40.0%",
            "18.2% to 63.6%",
        ]
        assert review_cell(driver, "uniform", "custom", "review_wer").splitlines() == [
            "5.0%",
            "0.0% to 12.5%",
        ]
        assert review_cell(driver, "uniform", "base", "sample").splitlines() == [
            "Uniform",
            "10 of 12 reviewed",
        ]
        assert review_cell(driver, "uniform", "custom", "review_utterances").splitlines() == [
            "5",
            "5 units",
        ]
        # The priority sample apart, with why its captures were chosen; no interval to show.
        assert review_cell(driver, "priority", "base", "sample").splitlines() == [
            "Priority",
            "3 of 5 reviewed",
            "2 low confidence, 1 no match",
        ]
        assert review_cell(driver, "priority", "base", "review_wer") == "50.0%"
        assert review_cell(driver, "priority", "base", "review_words") == "12 / 24"
        rows = driver.find_elements(By.CSS_SELECTOR, 'table[data-table="review"] tbody tr')
        assert [
            (r.get_attribute("data-sample"), r.get_attribute("data-variant")) for r in rows
        ] == [
            ("uniform", "base"),
            ("uniform", "custom"),
            ("priority", "base"),
        ]
        preference = driver.find_element(
            By.CSS_SELECTOR, 'table[data-table="preferences"] tr[data-challenger="custom"]'
        )
        assert preference.get_attribute("data-control") == "base"
        assert preference.get_attribute("data-sample") == "uniform"
        cells = [c.text.splitlines() for c in preference.find_elements(By.CSS_SELECTOR, "td")]
        assert cells == [
            ["uniform"],
            ["custom over base"],
            ["85.7%", "95% interval 49.0% to 97.0%"],
            ["7", "6 : 1"],
            ["2"],
            ["6"],
        ]
        # The variants' table above is unchanged by the section.
        assert cell(driver, "custom", "wer") == "2.5%"
        assert_not_blank(driver.get_screenshot_as_png())

        # Nothing reviewed in a sample yet: said so; a hostile name: shown as text.
        section = review_section(HOSTILE)
        section["wer"]["priority"] = []
        changed = two_variant_report()
        changed["review"] = section
        fake.reports = {"banking-custom": changed}
        wait_for(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-sample="priority"] .no-data'),
            "the empty priority sample",
        )
        empty = driver.find_element(By.CSS_SELECTOR, 'tr[data-sample="priority"] .no-data')
        assert empty.text == "no labelled capture yet"
        review = driver.find_element(By.CSS_SELECTOR, 'table[data-table="review"]').text
        assert HOSTILE in review
        assert driver.find_elements(By.CSS_SELECTOR, "#experiments img") == []

        # A report without the section (no captured audio) shows none.
        fake.reports = {"banking-custom": two_variant_report()}
        wait_for(
            driver,
            lambda d: not d.find_elements(By.CSS_SELECTOR, 'table[data-table="review"]'),
            "the section to go",
        )
        assert "Reviewed live traffic" not in driver.find_element(By.ID, "experiments").text
        assert console_errors(driver) == []
