"""The drift section: shipped vs holdout per window, checked by simulation.

A stable advantage must be judged "holding" in all but at most alpha of the simulated
experiments; an injected reversal and an advantage lost in the last window must be found.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from traffic import Traffic

from gateway.analysis.canaries import CanaryAnswer
from gateway.analysis.drift import drift_section, parse_window, shipped_variant
from gateway.analysis.model import ExperimentInfo, shipped_continues
from gateway.analysis.observations import (
    Outcome,
    PhaseObservations,
    Scored,
    VariantObservations,
)
from gateway.stats.wer import WerCounts

DAY = 86400
START = 1_796_000_000 // DAY * DAY  # a UTC midnight: windows start at whole days
ALPHA = 0.05
SIMULATIONS = 200


def simulate(
    rng: np.random.Generator,
    shipped_error: Callable[[int], float],
    holdout_error: float,
    *,
    windows: int = 4,
    units: tuple[int, int] = (960, 240),
    per_unit: int = 2,
    late: bool = False,
) -> PhaseObservations:
    """A shipped phase: each window has new units, each with `per_unit` outcomes whose
    error probability varies by unit (clustering), and one labelled utterance of 10 words
    per unit with the same error probability per word. `late`: one more outcome per arm a
    window after the last."""
    phase = PhaseObservations("p-ship")
    for name, count in zip(("custom", "base"), units, strict=True):
        outcomes: list[Outcome] = []
        scored: list[Scored] = []
        for window in range(windows):
            mean = shipped_error(window) if name == "custom" else holdout_error
            # A unit's own error probability: mean `mean`, spread by a beta draw.
            p = rng.beta(2.0, 2.0 * (1 - mean) / mean, size=count)
            failed = rng.random((count, per_unit)) < p[:, None]
            errors = rng.binomial(10, p)
            for u in range(count):
                unit = f"{name}-{window}-{u}"
                at = START + window * DAY + (u + 0.5) * DAY / count
                for k in range(per_unit):
                    bad = bool(failed[u, k])
                    confidence = None if bad else 0.9 - 0.5 * float(p[u])
                    outcomes.append(
                        Outcome(at + k, unit, "error" if bad else "success", None, None, confidence)
                    )
                e = int(errors[u])
                scored.append(Scored(at, unit, WerCounts(substitutions=e, hits=10 - e)))
        if late:
            at = START + windows * DAY + 10
            outcomes.append(Outcome(at, f"{name}-late", "success", None, None, 0.9))
        outcomes.sort(key=lambda o: o.at)
        phase.variants[name] = VariantObservations.of(name, outcomes, scored)
    return phase


def verdicts(phase: PhaseObservations, canary: list[CanaryAnswer] | None = None) -> dict[str, Any]:
    section = drift_section(
        phase,
        canary or [],
        shipped="custom",
        holdout="base",
        holdout_share=0.2,
        window_s=DAY,
        alpha=ALPHA,
    )
    return {m["metric"]: m for m in section["metrics"]}


def test_a_stable_advantage_holds_at_the_stated_rate() -> None:
    rng = np.random.default_rng(7)
    alarms = {"error_rate": 0, "wer": 0, "confidence": 0}
    for _ in range(SIMULATIONS):
        found = verdicts(simulate(rng, lambda _w: 0.06, 0.10, units=(480, 120)))
        for metric in alarms:
            assert found[metric]["verdict"] != "too_little_data"
            alarms[metric] += found[metric]["verdict"] != "holding"
    # Each verdict is two one-sided tests at alpha / 2: wrong in at most alpha of them
    # (plus three standard errors of the simulation).
    limit = ALPHA + 3 * (ALPHA * (1 - ALPHA) / SIMULATIONS) ** 0.5
    for metric, count in alarms.items():
        assert count / SIMULATIONS <= limit, (metric, count)


def test_an_injected_reversal_is_found() -> None:
    rng = np.random.default_rng(8)
    found = 0
    for _ in range(20):
        result = verdicts(simulate(rng, lambda w: 0.25 if w == 3 else 0.05, 0.10))
        found += result["error_rate"]["verdict"] == "reversed"
        assert result["error_rate"]["window"] == 3
        assert result["no_match_rate"]["verdict"] == "holding"  # nothing changed there
    assert found >= 19


def test_an_advantage_lost_in_the_last_window_has_shrunk() -> None:
    rng = np.random.default_rng(9)
    shrunk = 0
    for _ in range(30):
        result = verdicts(simulate(rng, lambda w: 0.15 if w == 3 else 0.04, 0.15))
        verdict = result["error_rate"]["verdict"]
        assert verdict != "reversed"  # as bad as the holdout, not worse
        shrunk += verdict == "shrunk"
        assert result["error_rate"]["earlier"]["difference"] < -0.05
        assert result["wer"]["verdict"] == "shrunk"
    # About 80 % of such experiments (the simulations of docs/analysis.md).
    assert shrunk >= 21


def test_a_young_window_is_skipped_for_the_one_before_it() -> None:
    # Two outcomes in a fourth day: far too few units to judge it.
    phase = simulate(np.random.default_rng(3), lambda _w: 0.06, 0.10, windows=3, late=True)
    result = verdicts(phase)
    assert result["error_rate"]["window"] == 2
    assert result["error_rate"]["windows"][3]["ci"] is None  # too few units: no variance


def test_too_little_data_before_the_second_window() -> None:
    result = verdicts(simulate(np.random.default_rng(4), lambda _w: 0.06, 0.10, windows=1))
    assert {m["verdict"] for m in result.values()} == {"too_little_data"}
    assert result["error_rate"]["windows"][0]["difference"] < 0


def canary_rounds(
    rounds: int, switched_from: int, rng: random.Random, items: int = 10
) -> list[CanaryAnswer]:
    """Deterministic recognisers: the custom model makes fewer errors per item than the
    base model until, from round `switched_from`, it answers exactly as base does."""
    base_errors = [rng.randint(2, 4) for _ in range(items)]
    custom_errors = [max(0, e - rng.randint(1, 3)) for e in base_errors]
    answers = []
    for r in range(rounds):
        at = START + r * 3600.0
        for i in range(items):
            for name, errors in (("base", base_errors), ("custom", custom_errors)):
                count = base_errors[i] if r >= switched_from else errors[i]
                answers.append(
                    CanaryAnswer(
                        at + i, "p-ship", name, "local", f"item-{i}", False, count, 8, 300.0
                    )
                )
    return answers


def test_a_model_switched_to_base_shrinks_the_canary_advantage() -> None:
    phase = simulate(np.random.default_rng(5), lambda _w: 0.06, 0.10, windows=4)
    # Hourly rounds over four days; the custom endpoint falls back to base on the last day.
    stable = verdicts(phase, canary_rounds(96, 96, random.Random(1)))["canary_wer"]
    assert stable["verdict"] == "holding"
    assert stable["latest"]["ci"][1] < 0  # the advantage is there, and certain
    switched = verdicts(phase, canary_rounds(96, 72, random.Random(1)))["canary_wer"]
    assert switched["verdict"] == "shrunk"
    assert switched["latest"]["difference"] == 0.0  # the same answers as the holdout's


def test_shipped_phases_are_recognised_by_their_split() -> None:
    assert shipped_variant({"base": 0.05, "custom": 0.95}, "base") == "custom"
    assert shipped_variant({"base": 0.5, "custom": 0.5, "other": 0.0}, "base", shipped=True) == (
        "custom"
    )
    # Without a known ship, an even split is an ordinary A/B test.
    assert shipped_variant({"base": 0.5, "custom": 0.5}, "base") is None
    assert shipped_variant({"base": 0.6, "custom": 0.4}, "base") is None
    assert shipped_variant({"base": 0.0, "custom": 1.0}, "base") is None  # no holdout
    assert shipped_variant({"base": 0.1, "a": 0.45, "b": 0.45}, "base") is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("1d", 86400), ("12h", 43200), ("30m", 1800), ("90s", 90), ("1.5h", 5400)]
)
def test_window_lengths_parse(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"), [("1w", "not a duration"), ("", "not a duration"), ("10s", "shorter")]
)
def test_bad_window_lengths_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(text)


def test_the_report_follows_the_phase_history_for_which_phases_were_shipped() -> None:
    """A ship known from the phase history is tracked even at a 50 % holdout; a phase
    another change opened is not, whatever its split; without history, a 5 % holdout looks
    like a ship and an even split like the A/B test it is."""
    made = Traffic()
    made.ab(40, base_error=0.2, custom_error=0.1)

    def drift(shares: dict[str, float], origins: dict[str, str | None]) -> Any:
        info = ExperimentInfo(control="base", phase="p1", shares=shares, phase_origins=origins)
        return made.report(info=info)["drift"]

    even, holdout = {"base": 0.5, "custom": 0.5}, {"base": 0.05, "custom": 0.95}
    assert drift(even, {}) is None
    assert drift(even, {"p1": "ship"})["shipped"] == "custom"
    assert drift(holdout, {"p1": "set_weights"}) is None
    assert drift(holdout, {})["holdout"] == "base"
    assert drift(holdout, {"p1": None})["shipped"] == "custom"  # the configured phase


def test_a_phase_opened_after_a_model_change_continues_a_ship() -> None:
    """The health monitor opens a new phase when the model behind an endpoint changes
    (`new_phase`, same split): after a ship that phase is still shipped, and its drift section
    reads its own results; after any other change it is not."""
    shipped = shipped_continues({"p0": None, "p1": "ship", "p2": "new_phase"})
    assert shipped == {"p0": None, "p1": "ship", "p2": "ship"}
    chain = shipped_continues({"p1": "ship", "p2": "new_phase", "p3": "new_phase"})
    assert chain["p3"] == "ship"
    after_weights = shipped_continues({"p1": "ship", "p2": "set_weights", "p3": "new_phase"})
    assert after_weights["p3"] == "new_phase"
    made = Traffic()
    made.ab(40, base_error=0.2, custom_error=0.1)
    holdout = {"base": 0.5, "custom": 0.5}  # a 50 % holdout: shipped only by its history
    info = ExperimentInfo(
        control="base",
        phase="p1",
        shares=holdout,
        phase_origins=shipped_continues({"p0": "ship", "p1": "new_phase"}),
    )
    drift = made.report(info=info)["drift"]
    assert (drift["shipped"], drift["holdout"]) == ("custom", "base")
