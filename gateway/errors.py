"""Every exception the gateway raises, in one small tree.

    GatewayError
    ├── ConfigError                 invalid settings or experiment config (names the field)
    ├── ProtocolError               malformed client or upstream input
    │   ├── UspError                a USP message that breaks the protocol → WebSocket close code
    │   └── RestError               a bad short-audio request → HTTP status
    ├── AuthError                   missing or wrong credentials → HTTP 401
    ├── ControlError                an admin change that cannot be made → HTTP 400/404/409
    ├── CapacityError               a concurrency bound is reached → "too many requests"
    ├── LimitExceeded               a configured limit refuses a new session → HTTP 429/503
    ├── RecognitionError            the local recogniser failed → USP status "Error"
    ├── StoreUnavailable            Redis or a data file failed under a store → HTTP 503
    │   └── AudioStoreFull          the audio store's size bound is reached → capture dropped
    ├── CaptureNotFound             no stored audio capture has that id → HTTP 404
    ├── CaptureCorrupt              stored audio failed its content type or size check → HTTP 502
    ├── UnitDeleted                 audio of a unit on the deletion list is refused
    └── UpstreamError               a backend could not serve a session
        ├── UpstreamRejected        it answered the upgrade/POST with an HTTP status, not a session
        └── UpstreamUnavailable     unreachable or too slow → USP status "Error" / HTTP 503

Outside the tree, `LifecycleError` marks a bug rather than anything a peer or an operator
did: a relay session asked to make a lifecycle transition its table forbids.

Each error carries what its boundary needs to answer with (close code, HTTP status),
so the I/O layer never guesses. Third-party exceptions are translated where they enter.
"""

from __future__ import annotations

import re
from enum import IntEnum, StrEnum
from typing import Final


class CloseCode(IntEnum):
    """WebSocket close codes with the meaning the Speech SDKs give them (protocol.md §5.2)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = (
        1002  # missing Path / X-RequestId, bad framing: SDK ConnectionFailure, no retry
    )
    INVALID_PAYLOAD = 1007  # bad audio or parameters: SDK BadRequest, no retry
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # SDK ServiceError after retries
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    TOO_MANY_REQUESTS = 4429  # SDK TooManyRequests, no retry


class Limit(StrEnum):
    """A configured limit (`gateway.limits`, docs/gateway.md "Limits"). The value is the
    `limit` label of the `speech_gateway_limit_hits` metric; `error_code` goes into the
    outcome record of the session or request it stopped."""

    CONNECTION_RATE = "connection_rate"  # upgrades and requests per client and second
    CLIENT_SESSIONS = "client_sessions"  # concurrent sessions of one client
    TOTAL_SESSIONS = "total_sessions"  # concurrent sessions of the process
    MESSAGE_SIZE = "message_size"  # one WebSocket (or USP binary) message
    USP_HEADER = "usp_header"  # the headers of one USP message
    TURN_AUDIO = "turn_audio"  # audio bytes of one turn
    SESSION_AUDIO = "session_audio"  # audio bytes of one session
    SESSION_DURATION = "session_duration"  # how long one session may last
    IDLE_TIMEOUT = "idle_timeout"  # how long a client may send nothing
    REST_BODY = "rest_body"  # the body of one short-audio request
    REST_BODY_TIMEOUT = "rest_body_timeout"  # a short-audio request's body stalls

    @property
    def error_code(self) -> str:
        return f"limit_{self.value}"


def is_sendable_close_code(code: int) -> bool:
    """RFC 6455 §7.4: 1004-1006 and 1015 are reserved, 1016-2999 unassigned; a close
    frame may carry only the others."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Invalid configuration; the message names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ProtocolError(GatewayError):
    """Malformed input from a peer."""


class UspError(ProtocolError):
    """A USP message that violates the protocol; answered by closing with `close_code`."""

    def __init__(self, reason: str, close_code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class RestError(ProtocolError):
    """A bad short-audio REST request; answered with `status` and `reason` as the body."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class AuthError(GatewayError):
    """Missing or wrong credentials (HTTP 401)."""

    status = 401


class ControlError(GatewayError):
    """An experiment change the control plane refuses; `status` is the admin API's answer:
    400 a bad value, 404 an unknown experiment or forced unit, 409 not possible now."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class CapacityError(GatewayError):
    """A concurrency bound is reached; the service's "too many requests" answer."""

    status = 429


class LimitExceeded(GatewayError):
    """A configured limit refuses a new session or request; answered with HTTP `status`
    (429 or 503) and, when set, a `Retry-After` of `retry_after_s` seconds."""

    def __init__(
        self, limit: Limit, detail: str, status: int, retry_after_s: int | None = None
    ) -> None:
        super().__init__(f"{limit.error_code}: {detail}")
        self.limit = limit
        self.detail = detail
        self.status = status
        self.retry_after_s = retry_after_s


class RecognitionError(GatewayError):
    """The local recogniser failed for one utterance or session."""


# The userinfo of a URL (`redis://user:secret@host`): a reason never carries it.
_URL_CREDENTIALS: Final = re.compile(r"(?<=://)[^/@\s]*@")
_MAX_REASON: Final = 300


class StoreUnavailable(GatewayError):
    """A store cannot serve right now: Redis is unreachable, too slow, read-only or out of
    memory, or a data file cannot be read or written. Nothing was changed that the caller
    has to undo; the same call may succeed later (answered with HTTP 503).

    `reason` names the operation and the failure, in at most 300 characters; credentials
    in a URL are cut out of it, so it may be logged and answered as it is."""

    status = 503

    def __init__(self, reason: str) -> None:
        reason = _URL_CREDENTIALS.sub("***@", reason)[:_MAX_REASON]
        super().__init__(reason)
        self.reason = reason


class EngineUnreadable(GatewayError):
    """The analysis engine could not read the store's files as documented records (a torn
    last line while the gateway appends, a line written by something else). The caller
    reads the store with the record reader instead, which skips the one and names the
    other."""


class AudioStoreFull(StoreUnavailable):
    """The audio store holds its configured maximum of bytes; the capture is dropped."""


class CaptureNotFound(GatewayError, LookupError):
    """No capture with this id is stored (never was, expired or deleted with its unit)."""

    status = 404

    def __init__(self, capture_id: str) -> None:
        super().__init__(f"no audio capture {capture_id}")
        self.capture_id = capture_id


class CaptureCorrupt(GatewayError):
    """A stored capture's audio is not what its sidecar says (content type or size)."""

    status = 502

    def __init__(self, capture_id: str, problem: str) -> None:
        super().__init__(f"audio capture {capture_id}: {problem}")
        self.capture_id = capture_id
        self.problem = problem


class UnitDeleted(GatewayError):
    """The unit's audio was deleted on request; no audio of it is stored again."""

    def __init__(self, unit: str) -> None:
        super().__init__("the unit is on the audio deletion list")
        self.unit = unit


class UpstreamError(GatewayError):
    """A backend could not serve a session; `error_code` goes into the outcome record."""

    def __init__(self, error_code: str, detail: str) -> None:
        super().__init__(f"{error_code}: {detail}")
        self.error_code = error_code
        self.detail = detail


class UpstreamRejected(UpstreamError):
    """The backend answered with an HTTP status instead of serving (an error, or an upgrade
    answered otherwise than with 101), which the client gets too (§5.3), with the `reason`,
    `headers` and `body` of the answer that may be passed on."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        reason: str = "",
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(f"upstream_http_{status}", detail)
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class UpstreamUnavailable(UpstreamError):
    """The backend was unreachable or did not answer in time."""


class LifecycleError(RuntimeError):
    """A relay session's lifecycle transition that its table does not allow: a bug, not a
    peer's doing (gateway.session.relay.TRANSITIONS)."""
