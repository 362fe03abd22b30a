"""REST short-audio relay: the request body streams to the backend as it arrives and the
answer streams back; one outcome record per request, built from what the relay saw by
`gateway.session.rest_tap`.

Latency is measured at the gateway: `final_latency_ms` from the last byte of the client's
audio to the first byte of the backend's answer, `total_ms` from the first audio byte.

A request is admitted (`gateway.server.admission`: 429/503 past the connection rate or the
concurrent sessions) and counted as a live session before the backend is contacted; a body
over `gateway.limits.max_rest_body_bytes` is answered 413, known from Content-Length or
found while it streams. Each refusal is recorded, logged and counted.

Content coding is the client's business, as directly: the backend is asked for what the
client accepts (its `Accept-Encoding`, none if it sent none; never aiohttp's own default),
and the answer goes back byte for byte with its `Content-Encoding`; the tap decodes a copy
for the record (`gateway.session.rest_tap.decoded`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.control.routing import Route
from gateway.errors import Limit, UpstreamRejected, UpstreamUnavailable
from gateway.logging import get_logger
from gateway.outcomes.record import Role
from gateway.protocol.usp import RecognitionStatus
from gateway.server.admission import Admission, record_limit_hit, refuse
from gateway.server.capture_writer import CAPTURE_WRITER
from gateway.server.relay.backend_gate import BREAKER_OPEN
from gateway.server.state import GatewayState, session_facts
from gateway.session.capture import SessionCapture
from gateway.session.rest_tap import broken_off_record, decoded, request_record
from gateway.session.taps import RoleFacts, SessionFacts, primary_failure

log = get_logger(__name__)

CHUNK = 64 * 1024
# Results are small JSON documents; only this much is kept for the outcome record.
MAX_TAPPED_BODY = 256 * 1024
_RESPONSE_HEADERS = ("Content-Type", "Content-Encoding")
_ACCEPT_ENCODING = "Accept-Encoding"


class _BodyTooLarge(Exception):
    """The client's body outgrew `limits.max_rest_body_bytes` while it streamed."""


class _BodyStalled(Exception):
    """The client's body paused longer than `limits.rest_body_timeout_s`."""


class _BodyClock:
    """Streams the client's body and notes when its first and last bytes arrived."""

    def __init__(self, request: web.Request, limit: int, stall_timeout_s: float) -> None:
        self._request = request
        self._limit = limit
        self._stall_timeout_s = stall_timeout_s
        self.first: float | None = None
        self.last: float | None = None
        self.size = 0
        self.too_large = False
        self.stalled = False
        self.client_failed = False  # the client's upload broke off: not the backend's fault
        self.capture: SessionCapture | None = None  # a sampled request of a consenting client

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except (ConnectionError, aiohttp.ClientPayloadError, asyncio.CancelledError):
            self.client_failed = True
            raise

    async def _chunks(self) -> AsyncIterator[bytes]:
        content = self._request.content
        while True:
            try:
                async with asyncio.timeout(self._stall_timeout_s):
                    chunk = await content.read(CHUNK)  # what has arrived, up to CHUNK
            except TimeoutError:
                # Like _BodyTooLarge: aiohttp's upload reports it as a ClientError.
                self.stalled = True
                raise _BodyStalled from None
            if not chunk:
                break
            if self.first is None:
                self.first = time.monotonic()
            self.size += len(chunk)
            if self.size > self._limit:
                # Raised inside aiohttp's upload, which reports it as a ClientError: the flag
                # tells the handler that the client, not the backend, is at fault.
                self.too_large = True
                raise _BodyTooLarge
            if self.capture is not None:
                self.capture.request_audio(chunk)
            yield chunk
        self.last = time.monotonic()

    def refusal(self, state: GatewayState, route: Route) -> web.HTTPException:
        """The answer to a body that broke a limit, recorded, logged and counted."""
        if not self.stalled:
            return _too_large(state, route, self._limit, self.size)
        detail = f"the request body paused for over {self._stall_timeout_s:g} s"
        status = RecognitionStatus.BAD_REQUEST
        record_limit_hit(state, route, "rest", Limit.REST_BODY_TIMEOUT, status, detail)
        return web.HTTPRequestTimeout(text="The request body stalled.")


def _too_large(
    state: GatewayState, route: Route, limit: int, size: int
) -> web.HTTPRequestEntityTooLarge:
    """Record, log and count a body over the limit; the 413 to raise."""
    detail = f"the request body exceeds {limit} bytes"
    status = RecognitionStatus.BAD_REQUEST
    record_limit_hit(state, route, "rest", Limit.REST_BODY, status, detail)
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)


async def handle_rest(
    request: web.Request, state: GatewayState, route: Route, admission: Admission
) -> web.StreamResponse:
    refusal = admission.admit(route.client.name, state.sessions, time.monotonic())
    if refusal is not None:
        return refuse(state, route, "rest", refusal)
    limits = state.settings.limits
    limit = limits.max_rest_body_bytes
    if request.content_length is not None and request.content_length > limit:
        # Known too large before a byte is read: refused without dialling the backend.
        raise _too_large(state, route, limit, request.content_length)
    # Held from the admission on, with nothing awaited in between (see usp_relay).
    experiment = route.experiment.id if route.experiment is not None else None
    with state.sessions.hold(route.client.name, "rest", experiment, route.variant.name):
        admitted = state.backends.admit(route)
        if admitted is None:
            detail = f"the backend {route.variant.backend.name} is unavailable"
            return _unavailable(state, route, BREAKER_OPEN, detail)
        body = _BodyClock(request, limit, limits.rest_body_timeout_s)
        return await _relay(request, state, admitted, body)


async def _relay(
    request: web.Request, state: GatewayState, route: Route, body: _BodyClock
) -> web.StreamResponse:
    while True:
        try:
            return await _forward(request, state, route, body)
        except _Unreachable as exc:
            # Nothing of the body was read yet (the connection failed first), so control
            # can take the request whole.
            fallback = None
            if body.first is None:
                fallback = state.backends.fallback(route, exc.error)
            if fallback is None:
                return _unavailable(state, route, exc.error.error_code, exc.error.detail)
            log.warning("failover", backend=route.variant.backend.name, error=exc.error.error_code)
            route = fallback


class _Unreachable(Exception):
    """The backend could not be connected, or did not answer, before the response began."""

    def __init__(self, error: UpstreamUnavailable) -> None:
        super().__init__(error.detail)
        self.error = error


def _unavailable(state: GatewayState, route: Route, error_code: str, detail: str) -> web.Response:
    variant = route.variant
    record = primary_failure(
        session_facts(state, route, "rest"),
        variant.name,
        variant.backend.name,
        status=RecognitionStatus.ERROR.value,
        error_code=error_code,
        detail=detail,
    )
    state.submit(record)
    return web.json_response({"error": "The speech service is unavailable."}, status=503)


async def _forward(
    request: web.Request, state: GatewayState, route: Route, body: _BodyClock
) -> web.StreamResponse:
    """Relay the request to `route`'s backend; `_Unreachable` if it could not be served."""
    variant = route.variant
    facts = session_facts(state, route, protocol="rest")
    role = RoleFacts(Role.PRIMARY, variant.name, variant.backend.name)
    captures = request.app.get(CAPTURE_WRITER)
    body.capture = None if captures is None else captures.for_session(facts, variant.name, ())
    try:
        return await _answer(request, state, route, body, facts, role)
    finally:
        if body.capture is not None:
            body.capture.release()  # however the request ended, its audio is given back


async def _answer(
    request: web.Request,
    state: GatewayState,
    route: Route,
    body: _BodyClock,
    facts: SessionFacts,
    role: RoleFacts,
) -> web.StreamResponse:
    """`_forward` once the request's facts are known: the backend's answer, relayed."""
    variant = route.variant
    url = variant.backend.http_url(route.path, route.upstream_query(variant))
    headers = route.upstream_headers(variant, request.headers)
    if _ACCEPT_ENCODING in request.headers:
        headers[_ACCEPT_ENCODING] = request.headers[_ACCEPT_ENCODING]
    settings = state.settings
    timeout = aiohttp.ClientTimeout(
        sock_connect=settings.connect_timeout_s, sock_read=settings.rest_timeout_s
    )
    response: web.StreamResponse | None = None
    try:
        async with state.http.post(
            url,
            data=body.chunks(),
            headers=headers,
            timeout=timeout,
            skip_auto_headers=(_ACCEPT_ENCODING,),
        ) as upstream:
            answered = time.monotonic()
            failed = UpstreamRejected(upstream.status, "") if upstream.status >= 500 else None
            state.backends.report(route, failed)
            response = web.StreamResponse(status=upstream.status)
            for name in _RESPONSE_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            if upstream.content_length is not None:
                # The body is relayed byte for byte (no decompression): the client gets the
                # backend's length, as directly, instead of a chunked encoding of it.
                response.content_length = upstream.content_length
            await response.prepare(request)
            tapped = bytearray()
            async for chunk in upstream.content.iter_chunked(CHUNK):
                if len(tapped) < MAX_TAPPED_BODY:
                    tapped += chunk[: MAX_TAPPED_BODY - len(tapped)]
                await response.write(chunk)
            await response.write_eof()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if body.too_large or body.stalled:
            raise body.refusal(state, route) from None
        if body.client_failed:
            # The client went away mid-upload: no outcome of the backend, nothing to count.
            log.info("rest_client_aborted", backend=variant.backend.name)
            return web.Response(status=400, text="The request body was cut off.")
        error = type(exc).__name__
        timed_out = isinstance(exc, TimeoutError)  # aiohttp's timeouts are TimeoutErrors too
        log.warning("rest_upstream_unavailable", backend=variant.backend.name, error=error)
        code = "upstream_timeout" if timed_out else "upstream_unreachable"
        if response is None:
            unreachable = UpstreamUnavailable(code, error)
            state.backends.report(route, unreachable)
            raise _Unreachable(unreachable) from None
        broken_off = broken_off_record(facts, role, code, error)
        state.submit(broken_off)
        if body.capture is not None:
            body.capture.request_record(broken_off)
        if not response.prepared:
            return web.json_response({"error": "The speech service is unavailable."}, status=503)
        # The backend's status line already went out, so no 503 can follow, and ending
        # the response normally would pass a truncated body off as whole: cut it off.
        if request.transport is not None:
            request.transport.close()
        return response
    record = request_record(
        facts,
        role,
        upstream.status,
        decoded(bytes(tapped), upstream.headers.get("Content-Encoding"), MAX_TAPPED_BODY),
        first=body.first,
        last=body.last,
        answered=answered,
    )
    state.submit(record)
    if body.capture is not None:
        body.capture.request_record(record)
    return response
