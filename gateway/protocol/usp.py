"""USP message codec: WebSocket text/binary message ⇄ typed message, without any I/O.

The WebSocket layer (aiohttp) hands over whole messages; this module only splits headers from
body or payload, validates the headers the protocol requires (protocol.md §2.1) and builds
service messages with the exact header casing the native SDK insists on (protocol.md §0.4).
Every malformed input becomes a `UspError` carrying the close code to answer with (§5.2).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, TypeAlias

from gateway.errors import CloseCode, UspError

__all__ = [
    "DEFAULT_LIMITS",
    "TICKS_PER_SECOND",
    "BinaryHead",
    "BinaryMessage",
    "HeaderName",
    "Headers",
    "Path",
    "RecognitionStatus",
    "TextMessage",
    "UspLimits",
    "UspMessage",
    "decode_binary",
    "decode_binary_head",
    "decode_text",
    "encode_binary",
    "encode_text",
    "new_request_id",
    "ticks_from_bytes",
]


class Path(StrEnum):
    """Values of the `Path` header used by the gateway and the emulator."""

    SPEECH_CONFIG = "speech.config"
    SPEECH_CONTEXT = "speech.context"
    AUDIO = "audio"
    TELEMETRY = "telemetry"
    TURN_START = "turn.start"
    TURN_END = "turn.end"
    SPEECH_START_DETECTED = "speech.startDetected"
    SPEECH_END_DETECTED = "speech.endDetected"
    SPEECH_HYPOTHESIS = "speech.hypothesis"
    SPEECH_FRAGMENT = "speech.fragment"
    SPEECH_PHRASE = "speech.phrase"


class RecognitionStatus(StrEnum):
    """`RecognitionStatus` values of a `speech.phrase` body (protocol.md §3.1)."""

    SUCCESS = "Success"
    NO_MATCH = "NoMatch"
    INITIAL_SILENCE_TIMEOUT = "InitialSilenceTimeout"
    BABBLE_TIMEOUT = "BabbleTimeout"
    ERROR = "Error"
    END_OF_DICTATION = "EndOfDictation"
    TOO_MANY_REQUESTS = "TooManyRequests"
    BAD_REQUEST = "BadRequest"
    FORBIDDEN = "Forbidden"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"


class HeaderName(StrEnum):
    """Header names in the SDKs' exact case; the native SDK reads them case-sensitively."""

    PATH = "Path"
    REQUEST_ID = "X-RequestId"
    CONTENT_TYPE = "Content-Type"
    TIMESTAMP = "X-Timestamp"
    STREAM_ID = "X-StreamId"


@dataclass(frozen=True, slots=True)
class UspLimits:
    """Size bounds checked before parsing, so a hostile peer cannot cause unbounded work."""

    max_header_bytes: int = 8192  # headers block of one message (the legacy protocol's limit)
    max_text_bytes: int = 1 << 20  # whole text message, counted in UTF-8 bytes
    max_binary_bytes: int = 1 << 16  # whole binary message

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_text_bytes", "max_binary_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"UspLimits.{name} must be positive")


DEFAULT_LIMITS = UspLimits()

Headers: TypeAlias = tuple[tuple[str, str], ...]


def _lookup(headers: Headers, name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A decoded text message.

    `headers` holds every header in order: names as sent, values without surrounding spaces.
    """

    path: str
    request_id: str | None
    headers: Headers
    body: str

    def header(self, name: str) -> str | None:
        """The value of the first header called `name` (case-insensitive), or None."""
        return _lookup(self.headers, name)


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A decoded binary message; an empty `payload` on `audio` ends the turn's audio.

    `headers` holds every header in order: names as sent, values without surrounding spaces.
    """

    path: str
    request_id: str | None
    headers: Headers
    payload: bytes

    def header(self, name: str) -> str | None:
        """The value of the first header called `name` (case-insensitive), or None."""
        return _lookup(self.headers, name)


class BinaryHead(NamedTuple):
    """What a relay needs of a binary message: its Path and X-RequestId, and where its
    payload starts in the frame (`frame[payload_start:]`, never copied). A tuple, not a
    dataclass: it is made for every audio frame."""

    path: str
    request_id: str | None
    payload_start: int


UspMessage: TypeAlias = TextMessage | BinaryMessage

_CRLF = "\r\n"
_BLANK_LINE = "\r\n\r\n"
_MAX_REQUEST_ID = 64
# RFC 9110 token characters: what an encoder may put in a header name.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def _is_request_id(value: str) -> bool:
    # isalnum() alone would accept non-ASCII letters and digits, hence isascii() first.
    return (
        0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and value.replace("-", "a").isalnum()
    )


def _utf8_len(text: str) -> int:
    # CPython knows whether a str is ASCII without scanning it, so the common case costs nothing.
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _parse_headers(
    lines: Sequence[str], kind: str, *, keep: bool = True
) -> tuple[Headers, str, str | None]:
    """Validate header lines and pick out Path and X-RequestId; `kind` only words the errors.

    With `keep=False` every line is validated all the same but the headers are not
    collected (the returned tuple is empty): the relay's per-frame path needs only two.
    """
    headers: list[tuple[str, str]] = []
    path: str | None = None
    request_id: str | None = None
    for line in lines:
        # Rejects control characters, stray CR/LF and (text frames) lone surrogates in one pass.
        if not line.isprintable():
            raise UspError(f"{kind} headers contain a control or non-printable character")
        name, colon, value = line.partition(":")
        if not colon:
            raise UspError(f"{kind} header line without a colon")
        if not name:
            raise UspError(f"{kind} header line with an empty name")
        value = value.strip(" ")
        key = name.lower()
        if key == "path":
            if path is not None:
                raise UspError("duplicate Path header")
            path = value
        elif key == "x-requestid":
            if request_id is not None:
                raise UspError("duplicate X-RequestId header")
            request_id = value
        if keep:
            headers.append((name, value))
    if not path:
        raise UspError("missing Path header")
    if request_id is None:
        # The native SDK sends speech.config without a request id (protocol.md §2.2).
        if path.lower() != Path.SPEECH_CONFIG:
            raise UspError("missing X-RequestId header")
    elif not _is_request_id(request_id):
        raise UspError("X-RequestId must be 1-64 ASCII letters, digits or '-'")
    return tuple(headers), path, request_id


def decode_text(frame: str, limits: UspLimits = DEFAULT_LIMITS) -> TextMessage:
    """Decode a text message `Name:value\\r\\n...\\r\\n\\r\\nbody`; raise UspError if malformed."""
    size = len(frame)
    # Each character is 1-4 UTF-8 bytes: only encode (to count) when the bound is ambiguous.
    if size > limits.max_text_bytes or (
        size * 4 > limits.max_text_bytes and _utf8_len(frame) > limits.max_text_bytes
    ):
        raise UspError(
            f"text message exceeds {limits.max_text_bytes} bytes", CloseCode.MESSAGE_TOO_BIG
        )
    end = frame.find(_BLANK_LINE)
    if end < 0:
        raise UspError("text message without the blank line that ends its headers")
    head = frame[:end]
    if _utf8_len(head) > limits.max_header_bytes:
        raise UspError(f"text headers exceed {limits.max_header_bytes} bytes")
    headers, path, request_id = _parse_headers(head.split(_CRLF) if head else (), "text")
    return TextMessage(path, request_id, headers, frame[end + len(_BLANK_LINE) :])


def decode_binary(frame: bytes, limits: UspLimits = DEFAULT_LIMITS) -> BinaryMessage:
    """Decode `[uint16 BE N][N ASCII header bytes][payload]`; raise UspError if malformed.

    The payload is returned as a slice and never inspected: it is audio.
    """
    headers, path, request_id, start = _decode_binary(frame, limits, keep=True)
    return BinaryMessage(path, request_id, headers, frame[start:])


def decode_binary_head(frame: bytes, limits: UspLimits = DEFAULT_LIMITS) -> BinaryHead:
    """`decode_binary`'s checks and errors, exactly, without copying the payload or
    collecting the headers: only the USP header is read, the audio is never touched."""
    _headers, path, request_id, start = _decode_binary(frame, limits, keep=False)
    return BinaryHead(path, request_id, start)


def _decode_binary(
    frame: bytes, limits: UspLimits, *, keep: bool
) -> tuple[Headers, str, str | None, int]:
    size = len(frame)
    if size > limits.max_binary_bytes:
        raise UspError(
            f"binary message exceeds {limits.max_binary_bytes} bytes", CloseCode.MESSAGE_TOO_BIG
        )
    if size < 2:
        raise UspError("binary message too short for its header length")
    head_len = (frame[0] << 8) | frame[1]
    if head_len > size - 2:
        raise UspError(f"binary header length {head_len} exceeds the {size - 2} bytes that follow")
    if head_len > limits.max_header_bytes:
        raise UspError(f"binary headers exceed {limits.max_header_bytes} bytes")
    raw = frame[2 : 2 + head_len]
    if not raw.isascii():
        raise UspError("binary headers are not ASCII")
    head = raw.decode("ascii")
    # The JS SDK ends every header with CRLF, the native one not the last: accept both.
    if head.endswith(_CRLF):
        head = head[: -len(_CRLF)]
    lines = head.split(_CRLF) if head else ()
    headers, path, request_id = _parse_headers(lines, "binary", keep=keep)
    return headers, path, request_id, 2 + head_len


def _check_header(name: str, value: str, *, ascii_only: bool) -> None:
    # Stricter than the decoder on purpose: whatever we encode must decode to the same message.
    if not name or not all(c in _TOKEN_CHARS for c in name):
        raise ValueError(f"invalid header name {name!r}")
    if not value.isprintable() or value != value.strip(" "):
        raise ValueError(
            f"header {name} value must be printable without CR/LF or surrounding spaces"
        )
    if ascii_only and not value.isascii():
        raise ValueError(f"binary header {name} value must be ASCII")


def _header_lines(
    path: str,
    request_id: str | None,
    content_type: str | None,
    extra_headers: Sequence[tuple[str, str]],
    *,
    ascii_only: bool,
) -> list[str]:
    if not path:
        raise ValueError("path must not be empty")
    if request_id is None:
        if path != Path.SPEECH_CONFIG:
            raise ValueError("only speech.config may omit the request id")
    elif not _is_request_id(request_id):
        raise ValueError("request id must be 1-64 ASCII letters, digits or '-'")
    fixed: list[tuple[str, str]] = [(HeaderName.PATH, path)]
    if request_id is not None:
        fixed.append((HeaderName.REQUEST_ID, request_id))
    if content_type is not None:
        fixed.append((HeaderName.CONTENT_TYPE, content_type))
    taken = {name.lower() for name, _ in fixed}
    for name, _ in extra_headers:
        if name.lower() in taken:
            raise ValueError(f"extra header {name!r} repeats a header the encoder writes")
    lines = []
    for name, value in (*fixed, *extra_headers):
        _check_header(name, value, ascii_only=ascii_only)
        lines.append(f"{name}:{value}")
    return lines


def encode_text(
    path: str,
    request_id: str | None,
    body: str,
    *,
    content_type: str | None = "application/json; charset=utf-8",
    extra_headers: Sequence[tuple[str, str]] = (),
) -> str:
    """Build a text message: `Path`, `X-RequestId`, `Content-Type`, extras, blank line, body.

    Raises ValueError for a header that could inject lines or would not decode back.
    """
    lines = _header_lines(path, request_id, content_type, extra_headers, ascii_only=False)
    return _CRLF.join(lines) + _BLANK_LINE + body


def encode_binary(
    path: str,
    request_id: str | None,
    payload: bytes,
    *,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Build a binary message with CRLF-terminated ASCII headers `Path`, `X-RequestId`, extras.

    Raises ValueError for a header that could inject lines, is not ASCII or does not fit.
    """
    lines = _header_lines(path, request_id, None, extra_headers, ascii_only=True)
    head = "".join(line + _CRLF for line in lines).encode("ascii")
    if len(head) > 0xFFFF:
        raise ValueError("binary headers exceed the 65535 bytes a 2-byte length can announce")
    return len(head).to_bytes(2, "big") + head + payload


def new_request_id() -> str:
    """A fresh request id in the native SDK's form: 32 lowercase hex digits."""
    return uuid.uuid4().hex


TICKS_PER_SECOND = 10_000_000  # USP offsets and durations are 100-ns ticks


def ticks_from_bytes(n: int, sample_rate: int = 16000, block_align: int = 2) -> int:
    """The duration of `n` PCM bytes in 100-ns ticks, rounded down."""
    if n < 0 or sample_rate < 1 or block_align < 1:
        raise ValueError("need n >= 0 and positive sample_rate and block_align")
    return n * TICKS_PER_SECOND // (sample_rate * block_align)


def status_phrase_body(status: RecognitionStatus, offset: int = 0, duration: int = 0) -> str:
    """The body of a `speech.phrase` that carries only a status (NoMatch, acks, errors)."""
    return (
        f'{{"RecognitionStatus":"{status.value}","Offset":{int(offset)},'
        f'"Duration":{int(duration)}}}'
    )
