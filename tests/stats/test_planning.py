"""The planner: its arithmetic, and its power checked by simulating the experiments it plans.

The simulation draws units whose word errors are correlated (each unit's error rate from a
Beta with the planned within-unit correlation), runs them for the planned number of days
with one look a day, and applies the always-valid test the decision uses
(`better_p_value`). The planner judges only the last look, so the simulated power must
reach the planned power (less three Monte Carlo errors) and may exceed it a little.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from gateway.stats.multiplicity import better_p_value
from gateway.stats.planning import (
    assumed_kappa,
    design_effect,
    detection_variance,
    half_width,
    plan,
    power_at,
)
from gateway.stats.sequential import DEFAULT_TAU

TAU2 = DEFAULT_TAU["wer"] ** 2


def test_the_detection_variance_solves_its_equation() -> None:
    variance = detection_variance(0.02, alpha=0.05, power=0.8)
    assert half_width(variance, alpha=0.05) + 0.8416212 * math.sqrt(variance) == pytest.approx(
        0.02, rel=1e-6
    )
    assert power_at(0.02, variance, alpha=0.05) == pytest.approx(0.8, abs=1e-6)


def test_the_plan_grows_as_expected() -> None:
    kappa = assumed_kappa(0.15, 0.03, words_per_utterance=8, design=design_effect(40, 0.05))
    base = plan(0.03, kappa)
    assert base is not None
    # Halving the gain about quadruples the utterances (a bit more: the mixture's log term).
    smaller = plan(0.015, kappa)
    assert smaller is not None
    assert 3.5 < smaller.labelled_per_arm / base.labelled_per_arm < 5
    # More challengers (Holm's alpha / k), more power, a minimum gain: all need more.
    for harder in (
        plan(0.03, kappa, challengers=3),
        plan(0.03, kappa, power=0.9),
        plan(0.03, kappa, min_gain=0.01),
    ):
        assert harder is not None
        assert harder.labelled_per_arm > base.labelled_per_arm
    assert plan(0.01, kappa, min_gain=0.01) is None
    assert base.days(150) == pytest.approx(base.labelled_per_arm / 150)
    assert base.days(150, already=base.labelled_per_arm + 5) == 0.0
    assert base.days(0) is None
    with pytest.raises(ValueError, match="icc"):
        design_effect(40, 1.5)
    with pytest.raises(ValueError, match="gain"):
        assumed_kappa(0.15, 0.2, words_per_utterance=8, design=1.0)


def _cumulative(rng: np.random.Generator, runs: int, units: int, wer: float, icc: float) -> Any:
    """Cumulative sums over units (runs x units): errors, words, e^2, e*w, w^2."""
    words = np.full((runs, units), 40.0)  # 5 utterances of 8 words
    concentration = 1 / icc - 1  # Beta-binomial: icc = 1 / (concentration + 1)
    rates = rng.beta(wer * concentration, (1 - wer) * concentration, size=(runs, units))
    errors = rng.binomial(words.astype(int), rates).astype(float)
    return [np.cumsum(x, axis=1) for x in (errors, words, errors**2, errors * words, words**2)]


def _ratio(sums: Any, n: int) -> tuple[Any, Any]:
    """WER and delta-method variance (as `ratio_variance`) after the first n units."""
    e, w, ee, ew, ww = (s[:, n - 1] for s in sums)
    ratio = e / w
    residual = ee - 2 * ratio * ew + ratio**2 * ww
    return ratio, n / (n - 1) * residual / w**2


def test_the_planned_sample_detects_the_gain_with_the_planned_power() -> None:
    base_wer, gain, icc, units_per_arm_per_day = 0.15, 0.03, 0.05, 30
    kappa = assumed_kappa(base_wer, gain, words_per_utterance=8, design=design_effect(40, icc))
    planned = plan(gain, kappa, power=0.8)
    assert planned is not None
    days = math.ceil(planned.days(units_per_arm_per_day * 5) or 0)
    units = days * units_per_arm_per_day
    runs = 300
    rng = np.random.default_rng(11)
    control = _cumulative(rng, runs, units, base_wer, icc)
    challenger = _cumulative(rng, runs, units, base_wer - gain, icc)
    looks = []
    for day in range(1, days + 1):
        n = day * units_per_arm_per_day
        wer_a, var_a = _ratio(control, n)
        wer_b, var_b = _ratio(challenger, n)
        looks.append((wer_b - wer_a, var_a + var_b))
    detected = sum(
        better_p_value([(d[i], v[i]) for d, v in looks], tau2=TAU2, bound=0.0) <= 0.05
        for i in range(runs)
    )
    power = detected / runs
    error = 3 * math.sqrt(0.8 * 0.2 / runs)
    print(f"planned {planned.labelled_per_arm} per arm over {days} days: power {power:.3f}")
    assert 0.8 - error <= power <= 0.97
