"""The gateway process's live sessions: counted per client and in total, closable together.

Every relayed USP connection and REST request is held here for its lifetime
(`LiveSessions.hold`). Admission limits read the counts; the metrics count sessions as they
start and end (a `SessionObserver`); a drain (`GatewayState.drain`) waits for the count to
reach zero (`wait_idle`) and closes what is still open through each session's `closer`
(`close_all`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from gateway.logging import get_logger

log = get_logger(__name__)

# Closes a session's client connection with this WebSocket close code and reason.
Closer = Callable[[int, str], Awaitable[None]]


@dataclass(eq=False)
class LiveSession:
    client: str
    protocol: str  # "usp" or "rest"
    experiment: str | None
    variant: str
    # None until the connection can be closed (a REST request never can: it just ends).
    closer: Closer | None = None
    closing: bool = False  # `close_all` has asked it to close


class SessionObserver(Protocol):
    """Told when a session starts and ends (the metrics); must be cheap and never raise."""

    def session_started(self, session: LiveSession) -> None: ...

    def session_ended(self, session: LiveSession) -> None: ...


class LiveSessions:
    def __init__(self, observer: SessionObserver | None = None) -> None:
        self._live: set[LiveSession] = set()
        self._per_client: Counter[str] = Counter()
        self._observer = observer
        # Set while no session is live; created lazily, inside the running loop.
        self._idle: asyncio.Event | None = None

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
        if self._idle is not None:
            self._idle.clear()
        if self._observer is not None:
            self._observer.session_started(session)
        try:
            yield session
        finally:
            self._live.discard(session)
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
            if self._observer is not None:
                self._observer.session_ended(session)
            if not self._live and self._idle is not None:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no session is live, at most `timeout_s`; whether none is."""
        if not self._live:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._idle.wait()
        except TimeoutError:
            pass
        return not self._live

    async def close_all(self, code: int, reason: str) -> int:
        """Close every live session that has a closer and was not asked before, all at once;
        the number asked. A closer that fails is logged and the others go on: one broken
        connection must not keep the rest open."""
        sessions = [s for s in self._live if s.closer is not None and not s.closing]
        for session in sessions:
            session.closing = True
        closers = [s.closer(code, reason) for s in sessions if s.closer is not None]
        results = await asyncio.gather(*closers, return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, Exception):
                log.warning(
                    "session_close_failed",
                    client=session.client,
                    protocol=session.protocol,
                    error=type(result).__name__,
                )
        return len(sessions)
