"""The report's review section: how the reviewed captures were drawn, WER per sample, blind
preferences; priority review labels stay out of the headline WER. End to end through
`speech-gateway analyze` on a local audio store and the file stores."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from review_fixtures import EXPERIMENT, ReviewWorld, record, rid

from gateway.analysis.model import AnalysisOptions
from gateway.analysis.review_report import ReviewInputs, headline_labels, review_section
from gateway.cli import main
from gateway.outcomes.labels import LabelInput
from gateway.outcomes.preference import Preference
from gateway.outcomes.record import Role
from gateway.stores.audio_store import CaptureReason, CaptureSample

OPTIONS = AnalysisOptions(resamples=200)


def preference(
    capture_id: str,
    unit: str,
    choice: str,
    sample: str = "uniform",
    records: tuple[str, ...] = (),
) -> Preference:
    return Preference(
        capture_id=capture_id,
        experiment=EXPERIMENT,
        unit=unit,
        sample=sample,  # type: ignore[arg-type]
        reviewer="rita",
        choice=choice,  # type: ignore[arg-type]
        variant_a="base",
        variant_b="custom",
        reviewed_at="2026-12-07T11:00:00.000Z",
        records=records,
    )


async def world(folder: Path) -> tuple[ReviewWorld, dict[str, object]]:
    """Six uniform captures (custom right, base one word wrong) and two priority ones (both
    wrong), all reviewed: labelled "pay my bills" and judged."""
    made = ReviewWorld(folder)
    for n in range(1, 7):
        await made.add(n, texts=("pay my bill", "pay my bills"))
    for n in range(7, 9):
        await made.add(
            n,
            sample=CaptureSample.PRIORITY,
            reason=CaptureReason.DISAGREEMENT,
            texts=("pay me", "pay bills"),
        )
    inputs = [LabelInput(c.primary.record_id, "pay my bills") for c in made.captures]
    await made.label_store().put(inputs, "rita", "review")
    store = made.preference_store()
    for capture in made.captures:
        choice = "b" if capture.sample == "uniform" else "same"
        records = (capture.primary.record_id, *(r.record_id for r in capture.shadows))
        await store.put(
            preference(capture.capture_id, capture.unit, choice, capture.sample, records)
        )
    return made, {}


def test_the_section_counts_the_samples_apart(tmp_path: Path) -> None:
    made, _ = asyncio.run(world(tmp_path))
    labels = asyncio.run(made.label_store().all(EXPERIMENT))
    prefs = asyncio.run(made.preference_store().current(EXPERIMENT))
    reviews = ReviewInputs(made.captures, tuple(prefs.values()))
    section = review_section(reviews, labels, control="base", options=OPTIONS)
    assert section is not None
    assert section["sample"]["uniform"]["reviewed"] == 6
    assert section["sample"]["priority"]["reviewed_by_reason"] == {"disagreement": 2}
    uniform = {e["variant"]: e for e in section["wer"]["uniform"]}
    assert uniform["base"]["wer"] == pytest.approx(1 / 3)  # "bill" for "bills"
    assert uniform["custom"]["wer"] == 0.0
    assert uniform["base"]["units"] == 6
    assert uniform["base"]["ci"] is not None
    priority = {e["variant"]: e for e in section["wer"]["priority"]}
    assert priority["base"]["utterances"] == 2
    uniform_rate, priority_rate = section["preferences"]
    assert uniform_rate["sample"] == "uniform"
    assert (uniform_rate["challenger"], uniform_rate["challenger_preferred"]) == ("custom", 6)
    assert uniform_rate["ties"] == 0
    assert priority_rate["sample"] == "priority"
    assert (priority_rate["decisive"], priority_rate["ties"]) == (0, 2)
    # The headline keeps the uniform review labels and drops the priority ones.
    kept = headline_labels(labels, reviews)
    assert set(kept) == {c.primary.record_id for c in made.captures[:6]}


def test_analyze_shows_the_review_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(world(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(
        '[outcomes]\npath = "outcomes.jsonl"\n\n[gateway.audio]\ndirectory = "audio"\n'
    )
    argv = ["--config", "c.toml", "analyze", "--experiment", EXPERIMENT, "--control", "base"]
    assert main([*argv, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    review = report["review"]
    assert review["sample"]["uniform"]["reviewed"] == 6
    assert "6 reviewed captures" not in review["description"]  # 8 in all
    assert review["description"].startswith("8 reviewed captures")
    # Headline WER of base: the six uniform reviewed utterances only.
    [phase] = report["phases"]
    base = next(v for v in phase["variants"] if v["name"] == "base")
    assert base["wer"]["utterances"] == 6
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Reviewed live traffic" in text
    assert "uniform  blind preference for custom over base: 100%" in text


def test_no_captures_no_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    made = ReviewWorld(tmp_path)
    asyncio.run(made.add(1))
    (tmp_path / "audio").rename(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[outcomes]\npath = "outcomes.jsonl"\n')
    argv = ["--config", "c.toml", "analyze", "--experiment", EXPERIMENT, "--control", "base"]
    assert main([*argv, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["review"] is None


def test_withdrawn_and_priority_reviews_stay_out_of_the_headline_after_the_audio_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A withdrawn (undone) review's label is retracted: out of the headline and of the
    section. Once the captures expire, the preferences, which keep the records they
    labelled, still hold the priority and withdrawn review labels out of the headline."""
    made, _ = asyncio.run(world(tmp_path))
    store = made.preference_store()
    undone = asyncio.run(store.get(EXPERIMENT, made.captures[0].capture_id))
    assert undone is not None
    asyncio.run(store.put(undone.withdraw("2026-12-07T12:00:00.000Z")))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(
        '[outcomes]\npath = "outcomes.jsonl"\n\n[gateway.audio]\ndirectory = "audio"\n'
    )
    argv = ["--config", "c.toml", "analyze", "--experiment", EXPERIMENT, "--control", "base"]

    def base_wer() -> tuple[dict[str, object], dict[str, object] | None]:
        assert main([*argv, "--json", "-"]) == 0
        report = json.loads(capsys.readouterr().out)
        [phase] = report["phases"]
        base = next(v for v in phase["variants"] if v["name"] == "base")
        return base["wer"], report["review"]

    headline, review = base_wer()
    assert headline["utterances"] == 5  # six uniform reviews, one withdrawn
    assert review is not None
    uniform = {e["variant"]: e for e in review["wer"]["uniform"]}
    assert uniform["base"]["utterances"] == 5
    (tmp_path / "audio").rename(tmp_path / "expired")
    headline, review = base_wer()
    assert review is None
    assert headline["utterances"] == 5


def test_an_experiment_that_cannot_hold_audio_has_no_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An experiment id no audio store can hold (a leading `_`) is analysed without a review
    section, not refused."""
    lines = [
        dataclasses.replace(record(rid(n), variant, Role.PRIMARY, f"u{n}", "hi"), experiment="_x")
        for n, variant in ((1, "base"), (2, "custom"))
    ]
    (tmp_path / "outcomes.jsonl").write_text("".join(r.to_json() + "\n" for r in lines))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[outcomes]\npath = "outcomes.jsonl"\n')
    argv = ["--config", "c.toml", "analyze", "--experiment", "_x", "--control", "base"]
    assert main([*argv, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["review"] is None
