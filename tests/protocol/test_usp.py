"""Tests for the USP message codec (gateway.protocol.usp)."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import CloseCode, UspError
from gateway.protocol.usp import (
    DEFAULT_LIMITS,
    BinaryMessage,
    Path,
    RecognitionStatus,
    TextMessage,
    UspLimits,
    decode_binary,
    decode_text,
    encode_binary,
    encode_text,
    new_request_id,
    ticks_from_bytes,
)
from gateway.protocol.wav import wave_header

RID = "9bed34362cbb4432963cb66e84906729"
RID_JS = "9BED34362CBB4432963CB66E84906729"
TS = "2026-11-21T05:19:18.410Z"
CONTEXT_BODY = (
    '{"phraseDetection":{"language":"de-DE"},"audio":{"streams":{"1":null}},'
    '"dgi":{"Groups":[{"Type":"Generic","Items":[{"Text":"Zürich Straße"}]}]}}'
)
CONFIG_BODY = '{"context":{"system":{"version":"1.53.0","name":"SpeechSDK","lang":"Python"}}}'

NATIVE_CONTEXT = (
    f"X-Timestamp:{TS}\r\nPath:speech.context\r\nX-RequestId:{RID}\r\n"
    f"Content-Type:application/json\r\n\r\n{CONTEXT_BODY}"
)
JS_CONTEXT = (
    f"Path: speech.context\r\nX-RequestId: {RID_JS}\r\nX-Timestamp: {TS}\r\n"
    f"Content-Type: application/json\r\n\r\n{CONTEXT_BODY}"
)
NATIVE_CONFIG = (
    f"X-Timestamp:{TS}\r\nPath:speech.config\r\nContent-Type:application/json\r\n\r\n{CONFIG_BODY}"
)
PCM_3200 = random.Random(7).randbytes(3200)
# A WebSocket close reason must fit in 123 bytes (RFC 6455 §5.5).
MAX_CLOSE_REASON_BYTES = 123
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9-]{1,64}")


def binary_frame(head: str, payload: bytes = b"") -> bytes:
    """A binary USP frame with `head` as its header block, written as given."""
    raw = head.encode("latin-1")
    return len(raw).to_bytes(2, "big") + raw + payload


NATIVE_AUDIO_HEAD = (
    f"X-Timestamp:{TS}\r\nPath:audio\r\nContent-Type:audio/x-wav\r\n"
    f"X-RequestId:{RID}\r\nX-StreamId:1"
)
JS_AUDIO_HEAD = f"Path: audio\r\nX-RequestId: {RID_JS}\r\nX-Timestamp: {TS}\r\n"
AUDIO_RIFF = binary_frame(NATIVE_AUDIO_HEAD, wave_header())
AUDIO_PCM = binary_frame(NATIVE_AUDIO_HEAD, PCM_3200)
AUDIO_END = binary_frame(JS_AUDIO_HEAD)


def assert_well_formed(msg: TextMessage | BinaryMessage) -> None:
    """Check the invariants every successfully decoded message must satisfy."""
    assert msg.path
    assert msg.path.isprintable()
    if msg.request_id is None:
        assert msg.path.lower() == "speech.config"
    else:
        assert REQUEST_ID_RE.fullmatch(msg.request_id)
    assert [n.lower() for n, _ in msg.headers].count("path") == 1
    for name, value in msg.headers:
        assert name
        assert ":" not in name
        assert (name + value).isprintable()
        assert value == value.strip(" ")
    if isinstance(msg, BinaryMessage):
        assert all((n + v).isascii() for n, v in msg.headers)


def assert_usp_error(error: UspError) -> None:
    """Check an error carries a close code the gateway can send as is."""
    assert error.close_code in (CloseCode.PROTOCOL_ERROR, CloseCode.MESSAGE_TOO_BIG)
    assert len(error.reason.encode()) <= MAX_CLOSE_REASON_BYTES
    assert str(error) == error.reason


# --------------------------------------------------------------------------- decoding


def test_decode_native_text_message() -> None:
    """A native-style `Name:value` speech.context decodes with every header in order."""
    msg = decode_text(NATIVE_CONTEXT)
    assert msg == TextMessage(
        path="speech.context",
        request_id=RID,
        headers=(
            ("X-Timestamp", TS),
            ("Path", "speech.context"),
            ("X-RequestId", RID),
            ("Content-Type", "application/json"),
        ),
        body=CONTEXT_BODY,
    )
    assert msg.path == Path.SPEECH_CONTEXT


def test_decode_js_style_text_message() -> None:
    """A JS-style `Name: value` message decodes with spaces stripped and the upper-case id kept."""
    msg = decode_text(JS_CONTEXT)
    assert msg.path == "speech.context"
    assert msg.request_id == RID_JS
    assert msg.headers[0] == ("Path", "speech.context")
    assert msg.header("x-timestamp") == TS
    assert msg.body == CONTEXT_BODY


def test_header_values_are_stripped_of_surrounding_spaces() -> None:
    """Spaces around a value are framing, not content, so they are removed on both sides."""
    msg = decode_text(f"Path:  audio  \r\nX-RequestId:  {RID} \r\n\r\n")
    assert msg.path == "audio"
    assert msg.request_id == RID


def test_header_lookup_is_case_insensitive() -> None:
    """`header()` finds a header whatever the case of the name asked for or sent."""
    msg = decode_text(f"path:turn.start\r\nx-requestid:{RID}\r\nCONTENT-TYPE:text/plain\r\n\r\n")
    assert msg.path == "turn.start"
    assert msg.request_id == RID
    assert msg.header("Content-Type") == "text/plain"
    assert msg.header("X-REQUESTID") == RID
    assert msg.header("X-StreamId") is None
    assert msg.headers[0] == ("path", "turn.start")


def test_value_colons_are_kept() -> None:
    """Only the first colon separates name from value, so timestamps survive."""
    assert decode_text(NATIVE_CONTEXT).header("X-Timestamp") == TS


def test_speech_config_may_omit_request_id() -> None:
    """The native SDK's speech.config has no X-RequestId and still decodes."""
    msg = decode_text(NATIVE_CONFIG)
    assert msg.path == Path.SPEECH_CONFIG
    assert msg.request_id is None
    assert msg.body == CONFIG_BODY


def test_speech_config_with_request_id_keeps_it() -> None:
    """The JS SDK's speech.config carries an X-RequestId, which is returned."""
    msg = decode_text(f"Path: speech.config\r\nX-RequestId: {RID_JS}\r\n\r\n{CONFIG_BODY}")
    assert msg.request_id == RID_JS


def test_text_body_may_contain_blank_lines() -> None:
    """Only the first blank line separates headers from body."""
    body = "line\r\n\r\nPath:evil\r\n\r\n"
    msg = decode_text(f"Path:telemetry\r\nX-RequestId:{RID}\r\n\r\n{body}")
    assert msg.body == body
    assert msg.path == "telemetry"


def test_text_message_with_empty_body() -> None:
    """A message whose body is empty (turn.end may be) decodes with body ''."""
    assert decode_text(f"Path:turn.end\r\nX-RequestId:{RID}\r\n\r\n").body == ""


def test_request_id_of_64_characters_is_accepted() -> None:
    """The longest allowed X-RequestId (64 chars, dashes included) decodes."""
    rid = "a-" * 32
    assert decode_text(f"Path:audio\r\nX-RequestId:{rid}\r\n\r\n").request_id == rid


def test_decode_native_audio_header_message() -> None:
    """A native audio message whose last header has no CRLF returns the RIFF header as payload."""
    msg = decode_binary(AUDIO_RIFF)
    assert msg == BinaryMessage(
        path="audio",
        request_id=RID,
        headers=(
            ("X-Timestamp", TS),
            ("Path", "audio"),
            ("Content-Type", "audio/x-wav"),
            ("X-RequestId", RID),
            ("X-StreamId", "1"),
        ),
        payload=wave_header(),
    )
    assert msg.header("x-streamid") == "1"


def test_decode_js_audio_end_message() -> None:
    """A JS audio message with CRLF after every header and no payload means end of audio."""
    msg = decode_binary(AUDIO_END)
    assert msg.path == Path.AUDIO
    assert msg.request_id == RID_JS
    assert msg.payload == b""
    assert msg.headers == (("Path", "audio"), ("X-RequestId", RID_JS), ("X-Timestamp", TS))


def test_binary_payload_is_returned_uninspected() -> None:
    """Payload bytes that look like headers, CRLFs or non-ASCII are returned untouched."""
    payload = b"\r\n\r\nPath:evil\r\n\xff\xfe\x00" + PCM_3200
    frame = binary_frame(f"Path:audio\r\nX-RequestId:{RID}\r\n", payload)
    msg = decode_binary(frame)
    assert msg.payload == payload
    assert type(msg.payload) is bytes


def test_binary_message_with_no_headers_is_missing_path() -> None:
    """A zero header length is valid framing but lacks the required Path."""
    with pytest.raises(UspError, match="missing Path header") as info:
        decode_binary(b"\x00\x00" + PCM_3200)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


# --------------------------------------------------------------------------- encoding


def test_encode_text_exact_output() -> None:
    """encode_text writes Path, X-RequestId, Content-Type, extras, without spaces, then the body."""
    text = encode_text(
        Path.TURN_START, RID, '{"context":{"serviceTag":"ab"}}', extra_headers=[("X-Timestamp", TS)]
    )
    assert text == (
        f"Path:turn.start\r\nX-RequestId:{RID}\r\n"
        f"Content-Type:application/json; charset=utf-8\r\nX-Timestamp:{TS}\r\n\r\n"
        '{"context":{"serviceTag":"ab"}}'
    )


def test_encode_text_without_content_type() -> None:
    """content_type=None leaves the Content-Type header out."""
    assert encode_text("turn.end", RID, "", content_type=None) == (
        f"Path:turn.end\r\nX-RequestId:{RID}\r\n\r\n"
    )


def test_encode_binary_exact_output() -> None:
    """encode_binary writes a big-endian length and CRLF-terminated Path, X-RequestId, extras."""
    frame = encode_binary("audio", RID, b"\x01\x02", extra_headers=[("X-StreamId", "1")])
    head = f"Path:audio\r\nX-RequestId:{RID}\r\nX-StreamId:1\r\n".encode()
    assert frame == len(head).to_bytes(2, "big") + head + b"\x01\x02"


def test_encoded_header_names_have_exact_case() -> None:
    """The native SDK ignores other casings, so `Path` and `X-RequestId` are written exactly."""
    text = encode_text("speech.phrase", RID, "{}")
    assert text.startswith(f"Path:speech.phrase\r\nX-RequestId:{RID}\r\n")
    assert "path:" not in text
    assert "x-requestid" not in text
    frame = encode_binary("audio", RID, b"")
    assert frame[2:].startswith(f"Path:audio\r\nX-RequestId:{RID}\r\n".encode())


def test_encode_speech_config_without_request_id() -> None:
    """speech.config, and only it, may be encoded without a request id."""
    assert decode_text(encode_text("speech.config", None, "{}")).request_id is None
    with pytest.raises(ValueError, match="request id"):
        encode_text("speech.phrase", None, "{}")


def test_encode_decode_round_trip_text() -> None:
    """A text message encoded with extras decodes to the same path, id, headers and body."""
    msg = decode_text(encode_text(Path.SPEECH_PHRASE, RID, "{}", extra_headers=[("X-A", "b c")]))
    assert msg == TextMessage(
        path="speech.phrase",
        request_id=RID,
        headers=(
            ("Path", "speech.phrase"),
            ("X-RequestId", RID),
            ("Content-Type", "application/json; charset=utf-8"),
            ("X-A", "b c"),
        ),
        body="{}",
    )


def test_encode_decode_round_trip_binary() -> None:
    """A binary message encoded with extras decodes to the same path, id, headers and payload."""
    msg = decode_binary(encode_binary("audio", RID, PCM_3200, extra_headers=[("X-StreamId", "2")]))
    assert msg == BinaryMessage(
        "audio", RID, (("Path", "audio"), ("X-RequestId", RID), ("X-StreamId", "2")), PCM_3200
    )


@pytest.mark.parametrize(
    ("path", "request_id", "extras"),
    [
        ("audio\r\nX-Injected:1", RID, ()),
        ("audio\rX", RID, ()),
        ("audio\nX", RID, ()),
        ("", RID, ()),
        ("audio", RID + "\r\nPath:evil", ()),
        ("audio", "", ()),
        ("audio", "a" * 65, ()),
        ("audio", "abc_def", ()),
        ("audio", "١٢٣", ()),
        ("audio", RID, (("X-A", "1\r\nPath:evil"),)),
        ("audio", RID, (("X-A", "1\n"),)),
        ("audio", RID, (("X-A", "\x00"),)),
        ("audio", RID, (("X-A", " leading"),)),
        ("audio", RID, (("X-A", "trailing "),)),
        ("audio", RID, (("X:A", "1"),)),
        ("audio", RID, (("X\rA", "1"),)),
        ("audio", RID, (("X A", "1"),)),
        ("audio", RID, (("", "1"),)),
        ("audio", RID, (("path", "other"),)),
        ("audio", RID, (("X-REQUESTID", RID),)),
    ],
)
def test_encoders_reject_unsafe_headers(
    path: str, request_id: str, extras: tuple[tuple[str, str], ...]
) -> None:
    """Both encoders raise ValueError for header injection, bad names, bad ids and duplicates."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        encode_text(path, request_id, "{}", extra_headers=extras)
    with pytest.raises(ValueError):  # noqa: PT011
        encode_binary(path, request_id, b"", extra_headers=extras)


def test_encode_text_rejects_duplicate_content_type() -> None:
    """An extra Content-Type next to the content_type argument is refused."""
    with pytest.raises(ValueError, match="repeats"):
        encode_text("audio", RID, "", extra_headers=[("content-type", "text/plain")])
    assert "Content-Type:text/plain" in encode_text(
        "audio", RID, "", content_type=None, extra_headers=[("Content-Type", "text/plain")]
    )


def test_encode_binary_rejects_non_ascii_header() -> None:
    """Binary headers are ASCII only; the text encoder accepts the same value."""
    with pytest.raises(ValueError, match="ASCII"):
        encode_binary("audio", RID, b"", extra_headers=[("X-Name", "Zürich")])
    assert decode_text(encode_text("audio", RID, "", extra_headers=[("X-Name", "Zürich")])).header(
        "x-name"
    ) == ("Zürich")


def test_encode_binary_rejects_headers_beyond_two_byte_length() -> None:
    """A header block longer than 65535 bytes cannot be framed and is refused."""
    with pytest.raises(ValueError, match="65535"):
        encode_binary("audio", RID, b"", extra_headers=[("X-Big", "a" * 70000)])


# --------------------------------------------------------------------------- decoding errors

# Header blocks breaking a header rule, with the reason fragment; tried as text and as binary.
HEADER_RULE_CASES = [
    pytest.param(f"X-RequestId:{RID}", "missing Path header", id="no-path"),
    pytest.param(f"Path:\r\nX-RequestId:{RID}", "missing Path header", id="empty-path"),
    pytest.param(f"Path:   \r\nX-RequestId:{RID}", "missing Path header", id="blank-path"),
    pytest.param(f"Path:audio\r\npath:audio\r\nX-RequestId:{RID}", "duplicate Path", id="dup-path"),
    pytest.param("Path:audio", "missing X-RequestId", id="no-request-id"),
    pytest.param(
        f"Path:audio\r\nX-RequestId:{RID}\r\nx-requestid:{RID}",
        "duplicate X-RequestId",
        id="dup-rid",
    ),
    pytest.param("Path:audio\r\nX-RequestId:", "X-RequestId must be", id="empty-rid"),
    pytest.param("Path:audio\r\nX-RequestId:" + "a" * 65, "X-RequestId must be", id="long-rid"),
    pytest.param("Path:audio\r\nX-RequestId:abc_def", "X-RequestId must be", id="underscore-rid"),
    pytest.param("Path:audio\r\nX-RequestId:ab cd", "X-RequestId must be", id="space-rid"),
    pytest.param(
        "Path:speech.config\r\nX-RequestId:", "X-RequestId must be", id="config-empty-rid"
    ),
    pytest.param(f"Path:audio\r\nX-RequestId:{RID}\r\nNoColon", "without a colon", id="no-colon"),
    pytest.param(f"Path:audio\r\nX-RequestId:{RID}\r\n:value", "empty name", id="empty-name"),
    pytest.param(f"Path:audio\r\nX-RequestId:{RID}\x00", "non-printable", id="nul"),
    pytest.param(f"Path:audio\r\nX-RequestId:{RID}\r\nX-A:\t1", "non-printable", id="tab"),
    pytest.param(f"Path:audio\rX-RequestId:{RID}", "non-printable", id="lone-cr"),
    pytest.param(f"Path:audio\nX-RequestId:{RID}", "non-printable", id="lone-lf"),
    pytest.param(f"Path:audio\r\nX-RequestId:{RID}\r\nX-A:\x7f", "non-printable", id="del"),
]


@pytest.mark.parametrize(("head", "fragment"), HEADER_RULE_CASES)
def test_text_header_rules(head: str, fragment: str) -> None:
    """A text message breaking a header rule raises UspError 1002 naming the rule."""
    with pytest.raises(UspError, match=fragment) as info:
        decode_text(head + "\r\n\r\n{}")
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert_usp_error(info.value)


@pytest.mark.parametrize(("head", "fragment"), HEADER_RULE_CASES)
def test_binary_header_rules(head: str, fragment: str) -> None:
    """A binary message breaking a header rule raises UspError 1002 naming the rule."""
    with pytest.raises(UspError, match=fragment) as info:
        decode_binary(binary_frame(head, PCM_3200))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert_usp_error(info.value)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(f"Path:audio\r\n\r\nX-RequestId:{RID}", id="inside"),
        pytest.param(f"Path:audio\r\nX-RequestId:{RID}\r\n\r\n", id="trailing"),
    ],
)
def test_binary_headers_reject_blank_line(head: str) -> None:
    """Binary headers have no blank line; an empty line is a header without a colon (1002)."""
    with pytest.raises(UspError, match="without a colon") as info:
        decode_binary(binary_frame(head, PCM_3200))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(f"Path:audio\r\nX-RequestId:{RID}\r\n{{}}", id="single-crlf"),
        pytest.param(f"Path:audio\r\nX-RequestId:{RID}", id="no-crlf"),
        pytest.param(f"Path:audio\nX-RequestId:{RID}\n\n{{}}", id="bare-lf"),
        pytest.param("", id="empty"),
    ],
)
def test_text_without_blank_line_is_protocol_error(frame: str) -> None:
    """A text message with no `\\r\\n\\r\\n` after its headers raises UspError 1002."""
    with pytest.raises(UspError, match="blank line") as info:
        decode_text(frame)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_text_with_no_headers_is_missing_path() -> None:
    """A text message that starts with the blank line has no Path."""
    with pytest.raises(UspError, match="missing Path header"):
        decode_text("\r\n\r\n{}")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param("\u00a0", id="nbsp"),
        pytest.param("\u2028", id="line-separator"),
        pytest.param("\ufeff", id="bom"),
        pytest.param("\x85", id="nel"),
    ],
)
def test_text_headers_reject_non_printable_unicode(bad: str) -> None:
    """Unicode separators, format characters and lone surrogates in text headers raise 1002."""
    with pytest.raises(UspError, match="non-printable") as info:
        decode_text(f"Path:audio\r\nX-RequestId:{RID}\r\nX-A:a{bad}b\r\n\r\n")
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_text_headers_accept_printable_unicode() -> None:
    """Printable non-ASCII characters in a text header value are kept."""
    msg = decode_text(f"Path:audio\r\nX-RequestId:{RID}\r\nX-Name:Zürich 東京\r\n\r\n")
    assert msg.header("X-Name") == "Zürich 東京"


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(b"\x00\x05abcd", id="one-short"),
        pytest.param(b"\xff\xff" + b"a" * 100, id="huge-length"),
        pytest.param(b"\x00\x01", id="length-without-bytes"),
    ],
)
def test_binary_bad_header_length(frame: bytes) -> None:
    """A binary frame too short for its 2-byte length or announced headers raises 1002."""
    with pytest.raises(UspError, match="header length") as info:
        decode_binary(frame)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
    assert_usp_error(info.value)


@pytest.mark.parametrize("bad", [b"\x80", b"\xc3\xa9", b"\xff"])
def test_binary_non_ascii_headers(bad: bytes) -> None:
    """Binary header bytes outside ASCII raise 1002 naming the encoding."""
    raw = f"Path:audio\r\nX-RequestId:{RID}\r\nX-A:".encode() + bad
    with pytest.raises(UspError, match="ASCII") as info:
        decode_binary(len(raw).to_bytes(2, "big") + raw + PCM_3200)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_header_limit_boundaries() -> None:
    """A header block of exactly max_header_bytes is accepted and one more byte is 1002."""
    head = f"Path:audio\r\nX-RequestId:{RID}"
    exact = UspLimits(max_header_bytes=len(head))
    smaller = UspLimits(max_header_bytes=len(head) - 1)
    assert decode_text(head + "\r\n\r\n", exact).path == "audio"
    assert decode_binary(binary_frame(head, b"xyz"), exact).payload == b"xyz"
    for decode in (
        lambda: decode_text(head + "\r\n\r\n", smaller),
        lambda: decode_binary(binary_frame(head, b"xyz"), smaller),
    ):
        with pytest.raises(UspError, match="exceed") as info:
            decode()
        assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_text_header_limit_counts_utf8_bytes() -> None:
    """The header limit counts UTF-8 bytes, not characters."""
    head = f"Path:audio\r\nX-RequestId:{RID}\r\nX-A:" + "é" * 10
    limits = UspLimits(max_header_bytes=len(head) + 5)  # enough characters, too few bytes
    with pytest.raises(UspError, match="exceed"):
        decode_text(head + "\r\n\r\n", limits)


def test_text_message_too_big() -> None:
    """A text message longer than max_text_bytes raises MESSAGE_TOO_BIG, counting UTF-8 bytes."""
    frame = f"Path:audio\r\nX-RequestId:{RID}\r\n\r\n"
    assert decode_text(frame, UspLimits(max_text_bytes=len(frame))).body == ""
    with pytest.raises(UspError, match="exceeds") as info:
        decode_text(frame + "x", UspLimits(max_text_bytes=len(frame)))
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    # 4 characters but 8 bytes of body: over a limit that the character count would pass.
    with pytest.raises(UspError) as info:
        decode_text(frame + "éééé", UspLimits(max_text_bytes=len(frame) + 4))
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    big = frame + "x" * DEFAULT_LIMITS.max_text_bytes
    with pytest.raises(UspError) as info:
        decode_text(big)
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_text_size_is_checked_before_parsing() -> None:
    """An oversized text message is MESSAGE_TOO_BIG even when it is also malformed."""
    with pytest.raises(UspError) as info:
        decode_text("x" * 65, UspLimits(max_text_bytes=64))
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_binary_message_too_big() -> None:
    """A binary message longer than max_binary_bytes raises MESSAGE_TOO_BIG."""
    frame = binary_frame(f"Path:audio\r\nX-RequestId:{RID}", PCM_3200)
    assert decode_binary(frame, UspLimits(max_binary_bytes=len(frame))).payload == PCM_3200
    with pytest.raises(UspError, match="exceeds") as info:
        decode_binary(frame, UspLimits(max_binary_bytes=len(frame) - 1))
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(UspError) as info:
        decode_binary(binary_frame("Path:audio", bytes(DEFAULT_LIMITS.max_binary_bytes)))
    assert info.value.close_code == CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize("field", ["max_header_bytes", "max_text_bytes", "max_binary_bytes"])
def test_limits_must_be_positive(field: str) -> None:
    """UspLimits refuses a zero or negative bound."""
    with pytest.raises(ValueError, match=field):
        UspLimits(**{field: 0})


# ------------------------------------------------------------------------ prefixes and corruption

TEXT_SAMPLES = [
    pytest.param(NATIVE_CONTEXT, id="native-context"),
    pytest.param(JS_CONTEXT, id="js-context"),
    pytest.param(NATIVE_CONFIG, id="native-config"),
]
BINARY_SAMPLES = [
    pytest.param(AUDIO_RIFF, id="riff-header"),
    pytest.param(AUDIO_PCM, id="pcm-3200"),
    pytest.param(AUDIO_END, id="end-of-audio"),
]


@pytest.mark.parametrize("frame", TEXT_SAMPLES)
def test_text_prefixes_by_character(frame: str) -> None:
    """Every character prefix without the blank line raises; longer ones give a truncated body."""
    full = decode_text(frame)
    body_start = frame.index("\r\n\r\n") + 4
    for cut in range(len(frame)):
        prefix = frame[:cut]
        if cut < body_start:
            with pytest.raises(UspError):
                decode_text(prefix)
        else:
            msg = decode_text(prefix)
            assert msg != full
            assert msg == dataclasses.replace(full, body=frame[body_start:cut])


@pytest.mark.parametrize("frame", TEXT_SAMPLES)
def test_text_prefixes_by_utf8_byte(frame: str) -> None:
    """Cutting the UTF-8 bytes anywhere (even inside a character) never escapes UspError."""
    raw = frame.encode()
    full = decode_text(frame)
    body_start = raw.index(b"\r\n\r\n") + 4
    for cut in range(len(raw)):
        prefix = raw[:cut].decode("utf-8", "surrogateescape")
        if cut < body_start:
            with pytest.raises(UspError):
                decode_text(prefix)
        else:
            msg = decode_text(prefix)
            assert msg != full
            assert msg.headers == full.headers
            assert msg.body == raw[body_start:cut].decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("frame", BINARY_SAMPLES)
def test_binary_prefixes_byte_at_a_time(frame: bytes) -> None:
    """A prefix cut before the payload raises a header-length error; later cuts shorten it."""
    full = decode_binary(frame)
    payload_start = 2 + int.from_bytes(frame[:2], "big")
    for cut in range(len(frame)):
        if cut < payload_start:
            with pytest.raises(UspError, match="header length") as info:
                decode_binary(frame[:cut])
            assert info.value.close_code == CloseCode.PROTOCOL_ERROR
        else:
            msg = decode_binary(frame[:cut])
            assert msg != full
            assert msg == dataclasses.replace(full, payload=frame[payload_start:cut])
    assert decode_binary(frame) == full


# Replacement characters for text corruption: all of ASCII plus awkward Unicode.
CORRUPT_CHARS = [chr(c) for c in range(128)] + ["é", "\x85", "\u00a0", "\u2028", "\ufeff", "\ud800"]


@pytest.mark.parametrize("frame", TEXT_SAMPLES)
def test_text_single_character_corruption(frame: str) -> None:
    """Replacing any one character of the header area gives a well-formed message or UspError."""
    body_start = frame.index("\r\n\r\n") + 4
    for pos in range(body_start):
        for char in CORRUPT_CHARS:
            corrupt = frame[:pos] + char + frame[pos + 1 :]
            try:
                msg = decode_text(corrupt)
            except UspError as error:
                assert_usp_error(error)
            else:
                assert_well_formed(msg)
                assert corrupt.endswith(msg.body)


@pytest.mark.parametrize("frame", BINARY_SAMPLES)
def test_binary_single_byte_corruption(frame: bytes) -> None:
    """Replacing any one byte of the length or headers gives a well-formed message or UspError."""
    payload_start = 2 + int.from_bytes(frame[:2], "big")
    for pos in range(payload_start):
        for value in range(256):
            corrupt = frame[:pos] + bytes([value]) + frame[pos + 1 :]
            try:
                msg = decode_binary(corrupt)
            except UspError as error:
                assert_usp_error(error)
            else:
                assert_well_formed(msg)
                assert corrupt[len(corrupt) - len(msg.payload) :] == msg.payload


# --------------------------------------------------------------------------- property-based

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RESERVED = {"path", "x-requestid", "content-type"}

request_ids = st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True)
header_names = st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda name: name.lower() not in RESERVED
)
# Printable means: no Unicode "Other" or "Separator" character except the ASCII space.
text_values = st.text(
    st.characters(exclude_categories=("C", "Z"), include_characters=" "), max_size=40
).map(lambda value: value.strip(" "))
ascii_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    lambda value: value.strip(" ")
)
text_paths = st.one_of(st.sampled_from(list(Path)), text_values.filter(bool))
ascii_paths = st.one_of(st.sampled_from(list(Path)), ascii_values.filter(bool))

# Fragments that make fuzzed frames reach deep into the header parser, not just its first check.
FRAGMENTS = [
    "Path",
    "path",
    "X-RequestId",
    "x-requestid",
    ":",
    ": ",
    " ",
    "\r\n",
    "\r",
    "\n",
    "\r\n\r\n",
    "audio",
    "speech.config",
    RID,
    "-",
    "_",
    "é",
    "\x00",
    "\t",
    "\ud800",
]
structured_text = st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)
limits = st.builds(
    UspLimits,
    max_header_bytes=st.integers(1, 200),
    max_text_bytes=st.integers(1, 400),
    max_binary_bytes=st.integers(1, 400),
)


def decode_text_or_usp_error(frame: str, limits: UspLimits = DEFAULT_LIMITS) -> None:
    """Decode `frame`, accepting a well-formed message or a UspError and nothing else."""
    try:
        msg = decode_text(frame, limits)
    except UspError as error:
        assert_usp_error(error)
    else:
        assert_well_formed(msg)


def decode_binary_or_usp_error(frame: bytes, limits: UspLimits = DEFAULT_LIMITS) -> None:
    """Decode `frame`, accepting a well-formed message or a UspError and nothing else."""
    try:
        msg = decode_binary(frame, limits)
    except UspError as error:
        assert_usp_error(error)
    else:
        assert_well_formed(msg)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_fuzz_decode_binary_raises_only_usp_error(frame: bytes) -> None:
    """Arbitrary bytes into decode_binary give a well-formed message or UspError."""
    decode_binary_or_usp_error(frame)


@given(st.text(max_size=300))
@settings(max_examples=500)
def test_fuzz_decode_text_raises_only_usp_error(frame: str) -> None:
    """Arbitrary text into decode_text gives a well-formed message or UspError."""
    decode_text_or_usp_error(frame)


@given(structured_text, st.text(max_size=20), limits)
@settings(max_examples=500)
def test_fuzz_structured_text(head: str, body: str, bounds: UspLimits) -> None:
    """Header-like text with a separator and random limits gives a message or UspError."""
    decode_text_or_usp_error(head + "\r\n\r\n" + body, bounds)
    decode_text_or_usp_error(head + body, bounds)


@given(structured_text, st.binary(max_size=50), st.integers(-3, 3), limits)
@settings(max_examples=500)
def test_fuzz_structured_binary(head: str, payload: bytes, skew: int, bounds: UspLimits) -> None:
    """Header-like bytes with a nearly right length and random limits give a message or UspError."""
    raw = head.encode("utf-8", "surrogatepass")
    length = max(0, min(0xFFFF, len(raw) + skew))
    frame = length.to_bytes(2, "big") + raw + payload
    decode_binary_or_usp_error(frame, bounds)
    decode_binary_or_usp_error(frame)


@given(
    text_paths,
    request_ids,
    st.lists(st.tuples(header_names, text_values), max_size=5, unique_by=lambda h: h[0].lower()),
    st.one_of(st.none(), text_values),
    st.text(),
)
def test_round_trip_text(
    path: str,
    request_id: str,
    extras: list[tuple[str, str]],
    content_type: str | None,
    body: str,
) -> None:
    """encode_text then decode_text returns the same path, request id, headers and body."""
    msg = decode_text(
        encode_text(path, request_id, body, content_type=content_type, extra_headers=extras)
    )
    fixed = [("Path", path), ("X-RequestId", request_id)]
    if content_type is not None:
        fixed.append(("Content-Type", content_type))
    assert msg == TextMessage(path, request_id, (*fixed, *extras), body)


@given(
    ascii_paths,
    st.one_of(st.none(), request_ids),
    st.lists(st.tuples(header_names, ascii_values), max_size=5),
    st.binary(max_size=4000),
)
def test_round_trip_binary(
    path: str, request_id: str | None, extras: list[tuple[str, str]], payload: bytes
) -> None:
    """encode_binary then decode_binary returns the same path, request id, headers and payload."""
    if request_id is None:
        path = Path.SPEECH_CONFIG  # the only path allowed without a request id
    msg = decode_binary(encode_binary(path, request_id, payload, extra_headers=extras))
    fixed = [("Path", path)] + ([] if request_id is None else [("X-RequestId", request_id)])
    assert msg == BinaryMessage(path, request_id, (*fixed, *extras), payload)


@given(text_values, st.sampled_from(["\r", "\n", "\r\n", "\r\nPath:evil\r\n"]), text_values)
def test_encoders_reject_line_breaks_anywhere(before: str, brk: str, after: str) -> None:
    """A CR or LF anywhere in a path, request id or header value raises ValueError."""
    value = before + brk + after
    with pytest.raises(ValueError):  # noqa: PT011 - the message depends on the field
        encode_text(value, RID, "")
    with pytest.raises(ValueError):  # noqa: PT011
        encode_text("audio", value, "")
    with pytest.raises(ValueError):  # noqa: PT011
        encode_text("audio", RID, "", extra_headers=[("X-A", value)])
    with pytest.raises(ValueError):  # noqa: PT011
        encode_binary("audio", RID, b"", extra_headers=[("X-A", value)])
    with pytest.raises(ValueError):  # noqa: PT011
        encode_binary("audio", RID, b"", extra_headers=[(value or "X", "1")])


@given(header_names, header_names)
def test_encoders_reject_colon_in_name(before: str, after: str) -> None:
    """A colon in a header name raises ValueError, since it would move the name/value split."""
    with pytest.raises(ValueError, match="header name"):
        encode_text("audio", RID, "", extra_headers=[(f"{before}:{after}", "1")])


# --------------------------------------------------------------------------- constants and helpers


def test_path_values() -> None:
    """Path holds exactly the USP paths the gateway and emulator use."""
    assert [p.value for p in Path] == [
        "speech.config",
        "speech.context",
        "audio",
        "telemetry",
        "turn.start",
        "turn.end",
        "speech.startDetected",
        "speech.endDetected",
        "speech.hypothesis",
        "speech.fragment",
        "speech.phrase",
    ]


def test_recognition_status_values() -> None:
    """RecognitionStatus holds exactly the statuses both SDKs understand (protocol.md §3.1)."""
    assert [s.value for s in RecognitionStatus] == [
        "Success",
        "NoMatch",
        "InitialSilenceTimeout",
        "BabbleTimeout",
        "Error",
        "EndOfDictation",
        "TooManyRequests",
        "BadRequest",
        "Forbidden",
        "ServiceUnavailable",
    ]


def test_new_request_id_is_native_style() -> None:
    """new_request_id returns distinct 32-character lowercase hex ids the decoder accepts."""
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    for rid in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert decode_text(encode_text("audio", rid, "")).request_id == rid


@pytest.mark.parametrize(
    ("n", "sample_rate", "block_align", "ticks"),
    [
        (0, 16000, 2, 0),
        (3200, 16000, 2, 1_000_000),  # the native SDK's 100 ms chunk
        (32000, 16000, 2, 10_000_000),
        (1, 16000, 2, 312),  # rounded down
        (8000, 8000, 1, 10_000_000),
        (192000, 48000, 4, 10_000_000),
    ],
)
def test_ticks_from_bytes(n: int, sample_rate: int, block_align: int, ticks: int) -> None:
    """ticks_from_bytes converts a PCM byte count to 100-ns ticks, rounding down."""
    assert ticks_from_bytes(n, sample_rate, block_align) == ticks


@pytest.mark.parametrize(
    ("n", "sample_rate", "block_align"), [(-1, 16000, 2), (1, 0, 2), (1, 1, 0)]
)
def test_ticks_from_bytes_rejects_bad_arguments(n: int, sample_rate: int, block_align: int) -> None:
    """A negative byte count or a non-positive rate or block size raises ValueError."""
    with pytest.raises(ValueError, match="positive"):
        ticks_from_bytes(n, sample_rate, block_align)
