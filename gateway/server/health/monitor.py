"""The health monitor: canary rounds and lifecycle reads in, alerts and control changes out.

Canaries. The canary runner calls `round_finished` once per experiment per round with one
`RoundResult` per variant. Each variant has a `WerChangeDetector` (settings from the
experiment's `Canary`), and a custom variant (one with an endpoint id) whose experiment also
has a base-model variant on the same backend has a `SameAsBaseDetector` against that
variant's transcripts: a silently expired custom model answers exactly as the base model.
A round whose phase differs from the last one seen for the experiment (an admin's change, a
rollback, a model change) starts every detector of the experiment afresh, and clears its
canary alerts: each phase has its own baseline. A round in which every variant failed raises
`canary_failing`.

Lifecycle. Every `health.lifecycle_interval_s`, each custom endpoint of a backend with a
`management_url` is read from the Custom Speech API (`CustomSpeechClient`): the expiry
gauges are set, `model_expiring` is raised once per model when an expiry date is within
`health.expiry_warning_days`, and a model that differs from the one seen at the previous read
raises `model_changed` and opens a new phase in every experiment using the endpoint (its
outcomes before and after are of different models). Failures are logged and counted, and
the next read tries again; the first read of a process has nothing to compare with.

An alert fires once (`AlertLatch`) and then goes everywhere at once: the `health_alert` log
event (warning), `speech_gateway_health_alerts_total`, an audit entry of the experiment
(`Changes.health_alert`, actor `health`), the webhook if one is configured, and, with the
experiment's `canary.pause_on_alert`, a rollback of the challenger to weight 0 in a new
phase (as a guardrail's). None of this ever blocks or fails a client session: the monitor's
work runs in its own tasks, and a failure of the control store or of the webhook is logged.

The monitor keeps, in memory, what the admin API and the dashboard show of each variant's
health (`experiment_health`): its endpoint's model and expiry dates, its last canary round,
and the latest alerts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import aiohttp

from gateway.control.model import Backend, Experiment, GatewayConfig, HealthConfig, Variant
from gateway.control.plane import ControlPlane
from gateway.control.state import HEALTH_ACTOR, MAX_REASON, Change, Changes, ExperimentState
from gateway.errors import ControlError, StoreUnavailable, UpstreamError
from gateway.health.alerts import Alert, AlertKind, AlertLatch
from gateway.health.canary import RoundResult
from gateway.health.detector import (
    DetectorSettings,
    SameAsBaseDetector,
    WerChangeDetector,
)
from gateway.health.lifecycle import EndpointInfo, ModelInfo, days_until, expiring
from gateway.logging import get_logger
from gateway.server.health.management import CustomSpeechClient
from gateway.server.health.webhook import Webhook

log = get_logger(__name__)

ALERTS_KEPT: Final = 20  # per experiment, newest first, for the admin view
ALERTS_SHOWN: Final = 5  # per variant in the admin view
SAME_AS_BASE_ROUNDS: Final = 2  # consecutive identical rounds before `canary_matches_base`
# Alerts about what a variant answers: the ones `pause_on_alert` acts on.
_CANARY_KINDS: Final = frozenset({"canary_wer_change", "canary_matches_base"})

_VariantKey = tuple[str, str]  # experiment, variant
_EndpointKey = tuple[str, str]  # backend, endpoint id


class HealthMetrics(Protocol):
    """The metrics the monitor updates (`GatewayMetrics` has them)."""

    def health_alert(self, experiment: str, variant: str | None, kind: str) -> None: ...

    def model_expiry(self, backend: str, endpoint: str, kind: str, days: float) -> None: ...


@dataclass(slots=True)
class _CanaryView:
    """A variant's canary rounds so far (this process), for the admin view."""

    last_round_at: str | None = None
    wer: float | None = None
    latency_ms: float | None = None
    rounds: int = 0
    failed_rounds: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_round_at": self.last_round_at,
            "wer": self.wer,
            "latency_ms": self.latency_ms,
            "rounds": self.rounds,
            "failed_rounds": self.failed_rounds,
        }


@dataclass(slots=True)
class _ModelView:
    """The latest read of a custom endpoint: its model, or the last read's failure."""

    info: EndpointInfo | None = None
    checked_at: str | None = None
    error: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HealthMonitor:
    """Watches canary rounds and custom endpoints; raises alerts; see the module doc."""

    def __init__(
        self,
        control: ControlPlane,
        metrics: HealthMetrics,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._control = control
        self._metrics = metrics
        self._clock = clock
        self._wer: dict[_VariantKey, WerChangeDetector] = {}
        self._same: dict[_VariantKey, SameAsBaseDetector] = {}
        self._phases: dict[str, str] = {}  # experiment -> the phase of its last round
        # Canary alerts are cleared with each new phase; lifecycle alerts are about a model,
        # whatever the phase, so they have their own latch.
        self._canary_latch = AlertLatch()
        self._lifecycle_latch = AlertLatch()
        self._canaries: dict[_VariantKey, _CanaryView] = {}
        self._models: dict[_EndpointKey, _ModelView] = {}
        self._alerts: dict[str, deque[Alert]] = {}
        self._webhook: Webhook | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.lifecycle_failures = 0  # endpoint reads that failed (this process)

    @property
    def _config(self) -> GatewayConfig:
        return self._control.config

    @property
    def _health(self) -> HealthConfig:
        return self._control.config.health

    # -- lifetime -------------------------------------------------------------------------

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Start the webhook (if configured) and the lifecycle loop (if this process runs the
        health machinery and some backend has a management URL)."""
        self._http = http
        health = self._health
        if health.webhook_url:
            self._webhook = Webhook(
                http, health.webhook_url, health.webhook_timeout_s, health.webhook_attempts
            )
            self._webhook.start()
        if health.run and self._managed_endpoints():
            self._tasks.append(asyncio.create_task(self.lifecycle_loop(), name="lifecycle"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._webhook is not None:
            await self._webhook.close()
            self._webhook = None

    # -- canary rounds --------------------------------------------------------------------

    async def round_finished(self, results: Sequence[RoundResult]) -> None:
        """One round of one experiment: a `RoundResult` per variant (the runner's callback).
        Never raises for a problem of the control store or the webhook (they are logged)."""
        by_experiment: dict[str, list[RoundResult]] = {}
        for result in results:
            by_experiment.setdefault(result.experiment, []).append(result)
        for experiment_id, found in by_experiment.items():
            try:
                experiment = self._control.experiment(experiment_id)
            except ControlError:
                log.warning("canary_round_unknown_experiment", experiment=experiment_id)
                continue
            try:
                await self._experiment_round(experiment, found)
            except Exception:  # a bug here must not stop the canaries (the runner's loop)
                log.exception("canary_round_unprocessed", experiment=experiment_id)

    async def _experiment_round(self, experiment: Experiment, results: list[RoundResult]) -> None:
        phase = results[0].phase
        if self._phases.get(experiment.id, phase) != phase:
            self._reset(experiment.id)
        self._phases[experiment.id] = phase
        for result in results:
            view = self._canaries.setdefault((experiment.id, result.variant), _CanaryView())
            view.rounds += 1
            view.last_round_at = result.at
            if result.failed:
                view.failed_rounds += 1
            else:
                view.wer = result.wer
                view.latency_ms = result.latency_ms()
        canary = experiment.canary
        if canary is None:
            return
        if all(result.failed for result in results):
            codes = sorted({a.error_code or "?" for r in results for a in r.answers})
            await self._raise(
                self._alert(
                    experiment.id,
                    None,
                    "canary_failing",
                    f"{experiment.id}: no variant answered a canary this round "
                    f"({', '.join(codes)})",
                    {"phase": phase, "errors": codes, "variants": [r.variant for r in results]},
                ),
                self._canary_latch,
                phase=phase,
            )
            return
        settings = DetectorSettings(canary.alpha, canary.baseline_rounds, canary.min_change_points)
        answered = {r.variant: r for r in results if not r.failed}
        for result in answered.values():
            await self._wer_round(experiment, result, settings)
        for result in answered.values():
            base = self._base_of(experiment, result.variant)
            if base is not None and base in answered:
                await self._same_round(experiment, result, answered[base], canary.baseline_rounds)

    async def _wer_round(
        self, experiment: Experiment, result: RoundResult, settings: DetectorSettings
    ) -> None:
        key = (experiment.id, result.variant)
        detector = self._wer.get(key)
        if detector is None:
            detector = self._wer[key] = WerChangeDetector(settings)
        verdict = detector.observe({a.item_id: (a.errors, a.words) for a in result.answered})
        if verdict.state != "changed":
            return
        change = verdict.change_points or 0.0
        await self._raise(
            self._alert(
                experiment.id,
                result.variant,
                "canary_wer_change",
                f"{experiment.id}/{result.variant}: canary WER moved {change:+.1f} points from "
                f"its baseline {_percent(verdict.baseline_wer)} to {_percent(verdict.recent_wer)}",
                {
                    "phase": result.phase,
                    "backend": result.backend,
                    "endpoint_id": result.endpoint_id,
                    "rounds": verdict.rounds,
                    "baseline_wer": verdict.baseline_wer,
                    "recent_wer": verdict.recent_wer,
                    "change_points": verdict.change_points,
                    "evidence": verdict.evidence,
                    "threshold": verdict.threshold,
                    "last_round_wer": result.wer,
                },
            ),
            self._canary_latch,
            phase=result.phase,
        )

    async def _same_round(
        self, experiment: Experiment, result: RoundResult, base: RoundResult, baseline: int
    ) -> None:
        key = (experiment.id, result.variant)
        detector = self._same.get(key)
        if detector is None:
            detector = self._same[key] = SameAsBaseDetector(SAME_AS_BASE_ROUNDS, baseline)
        same = detector.observe(_texts(result), _texts(base))
        if not same:
            return
        await self._raise(
            self._alert(
                experiment.id,
                result.variant,
                "canary_matches_base",
                f"{experiment.id}/{result.variant}: the custom endpoint "
                f"{result.endpoint_id} answers its canaries exactly as the base model "
                f"({base.variant}); its custom model may have expired",
                {
                    "phase": result.phase,
                    "backend": result.backend,
                    "endpoint_id": result.endpoint_id,
                    "base_variant": base.variant,
                    "rounds": SAME_AS_BASE_ROUNDS,
                    "wer": result.wer,
                    "base_wer": base.wer,
                },
            ),
            self._canary_latch,
            phase=result.phase,
        )

    def _base_of(self, experiment: Experiment, name: str) -> str | None:
        """The base-model variant a custom variant is compared with: on the same backend,
        without an endpoint id (the control first). None for a base-model variant."""
        try:
            variant = experiment.variant(name)
        except KeyError:
            return None
        if variant.endpoint_id is None:
            return None
        candidates = [
            v
            for v in experiment.variants
            if v.endpoint_id is None and v.backend.name == variant.backend.name
        ]
        candidates.sort(key=lambda v: v.name != experiment.control)
        return candidates[0].name if candidates else None

    def _reset(self, experiment_id: str) -> None:
        for key in [k for k in self._wer if k[0] == experiment_id]:
            self._wer[key].reset()
        for key in [k for k in self._same if k[0] == experiment_id]:
            self._same[key].reset()
        self._canary_latch.clear(experiment_id)

    # -- lifecycle ------------------------------------------------------------------------

    async def lifecycle_loop(self) -> None:
        """Read every custom endpoint now, then every `health.lifecycle_interval_s`."""
        while True:
            try:
                await self.check_lifecycle()
            except Exception:  # never end the loop; the next pass tries again
                log.exception("model_lifecycle_check_failed")
            await asyncio.sleep(self._health.lifecycle_interval_s)

    async def check_lifecycle(self) -> None:
        """One pass over the custom endpoints of the backends with a management URL."""
        if self._http is None:
            raise RuntimeError("HealthMonitor.start was not called")
        for backend, endpoints in self._managed_endpoints().items():
            client = CustomSpeechClient(
                self._http, backend.management_url or "", backend.management_key
            )
            for endpoint_id, users in endpoints.items():
                await self._check_endpoint(client, backend, endpoint_id, users)

    def _managed_endpoints(self) -> dict[Backend, dict[str, list[tuple[Experiment, Variant]]]]:
        """Backend -> endpoint id -> the (experiment, variant) pairs that use it."""
        found: dict[Backend, dict[str, list[tuple[Experiment, Variant]]]] = {}
        for experiment in self._config.experiments:
            for variant in experiment.variants:
                backend = variant.backend
                if backend.management_url and variant.endpoint_id:
                    users = found.setdefault(backend, {}).setdefault(variant.endpoint_id, [])
                    users.append((experiment, variant))
        return found

    async def _check_endpoint(
        self,
        client: CustomSpeechClient,
        backend: Backend,
        endpoint_id: str,
        users: list[tuple[Experiment, Variant]],
    ) -> None:
        view = self._models.setdefault((backend.name, endpoint_id), _ModelView())
        now = self._clock()
        try:
            info = await client.endpoint(endpoint_id)
        except (UpstreamError, aiohttp.ClientError, TimeoutError) as exc:
            self.lifecycle_failures += 1
            view.error = getattr(exc, "detail", None) or type(exc).__name__
            view.checked_at = _iso(now)
            log.warning(
                "model_lifecycle_read_failed",
                backend=backend.name,
                endpoint=endpoint_id,
                error=view.error,
            )
            return
        previous = view.info
        view.info, view.checked_at, view.error = info, _iso(now), None
        model = info.model
        for kind, when in (
            ("adaptation", model.adaptation_expires),
            ("transcription", model.transcription_expires),
        ):
            if when is not None:
                self._metrics.model_expiry(backend.name, endpoint_id, kind, days_until(when, now))
        near = expiring(info, now, self._health.expiry_warning_days)
        for experiment, variant in users:
            if near:
                await self._expiring(experiment, variant, backend, info, near, now)
            if previous is not None and previous.model.id != model.id:
                await self._model_changed(experiment, variant, backend, previous, info)

    async def _expiring(
        self,
        experiment: Experiment,
        variant: Variant,
        backend: Backend,
        info: EndpointInfo,
        near: list[tuple[str, datetime]],
        now: datetime,
    ) -> None:
        dates = ", ".join(f"{kind} {_iso(when)[:10]}" for kind, when in near)
        alert = self._alert(
            experiment.id,
            variant.name,
            "model_expiring",
            f"{experiment.id}/{variant.name}: model {info.model.display_name} of endpoint "
            f"{info.id} expires soon ({dates})",
            {
                "backend": backend.name,
                "endpoint_id": info.id,
                "model": _model_dict(info.model),
                "expiring": [
                    {"kind": kind, "at": _iso(when), "days": round(days_until(when, now), 1)}
                    for kind, when in near
                ],
            },
        )
        await self._raise(alert, self._lifecycle_latch, key=f"{info.id}:{info.model.id}")

    async def _model_changed(
        self,
        experiment: Experiment,
        variant: Variant,
        backend: Backend,
        previous: EndpointInfo,
        info: EndpointInfo,
    ) -> None:
        detail = {
            "backend": backend.name,
            "variant": variant.name,
            "endpoint_id": info.id,
            "old_model": _model_dict(previous.model),
            "new_model": _model_dict(info.model),
        }
        message = (
            f"{experiment.id}/{variant.name}: endpoint {info.id} now deploys model "
            f"{info.model.display_name} ({info.model.kind}), not {previous.model.display_name}"
        )

        def make(changes: Changes, state: ExperimentState) -> Change | None:
            if state.status == "stopped":
                return None  # over: nothing is compared any more
            return changes.new_phase(state, detail)

        # The new phase first: whoever the alert reaches (a webhook, the log) and then looks
        # at the experiment sees the phase the change opened, not the old one.
        await self._commit(experiment.id, make, message, "model_change_new_phase_failed")
        # Edge-triggered: each change is seen once, by the read that first sees it.
        await self._raise(
            self._alert(experiment.id, variant.name, "model_changed", message, detail)
        )

    # -- alerts ---------------------------------------------------------------------------

    def _alert(
        self,
        experiment: str,
        variant: str | None,
        kind: AlertKind,
        message: str,
        detail: dict[str, Any],
    ) -> Alert:
        return Alert(experiment, variant, kind, message, detail, _iso(self._clock()))

    async def _raise(
        self,
        alert: Alert,
        latch: AlertLatch | None = None,
        *,
        key: str = "",
        phase: str | None = None,
    ) -> None:
        """Send `alert` everywhere, unless `latch` has already fired it."""
        if latch is not None and not latch.fire(alert, key):
            return
        log.warning(
            "health_alert",
            experiment=alert.experiment,
            variant=alert.variant,
            kind=alert.kind,
            message=alert.message,
        )
        self._metrics.health_alert(alert.experiment, alert.variant, alert.kind)
        self._alerts.setdefault(alert.experiment, deque(maxlen=ALERTS_KEPT)).appendleft(alert)
        if self._webhook is not None:
            self._webhook.send(alert)
        await self._commit(
            alert.experiment,
            lambda changes, state: changes.health_alert(state, alert.to_dict()),
            alert.message,
            "health_alert_audit_failed",
        )
        if alert.kind in _CANARY_KINDS and alert.variant is not None and phase is not None:
            await self._pause(alert, phase)

    async def _pause(self, alert: Alert, phase: str) -> None:
        """With `canary.pause_on_alert`: the challenger to weight 0, as a guardrail does."""
        experiment = self._control.experiment(alert.experiment)
        variant = alert.variant
        if experiment.canary is None or not experiment.canary.pause_on_alert:
            return
        if variant is None or variant == experiment.control:
            return  # control keeps the traffic; an alert about it is for humans
        detail = {"phase": phase, "alert": alert.kind}

        def make(changes: Changes, state: ExperimentState) -> Change | None:
            # Only the phase the rounds came from: a change since then decides anew.
            if state.phase != phase:
                return None
            return changes.rollback(state, [variant], detail)

        after = await self._commit(alert.experiment, make, alert.message, "health_pause_failed")
        if after is not None and after.phase != phase:
            log.warning(
                "health_rollback",
                experiment=alert.experiment,
                variant=variant,
                phase=phase,
                new_phase=after.phase,
                kind=alert.kind,
            )

    async def _commit(
        self,
        experiment_id: str,
        make: Callable[[Changes, ExperimentState], Change | None],
        reason: str,
        failure_event: str,
    ) -> ExperimentState | None:
        """A change in the name of `health`; None (and logged) if the store refused it."""
        try:
            return await self._control.change(
                experiment_id, HEALTH_ACTOR, make, reason=reason[:MAX_REASON]
            )
        except (ControlError, StoreUnavailable) as exc:
            log.error(failure_event, experiment=experiment_id, error=exc.reason)
        except ValueError as exc:  # an unreadable stored state
            log.error(failure_event, experiment=experiment_id, error=str(exc))
        return None

    # -- the admin view -------------------------------------------------------------------

    def experiment_health(self, experiment: Experiment) -> dict[str, Any]:
        """Per variant: its endpoint's model and expiry dates, its last canary round and its
        latest alerts; plus the experiment's own alerts (those about no one variant)."""
        alerts = list(self._alerts.get(experiment.id, ()))
        now = self._clock()
        days = self._health.expiry_warning_days
        variants: dict[str, Any] = {}
        for variant in experiment.variants:
            view = self._models.get((variant.backend.name, variant.endpoint_id or ""))
            info = view.info if view is not None else None
            canary = self._canaries.get((experiment.id, variant.name))
            variants[variant.name] = {
                "endpoint_id": variant.endpoint_id,
                "model": None if info is None else _model_view(info, now, days),
                "model_checked_at": None if view is None else view.checked_at,
                "model_error": None if view is None else view.error,
                "canary": None if canary is None else canary.to_dict(),
                "alerts": [a.to_dict() for a in alerts if a.variant == variant.name][:ALERTS_SHOWN],
            }
        return {
            "variants": variants,
            "alerts": [a.to_dict() for a in alerts if a.variant is None][:ALERTS_SHOWN],
        }


def _texts(result: RoundResult) -> dict[str, str]:
    return {a.item_id: a.text for a in result.answers if a.text is not None}


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def _model_dict(model: ModelInfo) -> dict[str, Any]:
    return {
        "id": model.id,
        "display_name": model.display_name,
        "kind": model.kind,
        "locale": model.locale,
        "adaptation_expires": None
        if model.adaptation_expires is None
        else _iso(model.adaptation_expires),
        "transcription_expires": None
        if model.transcription_expires is None
        else _iso(model.transcription_expires),
    }


def _model_view(info: EndpointInfo, now: datetime, days: int) -> dict[str, Any]:
    """A model as the admin view shows it: `expiring_within_days` is the days until its
    soonest expiry within the warning window (negative once past), else None; `expiring`
    names the expiries within the window ("adaptation", "transcription"), soonest first."""
    near = expiring(info, now, days)
    soonest = None if not near else round(days_until(near[0][1], now), 1)
    return {
        **_model_dict(info.model),
        "expiring_within_days": soonest,
        "expiring": [kind for kind, _ in near],
    }
