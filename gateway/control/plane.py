"""The control plane of one gateway process: live experiment state, shared and guarded.

`ControlPlane.config` is the `GatewayConfig` that routing reads for each new session: the
configured experiments with their live state laid over them (`gateway.control.state`).
Sessions in flight keep the route they started with; only new sessions see a change.

Sharing. With Redis, every replica keeps the state in Redis (`RedisControlStore`) and
applies a change as soon as its pub/sub notice arrives; every `reconcile_s` it also compares
state versions with Redis, so a lost notice (or a Redis restart) heals within that
interval. A replica that starts later loads the current state first. If Redis comes back
empty (restarted without persistence), the replicas write back the state they hold, so the
state survives; the highest version wins. Without Redis, one process keeps its state in a
local file (`FileControlStore`) so that it survives restarts.

Changes. `change` reads the stored state, applies one `Changes` method, and commits the new
state with its audit entry atomically if nobody changed the experiment meanwhile
(compare-and-set on the version; a lost race is retried on the newer state).

Guardrails. Every primary, non-forced outcome of a guarded experiment is counted by phase
and variant (`observe`, called by the sink), and by randomisation unit; every
`guardrail_interval_s` the unit counts are added first (`CounterStore.add_units`, which
returns each unit's counts after the addition, from which `unit_deltas` grows the arm's sums
over units for the clustered variances), then the arm counts are added to the shared
counters (Redis: one set of counts for all replicas, so the sequential tests see all the
traffic and are not repeated once per replica) and each challenger that gets traffic is
tested against control (`gateway.control.guardrails`). A breach rolls the
challenger back to weight 0 in a new phase, with the breach as the audited reason; the
compare-and-set and a check of the phase make concurrent rollbacks by several replicas one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final

from gateway.control.guardrails import (
    LATENCY_EDGES_MS,
    UNIT_COUNTS,
    ArmCounts,
    Breach,
    evaluate,
    latency_bucket,
    unit_deltas,
)
from gateway.control.model import Experiment, GatewayConfig
from gateway.control.ports import (
    ControlMetrics,
    ControlStore,
    CounterStore,
    StoredState,
    UnitKey,
)
from gateway.control.state import (
    GUARDRAIL_ACTOR,
    Change,
    Changes,
    ExperimentState,
    apply,
    initial_state,
)
from gateway.errors import ControlError, StoreUnavailable
from gateway.logging import get_logger
from gateway.outcomes.record import OutcomeRecord, Role, category, now_iso

log = get_logger(__name__)

COMMIT_ATTEMPTS: Final = 5
# How long start-up waits for the stored state before serving the configured one.
LOAD_TIMEOUT_S: Final = 5.0

MakeChange = Callable[[Changes, ExperimentState], Change | None]
_CountKey = tuple[str, str, str]  # experiment, phase, variant


class ControlPlane:
    def __init__(
        self,
        base: GatewayConfig,
        store: ControlStore,
        counters: CounterStore,
        metrics: ControlMetrics,
        *,
        reconcile_s: float = 0.5,
        guardrail_interval_s: float = 1.0,
    ) -> None:
        self._base = base
        self._experiments = {e.id: e for e in base.experiments}
        self._store = store
        self._counters = counters
        self._metrics = metrics
        self._reconcile_s = reconcile_s
        self._guardrail_interval_s = guardrail_interval_s
        self._states = {e.id: initial_state(e) for e in base.experiments}
        self._stored_versions: dict[str, int] = {}  # as last read from the store
        self._pending: dict[_CountKey, Counter[str]] = {}
        self._unit_pending: dict[UnitKey, Counter[str]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._store_up: bool | None = None
        self.loaded = False  # the stored state has been read at least once
        self.config = base
        self._rebuild()

    # -- reading ------------------------------------------------------------------------

    def experiment(self, experiment_id: str) -> Experiment:
        """The experiment as new sessions get it now; ControlError 404 if not configured."""
        for experiment in self.config.experiments:
            if experiment.id == experiment_id:
                return experiment
        raise ControlError(f"no experiment {experiment_id!r} is configured", 404)

    def state(self, experiment_id: str) -> ExperimentState:
        self.experiment(experiment_id)
        return self._states[experiment_id]

    async def audit(self, experiment_id: str, limit: int) -> list[dict[str, Any]]:
        self.experiment(experiment_id)
        return [json.loads(text) for text in await self._store.audit(experiment_id, limit)]

    # -- lifetime -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored state (waiting at most LOAD_TIMEOUT_S), then keep it current."""
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                await self._reconcile()
        except (StoreUnavailable, TimeoutError) as exc:
            # Served as configured until the store answers; /readyz says not ready.
            self._store_status(False, exc)
        except ValueError as exc:
            log.error("control_state_unreadable", error=str(exc))
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="control-reconcile"),
            asyncio.create_task(self._watch_loop(), name="control-watch"),
        ]
        if any(e.guardrails is not None for e in self._base.experiments):
            self._tasks.append(asyncio.create_task(self._guardrail_loop(), name="guardrails"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(StoreUnavailable):
            await self._flush_counts()
        await self._store.close()

    # -- changes ------------------------------------------------------------------------

    async def change(
        self,
        experiment_id: str,
        actor: str,
        make: MakeChange,
        *,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> ExperimentState:
        """Commit one change made by `make` on the stored state; return the state after it.

        ControlError: 404 unknown experiment, 409 `expected_version` is not the current
        version or the race was lost too often; or whatever `make` refuses. StoreUnavailable
        (Redis down, disk full) propagates: nothing changed. A commit whose answer was
        lost is recognised on the retry (the stored document is the one sent) and counts as
        done, so a change is never applied twice.
        """
        state, _committed = await self._commit(
            experiment_id, actor, make, reason=reason, expected_version=expected_version
        )
        return state

    async def _commit(
        self,
        experiment_id: str,
        actor: str,
        make: MakeChange,
        *,
        reason: str | None,
        expected_version: int | None,
    ) -> tuple[ExperimentState, bool]:
        """`change`, and whether this call committed anything."""
        experiment = self._experiments.get(experiment_id)
        if experiment is None:
            raise ControlError(f"no experiment {experiment_id!r} is configured", 404)
        sent: Change | None = None
        for _ in range(COMMIT_ATTEMPTS):
            stored = (await self._store.load()).get(experiment_id)
            if sent is not None and stored is not None and stored.document == sent.state.to_json():
                # The commit ran but its answer was lost (and the client retried it).
                return self._committed(experiment_id, actor, sent, reason), True
            stored_version = stored.version if stored is not None else 0
            # The store is the truth once it holds a state; until then (a store that lost
            # its data, before the state is written back) this replica's own state is.
            current = self._states[experiment_id]
            if stored is not None:
                current = self._parse(experiment, stored)
            if expected_version is not None and current.version != expected_version:
                raise ControlError(
                    f"expected_version: {experiment_id!r} is at version {current.version}, "
                    f"not {expected_version}",
                    409,
                )
            sent = make(Changes(experiment, actor, now_iso(), reason), current)
            if sent is None:
                return current, False
            new = sent.state
            if await self._store.commit(
                experiment_id,
                stored_version,
                StoredState(new.version, new.to_json()),
                sent.audit.to_json(),
            ):
                return self._committed(experiment_id, actor, sent, reason), True
        raise ControlError(f"{experiment_id!r} is being changed concurrently; try again", 409)

    def _committed(
        self, experiment_id: str, actor: str, change: Change, reason: str | None
    ) -> ExperimentState:
        new = change.state
        # The reconcile loop may have read a later change of another replica meanwhile.
        if new.version >= self._stored_versions.get(experiment_id, 0):
            self._stored_versions[experiment_id] = new.version
            self._adopt(experiment_id, new)
        self._metrics.control_changes.labels(experiment_id, change.audit.action).inc()
        log.info(
            "experiment_changed",
            experiment=experiment_id,
            action=change.audit.action,
            actor=actor,
            version=new.version,
            phase=new.phase,
            weights=new.effective_weights(),
            reason=reason,
        )
        return new

    # -- state sync ---------------------------------------------------------------------

    def _parse(self, experiment: Experiment, stored: StoredState) -> ExperimentState:
        try:
            state = ExperimentState.from_json(stored.document)
        except ValueError as exc:
            log.error("control_state_unreadable", experiment=experiment.id, error=str(exc))
            return initial_state(experiment, stored.version)
        if state.layout != initial_state(experiment).layout:
            # The variants were changed in the configuration since this state was stored:
            # its weights would describe another split. Serve the configuration; the next
            # change commits on top of the stored version.
            log.warning(
                "control_state_stale",
                experiment=experiment.id,
                version=stored.version,
                detail="the configured variants differ from the stored state's",
            )
            return initial_state(experiment, stored.version)
        return state

    def _adopt(self, experiment_id: str, state: ExperimentState) -> None:
        if state == self._states.get(experiment_id):
            return
        self._states[experiment_id] = state
        self._metrics.control_version.labels(experiment_id).set(state.version)
        self._rebuild()

    def _rebuild(self) -> None:
        experiments = tuple(apply(e, self._states[e.id]) for e in self._base.experiments)
        self.config = dataclasses.replace(self._base, experiments=experiments)

    async def _reconcile(self) -> None:
        """Bring this replica and the store in line: a stored state that changed since the
        last read is applied (the store is the truth once it holds a state), and states the
        store lost (a Redis restart without persistence) are written back."""
        versions = await self._store.versions()
        changed = [
            exp_id
            for exp_id in self._experiments
            if exp_id in versions and versions[exp_id] != self._stored_versions.get(exp_id)
        ]
        if changed:
            stored = await self._store.load()
            for exp_id in changed:
                found = stored.get(exp_id)
                if found is not None:
                    self._stored_versions[exp_id] = found.version
                    self._adopt(exp_id, self._parse(self._experiments[exp_id], found))
        lost = {
            exp_id: StoredState(state.version, state.to_json())
            for exp_id, state in self._states.items()
            if state.version > 0 and exp_id not in versions
        }
        if lost:
            # Written only where still absent: a change another replica committed since the
            # loss was acknowledged and stays.
            written = await self._store.restore(lost)
            for exp_id in written:
                self._stored_versions[exp_id] = lost[exp_id].version
            if written:
                log.warning("control_state_restored", experiments=sorted(written))
        self.loaded = True
        self._store_status(True)

    def _store_status(self, up: bool, error: BaseException | None = None) -> None:
        self._metrics.control_store_up.set(1 if up else 0)
        if up == self._store_up:
            return
        self._store_up = up
        if up:
            log.info("control_store_available")
        else:
            log.warning("control_store_unavailable", error=_failure(error))

    async def _reconcile_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._reconcile_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._reconcile()
            except StoreUnavailable as exc:
                self._store_status(False, exc)
            except ValueError as exc:  # a corrupt state file: named, and tried again
                log.error("control_state_unreadable", error=str(exc))
            except Exception:  # e.g. Redis refusing writes (MISCONF): never end the loop
                log.exception("control_reconcile_failed")

    async def _watch_loop(self) -> None:
        while True:
            try:
                async for _experiment in self._store.changes():
                    self._wake.set()
                return  # the store was closed
            except Exception:
                # Reconciliation still runs meanwhile; the notices resume after a pause.
                log.exception("control_watch_failed")
                await asyncio.sleep(1.0)

    # -- guardrails ---------------------------------------------------------------------

    def observe(self, record: OutcomeRecord) -> None:
        """Count a record for the guardrails: primary records of the split only."""
        if record.role is not Role.PRIMARY or record.forced or record.failover_from is not None:
            return
        experiment = self._experiments.get(record.experiment or "")
        if experiment is None or experiment.guardrails is None:
            return
        if record.phase is None or record.variant is None:
            return
        key = (experiment.id, record.phase, record.variant)
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = Counter()
        fields = _fields(record)
        counts.update(fields)
        # Every per-unit count, 0 included: its value after the addition is needed.
        unit = self._unit_pending.setdefault((*key, record.unit), Counter())
        unit.update({name: fields.get(name, 0) for name in UNIT_COUNTS})

    async def _flush_counts(self) -> None:
        """Add the pending counts: each unit's first, then the arm counts with what the unit
        counts add to their arms' sums over units (`gateway.control.guardrails.unit_deltas`).
        Both are taken at once, so the arm counts and their unit sums cover the same
        outcomes."""
        if not self._pending and not self._unit_pending:
            return
        pending, self._pending = self._pending, {}
        units, self._unit_pending = self._unit_pending, {}
        added = False
        try:
            if units:
                after = await self._counters.add_units(units)
                added = True
                for key, now in after.items():
                    before = {name: value - units[key][name] for name, value in now.items()}
                    pending.setdefault(key[:3], Counter()).update(unit_deltas(before, now))
            await self._counters.add_many(pending)
        except BaseException:
            for arm, counts in pending.items():  # kept for the next flush
                self._pending.setdefault(arm, Counter()).update(counts)
            if not added:
                for unit_key, unit_counts in units.items():
                    self._unit_pending.setdefault(unit_key, Counter()).update(unit_counts)
            raise

    async def _guardrail_loop(self) -> None:
        while True:
            await asyncio.sleep(self._guardrail_interval_s)
            try:
                await self._flush_counts()
                for experiment in self.config.experiments:
                    await self._check(experiment)
            except StoreUnavailable as exc:
                log.warning("guardrail_check_failed", error=exc.reason)
            except ControlError as exc:
                log.warning("guardrail_rollback_failed", error=exc.reason)
            except ValueError as exc:
                # Counts read between two replicas' increments, or corrupt: the next round
                # reads them again.
                log.error("guardrail_counts_unreadable", error=str(exc))
            except Exception:
                log.exception("guardrail_check_failed")

    async def _check(self, experiment: Experiment) -> None:
        guardrails = experiment.guardrails
        if guardrails is None or experiment.status != "running":
            return
        counts = await self._counters.read(experiment.id, experiment.phase)
        control = ArmCounts.from_fields(counts.get(experiment.control, {}))
        breached: dict[str, list[Breach]] = {}
        for variant in experiment.variants:
            if variant.name == experiment.control or variant.weight == 0:
                continue
            challenger = ArmCounts.from_fields(counts.get(variant.name, {}))
            breaches = evaluate(guardrails, control, challenger)
            if breaches:
                breached[variant.name] = breaches
        if breached:
            # Every breached challenger in one change: a rollback opens a new phase, and a
            # second one on the old phase's counts would find the phase gone.
            await self._roll_back(experiment, breached)

    async def _roll_back(self, experiment: Experiment, breached: dict[str, list[Breach]]) -> None:
        phase = experiment.phase
        reason = "; ".join(
            f"{variant}: {breach.reason()}"
            for variant, found in breached.items()
            for breach in found
        )
        detail = {
            "phase": phase,
            "breaches": [
                {
                    "variant": variant,
                    "guardrail": b.guardrail,
                    "control": b.control,
                    "challenger": b.challenger,
                    "lower_bound": b.lower_bound,
                    "limit": b.limit,
                    "outcomes": list(b.outcomes),
                }
                for variant, found in breached.items()
                for b in found
            ],
        }

        def make(changes: Changes, state: ExperimentState) -> Change | None:
            # Only the phase the counts came from: a change since then decides anew.
            if state.phase != phase:
                return None
            return changes.rollback(state, list(breached), detail)

        after, committed = await self._commit(
            experiment.id, GUARDRAIL_ACTOR, make, reason=reason, expected_version=None
        )
        if not committed:
            return  # another replica (or an admin) got there first
        for variant, found in breached.items():
            for breach in found:
                self._metrics.guardrail_rollbacks.labels(
                    experiment.id, variant, breach.guardrail
                ).inc()
        log.warning(
            "guardrail_rollback",
            experiment=experiment.id,
            variants=sorted(breached),
            phase=phase,
            new_phase=after.phase,
            reason=reason,
        )


def _failure(error: BaseException | None) -> str:
    """What went wrong, for the log: the store's reason, or the deadline that passed."""
    if isinstance(error, StoreUnavailable):
        return error.reason
    return type(error).__name__


def _fields(record: OutcomeRecord) -> Mapping[str, int]:
    """The guardrail counts one record adds (`ArmCounts.to_fields` names)."""
    kind = category(record)
    latency = [0] * len(LATENCY_EDGES_MS)
    if record.final_latency_ms is not None:
        latency[latency_bucket(record.final_latency_ms)] = 1
    return ArmCounts(
        outcomes=1,
        errors=int(kind == "error"),
        cancellations=int(kind == "cancellation"),
        no_matches=int(kind == "no_match"),
        latency=tuple(latency),
    ).to_fields()
