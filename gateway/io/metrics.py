"""Prometheus metrics of one gateway process, served at `/metrics`.

Each app owns its `GatewayMetrics` with a private registry (no module-level collectors), so
two apps in one process, as in the tests, never share or double-register series. Label
values are configuration names (experiments, variants, backends, guardrails), never ids of
sessions or units, so the number of series stays bounded.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

BREAKER_LEVELS: Final = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.guardrail_rollbacks = Counter(
            "speech_gateway_guardrail_rollbacks",
            "Challengers rolled back to weight 0 by a guardrail breach (by this replica).",
            ["experiment", "variant", "guardrail"],
            registry=r,
        )
        self.control_changes = Counter(
            "speech_gateway_control_changes",
            "Experiment state changes committed by this replica.",
            ["experiment", "action"],
            registry=r,
        )
        self.control_version = Gauge(
            "speech_gateway_control_state_version",
            "The experiment state version this replica serves (0: as configured).",
            ["experiment"],
            registry=r,
        )
        self.control_store_up = Gauge(
            "speech_gateway_control_store_up",
            "1 when the last read of the shared experiment state succeeded, else 0.",
            registry=r,
        )
        self.breaker_state = Gauge(
            "speech_gateway_breaker_state",
            "Circuit breaker of a backend: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "speech_gateway_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["backend", "state"],
            registry=r,
        )
        self.failovers = Counter(
            "speech_gateway_failovers",
            "Sessions served by control because their assigned variant's backend was down.",
            ["experiment", "variant"],
            registry=r,
        )
        self.breaker_refusals = Counter(
            "speech_gateway_breaker_refusals",
            "Sessions refused because their backend's circuit breaker was open.",
            ["backend"],
            registry=r,
        )

        self.limit_hits = Counter(
            "speech_gateway_limit_hits",
            "Sessions or requests stopped by a configured limit (gateway.limits).",
            ["limit"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
