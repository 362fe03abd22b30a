"""Tests for RIFF/WAVE header reading and writing (gateway.protocol.wav)."""

from __future__ import annotations

import io
import random
import re
import struct
import wave

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import CloseCode, UspError
from gateway.protocol.wav import (
    CANONICAL_HEADER_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    PCM_16K_MONO,
    WaveFormat,
    WaveFormatTag,
    WaveHeaderReader,
    parse_wave_header,
    require_pcm16_mono_16k,
    wave_header,
)

PCM = random.Random(11).randbytes(1000)
MAX_CLOSE_REASON_BYTES = 123
SUBFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    """A RIFF chunk, with the pad byte an odd-sized body needs."""
    return chunk_id + len(body).to_bytes(4, "little") + body + b"\x00" * (len(body) & 1)


def fmt_body(
    tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16, extra: bytes = b""
) -> bytes:
    """The body of a fmt chunk for the given format, followed by `extra` bytes."""
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits) + extra


def extensible_extra(subformat: int, tail: bytes = SUBFORMAT_TAIL) -> bytes:
    """The 24-byte WAVE_FORMAT_EXTENSIBLE extension naming `subformat`."""
    return struct.pack("<HHI", 22, 16, 4) + subformat.to_bytes(2, "little") + tail


def riff(*chunks: bytes, data_size: int = 0, riff_size: int = 0) -> bytes:
    """A RIFF/WAVE header made of `chunks` and ending with a data chunk header."""
    return (
        b"RIFF"
        + riff_size.to_bytes(4, "little")
        + b"WAVE"
        + b"".join(chunks)
        + b"data"
        + data_size.to_bytes(4, "little")
    )


LIST_INFO = chunk(b"LIST", b"INFO" + chunk(b"ISFT", b"Lavf58.76.100\x00"))
CANONICAL = wave_header(PCM_16K_MONO, len(PCM))
WITH_LIST = riff(chunk(b"fmt ", fmt_body()), LIST_INFO, data_size=len(PCM))
JUNK_FIRST = riff(chunk(b"JUNK", b"\x00" * 28), chunk(b"fmt ", fmt_body()))
ODD_CHUNK = riff(chunk(b"fmt ", fmt_body()), chunk(b"abcd", b"xyz"))
EXTENSIBLE = riff(chunk(b"fmt ", fmt_body(0xFFFE, extra=extensible_extra(1))))

HEADERS = [
    pytest.param(CANONICAL, id="canonical"),
    pytest.param(WITH_LIST, id="list-before-data"),
    pytest.param(JUNK_FIRST, id="junk-before-fmt"),
    pytest.param(ODD_CHUNK, id="odd-sized-chunk"),
    pytest.param(EXTENSIBLE, id="extensible-pcm"),
]


def python_wave_bytes(rate: int, channels: int, width: int, frames: bytes) -> bytes:
    """The bytes Python's `wave` module writes for `frames` in the given format."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return out.getvalue()


def assert_invalid_payload(error: UspError) -> None:
    """Check an error is the service's 'bad audio format' with a sendable close reason."""
    assert error.close_code == CloseCode.INVALID_PAYLOAD
    assert len(error.reason.encode()) <= MAX_CLOSE_REASON_BYTES


# --------------------------------------------------------------------------- parsing


def test_parse_standard_44_byte_header() -> None:
    """The canonical header parses to 16 kHz 16-bit mono PCM with data at offset 44."""
    assert parse_wave_header(CANONICAL + PCM) == (PCM_16K_MONO, 44)
    assert len(CANONICAL) == CANONICAL_HEADER_BYTES


def test_parse_header_with_list_chunk_before_data() -> None:
    """A LIST chunk between fmt and data is skipped and the offset points after data's header."""
    fmt, offset = parse_wave_header(WITH_LIST + PCM)
    assert fmt == PCM_16K_MONO
    assert offset == len(WITH_LIST)
    assert (WITH_LIST + PCM)[offset:] == PCM


def test_parse_chunk_before_fmt() -> None:
    """An unknown chunk before fmt is skipped."""
    assert parse_wave_header(JUNK_FIRST) == (PCM_16K_MONO, len(JUNK_FIRST))


def test_parse_respects_pad_byte_of_odd_chunk() -> None:
    """An odd-sized chunk is followed by a pad byte, which is not taken for the next chunk id."""
    assert parse_wave_header(ODD_CHUNK) == (PCM_16K_MONO, len(ODD_CHUNK))


def test_parse_python_wave_file() -> None:
    """A file written by Python's wave module parses to its format and PCM offset."""
    data = python_wave_bytes(8000, 2, 1, PCM)
    fmt, offset = parse_wave_header(data)
    assert fmt == WaveFormat(sample_rate=8000, channels=2, bits_per_sample=8)
    assert data[offset:] == PCM


@pytest.mark.parametrize("data_size", [0, 0xFFFFFFFF, 12345])
@pytest.mark.parametrize("riff_size", [0, 0xFFFFFFFF, 36])
def test_streaming_sizes_are_accepted(data_size: int, riff_size: int) -> None:
    """Data and RIFF sizes of 0 or 0xFFFFFFFF (streaming writers) are accepted and ignored."""
    header = riff(chunk(b"fmt ", fmt_body()), data_size=data_size, riff_size=riff_size)
    assert parse_wave_header(header) == (PCM_16K_MONO, 44)
    assert WaveHeaderReader().feed(header + PCM) == (PCM_16K_MONO, PCM)


def test_extensible_pcm_resolves_to_pcm() -> None:
    """WAVE_FORMAT_EXTENSIBLE with the PCM sub-format GUID is reported as plain PCM."""
    fmt, offset = parse_wave_header(EXTENSIBLE)
    assert fmt == PCM_16K_MONO
    assert fmt.format_tag == WaveFormatTag.PCM
    assert offset == len(EXTENSIBLE)


def test_extensible_float_resolves_to_float() -> None:
    """WAVE_FORMAT_EXTENSIBLE with the float sub-format GUID reports IEEE_FLOAT."""
    header = riff(chunk(b"fmt ", fmt_body(0xFFFE, bits=32, extra=extensible_extra(3))))
    fmt, _ = parse_wave_header(header)
    assert fmt.format_tag == WaveFormatTag.IEEE_FLOAT
    assert fmt.bits_per_sample == 32


def test_extensible_unknown_guid_stays_extensible() -> None:
    """An unknown sub-format GUID keeps the EXTENSIBLE tag, which require_* then rejects."""
    header = riff(chunk(b"fmt ", fmt_body(0xFFFE, extra=extensible_extra(1, b"\x01" * 14))))
    fmt, _ = parse_wave_header(header)
    assert fmt.format_tag == WaveFormatTag.EXTENSIBLE
    with pytest.raises(UspError, match="format tag 65534"):
        require_pcm16_mono_16k(fmt)


def test_parse_keeps_non_pcm_format_tag() -> None:
    """A non-PCM format such as mu-law parses with its own tag."""
    header = riff(chunk(b"fmt ", fmt_body(7, bits=8)))
    assert parse_wave_header(header)[0] == WaveFormat(16000, 1, 8, WaveFormatTag.MULAW)


# --------------------------------------------------------------------------- errors

ERROR_CASES = [
    pytest.param(b"RIFX" + CANONICAL[4:], "RIFF/WAVE", id="rifx"),
    pytest.param(b"RIFF\x00\x00\x00\x00AVI " + CANONICAL[12:], "RIFF/WAVE", id="avi"),
    pytest.param(b"ID3\x03" + CANONICAL[4:], "RIFF/WAVE", id="mp3"),
    pytest.param(b"\x00" * 44, "RIFF/WAVE", id="raw-pcm"),
    pytest.param(riff(), "no fmt chunk", id="data-without-fmt"),
    pytest.param(riff(LIST_INFO), "no fmt chunk", id="list-then-data"),
    pytest.param(riff(chunk(b"fmt ", fmt_body()[:14])), "fmt chunk too short", id="fmt-14"),
    pytest.param(riff(chunk(b"fmt ", b"")), "fmt chunk too short", id="fmt-empty"),
    pytest.param(
        riff(chunk(b"fmt ", fmt_body(0xFFFE, extra=b"\x16\x00"))),
        "too short for WAVE_FORMAT_EXTENSIBLE",
        id="extensible-short",
    ),
    pytest.param(
        riff(chunk(b"fmt ", fmt_body()), chunk(b"fmt ", fmt_body())), "two fmt", id="two-fmt"
    ),
    pytest.param(riff(chunk(b"fmt ", fmt_body(channels=0))), "zero", id="zero-channels"),
    pytest.param(riff(chunk(b"fmt ", fmt_body(rate=0))), "zero", id="zero-rate"),
    pytest.param(riff(chunk(b"fmt ", fmt_body(bits=0))), "zero", id="zero-bits"),
    pytest.param(
        riff(chunk(b"fmt ", fmt_body()), chunk(b"LIST", b"\x00" * 5000)),
        f"longer than {DEFAULT_MAX_HEADER_BYTES}",
        id="list-beyond-cap",
    ),
    pytest.param(
        riff(chunk(b"fmt ", fmt_body(extra=b"\x00" * 5000))),
        f"longer than {DEFAULT_MAX_HEADER_BYTES}",
        id="fmt-beyond-cap",
    ),
]


@pytest.mark.parametrize(("data", "fragment"), ERROR_CASES)
def test_parse_errors(data: bytes, fragment: str) -> None:
    """parse_wave_header raises UspError 1007 naming the problem."""
    with pytest.raises(UspError, match=fragment) as info:
        parse_wave_header(data + PCM)
    assert_invalid_payload(info.value)


@pytest.mark.parametrize(("data", "fragment"), ERROR_CASES)
def test_reader_errors(data: bytes, fragment: str) -> None:
    """WaveHeaderReader raises the same UspError 1007 when fed the whole stream."""
    with pytest.raises(UspError, match=fragment) as info:
        WaveHeaderReader().feed(data + PCM)
    assert_invalid_payload(info.value)


@pytest.mark.parametrize(("data", "fragment"), ERROR_CASES)
def test_reader_errors_byte_at_a_time(data: bytes, fragment: str) -> None:
    """Fed one byte at a time, the reader raises the same error by the end of the bad header."""
    reader = WaveHeaderReader()
    stream = data + PCM
    caught: UspError | None = None
    for i in range(len(stream)):
        try:
            assert reader.feed(stream[i : i + 1]) is None
        except UspError as error:
            caught = error
            break
    assert caught is not None
    assert re.search(fragment, caught.reason)
    assert_invalid_payload(caught)
    assert i < min(len(data), DEFAULT_MAX_HEADER_BYTES)


def test_parse_truncated_header() -> None:
    """parse_wave_header on an incomplete header raises UspError 1007 'truncated'."""
    for cut in range(CANONICAL_HEADER_BYTES):
        with pytest.raises(UspError, match="truncated") as info:
            parse_wave_header(CANONICAL[:cut])
        assert_invalid_payload(info.value)


def test_non_riff_detected_on_first_byte() -> None:
    """A stream that cannot be RIFF fails on its first byte instead of waiting for 44."""
    with pytest.raises(UspError, match="RIFF/WAVE"):
        WaveHeaderReader().feed(b"X")


# The data chunk header after a chunk must still end within the cap: a LIST after the 16-byte
# fmt has its body at 44, so 44 + size (+ pad) + 8 <= 4096; a first fmt has its body at 20.
@pytest.mark.parametrize(
    ("prefix", "size", "fits"),
    [
        (CANONICAL[:36] + b"LIST", 4044, True),
        (CANONICAL[:36] + b"LIST", 4045, False),
        (CANONICAL[:36] + b"LIST", 4046, False),
        (CANONICAL[:36] + b"LIST", 100_000, False),
        (CANONICAL[:12] + b"fmt ", 4068, True),
        (CANONICAL[:12] + b"fmt ", 4069, False),
        (CANONICAL[:12] + b"fmt ", 0xFFFFFFFF, False),
    ],
)
def test_oversized_chunk_detected_from_its_header(prefix: bytes, size: int, fits: bool) -> None:
    """A chunk reaching past the cap (pad byte included) fails as soon as its size is read."""
    reader = WaveHeaderReader()
    assert reader.feed(prefix) is None
    announce = size.to_bytes(4, "little")
    if fits:
        assert reader.feed(announce) is None
    else:
        with pytest.raises(UspError, match="longer than 4096"):
            reader.feed(announce)


def test_custom_cap() -> None:
    """A larger max_header_bytes admits a header the default cap refuses."""
    big = riff(chunk(b"fmt ", fmt_body()), chunk(b"LIST", b"\x00" * 5000))
    with pytest.raises(UspError):
        parse_wave_header(big)
    assert parse_wave_header(big, max_header_bytes=8192) == (PCM_16K_MONO, len(big))
    assert WaveHeaderReader(8192).feed(big + PCM) == (PCM_16K_MONO, PCM)


def test_cap_boundary() -> None:
    """A header exactly max_header_bytes long is accepted and one byte less is refused."""
    assert WaveHeaderReader(len(WITH_LIST)).feed(WITH_LIST) == (PCM_16K_MONO, b"")
    with pytest.raises(UspError, match="longer than"):
        WaveHeaderReader(len(WITH_LIST) - 1).feed(WITH_LIST)


def test_cap_below_canonical_header_is_refused() -> None:
    """A cap smaller than 44 bytes could never accept a header and is a ValueError."""
    with pytest.raises(ValueError, match="44"):
        WaveHeaderReader(43)
    with pytest.raises(ValueError, match="44"):
        parse_wave_header(CANONICAL, max_header_bytes=43)
    assert parse_wave_header(CANONICAL, max_header_bytes=44) == (PCM_16K_MONO, 44)


# --------------------------------------------------------------------------- incremental reading


@pytest.mark.parametrize("header", HEADERS)
def test_reader_all_at_once(header: bytes) -> None:
    """Feeding header and PCM in one call returns the format and exactly the PCM."""
    reader = WaveHeaderReader()
    assert reader.feed(header + PCM) == (parse_wave_header(header)[0], PCM)
    assert reader.finished


@pytest.mark.parametrize("header", HEADERS)
def test_reader_byte_at_a_time(header: bytes) -> None:
    """One byte at a time, the result arrives with the header's last byte and the PCM is exact."""
    expected = parse_wave_header(header)[0]
    stream = header + PCM
    reader = WaveHeaderReader()
    for i in range(len(stream)):
        result = reader.feed(stream[i : i + 1])
        if result is not None:
            break
    else:
        pytest.fail("header never completed")
    assert i == len(header) - 1
    fmt, pcm = result
    assert fmt == expected
    assert pcm + stream[i + 1 :] == PCM
    assert WaveHeaderReader().feed(stream) == (fmt, PCM)


def test_reader_header_message_then_pcm() -> None:
    """USP sends the header in its own message: the reader completes on it with no PCM left over."""
    reader = WaveHeaderReader()
    assert reader.feed(CANONICAL) == (PCM_16K_MONO, b"")


def test_reader_empty_feed_needs_more() -> None:
    """An empty feed (an empty chunk of a REST body) asks for more data."""
    reader = WaveHeaderReader()
    assert reader.feed(b"") is None
    assert reader.feed(CANONICAL[:10]) is None
    assert reader.feed(b"") is None
    assert not reader.finished
    assert reader.feed(CANONICAL[10:] + PCM) == (PCM_16K_MONO, PCM)


def test_feed_after_completion_is_a_programmer_error() -> None:
    """Once the header is complete, feeding again raises RuntimeError instead of eating PCM."""
    reader = WaveHeaderReader()
    assert reader.feed(CANONICAL) is not None
    with pytest.raises(RuntimeError, match="complete"):
        reader.feed(PCM)


def test_feed_after_error_is_a_programmer_error() -> None:
    """Once the reader raised UspError, feeding again raises RuntimeError."""
    reader = WaveHeaderReader()
    with pytest.raises(UspError):
        reader.feed(b"nope")
    assert reader.finished
    with pytest.raises(RuntimeError):
        reader.feed(CANONICAL)


@given(st.sampled_from([h.values[0] for h in HEADERS]), st.data())
def test_reader_arbitrary_splits(header: bytes, data: st.DataObject) -> None:
    """Any split of header+PCM into chunks gives the same format and PCM as one feed."""
    stream = header + PCM[:100]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    reader = WaveHeaderReader()
    for n in range(len(pieces)):
        result = reader.feed(pieces[n])
        if result is not None:
            break
    else:
        pytest.fail("header never completed")
    fmt, pcm = result
    assert fmt == parse_wave_header(header)[0]
    assert pcm + b"".join(pieces[n + 1 :]) == PCM[:100]


# --------------------------------------------------------------------------- fuzzing


def check_reader_agrees(stream: bytes, pieces: list[bytes], cap: int) -> None:
    """Feed `pieces`; only UspError may escape, and a result must agree with parse_wave_header."""
    reader = WaveHeaderReader(cap)
    try:
        for n in range(len(pieces)):
            result = reader.feed(pieces[n])
            if result is not None:
                break
        else:
            return
    except UspError as error:
        assert_invalid_payload(error)
        with pytest.raises(UspError):
            parse_wave_header(stream, max_header_bytes=cap)
        return
    fmt, pcm = result
    parsed, offset = parse_wave_header(stream, max_header_bytes=cap)
    assert parsed == fmt
    assert offset <= cap
    assert pcm + b"".join(pieces[n + 1 :]) == stream[offset:]


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_fuzz_parse_raises_only_usp_error(data: bytes) -> None:
    """Arbitrary bytes into parse_wave_header give a result or UspError 1007."""
    try:
        parse_wave_header(data)
    except UspError as error:
        assert_invalid_payload(error)


chunk_ids = st.sampled_from([b"fmt ", b"data", b"LIST", b"JUNK", b"fact", b"\x00\x00\x00\x00"])
fuzz_chunks = st.builds(
    lambda cid, body, size: (
        cid + (len(body) if size is None else size).to_bytes(4, "little") + body
    ),
    chunk_ids,
    st.one_of(
        st.binary(max_size=48),
        st.builds(fmt_body, st.sampled_from([1, 3, 0xFFFE]), st.integers(0, 3)),
    ),
    st.one_of(st.none(), st.integers(0, 0xFFFFFFFF), st.integers(0, 60)),
)


@given(
    st.lists(fuzz_chunks, max_size=5),
    st.binary(max_size=20),
    st.integers(CANONICAL_HEADER_BYTES, 300),
    st.data(),
)
@settings(max_examples=500)
def test_fuzz_structured_headers(
    chunks: list[bytes], tail: bytes, cap: int, data: st.DataObject
) -> None:
    """RIFF/WAVE with random chunks, sizes, caps and splits: only UspError, and reader == parser."""
    stream = b"RIFF\x00\x00\x00\x00WAVE" + b"".join(chunks) + tail
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    check_reader_agrees(stream, pieces, cap)


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_fuzz_reader_raises_only_usp_error(stream: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes fed in arbitrary pieces give None, a result or UspError 1007."""
    bounds = sorted(min(c, len(stream)) for c in cuts)
    pieces = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    check_reader_agrees(stream, pieces, DEFAULT_MAX_HEADER_BYTES)


@pytest.mark.parametrize("header", HEADERS)
def test_single_byte_corruption(header: bytes) -> None:
    """Replacing any one header byte gives a parse result or UspError 1007, nothing else."""
    for pos in range(len(header)):
        for value in range(256):
            corrupt = header[:pos] + bytes([value]) + header[pos + 1 :] + PCM
            check_reader_agrees(corrupt, [corrupt], DEFAULT_MAX_HEADER_BYTES)


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("rate", "channels", "width"),
    [(16000, 1, 2), (8000, 1, 1), (44100, 2, 2), (48000, 1, 3), (22050, 6, 4)],
)
def test_wave_header_matches_python_wave(rate: int, channels: int, width: int) -> None:
    """wave_header() writes byte for byte what Python's wave module writes for the format."""
    frames = bytes(channels * width * 50)
    fmt = WaveFormat(sample_rate=rate, channels=channels, bits_per_sample=width * 8)
    expected = python_wave_bytes(rate, channels, width, frames)[:CANONICAL_HEADER_BYTES]
    assert wave_header(fmt, len(frames)) == expected
    assert parse_wave_header(wave_header(fmt, len(frames))) == (fmt, CANONICAL_HEADER_BYTES)


def test_python_wave_reads_wave_header() -> None:
    """Python's wave module reads back the format and frames behind a wave_header() header."""
    with wave.open(io.BytesIO(wave_header(PCM_16K_MONO, len(PCM)) + PCM), "rb") as reader:
        assert reader.getframerate() == 16000
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.readframes(reader.getnframes()) == PCM


def test_wave_header_default_is_16k_mono_streaming() -> None:
    """The default header is 44 bytes of 16 kHz 16-bit mono PCM with an empty data size."""
    header = wave_header()
    assert len(header) == CANONICAL_HEADER_BYTES
    assert header[40:44] == b"\x00\x00\x00\x00"
    assert parse_wave_header(header) == (PCM_16K_MONO, 44)


def test_wave_header_streaming_size_saturates() -> None:
    """data_bytes=0xFFFFFFFF keeps the RIFF size at 0xFFFFFFFF instead of overflowing."""
    header = wave_header(PCM_16K_MONO, 0xFFFFFFFF)
    assert header[4:8] == b"\xff\xff\xff\xff"
    assert header[40:44] == b"\xff\xff\xff\xff"
    assert parse_wave_header(header) == (PCM_16K_MONO, 44)


@pytest.mark.parametrize("data_bytes", [-1, 1 << 32])
def test_wave_header_rejects_bad_size(data_bytes: int) -> None:
    """A data size outside 32 bits raises ValueError."""
    with pytest.raises(ValueError, match="32 bits"):
        wave_header(PCM_16K_MONO, data_bytes)


def test_wave_header_rejects_unrepresentable_format() -> None:
    """A format whose byte rate does not fit the header's 32-bit field raises ValueError."""
    with pytest.raises(ValueError, match="cannot be described"):
        wave_header(WaveFormat(sample_rate=0xFFFFFFFF, channels=2, bits_per_sample=16))


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "block_align", "bytes_per_second"),
    [
        (PCM_16K_MONO, 2, 32000),
        (WaveFormat(48000, 2, 24), 6, 288000),
        (WaveFormat(8000, 1, 8, WaveFormatTag.MULAW), 1, 8000),
        (WaveFormat(16000, 1, 12), 2, 32000),  # samples are padded to whole bytes
    ],
)
def test_wave_format_derived_sizes(
    fmt: WaveFormat, block_align: int, bytes_per_second: int
) -> None:
    """block_align and bytes_per_second follow from channels, bits and rate."""
    assert fmt.block_align == block_align
    assert fmt.bytes_per_second == bytes_per_second


@pytest.mark.parametrize(
    "fields",
    [(0, 1, 16, 1), (16000, 0, 16, 1), (16000, 1, 0, 1), (16000, 1, 16, -1), (1 << 32, 1, 16, 1)],
)
def test_wave_format_rejects_out_of_range_fields(fields: tuple[int, int, int, int]) -> None:
    """WaveFormat refuses values its header fields cannot hold."""
    with pytest.raises(ValueError, match="out of range"):
        WaveFormat(*fields)


def test_require_accepts_16k_mono_pcm() -> None:
    """require_pcm16_mono_16k accepts the SDK's default format."""
    require_pcm16_mono_16k(PCM_16K_MONO)
    require_pcm16_mono_16k(parse_wave_header(EXTENSIBLE)[0])


@pytest.mark.parametrize(
    ("fmt", "named"),
    [
        (WaveFormat(8000, 1, 16), ["8000 Hz"]),
        (WaveFormat(16000, 2, 16), ["2 channels"]),
        (WaveFormat(16000, 1, 8), ["8-bit"]),
        (WaveFormat(16000, 1, 16, WaveFormatTag.IEEE_FLOAT), ["format tag 3"]),
        (
            WaveFormat(0xFFFFFFFF, 0xFFFF, 0xFFFF, 0xFFFE),
            ["format tag 65534", "65535 channels", "4294967295 Hz", "65535-bit"],
        ),
    ],
)
def test_require_names_every_unsupported_property(fmt: WaveFormat, named: list[str]) -> None:
    """require_pcm16_mono_16k raises UspError 1007 naming each unsupported property."""
    with pytest.raises(UspError) as info:
        require_pcm16_mono_16k(fmt)
    assert_invalid_payload(info.value)
    for part in named:
        assert part in info.value.reason
