"""Labelled audio sets: a folder with `manifest.jsonl` (id, audio, text) and WAV files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True, slots=True)
class LabelledUtterance:
    id: str
    audio: Path
    text: str


def load_dataset(folder: Path) -> list[LabelledUtterance]:
    manifest = folder / MANIFEST
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(str(manifest), f"cannot read manifest: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(manifest), f"manifest is not UTF-8: {exc.reason}") from exc
    items: list[LabelledUtterance] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            entry = json.loads(line)
            item = LabelledUtterance(str(entry["id"]), folder / entry["audio"], str(entry["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                where, f"needs a JSON object with id, audio and text ({exc})"
            ) from exc
        if not item.audio.is_file():
            raise ConfigError(where, f"audio file {item.audio} does not exist")
        items.append(item)
    if not items:
        raise ConfigError(str(manifest), "the manifest lists no utterances")
    return items
