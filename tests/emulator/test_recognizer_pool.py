"""Tests for gateway.emulator.recognizer_pool and recognizer_worker: real worker processes."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import DOMAINS, read_pcm

from gateway.emulator.decoding import ModelSpec
from gateway.emulator.recognition import (
    Alternative,
    Final,
    Partial,
    RecognitionEvent,
    SpeechStarted,
    StreamConfig,
    Word,
)
from gateway.emulator.recognizer_pool import RecognizerPool, RemoteStream
from gateway.emulator.recognizer_worker import encode_frame, read_frame
from gateway.errors import RecognitionError

CHUNK = 3200  # 100 ms of 16 kHz 16-bit mono
WAV = DOMAINS["banking"] / "audio" / "banking-001.wav"
BASE = StreamConfig(model="base")


def children() -> set[int]:
    """The pids of this process's live children, from /proc (Linux)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def worker_pid(pool: RecognizerPool) -> int:
    """The pid of the pool's single worker process (reached through the pool's internals)."""
    proc = pool._workers[0]._proc
    assert proc is not None
    return proc.pid


@pytest.fixture
async def pool() -> AsyncIterator[RecognizerPool]:
    started = RecognizerPool({"base": ModelSpec("base")}, workers=1)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def recognise(stream: RemoteStream, pcm: bytes) -> list[RecognitionEvent]:
    events: list[RecognitionEvent] = []
    for start in range(0, len(pcm), CHUNK):
        events += await stream.feed(pcm[start : start + CHUNK])
    events += await stream.finish()
    await stream.close()
    return events


def finals_with_words(events: list[RecognitionEvent]) -> list[Final]:
    return [e for e in events if isinstance(e, Final) and e.words]


async def test_stream_recognises_a_dataset_utterance(pool: RecognizerPool) -> None:
    """Feeding a dataset WAV in 100 ms chunks yields speech start, partials and a worded Final."""
    events = await recognise(await pool.open_stream(BASE), read_pcm(WAV))
    assert any(isinstance(e, SpeechStarted) for e in events)
    assert any(isinstance(e, Partial) for e in events)
    results = finals_with_words(events)
    assert results
    words = [w for f in results for w in f.words]
    assert all(w.text and w.duration > 0 and 0.0 <= w.confidence <= 1.0 for w in words)
    assert all(f.alternatives and f.alternatives[0].words == f.lexical for f in results)
    assert pool.models == frozenset({"base"})


async def test_unknown_model_is_a_recognition_error(pool: RecognizerPool) -> None:
    """Opening a stream on a model the pool lacks raises RecognitionError; the pool goes on."""
    with pytest.raises(RecognitionError, match="unknown model"):
        await pool.open_stream(StreamConfig(model="no-such-model"))
    assert finals_with_words(await recognise(await pool.open_stream(BASE), read_pcm(WAV)))


async def test_feed_on_unknown_stream_is_a_recognition_error(pool: RecognizerPool) -> None:
    """A request for a stream the worker does not hold is reported, not fatal."""
    stream = await pool.open_stream(BASE)
    await stream.close()
    with pytest.raises(RecognitionError, match="KeyError"):
        await stream.feed(b"\0" * CHUNK)
    assert finals_with_words(await recognise(await pool.open_stream(BASE), read_pcm(WAV)))


async def test_pending_call_fails_when_the_worker_dies(pool: RecognizerPool) -> None:
    """A call waiting on a worker that is killed raises RecognitionError instead of hanging."""
    stream = await pool.open_stream(BASE)
    pid = worker_pid(pool)
    # Stopped first, so the call is certainly still pending when the worker is killed.
    os.kill(pid, signal.SIGSTOP)
    feed = asyncio.create_task(stream.feed(read_pcm(WAV)))
    await asyncio.sleep(0)  # the task runs up to its reply wait
    assert pool._workers[0]._pending
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RecognitionError):
        await feed
    await stream.close()
    assert finals_with_words(await recognise(await pool.open_stream(BASE), read_pcm(WAV)))


async def test_next_call_fails_after_the_worker_died_and_open_restarts_it(
    pool: RecognizerPool,
) -> None:
    """After a worker is killed its streams fail, and the next open_stream restarts it."""
    stream = await pool.open_stream(BASE)
    old_pid = worker_pid(pool)
    os.kill(old_pid, signal.SIGKILL)
    process = pool._workers[0]._proc
    assert process is not None
    await process.wait()
    with pytest.raises(RecognitionError):
        await stream.feed(b"\0" * CHUNK)
    with pytest.raises(RecognitionError):
        await stream.finish()
    await stream.close()

    events = await recognise(await pool.open_stream(BASE), read_pcm(WAV))
    assert worker_pid(pool) != old_pid
    assert finals_with_words(events)


async def feed_until_failure(stream: RemoteStream) -> None:
    # The first write into a dead worker's pipe may still succeed; a later call must fail.
    while True:
        await stream.feed(b"\0" * CHUNK)


async def test_open_right_after_a_failed_call_gets_a_working_worker(pool: RecognizerPool) -> None:
    """The open_stream right after a call failed on a dead worker succeeds, without waiting."""
    stream = await pool.open_stream(BASE)
    os.kill(worker_pid(pool), signal.SIGKILL)
    with pytest.raises(RecognitionError):
        await feed_until_failure(stream)
    await stream.close()
    assert finals_with_words(await recognise(await pool.open_stream(BASE), read_pcm(WAV)))


async def test_close_leaves_no_child_process() -> None:
    """close() ends every worker process, restarted ones included."""
    before = children()
    pool = RecognizerPool({"base": ModelSpec("base")}, workers=2)
    await pool.start()
    pids = {w._proc.pid for w in pool._workers if w._proc is not None}
    assert len(pids) == 2
    assert pids <= children()
    first = pool._workers[0]._proc
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)  # the worker the next stream goes to
    await first.wait()
    stream = await pool.open_stream(BASE)
    await stream.close()
    await pool.open_stream(BASE)  # left open on purpose: close() must still end its worker
    await pool.close()
    assert children() == before
    await pool.close()  # a second close is harmless


def test_frames_round_trip() -> None:
    """encode_frame/read_frame carry the pool's values, events included, and end with None."""
    values = [
        {"base": ModelSpec("base", Path("x.lm"), Path("x.dict"))},
        (7, "open", 3, StreamConfig(model="banking", segmentation_silence_ms=700)),
        (8, True, [SpeechStarted(0), Partial(("a",), 0, 10)]),
        (9, True, [Final(0, 10, (Word("a", 0, 10, 0.5),), 0.5, (Alternative(("a",), 0.5),))]),
        (10, False, "KeyError: 3"),
        b"\0" * 70_000,
        None,
    ]
    buffer = io.BytesIO(b"".join(encode_frame(value) for value in values))
    assert [read_frame(buffer) for _ in values] == values
    assert read_frame(buffer) is None


def test_read_frame_on_a_truncated_header_is_end_of_stream() -> None:
    """A stream that ends inside the length prefix reads as the end (None)."""
    frame = encode_frame("hello")
    assert read_frame(io.BytesIO(frame[:3])) is None
    assert read_frame(io.BytesIO(b"")) is None


def test_frame_is_big_endian_length_prefixed() -> None:
    """A frame is a 4-byte big-endian length followed by that many bytes."""
    frame = encode_frame({"k": 1})
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
