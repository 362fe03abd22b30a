"""The SDK's URL paths and the recognition mode each names."""

from __future__ import annotations

import pytest

from gateway.protocol.paths import USP_PATHS, V1_PATHS, mode_from_path


@pytest.mark.parametrize("mode", ["interactive", "conversation", "dictation"])
def test_v1_paths_name_their_mode(mode: str) -> None:
    """Each v1 path names its recognition mode."""
    path = f"/speech/recognition/{mode}/cognitiveservices/v1"
    assert path in V1_PATHS
    assert mode_from_path(path) == mode


@pytest.mark.parametrize("path", ["/stt/speech/universal/v2", "/speech/universal/v2"])
def test_universal_paths_name_no_mode(path: str) -> None:
    """Universal v2 paths carry the mode in speech.context, not in the URL."""
    assert path in USP_PATHS
    assert mode_from_path(path) is None
