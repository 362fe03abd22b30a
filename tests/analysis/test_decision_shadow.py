"""Shadow pairs decide: the always-valid paired comparison on identical audio.

Units differ a lot (some speak clearly, some do not), so the unpaired comparison of the two
arms' own units is noisy; the shadow recognises the very audio the control recognised, so
the unit's difficulty cancels in the paired difference, which detects a gain the unpaired
comparison cannot yet.
"""

from __future__ import annotations

import random

import pytest
from traffic import INFO, Traffic

from gateway.analysis.observations import observe
from gateway.analysis.paired import paired_looks
from gateway.outcomes.record import Role
from gateway.stats.sequential import ratio_variance


def _shadowed(units: int = 60, seed: int = 2) -> Traffic:
    made = Traffic(seed=seed)
    rng = random.Random(seed)
    for i in range(units):
        difficulty = rng.uniform(0.05, 0.6)
        primary = made.utterance("base", 10 * i, word_error=difficulty, unit=f"b{i}")
        reference = made.labels[primary.record_id].text.split()
        # The custom model, on the same audio, makes about 60 % of the base's errors.
        shadow = [w if rng.random() >= 0.6 * difficulty else "uh" for w in reference]
        made.utterance(
            "custom",
            10 * i,
            role=Role.SHADOW,
            shadow_drops=0,
            session_id=primary.session_id,
            unit=primary.unit,
            text=" ".join(shadow),
            label=False,
        )
        # It also serves units of its own, as noisy as the base's.
        own = rng.uniform(0.05, 0.6) * 0.6
        made.utterance("custom", 10 * i + 5, word_error=own, unit=f"c{i}")
    return made


def test_a_shadowing_experiment_decides_on_the_paired_evidence() -> None:
    made = _shadowed()
    report = made.report(info=INFO)
    comparison = report["phases"][0]["comparisons"][0]
    shadow = comparison["shadow"]
    assert shadow["pairs"] == 60
    paired = shadow["always_valid"]
    assert paired["ci"][1] < 0
    assert paired["conflicts"] == 0
    # The unpaired interval is far wider than the paired one.
    unpaired = comparison["wer"]["always_valid"]["ci"]
    assert unpaired[1] - unpaired[0] > 1.5 * (paired["ci"][1] - paired["ci"][0])
    recommendation = report["recommendation"]
    assert recommendation["evidence"] == "shadow_pairs"
    assert recommendation["action"] == "ship_custom"
    assert "on shadow pairs (same audio)" in recommendation["reason"]
    assert recommendation["multiplicity"]["tests"][0]["evidence"] == "shadow_pairs"


def test_the_paired_looks_are_the_delta_method_on_per_unit_differences() -> None:
    made = _shadowed(units=30)
    report = made.report(info=INFO)
    shadow = report["phases"][0]["comparisons"][0]["shadow"]
    words, differences = [], []
    errors = {"base": 0, "custom": 0}
    (phase,) = observe(made.records, made.labels).values()
    for pair in phase.shadow_pairs:
        words.append(float(pair.words))
        differences.append(float(pair.shadow_errors - pair.primary_errors))
        errors["base"] += pair.primary_errors
        errors["custom"] += pair.shadow_errors
    last = shadow["looks"][-1]
    assert last[0] == pytest.approx((errors["custom"] - errors["base"]) / sum(words))
    assert last[1] == pytest.approx(ratio_variance(differences, words))
    # A look sees the pairs before its end; below 20 units there is no variance, so no look.
    after = phase.last + 1
    middle = phase.shadow_pairs[24].at + 0.5  # 25 pairs, 25 units
    looks = paired_looks(phase.shadow_pairs, "base", "custom", [phase.first + 1, middle, after])
    assert len(looks) == 2
    assert looks[-1] == pytest.approx(last)
    assert paired_looks(phase.shadow_pairs[:10], "base", "custom", [after]) == []


def test_too_few_shadow_pairs_wait_for_more() -> None:
    made = _shadowed(units=12)
    recommendation = made.report(info=INFO)["recommendation"]
    assert recommendation["action"] == "keep_collecting"
    assert "only 12 shadow pairs (at least 20 needed to judge WER)" in recommendation["reason"]
