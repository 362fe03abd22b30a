"""The admin API's analysis route: an experiment's live report.

`GET /admin/experiments/{id}/analysis` computes the experiment's report
(`gateway.analysis`, schema in docs/analysis.md) from the gateway's own outcome store, with
optional `phase`, `since` and `until` (ISO-8601) query parameters, the phase history of the
control plane (so a shipped phase gets its drift section) and the reference transcripts of
the experiment's canary set (its canary section). It needs an admin bearer token (the same
credentials as the labels API). The dashboard and `replay` read it; the
experiments' state and changes are `gateway.server.admin.control`'s.

The analysis is CPU work (bootstrap resampling), so it runs in a worker thread, and a
report is reused for `cache_s` seconds: a wall of dashboards polling every few seconds costs
one computation per experiment and interval, not one per screen.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.analysis.error_analysis import ErrorInputs
from gateway.analysis.model import AnalysisOptions, ExperimentInfo, parse_moment
from gateway.analysis.report import analyze
from gateway.analysis.style import Synonyms, load_synonyms
from gateway.analysis.term_corpus import experiment_terms
from gateway.analysis.terms import TermList
from gateway.control.model import Experiment
from gateway.errors import ConfigError, ControlError, StoreUnavailable
from gateway.health.canary import load_references
from gateway.logging import get_logger
from gateway.outcomes.ports import OutcomeReader
from gateway.server.admin.auth import ADMIN_TOKENS, NEEDS_TOKEN, AdminTokens, admin_name
from gateway.server.admin.auth import error_response as _error
from gateway.server.state import STATE

log = get_logger(__name__)

OUTCOME_READER: Final = web.AppKey("outcome_reader", OutcomeReader)
_MAX_CACHED: Final = 64  # reports kept; windows are chosen by callers, so bound them

Json = dict[str, Any]
_CacheKey = tuple[str, str | None, str | None, str | None]


@dataclass(slots=True)
class _Analyses:
    """Recent reports by (experiment, phase, since, until), and the computations under way."""

    cache_s: float
    options: AnalysisOptions
    done: dict[_CacheKey, tuple[float, Json]] = field(default_factory=dict)
    running: dict[_CacheKey, asyncio.Future[Json]] = field(default_factory=dict)


_ANALYSES: Final = web.AppKey("analyses", _Analyses)


def add_admin_routes(
    app: web.Application,
    admins: AdminTokens,
    reader: OutcomeReader,
    *,
    cache_s: float = 2.0,
    options: AnalysisOptions | None = None,
) -> None:
    """Serve the admin read API on `app`; `reader` reads the gateway's outcome store."""
    app[ADMIN_TOKENS] = admins  # the same key as the control routes': one set of tokens
    app[OUTCOME_READER] = reader
    app[_ANALYSES] = _Analyses(cache_s, options or AnalysisOptions())
    app.router.add_get("/admin/experiments/{experiment}/analysis", experiment_analysis)


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
    phases = control.state(experiment_id).phases
    history = {entry.phase: entry.weights for entry in phases}
    origins = {entry.phase: entry.origin for entry in phases}
    try:
        since, until = _moment(request, "since"), _moment(request, "until")
    except web.HTTPBadRequest as exc:
        return _error(400, exc.text or "bad request")
    phase = request.query.get("phase") or None
    key = (experiment_id, phase, request.query.get("since"), request.query.get("until"))
    analyses = request.app[_ANALYSES]
    cached = analyses.done.get(key)
    if cached is not None and time.monotonic() - cached[0] < analyses.cache_s:
        return web.json_response(cached[1], dumps=_strict_json)
    running = analyses.running.get(key)
    if running is None:
        info = ExperimentInfo.of(experiment, history, origins)
        reader = request.app[OUTCOME_READER]
        running = asyncio.ensure_future(
            _compute(reader, experiment, info, since, until, phase, analyses.options)
        )
        analyses.running[key] = running
        running.add_done_callback(lambda _f: analyses.running.pop(key, None))
        # Mark a failure as seen even if every waiting client has gone away meanwhile.
        running.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        # shield: a client that goes away must not cancel the report other screens await.
        report = await asyncio.shield(running)
    except StoreUnavailable as exc:
        log.error("analysis_store_unavailable", error=exc.reason)
        return _error(503, "the outcome store is unavailable; try again later")
    except ValueError as exc:  # a corrupt record: named, not hidden
        log.error("analysis_failed", experiment=experiment_id, error=str(exc))
        return _error(500, f"the outcome store holds a record that cannot be read: {exc}")
    if key not in analyses.done and len(analyses.done) >= _MAX_CACHED:
        analyses.done.pop(next(iter(analyses.done)))  # the oldest entry
    analyses.done[key] = (time.monotonic(), report)
    return web.json_response(report, dumps=_strict_json)


async def _compute(
    reader: OutcomeReader,
    experiment: Experiment,
    info: ExperimentInfo,
    since: datetime | None,
    until: datetime | None,
    phase: str | None,
    options: AnalysisOptions,
) -> Json:
    canary = experiment.canary
    references = None if canary is None else await _references(experiment.id, canary.dataset)
    errors = await asyncio.to_thread(_error_inputs, experiment)
    return await analyze(
        reader,
        experiment.id,
        info=info,
        since=since,
        until=until,
        phase=phase,
        options=options,
        canary_references=references,
        errors=errors,
        missing_ok=True,  # the embedded store before its first record
        in_thread=True,
    )


async def _references(experiment: str, folder: Path) -> dict[str, str] | None:
    """The canary set's reference transcripts. The set was checked at start-up; should it
    have been damaged since, the report goes without its canary section rather than not at
    all, and the log says why."""
    try:
        return await asyncio.to_thread(load_references, folder)
    except ConfigError as exc:
        log.error("analysis_canary_references_unreadable", experiment=experiment, error=str(exc))
        return None


def _error_inputs(experiment: Experiment) -> ErrorInputs:
    """The experiment's term list and synonyms (checked to exist at start-up); a file that
    cannot be read or parsed now leaves its part out of the report, and the log says why."""
    terms: TermList | None = None
    synonyms: Synonyms | None = None
    try:
        terms = experiment_terms(experiment.terms, experiment.terms_corpus)
    except ConfigError as exc:
        log.error("analysis_terms_unreadable", experiment=experiment.id, error=str(exc))
    try:
        synonyms = None if experiment.synonyms is None else load_synonyms(experiment.synonyms)
    except ConfigError as exc:
        log.error("analysis_synonyms_unreadable", experiment=experiment.id, error=str(exc))
    return ErrorInputs(terms=terms, synonyms=synonyms)
