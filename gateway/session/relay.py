"""The USP relay of one client connection as a state machine: frames in, commands out.

`gateway.server.relay.usp` drives it: every frame from the client, from the primary backend and
from each shadow is handed here with its arrival time, and the returned commands say what
to send where. Frames are forwarded unchanged (the original `str`/`bytes` objects) and in
order; the relay only reads them, to follow the turns and tap outcomes:

    client  ──frame──▶ RelaySession ──ToUpstream──▶ primary (and each shadow, teed)
    primary ──frame──▶ RelaySession ──ToClient────▶ client, plus Emit(record) per utterance
    shadow  ──frame──▶ RelaySession ──Emit(record)   (the client never sees a shadow)

When the primary cannot be reached the relay answers each turn itself with an `Error`
phrase (protocol.md §5.3) and records one session failure.

The relay also enforces the session's limits (`SessionLimits`, from `gateway.limits`): the
codec's message and header bounds, audio bytes per turn and per session (an integer
subtraction and a comparison per audio frame), and two deadlines, idle and total duration,
which the driver asks about once per `next_deadline` (no timer per frame). A limit hit
ends the session: the client gets the answer the SDKs map best (below), the relay stops
forwarding, and one `session_failure` record plus a `LimitHit` command are returned.

    message or header too big     close 1009 / 1002   (native SDK: ConnectionFailure)
    audio per turn or session     close 1007          (SDK: BadRequest, no retry)
    idle or duration deadline     close 1000 with the service's words (SDK: reconnects)

Every close of the client comes before the backend's in the commands: closing the backend
ends its pump, and the driver then ends the session.

The session's lifecycle is one `Lifecycle` value, changed only by `RelaySession._become`
along `TRANSITIONS`; the handlers of the client's and the primary's events start from it:

    RELAYING ──upstream_unavailable──▶ UNAVAILABLE
       │                                   │
       └──limit, client violation, drain───┴──▶ ENDED   (nothing is relayed any more)
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from gateway.errors import CloseCode, LifecycleError, Limit, UspError, is_sendable_close_code
from gateway.logging import get_logger
from gateway.outcomes.record import OutcomeRecord
from gateway.protocol.usp import (
    DEFAULT_LIMITS,
    Path,
    RecognitionStatus,
    UspLimits,
    decode_binary_head,
    decode_text,
    encode_text,
    status_phrase_body,
)
from gateway.session.capture import SessionCapture
from gateway.session.taps import ResultTap, RoleFacts, SessionFacts, Turn
from gateway.session.turns import AudioTimeline, continuation_offset

log = get_logger(__name__)

# error_code of a session the gateway closed because it is shutting down (drain).
GATEWAY_SHUTDOWN = "gateway_shutdown"
# Turns are kept a while after they end: a slow shadow may still report on them.
KEPT_TURNS = 8
_SPEECH_CONTEXT = Path.SPEECH_CONTEXT.value
_AUDIO = Path.AUDIO.value


class Lifecycle(Enum):
    """Where a relay session is in its life (the module docstring draws the transitions)."""

    RELAYING = "relaying"  # frames pass between the client and the primary
    UNAVAILABLE = "unavailable"  # the primary could not be reached: the relay answers turns
    ENDED = "ended"  # the gateway ended it (a limit, a client's protocol error, a drain)


# The transitions a session may make; any other is a bug in the relay.
TRANSITIONS: Mapping[Lifecycle, frozenset[Lifecycle]] = MappingProxyType(
    {
        Lifecycle.RELAYING: frozenset({Lifecycle.UNAVAILABLE, Lifecycle.ENDED}),
        Lifecycle.UNAVAILABLE: frozenset({Lifecycle.ENDED}),
        Lifecycle.ENDED: frozenset(),
    }
)
# Module names for the members: the handlers test them per frame, and in Python 3.11 a
# member read through its class costs four times as much as a global.
_RELAYING = Lifecycle.RELAYING
_UNAVAILABLE = Lifecycle.UNAVAILABLE
_ENDED = Lifecycle.ENDED


def transition(current: Lifecycle, target: Lifecycle) -> Lifecycle:
    """`target`, if a session may go there from `current`; LifecycleError otherwise."""
    if target not in TRANSITIONS[current]:
        raise LifecycleError(f"a relay session cannot go from {current.name} to {target.name}")
    return target


@dataclass(frozen=True, slots=True)
class ToUpstream:
    """Send to the primary, and tee to every shadow (`starts_turn`: a speech.context)."""

    frame: str | bytes
    starts_turn: bool = False


@dataclass(frozen=True, slots=True)
class ToClient:
    frame: str | bytes


@dataclass(frozen=True, slots=True)
class CloseClient:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    code: int


@dataclass(frozen=True, slots=True)
class Emit:
    record: OutcomeRecord


@dataclass(frozen=True, slots=True)
class LimitHit:
    """A limit ended the session: the driver logs and counts it (its record is an Emit)."""

    limit: Limit
    detail: str


Command = ToUpstream | ToClient | CloseClient | CloseUpstream | Emit | LimitHit


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one session may use (`gateway.limits`); the defaults bound nothing but the
    codec's sizes, the driver passes the configured ones. Times are `time.monotonic()`."""

    usp: UspLimits = DEFAULT_LIMITS
    max_turn_audio_bytes: int = sys.maxsize
    max_session_audio_bytes: int = sys.maxsize
    max_session_s: float = math.inf
    idle_timeout_s: float = math.inf


UNLIMITED = SessionLimits()


class RelaySession:
    def __init__(
        self,
        facts: SessionFacts,
        primary: RoleFacts,
        shadows: Sequence[RoleFacts] = (),
        *,
        limits: SessionLimits = UNLIMITED,
        started: float = 0.0,
        capture: SessionCapture | None = None,
    ) -> None:
        self._primary = ResultTap(facts, primary)
        # Only sampled sessions of consenting clients have one; the others pay a None check.
        self._capture = capture
        self._shadows = {role.variant or "": ResultTap(facts, role) for role in shadows}
        self._turns: OrderedDict[str, Turn] = OrderedDict()
        self._lifecycle = _RELAYING  # changed only by `_become`
        # Why the primary is UNAVAILABLE (error code, detail): data of that state, not its flag.
        self._unavailable: tuple[str, str] | None = None
        self._open_turn: str | None = None  # the primary's turn between turn.start and end
        self._limits = limits
        self._usp = limits.usp
        self._started = started  # when the session was admitted
        self._last_client = started  # when the client last sent a frame
        # Audio bytes: before the current turn, the current turn's budget (the turn limit or
        # what is left of the session's, whichever is less), and what is left of it.
        self._session_audio = 0
        self._turn_budget = min(limits.max_turn_audio_bytes, limits.max_session_audio_bytes)
        self._audio_left = self._turn_budget

    @property
    def lifecycle(self) -> Lifecycle:
        """Where the session is in its life."""
        return self._lifecycle

    @property
    def ended(self) -> bool:
        """Whether the gateway ended the session (nothing is relayed any more)."""
        return self._lifecycle is _ENDED

    def _become(self, target: Lifecycle) -> None:
        """The one place the lifecycle changes; LifecycleError for a transition not allowed."""
        self._lifecycle = transition(self._lifecycle, target)

    # -- the client ------------------------------------------------------------------------

    def client_text(self, frame: str, now: float) -> list[Command]:
        lifecycle = self._lifecycle  # read once: below, only a return ends the session
        if lifecycle is _ENDED:
            return []
        self._last_client = now
        try:
            message = decode_text(frame, self._usp)
        except UspError as exc:
            return self._client_violation(exc, _text_header_bytes(frame))
        starts_turn = message.path.lower() == _SPEECH_CONTEXT.lower()
        if starts_turn and message.request_id is not None:
            base = continuation_offset(message.body)
            self._begin_turn(message.request_id, base, now)
        if lifecycle is _UNAVAILABLE:
            return self._answer_unavailable(message.request_id) if starts_turn else []
        return [ToUpstream(frame, starts_turn)]

    def client_binary(self, frame: bytes, now: float) -> list[Command]:
        commands = self.forward_binary(frame, now)
        return [ToUpstream(frame)] if commands is None else commands

    def forward_binary(self, frame: bytes, now: float) -> list[Command] | None:
        """`client_binary` for the hot path: None stands for its usual answer, forward the
        frame unchanged (`[ToUpstream(frame)]`), so an audio frame allocates no command.
        Only the USP header is decoded; the payload is neither copied nor read."""
        lifecycle = self._lifecycle  # read once: below, only a return ends the session
        if lifecycle is _ENDED:
            return []
        self._last_client = now
        try:
            path, request_id, start = decode_binary_head(frame, self._usp)
        except UspError as exc:
            return self._client_violation(exc, _binary_header_bytes(frame))
        if request_id is not None and path.lower() == _AUDIO:
            left = self._audio_left - (len(frame) - start)
            self._audio_left = left
            if left < 0:
                return self._audio_exceeded()
            turn = self._turns.get(request_id)
            if turn is not None:
                turn.timeline.add(memoryview(frame)[start:], now)
                if self._capture is not None:
                    try:
                        self._capture.audio(request_id, memoryview(frame)[start:])
                    except Exception:  # capture must never cost the session anything
                        self._capture_failed()
        if lifecycle is _UNAVAILABLE:
            return []
        return None

    def client_too_big(self, max_bytes: int) -> list[Command]:
        """The WebSocket layer refused a message over `max_bytes` and closed with 1009."""
        if self._lifecycle is _ENDED:
            return []
        self._become(_ENDED)
        detail = f"a message exceeds {max_bytes} bytes"
        return [CloseUpstream(CloseCode.NORMAL), *self._limit_hit(Limit.MESSAGE_SIZE, detail)]

    def client_closed(self) -> list[Command]:
        if self._lifecycle is not _RELAYING:  # no backend, or the gateway closed it
            return []
        return [CloseUpstream(CloseCode.NORMAL)]

    # -- deadlines ---------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When `check_deadlines` may next end the session: idle or total duration."""
        limits = self._limits
        return min(self._started + limits.max_session_s, self._last_client + limits.idle_timeout_s)

    def check_deadlines(self, now: float) -> list[Command]:
        """Close the session if it is past its duration or idle deadline (code 1000 and the
        service's own words: the SDKs reconnect as they do after the service's closes)."""
        if self._lifecycle is _ENDED:
            return []
        limits = self._limits
        if now >= self._started + limits.max_session_s:
            limit = Limit.SESSION_DURATION
            reason = _duration_reason("connection", limits.max_session_s)
        elif now >= self._last_client + limits.idle_timeout_s:
            limit = Limit.IDLE_TIMEOUT
            reason = _duration_reason("connection idle", limits.idle_timeout_s)
        else:
            return []
        self._become(_ENDED)
        return [
            CloseClient(CloseCode.NORMAL, reason),
            CloseUpstream(CloseCode.NORMAL),
            *self._limit_hit(limit, reason, RecognitionStatus.ERROR),
        ]

    def shut_down(self, code: int, reason: str) -> list[Command]:
        """The gateway closes the session (a drain): the client gets `code` (1012, which the
        SDKs retry on another replica), the backend a normal close, and a turn cut off
        midway is recorded as a `gateway_shutdown` failure."""
        if self._lifecycle is _ENDED:
            return []
        self._become(_ENDED)
        commands: list[Command] = [CloseClient(code, reason), CloseUpstream(CloseCode.NORMAL)]
        if self._open_turn is not None:
            status = RecognitionStatus.ERROR.value
            record = self._primary.failure(status, GATEWAY_SHUTDOWN, reason)
            if record is not None:
                commands.append(Emit(record))
        return commands

    # -- the primary backend -----------------------------------------------------------------

    def upstream_text(self, frame: str, now: float) -> list[Command]:
        if self._lifecycle is _ENDED:  # the client's turn was answered by the gateway
            return []
        return [ToClient(frame), *self.observe_upstream_text(frame, now)]

    def observe_upstream_text(self, frame: str, now: float) -> list[Command]:
        """The tap's half of `upstream_text` (turn tracking, the outcome record), for a
        driver that forwards the frame to the client first: parsing a phrase and building
        its record then adds nothing to the latency the client sees. Only Emit commands."""
        record = self._observe(self._primary, frame, now, primary=True)
        return [Emit(record)] if record is not None else []

    def upstream_binary(self, frame: bytes) -> list[Command]:
        return [] if self._lifecycle is _ENDED else [ToClient(frame)]

    def upstream_closed(self, code: int, reason: str) -> list[Command]:
        """The primary closed: the client gets the same code and reason (§5.3, 2).

        A connection lost without a close frame (1006, or no code at all) cannot be passed
        on: no close frame may carry it. The current turn is answered with an Error phrase
        instead, as for any failure the gateway detects itself (§5.3, 3). (The WebSocket
        driver, `gateway.server.relay.usp`, keeps only the record of these commands and drops
        the client's connection instead, as the backend dropped its own: §5.3, 8.)
        """
        if self._lifecycle is _ENDED:  # the gateway closed it
            return []
        if not is_sendable_close_code(code):
            return self._lost_upstream(code)
        commands: list[Command] = [CloseClient(code, reason)]
        if code != CloseCode.NORMAL:
            record = self._primary.failure(
                RecognitionStatus.ERROR.value, f"upstream_close_{code}", reason[:200] or None
            )
            if record is not None:
                self._captured(record)
                commands.append(Emit(record))
        return commands

    def upstream_rejected(self, error_code: str, detail: str) -> list[Command]:
        """The primary refused the upgrade; the driver answers the client with its status."""
        record = self._primary.failure(RecognitionStatus.ERROR.value, error_code, detail)
        return [Emit(record)] if record is not None else []

    def upstream_unavailable(self, error_code: str, detail: str) -> list[Command]:
        """The primary could not be reached: answer turns with Error from now on. Its
        failure record is returned in any state (once per session, as every failure)."""
        if self._lifecycle is _RELAYING:  # later, the session is over or already without it
            self._become(_UNAVAILABLE)
            self._unavailable = (error_code, detail)
            # No backend will ever place an utterance in its audio: none is buffered for it.
            capture, self._capture = self._capture, None
            if capture is not None:
                capture.release()
        record = self._primary.failure(RecognitionStatus.ERROR.value, error_code, detail)
        return [Emit(record)] if record is not None else []

    def _lost_upstream(self, code: int) -> list[Command]:
        detail = f"the backend connection was lost (close code {code})"
        commands: list[Command] = []
        if self._turns:  # the SDK's current turn: its last speech.context
            current = next(reversed(self._turns))
            started = self._open_turn == current
            commands += self._answer_status(current, RecognitionStatus.ERROR, started)
        commands.append(CloseClient(CloseCode.NORMAL, "the backend connection was lost"))
        record = self._primary.failure(RecognitionStatus.ERROR.value, "upstream_lost", detail)
        if record is not None:
            self._captured(record)
            commands.append(Emit(record))
        return commands

    # -- shadows ----------------------------------------------------------------------------

    def shadow_text(self, variant: str, frame: str, now: float) -> list[Command]:
        record = self._observe(self._shadows[variant], frame, now)
        return [Emit(record)] if record is not None else []

    def shadow_dropped(self, variant: str, frames: int = 1) -> None:
        self._shadows[variant].shadow_drops += frames

    def shadow_failed(self, variant: str, error_code: str, detail: str) -> list[Command]:
        record = self._shadows[variant].failure(RecognitionStatus.ERROR.value, error_code, detail)
        if record is not None:
            self._captured(record)
        return [Emit(record)] if record is not None else []

    # -- capture ----------------------------------------------------------------------------

    def _captured(self, record: OutcomeRecord) -> None:
        if self._capture is not None:
            try:
                self._capture.record(record)
            except Exception:  # capture must never cost the session anything
                self._capture_failed()

    def finish_capture(self) -> None:
        """The session and its shadows are over: the capture decides what still waited for
        a result and releases its audio."""
        if self._capture is not None:
            try:
                self._capture.finish()
            except Exception:
                self._capture_failed()

    def _capture_failed(self) -> None:
        log.exception("capture_failed")
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    # -- internals ---------------------------------------------------------------------------

    def _observe(
        self, tap: ResultTap, frame: str, now: float, *, primary: bool = False
    ) -> OutcomeRecord | None:
        try:
            message = decode_text(frame)
        except Exception:  # the tap only reads; a frame it cannot read still goes through
            return None
        if primary and message.path == Path.TURN_START:
            self._open_turn = message.request_id
        elif primary and message.path == Path.TURN_END:
            self._open_turn = None
        turn = self._turns.get(message.request_id) if message.request_id else None
        try:
            record = tap.observe(message, turn, now)
        except ValueError as exc:  # a record the backend's answer made invalid: lose it only
            log.warning("outcome_tap_failed", error=str(exc)[:200])
            return None
        if record is not None:
            self._captured(record)
        return record

    def _begin_turn(self, request_id: str, base: int | None, now: float) -> None:
        limits = self._limits
        self._session_audio += self._turn_budget - self._audio_left
        session_left = limits.max_session_audio_bytes - self._session_audio
        self._turn_budget = self._audio_left = min(limits.max_turn_audio_bytes, session_left)
        # Native SDKs state where a follow-up turn starts; otherwise it starts where the
        # primary's acknowledgements ended, which is where the JS SDK replays from.
        start = base if base is not None else self._primary.acked_ticks
        self._turns[request_id] = Turn(request_id, start, AudioTimeline())
        self._turns.move_to_end(request_id)
        if self._capture is not None:
            self._capture.begin_turn(request_id, start)
        while len(self._turns) > KEPT_TURNS:
            self._turns.popitem(last=False)

    def _answer_unavailable(self, request_id: str | None) -> list[Command]:
        return self._answer_status(request_id, RecognitionStatus.ERROR, turn_started=False)

    def _client_violation(self, exc: UspError, header_bytes: int) -> list[Command]:
        """A client message the codec refused: close with its code, and a limit hit if a
        size bound refused it (`header_bytes` is only computed on this path)."""
        self._become(_ENDED)
        commands: list[Command] = [
            CloseClient(exc.close_code, exc.reason),
            CloseUpstream(CloseCode.NORMAL),
        ]
        if exc.close_code == CloseCode.MESSAGE_TOO_BIG:
            commands += self._limit_hit(Limit.MESSAGE_SIZE, exc.reason)
        elif header_bytes > self._limits.usp.max_header_bytes:
            commands += self._limit_hit(Limit.USP_HEADER, exc.reason)
        else:
            log.info("client_protocol_error", reason=exc.reason, close_code=int(exc.close_code))
        return commands

    def _audio_exceeded(self) -> list[Command]:
        """Close with 1007 and the limit as the reason: both SDKs cancel with BadRequest
        (JS: BadRequestParameters) and do not retry. A BadRequest status phrase would be
        retried by the native SDK, five sessions for one hit (protocol.md §5.2)."""
        self._become(_ENDED)
        limits = self._limits
        turn_bytes = self._turn_budget - self._audio_left
        if turn_bytes > limits.max_turn_audio_bytes:
            limit = Limit.TURN_AUDIO
            detail = f"the turn's audio exceeds {limits.max_turn_audio_bytes} bytes"
        else:
            limit = Limit.SESSION_AUDIO
            detail = f"the session's audio exceeds {limits.max_session_audio_bytes} bytes"
        # The client first: its close must begin before the backend's ends a pump (see
        # usp_relay `_close_client`).
        commands: list[Command] = [
            CloseClient(CloseCode.INVALID_PAYLOAD, detail),
            CloseUpstream(CloseCode.NORMAL),
        ]
        return commands + self._limit_hit(limit, detail)

    def _limit_hit(
        self, limit: Limit, detail: str, status: RecognitionStatus = RecognitionStatus.BAD_REQUEST
    ) -> list[Command]:
        """The primary's failure record (unless it has one) and the LimitHit of `limit`.
        `status` is what the client saw: BadRequest for what it sent, Error for a close."""
        record = self._primary.failure(status.value, limit.error_code, detail)
        commands: list[Command] = [Emit(record)] if record is not None else []
        commands.append(LimitHit(limit, detail))
        return commands

    def _answer_status(
        self, request_id: str | None, status: RecognitionStatus, turn_started: bool
    ) -> list[Command]:
        """End the turn with a status phrase (Error: SDK ServiceError), starting it first
        if the primary has not."""
        body = status_phrase_body(status)
        commands: list[Command] = []
        if not turn_started:
            start = encode_text(Path.TURN_START.value, request_id, '{"context":{}}')
            commands.append(ToClient(start))
        commands.append(ToClient(encode_text(Path.SPEECH_PHRASE.value, request_id, body)))
        commands.append(ToClient(encode_text(Path.TURN_END.value, request_id, "{}")))
        return commands


def _duration_reason(what: str, seconds: float) -> str:
    # The real service's words: "Exceeded maximum websocket connection idle
    # duration(> 300000ms)" (protocol.md §4.3).
    return f"Exceeded maximum websocket {what} duration(> {round(seconds * 1000)}ms)"


def _text_header_bytes(frame: str) -> int:
    end = frame.find("\r\n\r\n")
    return len(frame[:end].encode("utf-8", "surrogatepass")) if end >= 0 else 0


def _binary_header_bytes(frame: bytes) -> int:
    if len(frame) < 2:
        return 0
    size = (frame[0] << 8) | frame[1]
    return size if size <= len(frame) - 2 else 0
