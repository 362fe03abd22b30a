"""Tests for gateway.tools.dataset_export: the Custom Speech zips, the split by unit and the
replay set, from captures in a LocalAudioStore labelled through the file label store.

tests/functional/test_dataset_replay.py replays an exported test set through a gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import zipfile
from pathlib import Path

import pytest
from review_fixtures import EXPERIMENT, ReviewWorld, tone, wav_bytes

from gateway.errors import ConfigError
from gateway.outcomes.labels import LabelInput
from gateway.tools.cli_options import add_dataset_arguments
from gateway.tools.dataset import load_dataset
from gateway.tools.dataset_export import (
    MAX_TRAIN_SECONDS,
    TRANSCRIPT,
    export_dataset,
    labelled_items,
    run_export,
    split_units,
)


async def labelled_world(tmp_path: Path, units: int, per_unit: int = 2) -> ReviewWorld:
    """`units` units of `per_unit` captures each, every primary labelled 'reference <n>'
    except capture 1's (left unlabelled)."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()
    labels = []
    for n in range(1, units * per_unit + 1):
        capture = await world.add(n, unit=f"unit-{(n - 1) // per_unit:03d}")
        if n != 1:
            labels.append(LabelInput(capture.primary.record_id, f"reference\t{n}\n"))
    await world.label_store().put(labels, "rita", "review")
    return world


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    return parser.parse_args(["export", "--experiment", EXPERIMENT, *argv])


def read_zip(path: Path) -> tuple[set[str], list[tuple[str, str]], zipfile.ZipFile]:
    archive = zipfile.ZipFile(path)
    raw = archive.read(TRANSCRIPT)
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with a byte order mark
    rows = [tuple(line.split("\t")) for line in raw.decode("utf-8-sig").splitlines()]
    assert all(len(row) == 2 for row in rows)
    return set(archive.namelist()), rows, archive  # type: ignore[return-value]


async def test_the_export_has_the_documented_layout(tmp_path: Path) -> None:
    """train.zip and test.zip hold the WAVs and a TSV trans.txt at their top; the test part
    is also a replay set; export.json counts it all; no unit is in both parts."""
    world = await labelled_world(tmp_path, units=10)
    out = tmp_path / "out"
    result = await run_export(parse("--out", str(out)), world.audio_store(), world.label_store())
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "test", "test.zip", "train.zip"]
    by_id = {c.capture_id: c for c in world.captures}
    units_of: dict[str, set[str]] = {}
    for part in ("train", "test"):
        names, rows, archive = read_zip(out / f"{part}.zip")
        assert names == {TRANSCRIPT} | {name for name, _ in rows}
        units_of[part] = set()
        for name, text in rows:
            capture = by_id[name.removesuffix(".wav")]
            number = int(capture.primary.record_id, 16) // 10
            assert text == f"reference {number}"  # tab and newline became spaces
            assert archive.read(name) == await world.audio_store().wav(capture.capture_id)
            units_of[part].add(capture.unit)
    assert not units_of["train"] & units_of["test"]
    assert len(units_of["test"]) == 2  # round(0.2 x 10 units)
    assert result.train + result.test == 19
    assert result.unlabelled == 1
    summary = json.loads((out / "export.json").read_text())
    assert summary["test"] == {"items": result.test, "units": 2}
    assert summary["unlabelled"] == 1
    replay = load_dataset(out / "test")
    _, test_rows, _ = read_zip(out / "test.zip")
    assert [(f"{item.id}.wav", item.text) for item in replay] == test_rows
    for item in replay:
        assert item.audio.read_bytes() == await world.audio_store().wav(item.id)
    assert result.summary() == (
        f"exported 19 labelled captures to {out}: train 15 (8 units), test 4 (2 units); "
        "1 capture without a label skipped"
    )


async def test_the_split_depends_on_the_seed_only(tmp_path: Path) -> None:
    """The same seed gives the same units in test; another seed may move them."""
    units = [f"unit-{n}" for n in range(50)]
    assert split_units(units, 0.2, "a") == split_units(list(reversed(units)), 0.2, "a")
    assert len(split_units(units, 0.2, "a")) == 10
    assert split_units(units, 0.2, "a") != split_units(units, 0.2, "b")
    assert len(split_units(["one", "two"], 0.01, "a")) == 1  # at least one unit in test
    assert len(split_units(["one", "two"], 0.99, "a")) == 1  # at least one unit in train
    assert split_units(["only"], 0.5, "a") == frozenset()
    assert split_units(units, 0.0, "a") == frozenset()


async def test_a_long_capture_stays_out_of_the_training_zip(tmp_path: Path) -> None:
    """Custom Speech trains on files of at most 40 s: a longer one is left out of train.zip."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()
    long = await world.add(1, unit="talker", wav=wav_bytes(tone(MAX_TRAIN_SECONDS + 1)))
    short = await world.add(2, unit="talker")
    await world.label_store().put(
        [LabelInput(c.primary.record_id, "words") for c in (long, short)], "rita", "review"
    )
    out = tmp_path / "out"
    result = await run_export(
        parse("--out", str(out), "--test-share", "0"), world.audio_store(), world.label_store()
    )
    names, _, _ = read_zip(out / "train.zip")
    assert names == {TRANSCRIPT, f"{short.capture_id}.wav"}
    assert result.too_long == 1
    assert "1 over 40 s left out of train.zip" in result.summary()


async def test_bad_requests_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A non-empty --out, a share out of range, an experiment without labelled captures or
    an invalid name: a ConfigError naming the option, and nothing written."""
    world = await labelled_world(tmp_path, units=2)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    audio, labels = world.audio_store(), world.label_store()
    with pytest.raises(ConfigError, match="--out"):
        await run_export(parse("--out", str(busy)), audio, labels)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(ConfigError, match="--test-share"):
        await run_export(parse("--out", str(tmp_path / "a"), "--test-share", "1"), audio, labels)
    empty = parse("--out", str(tmp_path / "b"))
    empty.experiment = "nothing-here"
    with pytest.raises(ConfigError, match="--experiment"):
        await run_export(empty, audio, labels)
    bad = parse("--out", str(tmp_path / "c"))
    bad.experiment = "../escape"
    with pytest.raises(ConfigError, match="--experiment"):
        await run_export(bad, audio, labels)
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_the_command_exports_from_the_configured_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`speech-gateway dataset export` reads the settings file's audio directory and outcome
    store, writes the layout and prints one line; a bad --out is one line on stderr and 2."""
    from gateway.cli import main

    world = asyncio.run(labelled_world(tmp_path, units=4))
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[gateway.audio]\n"
        f'directory = "{world.folder / "audio"}"\n'
        "[outcomes]\n"
        f'path = "{world.outcomes}"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    argv = ["dataset", "export", "--experiment", EXPERIMENT, "--out", str(out)]
    assert main([*argv, "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"exported 7 labelled captures to {out}: train ")
    assert (out / "train.zip").is_file()
    assert main([*argv, "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--out" in error
    assert "Traceback" not in error


async def test_a_capture_deleted_during_the_export_is_left_out(tmp_path: Path) -> None:
    """A capture whose unit's audio is deleted after the listing is not exported, and the
    summary counts it."""
    world = await labelled_world(tmp_path, units=3)
    audio = world.audio_store()
    items, _ = await labelled_items(audio, world.label_store(), EXPERIMENT)
    await audio.delete_unit("unit-001")
    out = tmp_path / "out"
    result = await export_dataset(items, audio, out, experiment=EXPERIMENT, test_share=0.0)
    assert result.gone == 2
    names, rows, _ = read_zip(out / "train.zip")
    assert len(rows) == result.train == len(items) - 2
    deleted = {c.capture_id for c in world.captures if c.unit == "unit-001"}
    assert not {name.removesuffix(".wav") for name in names} & deleted
    assert "2 deleted while exporting left out" in result.summary()
    assert json.loads((out / "export.json").read_text())["deleted_while_exporting"] == 2
