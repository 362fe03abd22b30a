"""The gateway's HTTP/WebSocket server: routes, client auth, and the app's lifetime.

Every path the Speech SDKs use is served: USP over WebSocket on the three v1 recognition
paths and both universal v2 paths, REST short audio (POST) on the v1 paths, the labels
and admin APIs with the live dashboard (`/dashboard`) and the review workbench (`/review`),
plus `/healthz` and `/readyz`. Each request is routed by `session.routing.plan_route`; the
outcome sink and the HTTP client pool live as long as the app. While the gateway drains
(`GatewayState.drain`, on SIGTERM) new sessions are refused with 503 and `/readyz` says so;
docs/observability.md describes the health endpoints, the metrics and the drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import aiohttp
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.config.capture import capture_policies, consenting_clients
from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import Settings
from gateway.control.plane import ControlPlane
from gateway.control.routing import Route, RouteError, plan_route
from gateway.errors import AuthError
from gateway.logging import get_logger
from gateway.outcomes.privacy import load_or_create_key
from gateway.protocol.paths import USP_PATHS, V1_PATHS
from gateway.server.admin.analysis import add_admin_routes
from gateway.server.admin.analysis_worker import OutcomeStore
from gateway.server.admin.audio import AUDIO_STORE, add_audio_routes
from gateway.server.admin.auth import AdminTokens
from gateway.server.admin.control import HEALTH_VIEW, add_control_routes
from gateway.server.admin.dashboard import add_dashboard_routes
from gateway.server.admin.labels import LABEL_STORE, add_label_routes
from gateway.server.admin.review import (
    PREFERENCE_STORE,
    REVIEW_LEASES,
    REVIEWER_TOKENS_FIELD,
    add_review_routes,
    create_review_stores,
)
from gateway.server.admission import ADMISSION, Admission, AdmissionPolicy
from gateway.server.capture_writer import CAPTURE_WRITER, CaptureWriter
from gateway.server.health.canary_runner import CanaryRunner
from gateway.server.health.monitor import HealthMonitor
from gateway.server.metrics import GatewayMetrics
from gateway.server.relay.backend_gate import BackendGate
from gateway.server.relay.rest import handle_rest
from gateway.server.relay.usp import handle_usp
from gateway.server.state import STATE, GatewayState
from gateway.stores.factory import (
    create_audio_store,
    create_control_stores,
    create_label_store,
    create_sink,
)
from gateway.stores.redis_client import RedisClient, reachable

log = get_logger(__name__)

LABEL_CLIENT = web.AppKey("label_redis_client", RedisClient | None)  # type: ignore[arg-type]
HEALTH_MONITOR: Final = web.AppKey("health_monitor", HealthMonitor)
CANARY_RUNNER: Final = web.AppKey("canary_runner", CanaryRunner)
CONTROL_CLIENT = web.AppKey("control_redis_client", RedisClient | None)  # type: ignore[arg-type]


class MetricsSource(Protocol):
    async def render(self) -> bytes:
        """The exposition `/metrics` answers with."""


# What `/metrics` answers when it is more than this process's registry: with
# `serve --workers N` (N > 1), every worker's series (`gateway.server.workers`). Unset, as
# in a single process: the app's own registry, unchanged.
METRICS_SOURCE: Final = web.AppKey("metrics_source", MetricsSource)


def create_gateway_app(settings: Settings) -> web.Application:
    """Validate the configuration and build the app; ConfigError if anything is wrong."""
    gateway = settings.gateway
    config = build_gateway_config(gateway)
    outcomes = settings.outcomes
    key = outcomes.resolved_pseudonym_key() or load_or_create_key(outcomes.generated_key_path)
    app = web.Application(client_max_size=gateway.limits.max_rest_body_bytes)
    app[ADMISSION] = Admission(AdmissionPolicy.from_limits(gateway.limits))
    redis = settings.redis.connection()
    label_store, label_client = create_label_store(outcomes, redis)
    app[LABEL_STORE] = label_store
    app[LABEL_CLIENT] = label_client
    control_store, counters, control_client = create_control_stores(
        gateway.control, outcomes, redis, label_client
    )
    app[CONTROL_CLIENT] = control_client
    metrics = GatewayMetrics()
    control = ControlPlane(
        config,
        control_store,
        counters,
        metrics,
        reconcile_s=gateway.control.reconcile_s,
        guardrail_interval_s=gateway.control.guardrail_interval_s,
    )
    app[STATE] = GatewayState(
        settings=gateway,
        control=control,
        backends=BackendGate(gateway.breaker.policy(), gateway.breaker.on_open, metrics),
        metrics=metrics,
        sink=create_sink(outcomes, redis),
        text_privacy=outcomes.text_privacy,
        privacy_key=key,
    )
    metrics.watch_sink(app[STATE].sink)
    # The audio store serves deletion by unit even where nothing is captured.
    audio_store = create_audio_store(gateway.audio)
    app[AUDIO_STORE] = audio_store
    captures = CaptureWriter(
        audio_store,
        capture_policies(gateway.experiments),
        consenting_clients(gateway.clients),
        gateway.audio,
        metrics,
    )
    if captures.enabled:
        app[CAPTURE_WRITER] = captures
    # Every app has a monitor, so that the admin view's health block is there (empty) even
    # without canaries or managed endpoints.
    monitor = HealthMonitor(control, metrics)
    app[HEALTH_MONITOR] = monitor
    app[HEALTH_VIEW] = monitor
    app.middlewares.append(refuse_while_draining)
    for path in USP_PATHS:
        app.router.add_get(path, usp_route, expect_handler=expect_continue)
    for path in V1_PATHS:
        app.router.add_post(path, rest_route, expect_handler=expect_continue)
    admins = AdminTokens.from_digests(gateway.admin_tokens_sha256)
    add_label_routes(app, admins)
    add_control_routes(app, admins)
    add_admin_routes(app, admins, OutcomeStore(outcomes, redis, gateway.audio))
    add_audio_routes(app, admins)
    app[PREFERENCE_STORE], app[REVIEW_LEASES] = create_review_stores(
        outcomes.path, label_client, redis.prefix
    )
    reviewers = AdminTokens.from_digests(gateway.reviewer_tokens_sha256, REVIEWER_TOKENS_FIELD)
    add_review_routes(app, reviewers, admins)
    add_dashboard_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    state = app[STATE]
    # The client pool must be created inside the running event loop.
    # No pool limit: every relayed WebSocket holds its upstream connection for the whole
    # session, so aiohttp's default of 100 would make session 101 wait for a free slot
    # until its connect timeout. The number of sessions is bounded where they come in.
    connector = aiohttp.TCPConnector(limit=0)
    state.http = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    await state.sink.start()
    await state.control.start()
    captures = app.get(CAPTURE_WRITER)
    if captures is not None:
        await captures.start()
    monitor = app[HEALTH_MONITOR]
    await monitor.start(state.http)
    if state.config.health.run:
        runner = CanaryRunner(
            config=lambda: state.control.config,
            http=state.http,
            submit=state.submit,
            metrics=state.metrics,
            on_round=monitor.round_finished,
            connect_timeout_s=state.settings.connect_timeout_s,
        )
        await runner.start()  # ConfigError if a canary set cannot be read
        app[CANARY_RUNNER] = runner
    log.info(
        "gateway_ready",
        experiments=[e.id for e in state.config.experiments],
        clients=len(state.config.clients),
    )


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    # The canaries first, so that their last records still reach the sink.
    runner = app.get(CANARY_RUNNER)
    if runner is not None:
        await runner.close()
    await app[HEALTH_MONITOR].close()
    # After the sessions (the drain): what they captured is stored before the store closes.
    captures = app.get(CAPTURE_WRITER)
    if captures is not None:
        await captures.close()
        log.info("captures_flushed", stored=captures.stored, dropped=captures.dropped)
    else:
        await app[AUDIO_STORE].close()
    await state.sink.close()
    log.info("outcomes_flushed", written=state.sink.written, dropped=state.sink.dropped)
    await state.control.close()
    await state.http.close()
    for client in (app[LABEL_CLIENT], app[CONTROL_CLIENT]):
        if client is not None:
            await client.aclose()


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` as aiohttp answers it; any other value gets a fixed 417.
    (aiohttp's own handler echoes the value in its 417, and a value that is not UTF-8
    turned that into a 500.)"""
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Only Expect: 100-continue is supported.")
    if request.version == aiohttp.HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the process answers HTTP. Nothing else is checked (a liveness probe that
    failed on Redis would restart every replica when Redis goes away)."""
    return web.Response(text="ok\n")


async def metrics_route(request: web.Request) -> web.Response:
    source = request.app.get(METRICS_SOURCE)
    body = request.app[STATE].metrics.render() if source is None else await source.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def readyz(request: web.Request) -> web.Response:
    """Ready: not draining; the experiments' live state has been read (a replica that
    serves the configured weights while the shared state says otherwise would split
    traffic wrongly); and, with `gateway.ready_requires_redis`, every Redis the gateway uses
    answers a PING within a second. Without it a Redis outage is named in a 200 answer: the
    gateway serves on through it (records wait in the journal), and taking every replica
    out of the load balancer at once would stop all traffic."""
    app = request.app
    state = app[STATE]
    if state.draining:
        return web.Response(status=503, text="draining: the gateway is shutting down\n")
    if not state.control.loaded:
        return web.Response(status=503, text="the experiment state store is unreachable\n")
    down = await _unreachable_redis(app)
    if not down:
        return web.Response(text="ok\n")
    outage = f"redis unreachable: {', '.join(down)}"
    if state.settings.ready_requires_redis:
        return web.Response(status=503, text=outage + "\n")
    return web.Response(text=f"ok, degraded: {outage}\n")


READY_PING_TIMEOUT_S: Final = 1.0
# Requests for a session (USP upgrades, REST recognition), refused while draining.
_SESSION_PATHS: Final = frozenset(USP_PATHS) | frozenset(V1_PATHS)


async def _unreachable_redis(app: web.Application) -> list[str]:
    """The roles of the app's Redis clients that do not answer a PING in time. The label
    client is the outcome store's Redis (the sink's own connection goes to the same URL)."""
    clients = {"outcomes": app[LABEL_CLIENT], "control": app[CONTROL_CLIENT]}
    named = [(name, client) for name, client in clients.items() if client is not None]
    answers = await asyncio.gather(
        *(reachable(client, READY_PING_TIMEOUT_S) for _name, client in named)
    )
    return [name for (name, _client), up in zip(named, answers, strict=True) if not up]


@web.middleware
async def refuse_while_draining(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """While draining, a new session gets 503 (the SDKs retry, through the load balancer to
    another replica); the health, metrics and admin endpoints keep answering."""
    if request.path in _SESSION_PATHS and request.app[STATE].draining:
        response = web.Response(status=503, text="The gateway is shutting down; try again.")
        response.headers["Retry-After"] = "1"
        response.force_close()
        return response
    return await handler(request)


def _route(request: web.Request) -> Route:
    state = request.app[STATE]
    try:
        return plan_route(
            state.config,
            request.path,
            list(request.query.items()),
            request.headers,
            force_param=state.settings.force_param,
        )
    except AuthError:
        raise web.HTTPUnauthorized(
            text="Access denied due to invalid subscription key or wrong API endpoint."
        ) from None
    except RouteError as exc:
        raise _http_error(exc) from None


def _http_error(exc: RouteError) -> web.HTTPException:
    if exc.status == 403:
        return web.HTTPForbidden(text=exc.reason)
    return web.HTTPBadRequest(text=exc.reason)


async def usp_route(request: web.Request) -> web.StreamResponse:
    route = _route(request)
    return await handle_usp(request, request.app[STATE], route, request.app[ADMISSION])


async def rest_route(request: web.Request) -> web.StreamResponse:
    route = _route(request)
    return await handle_rest(request, request.app[STATE], route, request.app[ADMISSION])
