"""The files of a dataset export, and Custom Speech's rules for "audio + human-labeled
transcript" datasets that its zips keep.

`speech-gateway dataset export` (`gateway.tools.dataset_export`) checks every WAV with
`audio_problem` and writes the items that pass through `ExportFiles`: a `ZipSeries` per part
and the test part's replay set. The rules, as Azure AI Speech documents them ("Training and
testing datasets", how-to-custom-speech-test-and-train on learn.microsoft.com, dated
2024-09-19, read 2026-12):

* a RIFF WAV file of 16-bit PCM, one channel, at 8,000 or 16,000 Hz; at most 40 s long for
  training (a longer file trains on its text only) and two hours for testing;
* all files in one .zip of at most "2 GB or 10,000 files", the transcripts in one plain-text
  file beside them: `<file name><TAB><transcript>` per line, UTF-8 with a byte order mark.

"2 GB" is read as 2,000,000,000 bytes, below 2 GiB, and trans.txt counts as one of the
10,000 files, so a zip holds at most 9,999 WAVs. The size of a zip is bounded before a file
goes in (the file uncompressed, its headers and the deflate's worst-case growth), so no zip
ever exceeds the limit, however little the audio compresses.
"""

from __future__ import annotations

import json
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import Final

from gateway.errors import CaptureCorrupt, UspError
from gateway.protocol.wav import WaveFormat, WaveFormatTag, parse_wave_header
from gateway.tools.dataset import MANIFEST

TRANSCRIPT: Final = "trans.txt"
MAX_TRAIN_SECONDS: Final = 40.0
MAX_TEST_SECONDS: Final = 2 * 3600.0
SAMPLE_RATES: Final = (8000, 16000)
MAX_ZIP_BYTES: Final = 2_000_000_000
MAX_ZIP_FILES: Final = 10_000  # trans.txt included
_BOM: Final = "\ufeff".encode()
# zipfile's local file header (30 bytes) and central directory entry (46 bytes) without the
# name, the end-of-central-directory record (22), and room for extra fields.
_ENTRY_BYTES: Final = 30 + 46 + 64
_END_BYTES: Final = 22 + 64


class AudioProblem(StrEnum):
    """Why a WAV is not what Custom Speech takes, checked in this order (the first counts)."""

    NOT_PCM = "not_pcm"
    NOT_16_BIT = "not_16_bit"
    NOT_MONO = "not_mono"
    SAMPLE_RATE = "sample_rate"


def wav_format(capture_id: str, wav: bytes) -> WaveFormat:
    """The format `wav`'s header announces; CaptureCorrupt when the header is unreadable."""
    try:
        fmt, _ = parse_wave_header(wav)
    except UspError as exc:
        raise CaptureCorrupt(capture_id, f"unreadable WAV header: {exc}") from None
    return fmt


def audio_problem(fmt: WaveFormat) -> AudioProblem | None:
    """What keeps audio of this format out of a Custom Speech dataset; None if nothing."""
    if fmt.format_tag != WaveFormatTag.PCM:
        return AudioProblem.NOT_PCM
    if fmt.bits_per_sample != 16:
        return AudioProblem.NOT_16_BIT
    if fmt.channels != 1:
        return AudioProblem.NOT_MONO
    if fmt.sample_rate not in SAMPLE_RATES:
        return AudioProblem.SAMPLE_RATE
    return None


def _bound(name: str, size: int) -> int:
    """The most a file of `size` bytes adds to a zip: headers, name twice, and the data,
    which deflate grows by at most 5 bytes per 16 KiB block when it cannot compress it."""
    return _ENTRY_BYTES + 2 * len(name.encode()) + size + size // 1000 + 64


class ZipSeries:
    """One part's Custom Speech zips in `folder`: `<part>-1.zip`, `<part>-2.zip`, … each with
    its WAVs and `trans.txt` at the top; the next zip begins when the next file would take
    the current one past `max_bytes` or `max_files` (module doc). `close` renames a lone
    `<part>-1.zip` to `<part>.zip`, writes nothing for a part without files, and returns the
    zips' names in order."""

    def __init__(
        self,
        folder: Path,
        part: str,
        *,
        max_bytes: int = MAX_ZIP_BYTES,
        max_files: int = MAX_ZIP_FILES,
    ) -> None:
        if max_files < 2:
            raise ValueError("a zip needs room for trans.txt and one WAV")
        self._folder = folder
        self._part = part
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._names: list[str] = []
        self._archive: zipfile.ZipFile | None = None
        self._lines: list[str] = []
        self._used = 0  # the bound of the open zip's size, trans.txt included

    def add(self, file_name: str, text: str, wav: bytes) -> None:
        """Put `wav` as `file_name` with its transcript line into the current zip, or into a
        new one if it would not fit; ValueError if it fits into no zip at all."""
        line = f"{file_name}\t{text}\r\n"
        need = _bound(file_name, len(wav)) + len(line.encode()) + len(line.encode()) // 1000 + 1
        fresh = _END_BYTES + _bound(TRANSCRIPT, len(_BOM))
        if fresh + need > self._max_bytes:
            raise ValueError(f"{file_name} ({len(wav)} bytes) fits into no zip")
        full = len(self._lines) + 1 >= self._max_files or self._used + need > self._max_bytes
        if self._archive is None or full:
            self._finish()
            name = f"{self._part}-{len(self._names) + 1}.zip"
            self._archive = zipfile.ZipFile(
                self._folder / name, "w", compression=zipfile.ZIP_DEFLATED
            )
            self._names.append(name)
            self._used = fresh
        self._archive.writestr(file_name, wav)
        self._lines.append(line)
        self._used += need

    def close(self) -> list[str]:
        """Finish the open zip; the names of the part's zips."""
        self._finish()
        if len(self._names) == 1:
            single = f"{self._part}.zip"
            (self._folder / self._names[0]).rename(self._folder / single)
            self._names = [single]
        return list(self._names)

    def abandon(self) -> None:
        """Close the open zip without finishing it (the export failed; its folder goes)."""
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    def _finish(self) -> None:
        if self._archive is None:
            return
        self._archive.writestr(TRANSCRIPT, _BOM + "".join(self._lines).encode("utf-8"))
        self._archive.close()
        self._archive = None
        self._lines = []


class ExportFiles:
    """An export's files in `folder`, written item by item: the train and test parts'
    `ZipSeries`, and the test part's replay set (`test/manifest.jsonl`, `test/audio/`, only
    when the part has items); `close` finishes them and returns the zips' names per part."""

    def __init__(self, folder: Path, *, max_bytes: int, max_files: int) -> None:
        self._zips = {
            part: ZipSeries(folder, part, max_bytes=max_bytes, max_files=max_files)
            for part in ("train", "test")
        }
        self._manifest: list[str] = []
        self._folder = folder

    def add(self, part: str, capture_id: str, text: str, wav: bytes) -> None:
        file_name = f"{capture_id}.wav"
        self._zips[part].add(file_name, text, wav)
        if part == "test":
            audio = self._folder / "test" / "audio"
            audio.mkdir(parents=True, exist_ok=True)
            (audio / file_name).write_bytes(wav)
            entry = {"id": capture_id, "audio": f"audio/{file_name}", "text": text}
            self._manifest.append(json.dumps(entry, ensure_ascii=False))

    def close(self) -> dict[str, list[str]]:
        names = {part: series.close() for part, series in self._zips.items()}
        if self._manifest:
            manifest = self._folder / "test" / MANIFEST
            manifest.write_text("".join(line + "\n" for line in self._manifest), encoding="utf-8")
        return names

    def abandon(self) -> None:
        """Close the open zips without finishing them (the export failed)."""
        for series in self._zips.values():
            series.abandon()
