"""Sampled audio capture of one relay session: which utterances to keep, and their PCM.

No I/O. The relay (`gateway.session.relay.RelaySession`) hands a `SessionCapture` the
audio of every turn and every outcome record it makes; the capture buffers the turns' PCM
(bounded per session and, through a shared `CaptureBudget`, per process), cuts each
selected utterance out by the service's offsets, and hands it to `emit` as a
`CapturedUtterance`. The writer that stores it (`gateway.server.capture_writer`) is I/O.

The policy (`CapturePolicy`, from an experiment's `capture` section):

* a session is *considered* with the share of its primary variant (a keyed hash of the
  session id, so it is the same on every replica); only considered sessions of clients
  with capture consent get a `SessionCapture` at all, so the others cost nothing;
* an utterance of a considered session is captured when a priority applies (in the
  configured order: a shadow transcript that disagrees with the primary's, low confidence,
  no match, a failure the guardrails count) or, failing that, with `utterance_share`;
* a daily cap per experiment (`CaptureQuota`, per process) bounds the captures; uniform
  captures stop at the cap less its priority reserve, so priorities find room late in a day.

A REST short-audio request is a session of one utterance: `gateway.server.relay.rest` hands
its body to `request_audio` as it streams and its record to `request_record`.

A shadow segments the audio on its own, so a primary utterance is matched with each shadow's
result by audio span, with the analysis's rule (`gateway.outcomes.pairing`: the largest
overlap); it waits until every shadow has answered past its end, has failed, or the session
ends.

A selected utterance whose audio is no longer (or never was) in the buffer is dropped and
counted through `drop(reason)`; the relay's forwarding never waits for any of this.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Final

from gateway.logging import get_logger
from gateway.outcomes.pairing import pair_shadows
from gateway.outcomes.record import Kind, OutcomeRecord, Role
from gateway.protocol.wav import PCM_16K_MONO, WaveFormat, parse_wave_header
from gateway.session.turns import TICKS_PER_MS
from gateway.text.normalize import normalize_words

TICKS_PER_SECOND: Final = 10_000_000
KEPT_TURNS: Final = 8
# A shadow's latest results kept for matching; a primary waits for at most a few of them.
KEPT_SHADOW_RESULTS: Final = 64
log = get_logger(__name__)
_REQUEST: Final = ""  # the turn key of a REST request's body
_MAX_HEADER: Final = 4096
# Failures that say something about a backend: not the gateway's own limits or shutdown.
_NOT_BACKEND_FAILURES: Final = ("limit_", "gateway_shutdown", "client_")


class CaptureReason(StrEnum):
    """Why an utterance was captured: a uniform sample or the priority that selected it."""

    UNIFORM = "uniform"
    DISAGREEMENT = "disagreement"  # a shadow's transcript differs from the primary's
    LOW_CONFIDENCE = "low_confidence"  # the primary's confidence is below the threshold
    NO_MATCH = "no_match"  # the primary recognised nothing
    FAILURE = "failure"  # the primary failed in a way the guardrails count


PRIORITY_REASONS: Final = (
    CaptureReason.DISAGREEMENT,
    CaptureReason.LOW_CONFIDENCE,
    CaptureReason.NO_MATCH,
    CaptureReason.FAILURE,
)


class CaptureSample(StrEnum):
    """Which sample selected the capture: the uniform share or a priority."""

    UNIFORM = "uniform"
    PRIORITY = "priority"


class DropReason(StrEnum):
    """Why a selected capture was not stored (the `reason` label of the drop metric)."""

    SESSION_BYTES = "session_bytes"  # the session's buffer bound was reached
    TOTAL_BYTES = "total_bytes"  # the process's buffer bound was reached
    DAILY_CAP = "daily_cap"
    QUEUE_FULL = "queue_full"  # the writer's queue was full
    STORE_FULL = "store_full"
    STORE_UNAVAILABLE = "store_unavailable"
    DELETED_UNIT = "deleted_unit"


@dataclass(frozen=True, slots=True)
class CapturedResult:
    """One recognition of the captured audio: the outcome record it made and its hypothesis
    (`text` None when nothing was recognised or the text privacy setting keeps no text)."""

    record_id: str
    variant: str
    text: str | None = None
    confidence: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "variant": self.variant,
            "text": self.text,
            "confidence": self.confidence,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CapturedResult:
        confidence = data.get("confidence")
        return cls(
            record_id=str(data["record_id"]),
            variant=str(data["variant"]),
            text=None if data.get("text") is None else str(data["text"]),
            confidence=None if confidence is None else float(confidence),
        )

    @classmethod
    def of(cls, record: OutcomeRecord) -> CapturedResult:
        return cls(record.record_id, record.variant or "", record.text, record.confidence)


@dataclass(frozen=True, slots=True)
class CapturePolicy:
    """An experiment's capture policy (config: `[[gateway.experiments]] capture`)."""

    share: float = 0.0  # sessions considered, for a variant not in `variant_shares`
    variant_shares: Mapping[str, float] = field(default_factory=dict)
    utterance_share: float = 1.0  # utterances of a considered session captured uniformly
    priorities: tuple[CaptureReason, ...] = PRIORITY_REASONS
    low_confidence_below: float = 0.5
    daily_cap: int = 1000
    priority_reserve: float = 0.5  # share of the daily cap that only priorities may use
    max_session_bytes: int = 4 * 1024 * 1024

    def considers(self, experiment: str, variant: str, session_id: str) -> bool:
        """Whether the session's audio is buffered and its utterances considered."""
        share = self.variant_shares.get(variant, self.share)
        return share > 0 and _fraction(experiment, session_id) < share

    def uniform(self, session_id: str, utterance_index: int) -> bool:
        return _fraction(session_id, str(utterance_index)) < self.utterance_share


def _fraction(*parts: str) -> float:
    """A stable number in [0, 1) from `parts`: the same decision on every replica."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class CaptureQuota:
    """Captures per experiment and UTC day in this process; priorities may use the reserve."""

    def __init__(self, today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self._today = today
        self._day: date | None = None
        self._taken: dict[str, int] = {}

    def take(self, experiment: str, policy: CapturePolicy, priority: bool) -> date | None:
        """A place in today's cap: the UTC day it was taken on, or None when the day's cap
        (less the priorities' reserve, for a uniform capture) is reached."""
        day = self._today()
        if day != self._day:
            self._day, self._taken = day, {}
        taken = self._taken.get(experiment, 0)
        cap = policy.daily_cap
        limit = cap if priority else cap - round(cap * policy.priority_reserve)
        if taken >= limit:
            return None
        self._taken[experiment] = taken + 1
        return day

    def give_back(self, experiment: str, day: date | None) -> None:
        """Return the place a capture took on `day` that was dropped before it was stored,
        so the cap counts stored captures (a place of an earlier day is gone with it)."""
        if day is not None and day == self._day and self._taken.get(experiment, 0) > 0:
            self._taken[experiment] -= 1


class CaptureBudget:
    """The bytes of PCM all sessions of this process may buffer together."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.max_bytes:
            return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        self.used = max(0, self.used - size)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturedUtterance:
    """An utterance selected for capture: its identity, results and PCM (exactly the bytes
    the client sent for it, in the format its turn's WAVE header announced)."""

    experiment: str
    phase: str
    unit: str
    client: str
    session_id: str
    utterance_index: int
    reason: CaptureReason
    sample: CaptureSample
    primary: CapturedResult
    shadows: tuple[CapturedResult, ...]
    fmt: WaveFormat
    pcm: bytes
    # The UTC day whose cap (`CaptureQuota`) it counts in; given back if it is dropped.
    quota_day: date | None = None

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) * 1000 // max(1, self.fmt.bytes_per_second)


@dataclass(frozen=True, slots=True)
class CaptureIdentity:
    """What a capture says about its session (from the session's facts)."""

    experiment: str
    phase: str
    unit: str
    client: str
    session_id: str


class _TurnAudio:
    """One turn's PCM as received, from byte `trimmed` of the turn on."""

    __slots__ = (
        "base_ticks",
        "data",
        "fmt",
        "full",
        "header_seen",
        "last_end",
        "received",
        "trimmed",
    )

    def __init__(self, base_ticks: int) -> None:
        self.base_ticks = base_ticks
        self.data = bytearray()
        self.trimmed = 0  # bytes of the turn released from the front
        self.fmt = PCM_16K_MONO
        self.header_seen = False
        self.full = False  # a buffer bound was reached: nothing more is kept, until resumed
        self.last_end = 0  # where the primary's last utterance of the turn ended (bytes)
        self.received = 0  # bytes of the turn's PCM seen, kept or not

    def byte_at(self, ticks: int) -> int:
        fmt = self.fmt
        byte = ticks * fmt.bytes_per_second // TICKS_PER_SECOND
        return byte - byte % max(1, fmt.block_align)

    def cut(self, start: int, end: int) -> bytes | None:
        """Bytes [start, end) of the turn; None when they are not all in the buffer."""
        if start < self.trimmed or end > self.trimmed + len(self.data) or end <= start:
            return None
        return bytes(self.data[start - self.trimmed : end - self.trimmed])


@dataclass(slots=True)
class _Pending:
    """A primary utterance waiting for the shadows' results on the same audio."""

    record: OutcomeRecord
    turn: _TurnAudio | None
    start: int
    end: int
    shadows: dict[str, OutcomeRecord] = field(default_factory=dict)


class SessionCapture:
    """The capture of one considered session (see the module docstring)."""

    def __init__(
        self,
        policy: CapturePolicy,
        identity: CaptureIdentity,
        shadow_variants: tuple[str, ...],
        *,
        quota: CaptureQuota,
        budget: CaptureBudget,
        emit: Callable[[CapturedUtterance], None],
        drop: Callable[[DropReason], None],
    ) -> None:
        self._policy = policy
        self._identity = identity
        self._waiting_for = frozenset(shadow_variants)
        self._failed_shadows: set[str] = set()
        self._quota = quota
        self._budget = budget
        self._emit = emit
        self._drop = drop
        self._turns: OrderedDict[str, _TurnAudio] = OrderedDict()
        self._bytes = 0  # buffered by this session
        self._pending: list[_Pending] = []  # primary utterances waiting for shadows
        self._shadow_results: dict[str, list[OutcomeRecord]] = {}  # by variant, latest last
        self._utterances = 0
        self._why_full: DropReason | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    # -- audio ------------------------------------------------------------------------------

    def begin_turn(self, request_id: str, base_ticks: int) -> None:
        replaced = self._turns.pop(request_id, None)
        if replaced is not None:  # a speech.context again for the turn: its bytes go back
            self._release(replaced, len(replaced.data))
        self._turns[request_id] = _TurnAudio(base_ticks)
        self._turns.move_to_end(request_id)
        while len(self._turns) > KEPT_TURNS:
            _, old = self._turns.popitem(last=False)
            self._release(old, len(old.data))

    def audio(self, request_id: str, payload: memoryview) -> None:
        """A frame's payload for the turn `request_id` (the first carries the WAVE header)."""
        turn = self._turns.get(request_id)
        if turn is None or not payload:
            return
        if not turn.header_seen:
            turn.header_seen = True
            if bytes(payload[:4]) == b"RIFF":
                try:
                    turn.fmt, offset = parse_wave_header(bytes(payload))
                except Exception:  # the service judges the audio; the cut assumes the default
                    offset = 44
                payload = payload[offset:]
        size = len(payload)
        at, turn.received = turn.received, turn.received + size
        if turn.full:
            if turn.data or request_id == _REQUEST:  # a result may still cut what is kept
                return
            # Results have covered all that was kept: keep the turn's audio again from
            # here (an utterance reaching back into the gap cannot be cut, and is dropped).
            turn.full, turn.trimmed = False, at
        if self._bytes + size > self._policy.max_session_bytes:
            turn.full, self._why_full = True, DropReason.SESSION_BYTES
            return
        if not self._budget.take(size):
            turn.full, self._why_full = True, DropReason.TOTAL_BYTES
            return
        turn.data += payload
        self._bytes += size

    # -- records ----------------------------------------------------------------------------

    def record(self, record: OutcomeRecord) -> None:
        """An outcome record of this session, the primary's or a shadow's."""
        if record.role is Role.SHADOW:
            self._shadow_record(record)
        elif record.role is Role.PRIMARY:
            if record.kind is Kind.UTTERANCE:
                self._primary_utterance(record)
            elif record.kind is Kind.SESSION_FAILURE:
                self._primary_failure(record)

    def finish(self) -> None:
        """The session ended: decide what still waits for shadows, release every buffer."""
        waiting, self._pending = self._pending, []
        for pending in waiting:
            self._decide(self._matched(pending))
        for turn in self._turns.values():
            self._release(turn, len(turn.data))
        self._turns.clear()

    def release(self) -> None:
        """Give every buffered byte back, deciding nothing (the capture failed)."""
        self._pending.clear()
        for turn in self._turns.values():
            self._release(turn, len(turn.data))
        self._turns.clear()

    # -- REST short audio -------------------------------------------------------------------

    def request_audio(self, chunk: bytes) -> None:
        """A chunk of a REST request's body, the WAV as the client sends it (the header is
        parsed once the request is over, since a chunk may end inside it)."""
        try:
            turn = self._turns.get(_REQUEST)
            if turn is None:
                turn = self._turns[_REQUEST] = _TurnAudio(0)
                turn.header_seen = True  # kept in the buffer: `request_record` parses it
            self.audio(_REQUEST, memoryview(chunk))
        except Exception:  # capture must never cost the request anything
            log.exception("capture_failed")
            self.release()

    def request_record(self, record: OutcomeRecord) -> None:
        """The REST request's record: decide on its audio (cut by the service's offsets,
        or all of it for a failure), then release the body."""
        try:
            turn = self._turns.get(_REQUEST)
            if turn is None or not self._capturable(record):
                return
            try:
                turn.fmt, offset = parse_wave_header(bytes(turn.data[:_MAX_HEADER]))
            except Exception:  # not a WAV body (e.g. Ogg/Opus): nothing to cut
                return
            block = max(1, turn.fmt.block_align)
            # A body the bounds cut short cannot be cut from: the end lies past the buffer.
            end = sys.maxsize if turn.full else len(turn.data) - (len(turn.data) - offset) % block
            start = offset
            if record.kind is Kind.REQUEST and record.audio_duration_ms:
                first = turn.byte_at(round((record.audio_offset_ms or 0.0) * TICKS_PER_MS))
                last = turn.byte_at(
                    round(
                        ((record.audio_offset_ms or 0.0) + record.audio_duration_ms) * TICKS_PER_MS
                    )
                )
                start, end = offset + first, min(end, offset + last)
            self._decide(_Pending(record, turn, start, end), index=0)
        except Exception:  # capture must never cost the request anything
            log.exception("capture_failed")
        finally:
            self.release()

    def _capturable(self, record: OutcomeRecord) -> bool:
        if record.kind is not Kind.SESSION_FAILURE:
            return True
        code = record.error_code or ""
        return CaptureReason.FAILURE in self._policy.priorities and not code.startswith(
            _NOT_BACKEND_FAILURES
        )

    def _primary_utterance(self, record: OutcomeRecord) -> None:
        turn = self._turns.get(record.turn_id) if record.turn_id is not None else None
        start = end = 0
        if turn is not None and record.audio_offset_ms is not None:
            offset = round(record.audio_offset_ms * TICKS_PER_MS) - turn.base_ticks
            duration = round((record.audio_duration_ms or 0.0) * TICKS_PER_MS)
            start, end = turn.byte_at(max(0, offset)), turn.byte_at(max(0, offset + duration))
            turn.last_end = max(turn.last_end, end)
        self._utterances += 1
        pending = _Pending(record, turn, start, end)
        if self._complete(pending):
            self._decide(self._matched(pending))
        else:
            self._pending.append(pending)

    def _primary_failure(self, record: OutcomeRecord) -> None:
        code = record.error_code or ""
        if CaptureReason.FAILURE not in self._policy.priorities or code.startswith(
            _NOT_BACKEND_FAILURES
        ):
            return
        if not self._turns:
            return
        # The audio the primary failed on: its current turn after its last utterance.
        turn = next(reversed(self._turns.values()))
        end = turn.trimmed + len(turn.data)
        pending = _Pending(record, turn, turn.last_end, end - end % max(1, turn.fmt.block_align))
        self._decide(pending, index=self._utterances)

    def _shadow_record(self, record: OutcomeRecord) -> None:
        variant = record.variant or ""
        if record.kind is Kind.SESSION_FAILURE:
            self._failed_shadows.add(variant)
        elif record.kind is Kind.UTTERANCE:
            results = self._shadow_results.setdefault(variant, [])
            results.append(record)
            del results[:-KEPT_SHADOW_RESULTS]
        else:
            return
        complete = [pending for pending in self._pending if self._complete(pending)]
        if complete:
            # Out of the waiting list first, so that deciding one releases its audio.
            self._pending = [p for p in self._pending if not any(p is c for c in complete)]
            for pending in complete:
                self._decide(self._matched(pending))

    def _complete(self, pending: _Pending) -> bool:
        """Every shadow failed or answered past the utterance's end (results come in the
        order of the audio, so none still to come can overlap it more)."""
        end = _end_ms(pending.record)
        if end is None:
            return True  # no span: no shadow result can be matched to it
        for variant in self._waiting_for - self._failed_shadows:
            results = self._shadow_results.get(variant)
            last = _end_ms(results[-1]) if results else None
            if last is None or last < end:
                return False
        return True

    def _matched(self, pending: _Pending) -> _Pending:
        """`pending` with each shadow's result whose audio overlaps it most, if any."""
        for variant, results in self._shadow_results.items():
            for _, shadow in pair_shadows([pending.record, *results]):
                pending.shadows[variant] = shadow
        return pending

    # -- decisions --------------------------------------------------------------------------

    def _decide(self, pending: _Pending, index: int | None = None) -> None:
        record = pending.record
        utterance_index = record.utterance_index if index is None else index
        utterance_index = utterance_index or 0
        # The uniform sample is drawn first, by a hash of the utterance alone, whatever its
        # results: it must contain hard utterances as often as live traffic does, or its
        # WER would be measured on the easy ones. The priorities pick, apart, among the
        # utterances the uniform draw left out.
        uniform = self._policy.uniform(self._identity.session_id, utterance_index)
        priority_reason = self._priority(pending)
        try:
            if not uniform and priority_reason is None:
                return
            identity = self._identity
            turn = pending.turn
            pcm = turn.cut(pending.start, pending.end) if turn is not None else None
            if pcm is None:
                self._drop(self._why_full or DropReason.SESSION_BYTES)
                return
            # The session's copy goes back before the writer takes the cut's bytes from the
            # same budget (`CaptureBudget`), so an utterance is never counted twice.
            self._trim(turn)
            quota_day = None
            if uniform:
                reason, priority = CaptureReason.UNIFORM, False
                quota_day = self._quota.take(identity.experiment, self._policy, False)
            if quota_day is None and priority_reason is not None:
                # Not drawn, or drawn past the uniform share of the day's cap: a priority
                # capture may still use the reserve.
                reason, priority = priority_reason, True
                quota_day = self._quota.take(identity.experiment, self._policy, True)
            if quota_day is None:
                self._drop(DropReason.DAILY_CAP)
                return
            assert turn is not None  # pcm was cut from it
            self._emit(
                CapturedUtterance(
                    experiment=identity.experiment,
                    phase=identity.phase,
                    unit=identity.unit,
                    client=identity.client,
                    session_id=identity.session_id,
                    utterance_index=utterance_index,
                    reason=reason,
                    sample=CaptureSample.PRIORITY if priority else CaptureSample.UNIFORM,
                    primary=CapturedResult.of(record),
                    shadows=tuple(
                        CapturedResult.of(pending.shadows[name]) for name in sorted(pending.shadows)
                    ),
                    fmt=turn.fmt,
                    pcm=pcm,
                    quota_day=quota_day,
                )
            )
        finally:
            self._trim(pending.turn)

    def _priority(self, pending: _Pending) -> CaptureReason | None:
        record = pending.record
        policy = self._policy
        for reason in policy.priorities:
            match reason:
                case CaptureReason.FAILURE:
                    if record.kind is Kind.SESSION_FAILURE:
                        return reason
                case CaptureReason.NO_MATCH:
                    if record.kind is not Kind.SESSION_FAILURE and record.status == "NoMatch":
                        return reason
                case CaptureReason.LOW_CONFIDENCE:
                    confidence = record.confidence
                    if confidence is not None and confidence < policy.low_confidence_below:
                        return reason
                case CaptureReason.DISAGREEMENT:
                    if any(_disagree(record, shadow) for shadow in pending.shadows.values()):
                        return reason
                case CaptureReason.UNIFORM:
                    pass
        return None

    def _trim(self, turn: _TurnAudio | None) -> None:
        """Release the turn's audio that no pending utterance and no later one needs."""
        if turn is None:
            return
        starts = [p.start for p in self._pending if p.turn is turn]
        keep_from = min([turn.last_end, *starts])
        self._release(turn, keep_from - turn.trimmed)

    def _release(self, turn: _TurnAudio, size: int) -> None:
        size = min(size, len(turn.data))
        if size <= 0:
            return
        del turn.data[:size]
        turn.trimmed += size
        self._bytes -= size
        self._budget.give_back(size)


def _disagree(primary: OutcomeRecord, shadow: OutcomeRecord) -> bool:
    if primary.text_sha256 is not None and shadow.text_sha256 is not None:
        return primary.text_sha256 != shadow.text_sha256
    if primary.text is None and shadow.text is None:
        return primary.text_sha256 != shadow.text_sha256
    return normalize_words(primary.text or "") != normalize_words(shadow.text or "")


def _end_ms(record: OutcomeRecord) -> float | None:
    if record.audio_offset_ms is None or record.audio_duration_ms is None:
        return None
    return record.audio_offset_ms + record.audio_duration_ms
