"""Crash-safety helpers shared by the append-only files (outcomes, journal, labels)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from gateway.logging import get_logger

log = get_logger(__name__)

_TAIL_CHUNK = 64 * 1024


def cut_torn_tail(file: IO[bytes], path: Path, event: str) -> None:
    """Cut off an unterminated last line, the trace of a crash in the middle of an append,
    logging `event` when there was one."""
    end = file.seek(0, os.SEEK_END)
    keep = end
    while keep > 0:
        size = min(_TAIL_CHUNK, keep)
        file.seek(keep - size)
        newline = file.read(size).rfind(b"\n")
        if newline >= 0:
            keep = keep - size + newline + 1
            break
        keep -= size
    if keep != end:
        log.warning(event, path=str(path), bytes=end - keep)
        file.truncate(keep)


def fsync_directory(path: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
