"""The server side of the recogniser workers: an async facade over child processes.

Each stream lives in one worker for its whole turn (the decoder state is there), so streams
are assigned to the least-loaded worker when they open. A worker that dies fails its open
streams with `RecognitionError` and is started again for the next stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pickle
import sys
from typing import Any

from gateway.emulator.decoding import ModelSpec
from gateway.emulator.recognition import RecognitionEvent, StreamConfig
from gateway.emulator.recognizer_worker import encode_frame
from gateway.errors import RecognitionError
from gateway.logging import get_logger

log = get_logger(__name__)


class _WorkerProcess:
    def __init__(self, index: int, specs: dict[str, ModelSpec]) -> None:
        self.index = index
        self.streams = 0
        self._specs = specs
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._seq = itertools.count()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._reader is not None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.emulator.recognizer_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(encode_frame(self._specs))
        self._reader = asyncio.create_task(
            self._read_replies(self._proc.stdout), name=f"recognizer-worker-{self.index}-reader"
        )

    async def call(self, op: str, stream_id: int, arg: Any = None) -> Any:
        if not self.alive or self._proc is None or self._proc.stdin is None:
            raise RecognitionError(f"recogniser worker {self.index} is not running")
        seq = next(self._seq)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            self._proc.stdin.write(encode_frame((seq, op, stream_id, arg)))
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._pending.pop(seq, None)
            raise RecognitionError(f"recogniser worker {self.index} is gone: {exc}") from exc
        return await future

    async def _read_replies(self, stdout: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await stdout.readexactly(4)
                body = await stdout.readexactly(int.from_bytes(header, "big"))
                seq, ok, payload = pickle.loads(body)  # noqa: S301 - our own child process
                future = self._pending.pop(seq, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(payload)
                else:
                    future.set_exception(RecognitionError(payload))
        except asyncio.IncompleteReadError:
            log.warning("recognizer_worker_exited", worker=self.index)
        finally:
            self._reader = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(RecognitionError("recogniser worker exited"))
            self._pending.clear()

    async def close(self) -> None:
        proc, reader = self._proc, self._reader
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._proc = None


class RemoteStream:
    """A RecognitionStream whose decoding happens in a worker process."""

    def __init__(self, worker: _WorkerProcess, stream_id: int) -> None:
        self._worker = worker
        self._id = stream_id
        self._closed = False

    async def feed(self, pcm: bytes) -> tuple[RecognitionEvent, ...]:
        return tuple(await self._worker.call("feed", self._id, pcm))

    async def finish(self) -> tuple[RecognitionEvent, ...]:
        return tuple(await self._worker.call("finish", self._id))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._worker.streams -= 1
        if self._worker.alive:
            with contextlib.suppress(RecognitionError):
                await self._worker.call("close", self._id)


class RecognizerPool:
    def __init__(self, specs: dict[str, ModelSpec], workers: int) -> None:
        self._specs = specs
        self._workers = [_WorkerProcess(i, specs) for i in range(workers)]
        self._stream_ids = itertools.count(1)

    @property
    def models(self) -> frozenset[str]:
        return frozenset(self._specs)

    async def start(self) -> None:
        """Start every worker and load every model once, so the first session is not slow."""
        await asyncio.gather(*(worker.start() for worker in self._workers))
        await asyncio.gather(*(worker.call("warm", 0) for worker in self._workers))

    async def open_stream(self, config: StreamConfig) -> RemoteStream:
        worker = min(self._workers, key=lambda w: w.streams)
        if not worker.alive:
            await worker.close()
            await worker.start()
        stream_id = next(self._stream_ids)
        await worker.call("open", stream_id, config)
        worker.streams += 1
        return RemoteStream(worker, stream_id)

    async def close(self) -> None:
        await asyncio.gather(*(worker.close() for worker in self._workers))
