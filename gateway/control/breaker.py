"""Per-backend circuit breakers: whether a new session may dial its backend.

Pure state machines with the clock passed in: the I/O layer calls `allow(now)` before it
dials a backend, reports the connect as `success(now, session)` or `failure(now, session)`
(unreachable, timeout, HTTP 5xx at the upgrade), and fails a refused session over to the
experiment's control variant, or refuses it. `on_change` tells that layer about every
transition, so it can log it and export a metric.

A breaker counts *client sessions*, not dials: the Speech SDKs retry a failed connection up
to 4 more times within about 1.5 s (protocol.md §5), each a new gateway session under the
same client session id (its X-ConnectionId). Counting those dials, one user's session would
make a streak of 5 and open the breaker for everybody. So a client session that has failed
counts once: its later dials within `window_s` are retries, which add neither to the streak
nor to the window (a retry that connects still ends the streak: the backend answers).
Reports without a session (a client that sent no id) count every time.

    closed ──(failure streak, or failure rate over the window)──▶ open
    open ──(open_s has passed)──▶ half_open
    half_open ──(a probe succeeds)──▶ closed
    half_open ──(a probe fails)──▶ open, with a fresh timer
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]

# The failure-rate window is kept as this many time buckets of window_s / _BUCKETS seconds
# each (per-second buckets under the default 30 s window), so its memory is at most
# _BUCKETS + 1 buckets however many sessions a backend serves.
_BUCKETS = 30
# The client sessions that failed within the window are remembered, at most this many per
# breaker (the oldest are forgotten first; a forgotten one's retry counts as a new failure).
MAX_FAILED_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how it recovers; shared by every backend's breaker."""

    consecutive_failures: int = 5  # this many failing client sessions in a row open it
    failure_rate: float = 0.5  # or failures / attempts over the window at or above this ...
    window_s: float = 30.0  # ... over the last window_s seconds ...
    min_attempts: int = 20  # ... once the window holds at least this many attempts
    # An attempt is a client session's first dial in the window, or any dial without one.
    open_s: float = 10.0  # how long it stays open before half-open
    half_open_probes: int = 1  # sessions let through at once while half-open

    def __post_init__(self) -> None:
        for name in ("consecutive_failures", "min_attempts", "half_open_probes"):
            value = getattr(self, name)
            # bool is an int, but `True` failures in a row is a mistake, not a count.
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        for name in ("window_s", "open_s"):
            value = getattr(self, name)
            if not _is_number(value) or not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be a finite number of seconds > 0, got {value!r}")
        rate = self.failure_rate
        if not _is_number(rate) or not 0 < rate <= 1:
            raise ValueError(f"failure_rate: must be in (0, 1], got {rate!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(slots=True)
class _Bucket:
    index: int  # floor(time / bucket width)
    attempts: int = 0
    failures: int = 0


class CircuitBreaker:
    """One backend's breaker.

    The failure rate is counted in `_BUCKETS` time buckets of `window_s / _BUCKETS` seconds
    (bounded memory, O(1) amortised per report); the window is the current bucket and the
    ones before it, so it spans a little less than `window_s`, never more: a failure older
    than `window_s` never counts.

    While half-open any success or failure counts as the probe's, a retry's too; reports
    that arrive while open (from dials started before it opened) are ignored, as the breaker
    has already decided.
    """

    __slots__ = (
        "_buckets",
        "_failed",
        "_on_change",
        "_open_until",
        "_opened",
        "_policy",
        "_probes",
        "_state",
        "_streak",
        "_width",
    )

    def __init__(
        self,
        policy: BreakerPolicy,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._policy = policy
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._streak = 0
        self._opened = 0
        self._open_until = 0.0
        self._width = policy.window_s / _BUCKETS
        self._buckets: deque[_Bucket] = deque()
        # Start times of the outstanding half-open probes, oldest first.
        self._probes: deque[float] = deque()
        # Client session -> time of its last failure, oldest first (module doc).
        self._failed: OrderedDict[str, float] = OrderedDict()

    @property
    def opened(self) -> int:
        """How many times it has opened."""
        return self._opened

    def allow(self, now: float) -> bool:
        """Whether a new session may dial the backend; while half-open a True takes a probe slot."""
        self._advance(now)
        if self._state == "closed":
            return True
        if self._state == "open":
            return False
        # A probe whose session vanished never reports; without this its slot would keep
        # the breaker half-open and refusing for ever.
        while self._probes and now - self._probes[0] >= self._policy.open_s:
            self._probes.popleft()
        if len(self._probes) < self._policy.half_open_probes:
            self._probes.append(now)
            return True
        return False

    def success(self, now: float, session: str | None = None) -> None:
        """A connect completed; `session` is the client session it served, if known."""
        self._advance(now)
        if self._state == "closed":
            self._streak = 0
            if not self._retry(session, now):
                self._record(now, ok=True)
        elif self._state == "half_open":
            # The backend is back: start from a clean slate, not the failures that opened it.
            self._streak = 0
            self._buckets.clear()
            self._failed.clear()
            self._probes.clear()
            self._change("closed")

    def failure(self, now: float, session: str | None = None) -> None:
        """A connect failed: unreachable, timed out, or an HTTP 5xx at the upgrade.
        A failure of a client session that already failed within `window_s` is its retry,
        and changes nothing while closed (module doc)."""
        self._advance(now)
        if self._state == "closed":
            if session is not None:
                retry = self._retry(session, now)
                self._remember(session, now)  # a retry keeps it remembered for longer
                if retry:
                    return
            self._streak += 1
            self._record(now, ok=False)
            attempts, failures = self._window(now)
            policy = self._policy
            if self._streak >= policy.consecutive_failures or (
                attempts >= policy.min_attempts and failures / attempts >= policy.failure_rate
            ):
                self._open(now)
        elif self._state == "half_open":
            self._open(now)

    def state(self, now: float) -> BreakerState:
        """The state at `now`, without changing anything (an open breaker whose time is up
        reports "half_open")."""
        if self._state == "open" and now >= self._open_until:
            return "half_open"
        return self._state

    def snapshot(self, now: float) -> dict[str, object]:
        """A JSON-friendly view for the admin API; `open_until` is in seconds from `now`."""
        state = self.state(now)
        attempts, failures = self._window(now)
        return {
            "state": state,
            "consecutive_failures": self._streak,
            "window_attempts": attempts,
            "window_failures": failures,
            "opened": self._opened,
            "open_until": self._open_until - now if state == "open" else None,
        }

    def _advance(self, now: float) -> None:
        if self._state == "open" and now >= self._open_until:
            self._probes.clear()
            self._change("half_open")

    def _open(self, now: float) -> None:
        self._open_until = now + self._policy.open_s
        self._opened += 1
        self._probes.clear()
        self._change("open")

    def _change(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        # Called after the transition, so a callback that reads the breaker sees the new state.
        if self._on_change is not None:
            self._on_change(old, new)

    def _retry(self, session: str | None, now: float) -> bool:
        """Whether a dial of `session` is a retry: the session failed within the window."""
        if session is None:
            return False
        failed = self._failed
        horizon = now - self._policy.window_s
        while failed:
            oldest, at = next(iter(failed.items()))
            if at > horizon:
                break
            del failed[oldest]
        return session in failed

    def _remember(self, session: str, now: float) -> None:
        failed = self._failed
        failed[session] = now
        failed.move_to_end(session)
        if len(failed) > MAX_FAILED_SESSIONS:
            failed.popitem(last=False)

    def _record(self, now: float, *, ok: bool) -> None:
        index = math.floor(now / self._width)
        buckets = self._buckets
        while buckets and buckets[0].index <= index - _BUCKETS:
            buckets.popleft()
        # A clock that steps back a little lands in the newest bucket, keeping them in order.
        if not buckets or buckets[-1].index < index:
            buckets.append(_Bucket(index))
        bucket = buckets[-1]
        bucket.attempts += 1
        if not ok:
            bucket.failures += 1

    def _window(self, now: float) -> tuple[int, int]:
        """(attempts, failures) in the window ending at `now`; reads at most _BUCKETS + 1."""
        oldest = math.floor(now / self._width) - _BUCKETS
        attempts = failures = 0
        for bucket in self._buckets:
            if bucket.index > oldest:
                attempts += bucket.attempts
                failures += bucket.failures
        return attempts, failures


class Breakers:
    """One breaker per backend name, created on first use."""

    __slots__ = ("_breakers", "_on_change", "_policy")

    def __init__(
        self,
        policy: BreakerPolicy,
        on_change: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._policy = policy
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, backend: str) -> CircuitBreaker:
        """The breaker of `backend`, created closed the first time it is asked for."""
        breaker = self._breakers.get(backend)
        if breaker is None:
            breaker = CircuitBreaker(self._policy, self._named(backend))
            self._breakers[backend] = breaker
        return breaker

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        """Every breaker's snapshot by backend name, sorted by name."""
        return {name: self._breakers[name].snapshot(now) for name in sorted(self._breakers)}

    def _named(self, backend: str) -> Callable[[BreakerState, BreakerState], None] | None:
        on_change = self._on_change
        if on_change is None:
            return None

        def changed(old: BreakerState, new: BreakerState) -> None:
            on_change(backend, old, new)

        return changed
