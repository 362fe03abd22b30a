"""The USP relay's I/O: accept the SDK's WebSocket, connect the backend, pump both ways.

The backend is connected *before* the client's upgrade is answered, offered the client's
own subprotocols and connection ids, so that what the SDK and the backend see of each other
is what they would see directly (protocol.md §5.3): a status the backend answers with
reaches the SDK with its body and headers (`gateway.server.relay.upstream` says which), the client
gets the subprotocol the backend chose, and a backend connection dropped without a close
frame drops the client's connection the same way. Two pumps run per
session — client→backend and backend→client — each handing frames to the `RelaySession`
state machine and executing the commands it returns; sends are awaited, so a slow side
slows its sender instead of filling memory. Shadows are fed through bounded queues.

An audio frame from the client normally wakes no task: the client's WebSocket
(`gateway.server.relay.client_ws`) offers each binary message to the session as aiohttp's C
reader parses it, and while the client pump is idle and the backend's socket takes writes
without waiting, the session relays the frame then and there (`_Session.audio_now`):
decoded, counted, written to the backend and teed to shadows within the read callback.
Anything else (text, control frames, a frame that ends the session, a backend that pushes
back) goes through the queue and the pump as before, in arrival order.

A session counts against the admission limits from the moment it is admitted, before the
backend is dialled (`gateway.server.admission`). A third, mostly sleeping task per session
wakes at the relay's next idle or duration deadline; the pumps only note the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from typing import assert_never

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp._websocket.models import WSMessage
from aiohttp.hdrs import SEC_WEBSOCKET_PROTOCOL
from multidict import CIMultiDictProxy

from gateway.config.limits import LimitSettings
from gateway.control.routing import Route
from gateway.errors import (
    CloseCode,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
    is_sendable_close_code,
)
from gateway.logging import get_logger
from gateway.outcomes.record import Role
from gateway.protocol.usp import DEFAULT_LIMITS, UspLimits
from gateway.server.admission import Admission, note_limit_hit, refuse
from gateway.server.capture_writer import CAPTURE_WRITER, CaptureWriter
from gateway.server.relay.backend_gate import BREAKER_OPEN
from gateway.server.relay.client_ws import HELD, RelayedWebSocket, can_write_now, write_now
from gateway.server.relay.shadow import ShadowLink
from gateway.server.relay.upstream import connect_ws
from gateway.server.state import GatewayState, session_facts
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
from gateway.session.taps import RoleFacts

log = get_logger(__name__)

USP_PROTOCOL = "USP"
MAX_CLOSE_REASON_BYTES = 123  # a control frame's payload is at most 125 bytes, 2 of them the code


class _Session:
    """One client connection: its sockets, shadows and relay state machine."""

    def __init__(
        self,
        state: GatewayState,
        route: Route,
        relay: RelaySession,
        client: web.WebSocketResponse,
        upstream: aiohttp.ClientWebSocketResponse | None,
        transport: asyncio.BaseTransport | None,
    ) -> None:
        self._state = state
        self._route = route
        self._relay = relay
        self._client = client
        self._upstream = upstream
        self._transport = transport  # the client's connection, to drop it (see _drop_client)
        self._shadows: list[ShadowLink] = []
        self._client_pump: asyncio.Task[None] | None = None
        # True while the client pump waits for a message with nothing of its own pending:
        # only then may `audio_now` relay a frame past it without reordering anything.
        self._pump_idle = False
        # Commands `audio_now` got for a frame it could not finish (the relay ended the
        # session): executed by the pump, in order, when it reads the frame's marker.
        self._held: deque[list[Command]] = deque()
        # The client's close handshake, once begun: a task of its own, so that cancelling
        # the pump that began it cannot cut it off (see `_close_client`).
        self._closing: asyncio.Task[bool] | None = None

    def start_shadows(self, headers: Mapping[str, str], protocols: tuple[str, ...]) -> None:
        settings = self._state.settings
        for variant in self._route.shadows:
            url = variant.backend.ws_url(self._route.path, self._route.upstream_query(variant))
            link = ShadowLink(
                variant,
                url,
                self._route.upstream_headers(variant, headers),
                protocols=protocols,
                queue_frames=settings.shadow_queue_frames,
                connect_timeout_s=settings.connect_timeout_s,
                turn_timeout_s=settings.shadow_grace_s,
                on_text=self._on_shadow_text,
                on_failure=self._on_shadow_failure,
                on_drop=self._relay.shadow_dropped,
            )
            link.start(self._state.http)
            self._shadows.append(link)

    async def run(self) -> None:
        if isinstance(self._client, RelayedWebSocket) and self._client.queue is not None:
            self._client.queue.take = self.audio_now
        self._client_pump = asyncio.create_task(self._pump_client(), name="usp-client-pump")
        pumps = [self._client_pump]
        if self._upstream is not None:
            pumps.append(asyncio.create_task(self._pump_upstream(), name="usp-upstream-pump"))
        watchdog = asyncio.create_task(self._watch_deadlines(), name="usp-deadlines")
        try:
            _done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            # The finished pump already closed the other side; its pump ends or is cut.
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            watchdog.cancel()
            for task in pumps:
                task.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            if self._closing is not None:
                await asyncio.gather(self._closing, return_exceptions=True)
            if self._upstream is not None and not self._upstream.closed:
                await self._upstream.close()
            grace = self._state.settings.shadow_grace_s
            await asyncio.gather(*(link.finish(grace) for link in self._shadows))
            self._relay.finish_capture()

    async def _watch_deadlines(self) -> None:
        """Sleep until the relay's next deadline and ask it again: while the client is
        active this wakes once per idle timeout, and never per frame."""
        relay = self._relay
        while not relay.ended:
            await asyncio.sleep(max(0.0, relay.next_deadline() - time.monotonic()))
            commands = relay.check_deadlines(time.monotonic())
            if commands:
                await self._execute(commands)

    def audio_now(self, message: WSMessage) -> WSMessage | None:
        """Relay a binary client message within the reader's callback, if nothing stands
        before it: the pump idle, the backend's socket open and not pushing back. Returns
        None when it took the message, else what the queue should hold for the pump: the
        message itself, or (the relay ended the session) its `HELD` marker."""
        upstream = self._upstream
        if not self._pump_idle or upstream is None or not can_write_now(upstream):
            return message
        frame = message.data
        commands = self._relay.forward_binary(frame, time.monotonic())
        if commands is not None:
            # Rare (a limit, a bad header, an ended session): records and limit hits now, as
            # _execute does first (a pump cancelled before it reads the marker must not lose
            # them), the I/O by the pump, in order.
            self._note(commands)
            self._held.append([c for c in commands if not isinstance(c, Emit | LimitHit)])
            return message._replace(extra=HELD)
        try:
            write_now(upstream, frame)
        except (ConnectionError, aiohttp.ClientError):
            # The backend's connection is closing: its pump sees that and ends the session.
            return None
        for link in self._shadows:
            link.offer(frame, False)
        return None

    async def _pump_client(self) -> None:
        relay = self._relay
        client = self._client
        held = self._held
        commands: list[Command] | None
        try:
            while True:
                self._pump_idle = True
                try:
                    message = await client.receive()
                finally:
                    self._pump_idle = False
                now = time.monotonic()
                if message.type is WSMsgType.BINARY:
                    if held and message.extra is HELD:
                        commands = held.popleft()
                    else:
                        # The audio path when `audio_now` did not take the frame.
                        commands = relay.forward_binary(message.data, now)
                        if commands is None:
                            await self._to_upstream(message.data, False)
                            continue
                elif message.type is WSMsgType.TEXT:
                    commands = relay.client_text(message.data, now)
                else:
                    if message.type is WSMsgType.ERROR and _too_big(message.data):
                        # aiohttp refused it (max_msg_size) and closed with 1009 itself.
                        limit = self._state.settings.limits.max_ws_message_bytes
                        await self._execute(relay.client_too_big(limit))
                    break
                await self._execute(commands)
        except (ConnectionError, aiohttp.ClientError):
            pass
        await self._execute(relay.client_closed())

    async def _pump_upstream(self) -> None:
        upstream = self._upstream
        assert upstream is not None
        relay = self._relay
        code, reason = 1006, "the backend connection was lost"
        try:
            while True:
                message = await upstream.receive()
                if message.type is WSMsgType.TEXT:
                    await self._forward_text(message.data, time.monotonic())
                elif message.type is WSMsgType.BINARY:
                    await self._execute(relay.upstream_binary(message.data))
                else:
                    if message.type is WSMsgType.CLOSE:
                        code, reason = int(message.data), str(message.extra or "")
                    elif upstream.close_code is not None:
                        code = upstream.close_code
                    break
        except (ConnectionError, aiohttp.ClientError):
            pass
        if self._client.closed:
            return
        commands = relay.upstream_closed(code, reason)
        if is_sendable_close_code(code):
            await self._execute(commands)
        else:
            self._drop_client(commands)

    def _drop_client(self, commands: list[Command]) -> None:
        """The backend's connection was lost without a close frame: the client's goes the
        same way (no close frame), once the relay's failure record is submitted.

        The relay would answer the turn with an Error phrase and a normal close (SDK:
        ServiceError); directly, the SDKs see a dropped connection (ConnectionFailure) and
        retry differently (protocol.md §5.3, 8). Closing the transport still delivers
        what was already relayed, then ends the TCP connection."""
        _submit(self._state, commands)
        if self._transport is not None:
            self._transport.close()

    async def _forward_text(self, frame: str, now: float) -> None:
        """`_execute(relay.upstream_text(frame, now))`, but the client gets the frame before
        the tap reads it: a phrase's JSON and outcome record cost the client no latency.
        The record is submitted in `finally`, so a pump cancelled while it sends keeps it."""
        relay = self._relay
        if relay.ended:  # the client's turn was answered by the gateway
            return
        try:
            if not self._client.closed:
                await self._client.send_str(frame)
        finally:
            _submit(self._state, relay.observe_upstream_text(frame, now))

    def _note(self, commands: list[Command]) -> None:
        """Submit the records and note the limit hits among `commands` (no I/O)."""
        for command in commands:
            if isinstance(command, Emit):
                self._state.submit(command.record)
            elif isinstance(command, LimitHit):
                note_limit_hit(self._state, command.limit, self._route, "usp", command.detail)

    async def _execute(self, commands: list[Command]) -> None:
        # Records and limit hits first: they need no I/O, and a pump cancelled while it
        # sends or closes must not lose them (e.g. our own CloseClient wakes the client
        # pump, which can finish first; `run` then cancels this pump inside `close`).
        self._note(commands)
        for command in commands:
            match command:
                case ToUpstream(frame=frame, starts_turn=starts_turn):
                    await self._to_upstream(frame, starts_turn)
                case ToClient(frame=frame):
                    if self._client.closed:
                        continue
                    if isinstance(frame, str):
                        await self._client.send_str(frame)
                    else:
                        await self._client.send_bytes(frame)
                case CloseClient(code=code, reason=reason):
                    await self._close_client(code, reason)
                case CloseUpstream(code=code):
                    if self._upstream is not None:
                        await self._upstream.close(code=code)
                case Emit() | LimitHit():
                    pass  # submitted and noted above
                case _:
                    assert_never(command)

    async def _to_upstream(self, frame: str | bytes, starts_turn: bool) -> None:
        upstream = self._upstream
        if upstream is not None and not upstream.closed:
            if isinstance(frame, str):
                await upstream.send_str(frame)
            else:
                await upstream.send_bytes(frame)
        for link in self._shadows:
            link.offer(frame, starts_turn)

    async def close(self, code: int, reason: str) -> None:
        """Close the session from outside (a drain): the client gets `code`."""
        if not self._client.closed:
            await self._execute(self._relay.shut_down(code, reason))

    async def _close_client(self, code: int, reason: str) -> None:
        """Close the client's WebSocket with `code`, reading what it still sends meanwhile.

        Closing while the client pump is reading would make aiohttp close the socket at
        once; with the client's audio still unread, TCP then resets the connection and the
        client loses the close frame already on its way (the SDK sees a dropped connection
        instead of the code). So the pump stops first, and `close` itself reads (and drops)
        the client's remaining frames until its close reply or aiohttp's close timeout.
        """
        pump = self._client_pump
        if pump is not None and pump is not asyncio.current_task() and not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if self._closing is None:
            # In a task of its own: the pump that ends first makes `run` cancel the others,
            # and cancelling `close` midway would drop the connection instead (the SDK would
            # see an abort, not the code). `run` waits for it.
            message = close_reason(reason)
            self._closing = asyncio.create_task(
                self._client.close(code=code, message=message), name="usp-client-close"
            )
        await asyncio.shield(self._closing)

    def _on_shadow_text(self, variant: str, frame: str, now: float) -> None:
        _submit(self._state, self._relay.shadow_text(variant, frame, now))

    def _on_shadow_failure(self, variant: str, error_code: str, detail: str) -> None:
        log.warning("shadow_failed", variant=variant, error_code=error_code)
        _submit(self._state, self._relay.shadow_failed(variant, error_code, detail))


async def handle_usp(
    request: web.Request, state: GatewayState, route: Route, admission: Admission
) -> web.StreamResponse:
    """Relay one Speech SDK connection along an already planned route, if admitted."""
    offered = offered_protocols(request.headers)
    # Checked before the backend is dialled: a request that is no WebSocket upgrade would
    # fail in `prepare` and leave a backend session open that nothing ever closes.
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise web.HTTPBadRequest(text="This path takes a WebSocket upgrade.")
    admitted_at = time.monotonic()
    refusal = admission.admit(route.client.name, state.sessions, admitted_at)
    if refusal is not None:
        # 429 → TooManyRequests, 503 → ServiceUnavailable in the native SDK (§5.1).
        return refuse(state, route, "usp", refusal)
    # Held from here, with nothing awaited since the check: the dial below awaits, and
    # every upgrade in flight must count against the limits meanwhile. Counted under the
    # assigned variant, also when the session fails over to control.
    experiment = route.experiment.id if route.experiment is not None else None
    with state.sessions.hold(route.client.name, "usp", experiment, route.variant.name) as live:
        headers = request.headers
        route, dialled = await _dial(state, route, headers, offered)
        relay = _relay_for(state, route, admitted_at, request.app.get(CAPTURE_WRITER))
        upstream: aiohttp.ClientWebSocketResponse | None = None
        pending: list[Command] = []
        if isinstance(dialled, UpstreamRejected):
            # The SDK maps the status to its error code (401 → AuthenticationFailure, ...).
            _submit(state, relay.upstream_rejected(dialled.error_code, dialled.detail))
            return backend_answer(dialled)
        if isinstance(dialled, UpstreamError):
            backend = route.variant.backend.name
            log.warning("upstream_unavailable", backend=backend, error=dialled.error_code)
            pending = relay.upstream_unavailable(dialled.error_code, dialled.detail)
            # The gateway answers this session's turns itself, as the service would.
            chosen = USP_PROTOCOL if USP_PROTOCOL in offered else None
        else:
            upstream = dialled
            chosen = upstream.protocol  # the backend's choice, among the client's offers
        client = _client_socket(state, chosen)
        try:
            await client.prepare(request)
        except BaseException:
            # The client left while the backend was dialled: its backend session goes too.
            if upstream is not None:
                await upstream.close()
            raise
        session = _Session(state, route, relay, client, upstream, request.transport)
        _submit(state, pending)
        if upstream is not None:
            session.start_shadows(headers, offered)
        live.closer = session.close
        with contextlib.suppress(ConnectionError):
            await session.run()
    return client


def offered_protocols(headers: CIMultiDictProxy[str]) -> tuple[str, ...]:
    """The subprotocols the client offered, in its order and spelling (none from the JS
    SDK, `USP` from the native one): exactly these are offered to the backend."""
    values = headers.getall(SEC_WEBSOCKET_PROTOCOL, ())
    tokens = (token.strip() for value in values for token in value.split(","))
    return tuple(token for token in tokens if token)


def backend_answer(rejected: UpstreamRejected) -> web.Response:
    """The backend's answer to the upgrade as the client gets it: the same status and
    reason, the headers and body `gateway.server.relay.upstream` let through."""
    try:
        response = web.Response(
            status=rejected.status, reason=rejected.reason or None, body=rejected.body or None
        )
    except ValueError:  # a reason aiohttp cannot send (a line break): the standard one
        response = web.Response(status=rejected.status, body=rejected.body or None)
    for name, value in rejected.headers:
        response.headers.add(name, value)
    return response


def _client_socket(state: GatewayState, protocol: str | None) -> RelayedWebSocket:
    # No permessage-deflate: browsers offer it, and then every 3,200-byte audio frame would
    # be inflated here (about 13 us each, against 0.7 us to parse it plain) and every result
    # deflated, for audio that barely compresses. The SDKs work either way.
    return RelayedWebSocket(
        protocols=(protocol,) if protocol else (),
        max_msg_size=state.settings.limits.max_ws_message_bytes,
        autoping=True,
        compress=False,
    )


def _relay_for(
    state: GatewayState, route: Route, admitted_at: float, captures: CaptureWriter | None
) -> RelaySession:
    facts = session_facts(state, route, protocol="usp")
    primary = RoleFacts(Role.PRIMARY, route.variant.name, route.variant.backend.name)
    shadows = [RoleFacts(Role.SHADOW, v.name, v.backend.name) for v in route.shadows]
    limits = session_limits(state.settings.limits)
    capture = None
    if captures is not None:
        names = tuple(v.name for v in route.shadows)
        capture = captures.for_session(facts, route.variant.name, names)
    return RelaySession(
        facts, primary, shadows, limits=limits, started=admitted_at, capture=capture
    )


def session_limits(limits: LimitSettings) -> SessionLimits:
    """The relay's view of `gateway.limits`. Binary (audio) messages keep the codec's 64 KiB
    bound unless the WebSocket limit is smaller; text messages may use the whole of it."""
    usp = UspLimits(
        max_header_bytes=limits.max_usp_header_bytes,
        max_text_bytes=limits.max_ws_message_bytes,
        max_binary_bytes=min(limits.max_ws_message_bytes, DEFAULT_LIMITS.max_binary_bytes),
    )
    return SessionLimits(
        usp=usp,
        max_turn_audio_bytes=limits.max_turn_audio_bytes,
        max_session_audio_bytes=limits.max_session_audio_bytes,
        max_session_s=limits.max_session_s,
        idle_timeout_s=limits.idle_timeout_s,
    )


async def _dial(
    state: GatewayState, route: Route, headers: Mapping[str, str], protocols: tuple[str, ...]
) -> tuple[Route, aiohttp.ClientWebSocketResponse | UpstreamError]:
    """The route that was dialled and its backend socket, or the error of the last dial.

    An open circuit breaker or a failed dial of a challenger's backend sends the session to
    control (`BackendGate`); a refused session gets the breaker's error without a dial.
    """
    gate = state.backends
    admitted = gate.admit(route)
    if admitted is None:
        name = route.variant.backend.name
        return route, UpstreamUnavailable(BREAKER_OPEN, f"the backend {name} is unavailable")
    route = admitted
    dialled = await _connect(state, route, headers, protocols)
    if isinstance(dialled, UpstreamError):
        fallback = gate.fallback(route, dialled)
        if fallback is not None:
            log.warning("failover", backend=route.variant.backend.name, error=dialled.error_code)
            route = fallback
            dialled = await _connect(state, route, headers, protocols)
    return route, dialled


async def _connect(
    state: GatewayState, route: Route, headers: Mapping[str, str], protocols: tuple[str, ...]
) -> aiohttp.ClientWebSocketResponse | UpstreamError:
    variant = route.variant
    try:
        upstream = await connect_ws(
            state.http,
            variant.backend.ws_url(route.path, route.upstream_query(variant)),
            route.upstream_headers(variant, headers),
            protocols=protocols,
            timeout_s=state.settings.connect_timeout_s,
        )
    except UpstreamError as exc:
        state.backends.report(route, exc)
        return exc
    state.backends.report(route, None)
    return upstream


def _submit(state: GatewayState, commands: list[Command]) -> None:
    for command in commands:
        if isinstance(command, Emit):
            state.submit(command.record)


def close_reason(reason: str) -> bytes:
    """`reason` as a close frame may carry it: at most 123 bytes of UTF-8 (RFC 6455 §5.5),
    cut at a character boundary, so the client never gets invalid UTF-8 (a 1007 error)."""
    encoded = reason.encode("utf-8", "replace")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return encoded
    return encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode()


def _too_big(error: object) -> bool:
    """Whether aiohttp's ERROR message is its refusal of a message over max_msg_size."""
    return isinstance(error, aiohttp.WebSocketError) and error.code == CloseCode.MESSAGE_TOO_BIG
