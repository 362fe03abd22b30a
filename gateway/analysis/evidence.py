"""The WER evidence behind each challenger's verdict, and the one test over all challengers.

Each challenger's WER question is one hypothesis: "it is not better than the control by at
least the minimum gain worth shipping" (`min_wer_gain_points`, 0 unless configured). Its
evidence is, decided by the experiment's set-up and never by the results:

* `shadow_pairs` when the phase has labelled shadow pairs between the challenger and the
  control (the experiment shadows one of them): the same audio recognised by both, so the
  unit-to-unit variation cancels and the paired difference is far tighter than the
  unpaired one; the unpaired comparison is then descriptive;
* `unpaired` otherwise: the challenger's own units against the control's.

The always-valid p-values of all challengers (`gateway.stats.multiplicity.better_p_value`)
go through Holm's step-down together, so the chance that *any* challenger is shipped while
none is better stays at most alpha, however many challengers there are and however often the
analysis runs. Everything else in the report (rates, latency, per-variant WER, fixed-horizon
intervals) is descriptive: each interval is at the report's confidence, uncorrected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.analysis.model import Json
from gateway.stats.multiplicity import HolmResult, better_p_value, holm
from gateway.stats.sequential import DEFAULT_TAU

Source = Literal["shadow_pairs", "unpaired"]

SECONDARY: Final = (
    "only the primary WER tests are corrected for multiplicity (Holm across challengers, "
    "always-valid p-values); guardrails are judged as described under Guardrails and a roll "
    "back is never held back by a correction; every other interval and p-value (rates, "
    "latency, per-variant WER, the fixed-horizon WER interval, the shadow comparison when "
    "it does not decide) is at the report's confidence, uncorrected, and descriptive"
)


@dataclass(frozen=True, slots=True)
class WerEvidence:
    """One challenger's WER evidence: the difference (challenger - control) and its tests."""

    source: Source
    difference: float | None
    interval: list[float | None] | None  # always-valid, at the report's confidence
    conflicts: int
    utterances: int  # labelled utterances in the smaller arm (pairs, for shadow pairs)
    looks: Sequence[tuple[float, float]]
    p_value: float  # always-valid p-value of "not better by the minimum gain"


def wer_evidence(
    comparison: Mapping[str, Any],
    variants: Mapping[str, Mapping[str, Any]],
    min_gain: float,
) -> WerEvidence:
    """The evidence that decides `comparison`'s WER question (see the module's doc)."""
    shadow = comparison.get("shadow")
    if shadow is not None:
        return _evidence("shadow_pairs", shadow, shadow["pairs"], min_gain)
    wer = comparison["wer"]
    scored = [variants[n]["wer"] for n in (comparison["variant"], comparison["control"])]
    utterances = min(0 if w is None else int(w["utterances"]) for w in scored)
    if wer is None:
        return WerEvidence("unpaired", None, None, 0, utterances, (), 1.0)
    return _evidence("unpaired", wer, utterances, min_gain)


def _evidence(source: Source, result: Mapping[str, Any], n: int, min_gain: float) -> WerEvidence:
    looks = [(float(d), float(v)) for d, v in result.get("looks") or ()]
    # Null until some look has enough units for a variance: no evidence yet.
    sequential = result.get("always_valid") or {"ci": None, "conflicts": 0}
    p_value = better_p_value(looks, tau2=DEFAULT_TAU["wer"] ** 2, bound=-min_gain)
    return WerEvidence(
        source,
        result["difference"],
        sequential["ci"],
        sequential["conflicts"],
        n,
        looks,
        p_value,
    )


def family_test(evidence: Mapping[str, WerEvidence], alpha: float) -> dict[str, HolmResult]:
    """Holm over every challenger's p-value: a challenger without evidence counts, at 1."""
    return holm({name: found.p_value for name, found in evidence.items()}, alpha)


def multiplicity_json(
    evidence: Mapping[str, WerEvidence],
    tests: Mapping[str, HolmResult],
    alpha: float,
    min_gain: float,
) -> Json:
    """The report's account of how the decision is corrected (`recommendation.multiplicity`)."""
    return {
        "method": "holm",
        "alpha": round(alpha, 10),
        "challengers": len(tests),
        "min_wer_gain": min_gain,
        "tests": [
            {
                "variant": name,
                "evidence": evidence[name].source,
                "p_value": result.p_value,
                "adjusted_p_value": result.adjusted,
                "threshold": result.threshold,
                "better": result.rejected,
            }
            for name, result in sorted(tests.items())
        ],
        "secondary": SECONDARY,
    }
