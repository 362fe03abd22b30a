"""Guardrails and the recommendation: what the numbers of a phase mean for the rollout.

In the spirit of the pre-built-vs-custom decision: a custom model ships only when its WER
gain is real (the always-valid interval of the difference excludes zero, so checking the
report every day does not manufacture a win) and nothing the users feel gets worse — errors,
refusals and latency are guardrails. A guardrail *regresses* when the always-valid,
unit-clustered lower bound of challenger - control exceeds its margin at some look (the
same one-sided test as the live control plane's, `gateway.control.guardrails`). The rules,
in order, are listed in docs/analysis.md ("The recommendation").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gateway.analysis.evidence import WerEvidence, family_test, multiplicity_json, wer_evidence
from gateway.analysis.model import AnalysisOptions, ExperimentInfo, Json
from gateway.analysis.observations import OutcomeTable, VariantObservations, below_sums
from gateway.analysis.planner import from_phase
from gateway.control.guardrails import (
    LATENCY_EDGES_MS,
    ArmEvidence,
    Assessment,
    Guardrails,
    assess,
)
from gateway.stats import clustered
from gateway.stats.multiplicity import HolmResult

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
    control: VariantObservations,
    challenger: VariantObservations,
    ends: Sequence[float],
    options: AnalysisOptions,
    configured: Guardrails | None = None,
) -> list[Json]:
    """The challenger's guardrails against the control, tested as the live control plane
    tests them (`gateway.control.guardrails.assess`), on the units' sums, at every look.

    With the experiment's configured guardrails (`configured`) their limits, alpha and
    minimum are used; without, the error and cancellation rates with `options.rate_margin`
    and the median latency with the latency margin. A guardrail regresses when its
    always-valid lower bound of challenger - control exceeded its limit at some look; as the
    bound holds at every look at once, checking daily does not inflate false rollbacks.
    """
    table_a, table_b = control.table, challenger.table
    tests = configured or _default_guardrails(table_a, options)
    last: dict[str, Assessment] = {}
    highest: dict[str, Assessment] = {}  # the look with the highest lower bound
    looks = sorted({(table_a.upto(end), table_b.upto(end)) for end in ends})
    latencies_a, latencies_b = _Latencies.of(table_a), _Latencies.of(table_b)
    for upto_a, upto_b in looks:
        for check in assess(
            tests,
            guardrail_evidence(table_a, upto_a, tests, latencies_a),
            guardrail_evidence(table_b, upto_b, tests, latencies_b),
        ):
            last[check.guardrail] = check
            best = highest.get(check.guardrail)
            if check.lower_bound is not None and (
                best is None or best.lower_bound is None or check.lower_bound > best.lower_bound
            ):
                highest[check.guardrail] = check
    return [_guardrail_json(check, highest.get(name), tests) for name, check in last.items()]


def _default_guardrails(control: OutcomeTable, options: AnalysisOptions) -> Guardrails:
    """The analysis' own guardrails when the experiment configures none (docs/analysis.md)."""
    values, _ = control.latency_values("final_latency_ms")
    median = float(np.median(values)) if values.size else 0.0
    return Guardrails(
        max_error_rate_increase=options.rate_margin,
        max_cancellation_rate_increase=options.rate_margin,
        latency_quantile=0.5,
        max_latency_increase_ms=max(
            options.latency_margin_ms, options.latency_margin_share * median
        ),
        min_outcomes=max(20, options.min_outcomes),
        alpha=options.alpha,
    )


@dataclass(frozen=True, slots=True)
class _Latencies:
    """An arm's recorded final latencies, their units and histogram buckets, found once for
    all its looks: a look's are a prefix (`before[upto]` of them)."""

    values: npt.NDArray[np.float64]
    units: npt.NDArray[np.intp]
    buckets: npt.NDArray[np.intp]
    before: npt.NDArray[np.intp]  # recorded latencies among the first i outcomes

    @classmethod
    def of(cls, table: OutcomeTable) -> _Latencies:
        values, units = table.latency_values("final_latency_ms")
        recorded = ~np.isnan(table.latencies["final_latency_ms"])
        before = np.concatenate([[0], np.cumsum(recorded)]).astype(np.intp)
        edges = np.asarray(LATENCY_EDGES_MS)
        buckets = np.minimum(np.searchsorted(edges, values, side="right"), edges.size - 1)
        return cls(values, units, buckets.astype(np.intp), before)


def guardrail_evidence(
    table: OutcomeTable, upto: int, tests: Guardrails, latencies: _Latencies | None = None
) -> ArmEvidence:
    """An arm's evidence from its first `upto` outcomes, clustered by unit (`latencies`:
    the table's, when already found)."""
    found = latencies or _Latencies.of(table)
    recorded = int(found.before[upto])
    values, units = found.values[:recorded], found.units[:recorded]
    histogram: tuple[int, ...] = ()
    design_effect = 1.0
    if values.size:
        edges = np.asarray(LATENCY_EDGES_MS)
        counts = np.bincount(found.buckets[:recorded], minlength=edges.size)
        histogram = tuple(int(c) for c in counts)
        at = float(np.quantile(values, tests.latency_quantile))
        design_effect = clustered.design_effect(below_sums(values, units, at))
    return ArmEvidence(
        table.rate_sums("error", upto),
        table.rate_sums("cancellation", upto),
        table.rate_sums("no_match", upto),
        histogram,
        design_effect,
    )


def _guardrail_json(last: Assessment, highest: Assessment | None, tests: Guardrails) -> Json:
    if last.guardrail == "latency":
        return _latency_guardrail(last, highest, tests)
    metric = last.guardrail
    if highest is None or last.control is None or last.challenger is None:
        return _insufficient(metric, tests.min_outcomes)
    assert highest.lower_bound is not None
    return {
        "metric": metric,
        "status": "regressed" if highest.breached else "ok",
        "detail": f"{_points(last.challenger - last.control)} (always-valid lower bound "
        f"{_points(highest.lower_bound)}; margin {_points(last.limit)})",
    }


def _insufficient(metric: str, needed: int) -> Json:
    return {
        "metric": metric,
        "status": "insufficient",
        "detail": f"fewer than {needed} outcomes or {clustered.MIN_UNITS} units in an arm",
    }


def _latency_guardrail(last: Assessment, highest: Assessment | None, tests: Guardrails) -> Json:
    metric = f"final_latency_p{100.0 * tests.latency_quantile:g}_ms"
    if last.control is None or last.challenger is None or highest is None:
        return _insufficient(metric, tests.min_outcomes)
    assert highest.lower_bound is not None
    difference = last.challenger - last.control
    return {
        "metric": metric,
        "status": "regressed" if highest.breached else "ok",
        "detail": f"{difference:+.0f} ms (always-valid lower bound {_ms(highest.lower_bound)}"
        f"; margin {last.limit:.0f} ms)",
    }


def _ms(bound: float) -> str:
    """A lower bound in ms; none yet while the control's quantile is unbounded above."""
    return f"{bound:+.0f} ms" if math.isfinite(bound) else "none yet"


def recommend(
    phase: Mapping[str, Any] | None, info: ExperimentInfo | None, options: AnalysisOptions
) -> Json:
    """The action for the most relevant phase (the current one, else the latest).

    Every challenger's WER test is one of a family, corrected together (Holm, in
    `gateway.analysis.evidence`); `multiplicity` in the result says how, and `evidence`
    which comparison decided the chosen challenger's WER question.
    """
    if phase is None or not phase["comparisons"]:
        return {
            "action": KEEP_COLLECTING,
            "variant": None,
            "phase": None if phase is None else phase["phase"],
            "reason": "no challenger has outcomes next to the control yet",
            "evidence": None,
            "multiplicity": None,
            "plan": None,
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
            "evidence": None,
            "multiplicity": None,
            "plan": None,
        }
    variants = {v["name"]: v for v in phase["variants"]}
    min_gain = info.min_wer_gain if info is not None else 0.0
    evidence = {c["variant"]: wer_evidence(c, variants, min_gain) for c in phase["comparisons"]}
    tests = family_test(evidence, options.alpha)
    choices = [
        _judge(
            comparison,
            _Question(evidence[comparison["variant"]], tests[comparison["variant"]], min_gain),
            phase,
            info,
            options,
        )
        for comparison in phase["comparisons"]
    ]
    choices.sort(key=lambda choice: _PRIORITY.index(choice["action"]))
    best = choices[0]
    if best["action"] == SHIP_CUSTOM:
        # Of several winners, ship the one with the lowest WER.
        winners = [c for c in choices if c["action"] == SHIP_CUSTOM]
        best = min(winners, key=lambda c: c["_wer"])
    best.pop("_wer", None)
    best["multiplicity"] = multiplicity_json(evidence, tests, options.alpha, min_gain)
    best["plan"] = None
    if best["action"] in (KEEP_COLLECTING, RAMP_UP) and best["variant"] is not None:
        # Still collecting: how much longer, at the pace so far (gateway.analysis.planner).
        name = best["variant"]
        best["plan"] = from_phase(
            phase, name, evidence[name], alpha=options.alpha, min_gain=min_gain
        )
    return best


@dataclass(frozen=True, slots=True)
class _Question:
    """One challenger's WER question: its evidence, its Holm verdict, the minimum gain."""

    evidence: WerEvidence
    test: HolmResult
    min_gain: float


def _judge(
    comparison: Mapping[str, Any],
    question: _Question,
    phase: Mapping[str, Any],
    info: ExperimentInfo | None,
    options: AnalysisOptions,
) -> Json:
    name = comparison["variant"]
    found = question.evidence

    def choice(action: str, reason: str, wer: float = 0.0, *, decided: bool = True) -> Json:
        return {
            "action": action,
            "variant": name,
            "phase": phase["phase"],
            "reason": f"{name}: {reason}",
            # Which WER comparison decided (null when WER did not: a guardrail did, or
            # there is too little WER evidence yet).
            "evidence": found.source if decided else None,
            "_wer": wer,
        }

    def undecided(reason: str) -> Json:
        return _undecided(choice, reason, name, phase, info)

    regressed = [g for g in comparison["guardrails"] if g["status"] == "regressed"]
    if regressed:
        what = "; ".join(f"{g['metric']} {g['detail']}" for g in regressed)
        return choice(ROLL_BACK, f"guardrail regressed: {what}", decided=False)
    control = comparison["control"]
    labelled = [phase_variant["labelled"] for phase_variant in _arms(phase, name, control)]
    if found.difference is None and min(labelled):
        return undecided(
            "labelled utterances carry no recognised text (outcomes.text_privacy is hash or "
            "none), so WER cannot be scored"
        )
    if found.utterances < options.min_labelled or found.difference is None:
        what = "shadow pairs" if found.source == "shadow_pairs" else "labelled utterances in an arm"
        return undecided(
            f"only {found.utterances} {what} (at least {options.min_labelled} needed to judge WER)"
        )
    if found.conflicts:
        return choice(
            KEEP_COLLECTING,
            f"the WER effect changed over time ({found.conflicts} look(s) disagree with "
            "earlier ones: drift, or a model changed behind the same endpoint?); see the "
            "cumulative effect plot before deciding",
        )
    text = _wer_text(found, control, question.test, options)
    low = (found.interval or [None, None])[0]
    if question.test.rejected:
        insufficient = [g["metric"] for g in comparison["guardrails"] if g["status"] != "ok"]
        if insufficient:
            return undecided(f"{text}, but guardrails {', '.join(insufficient)} lack data")
        wer = comparison["shadow"]["challenger_wer"] if found.source == "shadow_pairs" else None
        if wer is None:
            wer = _variant(phase, name)["wer"]["wer"]
        return choice(SHIP_CUSTOM, f"{text}; no guardrail regresses", wer)
    if low is not None and low > 0:
        return choice(KEEP_BASE, f"{text}: the challenger is worse")
    if question.min_gain > 0 and low is not None and low > -question.min_gain:
        return choice(
            KEEP_BASE,
            f"{text}: the gain is below the minimum worth shipping "
            f"({question.min_gain * 100:.1f} points)",
        )
    return undecided(f"{text}: not conclusive yet")


def _variant(phase: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return next(v for v in phase["variants"] if v["name"] == name)


def _arms(phase: Mapping[str, Any], name: str, control: str) -> list[Mapping[str, Any]]:
    return [_variant(phase, name), _variant(phase, control)]


def _wer_text(found: WerEvidence, control: str, test: HolmResult, options: AnalysisOptions) -> str:
    source = "on shadow pairs (same audio)" if found.source == "shadow_pairs" else "unpaired"
    confidence = round(options.confidence * 100)
    difference = found.difference if found.difference is not None else 0.0
    return (
        f"WER {_points(difference)} vs {control} {source} "
        f"(always-valid {confidence}% {_ci_points(found.interval)}; "
        f"Holm-adjusted p = {test.adjusted:.2g})"
    )


def _undecided(
    choice: Any, reason: str, name: str, phase: Mapping[str, Any], info: ExperimentInfo | None
) -> Json:
    """Ramp up when the challenger gets under half the traffic, else keep collecting."""
    share = None
    if info is not None and phase.get("current"):
        share = info.shares.get(name)
    if share is not None and 0 < share < 0.5:
        result: Json = choice(
            RAMP_UP, f"{reason}; no guardrail regresses at {share:.0%} of traffic", decided=False
        )
        return result
    collecting: Json = choice(KEEP_COLLECTING, reason, decided=False)
    return collecting
