"""Which units the error analysis reads when an experiment is large: a fixed sample of units.

The error analysis (`gateway.analysis.error_analysis`: where errors are, terms, segments,
style, worst utterances) works on whole labelled records, aligned word by word, and its cost
grows with the labelled utterances. Above `AnalysisOptions.error_labelled` labelled
utterances in the window it reads a sample of *units*: those whose `unit_key` (the first 8
hex digits of the MD5 of the unit's pseudonym) falls below a threshold chosen so that about
that many labelled utterances are in. Whole units are kept, so every interval still
respects the randomisation unit; the same units are chosen at every run and by every
engine (the key is plain SQL: `substr(md5(unit), 1, 8)`). The headline numbers never
sample: they come from every record (`gateway.analysis.observations`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.outcomes.record import OutcomeRecord, Role

KEY_DIGITS: Final = 8


def unit_key(unit: str) -> str:
    """The unit's sampling key: 8 lower-case hex digits, uniform over units."""
    return hashlib.md5(unit.encode(), usedforsecurity=False).hexdigest()[:KEY_DIGITS]


@dataclass(frozen=True, slots=True)
class UnitSample:
    """The units whose key is below `threshold` (8 hex digits), about `share` of them."""

    share: float
    threshold: str
    labelled: int  # labelled utterances in the window, before sampling

    @classmethod
    def for_labelled(cls, labelled: int, limit: int) -> UnitSample | None:
        """The sample for a window of `labelled` labelled utterances, None when all fit."""
        if labelled <= limit:
            return None
        share = limit / labelled
        return cls(share, f"{int(share * 16**KEY_DIGITS):0{KEY_DIGITS}x}", labelled)

    def keeps(self, unit: str) -> bool:
        return unit_key(unit) < self.threshold


def labelled_primaries(records: Iterable[OutcomeRecord], labels: Mapping[str, object]) -> int:
    """Labelled utterances: primary records that have a label."""
    return sum(r.role is Role.PRIMARY and r.record_id in labels for r in records)


def sampled(records: list[OutcomeRecord], sample: UnitSample | None) -> list[OutcomeRecord]:
    """The records the error analysis reads: canaries always, the rest of sampled units."""
    if sample is None:
        return records
    return [r for r in records if r.role is Role.CANARY or sample.keeps(r.unit)]
