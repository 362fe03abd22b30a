"""Tests for gateway.tools.dataset_zips: which WAVs Custom Speech takes, and zips that never
break its size and file-count limits.

tests/tools/test_dataset_export.py covers the export that uses them.
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from gateway.errors import CaptureCorrupt
from gateway.protocol.wav import PCM_16K_MONO, WaveFormat, WaveFormatTag, wave_header
from gateway.tools.dataset_zips import (
    MAX_ZIP_BYTES,
    MAX_ZIP_FILES,
    TRANSCRIPT,
    AudioProblem,
    ZipSeries,
    audio_problem,
    wav_format,
)


def test_only_16_bit_mono_pcm_at_8_or_16_khz_passes() -> None:
    """Custom Speech's format: PCM, 16-bit, mono, 8000 or 16000 Hz; the first property
    that differs names the problem."""
    assert audio_problem(PCM_16K_MONO) is None
    assert audio_problem(WaveFormat(8000, 1, 16)) is None
    assert audio_problem(WaveFormat(44100, 1, 16)) is AudioProblem.SAMPLE_RATE
    assert audio_problem(WaveFormat(16000, 2, 16)) is AudioProblem.NOT_MONO
    assert audio_problem(WaveFormat(16000, 1, 24)) is AudioProblem.NOT_16_BIT
    assert audio_problem(WaveFormat(8000, 1, 8, WaveFormatTag.MULAW)) is AudioProblem.NOT_PCM
    assert audio_problem(WaveFormat(48000, 2, 8)) is AudioProblem.NOT_16_BIT  # the first


def test_a_wav_header_is_read_or_the_capture_is_corrupt() -> None:
    """The format comes from the stored header; a header that cannot be read is
    CaptureCorrupt naming the capture."""
    fmt = WaveFormat(8000, 1, 16)
    assert wav_format("c" * 32, wave_header(fmt, 4) + bytes(4)) == fmt
    with pytest.raises(CaptureCorrupt, match=r"c{32}.*no fmt chunk"):
        wav_format("c" * 32, b"RIFF" + bytes(4) + b"WAVEdata" + bytes(8))


def test_the_documented_limits() -> None:
    """At most 2 GB (read as 10^9 bytes times two) and 10,000 files, trans.txt included."""
    assert (MAX_ZIP_BYTES, MAX_ZIP_FILES) == (2_000_000_000, 10_000)


def files_of(folder: Path, names: list[str]) -> list[tuple[str, list[str]]]:
    """Each zip's WAV names, in trans.txt's order, after checking it lists exactly them."""
    found = []
    for name in names:
        with zipfile.ZipFile(folder / name) as archive:
            text = archive.read(TRANSCRIPT).decode("utf-8-sig")
            listed = [line.split("\t")[0] for line in text.splitlines()]
            assert set(archive.namelist()) == {TRANSCRIPT, *listed}
            for line in text.splitlines():
                assert line.split("\t")[1] == f"text of {line.split('.')[0]}"
        found.append((name, listed))
    return found


@pytest.mark.parametrize("seed", range(5))
def test_no_zip_exceeds_the_byte_limit_even_when_nothing_compresses(
    tmp_path: Path, seed: int
) -> None:
    """Random (incompressible) files of random sizes fill zips up to the byte limit, never
    past it; together the zips hold every file once, in order."""
    rng = random.Random(seed)
    limit = 60_000
    series = ZipSeries(tmp_path, "train", max_bytes=limit)
    added = []
    for n in range(40):
        name = f"{n:032x}.wav"
        series.add(name, f"text of {n:032x}", rng.randbytes(rng.randrange(100, 20_000)))
        added.append(name)
    names = series.close()
    assert names == [f"train-{i}.zip" for i in range(1, len(names) + 1)]
    assert len(names) > 3
    sizes = [(tmp_path / name).stat().st_size for name in names]
    assert max(sizes) <= limit
    assert min(sizes[:-1]) > limit // 2  # filled, not one file per zip
    assert [f for _, files in files_of(tmp_path, names) for f in files] == added


def test_a_zip_holds_at_most_max_files_with_its_transcript(tmp_path: Path) -> None:
    """With max_files 4 a zip holds three WAVs and trans.txt."""
    series = ZipSeries(tmp_path, "test", max_files=4)
    for n in range(7):
        series.add(f"{n:032x}.wav", f"text of {n:032x}", bytes(100))
    names = series.close()
    assert [len(files) for _, files in files_of(tmp_path, names)] == [3, 3, 1]


def test_one_zip_keeps_the_parts_name_and_an_empty_part_has_none(tmp_path: Path) -> None:
    """A part that fits into one zip is <part>.zip; a part without files writes nothing."""
    one = ZipSeries(tmp_path, "train")
    one.add(f"{1:032x}.wav", f"text of {1:032x}", bytes(10))
    assert one.close() == ["train.zip"]
    assert ZipSeries(tmp_path, "test").close() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.zip"]


def test_a_file_no_zip_can_hold_is_refused(tmp_path: Path) -> None:
    """A file bigger than an empty zip's room is a ValueError, not a zip over the limit."""
    series = ZipSeries(tmp_path, "train", max_bytes=1_000)
    with pytest.raises(ValueError, match="fits into no zip"):
        series.add("big.wav", "words", bytes(1_000))
