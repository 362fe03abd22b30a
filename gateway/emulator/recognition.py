"""What a recogniser reports while a turn's audio streams in: typed, immutable events.

Offsets and durations are 100-ns ticks relative to the first PCM byte of the turn, as the
USP messages carry them (protocol.md §0.6). Events cross a process boundary (pickled), so
they hold only plain values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

TICKS_PER_SECOND = 10_000_000


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What a recognition stream needs to know about the turn, chosen by the session."""

    model: str  # "base" or a custom endpoint id
    segmentation_silence_ms: int = 500
    sample_rate: int = 16000


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    offset: int
    duration: int
    confidence: float


@dataclass(frozen=True, slots=True)
class Alternative:
    words: tuple[str, ...]
    confidence: float


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    offset: int


@dataclass(frozen=True, slots=True)
class Partial:
    words: tuple[str, ...]
    offset: int
    duration: int


@dataclass(frozen=True, slots=True)
class Final:
    """One finished utterance; no words means speech that was not recognised (NoMatch)."""

    offset: int
    duration: int
    words: tuple[Word, ...]
    confidence: float
    alternatives: tuple[Alternative, ...]

    @property
    def lexical(self) -> tuple[str, ...]:
        return tuple(word.text for word in self.words)


RecognitionEvent = SpeechStarted | Partial | Final


class RecognitionStream(Protocol):
    """One turn's audio in, events out; `finish` flushes at the end of the turn's audio."""

    async def feed(self, pcm: bytes) -> tuple[RecognitionEvent, ...]: ...

    async def finish(self) -> tuple[RecognitionEvent, ...]: ...

    async def close(self) -> None: ...


StreamCall = Callable[[RecognitionStream], Awaitable[tuple[RecognitionEvent, ...]]]


def ticks(seconds: float) -> int:
    return round(seconds * TICKS_PER_SECOND)
