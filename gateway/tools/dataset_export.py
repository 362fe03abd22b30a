"""`speech-gateway dataset export`: reviewed captures as Custom Speech datasets and a replay set.

Every captured utterance whose primary record has a label (the review workbench's, or any
other) becomes one item: its WAV and the label's text. The items are split into train and
test by unit, so no speaker is in both: the units are ordered by a SHA-256 of the seed and
the unit, and the first round(test_share x units) of them (at least one, and one fewer than
all, when there are two units or more) form the test part. The folder `--out` gets:

* `train.zip`, `test.zip`: Custom Speech's "audio + human-labelled transcript" datasets,
  each the WAV files (`<capture_id>.wav`) and `trans.txt` at the top of the zip, one line
  per file, `<file name><TAB><transcript>`, UTF-8 with a byte order mark. A training item
  longer than `MAX_TRAIN_SECONDS` is left out of train.zip (Custom Speech's limit per file).
* `test/manifest.jsonl` and `test/audio/`: the test part as a replay dataset
  (`gateway.tools.dataset`), so the next custom model can be rehearsed through the gateway
  on the traffic it must serve (`speech-gateway replay <out>/test`).
* `export.json`: what was exported (counts, units per part, seed, share).

WAVs are read from the audio store one at a time as they are written, so the export's memory
does not grow with its size; a capture deleted meanwhile (its unit's audio deleted, or
expired) is left out and counted.

docs/review.md#dataset-export describes the layout for users.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import CaptureNotFound, ConfigError
from gateway.stores.audio_store import AudioStore, Capture
from gateway.stores.label_store import LabelStore
from gateway.tools.cli_options import DEFAULT_SEED, DEFAULT_TEST_SHARE
from gateway.tools.dataset import MANIFEST

if TYPE_CHECKING:
    from gateway.config.settings import Settings

TRANSCRIPT: Final = "trans.txt"
SUMMARY: Final = "export.json"
MAX_TRAIN_SECONDS: Final = 40.0
_BOM: Final = "\ufeff"


@dataclass(frozen=True, slots=True)
class ExportItem:
    """One labelled capture: its id, the reference text (one line), its unit and length.
    The WAV is read from the audio store only when it is written, one at a time."""

    capture_id: str
    unit: str
    text: str
    seconds: float

    @property
    def file_name(self) -> str:
        return f"{self.capture_id}.wav"


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What `export_dataset` wrote."""

    out: Path
    train: int
    test: int
    train_units: int
    test_units: int
    unlabelled: int
    too_long: int
    gone: int = 0  # deleted (unit deletion, retention) between the listing and the copy

    def summary(self) -> str:
        text = (
            f"exported {self.train + self.test} labelled captures to {self.out}: "
            f"train {self.train} ({self.train_units} units), "
            f"test {self.test} ({self.test_units} units)"
        )
        if self.too_long:
            text += f"; {self.too_long} over {MAX_TRAIN_SECONDS:.0f} s left out of train.zip"
        if self.gone:
            text += f"; {self.gone} deleted while exporting left out"
        if self.unlabelled:
            noun = "capture" if self.unlabelled == 1 else "captures"
            text += f"; {self.unlabelled} {noun} without a label skipped"
        return text


def split_units(units: Iterable[str], test_share: float, seed: str) -> frozenset[str]:
    """The units of the test part (module doc): deterministic for a seed and a set of units."""
    if not 0.0 <= test_share < 1.0:
        raise ValueError(f"test_share must be in [0, 1), got {test_share!r}")
    ordered = sorted(set(units), key=lambda u: hashlib.sha256(f"{seed}\0{u}".encode()).hexdigest())
    if len(ordered) < 2 or test_share == 0.0:
        return frozenset()
    count = min(len(ordered) - 1, max(1, round(test_share * len(ordered))))
    return frozenset(ordered[:count])


def _one_line(text: str) -> str:
    # A transcript line must not break the TSV: tabs and line breaks become spaces.
    return " ".join(text.split())


class _Writer:
    """The export's files, written item by item (module doc); `close` finishes them."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "test" / "audio").mkdir(parents=True)
        self._zips = {
            part: zipfile.ZipFile(out / f"{part}.zip", "w", compression=zipfile.ZIP_DEFLATED)
            for part in ("train", "test")
        }
        self._transcripts: dict[str, list[str]] = {"train": [], "test": []}
        self._manifest: list[str] = []
        self._out = out

    def add(self, part: str, item: ExportItem, wav: bytes) -> None:
        self._zips[part].writestr(item.file_name, wav)
        self._transcripts[part].append(f"{item.file_name}\t{item.text}\r\n")
        if part == "test":
            (self._out / "test" / "audio" / item.file_name).write_bytes(wav)
            entry = {"id": item.capture_id, "audio": f"audio/{item.file_name}", "text": item.text}
            self._manifest.append(json.dumps(entry, ensure_ascii=False))

    def close(self) -> None:
        for part, archive in self._zips.items():
            lines = "".join(self._transcripts[part])
            archive.writestr(TRANSCRIPT, (_BOM + lines).encode("utf-8"))
            archive.close()
        manifest = self._out / "test" / MANIFEST
        manifest.write_text("".join(line + "\n" for line in self._manifest), encoding="utf-8")


async def labelled_items(
    audio: AudioStore, labels: LabelStore, experiment: str
) -> tuple[list[ExportItem], int]:
    """The experiment's captures whose primary record has a label, oldest first, and the
    number of captures without one."""
    try:
        captures: list[Capture] = await audio.captures(experiment)
    except ValueError as exc:
        raise ConfigError("--experiment", str(exc)) from None
    found = await labels.get([c.primary.record_id for c in captures])
    items: list[ExportItem] = []
    for capture in captures:
        label = found.get(capture.primary.record_id)
        if label is None:
            continue
        text = _one_line(label.text)
        seconds = capture.duration_ms / 1000
        items.append(ExportItem(capture.capture_id, capture.unit, text, seconds))
    return items, len(captures) - len(items)


def _check_out(out: Path) -> None:
    """ConfigError unless `out` is absent or an empty folder: nothing is ever overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", f"{out} exists and is not an empty folder")


async def export_dataset(
    items: Sequence[ExportItem],
    audio: AudioStore,
    out: Path,
    *,
    experiment: str,
    unlabelled: int = 0,
    test_share: float = DEFAULT_TEST_SHARE,
    seed: str = DEFAULT_SEED,
) -> ExportResult:
    """Write the layout of the module doc to `out` (absent or empty: nothing is overwritten),
    reading each item's WAV from `audio` as it is written."""
    await asyncio.to_thread(_check_out, out)
    if not items:
        raise ConfigError("--experiment", f"{experiment} has no labelled captured utterance")
    test_units = split_units((item.unit for item in items), test_share, seed)
    parts: list[tuple[str, ExportItem]] = []
    too_long = gone = 0
    for item in items:
        if item.unit in test_units:
            parts.append(("test", item))
        elif item.seconds <= MAX_TRAIN_SECONDS:
            parts.append(("train", item))
        else:
            too_long += 1
    try:
        writer = await asyncio.to_thread(_Writer, out)
        try:
            for part, item in list(parts):
                try:
                    wav = await audio.wav(item.capture_id)
                except CaptureNotFound:
                    # Its unit's audio was deleted (or it expired) meanwhile: never export it.
                    parts.remove((part, item))
                    gone += 1
                    continue
                await asyncio.to_thread(writer.add, part, item, wav)
        finally:
            await asyncio.to_thread(writer.close)
    except OSError as exc:
        raise ConfigError("--out", f"cannot write {out}: {exc.strerror or exc}") from None
    train = [item for part, item in parts if part == "train"]
    result = ExportResult(
        out=out,
        train=len(train),
        test=len(parts) - len(train),
        train_units=len({item.unit for item in train}),
        test_units=len(test_units),
        unlabelled=unlabelled,
        too_long=too_long,
        gone=gone,
    )
    summary: dict[str, Any] = {
        "experiment": experiment,
        "seed": seed,
        "test_share": test_share,
        "train": {"items": result.train, "units": result.train_units},
        "test": {"items": result.test, "units": result.test_units},
        "unlabelled": unlabelled,
        "too_long_for_training": too_long,
        "deleted_while_exporting": gone,
    }
    text = json.dumps(summary, indent=2) + "\n"
    await asyncio.to_thread((out / SUMMARY).write_text, text, encoding="utf-8")
    return result


async def run_export(
    args: argparse.Namespace, audio: AudioStore, labels: LabelStore
) -> ExportResult:
    """The export of `args` from these stores."""
    if not 0.0 <= args.test_share < 1.0:
        raise ConfigError("--test-share", f"must be at least 0 and below 1, got {args.test_share}")
    items, unlabelled = await labelled_items(audio, labels, args.experiment)
    return await export_dataset(
        items,
        audio,
        args.out,
        experiment=args.experiment,
        unlabelled=unlabelled,
        test_share=args.test_share,
        seed=args.seed,
    )


def dataset_command(args: argparse.Namespace, settings: Settings) -> int:
    """`speech-gateway dataset export`: from the configured audio and label stores."""
    result = asyncio.run(_export_configured(args, settings))
    print(result.summary())
    return 0


async def _export_configured(args: argparse.Namespace, settings: Settings) -> ExportResult:
    from gateway.stores.factory import create_audio_store, open_label_store

    audio = create_audio_store(settings.gateway.audio)
    try:
        async with open_label_store(settings.outcomes, settings.redis.connection()) as labels:
            return await run_export(args, audio, labels)
    finally:
        await audio.close()
