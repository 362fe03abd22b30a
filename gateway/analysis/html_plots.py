"""The plots of the HTML report: one inline SVG figure per view of a phase.

WER per variant with intervals, latency distributions, the traffic split over time and the
cumulative WER effect with its always-valid band, drawn with `gateway.analysis.svg` from the
report dict (read tolerantly: a missing part becomes a "no data" note, not an error).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.analysis.report_fields import (
    LATENCIES,
    as_epoch,
    as_html,
    as_interval,
    as_list,
    as_map,
    as_number,
    as_text,
)
from gateway.analysis.svg import Bar, Line, bar_chart, line_chart, step_points


def _figure(kind: str, caption: str, plot: str | None, missing: str) -> str:
    body = plot if plot is not None else f'<p class="no-data" data-no-plot="{kind}">{missing}</p>'
    caption = f"<figcaption>{as_html(caption)}</figcaption>"
    return f'<figure data-figure="{kind}">{caption}{body}</figure>'


def plots(
    phase: Mapping[str, Any],
    variants: Sequence[Mapping[str, Any]],
    slots: Mapping[str, int],
    control: str,
    level: str,
) -> str:
    timeline = as_map(phase.get("timeline"))
    figures = [
        _figure(
            "wer",
            f"WER per variant ({level} CI)",
            _wer_plot(variants, slots, level),
            "No labelled utterances yet: WER needs reference transcripts.",
        )
    ]
    for metric, label in LATENCIES:
        figures.append(
            _figure(
                "latency",
                f"{label}: distribution per variant",
                _latency_plot(variants, slots, metric, label),
                "No latency values yet.",
            )
        )
    figures.append(
        _figure(
            "split",
            "Traffic split over time (units per bucket)",
            _split_plot(timeline, slots),
            "No timeline yet.",
        )
    )
    figures.append(
        _figure(
            "effect",
            "Cumulative WER difference vs control over time",
            _effect_plot(timeline, slots, control, level),
            "No cumulative effect yet: it needs a challenger with labelled utterances.",
        )
    )
    return f'<div class="plots">{"".join(figures)}</div>'


def _wer_plot(
    variants: Sequence[Mapping[str, Any]], slots: Mapping[str, int], level: str
) -> str | None:
    bars = []
    for variant in variants:
        wer = as_map(variant.get("wer"))
        value = as_number(wer.get("wer"))
        if value is None:
            continue
        name = as_text(variant.get("name"))
        ci = as_interval(wer.get("ci"))
        low = high = None
        if ci is not None and ci[0] is not None and ci[1] is not None:
            low, high = ci[0] * 100, ci[1] * 100
        bars.append(Bar(name, value * 100, low, high, slots.get(name, 0)))
    if not bars:
        return None
    return bar_chart(
        "wer",
        f"Corpus WER per variant with {level} intervals",
        bars,
        x_label="variant",
        y_label="WER (%)",
        y_format=lambda v: f"{v:g}",
    )


def _latency_plot(
    variants: Sequence[Mapping[str, Any]], slots: Mapping[str, int], metric: str, label: str
) -> str | None:
    lines = []
    for variant in variants:
        entry = as_map(as_map(variant.get("latency")).get(metric))
        histogram = as_map(entry.get("histogram"))
        edges = [as_number(v) for v in as_list(histogram.get("edges"))]
        counts = [as_number(v) for v in as_list(histogram.get("counts"))]
        clean_edges = [v for v in edges if v is not None]
        clean_counts = [v for v in counts if v is not None]
        total = sum(clean_counts)
        if (
            not clean_counts
            or len(clean_edges) != len(clean_counts) + 1
            or len(clean_counts) != len(counts)
            or total <= 0
        ):
            continue
        # Shares, not counts: variants with different traffic are then comparable.
        shares = [c / total * 100 for c in clean_counts]
        name = as_text(variant.get("name"))
        n = as_number(entry.get("n"))
        legend = f"{name} (n={n:.0f})" if n is not None else name
        lines.append(
            Line(name, step_points(clean_edges, shares), slot=slots.get(name, 0), legend=legend)
        )
    if not lines:
        return None
    return line_chart(
        "latency",
        f"{label}: share of values per bin, per variant",
        lines,
        x_label=f"{label.lower()} (ms)",
        y_label="share of values (%)",
        y_format=lambda v: f"{v:g}",
        x_format=lambda v: f"{v:,.0f}",
        metric=metric,
    )


def _buckets(timeline: Mapping[str, Any]) -> tuple[list[tuple[float, Mapping[str, Any]]], float]:
    """(start, bucket) pairs in time order, and the bucket length in seconds."""
    length = as_number(timeline.get("bucket_seconds"))
    buckets = []
    for bucket in as_list(timeline.get("buckets")):
        start = as_epoch(as_map(bucket).get("start"))
        if start is not None:
            buckets.append((start, as_map(bucket)))
    buckets.sort(key=lambda pair: pair[0])
    return buckets, length if length and length > 0 else 60.0


def _per(seconds: float) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


def _names(slots: Mapping[str, int], found: Iterable[str], skip: str | None = None) -> list[str]:
    """Variant names in report order, then any others the timeline mentions."""
    seen = set(found)
    known = [n for n in slots if n in seen and n != skip]
    return known + sorted(n for n in seen if n not in slots and n != skip)


def _split_plot(timeline: Mapping[str, Any], slots: Mapping[str, int]) -> str | None:
    buckets, length = _buckets(timeline)
    found = {k for _, b in buckets for k in as_map(b.get("units"))}
    names = _names(slots, found)
    if not buckets or not names:
        return None
    lines = []
    for i, name in enumerate(names):
        points: list[tuple[float, float] | None] = []
        for start, bucket in buckets:
            units = as_number(as_map(bucket.get("units")).get(name)) or 0.0
            points += [(start, units), (start + length, units)]
        lines.append(Line(name, points, slot=slots.get(name, len(slots) + i)))
    return line_chart(
        "split",
        "Units per time bucket, per variant",
        lines,
        x_label="time (UTC)",
        y_label=f"units per {_per(length)}",
        y_format=lambda v: f"{v:g}",
        time_axis=True,
        x_domain=(buckets[0][0], buckets[-1][0] + length),
        from_zero=True,
    )


def _effect_plot(
    timeline: Mapping[str, Any], slots: Mapping[str, int], control: str, level: str
) -> str | None:
    buckets, length = _buckets(timeline)
    found = {k for _, b in buckets for k in as_map(b.get("cumulative"))}
    lines = []
    for i, name in enumerate(_names(slots, found, skip=control or None)):
        points: list[tuple[float, float] | None] = []
        band: list[tuple[float, float, float] | None] = []
        for start, bucket in buckets:
            effect = as_map(as_map(bucket.get("cumulative")).get(name))
            value = as_number(effect.get("wer_difference"))
            end = start + length  # the effect of everything up to the end of the bucket
            points.append(None if value is None else (end, value * 100))
            ci = as_interval(effect.get("ci")) if value is not None else None
            if ci is None:
                band.append(None)
            else:
                low = -math.inf if ci[0] is None else ci[0] * 100
                high = math.inf if ci[1] is None else ci[1] * 100
                band.append((end, low, high))
        if any(p is not None for p in points):
            lines.append(Line(name, points, band, slot=slots.get(name, len(slots) + i)))
    if not lines:
        return None
    return line_chart(
        "effect",
        f"Cumulative WER difference vs {control or 'control'} with always-valid {level} bands",
        lines,
        x_label="time (UTC)",
        y_label="WER difference (pp)",
        y_format=lambda v: f"{v:+g}" if v else "0",
        time_axis=True,
        x_domain=(buckets[0][0], buckets[-1][0] + length),
        markers=True,
        zero_line=True,
        band_label=f"bands: always-valid {level} CI; below 0 = fewer errors",
    )
