"""What the control plane needs from its stores and its metrics, as protocols.

`ControlStore` keeps experiment states and their audit trails; `CounterStore` adds up the
guardrail counts of every replica. Their implementations (a local file or memory, Redis)
live in `gateway.stores`; a store that cannot serve (Redis down, a disk failing) raises
`gateway.errors.StoreUnavailable`. `ControlMetrics` is the part of the server's metrics
that the plane updates (`gateway.server.metrics.GatewayMetrics` has it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredState:
    """One experiment's state as stored: its version and its JSON document."""

    version: int  # >= 1 for stored states
    document: str  # the state's JSON text (opaque here)


class ControlStore(Protocol):
    """Where experiment states and their audit trails are kept."""

    async def load(self) -> dict[str, StoredState]:
        """Every stored experiment state."""
        ...

    async def versions(self) -> dict[str, int]:
        """experiment -> stored version; cheap enough to call every half second."""
        ...

    async def commit(
        self, experiment: str, expected_version: int, state: StoredState, audit: str
    ) -> bool:
        """If the stored version (0 when absent) is `expected_version`, store `state`, append
        `audit` to the experiment's audit trail and notify subscribers, atomically: True.
        Otherwise change nothing: False. ValueError unless
        `0 <= expected_version < state.version <= MAX_VERSION`."""
        ...

    async def audit(self, experiment: str, limit: int) -> list[str]:
        """The experiment's newest audit entries, newest first, at most `limit`."""
        ...

    async def restore(self, states: Mapping[str, StoredState]) -> list[str]:
        """Store each state whose experiment is absent (atomically per experiment) and
        notify subscribers: the experiment ids written. For a Redis that came back without
        its data; no audit entry is added (the states were audited when first committed).
        A state that is present is never replaced: a change committed since the data was
        lost was acknowledged to an admin and must not be undone."""
        ...

    def changes(self) -> AsyncIterator[str]:
        """Experiment ids as change notifications arrive, until `close()`. An id may come
        without a change: after a reconnect every stored experiment is named once, since
        notifications sent meanwhile are lost. Never raises `StoreUnavailable`: it
        reconnects with backoff and carries on. The file store's never yields."""
        ...

    async def close(self) -> None:
        """End the `changes()` iterators; the store's client stays open (its owner closes it)."""
        ...


CounterKey = tuple[str, str, str]  # (experiment, phase, variant)
UnitKey = tuple[str, str, str, str]  # (experiment, phase, variant, unit)


class CounterStore(Protocol):
    """Where the guardrail counts of every replica add up."""

    async def add(
        self, experiment: str, phase: str, variant: str, deltas: Mapping[str, int]
    ) -> None:
        """Add `deltas` to the variant's counts."""
        ...

    async def add_many(self, batch: Mapping[CounterKey, Mapping[str, int]]) -> None:
        """Add the deltas of many (experiment, phase, variant) in one round trip."""
        ...

    async def read(self, experiment: str, phase: str) -> dict[str, dict[str, int]]:
        """variant -> field -> count, for the experiment phase (empty if nothing was added)."""
        ...

    async def add_units(
        self, batch: Mapping[UnitKey, Mapping[str, int]]
    ) -> dict[UnitKey, dict[str, int]]:
        """Add per-unit deltas; return each unit's counts of those fields right after its
        addition (atomic per unit, whatever other replicas add meanwhile)."""
        ...


class Incrementable(Protocol):
    """One counter (a labelled child of a metric)."""

    def inc(self, amount: float = ...) -> None: ...


class Settable(Protocol):
    """One gauge (a labelled child of a metric, or an unlabelled metric)."""

    def set(self, value: float) -> None: ...


class LabelledCounter(Protocol):
    def labels(self, *values: str) -> Incrementable: ...


class LabelledGauge(Protocol):
    def labels(self, *values: str) -> Settable: ...


class ControlMetrics(Protocol):
    """The metrics the control plane updates (read-only members: any metric type that has
    `labels`/`inc`/`set` as these describe will do)."""

    @property
    def control_changes(self) -> LabelledCounter:
        """Committed changes, by experiment and action."""
        ...

    @property
    def control_version(self) -> LabelledGauge:
        """The state version served, by experiment."""
        ...

    @property
    def control_store_up(self) -> Settable:
        """1 when the last read of the stored state succeeded, else 0."""
        ...

    @property
    def guardrail_rollbacks(self) -> LabelledCounter:
        """Rollbacks, by experiment, variant and guardrail."""
        ...
