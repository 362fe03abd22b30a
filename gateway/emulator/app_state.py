"""The emulator app's shared state, held under one typed AppKey (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.config.settings import EmulatorSettings
from gateway.emulator.custom_speech import Catalog
from gateway.emulator.endpoints import EndpointTable
from gateway.emulator.engines import Engine
from gateway.emulator.faults import FaultInjector


@dataclass
class EmulatorState:
    settings: EmulatorSettings
    engine: Engine
    key: str | None
    faults: FaultInjector
    endpoints: EndpointTable  # the live endpoint -> model mapping
    catalog: Catalog  # the models as the Custom Speech API describes them
    ready: bool = False
    active_sessions: int = 0
    served_sessions: int = 0

    def admit(self) -> bool:
        """Count a new session in, unless the concurrency bound is reached."""
        if self.active_sessions >= self.settings.max_sessions:
            return False
        self.active_sessions += 1
        self.served_sessions += 1
        return True

    def release(self) -> None:
        self.active_sessions -= 1


STATE = web.AppKey("emulator_state", EmulatorState)


def unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text="Access denied due to invalid subscription key or wrong API endpoint."
    )
