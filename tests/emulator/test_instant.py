"""Tests for gateway.emulator.instant: the scripted engine for load tests."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.emulator.instant import MIN_TAIL_MS, InstantStream
from gateway.emulator.recognition import Final, Partial, RecognitionEvent, SpeechStarted, ticks

TEXT = "Hello, scripted world. Four words."
WORDS = ("hello", "scripted", "world", "four", "words")
UTTERANCE_MS = 1000
BYTES_PER_MS = 32  # 16 kHz, 16-bit mono
WINDOW = UTTERANCE_MS * BYTES_PER_MS
TICKS_PER_MS = 10_000


def pcm(ms: float) -> bytes:
    return b"\x01\x00" * int(16 * ms)


async def feed_all(stream: InstantStream, chunks: list[bytes]) -> list[RecognitionEvent]:
    events: list[RecognitionEvent] = []
    for chunk in chunks:
        events += await stream.feed(chunk)
    return events + list(await stream.finish())


def finals(events: list[RecognitionEvent]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


async def test_each_window_gives_one_final_with_the_scripted_words() -> None:
    """Three whole windows give three finals, each with the script lower-cased, unpunctuated."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    events = await feed_all(stream, [pcm(3 * UTTERANCE_MS)])
    results = finals(events)
    assert len(results) == 3
    for result in results:
        assert result.lexical == WORDS
        assert result.confidence == 1.0
        assert [alt.words for alt in result.alternatives] == [WORDS]


async def test_event_sequence_per_window() -> None:
    """Each window reads SpeechStarted, Partial (first half of the words), Final."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    events = await feed_all(stream, [pcm(2 * UTTERANCE_MS)])
    assert [type(e) for e in events] == [SpeechStarted, Partial, Final] * 2
    partials = [e for e in events if isinstance(e, Partial)]
    assert all(p.words == WORDS[:2] for p in partials)


async def test_offsets_and_durations_match_the_bytes_fed() -> None:
    """Window n starts at n*utterance_ms and lasts utterance_ms, in 100-ns ticks."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    events = await feed_all(stream, [pcm(2 * UTTERANCE_MS)])
    window_ticks = UTTERANCE_MS * TICKS_PER_MS
    starts = [e.offset for e in events if isinstance(e, SpeechStarted)]
    assert starts == [0, window_ticks]
    partials = [e for e in events if isinstance(e, Partial)]
    assert [(p.offset, p.duration) for p in partials] == [
        (0, window_ticks // 2),
        (window_ticks, window_ticks // 2),
    ]
    results = finals(events)
    assert [(f.offset, f.duration) for f in results] == [
        (0, window_ticks),
        (window_ticks, window_ticks),
    ]
    assert window_ticks == ticks(UTTERANCE_MS / 1000)


async def test_word_timings_tile_the_window() -> None:
    """Words are evenly spaced inside their window, in order, without overlap."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    (result,) = finals(await feed_all(stream, [pcm(UTTERANCE_MS)]))
    step = result.duration // len(WORDS)
    assert [w.offset for w in result.words] == [i * step for i in range(len(WORDS))]
    assert all(w.duration == step and w.confidence == 1.0 for w in result.words)
    assert result.words[-1].offset + result.words[-1].duration <= result.offset + result.duration


async def test_partial_arrives_half_way() -> None:
    """No partial before half a window of audio; exactly one once it is reached."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    first = await stream.feed(b"\0" * (WINDOW // 2 - 2))
    assert [type(e) for e in first] == [SpeechStarted]
    second = await stream.feed(b"\0\0")
    assert [type(e) for e in second] == [Partial]
    assert await stream.feed(b"\0" * 64) == ()


async def test_tail_of_100_ms_gives_a_final_on_finish() -> None:
    """A tail of at least 100 ms after the last window is answered when the turn ends."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    await stream.feed(pcm(UTTERANCE_MS + MIN_TAIL_MS))
    (tail,) = await stream.finish()
    assert isinstance(tail, Final)
    assert tail.lexical == WORDS
    assert (tail.offset, tail.duration) == (
        UTTERANCE_MS * TICKS_PER_MS,
        MIN_TAIL_MS * TICKS_PER_MS,
    )


async def test_shorter_tail_gives_nothing_on_finish() -> None:
    """A tail under 100 ms is dropped; so is an empty turn."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    await stream.feed(pcm(UTTERANCE_MS) + b"\0" * (MIN_TAIL_MS * BYTES_PER_MS - 2))
    assert await stream.finish() == ()
    assert await InstantStream(TEXT, UTTERANCE_MS).finish() == ()


async def test_empty_script_says_ok() -> None:
    """A script with no words falls back to the single word "ok"."""
    stream = InstantStream(" ., ", UTTERANCE_MS)
    (result,) = finals(await feed_all(stream, [pcm(UTTERANCE_MS)]))
    assert result.lexical == ("ok",)


async def test_empty_feed_gives_no_events() -> None:
    """Feeding no bytes reports nothing, not even SpeechStarted."""
    stream = InstantStream(TEXT, UTTERANCE_MS)
    assert await stream.feed(b"") == ()
    await stream.close()


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=4 * WINDOW + 777),
    cuts=st.lists(st.integers(min_value=0, max_value=4 * WINDOW + 777), max_size=20),
)
def test_chunking_does_not_change_the_events(total: int, cuts: list[int]) -> None:
    """Feeding the same audio in odd chunk sizes gives exactly the events of one big feed."""
    audio = b"\0" * total
    bounds = sorted({0, total, *(c for c in cuts if c <= total)})
    chunks = [audio[a:b] for a, b in itertools.pairwise(bounds)]
    one = asyncio.run(feed_all(InstantStream(TEXT, UTTERANCE_MS), [audio]))
    many = asyncio.run(feed_all(InstantStream(TEXT, UTTERANCE_MS), chunks))
    assert many == one
