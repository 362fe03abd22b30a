"""The process the live report is computed in, and its handle in the gateway.

`GET /admin/experiments/{id}/analysis` (`gateway.server.admin.analysis`) hands each report
to `AnalysisWorker`: one long-lived process per gateway process, started with "spawn" (the
gateway has threads and an event loop, which a fork would copy half-way) when the first
report is asked for, idle until then. The analysis is CPU work (bootstrap resampling,
numpy and scipy) that would otherwise hold the interpreter lock the relay's event loop
needs; in its own process it competes for a core at most, never for the lock.

The worker reads the outcome store itself (`OutcomeStore`, the `[outcomes]` and `[redis]`
settings, opened as `speech-gateway analyze` opens them), so records never cross the process
boundary: a `ReportJob` (the experiment, its control and phase history as the control plane
has them, the window, the options and the paths of its canary set, term list and synonyms)
goes in, a `Computed` (the report, or why there is none, and what to log) comes back. The
worker does not log the problems it finds; the gateway does, with its own configuration.

A worker that dies (killed, out of memory) fails the reports it held with
`AnalysisWorkerFailed` (answered with 503), and the next report starts a fresh one. There
is no time limit: a report reads a bounded store through clients with socket timeouts and
then computes for as long as its records need; killing it at a deadline would only turn a
slow report into one that never finishes, and its CPU is the worker's, not the relay's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import structlog

from gateway.analysis.model import AnalysisOptions, ExperimentInfo
from gateway.config.capture import AudioSettings
from gateway.config.settings import OutcomeSettings, RedisConnection
from gateway.errors import ConfigError, StoreUnavailable
from gateway.logging import configure_logging, get_logger

if TYPE_CHECKING:
    from gateway.analysis.engine_port import EvidenceSource
    from gateway.analysis.error_analysis import ErrorInputs
    from gateway.analysis.review_report import ReviewInputs
    from gateway.outcomes.ports import OutcomeReader

Json = dict[str, Any]
LogFormat = Literal["auto", "json", "console"]
_T = TypeVar("_T")


class AnalysisWorkerFailed(Exception):
    """The worker process died (or was shut down) before it answered; a fresh one takes the
    next report."""


@dataclass(frozen=True, slots=True)
class OutcomeStore:
    """Where the worker reads the outcomes and labels: the settings the gateway runs with."""

    outcomes: OutcomeSettings
    redis: RedisConnection
    audio: AudioSettings | None = None  # the captured audio, for the review section


@dataclass(frozen=True, slots=True)
class ReportJob:
    """One report's inputs, all small: no record crosses the process boundary."""

    experiment: str
    info: ExperimentInfo
    since: datetime | None
    until: datetime | None
    phase: str | None
    options: AnalysisOptions
    canary: Path | None  # the canary set's folder
    terms: Path | None
    terms_corpus: Path | None
    synonyms: Path | None


@dataclass(frozen=True, slots=True)
class Problem:
    """Something the report went without (a part left out, or the report itself)."""

    event: str  # the gateway's log event
    error: str


@dataclass(frozen=True, slots=True)
class Computed:
    """A report, or why there is none (`failure`); plus the problems for the gateway's log
    and how long the worker took (`seconds`, wall time in the worker)."""

    report: Json | None
    failure: Literal["store_unavailable", "invalid_record", "error"] | None = None
    detail: str = ""
    problems: tuple[Problem, ...] = ()
    seconds: float = 0.0


def compute_report(store: OutcomeStore, job: ReportJob) -> Computed:
    """The worker's entry point: open the store, build the report, close the store. Nothing
    raises out of it: an exception would have to unpickle in the gateway, which some of ours
    cannot, and would break the pool."""
    started = time.monotonic()
    try:
        computed = asyncio.run(_compute_report(store, job))
    except Exception:  # a bug, or a store failing while it closes: the log says what
        computed = Computed(None, "error", traceback.format_exc())
    return dataclasses.replace(computed, seconds=time.monotonic() - started)


async def _compute_report(store: OutcomeStore, job: ReportJob) -> Computed:
    # Imported here: the gateway imports this module for its handle, the worker alone runs this.
    from gateway.server.admin.review import review_inputs
    from gateway.stores.factory import analysis_engine, open_reader

    try:
        async with open_reader(store.outcomes, store.redis) as reader:
            reviews = None
            if store.audio is not None:
                try:
                    reviews = await review_inputs(
                        store.audio, store.outcomes.path, store.redis.prefix, job.experiment, reader
                    )
                except (ConfigError, StoreUnavailable) as exc:  # the report, without the section
                    get_logger(__name__).warning("review_section_unavailable", error=str(exc))
            # One DuckDB thread: the analysis process shares the host with the relay.
            engine = analysis_engine(store.outcomes, threads=1)
            return await _report_from(reader, job, engine, reviews)
    except StoreUnavailable as exc:  # connecting
        return Computed(None, "store_unavailable", exc.reason)


async def _report_from(
    reader: OutcomeReader,
    job: ReportJob,
    engine: EvidenceSource | None = None,
    reviews: ReviewInputs | None = None,
) -> Computed:
    """The report from `reader`, with every failure turned into a `Computed` (exceptions
    need not pickle, nor unpickle, across the process boundary). In the worker, so the
    reading and the computation need no threads of their own."""
    # Imported here: only the process that computes reports pays for the analysis (and
    # scipy) in start-up time and memory.
    from gateway.analysis.report import analyze

    references, errors, problems = _inputs(job)
    try:
        report = await analyze(
            reader,
            job.experiment,
            info=job.info,
            since=job.since,
            until=job.until,
            phase=job.phase,
            options=job.options,
            canary_references=references,
            errors=errors,
            missing_ok=True,  # the embedded store before its first record
            in_thread=False,
            engine=engine,
            reviews=reviews,
        )
    except StoreUnavailable as exc:
        return Computed(None, "store_unavailable", exc.reason, problems)
    except ValueError as exc:  # a corrupt record: named, not hidden
        return Computed(None, "invalid_record", str(exc), problems)
    except Exception:  # a bug: its traceback goes to the gateway's log
        return Computed(None, "error", traceback.format_exc(), problems)
    return Computed(report, problems=problems)


def _inputs(job: ReportJob) -> tuple[dict[str, str] | None, ErrorInputs, tuple[Problem, ...]]:
    """The canary set's references and the error analysis's term list and synonyms. They
    were checked at start-up; a file damaged since leaves its part out of the report rather
    than the report, and the problem says why."""
    from gateway.analysis.error_analysis import ErrorInputs
    from gateway.analysis.style import Synonyms, load_synonyms
    from gateway.analysis.term_corpus import experiment_terms
    from gateway.analysis.terms import TermList
    from gateway.health.canary import load_references

    problems: list[Problem] = []
    references: dict[str, str] | None = None
    terms: TermList | None = None
    synonyms: Synonyms | None = None
    try:
        references = None if job.canary is None else load_references(job.canary)
    except ConfigError as exc:
        problems.append(Problem("analysis_canary_references_unreadable", str(exc)))
    try:
        terms = experiment_terms(job.terms, job.terms_corpus)
    except ConfigError as exc:
        problems.append(Problem("analysis_terms_unreadable", str(exc)))
    try:
        synonyms = None if job.synonyms is None else load_synonyms(job.synonyms)
    except ConfigError as exc:
        problems.append(Problem("analysis_synonyms_unreadable", str(exc)))
    return references, ErrorInputs(terms=terms, synonyms=synonyms), tuple(problems)


# How much lower the analysis process's scheduling priority is than its gateway's, where
# the idle scheduling class (below) is not available.
WORKER_NICENESS: Final = 10


def yield_cpu_to_relays() -> str:
    """Put every thread of this process, and the threads it starts later, in Linux's idle
    scheduling class (SCHED_IDLE): a relay that wakes up on a CPU the analysis is using
    takes it at once, instead of after the analysis's time slice, which at a nice of +10
    still delayed audio by a millisecond or more on a shared core. The analysis then runs on
    whatever CPU time the relays leave (a tiny share if they leave none, so it still ends).
    Elsewhere, a nice of `WORKER_NICENESS` more. The policy applied, for the log."""
    os.nice(WORKER_NICENESS)
    if not hasattr(os, "SCHED_IDLE"):
        return f"nice +{WORKER_NICENESS}"
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    try:
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # a kernel or sandbox that refuses it
        return f"nice +{WORKER_NICENESS}"
    return "idle"


def _start_worker(level: str, fmt: LogFormat) -> None:
    """The worker's initializer: yield the CPU to the relays (`yield_cpu_to_relays`), log as
    the gateway does (a store may warn while it reads), leave when the gateway process does,
    and load the analysis before the first report asks for it."""
    yield_cpu_to_relays()
    configure_logging(level, fmt)
    parent = multiprocessing.parent_process()
    if parent is not None:
        # A gateway killed outright (SIGKILL, the OOM killer) never closes its pool, and the
        # pool process would wait on its queue forever, re-parented to init.
        threading.Thread(
            target=_exit_with, args=(parent,), name="parent-watch", daemon=True
        ).start()
    import gateway.analysis.report  # noqa: F401


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()
    os._exit(0)


def _gateway_logging() -> tuple[str, LogFormat]:
    """The level and format this process logs with, for its worker to log alike."""
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    renderer = structlog.get_config()["processors"][-1]
    return level, "console" if isinstance(renderer, structlog.dev.ConsoleRenderer) else "json"


class AnalysisWorker:
    """The gateway's handle on its analysis process: started by the first call, replaced
    after it died, stopped by `close()`. Owned by one app; used from its event loop only."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._pid: int | None = None
        self._starting = asyncio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The current worker process's id; None before the first call or after a death."""
        return self._pid

    async def compute(self, store: OutcomeStore, job: ReportJob) -> Computed:
        return await self.run(compute_report, store, job)

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """`function(*args)` in the worker process (both must pickle): AnalysisWorkerFailed
        if the worker dies first."""
        executor = await self._current()
        try:
            future = executor.submit(function, *args)
        except BrokenProcessPool:
            # It died while idle: no work was lost, so a fresh worker takes this one.
            self._discard(executor)
            executor = await self._current()
            future = executor.submit(function, *args)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._discard(executor)
            raise AnalysisWorkerFailed("the analysis worker process died") from None

    async def close(self) -> None:
        """Stop the worker, without waiting for a report under way (nobody will read it)."""
        self._closed = True
        executor, pid = self._executor, self._pid
        self._executor = self._pid = None
        if executor is None:
            return
        _kill(pid)
        # The pool's manager thread ends once it has seen the worker go; wait for that off
        # the event loop, so that the process exits without a thread still joining.
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def _current(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._closed:
                raise AnalysisWorkerFailed("the gateway is shutting down")
            if self._executor is not None:
                return self._executor
            executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=_gateway_logging(),
            )
            try:
                # Starts the process now, and learns its id for close() and the tests.
                pid = await asyncio.wrap_future(executor.submit(os.getpid))
            except BrokenProcessPool:
                executor.shutdown(wait=False, cancel_futures=True)
                raise AnalysisWorkerFailed("the analysis worker did not start") from None
            except BaseException:  # cancelled (the app closing): the worker must not stay
                executor.shutdown(wait=False, cancel_futures=True)
                raise
            if self._closed:  # close() came while it started
                _kill(pid)
                executor.shutdown(wait=False, cancel_futures=True)
                raise AnalysisWorkerFailed("the gateway is shutting down")
            self._executor, self._pid = executor, pid
            return executor

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        """Forget a broken pool (once: several reports may fail on the same death)."""
        if self._executor is broken:
            self._executor = self._pid = None
        broken.shutdown(wait=False, cancel_futures=True)


def _kill(pid: int | None) -> None:
    """Kill our worker process if it is still running. Found among this process's children,
    not by its bare id: a child's id cannot be taken by another process before it is reaped,
    and `active_children` reaps the ones that ended."""
    for child in multiprocessing.active_children():
        if child.pid == pid:
            child.kill()
