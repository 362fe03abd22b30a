"""The admin read API of a real gateway process: experiments and their live analysis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ALPHA, gateway_for, split_experiment
from support import CLIENT_KEY, read_outcomes, silence

from gateway.control.model import hash_key
from gateway.tools.local_services import LocalEmulator, LocalGateway
from gateway.tools.usp_client import recognize

ADMIN_TOKEN = "admin-token-for-the-analysis-api"
PATH = "/speech/recognition/conversation/cognitiveservices/v1"
REFERENCE = ALPHA  # what variant a says; b says BRAVO


async def run_units(gateway: LocalGateway, units: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for unit in units:
            url = f"{gateway.ws_url}{PATH}?language=en-US&gw-unit={unit}"
            await recognize(
                http, url, silence(0.3), headers={"Ocp-Apim-Subscription-Key": CLIENT_KEY}
            )


async def get(gateway: LocalGateway, path: str, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway.http_url}{path}", headers=headers) as response,
    ):
        return response.status, await response.json()


async def label_all(gateway: LocalGateway, outcomes: Path) -> None:
    body = [{"record_id": r.record_id, "text": REFERENCE} for r in read_outcomes(outcomes)]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gateway.http_url}/labels",
            json={"labels": body},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.fixture
def gateway(alpha: LocalEmulator, bravo: LocalEmulator, tmp_path: Path) -> LocalGateway:
    return gateway_for(
        tmp_path,
        {"alpha": alpha.ws_url, "bravo": bravo.ws_url},
        [split_experiment()],
        admin_tokens_sha256={"analyst": hash_key(ADMIN_TOKEN)},
    )


async def labelled_report(gateway: LocalGateway) -> tuple[int, Any]:
    """The live report once it counts the 40 labelled outcomes (within 60 s)."""
    async with asyncio.timeout(60):
        while True:
            status, report = await get(gateway, "/admin/experiments/ab/analysis")
            variants = [v for phase in report.get("phases", []) for v in phase["variants"]]
            if status != 200 or (
                sum(v["outcomes"] for v in variants) == 40
                and all((v.get("wer") or {}).get("wer") is not None for v in variants)
            ):
                return status, report
            await asyncio.sleep(0.5)


def test_experiments_and_analysis_follow_live_traffic(
    gateway: LocalGateway, tmp_path: Path
) -> None:
    with gateway:
        status, listing = asyncio.run(get(gateway, "/admin/experiments"))
        assert status == 200
        (experiment,) = listing["experiments"]
        assert experiment["id"] == "ab"
        assert [(v["name"], v["share"]) for v in experiment["variants"]] == [
            ("a", 0.5),
            ("b", 0.5),
        ]

        status, empty = asyncio.run(get(gateway, "/admin/experiments/ab/analysis"))
        assert status == 200
        assert empty["phases"] == []

        asyncio.run(run_units(gateway, [f"unit-{n}" for n in range(40)]))
        asyncio.run(label_all(gateway, tmp_path / "outcomes.jsonl"))
        # Once the report cache expires (2 s, or longer if the last report took long to
        # compute: docs/gateway.md), the analysis sees the traffic and the labels.
        status, report = asyncio.run(labelled_report(gateway))
    assert status == 200
    (phase,) = report["phases"]
    assert phase["phase"] == experiment["phase"]
    assert phase["current"] is True
    variants = {v["name"]: v for v in phase["variants"]}
    assert variants["a"]["outcomes"] + variants["b"]["outcomes"] == 40
    assert phase["srm"]["status"] == "ok"
    assert variants["a"]["wer"]["wer"] == 0.0
    # "bravo answers here" against "alpha answers here": one substitution in three words.
    assert variants["b"]["wer"]["wer"] == pytest.approx(1 / 3)
    assert report["phases"][0]["comparisons"][0]["wer"]["difference"] == pytest.approx(1 / 3)
    json.dumps(report, allow_nan=False)


def test_admin_requests_need_a_valid_token_and_valid_input(gateway: LocalGateway) -> None:
    with gateway:
        for token in (None, "wrong-token", CLIENT_KEY):
            status, body = asyncio.run(get(gateway, "/admin/experiments", token))
            assert status == 401
            assert "admin token" in body["error"]
            status, _ = asyncio.run(get(gateway, "/admin/experiments/ab/analysis", token))
            assert status == 401
        status, body = asyncio.run(get(gateway, "/admin/experiments/nope/analysis"))
        assert status == 404
        assert "nope" in body["error"]
        status, body = asyncio.run(get(gateway, "/admin/experiments/ab/analysis?since=yesterday"))
        assert status == 400
        assert "since" in body["error"]
        status, body = asyncio.run(
            get(gateway, "/admin/experiments/ab/analysis?until=2026-01-01T00:00:00")
        )
        assert status == 400
        assert "time zone" in body["error"]
        status, report = asyncio.run(
            get(gateway, "/admin/experiments/ab/analysis?since=2020-01-01T00:00:00Z&phase=x")
        )
        assert status == 200
        assert report["window"]["phase"] == "x"


def test_the_dashboard_shows_the_real_gateway_s_live_analysis(
    gateway: LocalGateway, tmp_path: Path
) -> None:
    """Headless Chromium on the gateway's own /dashboard, fed by the real admin API."""
    from browser import assert_not_blank, chromium
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def cell(driver: Any, variant: str, column: str) -> str:
        """The cell's value, "" while the page is (re)drawing the table."""
        selector = f'tr[data-variant="{variant}"] [data-col="{column}"]'
        try:
            found = driver.find_elements(By.CSS_SELECTOR, selector)
            return str(found[0].text.splitlines()[0]) if found and found[0].text else ""
        except StaleElementReferenceException:  # replaced by a refresh between find and read
            return ""

    with gateway, chromium(tmp_path) as driver:
        asyncio.run(run_units(gateway, [f"unit-{n}" for n in range(20)]))
        asyncio.run(label_all(gateway, tmp_path / "outcomes.jsonl"))
        driver.get(f"{gateway.http_url}/dashboard")
        driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        wait.until(lambda d: cell(d, "a", "wer") == "0.0%", "variant a's WER")
        wait.until(lambda d: cell(d, "b", "wer") == "33.3%", "variant b's WER")
        wait.until(
            lambda d: int(cell(d, "a", "units") or 0) + int(cell(d, "b", "units") or 0) == 20,
            "all 20 sessions",
        )
        wait.until(lambda d: cell(d, "a", "weight") == "50", "the weight")
        # More traffic: the page follows without a reload.
        asyncio.run(run_units(gateway, [f"later-{n}" for n in range(10)]))
        wait.until(
            lambda d: int(cell(d, "a", "units") or 0) + int(cell(d, "b", "units") or 0) == 30,
            "the new sessions",
        )
        assert_not_blank(driver.get_screenshot_as_png())
