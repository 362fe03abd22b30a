"""Injected failures for rehearsals and fault tests, drawn once per session or request.

A failure is one of: an HTTP status at the WebSocket upgrade or REST POST (`http`), a
WebSocket close code right after the first `turn.start` (`close`), or a USP status phrase
in the first turn (`usp`). The draw uses its own seeded generator so a test can make it
deterministic; the rate 1.0 fails every session.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.config.settings import FaultSettings
from gateway.emulator.usp_session import Failure
from gateway.protocol.usp import RecognitionStatus


@dataclass(frozen=True, slots=True)
class HttpFailure:
    status: int


class FaultInjector:
    def __init__(self, settings: FaultSettings) -> None:
        self._rate = settings.failure_rate
        self._rng = random.Random(settings.seed)
        self._failure = _parse(settings)
        self.latency_s = settings.latency_ms / 1000

    def draw(self) -> HttpFailure | Failure | None:
        if self._rate <= 0.0 or self._rng.random() >= self._rate:
            return None
        return self._failure


def _parse(settings: FaultSettings) -> HttpFailure | Failure:
    # FaultSettings has checked that failure_status fits failure_kind.
    match settings.failure_kind:
        case "http":
            return HttpFailure(int(settings.failure_status))
        case "close":
            return Failure(close_code=int(settings.failure_status))
        case "usp":
            return Failure(status=RecognitionStatus(settings.failure_status))
