"""`speech-gateway serve --workers N`: N gateway processes on one port, and their supervisor.

One gateway process uses one core (docs/operations.md, "Capacity planning"). With N > 1 the
command becomes a supervisor that forks N workers, each a whole gateway (`serve.serve`,
the same app, drain and outcome flush as a single process), and stays out of the traffic:

* **The port: SO_REUSEPORT.** Each worker binds its own listening socket to the same
  address with SO_REUSEPORT, and the kernel spreads new connections over the workers by a
  hash of the connection. Chosen over one socket accepted by every worker (a pre-fork),
  because with asyncio every idle worker wakes on each connection and the one that wins is
  often the busiest (its loop is awake anyway): connections pile onto one worker, the very
  thing N workers are for. With SO_REUSEPORT each worker has its own accept queue, a
  worker is replaced by binding again, and no socket is handed over. The supervisor itself
  binds (and holds, without listening) a socket on the port first: the port is checked
  once, with a clear error, and no other program can take it while a worker restarts.
  Linux only (the kernel's balancing); elsewhere N > 1 is refused. Linux lets only
  sockets of the same user join a port's group: no other user can take a share. A
  connection still in the accept queue of a worker that crashes is reset; the SDKs
  reconnect.
* **Fork, not spawn.** The settings are loaded and validated once, by the supervisor; each
  worker is forked from it (no threads, no event loop, nothing open but the port's socket,
  which the worker closes) and so serves exactly the same settings, also when it is
  restarted after the file changed. A worker starts its own session (`setsid`), so a
  Ctrl-C on the terminal reaches the supervisor only, which forwards it once.
* **Supervision.** A worker that exits while the supervisor is not stopping is started
  again, after a back-off that doubles (0.5 s to 10 s) while the worker keeps dying young;
  a worker that fails at start-up (exits before it listens) `START_ATTEMPTS` times in a row
  makes the supervisor stop the others and exit 1 with one line on stderr. Each worker
  holds the read end of a pipe from the supervisor: if the supervisor dies, the worker
  drains as on SIGTERM instead of serving on, orphaned.
* **Signals.** SIGTERM or SIGINT is forwarded to every worker, which drains as one process
  does (docs/observability.md, "Graceful drain"); a second one is forwarded too and cuts
  their grace period short. The supervisor exits 0 once every worker has exited 0.
* **State.** What the workers must share lives in Redis: N > 1 is refused (exit status 2,
  one line) unless the outcomes, labels and the experiments' state are in Redis. The Redis
  sink's journal is one directory per worker (`<journal_dir>/worker-<i>`, worker 0 keeps
  `<journal_dir>` itself); the canaries and the model lifecycle checks run in worker 0
  only. Limits, breakers and token buckets are per worker.
* **Metrics.** Each worker also serves its own registry on a Unix socket in a private
  runtime directory; the worker a scrape lands on fetches its siblings' (1 s each, at
  once) and answers with one exposition in which every series has a `worker` label
  (`gateway.server.metrics_merge`). A sibling that does not answer is left out and counted
  in `speech_gateway_worker_metrics_missing`.

With N = 1 (the default) none of this happens: `serve.serve` runs in the command's own
process, as it always did. It is the default because the embedded stores (the outcome file,
the control state file) are one process's, and one process is what every existing
deployment runs; `auto` (or 0) is the cores this process may use, for a replica that owns
a machine and the Redis stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily

from gateway.config.gateway_config import build_gateway_config
from gateway.config.settings import Settings
from gateway.errors import ConfigError, GatewayError
from gateway.logging import get_logger
from gateway.server.app import METRICS_SOURCE
from gateway.server.metrics_merge import merge_expositions, parse_exposition
from gateway.server.serve import CUT_GRACE_SIGNAL, serve
from gateway.server.state import STATE
from gateway.stores.factory import control_in_redis

log = get_logger("gateway.workers")

# A sibling's metrics that take longer than this are left out of the scrape.
SIBLING_TIMEOUT_S: Final = 1.0
# Restart back-off: the first delay, doubled per quick death, up to the cap.
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 10.0
# A worker that served this long before it died is restarted at once.
STABLE_S: Final = 10.0
# Consecutive start-up failures of one worker before the supervisor gives up.
START_ATTEMPTS: Final = 5
# How often the supervisor looks for exited workers between signals and readiness reports.
POLL_S: Final = 0.1
_READY: Final = b"R"
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def default_workers() -> int:
    """`--workers auto` (or 0): the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_workers(text: str) -> int:
    """The `--workers` argument: a count of at least 1, or `auto` / `0` for the usable cores."""
    if text.strip().lower() in ("auto", "0"):
        return default_workers()
    try:
        count = int(text)
    except ValueError:
        raise ConfigError("--workers", f"{text!r} is not a number of processes or auto") from None
    if count < 0:
        raise ConfigError("--workers", f"must be at least 1 (or auto), not {count}")
    return count


def run_serve(settings: Settings, workers: int) -> int:
    """`speech-gateway serve [--workers N]`: one process as always, or N under a supervisor.
    The exit status (ConfigError for a refused combination)."""
    if workers <= 1:
        _warn_orphan_journals(settings, 1)
        serve(settings)
        return 0
    check_shareable(settings, workers)
    return Supervisor(settings, workers).run()


def check_shareable(settings: Settings, workers: int) -> None:
    """ConfigError unless N workers can share the configured state."""
    where = f"--workers {workers}"
    if not hasattr(socket, "SO_REUSEPORT") or not sys.platform.startswith("linux"):
        raise ConfigError(where, "several workers need Linux (SO_REUSEPORT); use --workers 1")
    if settings.outcomes.store != "redis":
        raise ConfigError(
            where,
            'outcomes.store = "file" is one process\'s store; several workers need '
            'outcomes.store = "redis" (or use --workers 1)',
        )
    if not control_in_redis(settings.gateway.control, settings.outcomes):
        raise ConfigError(
            where,
            'gateway.control.store = "file" keeps the experiments\' state in one process; '
            'several workers need it in Redis ("auto" or "redis")',
        )


def journal_dir(settings: Settings, index: int) -> Path:
    """The Redis sink's journal of worker `index`: worker 0 (or a single process) keeps
    the configured directory, so that going from one process to N and back delivers it."""
    base = settings.outcomes.journal_dir
    return base if index == 0 else base / f"worker-{index}"


def worker_settings(settings: Settings, index: int, port: int) -> Settings:
    """The settings of worker `index`: the resolved port, its own journal, and the model
    health machinery (canaries, lifecycle) in worker 0 only."""
    health = settings.gateway.health
    gateway = settings.gateway.model_copy(
        update={
            "port": port,
            "health": health.model_copy(update={"run": health.run and index == 0}),
        }
    )
    outcomes = settings.outcomes.model_copy(update={"journal_dir": journal_dir(settings, index)})
    return settings.model_copy(update={"gateway": gateway, "outcomes": outcomes})


def _warn_orphan_journals(settings: Settings, workers: int) -> None:
    """Journals of workers that no longer run (N was lowered) hold records only a worker of
    that index delivers: say so, once, at start-up."""
    if settings.outcomes.store != "redis":
        return
    base = settings.outcomes.journal_dir
    orphans = [
        str(path)
        for path in sorted(base.glob("worker-*"))
        if path.name.removeprefix("worker-").isdigit()
        and int(path.name.removeprefix("worker-")) >= workers
        and any(path.glob("*.jsonl"))
    ]
    if orphans:
        log.warning("workers_orphan_journals", journals=orphans, workers=workers)


# -- the supervisor ------------------------------------------------------------------------


@dataclass
class _Worker:
    """One worker slot: the process now in it, if any, and its history."""

    index: int
    pid: int | None = None
    lifeline: int | None = None  # our end of the pipe whose EOF tells the worker we are gone
    ready_pipe: int | None = None  # the worker writes _READY here once it listens
    ready: bool = False
    started_at: float = 0.0
    quick_deaths: int = 0  # consecutive deaths soon after starting (back-off)
    start_failures: int = 0  # consecutive deaths before listening (giving up)
    starts: int = 0
    next_start: float = 0.0
    last_status: int | None = None  # exit code; negative: killed by that signal
    stopped_by_signal: bool = False  # the forwarded signal ended it before it listened

    def fds(self) -> list[int]:
        return [fd for fd in (self.lifeline, self.ready_pipe) if fd is not None]


@dataclass
class Supervisor:
    """Starts N workers, restarts them, forwards signals; `run` returns the exit status."""

    settings: Settings
    count: int
    _workers: list[_Worker] = field(default_factory=list)
    _signals: list[signal.Signals] = field(default_factory=list)
    _stopping: bool = False
    _failure: str | None = None
    _holder: socket.socket | None = None
    _runtime: Path | None = None

    def run(self) -> int:
        settings = self.settings
        build_gateway_config(settings.gateway)  # ConfigError now, not N times in the workers
        settings.outcomes.resolved_pseudonym_key()
        self._holder, port = _hold_port(settings.gateway.host, settings.gateway.port)
        self._runtime = Path(tempfile.mkdtemp(prefix="speech-gateway-workers-"))
        _warn_orphan_journals(settings, self.count)
        self._workers = [_Worker(index) for index in range(self.count)]
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _SIGNALS}
        log.info(
            "workers_starting",
            workers=self.count,
            port=port,
            pid=os.getpid(),
            runtime_dir=str(self._runtime),
        )
        try:
            self._loop(port)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for worker in self._workers:
                _close(worker.fds())
            self._holder.close()
            shutil.rmtree(self._runtime, ignore_errors=True)
        if self._failure is not None:
            print(f"speech-gateway: {self._failure}", file=sys.stderr)
            return 1
        failed = [w.index for w in self._workers if w.last_status and not w.stopped_by_signal]
        log.info("workers_stopped", failed=failed)
        return 1 if failed else 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signal.Signals(signum))

    def _loop(self, port: int) -> None:
        while True:
            while self._signals:
                self._forward(self._signals.pop(0))
            self._reap()
            if self._stopping and not any(w.pid is not None for w in self._workers):
                return
            if not self._stopping:
                now = time.monotonic()
                for worker in self._workers:
                    if worker.pid is None and worker.next_start <= now:
                        self._start(worker, port)
            pipes = [w.ready_pipe for w in self._workers if w.ready_pipe is not None]
            # A signal handler interrupting select() does not raise: PEP 475 retries it.
            readable, _, _ = select.select(pipes, [], [], POLL_S)
            for worker in self._workers:
                if worker.ready_pipe in readable:
                    self._read_ready(worker)

    def _forward(self, signum: signal.Signals) -> None:
        """The first signal is forwarded as it came; a second cuts the workers' grace period
        with CUT_GRACE_SIGNAL (a repeated SIGTERM may be the init system's own, which
        reaches every worker too and must not cut anything)."""
        if self._stopping:
            send = CUT_GRACE_SIGNAL
        else:
            send = signum
            log.info("shutdown_signal", signal=signum.name, workers=self.count)
            self._stopping = True
            for worker in self._workers:
                if worker.pid is None:  # waiting to restart: nothing to drain
                    worker.last_status = None
        for worker in self._workers:
            if worker.pid is not None:
                _kill(worker.pid, send)

    def _stop_all(self, reason: str) -> None:
        """Give up: drain the workers still running, then exit 1 with `reason`."""
        self._failure = reason
        if not self._stopping:
            self._forward(signal.SIGTERM)

    def _start(self, worker: _Worker, port: int) -> None:
        assert self._runtime is not None
        assert self._holder is not None
        # Everything the child needs is made here, before the fork: nothing of the
        # supervisor's (its clean-up included) may run in the child.
        settings = worker_settings(self.settings, worker.index, port)
        try:
            lifeline_read, lifeline_write = os.pipe()
        except OSError as exc:
            self._fork_failed(worker, exc)
            return
        try:
            ready_read, ready_write = os.pipe()
        except OSError as exc:
            _close([lifeline_read, lifeline_write])
            self._fork_failed(worker, exc)
            return
        inherited = [fd for other in self._workers for fd in other.fds()]
        runtime = _WorkerRuntime(
            index=worker.index,
            count=self.count,
            runtime=self._runtime,
            lifeline=lifeline_read,
            ready=ready_write,
            starts=worker.starts,
        )
        # Block the signals across the fork, so that the child can drop one that reached the
        # old process group before it has its own session (below).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # the worker; never returns
                try:
                    _close([*inherited, lifeline_write, ready_read, self._holder.detach()])
                    _become_worker(mask, runtime, settings)
                finally:
                    os._exit(1)  # only if _become_worker itself failed before its own exit
        except OSError as exc:  # EAGAIN, ENOMEM: try again later, as for a crashed worker
            _close([lifeline_read, lifeline_write, ready_read, ready_write])
            self._fork_failed(worker, exc)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _close([lifeline_read, ready_write])
        worker.pid, worker.lifeline, worker.ready_pipe = pid, lifeline_write, ready_read
        worker.ready = False
        worker.last_status = None
        worker.started_at = time.monotonic()
        worker.starts += 1
        log.info("worker_started", worker=worker.index, pid=pid)

    def _fork_failed(self, worker: _Worker, exc: OSError) -> None:
        """A worker could not be started (no process or pipe to spare): retried after the
        back-off, as a worker that died at start-up."""
        log.error("worker_start_failed", worker=worker.index, error=exc.strerror or str(exc))
        worker.quick_deaths += 1
        worker.next_start = time.monotonic() + _backoff(worker.quick_deaths)

    def _read_ready(self, worker: _Worker) -> None:
        assert worker.ready_pipe is not None
        data = os.read(worker.ready_pipe, 16)
        _close([worker.ready_pipe])
        worker.ready_pipe = None
        if data.startswith(_READY):
            worker.ready = True
            worker.start_failures = 0
            log.info("worker_ready", worker=worker.index, pid=worker.pid)

    def _reap(self) -> None:
        for worker in self._workers:
            if worker.pid is None:
                continue
            pid, status = os.waitpid(worker.pid, os.WNOHANG)
            if pid == 0:
                continue
            if worker.ready_pipe is not None and not worker.ready:
                self._read_ready(worker)  # it may have listened and died since the last look
            self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: _Worker, code: int) -> None:
        lived = time.monotonic() - worker.started_at
        _close(worker.fds())
        pid, worker.pid, worker.lifeline, worker.ready_pipe = worker.pid, None, None, None
        worker.last_status = code
        forwarded = -code in (signal.SIGTERM, signal.SIGINT)
        worker.stopped_by_signal = self._stopping and forwarded and not worker.ready
        if self._stopping:
            event = log.info if code == 0 or worker.stopped_by_signal else log.error
            event("worker_exited", worker=worker.index, pid=pid, status=code)
            return
        log.error(
            "worker_exited",
            worker=worker.index,
            pid=pid,
            status=code,
            ready=worker.ready,
            lived_s=round(lived, 3),
        )
        if not worker.ready:
            worker.start_failures += 1
            if worker.start_failures >= START_ATTEMPTS:
                self._stop_all(
                    f"worker {worker.index} failed at start-up {worker.start_failures} times "
                    f"in a row (last exit status {code}); giving up (its log says why)"
                )
                return
        worker.quick_deaths = 0 if lived >= STABLE_S else worker.quick_deaths + 1
        delay = _backoff(worker.quick_deaths)
        worker.next_start = time.monotonic() + delay
        log.info("worker_restart_scheduled", worker=worker.index, delay_s=delay)


def _backoff(quick_deaths: int) -> float:
    """Seconds before a restart: none after a worker that lived, then doubling."""
    if quick_deaths == 0:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (quick_deaths - 1)))


def _hold_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound (not listening) to the gateway's address with SO_REUSEPORT: the port
    is checked once, resolved if 0, and stays ours while workers come and go. A bound
    socket that does not listen takes no connections."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError("gateway.host", f"cannot resolve {host!r}: {exc.strerror}") from None
    holder = socket.socket(family, kind, proto)
    try:
        # SO_REUSEPORT only: with SO_REUSEADDR as well, Linux would let any socket with
        # SO_REUSEADDR (another user's too) take the port while no worker listens on it.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(address)
    except OSError as exc:
        holder.close()
        raise ConfigError(
            "gateway.port", f"cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    bound: int = holder.getsockname()[1]
    return holder, bound


def _kill(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited; reaped on the next look
        os.kill(pid, signum)


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# -- a worker ------------------------------------------------------------------------------


def _become_worker(
    mask: set[int | signal.Signals], runtime: _WorkerRuntime, settings: Settings
) -> None:
    """The forked child: its own session, the default signal dispositions until the event
    loop installs the drain's, then the gateway. Leaves with `os._exit`: nothing of the
    supervisor's (its finally blocks, atexit) may run in the child."""
    code = 1
    try:
        os.setsid()  # a terminal's Ctrl-C reaches the supervisor only, which forwards it
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_IGN)  # drops one sent to the old group meanwhile
        signal.signal(CUT_GRACE_SIGNAL, signal.SIG_IGN)  # nothing to cut before the drain
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forwarded SIGTERM during start-up
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # ends the worker: nothing to drain yet
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        serve(settings, runtime)
        code = 0
    except GatewayError as exc:
        print(f"speech-gateway: worker {runtime.index}: {exc}", file=sys.stderr)
        code = 2
    except BaseException:  # anything else: the traceback to the log stream, then exit 1
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@dataclass
class _WorkerRuntime:
    """A worker's part in `serve.serve` (`WorkerRole`): its private metrics socket, the
    merged `/metrics`, the readiness report and the supervisor's lifeline."""

    index: int
    count: int
    runtime: Path
    lifeline: int
    ready: int
    starts: int
    _app: web.Application | None = None
    _private: web.AppRunner | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _orphaned: bool = False

    def socket_path(self, index: int) -> Path:
        return self.runtime / f"worker-{index}.sock"

    def prepare(self, app: web.Application) -> None:
        self._app = app
        app[METRICS_SOURCE] = self
        restarts = Gauge(
            "speech_gateway_worker_restarts",
            "Times this worker's process was started again after it exited (serve --workers).",
            registry=app[STATE].metrics.registry,
        )
        restarts.set(self.starts)

    async def started(self, app: web.Application, stop: Callable[[], None]) -> None:
        private = web.Application()
        private.router.add_get("/metrics", self._local_route)
        self._private = web.AppRunner(private, handle_signals=False, access_log=None)
        await self._private.setup()
        path = self.socket_path(self.index)
        path.unlink(missing_ok=True)  # left by the worker this one replaces
        await web.UnixSite(self._private, str(path)).start()
        loop = self._loop = asyncio.get_running_loop()

        def on_lifeline() -> None:
            try:
                data = os.read(self.lifeline, 64)
            except OSError:
                data = b""
            if not data:  # EOF: the supervisor is gone
                loop.remove_reader(self.lifeline)
                self._orphaned = True
                stop()

        loop.add_reader(self.lifeline, on_lifeline)
        os.write(self.ready, _READY)
        os.close(self.ready)
        log.info("worker_serving", worker=self.index, workers=self.count, pid=os.getpid())

    async def stopped(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.lifeline)
        if self._private is not None:
            await self._private.cleanup()
        self.socket_path(self.index).unlink(missing_ok=True)
        if self._orphaned:  # nobody else removes the runtime directory: the last one out
            with contextlib.suppress(OSError):
                self.runtime.rmdir()

    def _local(self) -> bytes:
        assert self._app is not None
        return self._app[STATE].metrics.render()

    async def _local_route(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._local(), content_type="text/plain")

    async def render(self) -> bytes:
        """Every worker's series, labelled by worker; the siblings that did not answer in
        time are left out and counted."""
        siblings = [index for index in range(self.count) if index != self.index]
        answers = await asyncio.gather(*(self._sibling(index) for index in siblings))
        # Parsing and re-rendering the expositions costs several times a plain render (tens
        # of ms for a large registry): a thread, so that the relay's loop keeps running.
        return await asyncio.to_thread(self._merge, self._local(), siblings, answers)

    def _merge(self, local: bytes, siblings: list[int], answers: list[bytes | None]) -> bytes:
        parts = [(str(self.index), parse_exposition(local))]
        missing = 0
        for index, text in zip(siblings, answers, strict=True):
            try:
                if text is None:
                    raise ValueError("no answer")
                parts.append((str(index), parse_exposition(text)))
            except ValueError:
                missing += 1
        workers = GaugeMetricFamily(
            "speech_gateway_workers",
            "Worker processes of this gateway (serve --workers).",
            value=self.count,
        )
        absent = GaugeMetricFamily(
            "speech_gateway_worker_metrics_missing",
            "Workers whose metrics are missing from this answer (no answer within "
            f"{SIBLING_TIMEOUT_S:g} s, e.g. restarting).",
            value=missing,
        )
        return merge_expositions(parts, [workers, absent])

    async def _sibling(self, index: int) -> bytes | None:
        """A sibling's own exposition, or None if it does not answer in time."""
        connector = aiohttp.UnixConnector(path=str(self.socket_path(index)))
        try:
            async with (
                asyncio.timeout(SIBLING_TIMEOUT_S),
                aiohttp.ClientSession(connector=connector) as http,
                http.get("http://worker/metrics") as response,
            ):
                return await response.read() if response.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
