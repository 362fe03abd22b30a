"""Admission of new sessions, and how a limit hit is answered, recorded and counted.

`Admission.admit` decides, with no I/O and no await, whether a client may open one more
session (a USP WebSocket or a REST request) now: its connection rate (a token bucket per
client name), its concurrent sessions and the process's, read from `LiveSessions`. The
relays call it right before they enter `LiveSessions.hold`, with nothing awaited in between,
so concurrent upgrades cannot all pass one check. `refuse` turns a refusal into the HTTP
answer the Speech SDKs map to an error code (protocol.md §5.1) and one outcome record;
`note_limit_hit` is the log line and metric every limit hit gets, in-session ones included.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.config.limits import LimitSettings
from gateway.control.routing import Route
from gateway.errors import Limit, LimitExceeded
from gateway.logging import get_logger
from gateway.protocol.usp import RecognitionStatus
from gateway.server.sessions import LiveSessions
from gateway.server.state import GatewayState, session_facts
from gateway.session.taps import primary_failure

log = get_logger(__name__)

# Token buckets kept at most; the least recently used goes first. Client names come from the
# configuration, so this is a backstop: an evicted bucket comes back full, which costs the
# limit at most one burst per eviction.
MAX_TRACKED_CLIENTS: Final = 10_000
# Retry-After when the sessions, not the rate, are the bound: when one ends is unknown.
BUSY_RETRY_AFTER_S: Final = 5
# The RecognitionStatus a refusal is recorded with: what the SDK reports (protocol.md §5.1).
_STATUS_OF_HTTP: Final = {
    429: RecognitionStatus.TOO_MANY_REQUESTS,
    503: RecognitionStatus.SERVICE_UNAVAILABLE,
}
_REASONS: Final = {
    429: "Too many requests: {detail}.",
    503: "Service unavailable: {detail}. Please try again.",
}


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    max_sessions_total: int
    max_sessions_per_client: int
    rate_per_s: float  # a client's new sessions per second, on average
    burst: int  # and at once

    @classmethod
    def from_limits(cls, limits: LimitSettings) -> AdmissionPolicy:
        return cls(
            max_sessions_total=limits.max_sessions_total,
            max_sessions_per_client=limits.max_sessions_per_client,
            rate_per_s=limits.connections_per_client_per_s,
            burst=limits.connection_burst,
        )


class TokenBucket:
    """`burst` tokens, refilled at `rate_per_s`; each new session takes one."""

    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now

    def take(self, now: float, rate_per_s: float, burst: int) -> float:
        """Take a token: 0.0, or the seconds until one is available (none taken)."""
        elapsed = max(0.0, now - self.updated)
        tokens = min(float(burst), self.tokens + elapsed * rate_per_s)
        self.updated = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / rate_per_s


class Admission:
    """The admission decision of one gateway process (pure: the caller passes the time)."""

    def __init__(self, policy: AdmissionPolicy, max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self._policy = policy
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def tracked_clients(self) -> int:
        return len(self._buckets)

    def admit(self, client: str, sessions: LiveSessions, now: float) -> LimitExceeded | None:
        """None if `client` may open a session now, else the refusal to answer with.

        The rate is checked first, so an attempt refused for concurrency still takes a
        token: a client retrying in a loop is slowed to its rate. Then the client's own
        concurrency (429: its doing) before the process's (503: nobody's fault, another
        replica may serve).
        """
        policy = self._policy
        wait = self._bucket(client, now).take(now, policy.rate_per_s, policy.burst)
        if wait > 0.0:
            return LimitExceeded(
                Limit.CONNECTION_RATE,
                f"more than {policy.burst} new sessions at once or "
                f"{policy.rate_per_s:g} per second",
                429,
                retry_after_s=max(1, math.ceil(wait)),
            )
        if sessions.for_client(client) >= policy.max_sessions_per_client:
            return LimitExceeded(
                Limit.CLIENT_SESSIONS,
                f"the client is at its limit of {policy.max_sessions_per_client} sessions",
                429,
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        if sessions.total >= policy.max_sessions_total:
            return LimitExceeded(
                Limit.TOTAL_SESSIONS,
                f"the gateway is at its limit of {policy.max_sessions_total} sessions",
                503,
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        return None

    def _bucket(self, client: str, now: float) -> TokenBucket:
        buckets = self._buckets
        bucket = buckets.get(client)
        if bucket is None:
            bucket = buckets[client] = TokenBucket(float(self._policy.burst), now)
            while len(buckets) > self._max_clients:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(client)
        return bucket


ADMISSION = web.AppKey("gateway_admission", Admission)


def note_limit_hit(
    state: GatewayState, limit: Limit, route: Route, protocol: str, detail: str
) -> None:
    """The structured log line and the metric of one limit hit (names only, never keys)."""
    state.metrics.limit_hits.labels(limit=limit.value).inc()
    log.warning(
        "limit_hit",
        limit=limit.value,
        client=route.client.name,
        session_id=route.session_id,
        protocol=protocol,
        variant=route.variant.name,
        detail=detail,
    )


def record_limit_hit(
    state: GatewayState,
    route: Route,
    protocol: str,
    limit: Limit,
    status: RecognitionStatus,
    detail: str,
) -> None:
    """Log, count and record a session or request a limit stopped before it was relayed:
    a `session_failure` of the assigned variant with `status`, what the SDK reports."""
    note_limit_hit(state, limit, route, protocol, detail)
    variant = route.variant
    record = primary_failure(
        session_facts(state, route, protocol),
        variant.name,
        variant.backend.name,
        status=status.value,
        error_code=limit.error_code,
        detail=detail,
    )
    state.submit(record)


def refuse(
    state: GatewayState, route: Route, protocol: str, refusal: LimitExceeded
) -> web.Response:
    """The answer to a refused session, recorded, logged and counted: 429 (native SDK:
    TooManyRequests) or 503 (ServiceUnavailable), with Retry-After."""
    status = _STATUS_OF_HTTP[refusal.status]
    record_limit_hit(state, route, protocol, refusal.limit, status, refusal.detail)
    reason = _REASONS[refusal.status].format(detail=refusal.detail)
    if protocol == "rest":
        response = web.json_response({"error": reason}, status=refusal.status)
    else:
        response = web.Response(status=refusal.status, text=reason)
    if refusal.retry_after_s is not None:
        response.headers["Retry-After"] = str(refusal.retry_after_s)
    return response
