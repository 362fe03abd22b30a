"""The analysis report as plain-text tables for a terminal (`speech-gateway analyze`).

Reads only the report dict (docs/analysis.md), so it renders a report computed here, read
from a JSON file, or fetched from a gateway's admin API alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.analysis.error_analysis import errors_text
from gateway.analysis.health_views import canary_text, drift_text
from gateway.analysis.planner import render_plan
from gateway.analysis.review_report import review_text
from gateway.analysis.text_tables import text_table

_ACTIONS = {
    "ship_custom": "SHIP CUSTOM",
    "keep_base": "KEEP BASE",
    "keep_collecting": "KEEP COLLECTING",
    "ramp_up": "RAMP UP",
    "roll_back": "ROLL BACK",
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}"


def _ci(ci: Sequence[float | None] | None, fmt: str = "pct") -> str:
    if not ci:
        return ""
    low, high = ci
    show = {"pct": _pct, "pp": _pp, "ms": _ms, "dms": _dms}[fmt]
    return (
        f"[{show(low) if low is not None else '-inf'}, {show(high) if high is not None else 'inf'}]"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _dms(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}"


def render_text(report: Mapping[str, Any]) -> str:
    """A readable multi-table summary of the report, recommendation last."""
    confidence = round(report["settings"]["confidence"] * 100)
    lines = [f"Experiment {report['experiment']} (control: {report['control'] or '-'})"]
    if report.get("control_guessed"):
        lines.append(
            "Note: the experiment is not configured here, so the first variant by name is the "
            "control; name it with --control"
        )
    window = report["window"]
    if any(window.values()):
        lines.append(
            f"Window: since {window['since'] or '-'}, until {window['until'] or '-'},"
            f" phase {window['phase'] or 'all'}"
        )
    if not report["phases"]:
        lines.append("No outcome records in this window.")
    for phase in report["phases"]:
        lines += ["", *_phase(phase, confidence)]
    # Absent from reports made before the sections existed; null when they do not apply.
    for section in (
        canary_text(report.get("canary")),
        drift_text(report.get("drift")),
        errors_text(report.get("errors")),
        review_text(report.get("review")),
    ):
        if section:
            lines += ["", *section]
    recommendation = report["recommendation"]
    lines += [
        "",
        f"Recommendation: {_ACTIONS.get(recommendation['action'], recommendation['action'])}",
        f"  {recommendation['reason']}",
        *_decision_notes(recommendation),
    ]
    return "\n".join(lines)


def _decision_notes(recommendation: Mapping[str, Any]) -> list[str]:
    """Which evidence decided, how several challengers are corrected, and the plan."""
    lines: list[str] = []
    evidence = recommendation.get("evidence")
    if evidence:
        lines.append(f"  Decided on: {evidence.replace('_', ' ')} WER evidence")
    family = recommendation.get("multiplicity")
    if family:
        lines.append(
            f"  Several challengers: Holm over {family['challengers']} always-valid WER "
            f"test(s) at alpha {family['alpha']:g}; other intervals are descriptive (uncorrected)"
        )
    plan = recommendation.get("plan")
    if plan:
        lines += ["", render_plan(plan)]
    return lines


def _phase(phase: Mapping[str, Any], confidence: int) -> list[str]:
    current = {True: " (current)", False: " (earlier)", None: ""}[phase["current"]]
    lines = [
        f"Phase {phase['phase']}{current}: {phase['first_record']} .. {phase['last_record']}",
    ]
    srm = phase["srm"]
    units = ", ".join(f"{name} {count}" for name, count in srm["units"].items())
    if srm["status"] == "unchecked":
        lines.append(f"Sample ratio: unchecked ({srm['note']}); units: {units}")
    else:
        flag = "MISMATCH" if srm["status"] == "mismatch" else "ok"
        lines.append(f"Sample ratio: {flag} (chi-square p = {srm['p_value']:.3g}); units: {units}")
    lines.append("")
    rows = []
    for v in phase["variants"]:
        rates = v["rates"]
        wer = v["wer"]
        rows.append(
            [
                v["name"] + (" *" if v["is_control"] else ""),
                str(v["units"]),
                str(v["sessions"]),
                str(v["outcomes"]),
                _pct(v["labelled_share"]),
                f"{_pct(rates['success']['rate'])} {_ci(rates['success']['ci'])}",
                _pct(rates["no_match"]["rate"]),
                _pct(rates["error"]["rate"]),
                _pct(rates["cancellation"]["rate"]),
                "-" if wer is None else f"{_pct(wer['wer'])} {_ci(wer['ci'])}",
                "-"
                if wer is None
                else f"{wer['substitutions']}/{wer['deletions']}/{wer['insertions']}"
                f" of {wer['reference_words']}",
            ]
        )
    lines += text_table(
        [
            "variant",
            "units",
            "sessions",
            "outcomes",
            "labelled",
            f"success [{confidence}% CI]",
            "no-match",
            "error",
            "cancel",
            f"WER [{confidence}% CI]",
            "S/D/I",
        ],
        rows,
    )
    lines += ["", *_failures(phase["variants"], confidence)]
    lines.append("")
    rows = []
    for v in phase["variants"]:
        for metric, title in (("first_hypothesis_ms", "first hyp."), ("final_latency_ms", "final")):
            latency = v["latency"][metric]
            quantiles = latency["quantiles"] or {}
            rows.append(
                [
                    v["name"],
                    title,
                    str(latency["n"]),
                    *(
                        f"{_ms(q['value'])} {_ci(q['ci'], 'ms')}"
                        if (q := quantiles.get(p))
                        else "-"
                        for p in ("p50", "p90", "p99")
                    ),
                ]
            )
    lines += text_table(["variant", "latency (ms)", "n", "p50", "p90", "p99"], rows)
    for comparison in phase["comparisons"]:
        lines += ["", *_comparison(comparison, confidence)]
    return lines


def _failures(variants: Sequence[Mapping[str, Any]], confidence: int) -> list[str]:
    """Errors per attempt (SDK retries included) against errors per client session as its
    user saw them; a report without the block (an older schema) shows none."""
    rows = []
    for v in variants:
        failures = v.get("failures")
        if not isinstance(failures, Mapping):
            continue
        attempts, sessions = failures["attempts"], failures["client_sessions"]
        rows.append(
            [
                v["name"],
                str(attempts["total"]),
                f"{_pct(attempts['rate'])} {_ci(attempts['ci'])}",
                str(sessions["total"]),
                str(failures["retried"]),
                f"{_pct(sessions['rate'])} {_ci(sessions['ci'])}",
            ]
        )
    if not rows:
        return []
    header = [
        "variant",
        "attempts",
        f"failed attempts [{confidence}% CI]",
        "client sessions",
        "retried",
        f"failed as users saw [{confidence}% CI]",
    ]
    return text_table(header, rows)


def _comparison(comparison: Mapping[str, Any], confidence: int) -> list[str]:
    lines = [f"{comparison['variant']} vs {comparison['control']} (differences in points / ms):"]
    rows = []
    wer = comparison["wer"]
    if wer is not None:
        rows.append(
            [
                "WER",
                _pp(wer["difference"]),
                _ci(wer["ci"], "pp"),
                _ci(wer["always_valid"]["ci"], "pp"),
                f"{wer['always_valid']['p_value']:.3g}",
            ]
        )
    for name, rate in comparison["rates"].items():
        if rate["difference"] is None:
            continue
        rows.append(
            [
                f"{name} rate",
                _pp(rate["difference"]),
                _ci(rate["ci"], "pp"),
                _ci(rate["always_valid"]["ci"], "pp"),
                f"{rate['always_valid']['p_value']:.3g}",
            ]
        )
    for metric, latency in comparison["latency"].items():
        if latency["median_difference"] is None:
            continue
        rows.append(
            [
                f"median {metric}",
                _dms(latency["median_difference"]),
                _ci(latency["ci"], "dms"),
                "",
                "",
            ]
        )
    lines += text_table(
        [
            "metric",
            "difference",
            f"{confidence}% CI",
            f"always-valid {confidence}% CI",
            "always-valid p",
        ],
        rows,
    )
    shadow = comparison["shadow"]
    if shadow is not None:
        lines.append(
            f"Shadow pairs (identical audio): {shadow['pairs']} utterances, WER "
            f"{_pct(shadow['control_wer'])} -> {_pct(shadow['challenger_wer'])}, "
            f"difference {_pp(shadow['difference'])} pp {_ci(shadow['ci'], 'pp')}"
        )
    for guardrail in comparison["guardrails"]:
        lines.append(
            f"Guardrail {guardrail['metric']}: {guardrail['status']} - {guardrail['detail']}"
        )
    return lines
