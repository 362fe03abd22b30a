"""What the rest of the gateway needs from an outcome store, as protocols.

The relay submits records to an `OutcomeSink`; the analysis reads records and labels
through an `OutcomeReader`. Their implementations (a JSONL file, Redis Streams) live in
`gateway.stores`, which is the only package that touches Redis or data files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from gateway.outcomes.labels import Label
from gateway.outcomes.record import OutcomeRecord


class OutcomeSink(Protocol):
    """Where the gateway sends outcome records."""

    def submit(self, record: OutcomeRecord) -> None:
        """Queue a record; never blocks and never raises (a refused record is counted)."""

    async def start(self) -> None:
        """Start the writer."""

    async def close(self) -> None:
        """Stop accepting, store everything queued, then stop."""

    @property
    def dropped(self) -> int:
        """Records refused because the queue was full or the sink closed."""

    @property
    def written(self) -> int:
        """Records stored."""


class OutcomeReader(Protocol):
    """Outcome records and labels of one store, for the analysis."""

    def outcomes(
        self,
        experiment: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[OutcomeRecord]:
        """The experiment's records with `since <= timestamp < until` (None: unbounded).

        `experiment` is an experiment id, or `gateway.constants.NO_EXPERIMENT` for the
        records of sessions no experiment routed. The bounds must be timezone-aware.
        """
        ...

    async def labels(self, experiment: str) -> dict[str, Label]:
        """record_id -> current label, for the experiment's labelled records."""
        ...

    async def experiments(self) -> list[str]:
        """The experiments that have records, sorted (NO_EXPERIMENT among them if any)."""
        ...
