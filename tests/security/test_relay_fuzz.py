"""Fuzzing the USP relay state machine (`RelaySession`) without sockets.

Arbitrary sequences of client frames, backend frames, shadow frames and connection events
(well-formed, nearly well-formed and garbage), with and without small session limits, are
fed to one session. Whatever arrives, nothing raises but a `UspError` for a client frame
(older relays raise it, newer ones answer with `CloseClient`), always with a close code a
server may send; every command is one the driver knows, frames are forwarded as the very
objects received, the relay's own frames decode, close frames are sendable, and every
record it emits is valid, pseudonymous and obeys the text privacy setting.

The codec itself is fuzzed in tests/protocol/test_usp.py; here only what that file leaves
out: text with lone surrogates and frames built from USP fragments with binary noise.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from usp_strategies import (
    REQUEST_IDS,
    client_binaries,
    client_texts,
    upstream_texts,
)

from gateway.errors import CloseCode, Limit, UspError, is_sendable_close_code
from gateway.outcomes.privacy import PSEUDONYM_LENGTH, TextPrivacy
from gateway.outcomes.record import OutcomeRecord, Role
from gateway.protocol.usp import (
    Path,
    UspLimits,
    decode_binary,
    decode_text,
    encode_text,
)
from gateway.session.relay import (
    CloseClient,
    CloseUpstream,
    Command,
    Emit,
    LimitHit,
    RelaySession,
    SessionLimits,
    ToClient,
    ToUpstream,
)
from gateway.session.taps import RoleFacts, SessionFacts

UNIT = "0123456789abcdef0123456789abcdef"  # a pseudonym, as the I/O layer passes it
SHADOWS = ("s1", "s2")
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def facts(privacy: TextPrivacy) -> SessionFacts:
    return SessionFacts(
        experiment="exp",
        phase="p-1",
        client="app",
        unit=UNIT,
        unit_source="query",
        session_id="s" * 32,
        protocol="usp",
        mode="conversation",
        locale="en-us",
        forced=False,
        text_privacy=privacy,
        privacy_key=b"k" * 32,
    )


close_codes = st.one_of(
    st.integers(0, 5999), st.sampled_from([1000, 1002, 1006, 1007, 1011, 1015, 4429])
)
events = st.one_of(
    st.tuples(st.just("client_text"), client_texts),
    st.tuples(st.just("client_binary"), client_binaries),
    st.tuples(st.just("upstream_text"), upstream_texts),
    st.tuples(st.just("upstream_binary"), st.binary(max_size=100)),
    st.tuples(st.just("upstream_closed"), st.tuples(close_codes, st.text(max_size=130))),
    st.tuples(st.just("upstream_rejected"), st.tuples(st.text(max_size=20), st.text())),
    st.tuples(st.just("upstream_unavailable"), st.tuples(st.text(max_size=20), st.text())),
    st.tuples(st.just("shadow_text"), st.tuples(st.sampled_from(SHADOWS), upstream_texts)),
    st.tuples(st.just("shadow_dropped"), st.tuples(st.sampled_from(SHADOWS), st.integers(0, 9))),
    st.tuples(st.just("shadow_failed"), st.tuples(st.sampled_from(SHADOWS), st.text(max_size=20))),
    st.tuples(st.just("client_closed"), st.none()),
    st.tuples(st.just("client_too_big"), st.integers(1, 1 << 20)),
    st.tuples(st.just("check_deadlines"), st.none()),
)
# Small bounds, so that sequences of a few frames reach them; or none at all.
session_limits = st.one_of(
    st.just(SessionLimits()),
    st.builds(
        SessionLimits,
        usp=st.builds(
            UspLimits,
            max_header_bytes=st.integers(40, 8192),
            max_text_bytes=st.integers(100, 1 << 20),
            max_binary_bytes=st.integers(100, 1 << 16),
        ),
        max_turn_audio_bytes=st.integers(0, 2000),
        max_session_audio_bytes=st.integers(0, 5000),
        max_session_s=st.floats(0.0, 10.0),
        idle_timeout_s=st.floats(0.0, 5.0),
    ),
)


# -- the invariants ------------------------------------------------------------------------


def check_record(record: OutcomeRecord, privacy: TextPrivacy) -> None:
    """A record the sink can store: it survives its own JSON round trip unchanged, carries
    the pseudonym and never more text than the privacy setting allows."""
    assert OutcomeRecord.from_json(record.to_json()) == record
    assert record.unit == UNIT
    assert len(record.unit) == PSEUDONYM_LENGTH
    if privacy != "text":
        assert record.text is None
    if privacy != "hash":
        assert record.text_sha256 is None
    if record.role is Role.SHADOW:
        assert record.variant in SHADOWS


def check_commands(
    commands: list[Command], kind: str, frame: object, privacy: TextPrivacy
) -> list[str]:
    """Check each command; returns the relay's own frames to the client."""
    own: list[str] = []
    for command in commands:
        match command:
            case ToUpstream(frame=sent):
                assert kind in ("client_text", "client_binary"), command
                assert sent is frame  # forwarded unchanged: the very object received
            case ToClient(frame=sent):
                if sent is frame and kind in ("upstream_text", "upstream_binary"):
                    continue
                # Otherwise the relay speaks itself (an Error phrase): it must be valid USP.
                assert isinstance(sent, str), command
                decode_text(sent)
                own.append(sent)
            case CloseClient(code=code, reason=reason):
                assert is_sendable_close_code(code), command
                assert len(reason.encode("utf-8", "surrogatepass")) <= MAX_CLOSE_REASON_BYTES
            case CloseUpstream(code=code):
                assert is_sendable_close_code(code), command
            case Emit(record=record):
                check_record(record, privacy)
            case LimitHit(limit=limit, detail=detail):
                assert isinstance(limit, Limit), command
                assert detail, command
            case _:
                raise AssertionError(f"unknown command {command!r}")
    return own


def check_usp_error(error: UspError, kind: str) -> None:
    """Only the client's frames may be refused, and with a close code and reason to send."""
    assert kind in ("client_text", "client_binary"), (kind, error)
    assert error.close_code in (CloseCode.PROTOCOL_ERROR, CloseCode.MESSAGE_TOO_BIG)
    assert len(error.reason.encode()) <= MAX_CLOSE_REASON_BYTES


def feed(relay: RelaySession, kind: str, value: Any, now: float) -> list[Command]:
    match kind:
        case "client_text":
            return relay.client_text(value, now)
        case "client_binary":
            return relay.client_binary(value, now)
        case "upstream_text":
            return relay.upstream_text(value, now)
        case "upstream_binary":
            return relay.upstream_binary(value)
        case "upstream_closed":
            return relay.upstream_closed(*value)
        case "upstream_rejected":
            return relay.upstream_rejected(*value)
        case "upstream_unavailable":
            return relay.upstream_unavailable(*value)
        case "shadow_text":
            return relay.shadow_text(value[0], value[1], now)
        case "shadow_dropped":
            relay.shadow_dropped(*value)
            return []
        case "shadow_failed":
            return relay.shadow_failed(value[0], value[1], "detail")
        case "client_closed":
            return relay.client_closed()
        case "client_too_big":
            return relay.client_too_big(value)
        case "check_deadlines":
            return relay.check_deadlines(now)
    raise AssertionError(kind)


INFINITE_CONTINUATION = encode_text(
    Path.SPEECH_CONTEXT,
    REQUEST_IDS[0],
    '{"continuation":{"audio":{"streams":{"1":{"offset":Infinity}}}}}',
)
NEGATIVE_CONTINUATION = encode_text(
    Path.SPEECH_CONTEXT,
    REQUEST_IDS[0],
    '{"continuation":{"audio":{"streams":{"1":{"offset":-50000000}}}}}',
)
SUCCESS = encode_text(
    Path.SPEECH_PHRASE,
    REQUEST_IDS[0],
    '{"RecognitionStatus":"Success","Offset":0,"Duration":10000000,"DisplayText":"hello"}',
)


@FUZZ
@given(
    sequence=st.lists(st.tuples(events, st.floats(0.0, 2.0)), max_size=25),
    privacy=st.sampled_from(["text", "hash", "none"]),
    limits=session_limits,
)
@example(
    sequence=[(("client_text", INFINITE_CONTINUATION), 0.0)],
    privacy="text",
    limits=SessionLimits(),
)
def test_relay_session_survives_any_sequence_of_events(
    sequence: list[tuple[tuple[str, Any], float]], privacy: TextPrivacy, limits: SessionLimits
) -> None:
    """Any sequence of events: nothing raises but UspError for a client frame, with a
    sendable close code; every command is known and well-formed; every record is valid."""
    now = 1000.0
    relay = RelaySession(
        facts(privacy),
        RoleFacts(Role.PRIMARY, "a", "alpha"),
        [RoleFacts(Role.SHADOW, name, "beta") for name in SHADOWS],
        limits=limits,
        started=now,
    )
    for (kind, value), elapsed in sequence:
        now += elapsed
        try:
            commands = feed(relay, kind, value, now)
        except UspError as error:
            check_usp_error(error, kind)
            return  # the driver closes the client: the session ends here
        check_commands(commands, kind, value, privacy)


def test_a_client_continuation_offset_cannot_break_the_relay_or_its_records() -> None:
    """A speech.context whose continuation offset is infinite or negative is forwarded like
    any other, and the phrase the backend then answers still yields a valid record."""
    for context in (INFINITE_CONTINUATION, NEGATIVE_CONTINUATION):
        relay = RelaySession(facts("text"), RoleFacts(Role.PRIMARY, "a", "alpha"))
        assert relay.client_text(context, 1.0) == [ToUpstream(context, starts_turn=True)]
        emitted = [c for c in relay.upstream_text(SUCCESS, 2.0) if isinstance(c, Emit)]
        assert len(emitted) == 1, context
        check_record(emitted[0].record, "text")


# -- the codec, where tests/protocol/test_usp.py does not reach -------------------------------

FRAGMENTS = ["Path:", "X-RequestId:", REQUEST_IDS[0], "audio", "\r\n", ":", " ", "\x00", "é"]
usp_noise = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=20).map(
    "".join
)


@FUZZ
@given(
    st.one_of(
        st.text(st.characters(exclude_categories=()), max_size=200),  # lone surrogates too
        st.builds(lambda head, body: f"{head}\r\n\r\n{body}", usp_noise, st.text(max_size=20)),
    )
)
def test_decode_text_of_any_string_raises_only_usp_error(frame: str) -> None:
    """Any str, lone surrogates included (aiohttp never makes them, a caller might), decodes
    or raises UspError with a sendable close code."""
    try:
        message = decode_text(frame)
    except UspError as error:
        check_usp_error(error, "client_text")
    else:
        assert frame.endswith(message.body)


@FUZZ
@given(usp_noise, st.binary(max_size=64), st.integers(-2, 2))
def test_decode_binary_of_usp_like_bytes_raises_only_usp_error(
    head: str, noise: bytes, skew: int
) -> None:
    """USP-like header text followed by binary noise, behind a nearly right length prefix,
    decodes or raises UspError with a sendable close code."""
    raw = head.encode("utf-8", "surrogatepass") + noise
    length = max(0, min(0xFFFF, len(raw) + skew))
    frame = length.to_bytes(2, "big") + raw
    try:
        message = decode_binary(frame)
    except UspError as error:
        check_usp_error(error, "client_binary")
    else:
        assert frame.endswith(message.payload)
