"""The review workbench in headless Chromium: a reviewer signs in, hears the item (the WAV
is served as audio/wav and the audio element reports its duration), corrects the
transcript, chooses blind, saves, gets the next item, skips and undoes; the label is stored
with source `review` and the preference with the blind mapping.

The app mounts the real label and review routes on file stores and a LocalAudioStore, and
runs on loopback in a thread of its own (Selenium blocks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser import chromium, console_errors
from review_fixtures import EXPERIMENT, KEY, REVIEWER_TOKENS, ReviewWorld
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from test_dashboard import serving

from gateway.server.admin.review import BlindItem

WAIT = 15.0


def wait_for(driver: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    wait = WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(check, f"waiting for {what}")


def current_item(driver: WebDriver) -> str:
    main = driver.find_element(By.ID, "item")
    return "" if not main.is_displayed() else str(main.get_attribute("data-capture-id"))


def audio_duration(driver: WebDriver) -> float:
    value = driver.execute_script(
        "const a = document.getElementById('audio');"
        "return a.readyState >= 1 && Number.isFinite(a.duration) ? a.duration : 0;"
    )
    return float(value or 0)


def test_a_reviewer_labels_items_from_the_queue(tmp_path: Path) -> None:
    """Sign in, play, correct, choose B, save with Ctrl+Enter, skip, undo: each step does
    what the page says, and the stores hold a review label and the blind preference."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()

    async def setup() -> None:
        for n in range(1, 4):
            await world.add(n, texts=(f"pay my bill {n}", f"pay my bills {n}"))

    asyncio.run(setup())
    first, second, third = world.captures
    with serving(world.app()) as url, chromium(tmp_path) as driver:
        driver.get(f"{url}/review?experiment={EXPERIMENT}")
        driver.find_element(By.ID, "token").send_keys(REVIEWER_TOKENS["rita"])
        driver.find_element(By.ID, "start").click()
        wait_for(driver, lambda d: current_item(d) == first.capture_id, "the first item")
        progress = driver.find_element(By.ID, "progress").text
        assert progress == "0 of 3 reviewed · 3 left · 0 by you"

        # The audio: fetched with the token, played from a blob: URL, a real duration.
        duration = wait_for(driver, audio_duration, "the audio's duration")
        assert abs(duration - 1.0) < 0.05
        assert driver.execute_script("return document.getElementById('audio').src").startswith(
            "blob:"
        )
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ALT, "p")
        wait_for(
            driver,
            lambda d: (
                d.execute_script("return !document.getElementById('audio').paused")
                or d.execute_script("return document.getElementById('audio').ended")
            ),
            "playback to start",
        )

        # Blind: two hypotheses named A and B, no variant names on the page.
        page_text = driver.find_element(By.ID, "item").text
        assert "base" not in page_text
        assert "custom" not in page_text
        blind = BlindItem.of(first, KEY, "rita")
        assert blind.b is not None
        slots = driver.find_elements(By.CSS_SELECTOR, "#hypotheses .hypothesis")
        assert [s.get_attribute("data-slot") for s in slots] == ["a", "b"]
        assert blind.a.text in slots[0].text
        assert blind.b.text in slots[1].text
        reference = driver.find_element(By.ID, "reference")
        assert reference.get_attribute("value") == blind.a.text  # prefilled with A

        # Correct, choose B by keyboard, save by keyboard: the next item comes.
        reference.clear()
        reference.send_keys("pay my phone bill")
        reference.send_keys(Keys.ALT, "2")
        assert driver.find_element(By.ID, "choice-b").is_selected()
        reference.send_keys(Keys.CONTROL, Keys.ENTER)
        wait_for(driver, lambda d: current_item(d) == second.capture_id, "the second item")
        wait_for(
            driver,
            lambda d: (
                d.find_element(By.ID, "progress").text == "1 of 3 reviewed · 2 left · 1 by you"
            ),
            "the progress after a save",
        )

        # Skip: the third item; undo: the first comes back with the saved text and choice.
        driver.find_element(By.ID, "skip").click()
        wait_for(driver, lambda d: current_item(d) == third.capture_id, "the third item")
        driver.find_element(By.ID, "undo").click()
        wait_for(driver, lambda d: current_item(d) == first.capture_id, "the undone item")
        assert driver.find_element(By.ID, "reference").get_attribute("value") == (
            "pay my phone bill"
        )
        assert driver.find_element(By.ID, "choice-b").is_selected()
        driver.find_element(By.ID, "save").click()
        wait_for(driver, lambda d: current_item(d) == third.capture_id, "the next item")
        assert console_errors(driver) == []

    async def stored() -> None:
        label = (await world.label_store().get([first.primary.record_id]))[first.primary.record_id]
        assert label.text == "pay my phone bill"
        assert label.source == "review"
        assert label.labeller == "rita"
        (preference,) = (await world.preference_store().current(EXPERIMENT)).values()
        assert preference.capture_id == first.capture_id
        assert preference.choice == "b"
        assert preference.preferred == blind.b.variant  # type: ignore[union-attr]

    asyncio.run(stored())


def test_a_refused_token_asks_for_another_and_an_empty_queue_says_so(tmp_path: Path) -> None:
    """A wrong token: the page says it was refused (401) and shows the sign-in form again;
    with a right one and nothing to review, it says that nothing is left."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()
    with serving(world.app()) as url, chromium(tmp_path) as driver:
        driver.get(f"{url}/review?experiment={EXPERIMENT}")
        driver.find_element(By.ID, "token").send_keys("not-a-reviewer-token")
        driver.find_element(By.ID, "start").click()
        status = driver.find_element(By.ID, "status")
        wait_for(driver, lambda d: status.get_attribute("data-state") == "error", "a refusal")
        assert "401" in status.text
        assert driver.find_element(By.ID, "login").is_displayed()
        driver.find_element(By.ID, "token").send_keys(REVIEWER_TOKENS["raj"])
        driver.find_element(By.ID, "start").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "empty").is_displayed(), "empty queue")
        assert "Nothing left to review" in status.text


def test_a_lost_lease_gives_the_item_back_with_what_was_typed(tmp_path: Path) -> None:
    """When the lease ran out before the save (409), the page claims again: the same item
    comes back with the typed text and choice, and the second save stores them."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()

    async def setup() -> None:
        for n in (1, 2):
            await world.add(n)

    asyncio.run(setup())
    first, second = world.captures
    with serving(world.app()) as url, chromium(tmp_path) as driver:
        driver.get(f"{url}/review?experiment={EXPERIMENT}")
        driver.find_element(By.ID, "token").send_keys(REVIEWER_TOKENS["rita"])
        driver.find_element(By.ID, "start").click()
        wait_for(driver, lambda d: current_item(d) == first.capture_id, "the first item")
        reference = driver.find_element(By.ID, "reference")
        reference.clear()
        reference.send_keys("pay the gas bill")
        driver.find_element(By.ID, "choice-same").click()
        asyncio.run(world.leases().release(EXPERIMENT, "rita", first.capture_id))
        driver.find_element(By.ID, "save").click()
        status = driver.find_element(By.ID, "status")
        wait_for(driver, lambda d: "yours again" in status.text, "the lease regained")
        assert current_item(driver) == first.capture_id
        assert reference.get_attribute("value") == "pay the gas bill"
        assert driver.find_element(By.ID, "choice-same").is_selected()
        driver.find_element(By.ID, "save").click()
        wait_for(driver, lambda d: current_item(d) == second.capture_id, "the next item")

    async def stored() -> None:
        label = (await world.label_store().get([first.primary.record_id]))[first.primary.record_id]
        assert label.text == "pay the gas bill"
        (preference,) = (await world.preference_store().current(EXPERIMENT)).values()
        assert preference.choice == "same"

    asyncio.run(stored())
