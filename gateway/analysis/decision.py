"""Guardrails and the recommendation: what the numbers of a phase mean for the rollout.

In the spirit of the pre-built-vs-custom decision: a custom model ships only when its WER
gain is real (the always-valid interval of the difference excludes zero, so checking the
report every day does not manufacture a win) and nothing the users feel gets worse — errors,
refusals and latency are guardrails. A guardrail *regresses* when the challenger is worse
beyond its margin and the interval of the difference excludes zero. The rules, in order,
are listed in docs/analysis.md ("The recommendation").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from gateway.stats.bootstrap import quantile

if TYPE_CHECKING:
    from gateway.analysis.observations import VariantObservations
    from gateway.analysis.report import AnalysisOptions, ExperimentInfo

Json = dict[str, Any]

KEEP_BASE: Final = "keep_base"
KEEP_COLLECTING: Final = "keep_collecting"
RAMP_UP: Final = "ramp_up"
SHIP_CUSTOM: Final = "ship_custom"
ROLL_BACK: Final = "roll_back"
# When challengers disagree, the most urgent action wins.
_PRIORITY: Final = (ROLL_BACK, SHIP_CUSTOM, RAMP_UP, KEEP_COLLECTING, KEEP_BASE)


def _points(value: float) -> str:
    return f"{value * 100:+.1f} pp"


def _ci_points(ci: list[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "interval unknown"
    return f"CI {ci[0] * 100:+.1f} to {ci[1] * 100:+.1f} pp"


def guardrails(
    comparison: Mapping[str, Any],
    control: VariantObservations,
    challenger: VariantObservations,
    options: AnalysisOptions,
) -> list[Json]:
    """The challenger's guardrails against the control: error, cancellation, latency."""
    checks: list[Json] = []
    enough = min(len(control.outcomes), len(challenger.outcomes)) >= options.min_outcomes
    for metric, category in (("error_rate", "error"), ("cancellation_rate", "cancellation")):
        rate = comparison["rates"][category]
        if not enough or rate["difference"] is None:
            checks.append(_insufficient(metric, options.min_outcomes))
            continue
        low = rate["ci"][0]
        regressed = low > 0 and rate["difference"] > options.rate_margin
        checks.append(
            {
                "metric": metric,
                "status": "regressed" if regressed else "ok",
                "detail": f"{_points(rate['difference'])} ({_ci_points(rate['ci'])})",
            }
        )
    checks.append(_latency_guardrail(comparison, control, challenger, options))
    return checks


def _insufficient(metric: str, needed: int) -> Json:
    return {
        "metric": metric,
        "status": "insufficient",
        "detail": f"fewer than {needed} outcomes in an arm",
    }


def _latency_guardrail(
    comparison: Mapping[str, Any],
    control: VariantObservations,
    challenger: VariantObservations,
    options: AnalysisOptions,
) -> Json:
    metric = "final_latency_p50_ms"
    latency = comparison["latency"]["final_latency_ms"]
    values = [v for o in control.outcomes if (v := o.final_latency_ms) is not None]
    challenger_n = sum(o.final_latency_ms is not None for o in challenger.outcomes)
    if min(len(values), challenger_n) < options.min_outcomes or latency["ci"] is None:
        return _insufficient(metric, options.min_outcomes)
    median = quantile(values, 0.5)
    margin = max(options.latency_margin_ms, options.latency_margin_share * median)
    difference = latency["median_difference"]
    low, high = latency["ci"]
    regressed = low is not None and low > 0 and difference > margin
    return {
        "metric": metric,
        "status": "regressed" if regressed else "ok",
        "detail": f"{difference:+.0f} ms (CI {_ms(low)} to {_ms(high)}; margin {margin:.0f} ms)",
    }


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:+.0f}"


def recommend(
    phase: Mapping[str, Any] | None, info: ExperimentInfo | None, options: AnalysisOptions
) -> Json:
    """The action for the most relevant phase (the current one, else the latest)."""
    if phase is None or not phase["comparisons"]:
        return {
            "action": KEEP_COLLECTING,
            "variant": None,
            "phase": None if phase is None else phase["phase"],
            "reason": "no challenger has outcomes next to the control yet",
        }
    if phase["srm"]["status"] == "mismatch":
        return {
            "action": KEEP_COLLECTING,
            "variant": None,
            "phase": phase["phase"],
            "reason": (
                f"sample ratio mismatch (p = {phase['srm']['p_value']:.2g}): the traffic split "
                "is not the configured one, so no comparison can be trusted; find the cause "
                "(targeting, unit ids, failing sessions) first"
            ),
        }
    variants = {v["name"]: v for v in phase["variants"]}
    choices = [
        _judge(comparison, variants, phase, info, options) for comparison in phase["comparisons"]
    ]
    choices.sort(key=lambda choice: _PRIORITY.index(choice["action"]))
    best = choices[0]
    if best["action"] == SHIP_CUSTOM:
        # Of several winners, ship the one with the lowest WER.
        winners = [c for c in choices if c["action"] == SHIP_CUSTOM]
        best = min(winners, key=lambda c: c["_wer"])
    best.pop("_wer", None)
    return best


def _judge(
    comparison: Mapping[str, Any],
    variants: Mapping[str, Mapping[str, Any]],
    phase: Mapping[str, Any],
    info: ExperimentInfo | None,
    options: AnalysisOptions,
) -> Json:
    name = comparison["variant"]

    def choice(action: str, reason: str, wer: float = 0.0) -> Json:
        return {
            "action": action,
            "variant": name,
            "phase": phase["phase"],
            "reason": f"{name}: {reason}",
            "_wer": wer,
        }

    regressed = [g for g in comparison["guardrails"] if g["status"] == "regressed"]
    if regressed:
        what = "; ".join(f"{g['metric']} {g['detail']}" for g in regressed)
        return choice(ROLL_BACK, f"guardrail regressed: {what}")
    wer = comparison["wer"]
    scored = [variants[n]["wer"] for n in (name, comparison["control"])]
    labelled = min(0 if w is None else w["utterances"] for w in scored)
    if wer is None and min(variants[n]["labelled"] for n in (name, comparison["control"])):
        return _undecided(
            choice,
            "labelled utterances carry no recognised text (outcomes.text_privacy is hash or "
            "none), so WER cannot be scored",
            name,
            phase,
            info,
        )
    if labelled < options.min_labelled or wer is None:
        return _undecided(
            choice,
            f"only {labelled} labelled utterances in an arm (at least {options.min_labelled} "
            "needed to judge WER)",
            name,
            phase,
            info,
        )
    conflicts = wer["always_valid"]["conflicts"]
    if conflicts:
        return choice(
            KEEP_COLLECTING,
            f"the WER effect changed over time ({conflicts} look(s) disagree with earlier "
            "ones: drift, or a model changed behind the same endpoint?); see the cumulative "
            "effect plot before deciding",
        )
    interval = wer["always_valid"]["ci"]
    low, high = interval
    confidence = round(options.confidence * 100)
    text = (
        f"WER {_points(wer['difference'])} vs {comparison['control']} "
        f"(always-valid {confidence}% {_ci_points(interval)})"
    )
    if high is not None and high < 0:
        insufficient = [g["metric"] for g in comparison["guardrails"] if g["status"] != "ok"]
        if insufficient:
            return _undecided(
                choice,
                f"{text}, but guardrails {', '.join(insufficient)} lack data",
                name,
                phase,
                info,
            )
        return choice(SHIP_CUSTOM, f"{text}; no guardrail regresses", variants[name]["wer"]["wer"])
    if low is not None and low > 0:
        return choice(KEEP_BASE, f"{text}: the challenger is worse")
    return _undecided(choice, f"{text}: not conclusive yet", name, phase, info)


def _undecided(
    choice: Any, reason: str, name: str, phase: Mapping[str, Any], info: ExperimentInfo | None
) -> Json:
    """Ramp up when the challenger gets under half the traffic, else keep collecting."""
    share = None
    if info is not None and phase.get("current"):
        share = info.shares.get(name)
    if share is not None and 0 < share < 0.5:
        result: Json = choice(
            RAMP_UP, f"{reason}; no guardrail regresses at {share:.0%} of traffic"
        )
        return result
    collecting: Json = choice(KEEP_COLLECTING, reason)
    return collecting
