"""The gateway process's live sessions: counted per client and in total, closable together.

Every relayed USP connection and REST request is held here for its lifetime
(`LiveSessions.hold`). Admission limits read the counts; a drain closes what is still open
through each session's `closer`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# Closes a session's client connection with this WebSocket close code and reason.
Closer = Callable[[int, str], Awaitable[None]]


@dataclass(eq=False)
class LiveSession:
    client: str
    protocol: str  # "usp" or "rest"
    experiment: str | None
    variant: str
    started: float = field(default_factory=time.monotonic)
    # None until the connection can be closed (a REST request never can: it just ends).
    closer: Closer | None = None


class LiveSessions:
    def __init__(self) -> None:
        self._live: set[LiveSession] = set()
        self._per_client: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return len(self._live)

    def for_client(self, client: str) -> int:
        return self._per_client[client]

    def snapshot(self) -> list[LiveSession]:
        """The live sessions now (a copy: closing them changes the set)."""
        return list(self._live)

    @contextmanager
    def hold(
        self, client: str, protocol: str, experiment: str | None, variant: str
    ) -> Iterator[LiveSession]:
        session = LiveSession(client, protocol, experiment, variant)
        self._live.add(session)
        self._per_client[client] += 1
        try:
            yield session
        finally:
            self._live.discard(session)
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
