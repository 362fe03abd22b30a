"""Shared fixtures: real emulator processes on loopback, the datasets, WAV builders."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog
from support import DOMAINS, EMULATOR_KEY

from gateway.tools.dataset import LabelledUtterance, load_dataset
from gateway.tools.local_services import LocalEmulator


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults: a test that runs the CLI in-process
    configures logging (caching loggers on first use), which would blind a later test's
    `capture_logs` to loggers cached under that configuration."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def datasets() -> dict[str, list[LabelledUtterance]]:
    return {name: load_dataset(folder) for name, folder in DOMAINS.items()}


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """One PocketSphinx emulator with a key and a custom model per domain."""
    work = tmp_path_factory.mktemp("emulator")
    customs = [f"{name}={folder / 'corpus.txt'}" for name, folder in DOMAINS.items()]
    args = [arg for custom in customs for arg in ("--custom", custom)]
    env = {**os.environ, "SPEECH_GATEWAY_EMULATOR__KEY": EMULATOR_KEY}
    with LocalEmulator(
        *args, "--model-cache", str(work / "models"), log_path=work / "emulator.log", env=env
    ) as running:
        yield running
