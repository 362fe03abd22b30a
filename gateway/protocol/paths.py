"""The URL paths the Speech SDKs use (protocol.md §1.1) and the recognition mode they name."""

from __future__ import annotations

RECOGNITION_MODES = ("interactive", "conversation", "dictation")
V1_PATHS = tuple(f"/speech/recognition/{mode}/cognitiveservices/v1" for mode in RECOGNITION_MODES)
# Universal v2 paths carry the mode in speech.context instead.
UNIVERSAL_PATHS = ("/stt/speech/universal/v2", "/speech/universal/v2")
USP_PATHS = (*V1_PATHS, *UNIVERSAL_PATHS)


def mode_from_path(path: str) -> str | None:
    """The recognition mode a v1 path names; None for the universal paths."""
    for mode in RECOGNITION_MODES:
        if f"/recognition/{mode}/" in path:
            return mode
    return None
