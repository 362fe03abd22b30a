"""RIFF/WAVE header reading and writing for streamed audio, without any I/O.

Clients announce their PCM format with a RIFF header at the start of each turn (USP sends it in
its own `audio` message, REST at the start of a possibly chunked body). The header may carry
extra chunks (LIST, fact, ...) before `data` and may arrive split at any byte. Only the header
is parsed: the `data` size is ignored because streaming writers put 0 or 0xFFFFFFFF there.
A bad header is the service's "bad audio format": `UspError` with close code 1007.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from gateway.errors import CloseCode, UspError

__all__ = [
    "CANONICAL_HEADER_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "PCM_16K_MONO",
    "WaveFormat",
    "WaveFormatTag",
    "WaveHeaderReader",
    "parse_wave_header",
    "require_pcm16_mono_16k",
    "wave_header",
]

CANONICAL_HEADER_BYTES = 44  # RIFF + 16-byte fmt chunk + data chunk header
DEFAULT_MAX_HEADER_BYTES = 4096

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_CHUNK_HEADER = 8  # 4-byte id + 4-byte little-endian size
_RIFF_PREAMBLE = 12  # "RIFF" size "WAVE"
_FMT_MIN = 16
_FMT_EXTENSIBLE_MIN = 40
# KSDATAFORMAT_SUBTYPE_* GUIDs are the format tag followed by this fixed tail.
_SUBFORMAT_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_FMT_FIELDS = struct.Struct("<HHIIHH")  # tag, channels, rate, byte rate, block align, bits
_CANONICAL = struct.Struct("<4sI4s4sIHHIIHH4sI")


class WaveFormatTag(IntEnum):
    """`wFormatTag` values worth naming; any other value is kept as a plain int."""

    PCM = 0x0001
    IEEE_FLOAT = 0x0003
    ALAW = 0x0006
    MULAW = 0x0007
    EXTENSIBLE = 0xFFFE


@dataclass(frozen=True, slots=True)
class WaveFormat:
    """The PCM layout a header announces. WAVE_FORMAT_EXTENSIBLE is resolved to its sub-format."""

    sample_rate: int
    channels: int
    bits_per_sample: int
    format_tag: int = WaveFormatTag.PCM.value

    def __post_init__(self) -> None:
        # The fields are fixed-width in the header; anything outside cannot be written back.
        if not (
            0 < self.sample_rate <= _U32
            and 0 < self.channels <= _U16
            and 0 < self.bits_per_sample <= _U16
            and 0 <= self.format_tag <= _U16
        ):
            raise ValueError(f"WaveFormat fields out of range: {self!r}")

    @property
    def block_align(self) -> int:
        """Bytes per sample frame (all channels), samples padded to whole bytes."""
        return self.channels * ((self.bits_per_sample + 7) // 8)

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.block_align


PCM_16K_MONO = WaveFormat(sample_rate=16000, channels=1, bits_per_sample=16)


def _bad(reason: str) -> UspError:
    return UspError(reason, CloseCode.INVALID_PAYLOAD)


def _parse_fmt(chunk: bytes | bytearray) -> WaveFormat:
    tag, channels, rate, _byte_rate, _block_align, bits = _FMT_FIELDS.unpack_from(chunk)
    if tag == WaveFormatTag.EXTENSIBLE:
        if len(chunk) < _FMT_EXTENSIBLE_MIN:
            raise _bad("WAVE fmt chunk too short for WAVE_FORMAT_EXTENSIBLE")
        guid = bytes(chunk[24:40])
        # An unknown GUID keeps the EXTENSIBLE tag, which callers treat as unsupported.
        if guid[2:] == _SUBFORMAT_GUID_TAIL:
            tag = int.from_bytes(guid[:2], "little")
    if channels == 0 or rate == 0 or bits == 0:
        raise _bad("WAVE fmt chunk declares zero channels, sample rate or bits per sample")
    return WaveFormat(sample_rate=rate, channels=channels, bits_per_sample=bits, format_tag=tag)


def _scan(buf: bytes | bytearray, cap: int) -> tuple[WaveFormat, int] | None:
    """(format, offset of the first PCM byte), None if `buf` is a valid but incomplete header.

    Raises as soon as the bytes seen prove the header bad or longer than `cap`, so a reader
    never buffers more than `cap` bytes waiting for a header that cannot be accepted.
    """
    have = len(buf)
    if buf[:4] != b"RIFF"[: min(have, 4)] or buf[8:12] != b"WAVE"[: max(0, min(have - 8, 4))]:
        raise _bad("audio does not start with a RIFF/WAVE header")
    fmt: WaveFormat | None = None
    pos = _RIFF_PREAMBLE
    while True:
        body = pos + _CHUNK_HEADER
        if body > cap:
            raise _bad(f"WAVE header longer than {cap} bytes")
        if body > have:
            return None
        chunk_id = bytes(buf[pos : pos + 4])
        size = int.from_bytes(buf[pos + 4 : body], "little")
        if chunk_id == b"data":
            if fmt is None:
                raise _bad("WAVE header has no fmt chunk before data")
            return fmt, body
        is_fmt = chunk_id == b"fmt "
        if is_fmt and fmt is not None:
            raise _bad("WAVE header has two fmt chunks")
        if is_fmt and size < _FMT_MIN:
            raise _bad("WAVE fmt chunk too short")
        # Chunks are word-aligned: an odd-sized chunk is followed by a pad byte.
        end = body + size + (size & 1)
        # The data chunk header must still fit after this chunk: failing now means a huge
        # announced size is refused before its body is buffered.
        if end + _CHUNK_HEADER > cap:
            raise _bad(f"WAVE header longer than {cap} bytes")
        if is_fmt:
            if body + size > have:
                return None
            fmt = _parse_fmt(buf[body : body + size])
        pos = end


def _check_cap(max_header_bytes: int) -> None:
    if max_header_bytes < CANONICAL_HEADER_BYTES:
        raise ValueError(f"max_header_bytes must be at least {CANONICAL_HEADER_BYTES}")


def parse_wave_header(
    data: bytes, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> tuple[WaveFormat, int]:
    """Parse a header known to be complete: (format, offset of the first PCM byte in `data`).

    Raises UspError(1007) if the header is bad, longer than `max_header_bytes` or truncated.
    """
    _check_cap(max_header_bytes)
    found = _scan(data, max_header_bytes)
    if found is None:
        raise _bad("truncated WAVE header")
    return found


class WaveHeaderReader:
    """Incremental: feed bytes until the header is complete.

    `feed` returns None while more bytes are needed, then once (format, PCM bytes that followed
    the header). Feeding again after that, or after an error, is a programmer error
    (RuntimeError): later audio is PCM and belongs to the caller, not to this reader.
    """

    __slots__ = ("_buffer", "_finished", "_max_header_bytes")

    def __init__(self, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        _check_cap(max_header_bytes)
        self._max_header_bytes = max_header_bytes
        self._buffer = bytearray()
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once `feed` has returned the format or raised."""
        return self._finished

    def feed(self, data: bytes) -> tuple[WaveFormat, bytes] | None:
        if self._finished:
            raise RuntimeError("WaveHeaderReader.feed called after the header was complete")
        self._buffer += data
        try:
            found = _scan(self._buffer, self._max_header_bytes)
        except UspError:
            self._finished = True
            self._buffer = bytearray()
            raise
        if found is None:
            return None
        fmt, offset = found
        pcm = bytes(self._buffer[offset:])
        self._finished = True
        self._buffer = bytearray()
        return fmt, pcm


def wave_header(fmt: WaveFormat = PCM_16K_MONO, data_bytes: int = 0) -> bytes:
    """A canonical 44-byte header, byte for byte what Python's `wave` module writes.

    `data_bytes` may be 0 or 0xFFFFFFFF for a stream of unknown length; the RIFF size saturates.
    """
    if not 0 <= data_bytes <= _U32:
        raise ValueError("data_bytes must fit in 32 bits")
    if fmt.bytes_per_second > _U32 or fmt.block_align > _U16:
        raise ValueError(f"{fmt!r} cannot be described by a WAVE header")
    return _CANONICAL.pack(
        b"RIFF",
        min(CANONICAL_HEADER_BYTES - 8 + data_bytes, _U32),
        b"WAVE",
        b"fmt ",
        _FMT_MIN,
        fmt.format_tag,
        fmt.channels,
        fmt.sample_rate,
        fmt.bytes_per_second,
        fmt.block_align,
        fmt.bits_per_sample,
        b"data",
        data_bytes,
    )


def require_pcm16_mono_16k(fmt: WaveFormat) -> None:
    """Raise UspError(1007) naming every property of `fmt` the local recogniser cannot take."""
    problems = []
    if fmt.format_tag != WaveFormatTag.PCM:
        problems.append(f"format tag {fmt.format_tag}")
    if fmt.channels != 1:
        problems.append(f"{fmt.channels} channels")
    if fmt.sample_rate != PCM_16K_MONO.sample_rate:
        problems.append(f"{fmt.sample_rate} Hz")
    if fmt.bits_per_sample != PCM_16K_MONO.bits_per_sample:
        problems.append(f"{fmt.bits_per_sample}-bit")
    if problems:
        raise _bad(f"unsupported audio format: {', '.join(problems)}; need 16 kHz 16-bit mono PCM")
