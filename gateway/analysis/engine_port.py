"""What the analysis asks of an engine that computes its evidence where the data lies.

`gateway.analysis.report.analyze` reads records and builds everything from them in Python,
unless it is given an `EvidenceSource` (`gateway.stores.engine.DuckDbEngine`): then the
engine computes the observations (`PhaseObservations`, equal to `observe` on the same
records) with SQL, and only the records that some part of the report needs whole are
materialised: canary records, and the error analysis's units (`unit_sample`).

An engine that can also read the labels where they lie (a `LabelledEvidenceSource`) is
asked for `evidence` instead: the store's labels are then never read into memory, only
the labels of the records it materialises (and of the records named in `wanted`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from gateway.analysis.observations import PhaseObservations
from gateway.analysis.unit_sample import UnitSample
from gateway.outcomes.labels import Label
from gateway.outcomes.record import OutcomeRecord


@dataclass(frozen=True, slots=True)
class AnalysisWindow:
    """Which records: one experiment's (`NO_EXPERIMENT` for the default route), optionally
    from `since` (inclusive) to `until` (exclusive)."""

    experiment: str
    since: datetime | None = None
    until: datetime | None = None


class EvidenceSource(Protocol):
    def inputs(
        self, window: AnalysisWindow, labels: Mapping[str, Label], limit: int
    ) -> tuple[list[OutcomeRecord], dict[str, PhaseObservations], UnitSample | None]:
        """From one reading of the store: the records a part of the report needs whole (in
        (timestamp, record_id) order: the canaries, and the units of the error analysis's
        sample, `UnitSample.for_labelled(labelled utterances, limit)`, all units without
        one), the observations (as `observe` builds them) and that sample."""
        ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """What `LabelledEvidenceSource.evidence` hands over: `inputs`' three values, and the
    current labels of the records it materialised and of the ids asked for (`wanted`)."""

    records: list[OutcomeRecord]
    observations: dict[str, PhaseObservations]
    sample: UnitSample | None
    labels: dict[str, Label] = field(default_factory=dict)


@runtime_checkable
class LabelledEvidenceSource(EvidenceSource, Protocol):
    def evidence(
        self,
        window: AnalysisWindow,
        limit: int,
        *,
        held_back: frozenset[str] = frozenset(),
        wanted: frozenset[str] = frozenset(),
    ) -> Evidence:
        """As `inputs`, with the labels the engine's store keeps beside the records: every
        current label of a record in the window is evidence, except a label of source
        `review` of a record in `held_back` (`review_report.headline_labels`)."""
        ...
