"""Which backend a new session may dial: circuit breakers per backend, failover to control.

Before a session or request dials its variant's backend, `admit` asks that backend's
breaker (`gateway.control.breaker`; a custom endpoint's variant has one of its own in each
experiment, `breaker_name`). While it is open, the session goes to the experiment's control
variant (`on_open = "failover"`; its records carry `failover_from`) or is refused
(`"reject"`, or when control's backend is down too). Every dial reports back: a backend
that cannot be connected, times out or answers 5xx counts as a failure; any other answer
(a 401 or 429 too) shows that the backend is up. A dial that fails on a challenger's backend
is retried once on control, so with the custom backend down the SDK user still gets results
from the first session on, before the breaker has even opened.

Dials are reported with their client session (`client_session_key`): the SDKs retry a
failed connection up to 4 times under the same X-ConnectionId, and the breaker counts those
retries once (`gateway.control.breaker`). `on_attempt`, when set, hears of every attempt
as it is admitted, before its dial (the gateway state uses it to tell retried failures from
those the users saw).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.constants import NO_EXPERIMENT
from gateway.control.breaker import BreakerPolicy, Breakers, BreakerState
from gateway.control.model import Variant
from gateway.control.retries import session_key
from gateway.control.routing import Route
from gateway.errors import UpstreamError, UpstreamRejected
from gateway.logging import get_logger
from gateway.server.metrics import BREAKER_LEVELS, GatewayMetrics

log = get_logger(__name__)

BREAKER_OPEN = "breaker_open"  # error_code of a session refused by an open breaker


def breaker_name(experiment_id: str | None, variant: Variant) -> str:
    """The breaker a variant's sessions go through: its backend, or for a custom endpoint
    `<backend>/<experiment>/<variant>` (`experiment_id` None: the default variant, under
    `NO_EXPERIMENT`).

    A failing custom endpoint must not open the breaker of the base model that shares its
    service (the control, often), or failover would have nowhere to go; nor the breaker of
    another experiment's endpoint, which variant names do not tell apart. Named by the
    experiment and variant, not the endpoint id: the name is a metric label on the
    unauthenticated /metrics, and endpoint ids never leave the gateway. Neither ids nor
    names may hold a `/` (config), so no two variants' names can collide."""
    backend = variant.backend.name
    if variant.endpoint_id is None:
        return backend
    experiment = NO_EXPERIMENT if experiment_id is None else experiment_id
    return f"{backend}/{experiment}/{variant.name}"


def route_breaker_name(route: Route) -> str:
    """The breaker of the variant `route` dials, in its experiment."""
    experiment = route.experiment.id if route.experiment is not None else None
    return breaker_name(experiment, route.variant)


def client_session_key(route: Route) -> str | None:
    """The client session a route's dial serves, for the breaker: None when the client sent
    no X-ConnectionId. Scoped by client, so one client's ids never mix with another's."""
    if route.client_session is None:
        return None
    return session_key(route.client.name, route.client_session)


def is_backend_failure(error: UpstreamError) -> bool:
    """Whether a dial's error says the backend is down (not that it refused this client)."""
    return not isinstance(error, UpstreamRejected) or error.status >= 500


class BackendGate:
    def __init__(
        self,
        policy: BreakerPolicy,
        on_open: str,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failover = on_open == "failover"
        self._metrics = metrics
        self._clock = clock
        self.breakers = Breakers(policy, self._changed)
        self.on_attempt: Callable[[Route], None] | None = None

    def admit(self, route: Route) -> Route | None:
        """The route to dial now: `route`, its failover to control, or None (refused)."""
        if self.on_attempt is not None:
            self.on_attempt(route)
        if self._allow(route):
            return route
        if self._failover:
            fallback = route.failed_over()
            if fallback is not None and self._allow(fallback):
                self._failed_over(fallback)
                return fallback
        self._metrics.breaker_refusals.labels(route_breaker_name(route)).inc()
        return None

    def fallback(self, route: Route, error: UpstreamError) -> Route | None:
        """After a failed dial of `route`: the control route to try instead, if any."""
        if not (self._failover and is_backend_failure(error)):
            return None
        fallback = route.failed_over()
        if fallback is None or not self._allow(fallback):
            return None
        self._failed_over(fallback)
        return fallback

    def report(self, route: Route, error: UpstreamError | None) -> None:
        """The result of dialling `route`'s backend (None: connected)."""
        breaker = self.breakers.get(route_breaker_name(route))
        session = client_session_key(route)
        if error is not None and is_backend_failure(error):
            breaker.failure(self._clock(), session)
        else:
            breaker.success(self._clock(), session)

    def snapshot(self) -> dict[str, dict[str, object]]:
        return self.breakers.snapshot(self._clock())

    def _allow(self, route: Route) -> bool:
        return self.breakers.get(route_breaker_name(route)).allow(self._clock())

    def _failed_over(self, route: Route) -> None:
        experiment = route.experiment
        assert experiment is not None
        assert route.failover_from is not None
        self._metrics.failovers.labels(experiment.id, route.failover_from).inc()

    def _changed(self, backend: str, old: BreakerState, new: BreakerState) -> None:
        log.warning("breaker_state", backend=backend, old=old, new=new)
        self._metrics.breaker_state.labels(backend).set(BREAKER_LEVELS[new])
        self._metrics.breaker_transitions.labels(backend, new).inc()
