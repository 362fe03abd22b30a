"""A recogniser worker process: decodes the streams the server assigns to it.

Its counterpart is `recognizer_pool` in the server process. They talk over the child's
stdin/stdout with length-prefixed pickled tuples (a private pipe between two processes of
ours): first the model specs, then requests `(seq, op, stream_id, arg)` answered in order by
`(seq, ok, payload)`. Requests are handled one at a time, so a worker needs no locks.
"""

from __future__ import annotations

import pickle
import struct
import sys
from typing import Any, BinaryIO

from gateway.emulator.decoding import DecoderPool, DecodingStream, ModelSpec

_LENGTH = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> Any | None:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    return pickle.loads(stream.read(length))  # noqa: S301 - our own parent process


def encode_frame(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


class Worker:
    def __init__(self, specs: dict[str, ModelSpec]) -> None:
        self._pool = DecoderPool(specs)
        self._streams: dict[int, DecodingStream] = {}

    def handle(self, op: str, stream_id: int, arg: Any) -> Any:
        match op:
            case "warm":
                self._pool.warm()
                return None
            case "open":
                if not self._pool.has_model(arg.model):
                    raise KeyError(f"unknown model {arg.model!r}")
                self._streams[stream_id] = DecodingStream(self._pool, arg)
                return None
            case "feed":
                return self._streams[stream_id].feed(arg)
            case "finish":
                return self._streams[stream_id].finish()
            case "close":
                stream = self._streams.pop(stream_id, None)
                if stream is not None:
                    stream.close()
                return None
            case _:
                raise ValueError(f"unknown op {op!r}")


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    specs = read_frame(stdin)
    if specs is None:
        return
    worker = Worker(specs)
    while (request := read_frame(stdin)) is not None:
        seq, op, stream_id, arg = request
        try:
            reply = (seq, True, worker.handle(op, stream_id, arg))
        except Exception as exc:  # reported to the caller, the worker keeps serving
            reply = (seq, False, f"{type(exc).__name__}: {exc}")
        stdout.write(encode_frame(reply))
        stdout.flush()


if __name__ == "__main__":
    main()
