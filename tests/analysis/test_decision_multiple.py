"""Several challengers: Holm over the always-valid WER tests, the minimum gain, the evidence.

The simulation runs whole A/A/A/A experiments (three challengers identical to the control)
looked at every day, through the real `recommend`, and counts the experiments in which any
look says "ship custom": with Holm that stays at most alpha (plus three Monte Carlo standard
errors), whereas judging each challenger at alpha on its own does not promise it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from traffic import INFO, Traffic

from gateway.analysis.decision import SHIP_CUSTOM, recommend
from gateway.analysis.model import AnalysisOptions, ExperimentInfo
from gateway.analysis.report import build_report
from gateway.stats.multiplicity import better_p_value, holm
from gateway.stats.sequential import (
    DEFAULT_TAU,
    always_valid,
    mixture_p_value,
    ratio_variance,
)

ALPHA = 0.05
TAU2 = DEFAULT_TAU["wer"] ** 2


def test_holm_matches_the_textbook_step_down() -> None:
    # Sorted 0.01, 0.02, 0.04: compared with 0.05/3, 0.05/2, 0.05/1.
    results = holm({"a": 0.04, "b": 0.01, "c": 0.02}, 0.05)
    assert [results[n].rejected for n in "abc"] == [True, True, True]
    assert results["b"].adjusted == pytest.approx(0.03)
    assert results["c"].adjusted == pytest.approx(0.04)
    assert results["a"].adjusted == pytest.approx(0.04)
    # The step-down stops at the first failure: 0.03 > 0.05 / 2, so 0.04 is not rejected.
    stopped = holm({"a": 0.01, "b": 0.03, "c": 0.04}, 0.05)
    assert [stopped[n].rejected for n in "abc"] == [True, False, False]
    assert stopped["b"].adjusted == pytest.approx(0.06)
    assert stopped["c"].adjusted == pytest.approx(0.06)  # never below an earlier one
    with pytest.raises(ValueError, match="p-value of 'a'"):
        holm({"a": math.nan}, 0.05)


def test_the_one_sided_p_value_tests_the_minimum_gain() -> None:
    looks = [(-0.03, 1e-4), (-0.05, 4e-5)]
    # Against "no gain": the second look is the stronger evidence.
    assert better_p_value(looks, tau2=TAU2, bound=0.0) == pytest.approx(
        mixture_p_value(-0.05, 4e-5, tau2=TAU2)
    )
    # Against "less than 4 points of gain": only the second look lies beyond the bound.
    assert better_p_value(looks, tau2=TAU2, bound=-0.04) == pytest.approx(
        mixture_p_value(-0.01, 4e-5, tau2=TAU2)
    )
    # A worse challenger is no evidence of a gain; nor is a look without a variance.
    assert better_p_value([(0.05, 1e-5), (-0.05, math.inf)], tau2=TAU2, bound=0.0) == 1.0


def _units(rng: np.random.Generator, n: int, wer: float) -> tuple[Any, Any]:
    """Errors and words of n units: each unit speaks 1-10 utterances of about 8 words, with
    its own error rate (Beta around `wer`): units, not words, are independent."""
    words = 8 * rng.integers(1, 11, size=n) + rng.integers(0, 8, size=n)
    rates = rng.beta(8 * wer, 8 * (1 - wer), size=n)
    return rng.binomial(words, rates).astype(float), words.astype(float)


def _looks(arms: dict[str, tuple[Any, Any]], days: int, n_per_day: int) -> dict[str, list[Any]]:
    """Each challenger's always-valid looks, one a day, on the units that arrived so far."""
    control_errors, control_words = arms["base"]
    looks: dict[str, list[Any]] = {}
    for name, (errors, words) in arms.items():
        if name == "base":
            continue
        looks[name] = []
        for day in range(1, days + 1):
            n = day * n_per_day
            ea, wa, eb, wb = control_errors[:n], control_words[:n], errors[:n], words[:n]
            variance = ratio_variance(ea, wa) + ratio_variance(eb, wb)
            looks[name].append((eb.sum() / wb.sum() - ea.sum() / wa.sum(), variance))
    return looks


def _phase(looks: dict[str, list[Any]], units: int, confidence: float) -> dict[str, Any]:
    """The phase JSON `recommend` reads at a look, from each challenger's looks so far."""
    variants = [
        {
            "name": "base",
            "is_control": True,
            "labelled": units,
            "wer": {"utterances": units, "wer": 0.15},
        }
    ]
    comparisons = []
    for name, so_far in looks.items():
        wer = {"utterances": units, "wer": 0.15}
        variants.append({"name": name, "is_control": False, "labelled": units, "wer": wer})
        sequential = always_valid(so_far, tau2=TAU2, alpha=1 - confidence)
        comparisons.append(
            {
                "variant": name,
                "control": "base",
                "wer": {
                    "difference": so_far[-1][0],
                    "always_valid": {
                        "ci": list(sequential.interval),
                        "p_value": sequential.p_value,
                        "conflicts": 0,  # a constant effect: conflicts are chance here
                    },
                    "looks": so_far,
                },
                "shadow": None,
                "guardrails": [{"metric": "error_rate", "status": "ok", "detail": ""}],
            }
        )
    return {
        "phase": "p1",
        "first_record": "2026-11-01T00:00:00.000Z",
        "last_record": "2026-11-21T00:00:00.000Z",
        "srm": {"status": "ok"},
        "variants": variants,
        "comparisons": comparisons,
    }


def _ships(seed: int, wers: dict[str, float], days: int = 20, n_per_day: int = 15) -> bool:
    """Whether any daily look of one simulated experiment recommends shipping."""
    rng = np.random.default_rng(seed)
    arms = {name: _units(rng, days * n_per_day, wer) for name, wer in wers.items()}
    looks = _looks(arms, days, n_per_day)
    options = AnalysisOptions(min_labelled=20)
    for day in range(2, days + 1):
        phase = _phase({n: found[:day] for n, found in looks.items()}, day * n_per_day, 0.95)
        if recommend(phase, None, options)["action"] == SHIP_CUSTOM:
            return True
    return False


def test_three_identical_challengers_ship_at_most_alpha_under_daily_looks() -> None:
    runs = 300
    same = {"base": 0.15, "c1": 0.15, "c2": 0.15, "c3": 0.15}
    shipped = sum(_ships(seed, same) for seed in range(runs))
    rate = shipped / runs
    print(f"A/A/A/A: any ship in {rate:.3f} of {runs} runs")
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs), rate


def test_a_real_gain_among_identical_challengers_still_ships() -> None:
    wers = {"base": 0.15, "c1": 0.15, "c2": 0.15, "better": 0.10}
    shipped = sum(_ships(seed, wers) for seed in range(20))
    assert shipped >= 16


def test_the_report_says_how_it_corrects_and_which_evidence_decided() -> None:
    made = Traffic(seed=3)
    for i in range(40):
        made.utterance("base", 4 * i, word_error=0.35, unit=f"b{i}")
        made.utterance("c1", 4 * i + 1, word_error=0.35, unit=f"c{i}")
        made.utterance("custom", 4 * i + 2, word_error=0.03, unit=f"u{i}")
    info = ExperimentInfo(
        control="base", phase="p1", shares={"base": 0.34, "c1": 0.33, "custom": 0.33}
    )
    report = build_report("e", made.records, made.labels, info=info)
    recommendation = report["recommendation"]
    assert recommendation["action"] == SHIP_CUSTOM
    assert recommendation["variant"] == "custom"
    assert recommendation["evidence"] == "unpaired"
    family = recommendation["multiplicity"]
    assert family["method"] == "holm"
    assert family["challengers"] == 2
    tests = {t["variant"]: t for t in family["tests"]}
    assert tests["custom"]["better"]
    assert not tests["c1"]["better"]
    # The smallest p-value is compared with alpha / 2, the adjusted one doubled.
    assert tests["custom"]["threshold"] == pytest.approx(0.025)
    assert tests["custom"]["adjusted_p_value"] == pytest.approx(
        min(1.0, 2 * tests["custom"]["p_value"])
    )
    assert "uncorrected" in family["secondary"]
    assert "Holm-adjusted p" in recommendation["reason"]


def test_a_minimum_gain_holds_back_a_small_win() -> None:
    made = Traffic(seed=5)
    for i in range(60):
        made.utterance("base", 2 * i, word_error=0.35, unit=f"b{i}")
        made.utterance("custom", 2 * i + 1, word_error=0.03, unit=f"u{i}")
    shares = {"base": 0.5, "custom": 0.5}
    gain = build_report("e", made.records, made.labels, info=INFO)
    assert gain["recommendation"]["action"] == SHIP_CUSTOM
    # A 30-point gain, but 60 points are asked for: it is not worth shipping.
    demanding = ExperimentInfo(control="base", phase="p1", shares=shares, min_wer_gain=0.6)
    held = build_report("e", made.records, made.labels, info=demanding)["recommendation"]
    assert held["action"] == "keep_base"
    assert "below the minimum worth shipping (60.0 points)" in held["reason"]
    assert held["multiplicity"]["min_wer_gain"] == 0.6
