"""`speech-gateway dataset export`: reviewed captures as Custom Speech datasets and a replay set.

Every captured utterance whose primary record has a label (the review workbench's, or any
other) becomes one item: its WAV and the label's text. A label the workbench wrote (source
`review`) whose review was then withdrawn (the capture's latest preference is withdrawn: the
reviewer's undo) is a retracted review, and its capture is left out and counted.

The items are split into train and test by unit: a unit is in test iff the SHA-256 of the
seed and the unit, read as a fraction in [0, 1), is below the test share. A unit's part thus
depends on the seed, the share and the unit only: units added later never move an earlier
one to the other part, and the test share is met on average, not exactly; with few units a
part can be empty. The unit is what the client sent as its unit id, pseudonymised; a session
without one has its connection id as its unit (`unit_source` "connection" in its outcome
records), so each such session is a unit of its own and one speaker's sessions can land in
both parts.

The folder `--out` gets (`gateway.tools.dataset_zips` for the zips' rules):

* `train.zip`, `test.zip` (`train-1.zip`, `train-2.zip`, … when a part needs several zips;
  none for an empty part): Custom Speech's "audio + human-labeled transcript" datasets.
  Only 16-bit mono PCM WAVs at 8 or 16 kHz go in, at most `MAX_TRAIN_SECONDS` long for
  training and `MAX_TEST_SECONDS` for testing; any other capture is left out and counted.
* `test/manifest.jsonl` and `test/audio/`: the test zips' items as a replay dataset
  (`gateway.tools.dataset`), so the next custom model can be rehearsed through the gateway
  on the traffic it must serve (`speech-gateway replay <out>/test`). The replay feeds the
  Speech SDK's push stream, which takes the same formats, so it holds the same items.
* `export.json`: what was exported (items, units and zips per part, seed, share) and what
  was left out, by reason, with the capture ids.

Everything is written into a new folder beside `--out`, renamed to `--out` at the end: an
export that fails (a store unavailable, a full disk) removes it and leaves `--out` as it was.
WAVs are read from the audio store one at a time as they are written, so the export's memory
does not grow with its size; a capture deleted meanwhile (its unit's audio deleted, or
expired) or whose audio is corrupt is left out and counted.

docs/review.md#dataset-export describes the layout for users.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gateway.errors import CaptureCorrupt, CaptureNotFound, ConfigError
from gateway.stores.audio_store import AudioStore, Capture
from gateway.stores.label_store import LabelStore
from gateway.stores.preference_store import PreferenceStore
from gateway.tools.cli_options import DEFAULT_SEED, DEFAULT_TEST_SHARE
from gateway.tools.dataset_zips import (
    MAX_TEST_SECONDS,
    MAX_TRAIN_SECONDS,
    MAX_ZIP_BYTES,
    MAX_ZIP_FILES,
    TRANSCRIPT,
    ExportFiles,
    audio_problem,
    wav_format,
)

if TYPE_CHECKING:
    from gateway.config.settings import Settings

__all__ = [
    "MAX_TEST_SECONDS",
    "MAX_TRAIN_SECONDS",
    "SUMMARY",
    "TRANSCRIPT",
    "ExportItem",
    "ExportResult",
    "Listing",
    "export_dataset",
    "labelled_items",
    "run_export",
    "split_units",
    "unit_fraction",
]

SUMMARY: Final = "export.json"
# Why a labelled capture is left out, as export.json names it, and as the summary says it.
REASONS: Final = {
    "too_long": "too long for its part",
    "not_pcm": "not PCM",
    "not_16_bit": "not 16-bit",
    "not_mono": "not mono",
    "sample_rate": "not 8 or 16 kHz",
    "corrupt": "with corrupt audio",
    "deleted": "deleted while exporting",
}


@dataclass(frozen=True, slots=True)
class ExportItem:
    """One labelled capture: its id, the reference text (one line), its unit and length.
    The WAV is read from the audio store only when it is written, one at a time."""

    capture_id: str
    unit: str
    text: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Listing:
    """The experiment's labelled captures, and how many were skipped: without a label, or
    labelled by a review that was withdrawn."""

    items: list[ExportItem]
    unlabelled: int = 0
    withdrawn: int = 0


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What `export_dataset` wrote: items, units and zip names per part, and the capture ids
    left out by reason (`REASONS`)."""

    out: Path
    train: int
    test: int
    train_units: int
    test_units: int
    train_zips: tuple[str, ...] = ()
    test_zips: tuple[str, ...] = ()
    unlabelled: int = 0
    withdrawn: int = 0
    left_out: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        text = (
            f"exported {self.train + self.test} labelled captures to {self.out}: "
            f"train {self.train} ({_units(self.train_units, self.train_zips)}), "
            f"test {self.test} ({_units(self.test_units, self.test_zips)})"
        )
        if self.left_out:
            counts = (f"{len(ids)} {REASONS[reason]}" for reason, ids in self.left_out.items())
            text += "; left out: " + ", ".join(counts)
        if self.withdrawn:
            noun = "capture" if self.withdrawn == 1 else "captures"
            text += f"; {self.withdrawn} {noun} of a withdrawn review skipped"
        if self.unlabelled:
            noun = "capture" if self.unlabelled == 1 else "captures"
            text += f"; {self.unlabelled} {noun} without a label skipped"
        return text

    def to_json(self, experiment: str, seed: str, test_share: float) -> str:
        summary = {
            "experiment": experiment,
            "seed": seed,
            "test_share": test_share,
            "train": {"items": self.train, "units": self.train_units, "zips": self.train_zips},
            "test": {"items": self.test, "units": self.test_units, "zips": self.test_zips},
            "unlabelled": self.unlabelled,
            "review_withdrawn": self.withdrawn,
            "left_out": {
                reason: {"count": len(ids), "captures": ids}
                for reason, ids in self.left_out.items()
            },
        }
        return json.dumps(summary, indent=2) + "\n"


def _units(units: int, zips: Sequence[str]) -> str:
    noun = "unit" if units == 1 else "units"
    if not zips:
        return f"{units} {noun}, no zip"
    return f"{units} {noun}" if len(zips) == 1 else f"{units} {noun}, {len(zips)} zips"


def unit_fraction(unit: str, seed: str) -> float:
    """The unit's place in [0, 1): the first 8 bytes of SHA-256(seed NUL unit), as a fraction."""
    digest = hashlib.sha256(f"{seed}\0{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_units(units: Iterable[str], test_share: float, seed: str) -> frozenset[str]:
    """The units of the test part (module doc): those whose fraction is below `test_share`."""
    if not 0.0 <= test_share < 1.0:
        raise ValueError(f"test_share must be in [0, 1), got {test_share!r}")
    return frozenset(u for u in set(units) if unit_fraction(u, seed) < test_share)


def _one_line(text: str) -> str:
    # A transcript line must not break the TSV: tabs and line breaks become spaces.
    return " ".join(text.split())


async def labelled_items(
    audio: AudioStore, labels: LabelStore, preferences: PreferenceStore, experiment: str
) -> Listing:
    """The experiment's captures whose primary record has a label, oldest first, without
    those of a withdrawn review (module doc), and how many were skipped."""
    try:
        captures: list[Capture] = await audio.captures(experiment)
    except ValueError as exc:
        raise ConfigError("--experiment", str(exc)) from None
    found = await labels.get([c.primary.record_id for c in captures])
    latest = await preferences.latest(experiment)
    items: list[ExportItem] = []
    withdrawn = 0
    for capture in captures:
        label = found.get(capture.primary.record_id)
        if label is None:
            continue
        preference = latest.get(capture.capture_id)
        if label.source == "review" and preference is not None and preference.withdrawn:
            withdrawn += 1
            continue
        seconds = capture.duration_ms / 1000
        items.append(ExportItem(capture.capture_id, capture.unit, _one_line(label.text), seconds))
    return Listing(items, len(captures) - len(items) - withdrawn, withdrawn)


def _begin(out: Path) -> Path:
    """A new folder beside `out` to write into; ConfigError unless `out` is absent or an
    empty folder: nothing is ever overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", f"{out} exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"
    folder.mkdir()
    return folder


async def export_dataset(
    items: Sequence[ExportItem],
    audio: AudioStore,
    out: Path,
    *,
    experiment: str,
    unlabelled: int = 0,
    withdrawn: int = 0,
    test_share: float = DEFAULT_TEST_SHARE,
    seed: str = DEFAULT_SEED,
    max_zip_bytes: int = MAX_ZIP_BYTES,
    max_zip_files: int = MAX_ZIP_FILES,
) -> ExportResult:
    """Write the layout of the module doc to `out` (absent or empty: nothing is overwritten),
    reading each item's WAV from `audio` as it is written; on any failure nothing is left."""
    if not items:
        raise ConfigError("--experiment", f"{experiment} has no labelled captured utterance")
    test_units = split_units((item.unit for item in items), test_share, seed)
    try:
        folder = await asyncio.to_thread(_begin, out)
    except OSError as exc:
        raise ConfigError("--out", f"cannot write {out}: {exc.strerror or exc}") from None
    writer = ExportFiles(folder, max_bytes=max_zip_bytes, max_files=max_zip_files)
    exported: dict[str, list[ExportItem]] = {"train": [], "test": []}
    left_out: dict[str, list[str]] = {}
    try:
        for item in items:
            part = "test" if item.unit in test_units else "train"
            reason = await _write(writer, audio, part, item)
            if reason is None:
                exported[part].append(item)
            else:
                left_out.setdefault(reason, []).append(item.capture_id)
        zips = await asyncio.to_thread(writer.close)
        result = ExportResult(
            out=out,
            train=len(exported["train"]),
            test=len(exported["test"]),
            train_units=len({item.unit for item in exported["train"]}),
            test_units=len({item.unit for item in exported["test"]}),
            train_zips=tuple(zips["train"]),
            test_zips=tuple(zips["test"]),
            unlabelled=unlabelled,
            withdrawn=withdrawn,
            left_out={reason: left_out[reason] for reason in REASONS if reason in left_out},
        )
        text = result.to_json(experiment, seed, test_share)
        await asyncio.to_thread((folder / SUMMARY).write_text, text, encoding="utf-8")
        # Onto `out` itself when it is an empty folder (rename(2) replaces an empty directory).
        await asyncio.to_thread(os.replace, folder, out)
    except BaseException as exc:
        # A failure or an interrupt: the half-written folder goes, so a rerun finds `out` as
        # it was (synchronous: the event loop may be cancelling this task).
        writer.abandon()
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ConfigError("--out", f"cannot write {out}: {exc.strerror or exc}") from None
        raise
    return result


async def _write(writer: ExportFiles, audio: AudioStore, part: str, item: ExportItem) -> str | None:
    """Write `item` into `part`; the reason (`REASONS`) when it is left out instead."""
    if item.seconds > (MAX_TEST_SECONDS if part == "test" else MAX_TRAIN_SECONDS):
        return "too_long"
    try:
        wav = await audio.wav(item.capture_id)
        problem = audio_problem(wav_format(item.capture_id, wav))
    except CaptureNotFound:
        return "deleted"  # its unit's audio was deleted (or it expired) meanwhile
    except CaptureCorrupt:
        return "corrupt"
    if problem is not None:
        return problem.value
    await asyncio.to_thread(writer.add, part, item.capture_id, item.text, wav)
    return None


async def run_export(
    args: argparse.Namespace,
    audio: AudioStore,
    labels: LabelStore,
    preferences: PreferenceStore,
) -> ExportResult:
    """The export of `args` from these stores."""
    if not 0.0 <= args.test_share < 1.0:
        raise ConfigError("--test-share", f"must be at least 0 and below 1, got {args.test_share}")
    listing = await labelled_items(audio, labels, preferences, args.experiment)
    return await export_dataset(
        listing.items,
        audio,
        args.out,
        experiment=args.experiment,
        unlabelled=listing.unlabelled,
        withdrawn=listing.withdrawn,
        test_share=args.test_share,
        seed=args.seed,
    )


def dataset_command(args: argparse.Namespace, settings: Settings) -> int:
    """`speech-gateway dataset export`: from the configured audio, label and review stores."""
    result = asyncio.run(_export_configured(args, settings))
    print(result.summary())
    return 0


async def _export_configured(args: argparse.Namespace, settings: Settings) -> ExportResult:
    from gateway.server.admin.review import create_review_stores
    from gateway.stores.factory import create_audio_store, open_label_store
    from gateway.stores.redis_label_store import RedisLabelStore

    audio = create_audio_store(settings.gateway.audio)
    try:
        async with open_label_store(settings.outcomes, settings.redis.connection()) as labels:
            # The preferences where the gateway keeps them: beside the outcome file, or in
            # the outcome store's Redis (as `serve` creates them).
            client = labels.client if isinstance(labels, RedisLabelStore) else None
            preferences, _ = create_review_stores(
                settings.outcomes.path, client, settings.redis.prefix
            )
            return await run_export(args, audio, labels, preferences)
    finally:
        await audio.close()
