"""The gateway app's shared state, under one typed AppKey (no module globals), and its
drain: what `speech-gateway serve` does with the live sessions on SIGTERM.

Every outcome record goes through `GatewayState.submit` to its declared listeners, in order:
the sink and the metrics take it as it is, the control plane's guardrail counts as its users
saw it (`GuardrailFeed`). A primary failure of a client session (the SDK's X-ConnectionId)
is held there for a few seconds, and dropped if the client retried it
(`gateway.control.retries`): the sink and the metrics count every attempt, the guardrails
the failures users saw (docs/statistics.md, "Guardrails").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import aiohttp
from aiohttp import web

from gateway.config.gateway import GatewaySettings
from gateway.control.model import GatewayConfig
from gateway.control.plane import ControlPlane
from gateway.control.retries import RetryHold, session_key
from gateway.control.routing import Route
from gateway.errors import CloseCode
from gateway.logging import get_logger
from gateway.outcomes.ports import OutcomeSink
from gateway.outcomes.privacy import TextPrivacy, pseudonymise
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.server.metrics import GatewayMetrics
from gateway.server.relay.backend_gate import BackendGate
from gateway.server.sessions import LiveSessions
from gateway.session.taps import SessionFacts

log = get_logger(__name__)

# The real service's own words when it restarts an instance; the SDKs reconnect on 1012
# (protocol.md §5.2), so behind a load balancer the session goes on on another replica.
DRAIN_CLOSE_CODE: Final = CloseCode.SERVICE_RESTART
DRAIN_CLOSE_REASON: Final = "Instance is shutting down"
DRAIN_LOG_INTERVAL_S: Final = 5.0
DRAIN_TICK_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class DrainReport:
    live_at_start: int
    closed: int  # asked to close with DRAIN_CLOSE_CODE when the grace period ended
    left: int  # still live when the drain gave up on them (cancelled by the server)
    seconds: float


RecordListener: TypeAlias = Callable[[OutcomeRecord], None]
"""Takes every outcome record the gateway submits, as it is submitted; never raises."""


class GuardrailFeed:
    """The control plane's record listener: it counts the failures users saw.

    A primary failure of a client session waits in a `RetryHold` until it is due (then the
    control plane counts it) or a later attempt of the same client session starts (then it
    was retried, and is never counted). Every other record goes to the control plane at once.
    """

    def __init__(self, control: ControlPlane, privacy_key: bytes) -> None:
        self._control = control
        self._privacy_key = privacy_key
        self.retries: RetryHold[OutcomeRecord] = RetryHold()
        self._release_timer: asyncio.TimerHandle | None = None
        self._holding = True  # False once the drain released them

    def observe(self, record: OutcomeRecord) -> None:
        now = time.monotonic()
        self._release_due(now)
        if (
            self._holding
            and record.client_session is not None
            and record.kind is Kind.SESSION_FAILURE
            and record.role is Role.PRIMARY
        ):
            key = session_key(record.client, record.client_session)
            if self.retries.hold(key, record.session_id, record, now):
                self._schedule_release()
            return
        self._control.observe(record)

    def attempt_started(self, route: Route) -> None:
        """An attempt of `route`'s client session begins: its earlier failures, if held,
        were retried, and its users never saw them."""
        if route.client_session is None:
            return
        pseudonym = pseudonymise(route.client_session, self._privacy_key)
        key = session_key(route.client.name, pseudonym)
        self.retries.started(key, route.session_id, time.monotonic())

    def release_held(self) -> None:
        """Count every held failure now, and hold no more (the gateway stops: no retry will
        come here, and nothing would release them)."""
        self._holding = False
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        for record in self.retries.release_all():
            self._control.observe(record)

    def _release_due(self, now: float) -> None:
        for record in self.retries.due(now):
            self._control.observe(record)

    def _schedule_release(self) -> None:
        """Release held failures when they are due, also when no other record comes."""
        deadline = self.retries.next_deadline()
        if self._release_timer is not None or deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a caller outside the event loop: the next record releases
            return
        delay = max(0.0, deadline - time.monotonic()) + 0.01
        self._release_timer = loop.call_later(delay, self._on_release_timer)

    def _on_release_timer(self) -> None:
        self._release_timer = None
        self._release_due(time.monotonic())
        self._schedule_release()


@dataclass
class GatewayState:
    settings: GatewaySettings
    control: ControlPlane
    backends: BackendGate
    metrics: GatewayMetrics
    sink: OutcomeSink
    text_privacy: TextPrivacy
    privacy_key: bytes
    sessions: LiveSessions = field(init=False)
    # From SIGTERM on: new sessions are refused and /readyz answers 503.
    draining: bool = field(default=False, init=False)
    _grace_cut: bool = field(default=False, init=False)
    _http: aiohttp.ClientSession | None = None
    guardrail_feed: GuardrailFeed = field(init=False)
    # Where every record goes, in this order: the sink and the metrics count every attempt,
    # the guardrails (behind the retry hold) the failures users saw.
    listeners: tuple[RecordListener, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = LiveSessions(self.metrics)
        self.guardrail_feed = GuardrailFeed(self.control, self.privacy_key)
        self.listeners = (self.sink.submit, self.metrics.observe, self.guardrail_feed.observe)
        # Every attempt is admitted by the gate before its dial: the earliest sign of a retry.
        self.backends.on_attempt = self.attempt_started

    @property
    def config(self) -> GatewayConfig:
        """The configuration new sessions are routed by: it changes with the live state."""
        return self.control.config

    def submit(self, record: OutcomeRecord) -> None:
        """Send an outcome record to every listener: stored, counted in the metrics, and
        counted for the guardrails as its users saw it."""
        for listener in self.listeners:
            listener(record)

    def attempt_started(self, route: Route) -> None:
        """An attempt of `route`'s client session begins (see `GuardrailFeed`)."""
        self.guardrail_feed.attempt_started(route)

    def release_held(self) -> None:
        """Count every held failure now, and hold no more (the gateway stops)."""
        self.guardrail_feed.release_held()

    async def drain(self, grace_s: float, close_timeout_s: float) -> DrainReport:
        """Refuse new sessions, let the live ones finish for up to `grace_s`, then close the
        rest with 1012 and wait up to `close_timeout_s` for them to end (their last records
        are submitted as they end). The sink is flushed afterwards, by the app's cleanup."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.draining = True
        self.metrics.draining.set(1)
        sessions = self.sessions
        live_at_start = sessions.total
        log.info("drain_started", live=live_at_start, grace_s=grace_s, **_by_protocol(sessions))
        deadline = start + grace_s
        logged = start
        while sessions.total and not self._grace_cut and (remaining := deadline - loop.time()) > 0:
            # Short waits, so that `cut_grace` takes effect at once.
            idle = await sessions.wait_idle(min(remaining, DRAIN_TICK_S))
            if not idle and loop.time() - logged >= DRAIN_LOG_INTERVAL_S:
                logged = loop.time()
                left = round(max(0.0, deadline - logged), 1)
                log.info("drain_waiting", live=sessions.total, grace_left_s=left)
        closed = 0
        if sessions.total:
            log.warning(
                "drain_grace_over",
                live=sessions.total,
                close_code=int(DRAIN_CLOSE_CODE),
                **_by_protocol(sessions),
            )
            deadline = loop.time() + close_timeout_s
            # Again until none is left: a session whose backend was being dialled when the
            # drain began registers only now.
            while sessions.total and (remaining := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        closed += await sessions.close_all(DRAIN_CLOSE_CODE, DRAIN_CLOSE_REASON)
                except TimeoutError:
                    break
                await sessions.wait_idle(min(0.2, max(0.0, deadline - loop.time())))
        report = DrainReport(live_at_start, closed, sessions.total, loop.time() - start)
        self.release_held()
        log_at = log.warning if report.left else log.info
        log_at(
            "drain_sessions_done",
            live_at_start=report.live_at_start,
            closed=report.closed,
            left=report.left,
            seconds=round(report.seconds, 2),
        )
        return report

    def cut_grace(self) -> None:
        """End the drain's grace period now (a second SIGTERM or Ctrl-C)."""
        if self.draining and not self._grace_cut:
            self._grace_cut = True
            log.warning("drain_grace_cut", live=self.sessions.total)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the gateway's HTTP client is not started")
        return self._http

    @http.setter
    def http(self, session: aiohttp.ClientSession) -> None:
        self._http = session


STATE = web.AppKey("gateway_state", GatewayState)


def _by_protocol(sessions: LiveSessions) -> dict[str, int]:
    live = sessions.snapshot()
    return {
        "usp": sum(s.protocol == "usp" for s in live),
        "rest": sum(s.protocol == "rest" for s in live),
    }


def session_facts(state: GatewayState, route: Route, protocol: str) -> SessionFacts:
    experiment = route.experiment
    # A session refused before its dial (admission limits) announces its attempt here.
    state.attempt_started(route)
    client_session = route.client_session
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
        client_session=None
        if client_session is None
        else pseudonymise(client_session, state.privacy_key),
    )
