"""`speech-gateway plan`: from assumptions, from an experiment's data, and the report's plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from traffic import INFO, Traffic

from gateway.analysis.report import build_report
from gateway.analysis.text_report import render_text
from gateway.cli import main
from gateway.stats.planning import assumed_kappa, design_effect, plan


def _undecided_traffic() -> Traffic:
    """60 units an arm with the same WER: nothing to decide yet, a plan to make."""
    made = Traffic(seed=7)
    for i in range(60):
        made.utterance("base", 60 * i, word_error=0.2, unit=f"b{i}")
        made.utterance("custom", 60 * i + 30, word_error=0.2, unit=f"c{i}")
    return made


def test_plan_from_assumptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[outcomes]\npath = "out.jsonl"\n')
    argv = ["--config", "c.toml", "plan", "--base-wer", "15", "--units-per-day", "60"]
    argv += ["--icc", "0.05", "--gain-points", "1.5", "3"]
    assert main([*argv, "--json", "-"]) == 0
    (found,) = json.loads(capsys.readouterr().out)["plans"]
    design = design_effect(5 * 8, 0.05)
    assert found["design_effect"] == pytest.approx(design)
    assert found["labelled_per_arm_per_day"] == 150.0  # 60 units, half an arm, 5 each
    for row, gain in zip(found["gains"], (0.015, 0.03), strict=True):
        expected = plan(gain, assumed_kappa(0.15, gain, words_per_utterance=8, design=design))
        assert expected is not None
        assert row["labelled_per_arm"] == expected.labelled_per_arm
        assert row["days"] == pytest.approx(expected.labelled_per_arm / 150, abs=0.01)
    # A minimum gain of 2 points: a 1.5-point gain is never worth shipping.
    assert main([*argv, "--min-gain-points", "2", "--challengers", "2"]) == 0
    out = capsys.readouterr().out
    assert "Plan from assumptions: 100.0 labelled utterances per arm a day" in out
    assert "1.50 pp (10%)  not beyond the minimum gain" in out
    assert "alpha 0.025 (2 challenger(s), Holm)" in out


def test_plan_refuses_bad_input_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[outcomes]\npath = "out.jsonl"\n')
    base = ["--config", "c.toml", "plan"]
    for argv, message in (
        ([], "give --experiment, or the assumptions --base-wer and --units-per-day"),
        (["--base-wer", "150", "--units-per-day", "5"], "--base-wer: must be a percentage"),
        (["--base-wer", "10", "--units-per-day", "5", "--gain-points", "12"], "exceeds the WER"),
        (["--power", "1.2"], "--power: must be in (0, 1)"),
        (["--experiment", "e"], "no outcome file"),
    ):
        assert main([*base, *argv]) == 2
        error = capsys.readouterr().err
        assert message in error
        assert error.count("\n") == 1


def test_plan_from_an_experiments_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    made = _undecided_traffic()
    (tmp_path / "out.jsonl").write_text("".join(r.to_json() + "\n" for r in made.records))
    (tmp_path / "labels.jsonl").write_text(
        "".join(label.to_json() + "\n" for label in made.labels.values())
    )
    (tmp_path / "c.toml").write_text('[outcomes]\npath = "out.jsonl"\n')
    argv = ["--config", "c.toml", "plan", "--experiment", "e", "--control", "base"]
    assert main([*argv, "--gain-relative", "10", "--json", "-"]) == 0
    (found,) = json.loads(capsys.readouterr().out)["plans"]
    report = build_report("e", made.records, made.labels, info=INFO)
    comparison = report["phases"][0]["comparisons"][0]
    variance = comparison["wer"]["looks"][-1][1]
    assert found["variant"] == "custom"
    assert found["evidence"] == "unpaired"
    assert found["labelled_per_arm"] == 60
    assert found["kappa"] == pytest.approx(variance * 60)
    (row,) = found["gains"]
    control_wer = report["phases"][0]["variants"][0]["wer"]["wer"]
    assert row["gain"] == pytest.approx(control_wer * 0.1, abs=1e-6)
    expected = plan(row["gain"], variance * 60)
    assert expected is not None
    assert row["labelled_per_arm"] == expected.labelled_per_arm
    # The 60 units an arm came over about an hour (3570 s).
    per_day = 60 / (3570 / 86_400)
    assert found["labelled_per_arm_per_day"] == pytest.approx(per_day, abs=0.1)
    assert row["days"] == pytest.approx((expected.labelled_per_arm - 60) / per_day, abs=0.01)
    assert main(argv) == 0
    assert "Plan for custom (unpaired evidence): 60 labelled utterances per arm" in (
        capsys.readouterr().out
    )


def test_the_report_plans_an_experiment_still_collecting() -> None:
    made = _undecided_traffic()
    report = build_report("e", made.records, made.labels, info=INFO)
    recommendation = report["recommendation"]
    assert recommendation["action"] == "keep_collecting"
    found = recommendation["plan"]
    assert found["variant"] == "custom"
    assert [round(row["relative"], 6) for row in found["gains"]] == [0.05, 0.1, 0.2]
    needed = [row["labelled_per_arm"] for row in found["gains"]]
    assert needed == sorted(needed, reverse=True)
    assert needed[-1] > 60
    text = render_text(report)
    assert "Plan for custom (unpaired evidence)" in text
    assert "more days" in text
