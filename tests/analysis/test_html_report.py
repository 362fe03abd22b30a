"""The HTML analysis report: a complete offline document whose plots match the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from browser import assert_not_blank, chromium, console_errors, decode_png
from report_fixtures import empty_report, three_variant_report, two_variant_report
from selenium.webdriver.common.by import By
from traffic import INFO, Traffic

from gateway.analysis import svg
from gateway.analysis.html_report import render_html
from gateway.analysis.report import build_report

HOSTILE = '<script>alert("x")</script>'
HOSTILE_VARIANT = 'cust"><img src=x onerror=alert(1)>'
VOID = {"meta", "link", "br", "img", "input", "hr", "wbr", "col", "source", "area", "base"}


@dataclass
class Plot:
    kind: str
    metric: str | None
    title: str = ""
    series: list[str] = field(default_factory=list)
    bars: int = 0
    bands: int = 0
    zero_lines: int = 0


class Document(HTMLParser):
    """The report's structure: checks tags nest properly and collects the plots."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.plots: list[Plot] = []
        self.urls: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._in_title = False
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1:] == [tag], f"</{tag}> closes {self.stack[-3:]}"
        self.stack.pop()
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and self.plots and self.stack[-2:] == ["svg", "title"]:
            self.plots[-1].title += data

    def _element(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tags.append((tag, attrs))
        for name in ("src", "href", "xlink:href", "action", "data"):
            if attrs.get(name):
                self.urls.append(str(attrs[name]))
        if tag == "svg" and attrs.get("data-plot"):
            self.plots.append(Plot(str(attrs["data-plot"]), attrs.get("data-metric")))
        elif not self.plots or "svg" not in self.stack:
            return
        plot = self.plots[-1]
        if tag == "title":
            self._in_title = True
        if tag == "g" and attrs.get("class") == "series":
            plot.series.append(str(attrs["data-series"]))
        plot.bars += tag == "rect" and attrs.get("class") == "bar"
        plot.bands += tag == "polygon" and attrs.get("class") == "band"
        plot.zero_lines += tag == "line" and attrs.get("class") == "zero"

    def kinds(self, kind: str) -> list[Plot]:
        return [p for p in self.plots if p.kind == kind]

    def with_attr(self, name: str, value: str | None = None) -> list[dict[str, str | None]]:
        return [a for _, a in self.tags if name in a and (value is None or a[name] == value)]


def phase_of(report: dict[str, Any]) -> dict[str, Any]:
    phase: dict[str, Any] = report["phases"][0]
    return phase


def test_document_is_complete_and_has_no_external_resources() -> None:
    """One HTML document with inline CSS only: no script, no URL to fetch, nothing remote."""
    text = render_html(three_variant_report())
    assert text.startswith("<!DOCTYPE html>")
    assert text.rstrip().endswith("</html>")
    document = Document(text)
    assert document.urls == []
    assert "http://" not in text
    assert "https://" not in text
    assert "<script" not in text.lower()
    assert "url(" not in text
    assert "@import" not in text
    assert [tag for tag, _ in document.tags].count("style") == 1


def test_two_variant_report_has_every_plot_with_one_series_per_variant() -> None:
    """WER bars, two latency histograms, the split and the effect, each with its series."""
    document = Document(render_html(two_variant_report()))
    (wer,) = document.kinds("wer")
    assert wer.series == ["base", "custom"]
    assert wer.bars == 2
    latency = document.kinds("latency")
    assert [p.metric for p in latency] == ["final_latency_ms", "first_hypothesis_ms"]
    assert all(p.series == ["base", "custom"] for p in latency)
    (split,) = document.kinds("split")
    assert split.series == ["base", "custom"]
    (effect,) = document.kinds("effect")
    assert effect.series == ["custom"]
    assert effect.bands == 1
    assert effect.zero_lines == 1
    assert all(plot.title for plot in document.plots)


def test_plots_have_axis_labels_and_titles() -> None:
    """Each plot has a <title> and labelled axes, so it reads on its own and to a screen reader."""
    text = render_html(two_variant_report())
    document = Document(text)
    assert {p.kind for p in document.plots} == {"wer", "latency", "split", "effect"}
    assert text.count('class="axis-label"') == 2 * len(document.plots)
    for label in ("WER (%)", "share of values (%)", "units per minute", "WER difference (pp)"):
        assert f">{label}</text>" in text


def test_report_content_tables_and_recommendation() -> None:
    """Header, recommendation, per-variant figures and the comparison are all in the page."""
    text = render_html(two_variant_report())
    document = Document(text)
    assert "banking-custom" in text
    (recommendation,) = document.with_attr("data-action")
    assert recommendation["data-action"] == "ship_custom"
    assert recommendation["class"] == "recommendation ship"
    assert "custom lowers WER by 35.5 points" in text
    assert "91.7%" in text
    assert "22/24" in text
    assert "38.0%" in text
    assert "30.0%–46.0%" in text
    assert "310 ms" in text
    assert "290–330" in text
    assert "-35.5 pp" in text
    assert "-52.0 pp to -19.0 pp" in text
    assert document.with_attr("data-srm", "ok")
    assert len(document.with_attr("data-guardrail")) == 3


def test_three_variant_report_puts_the_current_phase_first_and_handles_nulls() -> None:
    """Current phase open and first, earlier collapsed; missing WER and bounds are said so."""
    text = render_html(three_variant_report())
    document = Document(text)
    phases = document.with_attr("data-phase")
    assert [p["data-phase"] for p in phases] == ["77aa00bb11cc", "11aa22bb33cc"]
    tags = {str(a["data-phase"]): tag for tag, a in document.tags if "data-phase" in a}
    assert tags == {"77aa00bb11cc": "section", "11aa22bb33cc": "details"}
    assert "open" not in phases[1]
    mismatch = document.with_attr("data-srm", "mismatch")
    assert len(mismatch) == 1
    assert mismatch[0]["role"] == "alert"
    current = [p for p in document.plots][:5]  # the current phase's plots come first
    assert current[0].kind == "wer"
    assert current[0].series == ["base", "custom"]
    assert current[1].series == ["base", "custom", "custom-v2"]
    assert current[3].kind == "split"
    assert current[3].series == ["base", "custom", "custom-v2"]
    assert current[4].kind == "effect"
    assert current[4].series == ["custom"]
    assert "not labelled" in text
    assert "too few labels" in text
    assert "−∞ to +25.0 pp" in text  # an unbounded always-valid side
    assert "WER on identical audio (shadow)" in text
    assert "18 pairs" in text
    assert "insufficient" in text
    assert document.with_attr("data-action", "keep_collecting")


def test_empty_report_says_there_is_no_data() -> None:
    """With no records yet the page still renders: a note instead of phases and plots."""
    text = render_html(empty_report())
    document = Document(text)
    assert document.plots == []
    assert "No outcome records in this window yet." in text
    assert "since 2026-11-21 00:00:00 UTC" in text


def test_missing_parts_become_no_data_notes() -> None:
    """A phase without labels, histograms or timeline gets a note in place of each plot."""
    report = two_variant_report()
    phase = phase_of(report)
    for variant in phase["variants"]:
        variant["wer"] = None
        variant["latency"]["final_latency_ms"]["histogram"] = None
        variant["latency"]["first_hypothesis_ms"] = None
    phase["comparisons"] = []
    phase["timeline"] = None
    phase["srm"] = {"status": "unchecked", "p_value": None, "chi2": None, "note": "old phase"}
    report["recommendation"] = None
    text = render_html(report)
    document = Document(text)
    assert document.plots == []
    missing = [a["data-no-plot"] for a in document.with_attr("data-no-plot")]
    assert missing == ["wer", "latency", "latency", "split", "effect"]
    assert "Sample ratio: not checked." in text
    assert "old phase" in text
    assert "No recommendation" in text


def test_malformed_parts_do_not_break_the_page() -> None:
    """Wrong types where objects or numbers belong degrade to dashes, not exceptions."""
    report = two_variant_report()
    phase = phase_of(report)
    phase["variants"][0]["rates"] = "oops"
    phase["variants"][1]["units"] = "many"
    phase["variants"][1]["latency"]["final_latency_ms"]["histogram"]["counts"] = [1, 2]
    phase["timeline"]["buckets"][0]["start"] = "not a time"
    phase["comparisons"][0]["wer"]["ci"] = [None, None]
    report["settings"] = None
    report["schema_version"] = 2
    document = Document(render_html(report))
    assert document.kinds("latency")[0].series == ["base"]  # custom's histogram is unusable
    assert len(document.with_attr("class", "warning")) == 1  # the unknown schema version


@pytest.mark.parametrize(
    ("action", "css"),
    [
        ("ship_custom", "ship"),
        ("ramp_up", "ramp"),
        ("keep_collecting", "collect"),
        ("keep_base", "base"),
        ("roll_back", "rollback"),
        ('evil" onclick="x', "collect"),
    ],
)
def test_recommendation_is_coloured_by_its_action(action: str, css: str) -> None:
    """Each action has its own style; an unknown action gets the neutral one, escaped."""
    report = two_variant_report()
    report["recommendation"]["action"] = action
    (found,) = Document(render_html(report)).with_attr("data-action")
    assert found["class"] == f"recommendation {css}"
    assert found["data-action"] == action


def test_names_and_reasons_from_users_are_escaped() -> None:
    """Hostile experiment, variant and reason strings show as text and never as markup."""
    report = two_variant_report()
    report["experiment"] = HOSTILE
    report["control"] = HOSTILE
    report["recommendation"].update(variant=HOSTILE_VARIANT, reason=HOSTILE, phase=HOSTILE)
    phase = phase_of(report)
    phase["phase"] = HOSTILE
    phase["variants"][1]["name"] = HOSTILE_VARIANT
    phase["variants"][1]["backends"] = [HOSTILE]
    phase["comparisons"][0]["variant"] = HOSTILE_VARIANT
    phase["comparisons"][0]["guardrails"][0].update(metric=HOSTILE, detail=HOSTILE)
    phase["srm"]["units"] = {HOSTILE_VARIANT: 24}
    for bucket in phase["timeline"]["buckets"]:
        for key in ("units", "cumulative"):
            bucket[key] = {HOSTILE_VARIANT: bucket[key]["custom"], **bucket[key]}
            del bucket[key]["custom"]
    text = render_html(report)
    document = Document(text)
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    assert [tag for tag, _ in document.tags if tag in {"script", "img"}] == []
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert document.kinds("wer")[0].series == ["base", HOSTILE_VARIANT]
    assert document.kinds("effect")[0].series == [HOSTILE_VARIANT]
    assert HOSTILE in document.kinds("effect")[0].title  # the control's name, as text


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    """Axis ticks are round multiples that include both ends of the data."""
    assert svg.nice_ticks(0, 46) == [0, 10, 20, 30, 40, 50]
    assert svg.nice_ticks(-52, 0) == [-60, -40, -20, 0]
    assert svg.nice_ticks(0.1, 0.3) == [0.1, 0.15, 0.2, 0.25, 0.3]
    assert svg.nice_ticks(5, 5)[0] < 5 < svg.nice_ticks(5, 5)[-1]


def test_unbounded_bands_are_drawn_to_the_frame() -> None:
    """An interval with an infinite side is clamped to the plot's edge, never NaN or inf."""
    line = svg.Line("custom", [(0, -5), (60, -6)], [(0, -math.inf, 1), (60, -9, math.inf)])
    text = svg.line_chart(
        "effect", "t", [line], x_label="x", y_label="y", y_format=str, zero_line=True
    )
    assert "inf" not in text
    assert "nan" not in text
    assert 'data-plot="effect"' in text


def test_report_opens_in_headless_chromium_with_its_plots(tmp_path: Path) -> None:
    """Chromium renders every plot with a size, in the series colours, and nothing is blank."""
    path = tmp_path / "report.html"
    path.write_text(render_html(three_variant_report()), encoding="utf-8")
    with chromium(tmp_path) as driver:
        driver.get(path.as_uri())
        current = driver.find_element(By.CSS_SELECTOR, "section.phase")
        plots = current.find_elements(By.CSS_SELECTOR, "svg[data-plot]")
        kinds = [p.get_attribute("data-plot") for p in plots]
        assert kinds == ["wer", "latency", "latency", "split", "effect"]
        for plot in plots:
            assert (plot.rect["width"] > 300, plot.rect["height"] > 200) == (True, True)
            shot = plot.screenshot_as_png
            assert_not_blank(shot, max_background=0.995)
            # The first series is base (blue), except in the effect plot: custom (orange).
            hex_colour = svg.PALETTE[plot.get_attribute("data-plot") == "effect"]
            rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
            pixels = decode_png(shot)[:, :, :3].reshape(-1, 3)
            assert (pixels == rgb).all(axis=1).sum() > 100, f"no {hex_colour} in the plot"
        earlier = driver.find_element(By.CSS_SELECTOR, "details.phase")
        hidden = earlier.find_element(By.CSS_SELECTOR, "svg[data-plot='wer']")
        assert not hidden.is_displayed()  # collapsed until opened
        earlier.find_element(By.TAG_NAME, "summary").click()
        assert hidden.is_displayed()
        assert hidden.rect["height"] > 200
        driver.execute_script("window.scrollTo(0, 0)")
        assert_not_blank(driver.get_screenshot_as_png())
        assert console_errors(driver) == []


def test_the_recommendation_shows_its_evidence_correction_and_plan() -> None:
    made = Traffic(seed=7)
    for i in range(60):  # the same WER in both arms: nothing to decide yet, a plan to make
        made.utterance("base", 60 * i, word_error=0.2, unit=f"b{i}")
        made.utterance("custom", 60 * i + 30, word_error=0.2, unit=f"c{i}")
    report = build_report("e", made.records, made.labels, info=INFO)
    page = render_html(report)
    assert "Several challengers: Holm over 1 always-valid WER test(s) at alpha 0.05" in page
    assert '<pre class="plan">Plan for custom (unpaired evidence)' in page
    assert "Decided on" not in page  # still collecting: WER decided nothing yet
    shipped = Traffic(seed=2)
    shipped.ab(60, base_error=0.35, custom_error=0.03)
    page = render_html(build_report("e", shipped.records, shipped.labels, info=INFO))
    assert "Decided on unpaired WER evidence." in page
    assert '<pre class="plan">' not in page
