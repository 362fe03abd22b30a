"""Serving the gateway: its listening socket, signals and the drain before shutdown.

`serve` is what `speech-gateway serve` runs.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from gateway.config.settings import Settings
from gateway.event_loop import new_event_loop
from gateway.logging import get_logger
from gateway.server.app import create_gateway_app
from gateway.server.state import STATE

# The gateway's listen backlog: connections the kernel completes before the loop accepts them.
LISTEN_BACKLOG = 4096


def serve(settings: Settings) -> None:
    """Run the gateway on its own event loop until a signal has drained it."""
    app = create_gateway_app(settings)
    loop = new_event_loop()
    try:
        loop.run_until_complete(_run_gateway(app, settings))
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _run_gateway(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain (docs/observability.md).

    Not `web.run_app`: on a signal it closes the listening socket before anything else, so
    `/readyz` could not say 503 while the live sessions finish, and it gives them only the
    server's shutdown timeout before cancelling their handlers. Here the drain comes first
    (new sessions get 503, `/readyz` too, live ones have `gateway.drain.grace_s`, then 1012),
    and only then the runner's cleanup: stop listening, end the handlers, close the app
    (which flushes the outcome sink). A second signal cuts the grace period short.
    """
    log = get_logger("gateway.serve")
    gateway = settings.gateway
    state = app[STATE]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            state.cut_grace()
        else:
            log.info("shutdown_signal", signal=signum.name)
            stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:  # before start-up: a signal during it drains right after it
        loop.add_signal_handler(signum, on_signal, signum)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=gateway.drain.close_timeout_s
    )
    try:
        await runner.setup()
        try:
            # aiohttp's default accept backlog (128) overflows when a fleet reconnects at
            # once (`connection_burst`): the kernel then drops or resets the odd connection.
            # The kernel caps it at net.core.somaxconn (4096 on current kernels).
            site = web.TCPSite(runner, gateway.host, gateway.port, backlog=LISTEN_BACKLOG)
            await site.start()
            await stop.wait()
            await state.drain(gateway.drain.grace_s, gateway.drain.close_timeout_s)
        finally:
            await runner.cleanup()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    log.info("gateway_stopped")
