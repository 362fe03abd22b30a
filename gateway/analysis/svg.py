"""Small inline-SVG charts for the HTML report: bars with whiskers, and lines with bands.

There is no plotting library on purpose: the report must be one file that opens offline, so
each function returns one `<svg>` element as text, to be inlined by
`gateway.analysis.html_report`. Every chart has a `<title>`, axis labels, a legend when it
has several series, a stable `data-plot` attribute, and one `data-series` group per series.
Every string that reaches the markup is escaped here; callers pass plain text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

WIDTH: Final = 640
HEIGHT: Final = 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 24, 16, 48
_LEGEND_ROW: Final = 18
_FONT: Final = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif"
_AXIS: Final = "#555555"
_GRID: Final = "#e3e3e3"

# Okabe–Ito: distinguishable with the common colour-vision deficiencies and in greyscale
# print when combined with the dash patterns that take over once the colours run out.
PALETTE: Final = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
_DASHES: Final = ("", "6 3", "2 3")

Format = Callable[[float], str]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Bar:
    """One category: a value with an optional interval, coloured by its palette slot."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    slot: int = 0  # palette slot, so that a variant keeps its colour across charts


@dataclass(frozen=True, slots=True)
class Line:
    """One series of (x, y) points; None breaks the line. `band` is (x, low, high), or None."""

    label: str
    points: Sequence[tuple[float, float] | None]
    band: Sequence[tuple[float, float, float] | None] = ()
    slot: int = 0
    legend: str = ""  # the legend's text when it should say more than the label


def colour(slot: int) -> str:
    return PALETTE[slot % len(PALETTE)]


def _dash(slot: int) -> str:
    dash = _DASHES[(slot // len(PALETTE)) % len(_DASHES)]
    return f' stroke-dasharray="{dash}"' if dash else ""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _n(value: float) -> str:
    """A coordinate: short, and never in exponent notation."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class _Scale:
    lo: float
    hi: float
    start: float  # pixel of lo
    end: float  # pixel of hi

    def __call__(self, value: float) -> float:
        value = min(max(value, self.lo), self.hi)  # clamp: unbounded intervals end at the frame
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: the first <= lo, the last >= hi."""
    if not hi > lo:
        pad = max(abs(lo) * 0.1, 1.0)
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    # Multiples of the step, not repeated additions, so that 0.30000000000000004 never appears.
    return [round(i * step, 12) for i in range(first, last + 1)]


_TIME_STEPS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800)
_TIME_STEPS_LONG: Final = (21600, 43200, 86400, 172800, 604800)


def time_ticks(lo: float, hi: float, count: int = 6) -> list[tuple[float, str]]:
    """Ticks at round UTC clock times between two POSIX times, labelled for their spacing."""
    if not hi > lo:
        lo, hi = lo - 30, hi + 30
    raw = (hi - lo) / count
    step = next((s for s in (*_TIME_STEPS, *_TIME_STEPS_LONG) if s >= raw), _TIME_STEPS_LONG[-1])
    if step >= 86400:
        pattern = "%m-%d"
    elif step >= 60:
        pattern = "%H:%M" if hi - lo < 86400 else "%m-%d %H:%M"
    else:
        pattern = "%H:%M:%S"
    first = math.ceil(lo / step) * step
    ticks: list[tuple[float, str]] = []
    for i in range(int((hi - first) // step) + 1):
        value = first + i * step
        ticks.append((value, datetime.fromtimestamp(value, UTC).strftime(pattern)))
    return ticks


def _svg_open(kind: str, title: str, height: int, description: str, metric: str = "") -> str:
    extra = f' data-metric="{_e(metric)}"' if metric else ""
    return (
        f'<svg class="plot" data-plot="{_e(kind)}"{extra} viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" font-family="{_e(_FONT)}" font-size="12">'
        f"<title>{_e(title)}</title><desc>{_e(description)}</desc>"
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>'
    )


def _legend(entries: Sequence[tuple[str, int]], top: int) -> tuple[list[str], int]:
    """Legend items left to right, wrapping; returns the markup and the height it takes."""
    parts: list[str] = []
    x, y = _LEFT, top + 12
    for label, slot in entries:
        width = 26 + 7 * len(label) + 16  # a rough text width keeps this free of font metrics
        if x + width > WIDTH - _RIGHT and x > _LEFT:
            x, y = _LEFT, y + _LEGEND_ROW
        parts.append(
            f'<g class="legend-item"><line x1="{x}" y1="{y - 4}" x2="{x + 20}" y2="{y - 4}" '
            f'stroke="{colour(slot)}" stroke-width="3"{_dash(slot)}/>'
            f'<text x="{x + 26}" y="{y}">{_e(label)}</text></g>'
        )
        x += width
    return parts, (y - top) + 8 if entries else 0


def _axes(
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    x: _Scale | None,
    y: _Scale,
    x_label: str,
    y_label: str,
    height: int,
) -> list[str]:
    left, right = _LEFT, WIDTH - _RIGHT
    bottom = y.start
    parts = []
    for value, text in y_ticks:
        py = _n(y(value))
        parts.append(
            f'<line x1="{left}" y1="{py}" x2="{right}" y2="{py}" stroke="{_GRID}"/>'
            f'<text x="{left - 6}" y="{py}" dy="0.32em" text-anchor="end" fill="{_AXIS}">'
            f"{_e(text)}</text>"
        )
    if x is not None:
        for value, text in x_ticks:
            px = x(value)
            # A label centred on the last tick would be cut off by the edge of the image.
            anchor = "end" if px > right - 3 * len(text) else "middle"
            parts.append(
                f'<line x1="{_n(px)}" y1="{_n(bottom)}" x2="{_n(px)}" y2="{_n(bottom + 5)}" '
                f'stroke="{_AXIS}"/><text x="{_n(px)}" y="{_n(bottom + 18)}" '
                f'text-anchor="{anchor}" fill="{_AXIS}">{_e(text)}</text>'
            )
    middle = (y.start + y.end) / 2
    parts.append(
        f'<line class="axis" x1="{left}" y1="{_n(bottom)}" x2="{right}" y2="{_n(bottom)}" '
        f'stroke="{_AXIS}"/><line class="axis" x1="{left}" y1="{_n(y.end)}" x2="{left}" '
        f'y2="{_n(bottom)}" stroke="{_AXIS}"/>'
        f'<text class="axis-label" x="{(left + right) / 2}" y="{height - 8}" '
        f'text-anchor="middle">{_e(x_label)}</text>'
        f'<text class="axis-label" transform="translate(14 {_n(middle)}) rotate(-90)" '
        f'text-anchor="middle">{_e(y_label)}</text>'
    )
    return parts


def bar_chart(
    kind: str,
    title: str,
    bars: Sequence[Bar],
    *,
    x_label: str,
    y_label: str,
    y_format: Format,
) -> str:
    """Bars from zero with interval whiskers, one per category (e.g. WER per variant)."""
    values = [v for b in bars for v in (b.value, b.low, b.high) if v is not None]
    finite = [v for v in values if math.isfinite(v)]
    ticks = nice_ticks(min(0.0, *finite), max(0.0, *finite)) if finite else [0.0, 1.0]
    height = HEIGHT
    y = _Scale(ticks[0], ticks[-1], height - _BOTTOM, _TOP)
    parts = [_svg_open(kind, title, height, f"{len(bars)} bars with intervals: {y_label}")]
    parts += _axes((), [(t, y_format(t)) for t in ticks], None, y, x_label, y_label, height)
    slot_width = (WIDTH - _LEFT - _RIGHT) / max(len(bars), 1)
    bar_width = min(72.0, slot_width * 0.6)
    zero = y(0.0)
    for i, bar in enumerate(bars):
        centre = _LEFT + slot_width * (i + 0.5)
        top = y(bar.value)
        fill = colour(bar.slot)
        summary = f"{bar.label}: {y_format(bar.value)}"
        group = [
            f'<g class="series" data-series="{_e(bar.label)}"><title>{_e(summary)}</title>'
            f'<rect class="bar" x="{_n(centre - bar_width / 2)}" y="{_n(min(top, zero))}" '
            f'width="{_n(bar_width)}" height="{_n(max(abs(zero - top), 1.0))}" '
            f'fill="{fill}"/>'
        ]
        if bar.low is not None and bar.high is not None:
            lo, hi = _n(y(bar.low)), _n(y(bar.high))
            c, w = _n(centre), bar_width / 4
            group.append(
                f'<g class="whisker" stroke="#222222" stroke-width="1.5">'
                f'<line x1="{c}" y1="{lo}" x2="{c}" y2="{hi}"/>'
                f'<line x1="{_n(centre - w)}" y1="{lo}" x2="{_n(centre + w)}" y2="{lo}"/>'
                f'<line x1="{_n(centre - w)}" y1="{hi}" x2="{_n(centre + w)}" y2="{hi}"/></g>'
            )
        group.append(
            f'<text x="{_n(centre)}" y="{height - _BOTTOM + 18}" text-anchor="middle">'
            f"{_e(bar.label)}</text></g>"
        )
        parts += group
    parts.append("</svg>")
    return "".join(parts)


def step_points(edges: Sequence[float], values: Sequence[float]) -> list[tuple[float, float]]:
    """The outline of a histogram: flat over each bin, dropping to zero at both ends."""
    points = [(edges[0], 0.0)]
    for i, value in enumerate(values):
        points += [(edges[i], value), (edges[i + 1], value)]
    points.append((edges[len(values)], 0.0))
    return points


def line_chart(
    kind: str,
    title: str,
    lines: Sequence[Line],
    *,
    x_label: str,
    y_label: str,
    y_format: Format,
    x_format: Format | None = None,
    time_axis: bool = False,
    x_domain: tuple[float, float] | None = None,
    markers: bool = False,
    zero_line: bool = False,
    from_zero: bool = False,
    band_label: str | None = None,
    metric: str = "",
) -> str:
    """Lines (optionally with shaded bands), e.g. overlaid histograms or an effect over time.

    Bands may have infinite sides (an unbounded interval): they are drawn to the frame's edge.
    With `time_axis` the x values are POSIX times, labelled as UTC clock times. `from_zero`
    keeps 0 on the y axis (counts); `zero_line` also draws it (differences).
    """
    xs = [p[0] for line in lines for p in line.points if p is not None]
    ys = [p[1] for line in lines for p in line.points if p is not None]
    bounds = [v for line in lines for b in line.band if b is not None for v in (b[1], b[2])]
    ys += [v for v in bounds if math.isfinite(v)]
    if zero_line or from_zero:
        ys.append(0.0)
    x_lo, x_hi = x_domain if x_domain is not None else (min(xs, default=0), max(xs, default=1))
    if not x_hi > x_lo:
        x_lo, x_hi = x_lo - 30, x_hi + 30
    y_ticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    entries = [(line.legend or line.label, line.slot) for line in lines]
    legend, legend_height = _legend(entries, _TOP) if len(lines) > 1 or band_label else ([], 0)
    if band_label:
        legend.append(
            f'<text x="{WIDTH - _RIGHT}" y="{_TOP + 12}" text-anchor="end" fill="{_AXIS}">'
            f"{_e(band_label)}</text>"
        )
    height = HEIGHT + legend_height
    x = _Scale(x_lo, x_hi, _LEFT, WIDTH - _RIGHT)
    y = _Scale(y_ticks[0], y_ticks[-1], height - _BOTTOM, _TOP + legend_height)
    if time_axis:
        x_ticks = [t for t in time_ticks(x_lo, x_hi) if x_lo <= t[0] <= x_hi]
    else:
        fmt = x_format or _n
        x_ticks = [(t, fmt(t)) for t in nice_ticks(x_lo, x_hi) if x_lo <= t <= x_hi]
    description = f"{len(lines)} series over {x_label}: {y_label}"
    parts = [_svg_open(kind, title, height, description, metric), *legend]
    parts += _axes(x_ticks, [(t, y_format(t)) for t in y_ticks], x, y, x_label, y_label, height)
    if zero_line:  # 0 is always inside the domain then
        zy = _n(y(0.0))
        parts.append(
            f'<line class="zero" x1="{_LEFT}" y1="{zy}" x2="{WIDTH - _RIGHT}" y2="{zy}" '
            f'stroke="#222222" stroke-width="1.2"/>'
        )
    for line in lines:
        parts.append(_series(line, x, y, markers))
    parts.append("</svg>")
    return "".join(parts)


def _series(line: Line, x: _Scale, y: _Scale, markers: bool) -> str:
    stroke = colour(line.slot)
    parts = [f'<g class="series" data-series="{_e(line.label)}">']
    for area in _segments(line.band):
        upper = [f"{_n(x(bx))},{_n(y(hi))}" for bx, _, hi in area]
        lower = [f"{_n(x(bx))},{_n(y(lo))}" for bx, lo, _ in reversed(area)]
        parts.append(
            f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{stroke}" '
            f'fill-opacity="0.18" stroke="none"/>'
        )
    for segment in _segments(line.points):
        coords = " ".join(f"{_n(x(px))},{_n(y(py))}" for px, py in segment)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="2"'
            f'{_dash(line.slot)} stroke-linejoin="round"/>'
        )
    if markers:
        parts += [
            f'<circle cx="{_n(x(p[0]))}" cy="{_n(y(p[1]))}" r="3" fill="{stroke}"/>'
            for p in line.points
            if p is not None
        ]
    parts.append("</g>")
    return "".join(parts)


def _segments(points: Sequence[_T | None]) -> list[list[_T]]:
    """Runs of consecutive points between the gaps (None)."""
    runs: list[list[_T]] = [[]]
    for point in points:
        if point is None:
            runs.append([])
        else:
            runs[-1].append(point)
    return [run for run in runs if run]
