"""The admin API's analysis route: an experiment's live report.

`GET /admin/experiments/{id}/analysis` computes the experiment's report
(`gateway.analysis`, schema in docs/analysis.md) from the gateway's own outcome store, with
optional `phase`, `since` and `until` (ISO-8601) query parameters, the phase history of the
control plane (so a shipped phase gets its drift section) and the reference transcripts of
the experiment's canary set (its canary section). It needs an admin bearer token (the same
credentials as the labels API). The dashboard and `replay` read it; the
experiments' state and changes are `gateway.server.admin.control`'s.

The analysis is CPU work (bootstrap resampling), so it runs in the app's analysis process
(`gateway.server.admin.analysis_worker`), never on the relay's event loop nor under its
interpreter lock; this module does not even import it. A report is reused for `cache_s`
seconds, or for `REUSE_PER_COMPUTE_S` times as long as it took to compute if that is longer
(a change of the experiment's state is a new report at once), and one computation per report
is under way at a time, shared by every client that asks meanwhile: a wall of dashboards
polling every few seconds costs one computation per experiment and interval in each gateway
process (each worker of `serve --workers N`), not one per screen, and a report that takes
seconds to compute (a large experiment) keeps its analysis process busy at most 1 / (1 +
REUSE_PER_COMPUTE_S) of the time, so it takes no more than that share of a core from the
relays of a small host.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from aiohttp import web

from gateway.analysis.model import AnalysisOptions, ExperimentInfo, parse_moment
from gateway.control.model import Experiment
from gateway.errors import ControlError
from gateway.logging import get_logger
from gateway.server.admin.analysis_worker import (
    AnalysisWorker,
    AnalysisWorkerFailed,
    Computed,
    OutcomeStore,
    ReportJob,
)
from gateway.server.admin.auth import ADMIN_TOKENS, NEEDS_TOKEN, AdminTokens, admin_name
from gateway.server.admin.auth import error_response as _error
from gateway.server.state import STATE

log = get_logger(__name__)

_MAX_CACHED: Final = 64  # reports kept; windows are chosen by callers, so bound them
# A report is reused for this many times its computing time (when longer than cache_s).
REUSE_PER_COMPUTE_S: Final = 4.0

Json = dict[str, Any]
# (experiment, its state's version, phase, since, until): a change of the experiment (a
# ramp, a stop, a new phase) is a new report at once, however long the last one is reused.
_CacheKey = tuple[str, int, str | None, str | None, str | None]


@dataclass(slots=True)
class _Analyses:
    """Recent reports by (experiment, phase, since, until), the computations under way, and
    the worker process that computes them from `store`."""

    cache_s: float
    options: AnalysisOptions
    worker: AnalysisWorker
    store: OutcomeStore
    done: dict[_CacheKey, tuple[float, Json]] = field(default_factory=dict)  # until, report
    running: dict[_CacheKey, asyncio.Task[Computed]] = field(default_factory=dict)


ANALYSES: Final = web.AppKey("analyses", _Analyses)


def add_admin_routes(
    app: web.Application,
    admins: AdminTokens,
    store: OutcomeStore,
    *,
    cache_s: float = 2.0,
    options: AnalysisOptions | None = None,
) -> None:
    """Serve the admin read API on `app`; the analysis process reads the outcome store that
    `store` names (the gateway's own settings)."""
    app[ADMIN_TOKENS] = admins  # the same key as the control routes': one set of tokens
    options = options or AnalysisOptions()
    app[ANALYSES] = _Analyses(cache_s, options, AnalysisWorker(), store)
    app.router.add_get("/admin/experiments/{experiment}/analysis", experiment_analysis)
    app.on_cleanup.append(_close)


async def _close(app: web.Application) -> None:
    analyses = app[ANALYSES]
    for task in list(analyses.running.values()):
        task.cancel()
    await asyncio.gather(*analyses.running.values(), return_exceptions=True)
    await analyses.worker.close()


def _strict_json(value: object) -> str:
    return json.dumps(value, allow_nan=False)  # browsers' JSON.parse refuses NaN/Infinity


def _moment(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name}: {exc}") from None


async def experiment_analysis(request: web.Request) -> web.Response:
    if admin_name(request) is None:
        return _error(401, NEEDS_TOKEN)
    experiment_id = request.match_info["experiment"]
    control = request.app[STATE].control
    try:
        experiment = control.experiment(experiment_id)
    except ControlError as exc:
        return _error(exc.status, exc.reason)
    state = control.state(experiment_id)
    phases = state.phases
    history = {entry.phase: entry.weights for entry in phases}
    origins = {entry.phase: entry.origin for entry in phases}
    try:
        since, until = _moment(request, "since"), _moment(request, "until")
    except web.HTTPBadRequest as exc:
        return _error(400, exc.text or "bad request")
    phase = request.query.get("phase") or None
    key = (
        experiment_id,
        state.version,
        phase,
        request.query.get("since"),
        request.query.get("until"),
    )
    analyses = request.app[ANALYSES]
    cached = analyses.done.get(key)
    if cached is not None and time.monotonic() < cached[0]:
        return web.json_response(cached[1], dumps=_strict_json)
    running = analyses.running.get(key)
    if running is None:
        info = ExperimentInfo.of(experiment, history, origins)
        job = _job(experiment, info, since, until, phase, analyses.options)
        running = asyncio.create_task(_compute(analyses, job), name=f"analysis:{experiment_id}")
        analyses.running[key] = running
        running.add_done_callback(lambda _f: analyses.running.pop(key, None))
        # Mark a failure as seen even if every waiting client has gone away meanwhile.
        running.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        # shield: a client that goes away must not cancel the report other screens await.
        computed = await asyncio.shield(running)
    except AnalysisWorkerFailed:
        return _error(503, "the analysis worker failed; try again")
    match computed.failure:
        case "store_unavailable":
            return _error(503, "the outcome store is unavailable; try again later")
        case "invalid_record":
            return _error(
                500, f"the outcome store holds a record that cannot be read: {computed.detail}"
            )
        case "error":
            return _error(500, "the analysis failed; the gateway's log says why")
        case None:
            pass
    assert computed.report is not None
    report = computed.report
    if key not in analyses.done and len(analyses.done) >= _MAX_CACHED:
        analyses.done.pop(next(iter(analyses.done)))  # the oldest entry
    analyses.done[key] = (fresh_until(time.monotonic(), computed.seconds, analyses.cache_s), report)
    return web.json_response(report, dumps=_strict_json)


def fresh_until(now: float, compute_s: float, cache_s: float) -> float:
    """When a report computed in `compute_s`, done at `now`, is recomputed (module doc)."""
    return now + max(cache_s, REUSE_PER_COMPUTE_S * compute_s)


def _job(
    experiment: Experiment,
    info: ExperimentInfo,
    since: datetime | None,
    until: datetime | None,
    phase: str | None,
    options: AnalysisOptions,
) -> ReportJob:
    return ReportJob(
        experiment=experiment.id,
        info=info,
        since=since,
        until=until,
        phase=phase,
        options=options,
        canary=None if experiment.canary is None else experiment.canary.dataset,
        terms=experiment.terms,
        terms_corpus=experiment.terms_corpus,
        synonyms=experiment.synonyms,
    )


async def _compute(analyses: _Analyses, job: ReportJob) -> Computed:
    """One report, in the worker; what went wrong is logged once per computation, not once
    per waiting client."""
    try:
        computed = await analyses.worker.compute(analyses.store, job)
    except AnalysisWorkerFailed as exc:
        log.error("analysis_worker_failed", experiment=job.experiment, error=str(exc))
        raise
    for problem in computed.problems:
        log.error(problem.event, experiment=job.experiment, error=problem.error)
    match computed.failure:
        case "store_unavailable":
            log.error("analysis_store_unavailable", error=computed.detail)
        case "invalid_record" | "error":
            log.error("analysis_failed", experiment=job.experiment, error=computed.detail)
        case None:
            pass
    return computed
