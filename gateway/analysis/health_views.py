"""The report's canary and drift sections as terminal tables and as HTML.

`gateway.analysis.text_report` and `gateway.analysis.html_report` call these for the two
sections (docs/analysis.md, "Canaries" and "Drift after the decision"). They read the report
dict tolerantly (`report_fields`): a report without the sections (older, or with no canary
records and no shipped phase) renders nothing, and every string from the report is escaped
in the HTML.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from gateway.analysis.report_fields import (
    as_epoch,
    as_html,
    as_interval,
    as_list,
    as_map,
    as_number,
    as_text,
)
from gateway.analysis.svg import Line, colour, line_chart
from gateway.analysis.text_tables import text_table

TEXT_ROUNDS: Final = 3  # the latest rounds per variant the terminal shows
METRICS: Final = {
    "error_rate": "error rate",
    "no_match_rate": "no-match rate",
    "confidence": "mean confidence",
    "wer": "labelled WER",
    "canary_wer": "canary WER",
}
VERDICTS: Final = {
    "holding": "holding",
    "shrunk": "SHRUNK",
    "reversed": "REVERSED",
    "too_little_data": "too little data",
}
# verdict -> CSS class of html_report's stylesheet; the class never comes from the report.
_VERDICT_CLASSES: Final = {"holding": "ok", "shrunk": "bad", "reversed": "bad"}
_NONE: Final = "–"


def _pct(value: float | None, none: str = "-") -> str:
    return none if value is None else f"{value * 100:.1f}%"


def _pp(value: float | None, none: str = "-") -> str:
    return none if value is None else f"{value * 100:+.1f} pp"


def _ms(value: float | None, none: str = "-") -> str:
    return none if value is None else f"{value:,.0f} ms"


def _with_ci(entry: object, none: str = "-") -> str:
    found = as_map(entry)
    value = as_number(found.get("difference"))
    if value is None:
        return none
    interval = as_interval(found.get("ci"))
    if interval is None:
        return f"{_pp(value)} (no interval yet)"
    low, high = (
        "-inf" if interval[0] is None else f"{interval[0] * 100:+.1f}",
        "inf" if interval[1] is None else f"{interval[1] * 100:+.1f}",
    )
    return f"{_pp(value)} [{low}, {high}]"


def _when(value: object, pattern: str = "%Y-%m-%d %H:%M") -> str:
    seconds = as_epoch(value)
    if seconds is None:
        return as_text(value) or "-"
    return datetime.fromtimestamp(seconds, UTC).strftime(pattern)


def _window_length(seconds: float | None) -> str:
    if seconds is None or seconds <= 0:
        return "?"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# -- text ------------------------------------------------------------------------------------


def canary_text(section: object) -> list[str]:
    """The latest canary rounds per variant, then each variant's canary WER per phase."""
    canary = as_map(section)
    variants = [as_map(v) for v in as_list(canary.get("variants"))]
    if not variants:
        return []
    items = as_number(canary.get("items"))
    lines = [f"Canaries ({items or 0:.0f} items; never part of the evidence): latest rounds"]
    rows = []
    for variant in variants:
        for found in as_list(variant.get("rounds"))[-TEXT_ROUNDS:]:
            entry = as_map(found)
            rows.append(
                [
                    as_text(variant.get("name")),
                    _when(entry.get("at"), "%Y-%m-%d %H:%M:%S"),
                    as_text(entry.get("phase")),
                    f"{as_number(entry.get('answers')) or 0:.0f}",
                    f"{as_number(entry.get('failed')) or 0:.0f}",
                    _pct(as_number(entry.get("wer"))),
                    _ms(as_number(entry.get("latency_ms"))),
                ]
            )
    lines += text_table(
        ["variant", "round (UTC)", "phase", "answers", "failed", "WER", "median latency"], rows
    )
    rows = []
    for variant in variants:
        for found in as_list(variant.get("phases")):
            entry = as_map(found)
            rows.append(
                [
                    as_text(variant.get("name")),
                    as_text(entry.get("phase")),
                    f"{as_number(entry.get('rounds')) or 0:.0f}",
                    f"{as_number(entry.get('failed')) or 0:.0f}",
                    _pct(as_number(entry.get("wer"))),
                    _ms(as_number(entry.get("latency_ms"))),
                ]
            )
    lines += [
        "",
        *text_table(["variant", "phase", "rounds", "failed", "canary WER", "latency"], rows),
    ]
    return lines


def drift_text(section: object) -> list[str]:
    """Each metric's verdict on the shipped variant against the holdout."""
    drift = as_map(section)
    if not drift:
        return []
    share = as_number(drift.get("holdout_share"))
    lines = [
        f"Drift after the decision (phase {as_text(drift.get('phase'))}): "
        f"{as_text(drift.get('shipped'))} shipped vs {as_text(drift.get('holdout'))} holdout "
        f"({_pct(share)} of traffic), windows of "
        f"{_window_length(as_number(drift.get('window_seconds')))}; "
        "differences shipped - holdout, always-valid intervals"
    ]
    windows = [as_map(w) for w in as_list(drift.get("windows"))]
    rows = []
    for found in as_list(drift.get("metrics")):
        metric = as_map(found)
        index = as_number(metric.get("window"))
        judged = windows[int(index)] if index is not None and 0 <= index < len(windows) else {}
        verdict = as_text(metric.get("verdict"))
        rows.append(
            [
                METRICS.get(as_text(metric.get("metric")), as_text(metric.get("metric"))),
                VERDICTS.get(verdict, verdict),
                _when(judged.get("start")) if judged else "-",
                _with_ci(metric.get("latest")),
                _with_ci(metric.get("earlier")),
                _with_ci(metric.get("change")),
            ]
        )
    if not rows:
        return [*lines, "No outcomes in this phase yet."]
    return lines + text_table(
        ["metric", "verdict", "window from (UTC)", "window", "earlier", "change"], rows
    )


# -- HTML ------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return f"<td>{as_html(text)}</td>"


def _html_table(caption: str, header: Sequence[str], rows: Sequence[str], kind: str) -> str:
    head = "".join(f"<th>{as_html(h)}</th>" for h in header)
    return (
        f'<div class="table-wrap"><table data-table="{kind}"><caption>{as_html(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def canary_html(section: object) -> str:
    """Canary WER per variant and phase, and a line per variant of canary WER over time."""
    canary = as_map(section)
    variants = [as_map(v) for v in as_list(canary.get("variants"))]
    if not variants:
        return ""
    rows = []
    lines = []
    for slot, variant in enumerate(variants):
        name = as_text(variant.get("name"))
        for found in as_list(variant.get("phases")):
            entry = as_map(found)
            rounds = as_number(entry.get("rounds")) or 0
            failed = as_number(entry.get("failed")) or 0
            rows.append(
                "<tr>"
                f'<td><svg class="swatch" width="10" height="10" aria-hidden="true">'
                f'<rect width="10" height="10" fill="{colour(slot)}"/></svg>{as_html(name)}</td>'
                f"{_cell(as_text(entry.get('phase')))}"
                f"{_cell(f'{rounds:.0f}')}{_cell(f'{failed:.0f}')}"
                f"{_cell(_pct(as_number(entry.get('wer')), _NONE))}"
                f"{_cell(_ms(as_number(entry.get('latency_ms')), _NONE))}</tr>"
            )
        points: list[tuple[float, float] | None] = []
        for found in as_list(variant.get("rounds")):
            entry = as_map(found)
            at, wer = as_epoch(entry.get("at")), as_number(entry.get("wer"))
            # A round without an answer breaks the line: the gap is the failure.
            points.append(None if at is None or wer is None else (at, wer * 100))
        if any(p is not None for p in points):
            lines.append(Line(name, points, slot=slot))
    items = as_number(canary.get("items"))
    parts = [
        '<section class="phase" data-section="canary">',
        "<h2>Canaries</h2>",
        f'<p class="meta">The experiment\'s canary set ({items or 0:.0f} items), sent by the '
        "gateway to every variant on a schedule; never part of the evidence above.</p>",
        _html_table(
            "Canary WER per variant and phase",
            ["Variant", "Phase", "Rounds", "Failed answers", "Canary WER", "Median latency"],
            rows,
            "canary",
        ),
    ]
    if lines:
        plot = line_chart(
            "canary",
            "Canary WER per round, per variant",
            lines,
            x_label="time (UTC)",
            y_label="canary WER (%)",
            y_format=lambda v: f"{v:g}",
            time_axis=True,
            markers=True,
            from_zero=True,
        )
        parts.append(
            '<figure data-figure="canary"><figcaption>Canary WER over time</figcaption>'
            f"{plot}</figure>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def drift_html(section: object, level: str) -> str:
    """The verdict per metric, and each metric's per-window difference with its band."""
    drift = as_map(section)
    if not drift:
        return ""
    windows = [as_map(w) for w in as_list(drift.get("windows"))]
    length = as_number(drift.get("window_seconds")) or 86400.0
    rows = []
    lines = []
    for slot, found in enumerate(as_list(drift.get("metrics"))):
        metric = as_map(found)
        key = as_text(metric.get("metric"))
        verdict = as_text(metric.get("verdict"))
        css = _VERDICT_CLASSES.get(verdict, "muted")
        index = as_number(metric.get("window"))
        judged = windows[int(index)] if index is not None and 0 <= index < len(windows) else {}
        rows.append(
            f'<tr data-metric="{as_html(key)}">{_cell(METRICS.get(key, key))}'
            f'<td><span class="status {css}">{as_html(VERDICTS.get(verdict, verdict))}</span></td>'
            f"{_cell(_when(judged.get('start')) if judged else _NONE)}"
            f"{_cell(_with_ci(metric.get('latest'), _NONE))}"
            f"{_cell(_with_ci(metric.get('earlier'), _NONE))}"
            f"{_cell(_with_ci(metric.get('change'), _NONE))}</tr>"
        )
        points: list[tuple[float, float] | None] = []
        band: list[tuple[float, float, float] | None] = []
        for window, estimate in zip(windows, as_list(metric.get("windows")), strict=False):
            start = as_epoch(window.get("start"))
            value = as_number(as_map(estimate).get("difference"))
            if start is None or value is None:
                points.append(None)
                band.append(None)
                continue
            middle = start + length / 2
            points.append((middle, value * 100))
            ci = as_interval(as_map(estimate).get("ci"))
            if ci is None:
                band.append(None)
            else:
                low = -math.inf if ci[0] is None else ci[0] * 100
                high = math.inf if ci[1] is None else ci[1] * 100
                band.append((middle, low, high))
        if any(p is not None for p in points):
            lines.append(Line(METRICS.get(key, key), points, band, slot=slot))
    share = as_number(drift.get("holdout_share"))
    shipped, holdout = as_text(drift.get("shipped")), as_text(drift.get("holdout"))
    parts = [
        f'<section class="phase" data-section="drift" data-phase="{as_html(drift.get("phase"))}">',
        "<h2>Drift after the decision</h2>",
        f'<p class="meta"><code>{as_html(shipped)}</code> shipped against the holdout on '
        f"<code>{as_html(holdout)}</code> ({as_html(_pct(share, _NONE))} of traffic) in phase "
        f"<code>{as_html(drift.get('phase'))}</code>, in windows of "
        f"{as_html(_window_length(length))}. Differences are shipped − holdout with "
        f"always-valid {as_html(level)} intervals; each verdict judges the latest window with "
        "enough data against all earlier ones.</p>",
    ]
    if rows:
        parts.append(
            _html_table(
                "Shipped vs holdout",
                ["Metric", "Verdict", "Window from (UTC)", "Window", "Earlier", "Change"],
                rows,
                "drift",
            )
        )
    else:
        parts.append('<p class="no-data">No outcomes in this phase yet.</p>')
    if lines and windows:
        first = as_epoch(windows[0].get("start"))
        last = as_epoch(windows[-1].get("start"))
        plot = line_chart(
            "drift",
            "Shipped minus holdout per window, with always-valid bands",
            lines,
            x_label="time (UTC)",
            y_label="difference (pp)",
            y_format=lambda v: f"{v:+g}" if v else "0",
            time_axis=True,
            x_domain=None if first is None or last is None else (first, last + length),
            markers=True,
            zero_line=True,
        )
        # The bands are named in the caption: a band label would collide with the legend of
        # up to five metrics.
        parts.append(
            '<figure data-figure="drift"><figcaption>Shipped minus holdout per window '
            f"(bands: always-valid {as_html(level)} intervals)</figcaption>{plot}</figure>"
        )
    parts.append("</section>")
    return "\n".join(parts)
