"""Fixtures for gateway tests: instant emulators that say who answered, gateway processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import write_gateway_config

from gateway.tools.local_services import LocalEmulator, LocalGateway

ALPHA = "Alpha answers here."
BRAVO = "Bravo answers here."


@pytest.fixture(scope="session")
def alpha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant emulator whose every result is ALPHA."""
    log = tmp_path_factory.mktemp("alpha") / "emulator.log"
    with LocalEmulator("--engine", "instant", "--instant-text", ALPHA, log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def bravo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmulator]:
    """An instant emulator whose every result is BRAVO."""
    log = tmp_path_factory.mktemp("bravo") / "emulator.log"
    with LocalEmulator("--engine", "instant", "--instant-text", BRAVO, log_path=log) as running:
        yield running


def split_experiment(weights: tuple[float, float] = (50, 50), **extra: object) -> dict[str, object]:
    """An experiment: variant "a" on backend alpha, "b" on backend bravo."""
    return {
        "id": "ab",
        "control": "a",
        "variants": [
            {"name": "a", "backend": "alpha", "weight": weights[0]},
            {"name": "b", "backend": "bravo", "weight": weights[1]},
        ],
        **extra,
    }


def gateway_for(
    work: Path,
    backends: dict[str, str],
    experiments: list[dict[str, object]],
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    **gateway: object,
) -> LocalGateway:
    """A gateway process (not started) writing outcomes to work/outcomes.jsonl."""
    work.mkdir(parents=True, exist_ok=True)
    config = write_gateway_config(
        work / "gateway.toml",
        backends=backends,
        experiments=experiments,
        outcomes=work / "outcomes.jsonl",
        **gateway,
    )
    return LocalGateway(config, log_path=work / "gateway.log", env=env, port=port)
