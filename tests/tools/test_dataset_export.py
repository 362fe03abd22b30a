"""Tests for gateway.tools.dataset_export: the Custom Speech zips, the split by unit, the replay
set and what is left out, from captures in a LocalAudioStore labelled through the file label
store, with the workbench's preferences in the file preference store.

tests/tools/test_dataset_zips.py pins the zips' limits; tests/functional/test_dataset_replay.py
replays an exported test set through a gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import wave
import zipfile
from pathlib import Path

import pytest
from review_fixtures import EXPERIMENT, ReviewWorld, review, tone, wav_bytes

from gateway.errors import ConfigError, StoreUnavailable
from gateway.outcomes.labels import LabelInput
from gateway.protocol.wav import WaveFormat, WaveFormatTag, wave_header
from gateway.stores.audio_store import Capture, LocalAudioStore
from gateway.tools.cli_options import add_dataset_arguments
from gateway.tools.dataset import load_dataset
from gateway.tools.dataset_export import (
    MAX_TRAIN_SECONDS,
    TRANSCRIPT,
    ExportResult,
    export_dataset,
    labelled_items,
    run_export,
    split_units,
    unit_fraction,
)


async def labelled_world(
    tmp_path: Path, units: int, per_unit: int = 2, first: int = 1, name: str = "world"
) -> ReviewWorld:
    """`units` units of `per_unit` captures each, numbered from `first`, every primary
    labelled 'reference <n>' by a review except capture 1's (left unlabelled)."""
    world = ReviewWorld(tmp_path / name)
    world.folder.mkdir(exist_ok=True)
    await add_labelled(world, units, per_unit, first)
    return world


async def add_labelled(world: ReviewWorld, units: int, per_unit: int, first: int) -> None:
    labels = []
    for n in range(first, first + units * per_unit):
        capture = await world.add(n, unit=f"unit-{(n - 1) // per_unit:03d}")
        if n != 1:
            labels.append(LabelInput(capture.primary.record_id, f"reference\t{n}\n"))
    await world.label_store().put(labels, "rita", "review")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    return parser.parse_args(["export", "--experiment", EXPERIMENT, *argv])


async def export(world: ReviewWorld, out: Path, *argv: str) -> ExportResult:
    return await run_export(
        parse("--out", str(out), *argv),
        world.audio_store(),
        world.label_store(),
        world.preference_store(),
    )


def read_zip(path: Path) -> tuple[set[str], list[tuple[str, str]], zipfile.ZipFile]:
    archive = zipfile.ZipFile(path)
    raw = archive.read(TRANSCRIPT)
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with a byte order mark
    rows = [tuple(line.split("\t")) for line in raw.decode("utf-8-sig").splitlines()]
    assert all(len(row) == 2 for row in rows)
    return set(archive.namelist()), rows, archive  # type: ignore[return-value]


def names_in(folder: Path) -> list[str]:
    """The names in `folder`, hidden ones included (a half-written export would be one)."""
    return sorted(p.name for p in folder.iterdir())


def exported_ids(out: Path, part: str) -> set[str]:
    """The capture ids in the part's zips, as export.json lists them."""
    summary = json.loads((out / "export.json").read_text())
    ids: set[str] = set()
    for name in summary[part]["zips"]:
        _, rows, _ = read_zip(out / name)
        ids |= {file.removesuffix(".wav") for file, _ in rows}
    return ids


async def test_the_export_has_the_documented_layout(tmp_path: Path) -> None:
    """train.zip and test.zip hold the WAVs and a TSV trans.txt at their top; the test part
    is also a replay set; export.json counts it all; no unit is in both parts."""
    world = await labelled_world(tmp_path, units=10)
    out = tmp_path / "out"
    result = await export(world, out)
    assert names_in(out) == ["export.json", "test", "test.zip", "train.zip"]
    assert names_in(tmp_path) == ["out", "world"]  # nothing half-written beside --out
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
    expected_test = split_units({c.unit for c in world.captures}, 0.2, "speech-gateway")
    assert units_of["test"] == expected_test
    assert len(expected_test) == 3  # of 10 units, drawn by hash (module doc)
    assert result.train + result.test == 19
    assert result.unlabelled == 1
    summary = json.loads((out / "export.json").read_text())
    assert summary["test"] == {"items": 6, "units": 3, "zips": ["test.zip"]}
    assert summary["train"] == {"items": 13, "units": 7, "zips": ["train.zip"]}
    assert (summary["unlabelled"], summary["review_withdrawn"], summary["left_out"]) == (1, 0, {})
    replay = load_dataset(out / "test")
    _, test_rows, _ = read_zip(out / "test.zip")
    assert [(f"{item.id}.wav", item.text) for item in replay] == test_rows
    for item in replay:
        assert item.audio.read_bytes() == await world.audio_store().wav(item.id)
    assert result.summary() == (
        f"exported 19 labelled captures to {out}: train 13 (7 units), test 6 (3 units); "
        "1 capture without a label skipped"
    )


def test_a_units_part_depends_on_its_seed_share_and_name_only() -> None:
    """A unit is in test iff its hash fraction is below the share: the order and the other
    units do not matter, another seed draws other units, and with few units a part may be
    empty."""
    units = [f"unit-{n}" for n in range(200)]
    test = split_units(units, 0.2, "a")
    assert test == {u for u in units if unit_fraction(u, "a") < 0.2}
    assert test == split_units(list(reversed(units)), 0.2, "a")
    assert 20 <= len(test) <= 60  # 0.2 x 200 = 40 on average
    assert test != split_units(units, 0.2, "b")
    for n in range(1, 200, 7):
        assert split_units(units[:n], 0.2, "a") == test & set(units[:n])
    assert all(0.0 <= unit_fraction(u, "a") < 1.0 for u in units)
    assert split_units(units, 0.0, "a") == frozenset()
    only = "unit-0"
    share = unit_fraction(only, "a")
    assert split_units([only], share, "a") == frozenset()  # at the share: train
    assert split_units([only], min(share + 1e-9, 0.999), "a") == {only}
    with pytest.raises(ValueError, match="test_share"):
        split_units(units, 1.0, "a")


async def test_adding_units_never_moves_a_capture_between_parts(tmp_path: Path) -> None:
    """An export, more units captured, an export again: every capture of the first export
    is in the same part in the second, so a later train part never holds an earlier test
    part's units."""
    world = await labelled_world(tmp_path, units=8)
    first = tmp_path / "first"
    await export(world, first, "--test-share", "0.3")
    await add_labelled(world, units=24, per_unit=2, first=17)
    second = tmp_path / "second"
    await export(world, second, "--test-share", "0.3")
    before = {part: exported_ids(first, part) for part in ("train", "test")}
    after = {part: exported_ids(second, part) for part in ("train", "test")}
    assert before["test"]
    assert before["train"]
    assert before["test"] <= after["test"]
    assert before["train"] <= after["train"]
    assert len(after["test"]) > len(before["test"])


async def test_a_long_capture_stays_out_of_the_training_zip(tmp_path: Path) -> None:
    """Custom Speech trains on files of at most 40 s: a longer one is left out of train.zip,
    counted and named."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()
    long = await world.add(1, unit="talker", wav=wav_bytes(tone(MAX_TRAIN_SECONDS + 1)))
    short = await world.add(2, unit="talker")
    await world.label_store().put(
        [LabelInput(c.primary.record_id, "words") for c in (long, short)], "rita", "review"
    )
    out = tmp_path / "out"
    result = await export(world, out, "--test-share", "0")
    names, _, _ = read_zip(out / "train.zip")
    assert names == {TRANSCRIPT, f"{short.capture_id}.wav"}
    assert result.left_out == {"too_long": [long.capture_id]}
    assert "left out: 1 too long for its part" in result.summary()
    assert "test 0 (0 units, no zip)" in result.summary()
    summary = json.loads((out / "export.json").read_text())
    assert summary["left_out"] == {"too_long": {"count": 1, "captures": [long.capture_id]}}
    assert summary["test"] == {"items": 0, "units": 0, "zips": []}
    assert names_in(out) == ["export.json", "train.zip"]


def pcm_wav(rate: int, channels: int, width: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(b"\x01" * (rate * channels * width // 4))
    return buffer.getvalue()


async def test_audio_custom_speech_does_not_take_is_left_out_by_reason(tmp_path: Path) -> None:
    """Only 16-bit mono PCM at 8 or 16 kHz goes into the zips and the replay set; every other
    capture is counted and named under its reason, in export.json and the summary line."""
    world = ReviewWorld(tmp_path / "world")
    world.folder.mkdir()
    float_fmt = WaveFormat(16000, 1, 32, WaveFormatTag.IEEE_FLOAT.value)
    audio = {
        "ok_16k": wav_bytes(tone(0.5)),
        "ok_8k": pcm_wav(8000, 1, 2),
        "sample_rate": pcm_wav(44100, 1, 2),
        "not_mono": pcm_wav(16000, 2, 2),
        "not_16_bit": pcm_wav(16000, 1, 1),
        "not_pcm": wave_header(float_fmt, 64) + bytes(64),
    }
    captures = {}
    for n, (kind, wav) in enumerate(audio.items(), start=1):
        for part_unit in ("a", "b"):
            captures[kind, part_unit] = await world.add(
                n * 2 + (part_unit == "b"), unit=f"{kind}-{part_unit}", wav=wav
            )
    await world.label_store().put(
        [LabelInput(c.primary.record_id, "words") for c in captures.values()], "rita", "review"
    )
    out = tmp_path / "out"
    result = await export(world, out, "--test-share", "0.5")
    kept = {c.capture_id for (kind, _), c in captures.items() if kind.startswith("ok")}
    assert exported_ids(out, "train") | exported_ids(out, "test") == kept
    assert exported_ids(out, "test")
    assert exported_ids(out, "train")
    assert {item.id for item in load_dataset(out / "test")} == exported_ids(out, "test")
    summary = json.loads((out / "export.json").read_text())
    for reason in ("not_pcm", "not_16_bit", "not_mono", "sample_rate"):
        ids = sorted(captures[reason, u].capture_id for u in ("a", "b"))
        assert sorted(summary["left_out"][reason]["captures"]) == ids
        assert summary["left_out"][reason]["count"] == 2
    line = result.summary()
    assert "left out: 2 not PCM, 2 not 16-bit, 2 not mono, 2 not 8 or 16 kHz" in line


async def test_a_corrupt_capture_is_skipped_and_counted(tmp_path: Path) -> None:
    """A capture whose stored WAV is not what its sidecar says, or whose header cannot be
    read, is left out and counted; the export goes on."""
    world = await labelled_world(tmp_path, units=3)
    garbled, headless = world.captures[1], world.captures[3]
    wav_path = world.folder / "audio" / EXPERIMENT / f"{garbled.capture_id}.wav"
    wav_path.write_bytes(b"x" * garbled.wav_bytes)
    no_fmt = b"RIFF" + (40).to_bytes(4, "little") + b"WAVEdata" + bytes(36)
    wav_path = world.folder / "audio" / EXPERIMENT / f"{headless.capture_id}.wav"
    wav_path.write_bytes(no_fmt + bytes(headless.wav_bytes - len(no_fmt)))
    out = tmp_path / "out"
    result = await export(world, out, "--test-share", "0")
    assert sorted(result.left_out["corrupt"]) == sorted([garbled.capture_id, headless.capture_id])
    assert exported_ids(out, "train") == {
        c.capture_id for c in world.captures[1:] if c not in (garbled, headless)
    }
    assert "2 with corrupt audio" in result.summary()


class FailingAudio:
    """The world's audio store, unavailable from the `fail_at`-th WAV read on."""

    def __init__(self, store: LocalAudioStore, fail_at: int) -> None:
        self.store = store
        self.reads = 0
        self.fail_at = fail_at

    async def captures(self, experiment: str) -> list[Capture]:
        return await self.store.captures(experiment)

    async def wav(self, capture_id: str) -> bytes:
        self.reads += 1
        if self.reads >= self.fail_at:
            raise StoreUnavailable("LocalAudioStore.wav: disk gone")
        return await self.store.wav(capture_id)


@pytest.mark.parametrize("existing", [False, True])
async def test_a_failed_export_leaves_nothing_and_a_rerun_works(
    tmp_path: Path, existing: bool
) -> None:
    """A store failing midway: the error reaches the caller, --out is as it was (absent or
    empty), nothing half-written is left beside it, and the same export then succeeds."""
    world = await labelled_world(tmp_path, units=4)
    parent = tmp_path / "exports"
    out = parent / "checkout"
    if existing:
        out.mkdir(parents=True)
    listing = await labelled_items(
        world.audio_store(), world.label_store(), world.preference_store(), EXPERIMENT
    )
    failing = FailingAudio(world.audio_store(), fail_at=4)
    with pytest.raises(StoreUnavailable):
        await export_dataset(listing.items, failing, out, experiment=EXPERIMENT)  # type: ignore[arg-type]
    assert failing.reads == 4
    assert names_in(parent) == (["checkout"] if existing else [])
    assert not existing or names_in(out) == []
    result = await export(world, out)
    assert result.train + result.test == 7
    assert names_in(parent) == ["checkout"]


async def test_a_withdrawn_review_is_not_exported(tmp_path: Path) -> None:
    """A capture whose review label's preference was withdrawn (the reviewer's undo) is left
    out and counted; a live review, or a label from another door, is exported."""
    world = await labelled_world(tmp_path, units=3)
    withdrawn, live, relabelled, never = world.captures[1:5]
    preferences = world.preference_store()
    for capture in (withdrawn, relabelled):
        await preferences.put(review(capture))
        await preferences.put(review(capture, withdrawn=True))
    await preferences.put(review(live))
    # An admin's label through the API replaces the retracted review's.
    await world.label_store().put(
        [LabelInput(relabelled.primary.record_id, "checked by an admin")], "alice", "api"
    )
    out = tmp_path / "out"
    result = await export(world, out, "--test-share", "0")
    ids = exported_ids(out, "train")
    assert withdrawn.capture_id not in ids
    assert {live.capture_id, relabelled.capture_id, never.capture_id} <= ids
    assert (result.withdrawn, result.unlabelled) == (1, 1)
    assert "1 capture of a withdrawn review skipped" in result.summary()
    assert json.loads((out / "export.json").read_text())["review_withdrawn"] == 1


async def test_a_part_too_big_for_one_zip_is_split(tmp_path: Path) -> None:
    """A part over the zip limit is written as <part>-1.zip, <part>-2.zip, … each with the
    trans.txt of its own files, listed in export.json; together they hold the whole part."""
    world = await labelled_world(tmp_path, units=4)
    listing = await labelled_items(
        world.audio_store(), world.label_store(), world.preference_store(), EXPERIMENT
    )
    out = tmp_path / "out"
    result = await export_dataset(
        listing.items,
        world.audio_store(),
        out,
        experiment=EXPERIMENT,
        test_share=0.0,
        max_zip_files=3,
    )
    assert result.train_zips == ("train-1.zip", "train-2.zip", "train-3.zip", "train-4.zip")
    assert result.test_zips == ()
    seen: list[str] = []
    for name in result.train_zips:
        names, rows, _ = read_zip(out / name)
        assert len(names) <= 3
        assert names == {TRANSCRIPT} | {file for file, _ in rows}
        seen += [file.removesuffix(".wav") for file, _ in rows]
    assert seen == [item.capture_id for item in listing.items]
    assert json.loads((out / "export.json").read_text())["train"]["zips"] == list(result.train_zips)
    assert "train 7 (4 units, 4 zips)" in result.summary()


async def test_bad_requests_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A non-empty --out, a share out of range, an experiment without labelled captures or
    an invalid name: a ConfigError naming the option, and nothing written."""
    world = await labelled_world(tmp_path, units=2)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--out"):
        await export(world, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(ConfigError, match="--test-share"):
        await export(world, tmp_path / "a", "--test-share", "1")
    empty = parse("--out", str(tmp_path / "b"))
    empty.experiment = "nothing-here"
    stores = (world.audio_store(), world.label_store(), world.preference_store())
    with pytest.raises(ConfigError, match="--experiment"):
        await run_export(empty, *stores)
    bad = parse("--out", str(tmp_path / "c"))
    bad.experiment = "../escape"
    with pytest.raises(ConfigError, match="--experiment"):
        await run_export(bad, *stores)
    assert names_in(tmp_path) == ["busy", "world"]


def test_the_command_exports_from_the_configured_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`speech-gateway dataset export` reads the settings file's audio directory, outcome
    store and the preferences beside it, writes the layout and prints one line; a bad --out
    is one line on stderr and 2."""
    from gateway.cli import main

    world = asyncio.run(labelled_world(tmp_path, units=4))
    asyncio.run(world.preference_store().put(review(world.captures[2], withdrawn=True)))
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
    assert printed.startswith(f"exported 6 labelled captures to {out}: train ")
    assert "1 capture of a withdrawn review skipped; 1 capture without a label" in printed
    assert json.loads((out / "export.json").read_text())["train"]["zips"] == ["train.zip"]
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
    listing = await labelled_items(audio, world.label_store(), world.preference_store(), EXPERIMENT)
    await audio.delete_unit("unit-001")
    out = tmp_path / "out"
    result = await export_dataset(listing.items, audio, out, experiment=EXPERIMENT, test_share=0.0)
    deleted = {c.capture_id for c in world.captures if c.unit == "unit-001"}
    assert set(result.left_out["deleted"]) == deleted
    names, rows, _ = read_zip(out / "train.zip")
    assert len(rows) == result.train == len(listing.items) - 2
    assert not {name.removesuffix(".wav") for name in names} & deleted
    assert "2 deleted while exporting" in result.summary()
    assert json.loads((out / "export.json").read_text())["left_out"]["deleted"]["count"] == 2
