"""Which failures users saw: a failure that the client retried is not one of them.

The Speech SDKs retry a failed connection up to 4 more times, about 0.3 s apart, and
reconnect a session whose connection was lost; every attempt is a gateway session of its
own (`session_id`), and all of them carry the same client session id, the SDK's
X-ConnectionId (protocol.md §5). When a later attempt succeeds, the user never sees the
earlier failures. The live guardrails count the failures users saw (docs/statistics.md,
"Guardrails"), so the gateway passes each primary failure of a client session through a
`RetryHold`: the failure is held for `hold_s` seconds; if another attempt of the same client
session starts meanwhile, the failure was retried and is dropped from the guardrail counts,
else it is released and counted. A session without a client session id cannot be told
from a new one, so its failures are never held.

Pure, with the clock passed in; `gateway.server.state` feeds it. Memory: one entry per client
session that started an attempt or failed within the last `hold_s` seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

T = TypeVar("T")


def session_key(client: str, client_session: str) -> str:
    """A client session among every client's: one client's ids never mix with another's."""
    return f"{client}\x00{client_session}"


RETRY_HOLD_S: Final = 5.0
"""How long a failure waits for its retry. The SDKs retry after about 0.3 s (protocol.md
§5.1) and the next attempt is announced when it is admitted, before its backend is dialled,
so this leaves a wide margin for a busy client or network."""


@dataclass(slots=True)
class _Held(Generic[T]):
    key: str
    item: T
    deadline: float
    live: bool = True  # False once dropped as retried


@dataclass(slots=True)
class _Client(Generic[T]):
    attempt: str  # the latest attempt that started
    started: float
    held: list[_Held[T]] = field(default_factory=list)


class RetryHold(Generic[T]):
    """Held failures of client sessions, keyed by an opaque client session key."""

    def __init__(self, hold_s: float = RETRY_HOLD_S) -> None:
        if not hold_s > 0:
            raise ValueError(f"hold_s must be > 0, got {hold_s!r}")
        self._hold_s = hold_s
        self._clients: dict[str, _Client[T]] = {}
        self._starts: deque[tuple[float, str]] = deque()  # (time, key), oldest first
        self._queue: deque[_Held[T]] = deque()  # by deadline, as hold_s is constant
        self.retried = 0  # failures dropped so far because their client retried

    @property
    def held(self) -> int:
        """Failures held now."""
        return sum(len(client.held) for client in self._clients.values())

    def __len__(self) -> int:
        """Client sessions remembered now (started an attempt or held a failure lately)."""
        return len(self._clients)

    def started(self, key: str, attempt: str, now: float) -> None:
        """Attempt `attempt` of client session `key` starts: the held failures of its
        earlier attempts were retried. Announcing an attempt again changes nothing."""
        self._expire(now)
        client = self._clients.get(key)
        if client is None:
            self._clients[key] = _Client(attempt, now)
        elif client.attempt == attempt:
            return
        else:
            self._drop(client)
            client.attempt, client.started = attempt, now
        self._starts.append((now, key))

    def hold(self, key: str, attempt: str, item: T, now: float) -> bool:
        """Hold a failure of `attempt`; False when a later attempt of its client session
        has already started (it was retried, and is dropped at once)."""
        self._expire(now)
        client = self._clients.get(key)
        if client is None:
            # Its start is forgotten (a session longer than hold_s): it is the latest.
            client = self._clients[key] = _Client(attempt, now)
            self._starts.append((now, key))
        elif client.attempt != attempt:
            self.retried += 1
            return False
        held = _Held(key, item, now + self._hold_s)
        client.held.append(held)
        self._queue.append(held)
        return True

    def due(self, now: float) -> list[T]:
        """The held failures whose time is up, oldest first: their users saw them."""
        released: list[T] = []
        queue = self._queue
        while queue and (not queue[0].live or queue[0].deadline <= now):
            held = queue.popleft()
            if held.live:
                released.append(held.item)
                self._forget(held, now)
        self._expire(now)
        return released

    def next_deadline(self) -> float | None:
        """When the oldest held failure is due, if any."""
        queue = self._queue
        while queue and not queue[0].live:
            queue.popleft()
        return queue[0].deadline if queue else None

    def release_all(self) -> list[T]:
        """Every held failure, at once (the gateway is stopping: no retry will come here)."""
        released = [held.item for held in self._queue if held.live]
        self._queue.clear()
        self._clients.clear()
        self._starts.clear()
        return released

    def _drop(self, client: _Client[T]) -> None:
        for held in client.held:
            held.live = False
        self.retried += len(client.held)
        client.held.clear()

    def _forget(self, held: _Held[T], now: float) -> None:
        client = self._clients.get(held.key)
        if client is None:
            return
        client.held.remove(held)
        # Its start may have left `_starts` while the failure was held: forget it here.
        if not client.held and client.started <= now - self._hold_s:
            del self._clients[held.key]

    def _expire(self, now: float) -> None:
        starts = self._starts
        horizon = now - self._hold_s
        while starts and starts[0][0] <= horizon:
            at, key = starts.popleft()
            client = self._clients.get(key)
            if client is not None and client.started == at and not client.held:
                del self._clients[key]
