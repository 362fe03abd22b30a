"""The main job end to end: `speech-gateway demo` as ./scripts/demo runs it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from browser import assert_not_blank, chromium
from selenium.webdriver.common.by import By
from support import ROOT


def test_the_demo_runs_a_whole_experiment_and_ships_the_custom_model(tmp_path: Path) -> None:
    """Emulator + gateway + replay of the 48 demo utterances + analysis: the custom model
    wins on WER with an always-valid interval that excludes zero, the recommendation and
    the report paths are printed, and everything started is stopped again."""
    workdir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--workdir", str(workdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "labels: 48 of 48 attached" in out
    assert "Recommendation: SHIP CUSTOM" in out
    assert f"HTML report: {workdir / 'report.html'}" in out

    report = json.loads((workdir / "report.json").read_text(encoding="utf-8"))
    (phase,) = report["phases"]
    assert phase["srm"]["status"] == "ok"
    variants = {v["name"]: v for v in phase["variants"]}
    assert variants["base"]["units"] + variants["custom"]["units"] == 48
    assert variants["base"]["labelled_share"] == variants["custom"]["labelled_share"] == 1.0
    wer = phase["comparisons"][0]["wer"]
    assert wer["ci"][1] < 0
    assert wer["always_valid"]["ci"][1] < 0
    assert variants["custom"]["wer"]["wer"] < 0.1 < 0.3 < variants["base"]["wer"]["wer"]
    assert report["recommendation"]["action"] == "ship_custom"

    # The labelling loop: a quarter of the utterances were captured, the scripted reviewer
    # labelled every one in the workbench, and the report says so.
    (reviewed,) = re.findall(r"Scripted reviewer: (\d+) captured utterances reviewed", out)
    review = report["review"]
    assert 0 < int(reviewed) == review["sample"]["uniform"]["reviewed"] < 48
    assert review["sample"]["priority"]["captured"] == 0
    assert sum(e["utterances"] for e in review["wer"]["uniform"]) == int(reviewed)
    assert "Reviewed live traffic" in out

    # The error analysis knows the banking terms (data/lexicon): custom gets some that base
    # misses, and its recall is the higher.
    terms = report["errors"]["terms"]
    (comparison,) = terms["comparisons"]
    gained = [entry["term"] for entry in comparison["gained"]]
    assert gained, terms
    assert comparison["recall"]["difference"] > 0

    # The report opens offline in a browser, with its plots drawn.
    with chromium(tmp_path) as driver:
        driver.get((workdir / "report.html").as_uri())
        for name in ("wer", "latency", "split", "effect"):
            plot = driver.find_element(By.CSS_SELECTOR, f'svg[data-plot="{name}"]')
            assert plot.rect["width"] > 100, name
            assert plot.rect["height"] > 100, name
        # The terms custom recognises and base misses, listed where a reader sees them.
        listed = driver.find_elements(
            By.CSS_SELECTOR, 'ul.terms[data-list="gained"][data-variant="custom"] li[data-term]'
        )
        assert [item.get_attribute("data-term") for item in listed] == gained
        assert all(item.is_displayed() for item in listed)
        assert_not_blank(driver.get_screenshot_as_png())

    # Nothing left running: the gateway's port is closed again.
    (url,) = re.findall(r"through (http://127\.0\.0\.1:\d+) ", out)
    port = int(url.rsplit(":", 1)[1])
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=2),
    ):
        pass
