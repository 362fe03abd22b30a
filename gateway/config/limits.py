"""The `[gateway.limits]` table: what one client, session or request may use.

The server's admission (`gateway.server.admission`) and the relay (`gateway.server.relay.usp`)
enforce them; docs/gateway.md ("Limits") explains each.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_KIB = 1024
_MIB = 1024 * _KIB
_GIB = 1024 * _MIB


class LimitSettings(_Model):
    """What one client, session or request may use (docs/gateway.md, "Limits"). Every limit
    applies per gateway process. Past one, the client gets the answer the Speech SDKs map to
    a precise error, and the session gets one `session_failure` record with `error_code`
    `limit_<name>`. The defaults never bother a normal Speech SDK user (a continuous
    recognition of an hour-long file included) but bound what one misbehaving client costs.
    """

    max_ws_message_bytes: int = Field(
        1 * _MIB,
        ge=4 * _KIB,
        le=64 * _MIB,
        description="The largest WebSocket message a client may send; past it the connection "
        "is closed with 1009 (native SDK: ConnectionFailure). Binary (audio) messages are "
        "bounded by the smaller of this and 64 KiB (the native SDK sends 3,200-byte chunks). "
        "The default leaves room for a `speech.context` with long phrase lists.",
    )
    max_usp_header_bytes: int = Field(
        8 * _KIB,
        ge=256,
        le=64 * _KIB,
        description="The largest headers block of one USP message; past it the connection "
        "is closed with 1002 (a protocol violation). 8 KiB is the limit of the service's "
        "protocol documentation.",
    )
    max_turn_audio_bytes: int = Field(
        256 * _MIB,
        ge=4 * _KIB,
        le=64 * _GIB,
        description="The audio one turn may carry, in bytes (replayed audio included). Past "
        "it the connection is closed with 1007 and the limit as the reason (SDK: BadRequest, "
        "no retry). The default is about 2 h 20 min of 16 kHz 16-bit mono PCM: the real "
        "service ends turns every 10 minutes, but a backend that does not (the emulator) "
        "takes an hour-long file in one turn.",
    )
    max_session_audio_bytes: int = Field(
        1 * _GIB,
        ge=4 * _KIB,
        le=256 * _GIB,
        description="The audio one WebSocket session may carry over all its turns, in bytes. "
        "Past it, as for `max_turn_audio_bytes`. The default is about 9 h of 16 kHz 16-bit "
        "mono PCM, more than `max_session_s` allows at real time.",
    )
    max_session_s: float = Field(
        4 * 3600.0,
        gt=0,
        le=7 * 86400.0,
        description="How long one WebSocket session may last, in seconds; then it is closed "
        "with 1000, as the service closes its own long connections: the SDK reconnects and "
        "replays the unacknowledged audio, unnoticed by the application.",
    )
    idle_timeout_s: float = Field(
        300.0,
        gt=0,
        le=86400.0,
        description="How long a client may send nothing on its WebSocket, in seconds; then it "
        "is closed with 1000 and `Exceeded maximum websocket connection idle duration`, as "
        "the service does after the same 300 s. The SDKs reconnect when next needed.",
    )
    max_sessions_total: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Concurrent sessions (WebSocket connections and REST requests) of the "
        "process; past it new ones get HTTP 503 (SDK: ServiceUnavailable, retried), so a load "
        "balancer's other replicas take them. Twice the 1,000 streams one process is sized for.",
    )
    max_sessions_per_client: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Concurrent sessions of one client key; past it new ones get HTTP 429 "
        "(SDK: TooManyRequests), so one application cannot take the whole process.",
    )
    connections_per_client_per_s: float = Field(
        200.0,
        gt=0,
        le=1_000_000.0,
        description="New sessions (WebSocket upgrades and REST requests) one client key may "
        "open per second, on average (a token bucket); past it HTTP 429 with Retry-After "
        "(SDK: TooManyRequests). It stops a client stuck in a reconnect loop.",
    )
    connection_burst: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="How many new sessions one client key may open at once before "
        "`connections_per_client_per_s` applies (the token bucket's size): a fleet of "
        "devices reconnecting together after a network outage is let in.",
    )
    max_rest_body_bytes: int = Field(
        10 * _MIB,
        ge=1 * _KIB,
        le=1 * _GIB,
        description="The largest REST short-audio request body; past it HTTP 413. The REST "
        "API takes at most 60 s of audio (about 2 MB of 16 kHz PCM).",
    )
    rest_body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long a REST request's body may pause between two reads, in "
        "seconds; past it HTTP 408. Bounds clients that open a request and stall, each "
        "holding a session slot.",
    )
