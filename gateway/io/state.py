"""The gateway app's shared state, under one typed AppKey (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from gateway.control.config import GatewaySettings
from gateway.control.model import GatewayConfig
from gateway.io.backend_gate import BackendGate
from gateway.io.control_plane import ControlPlane
from gateway.io.metrics import GatewayMetrics
from gateway.io.sessions import LiveSessions
from gateway.outcomes.privacy import TextPrivacy, pseudonymise
from gateway.outcomes.record import OutcomeRecord
from gateway.outcomes.sink import OutcomeSink
from gateway.session.routing import Route
from gateway.session.taps import SessionFacts


@dataclass
class GatewayState:
    settings: GatewaySettings
    control: ControlPlane
    backends: BackendGate
    metrics: GatewayMetrics
    sink: OutcomeSink
    text_privacy: TextPrivacy
    privacy_key: bytes
    sessions: LiveSessions = field(default_factory=LiveSessions)
    _http: aiohttp.ClientSession | None = None

    @property
    def config(self) -> GatewayConfig:
        """The configuration new sessions are routed by: it changes with the live state."""
        return self.control.config

    def submit(self, record: OutcomeRecord) -> None:
        """Send an outcome record to the sink, and count it for the guardrails."""
        self.sink.submit(record)
        self.control.observe(record)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the gateway's HTTP client is not started")
        return self._http

    @http.setter
    def http(self, session: aiohttp.ClientSession) -> None:
        self._http = session


STATE = web.AppKey("gateway_state", GatewayState)


def session_facts(state: GatewayState, route: Route, protocol: str) -> SessionFacts:
    experiment = route.experiment
    return SessionFacts(
        experiment=experiment.id if experiment is not None else None,
        phase=experiment.phase if experiment is not None else None,
        client=route.client.name,
        unit=pseudonymise(route.unit_id, state.privacy_key),
        unit_source=route.unit_source,
        session_id=route.session_id,
        protocol=protocol,
        mode=route.mode,
        locale=route.locale,
        forced=route.forced,
        failover_from=route.failover_from,
        text_privacy=state.text_privacy,
        privacy_key=state.privacy_key,
    )
