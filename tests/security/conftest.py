"""Fixtures of the security tests: an instant emulator whose transcript is easy to spot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from security_support import TRANSCRIPT

from gateway.tools.local_services import LocalEmulator


@pytest.fixture(scope="session")
def instant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant emulator without auth whose every result is TRANSCRIPT."""
    log = tmp_path_factory.mktemp("instant") / "emulator.log"
    args = ("--engine", "instant", "--instant-text", TRANSCRIPT)
    with LocalEmulator(*args, log_path=log) as running:
        yield running
