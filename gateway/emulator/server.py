"""The emulator's HTTP/WebSocket server: the only emulator module that touches sockets.

Routes: USP over WebSocket on the three v1 recognition paths and both universal v2 paths;
REST short audio (POST) on the v1 paths; `POST /sts/v1.0/issueToken`; `/`, `/ready` and
`/status`; the Custom Speech API subset and the endpoint switch (`custom_speech_api`).
Each WebSocket connection gets its own `UspSession` (no per-connection state on the app),
driven here by executing the commands the session returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import assert_never

from aiohttp import WSMsgType, web

from gateway.config.settings import EmulatorSettings
from gateway.emulator import auth, custom_speech_api, options, rest
from gateway.emulator.app_state import STATE, EmulatorState, unauthorized
from gateway.emulator.custom_speech import Catalog
from gateway.emulator.endpoints import EndpointTable
from gateway.emulator.engines import Engine, create_engine
from gateway.emulator.faults import FaultInjector, HttpFailure
from gateway.emulator.recognition import RecognitionStream, StreamCall
from gateway.emulator.usp_session import (
    Close,
    CloseStream,
    Command,
    Failure,
    Feed,
    Finish,
    OpenStream,
    Send,
    UspSession,
)
from gateway.errors import CloseCode, RecognitionError, UspError
from gateway.event_loop import new_event_loop
from gateway.logging import get_logger
from gateway.protocol.paths import USP_PATHS, V1_PATHS
from gateway.protocol.usp import DEFAULT_LIMITS, decode_binary, decode_text

log = get_logger(__name__)


def create_app(settings: EmulatorSettings) -> web.Application:
    app = web.Application(client_max_size=settings.max_rest_body_bytes)
    endpoints = EndpointTable(settings.custom, fallback_after_s=settings.faults.fallback_after_s)
    state = EmulatorState(
        settings=settings,
        engine=create_engine(settings),
        key=settings.resolved_key(),
        faults=FaultInjector(settings.faults),
        endpoints=endpoints,
        catalog=Catalog(frozenset(settings.custom), settings.model_expiry, endpoints.created_at),
    )
    app[STATE] = state
    for path in USP_PATHS:
        app.router.add_get(path, usp_handler)
    for path in V1_PATHS:
        app.router.add_post(path, rest.rest_handler)
    app.router.add_post("/sts/v1.0/issueToken", issue_token_handler)
    app.router.add_post("/sts/v1.0/issuetoken", issue_token_handler)
    app.router.add_get("/", home_handler)
    app.router.add_get("/ready", ready_handler)
    app.router.add_get("/status", status_handler)
    custom_speech_api.add_routes(app)
    app.on_startup.append(_start_engine)
    app.on_cleanup.append(_stop_engine)
    return app


async def _start_engine(app: web.Application) -> None:
    state = app[STATE]
    await state.engine.start()
    state.ready = True
    state.endpoints.start()
    log.info("emulator_ready", engine=state.engine.name, models=sorted(state.engine.models))


async def _stop_engine(app: web.Application) -> None:
    state = app[STATE]
    state.ready = False
    await state.engine.close()


async def home_handler(request: web.Request) -> web.Response:
    engine = request.app[STATE].engine
    return web.Response(text=f"speech-gateway emulator ({engine.name} engine)\n")


async def ready_handler(request: web.Request) -> web.Response:
    ready = request.app[STATE].ready
    return web.Response(status=200 if ready else 503, text="ready\n" if ready else "starting\n")


async def status_handler(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "status": "ok" if state.ready else "starting",
            "engine": state.engine.name,
            "models": sorted(state.engine.models),
            "active_sessions": state.active_sessions,
            "served_sessions": state.served_sessions,
            "max_sessions": state.settings.max_sessions,
        }
    )


async def issue_token_handler(request: web.Request) -> web.Response:
    key = request.app[STATE].key
    offered = request.headers.get(auth.KEY_HEADER)
    if key is not None and not auth.authorized(key, {auth.KEY_HEADER: offered or ""}, {}):
        raise web.HTTPUnauthorized(text="Access denied due to invalid subscription key.")
    return web.Response(text=auth.issue_token(key or "no-key-configured"))


async def usp_handler(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if not auth.authorized(state.key, request.headers, request.query):
        raise unauthorized()
    if not state.ready:
        raise web.HTTPServiceUnavailable(text="The emulator is still loading its models.")
    failure = state.faults.draw()
    if isinstance(failure, HttpFailure):
        return web.Response(status=failure.status, text="Injected failure.")
    try:
        url_options = options.from_query(request.path, request.query)
    except UspError as exc:
        raise web.HTTPBadRequest(text=exc.reason) from None
    if state.endpoints.resolve(url_options.endpoint_id) is None:
        raise web.HTTPBadRequest(text="Unknown endpoint id (cid).")
    ws = web.WebSocketResponse(protocols=("USP",), max_msg_size=DEFAULT_LIMITS.max_text_bytes)
    # Handshake before admission: a request that is no WebSocket upgrade fails here and
    # must not take a session slot it would never give back.
    await ws.prepare(request)
    admitted = state.admit()
    if not admitted:
        # The service's answer to too many concurrent sessions: the native SDK reports
        # TooManyRequests and does not retry (a status phrase would be retried 5 times).
        failure = Failure(close_code=CloseCode.TOO_MANY_REQUESTS)
    session = UspSession(request.path, url_options, state.endpoints.resolve, failure)
    driver = _SessionDriver(ws, session, state.engine, state.faults.latency_s)
    try:
        await driver.serve()
    finally:
        await driver.shutdown()
        if admitted:
            state.release()
    return ws


class _SessionDriver:
    """Executes one UspSession's commands against its socket and recognition stream."""

    def __init__(
        self, ws: web.WebSocketResponse, session: UspSession, engine: Engine, latency_s: float
    ) -> None:
        self._ws = ws
        self._session = session
        self._engine = engine
        self._latency_s = latency_s
        self._stream: RecognitionStream | None = None

    async def serve(self) -> None:
        try:
            async for message in self._ws:
                if message.type is WSMsgType.TEXT:
                    commands = self._session.receive_text(decode_text(message.data))
                elif message.type is WSMsgType.BINARY:
                    commands = self._session.receive_binary(decode_binary(message.data))
                else:
                    break
                if not await self._run(commands):
                    break
        except UspError as exc:
            log.info("usp_protocol_error", reason=exc.reason, close_code=int(exc.close_code))
            await self._ws.close(code=exc.close_code, message=exc.reason.encode()[:120])
        except ConnectionError:
            pass  # the client went away mid-send
        if self._ws.close_code == CloseCode.MESSAGE_TOO_BIG:
            log.info("usp_message_too_big")

    async def shutdown(self) -> None:
        await self._run(self._session.connection_closed())
        if self._stream is not None:
            await self._stream.close()
            self._stream = None

    async def _run(self, commands: Iterable[Command]) -> bool:
        """Execute commands in order; follow-up commands run before the rest. False: closed."""
        queue: deque[Command] = deque(commands)
        while queue:
            command = queue.popleft()
            follow_up: list[Command] = []
            match command:
                case Send(frame=frame, is_result=is_result):
                    if is_result and self._latency_s:
                        await asyncio.sleep(self._latency_s)
                    if self._ws.closed:
                        return False
                    await self._ws.send_str(frame)
                case OpenStream(config=config):
                    try:
                        self._stream = await self._engine.open_stream(config)
                    except RecognitionError as exc:
                        log.warning("recognizer_open_failed", error=str(exc))
                        follow_up = self._session.recognizer_failed()
                        queue.clear()
                case Feed(pcm=pcm):
                    follow_up = await self._recognize(lambda s: s.feed(pcm), finishing=False)
                case Finish():
                    follow_up = await self._recognize(lambda s: s.finish(), finishing=True)
                case CloseStream():
                    if self._stream is not None:
                        await self._stream.close()
                        self._stream = None
                case Close(code=code, reason=reason):
                    await self._ws.close(code=code, message=reason.encode()[:120])
                    return False
                case _:
                    assert_never(command)
            queue.extendleft(reversed(follow_up))
        return True

    async def _recognize(self, call: StreamCall, *, finishing: bool) -> list[Command]:
        if self._stream is None:
            return []
        try:
            events = await call(self._stream)
        except RecognitionError as exc:
            log.warning("recognizer_failed", error=str(exc))
            return self._session.recognizer_failed()
        if finishing:
            return self._session.stream_finished(events)
        return self._session.recognized(events)


def run(emulator: EmulatorSettings) -> None:
    """Serve the emulator until interrupted (`speech-gateway emulate`)."""
    app = create_app(emulator)
    web.run_app(
        app,
        host=emulator.host,
        port=emulator.port,
        print=None,
        access_log=None,
        loop=new_event_loop(),
    )
