"""The analysis report as one self-contained HTML file: tables and inline SVG plots.

The HTML counterpart of `gateway.analysis.text_report`: it reads only the report dict
(schema_version 1), so it renders a report computed here, read from a JSON file or fetched
from a gateway's admin API alike. Nothing is fetched when the file is opened: the CSS and the
plots (`gateway.analysis.html_plots`) are inline and there is no script, so it opens offline and
prints. Every string taken from the report is escaped, because experiment ids, variant names
and reasons come from users. Missing parts (null, empty) become a "no data" note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from gateway.analysis.error_analysis import errors_html
from gateway.analysis.health_views import canary_html, drift_html
from gateway.analysis.html_plots import plots
from gateway.analysis.planner import render_plan
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
from gateway.analysis.review_report import review_text
from gateway.analysis.svg import colour

SCHEMA_VERSION: Final = 1
RATES: Final = (
    ("success", "Success"),
    ("no_match", "No match"),
    ("error", "Error"),
    ("cancellation", "Cancelled"),
)
QUANTILES: Final = ("p50", "p90", "p99")
# action -> (label, CSS class). The class comes from this table, never from the report.
ACTIONS: Final = {
    "ship_custom": ("Ship custom", "ship"),
    "ramp_up": ("Ramp up", "ramp"),
    "keep_collecting": ("Keep collecting", "collect"),
    "keep_base": ("Keep base", "base"),
    "roll_back": ("Roll back", "rollback"),
}
_STATUS_CLASSES: Final = {"ok": "ok", "regressed": "bad", "insufficient": "muted"}
_NONE: Final = "–"

_CSS: Final = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 24px; color: #1a1a1a; background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.3em; margin: 0; }
h3 { font-size: 1.05em; margin: 20px 0 8px; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.95em; }
.meta { color: #444; margin: 0 0 16px; }
.recommendation { border-left: 8px solid #6b6b6b; background: #f3f3f3; padding: 12px 16px;
  margin: 0 0 24px; }
.recommendation .action { font-size: 1.35em; font-weight: 700; margin: 0 0 4px; }
.recommendation p { margin: 0; }
.recommendation.ship { border-color: #1e7b34; background: #e6f4ea; }
.recommendation.ramp { border-color: #0b5cad; background: #e7f0fa; }
.recommendation.collect { border-color: #6b6b6b; background: #f3f3f3; }
.recommendation.base { border-color: #a15c00; background: #fff4e0; }
.recommendation.rollback { border-color: #b3261e; background: #fde8e8; }
.phase { border: 1px solid #d0d0d0; border-radius: 6px; padding: 12px 16px; margin: 0 0 20px; }
details.phase > summary { cursor: pointer; }
details.phase > summary h2 { display: inline; }
.srm { padding: 6px 10px; border-radius: 4px; background: #f3f3f3; margin: 12px 0; }
.srm.bad { background: #fde8e8; border: 1px solid #b3261e; font-weight: 600; }
.warning { background: #fff4e0; border: 1px solid #a15c00; padding: 6px 10px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 0 0 8px; min-width: 50%; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 4px 8px; text-align: right;
  vertical-align: top; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #999; }
td small, th small { display: block; color: #555; font-weight: normal; }
.tag { display: inline-block; font-size: 0.8em; padding: 0 6px; border-radius: 8px;
  background: #e7f0fa; color: #0b3d75; margin-left: 4px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; }
.status { font-weight: 600; }
.status.ok { color: #1e7b34; }
.status.bad { color: #b3261e; }
.status.muted { color: #555; }
ul.guardrails { margin: 4px 0 12px; padding-left: 20px; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr));
  gap: 16px; margin-top: 16px; }
figure { margin: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg.plot { width: 100%; height: auto; display: block; }
.no-data { color: #555; font-style: italic; border: 1px dashed #bbb; padding: 24px;
  text-align: center; }
footer { color: #555; font-size: 0.9em; margin-top: 24px; }
td.diff { white-space: normal; text-align: left; min-width: 16em; }
.op-sub { background: #fde8e8; color: #8a1c14; border-radius: 3px; padding: 0 2px; }
.op-del { background: #fff4e0; color: #7a4500; text-decoration: line-through;
  border-radius: 3px; padding: 0 2px; }
.op-ins { background: #e7f0fa; color: #0b3d75; border-radius: 3px; padding: 0 2px; }
table[data-table="worst"] th, table[data-table="shadow-pairs"] th { text-align: left; }
.segments tr.called-out td { background: #fff4e0; }
ul.terms { margin: 4px 0 12px; padding-left: 20px; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .phase, figure, table { break-inside: avoid; }
  .recommendation, .srm, .tag { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
  details::details-content { content-visibility: visible; }
  .table-wrap { overflow: visible; }
}
"""


def render_html(report: Mapping[str, Any]) -> str:
    """A complete HTML document for one analysis report (the JSON of `analyze`)."""
    experiment = as_text(report.get("experiment")) or "(unnamed experiment)"
    settings = as_map(report.get("settings"))
    level = _level(settings.get("confidence"))
    phases = _ordered_phases(as_list(report.get("phases")))
    any_current = any(as_map(p).get("current") is True for p in phases)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{as_html(experiment)} — speech-gateway analysis</title>",
        f"<style>{_CSS}</style></head><body>",
        _header(report, experiment),
        _recommendation(report.get("recommendation")),
        "<main>",
    ]
    if not phases:
        parts.append('<p class="no-data">No outcome records in this window yet.</p>')
    for index, phase in enumerate(phases):
        is_open = phase.get("current") is True or (index == 0 and not any_current)
        parts.append(_phase(phase, as_text(report.get("control")), level, index, is_open))
    parts += [
        drift_html(report.get("drift"), level),
        canary_html(report.get("canary")),
        errors_html(report.get("errors")),
        _review(report.get("review")),
    ]
    parts += ["</main>", _footer(report, settings), "</body></html>"]
    return "\n".join(parts) + "\n"


def _ordered_phases(phases: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The current phase first, then the others, latest first."""
    found = [as_map(p) for p in phases if isinstance(p, Mapping)]
    latest_first = sorted(found, key=lambda p: as_epoch(p.get("last_record")) or 0.0, reverse=True)
    return sorted(latest_first, key=lambda p: p.get("current") is not True)


# -- formatting ------------------------------------------------------------------------------


def _level(confidence: object) -> str:
    value = as_number(confidence)
    return f"{value * 100:g}%" if value is not None else "95%"


def _pct(value: float | None) -> str:
    return _NONE if value is None else f"{value * 100:.1f}%"


def _pp(value: float | None) -> str:
    return _NONE if value is None else f"{value * 100:+.1f} pp"


def _ms(value: float | None) -> str:
    return _NONE if value is None else f"{value:,.0f} ms"


def _dms(value: float | None) -> str:
    return _NONE if value is None else f"{value:+,.0f} ms"


def _bounds(
    ci: tuple[float | None, float | None] | None,
    show: Callable[[float], str],
    between: str = " to ",  # "–" only where neither bound can be negative
) -> str:
    if ci is None:
        return _NONE
    low = show(ci[0]) if ci[0] is not None else "−∞"
    high = show(ci[1]) if ci[1] is not None else "+∞"
    return f"{low}{between}{high}"


def _when(value: object) -> str:
    seconds = as_epoch(value)
    if seconds is None:
        return as_text(value) or _NONE
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(main: str, sub: str = "") -> str:
    """A table cell: escaped main text with an optional escaped second line."""
    small = f"<small>{as_html(sub)}</small>" if sub else ""
    return f"<td>{as_html(main)}{small}</td>"


def _table(caption: str, header: Sequence[str], rows: Sequence[str], kind: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)  # headers are ours, already markup
    return (
        f'<div class="table-wrap"><table data-table="{kind}"><caption>{as_html(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# -- sections --------------------------------------------------------------------------------


def _header(report: Mapping[str, Any], experiment: str) -> str:
    window = as_map(report.get("window"))
    scope = []
    if window.get("since") is not None:
        scope.append(f"since {_when(window.get('since'))}")
    if window.get("until") is not None:
        scope.append(f"until {_when(window.get('until'))}")
    if window.get("phase") is not None:
        scope.append(f"phase {as_text(window.get('phase'))}")
    control = as_text(report.get("control")) or _NONE
    lines = [
        f"<header><h1>Experiment <code>{as_html(experiment)}</code></h1>",
        f'<p class="meta">Control: <code>{as_html(control)}</code> · Window: '
        f"{as_html(', '.join(scope) or 'all records')} · "
        f"Generated {as_html(_when(report.get('generated_at')))}</p>",
    ]
    version = report.get("schema_version")
    if version != SCHEMA_VERSION:
        lines.append(
            f'<p class="warning">This report has schema_version {as_html(version)}; this renderer '
            f"knows version {SCHEMA_VERSION}, so parts may be missing.</p>"
        )
    lines.append("</header>")
    return "\n".join(lines)


def _recommendation(value: object) -> str:
    recommendation = as_map(value)
    action = as_text(recommendation.get("action"))
    if not action:
        return (
            '<section class="recommendation collect" data-action="none">'
            '<p class="action">No recommendation</p></section>'
        )
    label, css = ACTIONS.get(action, (action.replace("_", " ").capitalize(), "collect"))
    variant = as_text(recommendation.get("variant"))
    target = f": <code>{as_html(variant)}</code>" if variant else ""
    phase = as_text(recommendation.get("phase"))
    where = f" <small>(phase {as_html(phase)})</small>" if phase else ""
    reason = as_text(recommendation.get("reason")) or "No reason given."
    return (
        f'<section class="recommendation {css}" data-action="{as_html(action)}" '
        f'aria-label="Recommendation"><p class="action">Recommendation: {as_html(label)}{target}'
        f"{where}</p><p>{as_html(reason)}</p>{_decision_notes(recommendation)}</section>"
    )


def _decision_notes(recommendation: Mapping[str, Any]) -> str:
    """The deciding evidence, the multiplicity correction and the plan, as the text has them."""
    notes: list[str] = []
    evidence = as_text(recommendation.get("evidence"))
    if evidence:
        notes.append(f"Decided on {evidence.replace('_', ' ')} WER evidence.")
    family = as_map(recommendation.get("multiplicity"))
    if family:
        notes.append(
            f"Several challengers: Holm over {as_text(family.get('challengers'))} always-valid "
            f"WER test(s) at alpha {as_text(family.get('alpha'))}; other intervals are "
            "descriptive (uncorrected)."
        )
    html = "".join(f'<p class="meta">{as_html(note)}</p>' for note in notes)
    plan = recommendation.get("plan")
    if isinstance(plan, Mapping):
        html += f'<pre class="plan">{as_html(render_plan(plan))}</pre>'
    return html


def _phase(phase: Mapping[str, Any], control: str, level: str, index: int, is_open: bool) -> str:
    variants = [as_map(v) for v in as_list(phase.get("variants")) if isinstance(v, Mapping)]
    slots = {as_text(v.get("name")): i for i, v in enumerate(variants)}
    name = as_text(phase.get("phase")) or _NONE
    current = phase.get("current")
    state = " (current)" if current is True else " (earlier)" if current is False else ""
    span = f"{_when(phase.get('first_record'))} to {_when(phase.get('last_record'))}"
    title = (
        f"<h2>Phase <code>{as_html(name)}</code>{as_html(state)}</h2>"
        f' <span class="meta">{as_html(span)}</span>'
    )
    body = [_srm(as_map(phase.get("srm")))]
    if variants:
        body += [
            _variants_table(variants, slots, level),
            _failures_table(variants, level),
            _latency_table(variants, level),
        ]
    else:
        body.append('<p class="no-data">No variants have records in this phase.</p>')
    body.append(_comparisons(as_list(phase.get("comparisons")), level))
    body.append(plots(phase, variants, slots, control, level))
    attrs = f'class="phase" data-phase="{as_html(name)}" data-index="{index}"'
    content = "\n".join(body)
    if is_open:
        return f"<section {attrs}>{title}\n{content}</section>"
    return f"<details {attrs}><summary>{title}</summary>\n{content}</details>"


def _srm(srm: Mapping[str, Any]) -> str:
    status = as_text(srm.get("status"))
    units = ", ".join(f"{k} {as_text(v)}" for k, v in as_map(srm.get("units")).items())
    expected = ", ".join(
        f"{k} {_pct(as_number(v))}" for k, v in as_map(srm.get("expected_share")).items()
    )
    chi2, p_value = as_number(srm.get("chi2")), as_number(srm.get("p_value"))
    stats = (
        f"χ² = {_NONE if chi2 is None else f'{chi2:.2f}'}, "
        f"p = {_NONE if p_value is None else f'{p_value:.3g}'}"
    )
    note = as_text(srm.get("note"))
    if status == "ok":
        text = f"Sample ratio: consistent with the configured split ({stats})."
        css = "srm"
    elif status == "mismatch":
        text = (
            f"Sample ratio mismatch ({stats}): units per variant differ from the split; "
            "the assignment or the logging is broken, so do not trust the comparisons."
        )
        css = "srm bad"
    else:
        text = "Sample ratio: not checked."
        css = "srm"
    details = "; ".join(
        part for part in (f"units: {units}" if units else "", f"expected: {expected}", note) if part
    )
    role = ' role="alert"' if status == "mismatch" else ""
    return (
        f'<p class="{css}" data-srm="{as_html(status or "unknown")}"{role}>{as_html(text)}'
        f"{f' <small>{as_html(details)}</small>' if details else ''}</p>"
    )


def _swatch(slot: int) -> str:
    # A colour key in markup, not style attributes, so the tables match the plots in print too.
    return (
        f'<svg class="swatch" width="10" height="10" aria-hidden="true">'
        f'<rect width="10" height="10" fill="{colour(slot)}"/></svg>'
    )


def _variant_name(variant: Mapping[str, Any], slots: Mapping[str, int]) -> str:
    name = as_text(variant.get("name"))
    tag = '<span class="tag">control</span>' if variant.get("is_control") is True else ""
    forced = as_number(variant.get("forced"))
    forced_note = f"<small>{forced:.0f} forced</small>" if forced else ""
    return f"<td>{_swatch(slots.get(name, 0))}{as_html(name)}{tag}{forced_note}</td>"


def _variants_table(
    variants: Sequence[Mapping[str, Any]], slots: Mapping[str, int], level: str
) -> str:
    rows = []
    for variant in variants:
        cells = [_variant_name(variant, slots)]
        cells.append(
            _cell(", ".join(as_text(b) for b in as_list(variant.get("backends"))) or _NONE)
        )
        for key in ("units", "sessions", "utterances"):
            value = as_number(variant.get(key))
            cells.append(_cell(_NONE if value is None else f"{value:,.0f}"))
        labelled = as_number(variant.get("labelled"))
        cells.append(
            _cell(_pct(as_number(variant.get("labelled_share"))), f"{labelled or 0:,.0f} labelled")
        )
        rates = as_map(variant.get("rates"))
        cells += [_share_cell(as_map(rates.get(key))) for key, _ in RATES]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = ["Variant", "Backends", "Units", "Sessions", "Utterances", "Labelled"]
    header += [f"{label} <small>{level} CI</small>" for _, label in RATES]
    return _table("Traffic and outcome rates", header, rows, "variants")


def _share_cell(share: Mapping[str, Any]) -> str:
    """A rate with its counts and interval underneath."""
    count, total = as_number(share.get("count")), as_number(share.get("total"))
    counts = f"{count:.0f}/{total:.0f}" if count is not None and total is not None else ""
    interval = as_interval(share.get("ci"))
    compact = _bounds(interval, lambda v: f"{v * 100:.1f}%", "–") if interval else ""
    return _cell(_pct(as_number(share.get("rate"))), " · ".join(p for p in (counts, compact) if p))


def _failures_table(variants: Sequence[Mapping[str, Any]], level: str) -> str:
    """Errors per attempt (SDK retries included) and per client session as users saw them."""
    rows = []
    for variant in variants:
        failures = as_map(variant.get("failures"))
        if not failures:
            continue
        retried = as_number(failures.get("retried"))
        cells = [
            f"<td>{as_html(variant.get('name'))}</td>",
            _share_cell(as_map(failures.get("attempts"))),
            _share_cell(as_map(failures.get("client_sessions"))),
            _cell(_NONE if retried is None else f"{retried:,.0f}"),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        return ""
    header = [
        "Variant",
        f"Failed attempts <small>{level} CI</small>",
        f"Failed as users saw <small>client sessions, {level} CI</small>",
        "Client sessions retried",
    ]
    return _table("Failures: attempts and what users saw", header, rows, "failures")


def _latency_table(variants: Sequence[Mapping[str, Any]], level: str) -> str:
    rows = []
    for variant in variants:
        cells = [f"<td>{as_html(variant.get('name'))}</td>"]
        latency = as_map(variant.get("latency"))
        for metric, _ in LATENCIES:
            quantiles = as_map(as_map(latency.get(metric)).get("quantiles"))
            for q in QUANTILES:
                quantile = as_map(quantiles.get(q))
                interval = as_interval(quantile.get("ci"))
                cells.append(
                    _cell(
                        _ms(as_number(quantile.get("value"))),
                        _bounds(interval, lambda v: f"{v:,.0f}", "–") if interval else "",
                    )
                )
        wer = variant.get("wer")
        if isinstance(wer, Mapping):
            edits = "S/D/I " + "/".join(
                f"{as_number(wer.get(k)) or 0:.0f}"
                for k in ("substitutions", "deletions", "insertions")
            )
            words = as_number(wer.get("reference_words")) or 0
            cells.append(
                _cell(
                    _pct(as_number(wer.get("wer"))), _bounds(as_interval(wer.get("ci")), _pct, "–")
                )
            )
            cells.append(_cell(edits, f"{words:,.0f} reference words"))
        else:
            cells += [_cell("not labelled"), _cell(_NONE)]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = ["Variant"]
    header += [f"Final {q} <small>ms, {level} CI</small>" for q in QUANTILES]
    header += [f"First hyp. {q} <small>ms, {level} CI</small>" for q in QUANTILES]
    header += [f"WER <small>{level} CI</small>", "Edits"]
    return _table("Latency and word error rate", header, rows, "latency")


def _comparisons(comparisons: Sequence[Any], level: str) -> str:
    found = [as_map(c) for c in comparisons if isinstance(c, Mapping)]
    if not found:
        return '<p class="no-data">No comparison: the phase has no challenger with records.</p>'
    parts = ["<h3>Comparisons with the control</h3>"]
    for comparison in found:
        rows = []
        wer = comparison.get("wer")
        if isinstance(wer, Mapping):
            relative = as_number(wer.get("relative"))
            rows.append(
                _difference_row(
                    "WER", wer, _pp, f"{relative * 100:+.1f}% relative" if relative else ""
                )
            )
        else:
            rows.append(
                f"<tr><td>WER</td>{_cell('too few labels')}{_cell('')}{_cell('')}{_cell('')}</tr>"
            )
        shadow = comparison.get("shadow")
        if isinstance(shadow, Mapping):
            pairs = as_number(shadow.get("pairs")) or 0
            rows.append(
                _difference_row(
                    "WER on identical audio (shadow)", shadow, _pp, f"{pairs:,.0f} pairs"
                )
            )
        rates = as_map(comparison.get("rates"))
        for key, label in RATES:
            if isinstance(rates.get(key), Mapping):
                rows.append(_difference_row(f"{label} rate", as_map(rates.get(key)), _pp))
        latency = as_map(comparison.get("latency"))
        for metric, label in LATENCIES:
            entry = latency.get(metric)
            if isinstance(entry, Mapping):
                rows.append(
                    _difference_row(f"{label}, median", entry, _dms, key="median_difference")
                )
        header = [
            "Metric",
            "Difference",
            f"{level} CI",
            f"Always-valid {level} CI",
            "Always-valid p",
        ]
        caption = f"{as_text(comparison.get('variant'))} vs {as_text(comparison.get('control'))}"
        parts.append(_table(caption, header, rows, "comparison"))
        parts.append(_guardrails(as_list(comparison.get("guardrails"))))
    return "\n".join(parts)


def _difference_row(
    label: str,
    entry: Mapping[str, Any],
    show: Callable[[float | None], str],
    note: str = "",
    key: str = "difference",
) -> str:
    always = as_map(entry.get("always_valid"))
    p_value = as_number(always.get("p_value"))
    return (
        f"<tr>{_cell(label)}{_cell(show(as_number(entry.get(key))), note)}"
        f"{_cell(_bounds(as_interval(entry.get('ci')), show))}"
        f"{_cell(_bounds(as_interval(always.get('ci')), show) if always else _NONE)}"
        f"{_cell(_NONE if p_value is None else f'{p_value:.3g}')}</tr>"
    )


def _guardrails(guardrails: Sequence[Any]) -> str:
    items = []
    for guardrail in guardrails:
        entry = as_map(guardrail)
        status = as_text(entry.get("status")) or "unknown"
        css = _STATUS_CLASSES.get(status, "muted")
        items.append(
            f'<li data-guardrail="{as_html(entry.get("metric"))}">'
            f"<code>{as_html(entry.get('metric'))}</code>: "
            f'<span class="status {css}">{as_html(status)}</span> — '
            f"{as_html(entry.get('detail'))}</li>"
        )
    if not items:
        return "<p>No guardrails evaluated.</p>"
    return f'<p>Guardrails:</p><ul class="guardrails">{"".join(items)}</ul>'


def _footer(report: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k} = {as_text(v)}" for k, v in settings.items())
    return (
        f"<footer><p>Settings: {as_html(shown or 'none')}. Report schema version "
        f"{as_html(report.get('schema_version'))}. Rates are shares of outcomes; WER is total "
        "errors over total reference words; differences are challenger minus control, in "
        "percentage points (pp). Always-valid intervals stay valid however often the "
        "experiment is looked at.</p><p>Generated by speech-gateway.</p></footer>"
    )


def _review(section: object) -> str:
    """The review section as its terminal lines (docs/review.md)."""
    lines = review_text(as_map(section))
    if not lines:
        return ""
    body = "\n".join(as_html(line) for line in lines[1:])
    return (
        '<section class="review" data-section="review">'
        f"<h2>{as_html(lines[0])}</h2><pre>{body}</pre></section>"
    )
