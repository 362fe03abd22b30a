"""The USP relay of one client connection as a state machine: frames in, commands out.

`gateway.io.usp_relay` drives it: every frame from the client, from the primary backend and
from each shadow is handed here with its arrival time, and the returned commands say what
to send where. Frames are forwarded unchanged (the original `str`/`bytes` objects) and in
order; the relay only reads them, to follow the turns and tap outcomes:

    client  ──frame──▶ RelaySession ──ToUpstream──▶ primary (and each shadow, teed)
    primary ──frame──▶ RelaySession ──ToClient────▶ client, plus Emit(record) per utterance
    shadow  ──frame──▶ RelaySession ──Emit(record)   (the client never sees a shadow)

When the primary cannot be reached the relay answers each turn itself with an `Error`
phrase (protocol.md §5.3) and records one session failure.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import CloseCode, is_sendable_close_code
from gateway.logging import get_logger
from gateway.outcomes.record import OutcomeRecord
from gateway.protocol.usp import (
    Path,
    RecognitionStatus,
    decode_binary,
    decode_text,
    encode_text,
    status_phrase_body,
)
from gateway.session.taps import ResultTap, RoleFacts, SessionFacts, Turn
from gateway.session.turns import AudioTimeline, continuation_offset

log = get_logger(__name__)

# Turns are kept a while after they end: a slow shadow may still report on them.
KEPT_TURNS = 8
_SPEECH_CONTEXT = Path.SPEECH_CONTEXT.value
_AUDIO = Path.AUDIO.value


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


Command = ToUpstream | ToClient | CloseClient | CloseUpstream | Emit


class RelaySession:
    def __init__(
        self, facts: SessionFacts, primary: RoleFacts, shadows: Sequence[RoleFacts] = ()
    ) -> None:
        self._primary = ResultTap(facts, primary)
        self._shadows = {role.variant or "": ResultTap(facts, role) for role in shadows}
        self._turns: OrderedDict[str, Turn] = OrderedDict()
        self._unavailable: tuple[str, str] | None = None  # (error code, detail)
        self._open_turn: str | None = None  # the primary's turn between turn.start and end

    # -- the client ------------------------------------------------------------------------

    def client_text(self, frame: str, now: float) -> list[Command]:
        message = decode_text(frame)  # UspError: the driver closes the client with its code
        starts_turn = message.path.lower() == _SPEECH_CONTEXT.lower()
        if starts_turn and message.request_id is not None:
            base = continuation_offset(message.body)
            self._begin_turn(message.request_id, base, now)
        if self._unavailable is not None:
            return self._answer_unavailable(message.request_id) if starts_turn else []
        return [ToUpstream(frame, starts_turn)]

    def client_binary(self, frame: bytes, now: float) -> list[Command]:
        message = decode_binary(frame)
        if message.path.lower() == _AUDIO and message.request_id is not None:
            turn = self._turns.get(message.request_id)
            if turn is not None:
                turn.timeline.add(message.payload, now)
        if self._unavailable is not None:
            return []
        return [ToUpstream(frame)]

    def client_closed(self) -> list[Command]:
        return [] if self._unavailable is not None else [CloseUpstream(CloseCode.NORMAL)]

    # -- the primary backend -----------------------------------------------------------------

    def upstream_text(self, frame: str, now: float) -> list[Command]:
        commands: list[Command] = [ToClient(frame)]
        record = self._observe(self._primary, frame, now, primary=True)
        if record is not None:
            commands.append(Emit(record))
        return commands

    def upstream_binary(self, frame: bytes) -> list[Command]:
        return [ToClient(frame)]

    def upstream_closed(self, code: int, reason: str) -> list[Command]:
        """The primary closed: the client gets the same code and reason (§5.3, 2).

        A connection lost without a close frame (1006, or no code at all) cannot be passed
        on: no close frame may carry it. The current turn is answered with an Error phrase
        instead, as for any failure the gateway detects itself (§5.3, 3).
        """
        if not is_sendable_close_code(code):
            return self._lost_upstream(code)
        commands: list[Command] = [CloseClient(code, reason)]
        if code != CloseCode.NORMAL:
            record = self._primary.failure(
                RecognitionStatus.ERROR.value, f"upstream_close_{code}", reason[:200] or None
            )
            if record is not None:
                commands.append(Emit(record))
        return commands

    def upstream_rejected(self, error_code: str, detail: str) -> list[Command]:
        """The primary refused the upgrade; the driver answers the client with its status."""
        record = self._primary.failure(RecognitionStatus.ERROR.value, error_code, detail)
        return [Emit(record)] if record is not None else []

    def upstream_unavailable(self, error_code: str, detail: str) -> list[Command]:
        """The primary could not be reached: answer turns with Error from now on."""
        self._unavailable = (error_code, detail)
        record = self._primary.failure(RecognitionStatus.ERROR.value, error_code, detail)
        return [Emit(record)] if record is not None else []

    def _lost_upstream(self, code: int) -> list[Command]:
        detail = f"the backend connection was lost (close code {code})"
        commands: list[Command] = []
        if self._turns:  # the SDK's current turn: its last speech.context
            current = next(reversed(self._turns))
            started = self._open_turn == current
            commands += self._answer_error(current, turn_started=started)
        commands.append(CloseClient(CloseCode.NORMAL, "the backend connection was lost"))
        record = self._primary.failure(RecognitionStatus.ERROR.value, "upstream_lost", detail)
        if record is not None:
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
        return [Emit(record)] if record is not None else []

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
            return tap.observe(message, turn, now)
        except ValueError as exc:  # a record the backend's answer made invalid: lose it only
            log.warning("outcome_tap_failed", error=str(exc)[:200])
            return None

    def _begin_turn(self, request_id: str, base: int | None, now: float) -> None:
        # Native SDKs state where a follow-up turn starts; otherwise it starts where the
        # primary's acknowledgements ended, which is where the JS SDK replays from.
        start = base if base is not None else self._primary.acked_ticks
        self._turns[request_id] = Turn(request_id, start, AudioTimeline())
        self._turns.move_to_end(request_id)
        while len(self._turns) > KEPT_TURNS:
            self._turns.popitem(last=False)

    def _answer_unavailable(self, request_id: str | None) -> list[Command]:
        return self._answer_error(request_id, turn_started=False)

    def _answer_error(self, request_id: str | None, *, turn_started: bool) -> list[Command]:
        """End the turn with an Error phrase (SDK: ServiceError), starting it if need be."""
        body = status_phrase_body(RecognitionStatus.ERROR)
        commands: list[Command] = []
        if not turn_started:
            start = encode_text(Path.TURN_START.value, request_id, '{"context":{}}')
            commands.append(ToClient(start))
        commands.append(ToClient(encode_text(Path.SPEECH_PHRASE.value, request_id, body)))
        commands.append(ToClient(encode_text(Path.TURN_END.value, request_id, "{}")))
        return commands
