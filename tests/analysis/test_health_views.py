"""The canary and drift sections in the terminal tables and the HTML report."""

from __future__ import annotations

import copy
import re
from typing import Any

from report_fixtures import two_variant_report

from gateway.analysis.health_views import canary_html, canary_text, drift_html, drift_text
from gateway.analysis.html_report import render_html
from gateway.analysis.text_report import render_text

Json = dict[str, Any]


def canary_section() -> Json:
    def round_(at: str, wer: float | None, failed: int = 0) -> Json:
        return {
            "at": at,
            "phase": "p-3f9a0c1d2e",
            "answers": 3,
            "failed": failed,
            "unknown_items": 0,
            "errors": 0 if wer is None else round(wer * 20),
            "words": 0 if wer is None else 20,
            "wer": wer,
            "latency_ms": None if wer is None else 410.0,
        }

    def variant(name: str, wers: list[float | None]) -> Json:
        rounds = [round_(f"2026-11-21T1{i}:00:00.000Z", w) for i, w in enumerate(wers)]
        return {
            "name": name,
            "backends": ["local"],
            "rounds_total": len(rounds),
            "rounds": rounds,
            "phases": [
                {
                    "phase": "p-3f9a0c1d2e",
                    "rounds": len(rounds),
                    "answers": 3 * len(rounds),
                    "failed": 0,
                    "unknown_items": 0,
                    "errors": 9,
                    "words": 100,
                    "wer": 0.09,
                    "latency_ms": 410.0,
                }
            ],
        }

    return {
        "round_gap_s": 600.0,
        "items": 3,
        "variants": [
            variant("base", [0.3, 0.3, 0.3, 0.3]),
            variant("custom", [0.05, 0.1, None, 0.3]),
        ],
    }


def drift_section() -> Json:
    def estimate(difference: float, low: float, high: float) -> Json:
        return {"difference": difference, "ci": [low, high]}

    return {
        "phase": "p-3f9a0c1d2e",
        "shipped": "custom",
        "holdout": "base",
        "holdout_share": 0.05,
        "window_seconds": 86400,
        "windows": [
            {
                "start": f"2026-11-2{d}T00:00:00.000Z",
                "end": "x",
                "units": {"custom": 900, "base": 50},
            }
            for d in (1, 2, 3)
        ],
        "metrics": [
            {
                "metric": "error_rate",
                "better": "lower",
                "windows": [estimate(-0.03, -0.05, -0.01), estimate(-0.03, -0.05, -0.01), None],
                "verdict": "holding",
                "window": 1,
                "latest": estimate(-0.03, -0.05, -0.01),
                "earlier": estimate(-0.03, -0.04, -0.02),
                "change": estimate(0.0, -0.02, 0.02),
            },
            {
                "metric": "canary_wer",
                "better": "lower",
                "windows": [estimate(-0.2, -0.3, -0.1), estimate(0.0, 0.0, 0.0), None],
                "verdict": "shrunk",
                "window": 1,
                "latest": estimate(0.0, 0.0, 0.0),
                "earlier": estimate(-0.2, -0.3, -0.1),
                "change": estimate(0.2, 0.08, 0.32),
            },
            {
                "metric": "wer",
                "better": "lower",
                "windows": [None, None, None],
                "verdict": "too_little_data",
                "window": None,
                "latest": None,
                "earlier": None,
                "change": None,
            },
        ],
    }


def with_sections() -> Json:
    report = two_variant_report()
    report["canary"] = canary_section()
    report["drift"] = drift_section()
    return report


def test_the_terminal_shows_the_latest_rounds_and_each_verdict() -> None:
    text = render_text(with_sections())
    assert "Canaries (3 items; never part of the evidence): latest rounds" in text
    rounds = [line for line in text.splitlines() if line.startswith("custom   2026-11-21")]
    assert len(rounds) == 3  # the latest three of four
    assert "2026-11-21 10:00:00" not in text  # the oldest one is left out
    assert re.search(r"canary WER\s+SHRUNK\s+2026-11-22 00:00\s+\+0\.0 pp \[\+0\.0, \+0\.0\]", text)
    assert re.search(r"error rate\s+holding", text)
    assert re.search(r"labelled WER\s+too little data", text)
    assert "custom shipped vs base holdout (5.0% of traffic), windows of 1d" in text


def test_the_html_has_a_canary_line_per_variant_and_the_drift_table() -> None:
    html = render_html(with_sections())
    canary = html[html.index('data-section="canary"') :]
    plot = canary[canary.index('data-plot="canary"') :]
    assert plot.count('class="series"') == 2
    # The failed round (no WER) breaks custom's line into two pieces.
    custom = plot[plot.index('data-series="custom"') :]
    assert custom[: custom.index("</g>")].count("<polyline") == 2
    drift = html[html.index('data-section="drift"') :]
    assert '<tr data-metric="canary_wer">' in drift
    assert '<span class="status bad">SHRUNK</span>' in drift
    assert '<span class="status muted">too little data</span>' in drift
    assert 'data-plot="drift"' in drift


def test_absent_or_damaged_sections_render_nothing_or_dashes() -> None:
    plain = two_variant_report()
    assert "Canaries" not in render_text(plain)
    assert 'data-section="canary"' not in render_html(plain)
    for value in (None, [], "x", {"variants": "x"}):
        assert canary_text(value) == []
        assert canary_html(value) == ""
    assert drift_text(None) == []
    assert drift_html(None, "95%") == ""
    damaged = copy.deepcopy(drift_section())
    damaged["metrics"][0]["latest"] = {"difference": "x"}
    damaged["metrics"][0]["window"] = 99
    damaged["windows"] = "x"
    assert "error rate" in "\n".join(drift_text(damaged))
    assert 'data-metric="error_rate"' in drift_html(damaged, "95%")


def test_strings_from_the_report_are_escaped() -> None:
    report = with_sections()
    report["canary"]["variants"][1]["name"] = "<script>x</script>"
    report["drift"]["shipped"] = "<b>"
    html = render_html(report)
    assert "<script>x" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<code>&lt;b&gt;</code>" in html
