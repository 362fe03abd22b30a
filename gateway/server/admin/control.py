"""The admin API's control routes: experiments' live state, changes, audit, backends.

    GET    /admin/experiments                         every experiment's view
    GET    /admin/experiments/{id}                    one experiment's view
    PUT    /admin/experiments/{id}/weights            {"weights": {...}}: a new phase
    POST   /admin/experiments/{id}/pause|resume|stop  all new sessions to control / back / over
    POST   /admin/experiments/{id}/ship               {"variant", "holdout"?}: the decision
    POST   /admin/experiments/{id}/forced             {"unit", "variant"}: pin a unit
    DELETE /admin/experiments/{id}/forced?unit=...    unpin it
    GET    /admin/experiments/{id}/audit?limit=N      the audit trail, newest first
    GET    /admin/backends                            this replica's circuit breakers
    GET    /admin/openapi.json                        the OpenAPI document (no credential)

Every change is made by `ControlPlane.change` in the name of the admin whose token came
with it; docs/admin.md has the contract. Bad requests get 400 naming the field, and a change
that the experiment's status does not allow 409; neither changes anything.

An experiment's view carries a `health` block when the app has a model-health source
(`HEALTH_VIEW`: the health monitor, which keeps the latest canary rounds, models and alerts
in memory); without one it is null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final, Protocol

from aiohttp import web

from gateway.control.model import Experiment, Variant
from gateway.control.plane import ControlPlane
from gateway.control.state import Change, Changes, ExperimentState
from gateway.errors import ControlError, StoreUnavailable
from gateway.logging import get_logger
from gateway.server.admin.auth import (
    ADMIN_TOKENS,
    NEEDS_TOKEN,
    AdminTokens,
    admin_name,
    error_response,
)
from gateway.server.admin.openapi import openapi_json
from gateway.server.relay.backend_gate import breaker_name
from gateway.server.state import STATE

log = get_logger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
MAX_AUDIT: Final = 1000
_COMMON_FIELDS: Final = frozenset({"reason", "expected_version"})

Json = dict[str, Any]
_Handler = Callable[[web.Request], Any]


class HealthView(Protocol):
    """What the admin API shows of an experiment's model health (the health monitor)."""

    def experiment_health(self, experiment: Experiment) -> Json:
        """The experiment's health block: per variant its model, canary and alerts."""
        ...


# The app's model-health source, when it has one (set where the app is built).
HEALTH_VIEW = web.AppKey("health_view", HealthView)


def add_control_routes(app: web.Application, admins: AdminTokens) -> None:
    """Serve the control routes on `app`, for the admins in `admins`."""
    app[ADMIN_TOKENS] = admins
    document = openapi_json()  # read once: the document does not change while serving

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(text=document)

    app.router.add_get("/admin/openapi.json", openapi)
    app.router.add_get("/admin/experiments", list_experiments)
    app.router.add_get("/admin/experiments/{experiment}", show_experiment)
    app.router.add_put("/admin/experiments/{experiment}/weights", set_weights)
    app.router.add_post("/admin/experiments/{experiment}/pause", pause)
    app.router.add_post("/admin/experiments/{experiment}/resume", resume)
    app.router.add_post("/admin/experiments/{experiment}/stop", stop)
    app.router.add_post("/admin/experiments/{experiment}/ship", ship)
    app.router.add_post("/admin/experiments/{experiment}/forced", force)
    app.router.add_delete("/admin/experiments/{experiment}/forced", unforce)
    app.router.add_get("/admin/experiments/{experiment}/audit", audit)
    app.router.add_get("/admin/backends", backends)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.response = error_response(status, reason)


def experiment_view(
    experiment: Experiment, state: ExperimentState, health: Json | None = None
) -> Json:
    """What the admin API shows of an experiment: configuration and live state together,
    and its model health when known."""
    shares = experiment.shares
    variants = [
        {
            "name": v.name,
            "backend": v.backend.name,
            "endpoint_id": v.endpoint_id,
            "weight": state.weights[v.name],
            "share": shares[v.name],
        }
        for v in experiment.variants
    ]
    guardrails = experiment.guardrails
    return {
        "id": experiment.id,
        "control": experiment.control,
        "status": state.status,
        "serving": state.serving,
        "phase": state.phase,
        "version": state.version,
        "updated_at": state.updated_at,
        "updated_by": state.updated_by,
        "shadows": list(experiment.shadows),
        "variants": variants,
        "forced": dict(state.forced),
        "guardrails": None
        if guardrails is None
        else {
            "max_error_rate_increase": guardrails.max_error_rate_increase,
            "max_cancellation_rate_increase": guardrails.max_cancellation_rate_increase,
            "max_no_match_rate_increase": guardrails.max_no_match_rate_increase,
            "latency_quantile": guardrails.latency_quantile,
            "max_latency_increase_ms": guardrails.max_latency_increase_ms,
            "min_outcomes": guardrails.min_outcomes,
            "alpha": guardrails.alpha,
        },
        "phases": [entry.to_dict() for entry in state.phases],
        "holdout_share": experiment.holdout_share,
        "health": health,
    }


def _admin(request: web.Request) -> str:
    name = admin_name(request)
    if name is None:
        raise _Refused(401, NEEDS_TOKEN)
    return name


def _control(request: web.Request) -> ControlPlane:
    return request.app[STATE].control


def _view(request: web.Request, experiment_id: str) -> Json:
    control = _control(request)
    experiment = control.experiment(experiment_id)
    source = request.app.get(HEALTH_VIEW)
    health = None if source is None else source.experiment_health(experiment)
    return experiment_view(experiment, control.state(experiment_id), health)


async def _answer(request: web.Request, handler: Callable[[], Any]) -> web.Response:
    """Run a route's work, mapping refusals to their status and store failures to 503."""
    try:
        return web.json_response(await handler())
    except _Refused as exc:
        return exc.response
    except ControlError as exc:
        return error_response(exc.status, exc.reason)
    except StoreUnavailable as exc:
        log.error("control_store_unavailable", error=exc.reason, path=request.path)
        return error_response(503, "the experiment state store is unavailable; nothing changed")
    except ValueError as exc:  # the store holds something unreadable (a corrupt file)
        log.error("control_store_unreadable", error=str(exc), path=request.path)
        return error_response(500, f"the experiment state store cannot be read: {exc}")


async def list_experiments(request: web.Request) -> web.Response:
    async def work() -> Json:
        _admin(request)
        control = _control(request)
        return {"experiments": [_view(request, e.id) for e in control.config.experiments]}

    return await _answer(request, work)


async def show_experiment(request: web.Request) -> web.Response:
    async def work() -> Json:
        _admin(request)
        return _view(request, request.match_info["experiment"])

    return await _answer(request, work)


async def _body(request: web.Request, fields: frozenset[str], *, required: bool) -> Json:
    """The request's JSON object, with only `fields` (plus reason and expected_version)."""
    if not request.can_read_body:
        if required:
            raise _Refused(400, "a JSON body is required")
        return {}
    if request.content_type != "application/json":
        raise _Refused(415, "the body must be application/json")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _Refused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.content.iter_any():  # one read() returns what is buffered
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _Refused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip() and not required:
        return {}
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:
        raise _Refused(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Refused(400, "the body must be a JSON object")
    unknown = sorted(set(data) - fields - _COMMON_FIELDS)
    if unknown:
        raise _Refused(400, f"{unknown[0]}: unknown field")
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise _Refused(400, "reason: must be a string")
    version = data.get("expected_version")
    # JSON has one kind of number: 3.0 is the integer 3, as JSON Schema's "integer" (and
    # so the OpenAPI document) says.
    if isinstance(version, float) and version.is_integer():
        version = data["expected_version"] = int(version)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise _Refused(400, "expected_version: must be an integer >= 0")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _text(data: Json, name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise _Refused(400, f"{name}: must be a string")
    return value


async def _change(
    request: web.Request,
    fields: frozenset[str],
    make: Callable[[Json, Changes, ExperimentState], Change | None],
    *,
    required: bool = False,
) -> web.Response:
    async def work() -> Json:
        admin = _admin(request)
        control = _control(request)
        experiment_id = request.match_info["experiment"]
        control.experiment(experiment_id)  # 404 before the body is looked at
        data = await _body(request, fields, required=required)
        await control.change(
            experiment_id,
            admin,
            lambda changes, state: make(data, changes, state),
            reason=data.get("reason"),
            expected_version=data.get("expected_version"),
        )
        return _view(request, experiment_id)

    return await _answer(request, work)


async def set_weights(request: web.Request) -> web.Response:
    def make(data: Json, changes: Changes, state: ExperimentState) -> Change:
        weights = data.get("weights")
        if not isinstance(weights, dict):
            raise _Refused(400, "weights: must be an object of variant names to numbers")
        for name, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise _Refused(400, f"weights.{name}: must be a number")
            try:
                finite = math.isfinite(weight)
            except OverflowError:  # an integer too large for a float
                finite = False
            if not finite:
                raise _Refused(400, f"weights.{name}: must be finite")
        return changes.set_weights(state, weights)

    return await _change(request, frozenset({"weights"}), make, required=True)


async def pause(request: web.Request) -> web.Response:
    return await _change(request, frozenset(), lambda _d, c, s: c.pause(s))


async def resume(request: web.Request) -> web.Response:
    return await _change(request, frozenset(), lambda _d, c, s: c.resume(s))


async def stop(request: web.Request) -> web.Response:
    def make(data: Json, changes: Changes, state: ExperimentState) -> Change:
        serve = data.get("serve")
        if serve is not None and not isinstance(serve, str):
            raise _Refused(400, "serve: must be a variant name")
        return changes.stop(state, serve)

    return await _change(request, frozenset({"serve"}), make)


async def ship(request: web.Request) -> web.Response:
    def make(data: Json, changes: Changes, state: ExperimentState) -> Change:
        holdout = data.get("holdout")
        if holdout is not None and (
            isinstance(holdout, bool) or not isinstance(holdout, int | float)
        ):
            raise _Refused(400, "holdout: must be a number")
        return changes.ship(state, _text(data, "variant"), holdout)

    return await _change(request, frozenset({"variant", "holdout"}), make, required=True)


async def force(request: web.Request) -> web.Response:
    def make(data: Json, changes: Changes, state: ExperimentState) -> Change:
        return changes.force(state, _text(data, "unit"), _text(data, "variant"))

    return await _change(request, frozenset({"unit", "variant"}), make, required=True)


async def unforce(request: web.Request) -> web.Response:
    async def work() -> Json:
        admin = _admin(request)
        control = _control(request)
        experiment_id = request.match_info["experiment"]
        control.experiment(experiment_id)
        unit = request.query.get("unit")
        if not unit:
            raise _Refused(400, "unit: the query parameter is required")
        await control.change(
            experiment_id,
            admin,
            lambda changes, state: changes.unforce(state, unit),
            reason=request.query.get("reason") or None,
        )
        return _view(request, experiment_id)

    return await _answer(request, work)


async def audit(request: web.Request) -> web.Response:
    async def work() -> Json:
        _admin(request)
        experiment_id = request.match_info["experiment"]
        raw = request.query.get("limit", "50")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_AUDIT:
            raise _Refused(400, f"limit: must be an integer from 1 to {MAX_AUDIT}")
        entries = await _control(request).audit(experiment_id, int(raw))
        return {"entries": entries}

    return await _answer(request, work)


async def backends(request: web.Request) -> web.Response:
    async def work() -> Json:
        _admin(request)
        state = request.app[STATE]
        variants: list[tuple[str | None, Variant]]
        variants = [(e.id, v) for e in state.config.experiments for v in e.variants]
        if state.config.default_variant is not None:
            variants.append((None, state.config.default_variant))
        for experiment, variant in variants:  # every configured one, dialled yet or not
            state.backends.breakers.get(breaker_name(experiment, variant))
        snapshot = state.backends.snapshot()
        return {"backends": [{"name": n, "breaker": b} for n, b in snapshot.items()]}

    return await _answer(request, work)
