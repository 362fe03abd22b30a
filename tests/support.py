"""Helpers shared by the tests: paths, keys, WAV building."""

from __future__ import annotations

import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
EMULATOR_KEY = "emulator-test-key-0123456789"
DOMAINS = {
    "banking": DATA / "demo" / "banking",
    "travel": DATA / "heldout" / "travel",
    "healthcare": DATA / "heldout" / "healthcare",
}


def read_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return wav.readframes(wav.getnframes())


def write_wav(path: Path, pcm: bytes) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm)
    return path


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(16000 * seconds)
