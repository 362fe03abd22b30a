"""When each piece of a turn's audio reached the gateway, so latencies can be measured.

The service reports utterances by audio offset (100-ns ticks from the turn's first PCM byte);
the gateway knows when each audio frame arrived. `AudioTimeline` joins the two: the arrival
time of the frame that carried a given offset. Offsets become session-global by adding the
turn's base, which the SDK states in `speech.context` (`continuation.audio.streams.1.offset`,
native SDK) or which follows from what the service acknowledged so far (JS SDK).
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_right

from gateway.protocol.wav import parse_wave_header

TICKS_PER_MS = 10_000
# 16 kHz, 16-bit mono: the format the SDKs send unless told otherwise.
DEFAULT_BYTES_PER_SECOND = 32_000
# A turn is at most 10 minutes (the service ends it); at 10 frames a second that bounds
# the timeline, and a client that streams longer only loses latency precision.
MAX_FRAMES = 10 * 60 * 10 * 2


class AudioTimeline:
    """Arrival times of a turn's PCM, by cumulative byte count.

    Kept in two typed arrays (8-byte ints and doubles): a frame costs 16 bytes and no
    Python object, where lists would keep an int and a float object per frame (about 70
    bytes, and an allocation each, for every frame of every stream).
    """

    __slots__ = ("bytes_per_second", "ended", "ends", "header_seen", "times")

    def __init__(self, bytes_per_second: int = DEFAULT_BYTES_PER_SECOND) -> None:
        self.bytes_per_second = bytes_per_second
        self.ends: array[int] = array("q")  # cumulative PCM bytes after each frame
        self.times: array[float] = array("d")
        self.header_seen = False
        self.ended = False

    @property
    def pcm_bytes(self) -> int:
        return self.ends[-1] if self.ends else 0

    def add(self, payload: bytes | memoryview, now: float) -> None:
        """Note a frame's payload (a memoryview of the frame will do: only its length is
        read, and the first frame's WAVE header)."""
        if not payload:
            self.ended = True
            return
        if not self.header_seen:
            self.header_seen = True
            if payload[:4] == b"RIFF":
                payload = self._skip_header(bytes(payload))
                if not payload:
                    return
        ends = self.ends
        if len(ends) >= MAX_FRAMES:
            return
        ends.append((ends[-1] if ends else 0) + len(payload))
        self.times.append(now)

    def _skip_header(self, payload: bytes) -> bytes:
        try:
            fmt, offset = parse_wave_header(payload)
        except Exception:  # the service judges the audio; a timeline only needs a guess
            return payload[44:]
        self.bytes_per_second = fmt.bytes_per_second or DEFAULT_BYTES_PER_SECOND
        return payload[offset:]

    def arrival(self, ticks: int, *, end: bool = False) -> float | None:
        """When the audio at this turn-relative offset arrived; None if it has not.

        An offset names the byte it starts at; with `end=True` it names the end of a span,
        whose last byte is the one before it.
        """
        if not self.ends:
            return None
        byte = ticks * self.bytes_per_second // 10_000_000 - (1 if end else 0)
        index = bisect_right(self.ends, max(0, byte))
        if index >= len(self.ends):
            return self.times[-1] if self.ended else None
        return self.times[index]


def continuation_offset(context_body: str) -> int | None:
    """The session-global offset (ticks) a native SDK's follow-up turn starts at, if stated."""
    if '"continuation"' not in context_body:
        return None
    try:
        context = json.loads(context_body)
        offset = int(context["continuation"]["audio"]["streams"]["1"]["offset"])
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: 1e999
        return None
    # A negative base would make every record of the turn invalid: ignore it.
    return offset if offset >= 0 else None
