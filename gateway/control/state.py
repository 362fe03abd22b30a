"""An experiment's live state and the changes an admin or a guardrail makes to it (pure).

The configuration says what an experiment is (variants, backends, targeting); its state
says how it runs now: the weights set for each variant, whether it is running, paused (every
new session to control) or stopped (every new session to one chosen variant), the units an
admin forced to a variant, and the phase that new sessions' outcomes carry. Version 0 is the
state the configuration describes; each change makes version + 1 and an `AuditEntry`
(who, when, before, after), which the control store commits together, or not at all.

A state is a JSON document (`to_json` / `from_json`) so that stores keep it opaque.
`apply` lays a state over the configured experiment: the result is what routing uses.

Phases: any change to the split that new sessions get (weights while running, pause,
resume, stop, rollback, ship) opens a new phase whose id includes the state version, so a
return to an earlier split never pools its outcomes with the earlier period's. Forcing a unit
leaves the phase alone: forced sessions are outside the split and never compared. A change of
what a variant is without a change of the split (the model behind an endpoint was replaced)
opens a new phase explicitly (`Changes.new_phase`), so that outcomes of the old model and the
new one are never pooled. A health alert is recorded in the audit only (`health_alert`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, get_args

from gateway.control.assignment import phase_id
from gateway.control.model import STATUSES, Experiment, Status
from gateway.errors import ControlError

Action = Literal[
    "set_weights",
    "pause",
    "resume",
    "stop",
    "force",
    "unforce",
    "rollback",
    "ship",
    "new_phase",
    "health_alert",
]
GUARDRAIL_ACTOR: Final = "guardrail"
HEALTH_ACTOR: Final = "health"  # the model-health monitor's automatic changes
MAX_HOLDOUT_SHARE: Final = 0.5  # a holdout larger than the shipped share is not a holdout
MAX_FORCED_UNITS: Final = 1000
MAX_UNIT_ID: Final = 256  # as `session.routing.MAX_UNIT_ID`: a forced unit must be sendable
MAX_REASON: Final = 500
MAX_PHASES: Final = 50  # phase history kept in the state (newest first)


@dataclass(frozen=True, slots=True)
class PhaseEntry:
    """A phase and the effective weights its sessions were split by."""

    phase: str
    started_at: str | None  # None: the configured phase, in use since before any change
    weights: Mapping[str, float]
    # The action that opened it (e.g. "ship": the analysis tracks drift in such a phase);
    # None for the configured phase, and in states stored before phases kept their origin.
    origin: Action | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "started_at": self.started_at,
            "weights": dict(self.weights),
            "origin": self.origin,
        }


@dataclass(frozen=True, slots=True)
class ExperimentState:
    experiment: str
    version: int  # 0: as configured; +1 per change
    layout: str  # `layout_of` the experiment this state was made for
    status: Status
    weights: Mapping[str, float]  # as set, by variant; kept while paused or stopped
    serving: str | None  # the variant every new session gets while paused or stopped
    phase: str
    forced: Mapping[str, str]  # unit id -> variant
    phases: tuple[PhaseEntry, ...]  # newest first, the current one included
    updated_at: str | None = None
    updated_by: str | None = None

    def effective_weights(self) -> dict[str, float]:
        """The weights new sessions are split by now."""
        if self.serving is None:
            return dict(self.weights)
        return {name: 1.0 if name == self.serving else 0.0 for name in self.weights}

    def summary(self) -> dict[str, Any]:
        """What an audit entry shows of the state before and after a change."""
        return {
            "version": self.version,
            "status": self.status,
            "phase": self.phase,
            "weights": dict(self.weights),
            "serving": self.serving,
            "forced_count": len(self.forced),
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "experiment": self.experiment,
                "version": self.version,
                "layout": self.layout,
                "status": self.status,
                "weights": dict(self.weights),
                "serving": self.serving,
                "phase": self.phase,
                "forced": dict(self.forced),
                "phases": [entry.to_dict() for entry in self.phases],
                "updated_at": self.updated_at,
                "updated_by": self.updated_by,
            },
            allow_nan=False,
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ExperimentState:
        """Parse a stored state; ValueError if it is not one (a corrupt or foreign document)."""
        try:
            data = json.loads(text)
            status = data["status"]
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            return cls(
                experiment=str(data["experiment"]),
                version=int(data["version"]),
                layout=str(data["layout"]),
                status=status,
                weights={str(k): float(v) for k, v in data["weights"].items()},
                serving=None if data["serving"] is None else str(data["serving"]),
                phase=str(data["phase"]),
                forced={str(k): str(v) for k, v in data["forced"].items()},
                phases=tuple(
                    PhaseEntry(
                        str(p["phase"]),
                        None if p["started_at"] is None else str(p["started_at"]),
                        {str(k): float(v) for k, v in p["weights"].items()},
                        _origin(p.get("origin")),
                    )
                    for p in data["phases"]
                ),
                updated_at=data.get("updated_at"),
                updated_by=data.get("updated_by"),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not an experiment state document: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change: who made it, when, why, and the state before and after."""

    id: str
    at: str
    actor: str
    action: Action
    experiment: str
    reason: str | None
    detail: Mapping[str, Any]
    before: Mapping[str, Any]
    after: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Change:
    """A change ready to commit: the new state and its audit entry."""

    state: ExperimentState
    audit: AuditEntry


def layout_of(experiment: Experiment) -> str:
    """A fingerprint of the experiment's variants (names, backends, endpoints) and control.

    A stored state is only valid for the layout it was made for: after a deployment that
    renames, adds or re-points a variant, the stored weights would describe another split.
    """
    entries = [[v.name, v.backend.name, v.endpoint_id] for v in experiment.variants]
    canonical = json.dumps([experiment.control, entries], separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def initial_state(experiment: Experiment, version: int = 0) -> ExperimentState:
    """The state the configuration describes. `version` > 0 adopts a stored version whose
    layout no longer matches, so that the next change still commits on top of it."""
    weights = {v.name: v.weight for v in experiment.variants}
    return ExperimentState(
        experiment=experiment.id,
        version=version,
        layout=layout_of(experiment),
        status="running",
        weights=weights,
        serving=None,
        phase=experiment.phase,
        forced={},
        phases=(PhaseEntry(experiment.phase, None, weights),),
    )


def apply(experiment: Experiment, state: ExperimentState) -> Experiment:
    """The configured experiment as `state` runs it: effective weights, phase, forced units.

    A stopped experiment has no shadows: it is over, and nothing is compared any more.
    """
    weights = state.effective_weights()
    variants = tuple(dataclasses.replace(v, weight=weights[v.name]) for v in experiment.variants)
    return dataclasses.replace(
        experiment,
        variants=variants,
        phase=state.phase,
        status=state.status,
        forced_units=dict(state.forced),
        shadows=() if state.status == "stopped" else experiment.shadows,
    )


class Changes:
    """The changes one actor makes at one moment, each checked against the experiment.

    Every method returns a `Change` or raises `ControlError` (400 bad value, 404 unknown
    forced unit, 409 not possible in the current status) and never touches the state given.
    """

    def __init__(self, experiment: Experiment, actor: str, at: str, reason: str | None) -> None:
        if reason is not None and len(reason) > MAX_REASON:
            raise ControlError(f"reason: at most {MAX_REASON} characters")
        self._experiment = experiment
        self._actor = actor
        self._at = at
        self._reason = reason

    def set_weights(self, state: ExperimentState, weights: Mapping[str, float]) -> Change:
        _not_stopped(state)
        if not weights:
            raise ControlError("weights: name at least one variant")
        known = set(state.weights)
        new = dict(state.weights)
        for name, weight in weights.items():
            if name not in known:
                raise ControlError(
                    f"weights.{name}: not a variant of {state.experiment!r} "
                    f"({', '.join(state.weights)})"
                )
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ControlError(f"weights.{name}: must be a number")
            if not math.isfinite(weight) or weight < 0:
                raise ControlError(f"weights.{name}: must be a finite number >= 0")
            new[name] = float(weight)
        total = sum(new.values())
        if not math.isfinite(total):
            raise ControlError("weights: they add up to infinity")
        if total <= 0:
            raise ControlError("weights: every weight would be zero; no variant gets traffic")
        detail = {"weights": {name: float(w) for name, w in weights.items()}}
        return self._make(state, "set_weights", detail, weights=new)

    def pause(self, state: ExperimentState) -> Change:
        if state.status != "running":
            raise ControlError(f"{state.experiment!r} is {state.status}, not running", 409)
        return self._make(state, "pause", {}, status="paused", serving=self._experiment.control)

    def resume(self, state: ExperimentState) -> Change:
        if state.status != "paused":
            raise ControlError(f"{state.experiment!r} is {state.status}, not paused", 409)
        return self._make(state, "resume", {}, status="running", serving=None)

    def stop(self, state: ExperimentState, serve: str | None) -> Change:
        if state.status == "stopped":
            raise ControlError(f"{state.experiment!r} is already stopped", 409)
        serving = self._experiment.control if serve is None else serve
        if serving not in state.weights:
            raise ControlError(f"serve: {serving!r} is not a variant of {state.experiment!r}")
        return self._make(state, "stop", {"serve": serving}, status="stopped", serving=serving)

    def force(self, state: ExperimentState, unit: str, variant: str) -> Change:
        _not_stopped(state)
        if not unit or len(unit) > MAX_UNIT_ID or not unit.isprintable():
            raise ControlError(f"unit: must be 1-{MAX_UNIT_ID} printable characters")
        if variant not in state.weights:
            raise ControlError(f"variant: {variant!r} is not a variant of {state.experiment!r}")
        if unit not in state.forced and len(state.forced) >= MAX_FORCED_UNITS:
            raise ControlError(f"unit: at most {MAX_FORCED_UNITS} forced units per experiment")
        forced = {**state.forced, unit: variant}
        return self._make(state, "force", {"unit": unit, "variant": variant}, forced=forced)

    def unforce(self, state: ExperimentState, unit: str) -> Change:
        if unit not in state.forced:
            raise ControlError(f"unit {unit!r} is not forced in {state.experiment!r}", 404)
        forced = {u: v for u, v in state.forced.items() if u != unit}
        return self._make(state, "unforce", {"unit": unit}, forced=forced)

    def rollback(
        self, state: ExperimentState, variants: Sequence[str], detail: Mapping[str, Any]
    ) -> Change | None:
        """Guardrail breaches: each of `variants` to weight 0. None if none of them gets
        traffic any more (another replica rolled them back first, or an admin paused or
        stopped the experiment)."""
        live = [v for v in variants if state.weights.get(v, 0.0) > 0.0]
        if state.status != "running" or not live:
            return None
        weights = {**state.weights, **dict.fromkeys(live, 0.0)}
        if sum(weights.values()) <= 0:
            # The challengers had all the traffic: control takes it back.
            weights[self._experiment.control] = 1.0
        return self._make(state, "rollback", {"variants": live, **detail}, weights=weights)

    def ship(
        self, state: ExperimentState, variant: str, holdout_share: float | None = None
    ) -> Change:
        """The decision made: `variant` gets 1 - h of new sessions and control keeps h (the
        holdout, against which the shipped model is watched for drift), every other variant
        0. h defaults to the experiment's `holdout_share`. A paused experiment runs again."""
        _not_stopped(state)
        control = self._experiment.control
        if variant not in state.weights:
            raise ControlError(
                f"variant: {variant!r} is not a variant of {state.experiment!r} "
                f"({', '.join(state.weights)})"
            )
        if variant == control:
            raise ControlError(
                f"variant: {variant!r} is the control; ship a challenger, or keep the "
                "configured split"
            )
        share = self._experiment.holdout_share if holdout_share is None else holdout_share
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise ControlError("holdout: must be a number")
        try:
            holdout = float(share)
        except OverflowError:  # an integer too large for a float
            holdout = math.inf
        if not (math.isfinite(holdout) and 0 < holdout <= MAX_HOLDOUT_SHARE):
            raise ControlError(
                f"holdout: must be a share above 0 and at most {MAX_HOLDOUT_SHARE} "
                f"(got {holdout:g})"
            )
        weights = dict.fromkeys(state.weights, 0.0)
        weights[variant] = 1.0 - holdout
        weights[control] = holdout
        detail = {"variant": variant, "holdout": holdout, "weights": dict(weights)}
        return self._make(
            state,
            "ship",
            detail,
            fresh_phase=True,
            status="running",
            serving=None,
            weights=weights,
        )

    def new_phase(self, state: ExperimentState, detail: Mapping[str, Any]) -> Change:
        """A new phase with the same weights: what a variant is has changed (another model
        behind its endpoint), so its outcomes before and after are not to be pooled."""
        _not_stopped(state)
        return self._make(state, "new_phase", detail, fresh_phase=True)

    def health_alert(self, state: ExperimentState, detail: Mapping[str, Any]) -> Change:
        """An audit entry only (the split and the phase stay): a model-health alert, kept
        next to the changes it may explain. Allowed in any status, a stopped one included."""
        return self._make(state, "health_alert", detail)

    def _make(
        self,
        state: ExperimentState,
        action: Action,
        detail: Mapping[str, Any],
        *,
        fresh_phase: bool = False,
        **updates: Any,
    ) -> Change:
        version = state.version + 1
        audit_id = uuid.uuid4().hex
        new = dataclasses.replace(
            state, version=version, updated_at=self._at, updated_by=self._actor, **updates
        )
        weights = new.effective_weights()
        if fresh_phase or weights != state.effective_weights():
            variants = [
                dataclasses.replace(v, weight=weights[v.name]) for v in self._experiment.variants
            ]
            # With the audit id's randomness: after a Redis that lost its data, a version
            # number can come round again, and its phase must still be a new one.
            phase = phase_id(variants, epoch=f"{version}-{audit_id[:8]}")
            entry = PhaseEntry(phase, self._at, weights, action)
            new = dataclasses.replace(new, phase=phase, phases=(entry, *state.phases)[:MAX_PHASES])
        audit = AuditEntry(
            id=audit_id,
            at=self._at,
            actor=self._actor,
            action=action,
            experiment=state.experiment,
            reason=self._reason,
            detail=dict(detail),
            before=state.summary(),
            after=new.summary(),
        )
        return Change(new, audit)


def _not_stopped(state: ExperimentState) -> None:
    if state.status == "stopped":
        raise ControlError(f"{state.experiment!r} is stopped; its state no longer changes", 409)


def _origin(value: object) -> Action | None:
    """A stored phase's origin; ValueError for one that is no action."""
    if value is None:
        return None
    if value not in get_args(Action):
        raise ValueError(f"unknown phase origin {value!r}")
    return cast(Action, value)
