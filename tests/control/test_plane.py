"""The control plane against its ports: a store that fails with `StoreUnavailable` (or does
not answer in time) and metrics that are any `ControlMetrics`, not only the server's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import Settings
from gateway.control import plane as plane_module
from gateway.control.model import GatewayConfig
from gateway.control.plane import ControlPlane
from gateway.control.ports import StoredState
from gateway.control.state import Change, Changes, ExperimentState
from gateway.errors import StoreUnavailable
from gateway.stores.control_store import FileControlStore
from gateway.stores.counter_store import LocalCounterStore


def config() -> GatewayConfig:
    settings = Settings.model_validate(
        {
            "gateway": {
                "backends": {
                    "alpha": {"url": "ws://127.0.0.1:1"},
                    "bravo": {"url": "ws://127.0.0.1:2"},
                },
                "experiments": [
                    {
                        "id": "ab",
                        "control": "a",
                        "variants": [
                            {"name": "a", "backend": "alpha", "weight": 50},
                            {"name": "b", "backend": "bravo", "weight": 50},
                        ],
                    }
                ],
            }
        }
    )
    return build_gateway_config(settings.gateway)


class Recorded:
    """One metric child: what was added or set."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class Family:
    """A labelled metric: a child per label values."""

    def __init__(self) -> None:
        self.children: dict[tuple[str, ...], Recorded] = {}

    def labels(self, *values: str) -> Recorded:
        return self.children.setdefault(values, Recorded())


class Metrics:
    """A `ControlMetrics` that only records (no Prometheus registry)."""

    def __init__(self) -> None:
        self.control_changes = Family()
        self.control_version = Family()
        self.control_store_up = Recorded()
        self.guardrail_rollbacks = Family()


class DownStore:
    """A control store whose Redis (or disk) has gone away; `hang` makes it never answer."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang

    async def _fail(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        raise StoreUnavailable("DownStore: ConnectionError: gone")

    async def load(self) -> dict[str, StoredState]:
        await self._fail()
        return {}

    async def versions(self) -> dict[str, int]:
        await self._fail()
        return {}

    async def commit(
        self, experiment: str, expected_version: int, state: StoredState, audit: str
    ) -> bool:
        await self._fail()
        return False

    async def audit(self, experiment: str, limit: int) -> list[str]:
        await self._fail()
        return []

    async def restore(self, states: Mapping[str, StoredState]) -> list[str]:
        await self._fail()
        return []

    async def changes(self) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        return
        yield  # an async generator that never yields

    async def close(self) -> None:
        pass


def pause(changes: Changes, state: ExperimentState) -> Change:
    return changes.pause(state)


@pytest.mark.parametrize("hang", [False, True], ids=["unavailable", "no-answer"])
async def test_a_store_that_is_down_leaves_the_configuration_served(
    hang: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up does not fail: the plane serves the configured state, says it has not loaded
    (so /readyz is not ready) and reports the store down; a change fails with
    StoreUnavailable (the admin API's 503) and changes nothing."""
    monkeypatch.setattr(plane_module, "LOAD_TIMEOUT_S", 0.2)
    base = config()
    metrics = Metrics()
    plane = ControlPlane(base, DownStore(hang=hang), LocalCounterStore(), metrics)
    await plane.start()
    try:
        assert not plane.loaded
        assert plane.config == base
        assert metrics.control_store_up.value == 0
        if not hang:
            with pytest.raises(StoreUnavailable):
                await plane.change("ab", "alice", pause)
            with pytest.raises(StoreUnavailable):
                await plane.audit("ab", 10)
            assert plane.state("ab").version == 0
    finally:
        await plane.close()


async def test_the_plane_updates_any_control_metrics(tmp_path: Path) -> None:
    """The plane needs only the `ControlMetrics` members: store up, versions, changes."""
    metrics = Metrics()
    plane = ControlPlane(
        config(), FileControlStore(tmp_path / "control.json"), LocalCounterStore(), metrics
    )
    await plane.start()
    try:
        assert plane.loaded
        assert metrics.control_store_up.value == 1
        state = await plane.change("ab", "alice", pause)
        assert metrics.control_changes.children[("ab", "pause")].value == 1
        assert metrics.control_version.children[("ab",)].value == state.version
    finally:
        await plane.close()
