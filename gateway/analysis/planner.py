"""How much longer? The planner's view of an experiment still collecting.

From a phase of the report: the variance of the deciding WER comparison's last look (which
already reflects the units' clustering and the labelled share), the labelled utterances per
arm it rests on, and the pace at which they arrived give, for each gain of interest, the
labelled utterances per arm the always-valid test needs (`gateway.stats.planning`) and the
days that takes at that pace. `speech-gateway plan` and the report's `recommendation.plan`
both come from here; the same numbers can be had from stated assumptions instead
(`assumed`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from gateway.analysis.evidence import WerEvidence
from gateway.analysis.model import Json
from gateway.stats.planning import Plan, assumed_kappa, design_effect, plan

RELATIVE_GAINS: Final = (0.05, 0.10, 0.20)  # the report's rows: gains relative to control
DAY_S: Final = 86_400.0


def plan_rows(
    gains: Sequence[float],
    kappa: float,
    *,
    control_wer: float,
    alpha: float,
    power: float,
    min_gain: float,
    challengers: int,
    per_day: float | None,
    already: float = 0.0,
) -> list[Json]:
    """One row per gain (a fraction: 0.01 is one point): utterances per arm and days."""
    rows: list[Json] = []
    for gain in gains:
        found: Plan | None = plan(
            gain, kappa, alpha=alpha, power=power, min_gain=min_gain, challengers=challengers
        )
        days = None if found is None or per_day is None else found.days(per_day, already)
        rows.append(
            {
                "gain": gain,
                "relative": gain / control_wer if control_wer else None,
                # null: the gain does not exceed the minimum worth shipping
                "labelled_per_arm": None if found is None else found.labelled_per_arm,
                "days": None if days is None else round(days, 2),
            }
        )
    return rows


def from_phase(
    phase: Mapping[str, Any],
    variant: str,
    evidence: WerEvidence,
    *,
    alpha: float,
    power: float = 0.8,
    min_gain: float = 0.0,
    gains: Sequence[float] | None = None,
) -> Json | None:
    """The plan for `variant` from the data so far; None without a usable WER look."""
    usable = [(d, v) for d, v in evidence.looks if math.isfinite(v) and v > 0 and math.isfinite(d)]
    control = next(v for v in phase["variants"] if v["is_control"])
    control_wer = (control.get("wer") or {}).get("wer")
    if not usable or not evidence.utterances or control_wer is None:
        return None
    kappa = usable[-1][1] * evidence.utterances
    elapsed = _seconds(phase["last_record"]) - _seconds(phase["first_record"])
    days = max(elapsed, 1.0) / DAY_S
    per_day = evidence.utterances / days
    if gains is None:
        gains = [control_wer * r for r in RELATIVE_GAINS if control_wer > 0]
    challengers = max(1, len(phase["comparisons"]))
    return {
        "variant": variant,
        "evidence": evidence.source,
        "control_wer": control_wer,
        "labelled_per_arm": evidence.utterances,
        "days_so_far": round(days, 3),
        "labelled_per_arm_per_day": round(per_day, 1),
        "power": power,
        "alpha": round(alpha / challengers, 10),
        "challengers": challengers,
        "min_wer_gain": min_gain,
        "kappa": kappa,
        "gains": plan_rows(
            gains,
            kappa,
            control_wer=control_wer,
            alpha=alpha,
            power=power,
            min_gain=min_gain,
            challengers=challengers,
            per_day=per_day,
            already=evidence.utterances,
        ),
    }


def assumed(
    *,
    base_wer: float,
    gains: Sequence[float],
    alpha: float,
    power: float,
    min_gain: float,
    challengers: int,
    units_per_day: float,
    labelled_share: float,
    utterances_per_unit: float,
    words_per_utterance: float,
    icc: float | None,
    design: float | None,
) -> Json:
    """The plan from stated assumptions (every share and rate a fraction)."""
    if design is None:
        design = design_effect(utterances_per_unit * words_per_utterance, icc or 0.0)
    arm_share = 1.0 / (challengers + 1)  # an even split of the traffic
    per_day = units_per_day * arm_share * utterances_per_unit * labelled_share
    rows: list[Json] = []
    for gain in gains:
        kappa = assumed_kappa(
            base_wer, gain, words_per_utterance=words_per_utterance, design=design
        )
        rows.extend(
            plan_rows(
                [gain],
                kappa,
                control_wer=base_wer,
                alpha=alpha,
                power=power,
                min_gain=min_gain,
                challengers=challengers,
                per_day=per_day,
            )
        )
    return {
        "variant": None,
        "evidence": "assumptions",
        "control_wer": base_wer,
        "labelled_per_arm": 0,
        "days_so_far": 0.0,
        "labelled_per_arm_per_day": round(per_day, 1),
        "power": power,
        "alpha": round(alpha / challengers, 10),
        "challengers": challengers,
        "min_wer_gain": min_gain,
        "design_effect": design,
        "gains": rows,
    }


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def render_plan(found: Mapping[str, Any]) -> str:
    """A plan as the terminal shows it (`speech-gateway plan`, and the report's text)."""
    lines = []
    if found["variant"] is not None:
        lines.append(
            f"Plan for {found['variant']} ({found['evidence'].replace('_', ' ')} evidence): "
            f"{found['labelled_per_arm']:,} labelled utterances per arm in "
            f"{found['days_so_far']:g} days, {found['labelled_per_arm_per_day']:,.1f} a day"
        )
    else:
        lines.append(
            f"Plan from assumptions: {found['labelled_per_arm_per_day']:,.1f} labelled "
            f"utterances per arm a day (design effect {found['design_effect']:.2f})"
        )
    lines.append(
        f"  control WER {found['control_wer'] * 100:.1f} %; always-valid test at alpha "
        f"{found['alpha']:.3g} ({found['challengers']} challenger(s), Holm), power "
        f"{found['power']:.0%}, minimum gain {found['min_wer_gain'] * 100:.1f} points"
    )
    days_header = "more days" if found["labelled_per_arm"] else "days"
    lines.append(f"  {'gain':>16}  {'labelled per arm':>16}  {days_header:>9}")
    for row in found["gains"]:
        relative = "" if row["relative"] is None else f" ({row['relative']:.0%})"
        gain = f"{row['gain'] * 100:.2f} pp{relative}"
        if row["labelled_per_arm"] is None:
            lines.append(f"  {gain:>16}  not beyond the minimum gain")
            continue
        days = "?" if row["days"] is None else f"{row['days']:.1f}"
        lines.append(f"  {gain:>16}  {row['labelled_per_arm']:>16,}  {days:>9}")
    return "\n".join(lines)
