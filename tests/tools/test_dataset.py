"""Tests for gateway.tools.dataset: manifest loading and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import DOMAINS, read_pcm, silence, write_wav

from gateway.errors import ConfigError
from gateway.tools.dataset import MANIFEST, LabelledUtterance, load_dataset


def make_dataset(folder: Path, lines: list[str], wavs: tuple[str, ...] = ("a.wav",)) -> Path:
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    for name in wavs:
        write_wav(folder / "audio" / name, silence(0.1))
    (folder / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def entry(id_: str = "u1", audio: str = "audio/a.wav", text: str = "Hello there.") -> str:
    return json.dumps({"id": id_, "audio": audio, "text": text})


def load_error(folder: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_dataset(folder)
    return caught.value


def test_loads_a_manifest(tmp_path: Path) -> None:
    """Each manifest line becomes a LabelledUtterance with the audio path under the folder."""
    folder = make_dataset(
        tmp_path,
        [entry("u1"), "", "   ", entry("u2", "audio/b.wav", "Second one.")],
        wavs=("a.wav", "b.wav"),
    )
    assert load_dataset(folder) == [
        LabelledUtterance("u1", folder / "audio" / "a.wav", "Hello there."),
        LabelledUtterance("u2", folder / "audio" / "b.wav", "Second one."),
    ]


def test_extra_fields_are_ignored_and_values_become_strings(tmp_path: Path) -> None:
    """Unknown keys (voice, speed) are ignored; a numeric id is read as text."""
    line = json.dumps(
        {"id": 7, "audio": "audio/a.wav", "text": "x", "voice": "en-us", "speed": 140}
    )
    (item,) = load_dataset(make_dataset(tmp_path, [line]))
    assert item.id == "7"


def test_demo_dataset_loads() -> None:
    """The shipped banking set loads, and its WAVs are 16 kHz mono 16-bit."""
    items = load_dataset(DOMAINS["banking"])
    assert items
    assert len({item.id for item in items}) == len(items)
    assert all(item.text.strip() for item in items)
    assert read_pcm(items[0].audio)


def test_missing_manifest_is_an_error(tmp_path: Path) -> None:
    """A folder without manifest.jsonl is a ConfigError naming the manifest."""
    error = load_error(tmp_path)
    assert error.field == str(tmp_path / MANIFEST)
    assert "cannot read manifest" in str(error)


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    """A folder that does not exist is a ConfigError too."""
    assert load_error(tmp_path / "nowhere").field == str(tmp_path / "nowhere" / MANIFEST)


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        "[1, 2, 3]",
        '"just a string"',
        "null",
        json.dumps({"id": "u2", "audio": "audio/a.wav"}),
        json.dumps({"id": "u2", "text": "x"}),
        json.dumps({"id": "u2", "audio": 5, "text": "x"}),
    ],
)
def test_bad_line_names_manifest_and_line_number(tmp_path: Path, bad: str) -> None:
    """A line that is not a JSON object with id, audio and text names `manifest.jsonl:LINE`."""
    folder = make_dataset(tmp_path, [entry("u1"), "", bad])
    error = load_error(folder)
    assert error.field == f"{folder / MANIFEST}:3"
    assert str(error).startswith(f"{folder / MANIFEST}:3: ")
    assert "manifest.jsonl:3" in str(error)


def test_missing_audio_is_an_error(tmp_path: Path) -> None:
    """A line whose audio file does not exist names the line and the missing file."""
    folder = make_dataset(tmp_path, [entry("u1"), entry("u2", "audio/missing.wav")])
    error = load_error(folder)
    assert error.field == f"{folder / MANIFEST}:2"
    assert "missing.wav" in str(error)


def test_audio_that_is_a_folder_is_an_error(tmp_path: Path) -> None:
    """An audio path that names a directory is refused like a missing file."""
    folder = make_dataset(tmp_path, [entry("u1", "audio")])
    assert load_error(folder).field == f"{folder / MANIFEST}:1"


def test_empty_manifest_is_an_error(tmp_path: Path) -> None:
    """A manifest without any utterance is an error, not an empty dataset."""
    folder = make_dataset(tmp_path, ["", "  "])
    error = load_error(folder)
    assert error.field == str(folder / MANIFEST)
    assert "no utterances" in str(error)


def test_non_utf8_manifest_is_an_error(tmp_path: Path) -> None:
    """A manifest that is not UTF-8 is a ConfigError, not a decode crash."""
    (tmp_path / MANIFEST).write_bytes(b'{"id": "u1", "text": "caf\xe9"}\n')
    assert load_error(tmp_path).field == str(tmp_path / MANIFEST)
