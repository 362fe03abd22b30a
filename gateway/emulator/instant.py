"""The `instant` engine: no recognition at all, a scripted transcript at once.

For load tests, where recognition speed must not mask the gateway's own cost. It cuts the
turn's audio into fixed windows of `utterance_ms` and answers each window with the scripted
text as soon as the window's last byte arrives, with a partial half-way through. It never
looks at the audio, and it says so: results are only ever as good as the script.
"""

from __future__ import annotations

from gateway.emulator.recognition import (
    Alternative,
    Final,
    Partial,
    RecognitionEvent,
    SpeechStarted,
    Word,
    ticks,
)

MIN_TAIL_MS = 100


class InstantStream:
    def __init__(self, text: str, utterance_ms: int, sample_rate: int = 16000) -> None:
        self._words = tuple(text.lower().replace(".", "").replace(",", "").split()) or ("ok",)
        self._bytes_per_ms = sample_rate * 2 // 1000
        self._window = utterance_ms * self._bytes_per_ms
        self._received = 0
        self._window_start = 0
        self._partial_sent = False

    async def feed(self, pcm: bytes) -> tuple[RecognitionEvent, ...]:
        events: list[RecognitionEvent] = []
        before = self._received
        self._received += len(pcm)
        if before == self._window_start and pcm:
            events.append(SpeechStarted(offset=self._ticks(self._window_start)))
        # Each window gets its partial before its final, even when one feed spans several
        # windows: the events must not depend on how the audio was chunked.
        self._partial(events)
        while self._received - self._window_start >= self._window:
            events.append(self._final(self._window_start + self._window))
            if self._received > self._window_start:
                events.append(SpeechStarted(offset=self._ticks(self._window_start)))
                self._partial(events)
        return tuple(events)

    async def finish(self) -> tuple[RecognitionEvent, ...]:
        if self._received - self._window_start >= MIN_TAIL_MS * self._bytes_per_ms:
            return (self._final(self._received),)
        return ()

    async def close(self) -> None:
        return None

    def _partial(self, events: list[RecognitionEvent]) -> None:
        """Add the current window's partial once the audio reaches its half-way point."""
        half = self._window_start + self._window // 2
        if self._partial_sent or self._received < half:
            return
        self._partial_sent = True
        count = max(1, len(self._words) // 2)
        events.append(
            Partial(
                words=self._words[:count],
                offset=self._ticks(self._window_start),
                duration=self._ticks(half - self._window_start),
            )
        )

    def _final(self, end: int) -> Final:
        start, duration = self._ticks(self._window_start), self._ticks(end - self._window_start)
        step = duration // len(self._words)
        words = tuple(
            Word(text=w, offset=start + i * step, duration=step, confidence=1.0)
            for i, w in enumerate(self._words)
        )
        self._window_start = end
        self._partial_sent = False
        return Final(
            offset=start,
            duration=duration,
            words=words,
            confidence=1.0,
            alternatives=(Alternative(words=self._words, confidence=1.0),),
        )

    def _ticks(self, byte_offset: int) -> int:
        return ticks(byte_offset / (self._bytes_per_ms * 1000))
