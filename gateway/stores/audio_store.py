"""Audio stores: captured utterances (a WAV and a JSON sidecar each), for human labelling.

The capture writer (`gateway.server.capture_writer`) puts what the capture policy
(`gateway.session.capture`) sampled; the review workbench lists and reads captures back; the
admin API and `gateway admin delete-unit-audio` delete a unit's audio. Every store has the
same `AudioStore` interface:

* `LocalAudioStore`: the embedded default, a directory with one folder per experiment,
  `<capture_id>.wav` and `<capture_id>.json` in it.
* `BlobAudioStore` (`gateway.stores.blob_audio_store`): Azure Blob Storage, where Custom
  Speech reads training data from.

A capture is complete once its sidecar exists (the WAV is written first), so a crash between
the two leaves an orphan WAV that no listing shows and retention removes. Deleting a unit
also puts it on the store's deletion list: a later `put` of its audio raises `UnitDeleted`.
Reading a WAV checks what the sidecar promised (RIFF/WAVE content, `wav_bytes` bytes).
docs/capture.md describes the stores for operators.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.errors import AudioStoreFull, CaptureCorrupt, CaptureNotFound, UnitDeleted
from gateway.session.capture import CapturedResult, CaptureReason, CaptureSample
from gateway.stores.failures import store_call

__all__ = [
    "AudioStore",
    "Capture",
    "CaptureReason",
    "CaptureSample",
    "CapturedResult",
    "LocalAudioStore",
    "check_experiment",
    "check_unit",
    "check_wav",
]

WAV_CONTENT_TYPE: Final = "audio/wav"
SIDECAR_CONTENT_TYPE: Final = "application/json"
DELETED_UNITS_FILE: Final = "deleted-units.txt"
CAPTURE_ID: Final = re.compile(r"[0-9a-f]{32}")
_EXPERIMENT: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_UNIT: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Capture:
    """One captured utterance, as its JSON sidecar keeps it.

    capture_id: 32 hex digits, the name of its WAV and sidecar.
    experiment, phase: the experiment and phase the session ran in, as in the records.
    unit: the session's unit, pseudonymised as in the outcome records.
    client: the name of the client key the session used.
    session_id, utterance_index: the session (X-ConnectionId / request id) and the
      utterance's 0-based index in it, as in the outcome records.
    captured_at: when the capture was made, ISO-8601 UTC with a Z.
    reason, sample: why it was captured (`CaptureReason`) and by which sample.
    primary: the primary recognition; shadows: the shadows' recognitions of the same audio.
    duration_ms: the audio's duration; sample_rate: its samples per second (16000).
    wav_bytes: the size of the WAV (header and PCM), checked when it is read.
    """

    capture_id: str
    experiment: str
    phase: str
    unit: str
    client: str
    session_id: str
    utterance_index: int
    captured_at: str
    reason: CaptureReason
    sample: CaptureSample
    primary: CapturedResult
    shadows: tuple[CapturedResult, ...] = field(default=())
    duration_ms: int
    sample_rate: int = 16000
    wav_bytes: int

    def __post_init__(self) -> None:
        # The id and experiment become file and blob names: nothing else may get there.
        if not CAPTURE_ID.fullmatch(self.capture_id):
            raise ValueError(f"capture_id must be 32 hex digits: {self.capture_id!r}")
        check_experiment(self.experiment)

    def to_json(self) -> dict[str, Any]:
        return {
            "capture_id": self.capture_id,
            "experiment": self.experiment,
            "phase": self.phase,
            "unit": self.unit,
            "client": self.client,
            "session_id": self.session_id,
            "utterance_index": self.utterance_index,
            "captured_at": self.captured_at,
            "reason": self.reason.value,
            "sample": self.sample.value,
            "primary": self.primary.to_json(),
            "shadows": [shadow.to_json() for shadow in self.shadows],
            "duration_ms": self.duration_ms,
            "sample_rate": self.sample_rate,
            "wav_bytes": self.wav_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Capture:
        """The capture a sidecar describes; ValueError (or KeyError) when it is malformed."""
        return cls(
            capture_id=str(data["capture_id"]),
            experiment=str(data["experiment"]),
            phase=str(data["phase"]),
            unit=str(data["unit"]),
            client=str(data["client"]),
            session_id=str(data["session_id"]),
            utterance_index=int(data["utterance_index"]),
            captured_at=str(data["captured_at"]),
            reason=CaptureReason(data["reason"]),
            sample=CaptureSample(data["sample"]),
            primary=CapturedResult.from_json(data["primary"]),
            shadows=tuple(CapturedResult.from_json(item) for item in data.get("shadows", ())),
            duration_ms=int(data["duration_ms"]),
            sample_rate=int(data.get("sample_rate", 16000)),
            wav_bytes=int(data["wav_bytes"]),
        )

    def sidecar(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @property
    def captured_datetime(self) -> datetime:
        return datetime.fromisoformat(self.captured_at.replace("Z", "+00:00"))


class AudioStore(Protocol):
    """Where captured audio is kept. Failures of the storage raise `StoreUnavailable`."""

    async def put(self, capture: Capture, wav: bytes) -> None:
        """Store `wav` (exactly `capture.wav_bytes` bytes) and its sidecar. Raises
        `AudioStoreFull` at the size bound, `UnitDeleted` for a unit on the deletion list."""
        ...

    async def wav(self, capture_id: str) -> bytes:
        """The capture's WAV; `CaptureNotFound` when absent, `CaptureCorrupt` when its
        content type or size is not what the sidecar says."""
        ...

    async def captures(self, experiment: str) -> list[Capture]:
        """The experiment's complete captures, oldest first."""
        ...

    async def delete_unit(self, unit: str) -> int:
        """Delete every capture of `unit` and refuse its audio from now on; the number of
        captures removed."""
        ...

    async def expire(self, older_than: datetime) -> int:
        """Delete the captures made before `older_than` (aware UTC); how many were removed."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def check_experiment(experiment: str) -> None:
    """An experiment name usable as a folder or blob prefix: never `.` or `..`, and not
    starting with `_` (the Blob store's own prefixes, `_ids/` and `_deleted/`)."""
    if (
        not _EXPERIMENT.fullmatch(experiment)
        or set(experiment) == {"."}
        or experiment.startswith("_")
    ):
        raise ValueError(f"not an experiment name usable for audio: {experiment!r}")


def check_unit(unit: str) -> None:
    """A unit pseudonym as the records carry it: one line of name characters."""
    if not _UNIT.fullmatch(unit):
        raise ValueError(f"not a unit: {unit!r}")


def check_wav(capture_id: str, data: bytes, expected_bytes: int) -> bytes:
    """`data` if it is a RIFF/WAVE file of `expected_bytes` bytes; else CaptureCorrupt."""
    if len(data) != expected_bytes:
        raise CaptureCorrupt(capture_id, f"{len(data)} bytes stored, {expected_bytes} expected")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise CaptureCorrupt(capture_id, "not a RIFF/WAVE file")
    return data


class LocalAudioStore:
    """Captures in a local directory: `<directory>/<experiment>/<capture_id>.wav` and `.json`,
    the deletion list in `<directory>/deleted-units.txt`. File I/O runs in a worker thread;
    `max_bytes` bounds the WAV bytes kept (None: unbounded)."""

    def __init__(self, directory: Path, *, max_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = asyncio.Lock()
        self._used: int | None = None  # WAV bytes stored, counted on the first put
        self._deleted: set[str] = set()
        # The deletion list's (mtime, size) when read: another process (a worker of the same
        # gateway) may add to it, so every put looks whether it changed.
        self._deleted_seen: tuple[int, int] | None = None
        # Sidecars parsed, per experiment folder and file name: a sidecar is renamed into
        # place whole and never rewritten, so a listing (every click of the review
        # workbench) parses only the files that are new since the last one.
        self._parsed: dict[str, dict[str, Capture]] = {}

    @store_call
    async def put(self, capture: Capture, wav: bytes) -> None:
        if len(wav) != capture.wav_bytes:
            raise ValueError(f"capture {capture.capture_id}: wav_bytes is not the WAV's size")
        check_wav(capture.capture_id, wav, capture.wav_bytes)
        async with self._lock:
            # One hand-off to the worker thread for the whole put: each hand-off wakes the
            # event loop that relays audio, and the checks cost less than a wake-up.
            await asyncio.to_thread(self._put, capture, wav)

    @store_call
    async def wav(self, capture_id: str) -> bytes:
        if not CAPTURE_ID.fullmatch(capture_id):
            raise CaptureNotFound(capture_id)
        return await asyncio.to_thread(self._read_wav, capture_id)

    @store_call
    async def captures(self, experiment: str) -> list[Capture]:
        check_experiment(experiment)
        found = await asyncio.to_thread(lambda: list(self._sidecars(self.directory / experiment)))
        return sorted((capture for _, capture in found), key=lambda c: c.captured_at)

    @store_call
    async def delete_unit(self, unit: str) -> int:
        check_unit(unit)
        async with self._lock:
            deleted = await self._deleted_units()
            if unit not in deleted:
                # Listed before the files go: a put racing with the deletion is refused.
                await asyncio.to_thread(self._append_deleted, unit)
                deleted.add(unit)
            return await asyncio.to_thread(self._remove_where, lambda c: c.unit == unit)

    @store_call
    async def expire(self, older_than: datetime) -> int:
        async with self._lock:
            removed = await asyncio.to_thread(
                self._remove_where, lambda c: _captured_before(c, older_than)
            )
            await asyncio.to_thread(self._remove_orphans, older_than)
            return removed

    async def close(self) -> None:
        return None

    # -- in the worker thread ------------------------------------------------------------

    def _put(self, capture: Capture, wav: bytes) -> None:
        if capture.unit in self._read_deleted():
            raise UnitDeleted(capture.unit)
        if self._used is None:
            self._used = self._usage()
        if self.max_bytes is not None and self._used + len(wav) > self.max_bytes:
            raise AudioStoreFull(
                f"LocalAudioStore.put: {self._used} of {self.max_bytes} bytes used"
            )
        self._write(capture, wav)
        # Another process (a worker of the same gateway) may have deleted the unit while
        # the files were written, its scan missing them: looked at again, they go.
        if capture.unit in self._read_deleted():
            self._remove_capture(capture)
            raise UnitDeleted(capture.unit)
        self._used += len(wav)

    def _write(self, capture: Capture, wav: bytes) -> None:
        folder = self.directory / capture.experiment
        folder.mkdir(parents=True, exist_ok=True)
        # The WAV goes to its own name and is flushed to disk before the sidecar that lists
        # it exists, so a listed capture always has its audio; a crash before the sidecar
        # leaves an orphan WAV, which no listing shows and retention removes. The sidecar is
        # written to a temporary name and renamed, not flushed: a crash may lose the last
        # captures (each is a sample, dropped and counted like any other), never list a
        # capture without its audio. One flush instead of three is most of a put's cost.
        with open(folder / f"{capture.capture_id}.wav", "wb") as file:
            file.write(wav)
            file.flush()
            os.fdatasync(file.fileno())
        sidecar = folder / f"{capture.capture_id}.json"
        tmp = sidecar.with_suffix(".json.tmp")
        tmp.write_bytes(capture.sidecar())
        os.replace(tmp, sidecar)

    def _remove_capture(self, capture: Capture) -> None:
        folder = self.directory / capture.experiment
        (folder / f"{capture.capture_id}.json").unlink(missing_ok=True)
        (folder / f"{capture.capture_id}.wav").unlink(missing_ok=True)

    def _read_wav(self, capture_id: str) -> bytes:
        # The id names the files: one stat per experiment folder, no sidecar scan.
        for folder in self._experiment_folders():
            sidecar_path = folder / f"{capture_id}.json"
            try:
                capture = Capture.from_json(json.loads(sidecar_path.read_bytes()))
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError):
                raise CaptureCorrupt(capture_id, "the sidecar is unreadable") from None
            try:
                data = sidecar_path.with_suffix(".wav").read_bytes()
            except FileNotFoundError:
                raise CaptureCorrupt(capture_id, "the WAV is missing") from None
            return check_wav(capture_id, data, capture.wav_bytes)
        raise CaptureNotFound(capture_id)

    def _experiment_folders(self) -> Iterator[Path]:
        if not self.directory.is_dir():
            return
        for entry in sorted(self.directory.iterdir()):
            if entry.is_dir():
                yield entry

    def _all_sidecars(self) -> Iterator[tuple[Path, Capture]]:
        for folder in self._experiment_folders():
            yield from self._sidecars(folder)

    def _sidecars(self, folder: Path) -> Iterator[tuple[Path, Capture]]:
        try:
            names = sorted(
                entry.name for entry in os.scandir(folder) if entry.name.endswith(".json")
            )
        except (FileNotFoundError, NotADirectoryError):
            return
        known = self._parsed.get(folder.name, {})
        parsed: dict[str, Capture] = {}
        for name in names:
            path = folder / name
            capture = known.get(name)
            if capture is None:
                try:
                    capture = Capture.from_json(json.loads(path.read_bytes()))
                except FileNotFoundError:
                    continue  # removed by a concurrent deletion
                except (ValueError, KeyError, TypeError):
                    continue  # not a sidecar this store wrote
            parsed[name] = capture
            yield path, capture
        # Names gone since (deleted, expired) leave the cache with this listing.
        self._parsed[folder.name] = parsed

    def _usage(self) -> int:
        return sum(
            path.stat().st_size
            for folder in self._experiment_folders()
            for path in folder.glob("*.wav")
        )

    def _remove_where(self, doomed: Callable[[Capture], bool]) -> int:
        removed = 0
        for sidecar_path, capture in list(self._all_sidecars()):
            if doomed(capture):
                # The sidecar first: a crash in between leaves an orphan WAV, never a
                # listed capture without its audio.
                sidecar_path.unlink(missing_ok=True)
                wav_path = sidecar_path.with_suffix(".wav")
                if self._used is not None and wav_path.exists():
                    self._used -= wav_path.stat().st_size
                wav_path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _remove_orphans(self, older_than: datetime) -> None:
        cutoff = older_than.timestamp()
        for folder in self._experiment_folders():
            for path in folder.glob("*.wav"):
                if path.stat().st_mtime < cutoff and not self._listed(path.with_suffix(".json")):
                    if self._used is not None:
                        self._used -= path.stat().st_size
                    path.unlink(missing_ok=True)
            for tmp in folder.glob("*.tmp"):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink(missing_ok=True)

    @staticmethod
    def _listed(sidecar: Path) -> bool:
        """Whether a sidecar lists its capture; one a crash left empty or torn (it is not
        flushed) does not, and goes with its WAV."""
        try:
            Capture.from_json(json.loads(sidecar.read_bytes()))
        except FileNotFoundError:
            return False
        except (ValueError, KeyError, TypeError):
            sidecar.unlink(missing_ok=True)
            return False
        return True

    async def _deleted_units(self) -> set[str]:
        return await asyncio.to_thread(self._read_deleted)

    def _read_deleted(self) -> set[str]:
        path = self.directory / DELETED_UNITS_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            return self._deleted
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._deleted_seen:
            text = path.read_text()
            self._deleted = {line.strip() for line in text.splitlines() if line.strip()}
            self._deleted_seen = seen
        return self._deleted

    def _append_deleted(self, unit: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / DELETED_UNITS_FILE, "a") as file:
            file.write(unit + "\n")
            file.flush()
            os.fsync(file.fileno())


def _captured_before(capture: Capture, older_than: datetime) -> bool:
    """Whether `capture` was made before `older_than`; a sidecar whose time cannot be read
    (or has no zone) is not dated, and kept: it must not stop the others' retention."""
    try:
        return capture.captured_datetime < older_than
    except (ValueError, TypeError):
        return False
