"""Serving the gateway: its listening socket, signals and the drain before shutdown.

`serve` runs one gateway process: `speech-gateway serve` itself (the default, one
process), or each worker of `speech-gateway serve --workers N`, which passes a
`WorkerRole` (`gateway.server.workers`: the supervisor, the shared port and the merged
metrics) for what a worker adds around the same serving and drain.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable
from typing import Final, Protocol

from aiohttp import web

from gateway.config.settings import Settings
from gateway.event_loop import new_event_loop
from gateway.logging import get_logger
from gateway.server.app import create_gateway_app
from gateway.server.state import STATE

# The gateway's listen backlog: connections the kernel completes before the loop accepts them.
LISTEN_BACKLOG = 4096
# The youngest generation's threshold once serving (CPython's default: 700). See `tune_gc`.
# What a supervisor sends its workers to cut the drain's grace period short (a second
# SIGTERM may be the init system's own, sent to every process of the group).
CUT_GRACE_SIGNAL: Final = signal.SIGUSR1
GC_GEN0_THRESHOLD: Final = 50_000
GC_OLDER_THRESHOLDS: Final = (20, 20)


class WorkerRole(Protocol):
    """What a worker of `serve --workers N` adds to the serving of one process."""

    def prepare(self, app: web.Application) -> None:
        """Before start-up: the app is still open to new keys (the merged /metrics)."""

    async def started(self, app: web.Application, stop: Callable[[], None]) -> None:
        """The port is listening: start the worker's own parts and report it ready;
        `stop()` starts the drain as a SIGTERM would (the supervisor is gone)."""

    async def stopped(self) -> None:
        """The drain is over; before the app's cleanup flushes the outcome records."""


def serve(settings: Settings, role: WorkerRole | None = None) -> None:
    """Run the gateway on its own event loop until a signal has drained it."""
    app = create_gateway_app(settings)
    if role is not None:
        role.prepare(app)
    loop = new_event_loop()
    try:
        loop.run_until_complete(_run_gateway(app, settings, role))
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def tune_gc() -> None:
    """Tune the garbage collector for serving, once start-up is over.

    Start-up leaves hundreds of thousands of long-lived objects (modules, settings, the
    validated configuration, compiled patterns, pydantic's schemas) that CPython's full
    collections would otherwise walk again and again, each walk a pause of the event loop
    that every live stream feels as latency. `gc.freeze()` moves them out of the collector's
    view for good (after one collection, so that start-up's garbage is not kept forever).
    The relay allocates many short-lived containers per audio frame, nearly all freed by
    reference counting; with the default first threshold (700) that still triggers a young
    collection every few frames and promotes survivors into older generations, which makes
    the full collections come sooner. A larger first generation collects as much, in fewer
    and cheaper passes. Memory made of reference cycles lives a little longer; that is all.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *GC_OLDER_THRESHOLDS)


async def _run_gateway(
    app: web.Application, settings: Settings, role: WorkerRole | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then drain (docs/observability.md).

    Not `web.run_app`: on a signal it closes the listening socket before anything else, so
    `/readyz` could not say 503 while the live sessions finish, and it gives them only the
    server's shutdown timeout before cancelling their handlers. Here the drain comes first
    (new sessions get 503, `/readyz` too, live ones have `gateway.drain.grace_s`, then 1012),
    and only then the runner's cleanup: stop listening, end the handlers, close the app
    (which flushes the outcome sink). A second signal cuts the grace period short.

    A worker (`role`) listens with SO_REUSEPORT on the port its siblings share, and also
    stops, as on SIGTERM, when its supervisor is gone.
    """
    log = get_logger("gateway.serve")
    gateway = settings.gateway
    state = app[STATE]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if not stop.is_set():
            log.info("shutdown_signal", signal=signum.name)
            stop.set()
        elif role is None:
            state.cut_grace()
        # Under a supervisor a repeated SIGTERM/SIGINT is no second signal: an init system
        # sends the same SIGTERM to every process of the group, and the supervisor forwards
        # it a moment later. The supervisor's SIGUSR1 (its own second signal) cuts the grace.

    def on_orphaned() -> None:
        if not stop.is_set():  # a drain under way goes on as it is
            log.warning("supervisor_gone")
            stop.set()

    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:  # before start-up: a signal during it drains right after it
        loop.add_signal_handler(signum, on_signal, signum)
    if role is not None:
        loop.add_signal_handler(CUT_GRACE_SIGNAL, state.cut_grace)
        signals = (*signals, CUT_GRACE_SIGNAL)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=gateway.drain.close_timeout_s
    )
    try:
        await runner.setup()
        try:
            # aiohttp's default accept backlog (128) overflows when a fleet reconnects at
            # once (`connection_burst`): the kernel then drops or resets the odd connection.
            # The kernel caps it at net.core.somaxconn (4096 on current kernels).
            site = web.TCPSite(
                runner,
                gateway.host,
                gateway.port,
                backlog=LISTEN_BACKLOG,
                reuse_port=True if role is not None else None,
            )
            await site.start()
            if role is not None:
                await role.started(app, on_orphaned)
            tune_gc()
            await stop.wait()
            await state.drain(gateway.drain.grace_s, gateway.drain.close_timeout_s)
        finally:
            if role is not None:
                await role.stopped()
            await runner.cleanup()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    log.info("gateway_stopped")
