"""Time in the analysis: buckets for the plots and the looks of the sequential tests.

A phase's span is cut into at most `max_buckets` equal buckets of a round length (1 s to a
day). The end of every bucket is one *look*: the cumulative data up to that moment, as if
someone had checked the experiment then. The always-valid intervals are intersected over
all looks, which is what makes checking every day (or every minute) safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.analysis.observations import Outcome, Scored
from gateway.outcomes.record import Category

_ROUND_SECONDS: Final = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400)

FloatArray = npt.NDArray[np.float64]


def bucket_seconds(first: float, last: float, max_buckets: int) -> int:
    """The shortest round length (1 s to 1 day, then whole days) giving <= max_buckets."""
    # Aligning the first bucket to a multiple of the length adds up to one bucket, and the
    # last record opens one more: so the span may cover at most max_buckets - 2 lengths.
    span = max(last - first, 0.0)
    room = max(max_buckets - 2, 1)
    for length in _ROUND_SECONDS:
        if span / length <= room:
            return length
    return 86400 * math.ceil(span / 86400 / room)


def boundaries(first: float, last: float, length: int) -> list[float]:
    """Bucket starts, aligned to multiples of `length`, covering first..last."""
    start = math.floor(first / length) * length
    count = max(1, math.floor((last - start) / length) + 1)
    return [start + i * length for i in range(count)]


def cumulative_units(
    scored: Sequence[Scored], ends: Sequence[float]
) -> list[tuple[FloatArray, FloatArray]]:
    """Per look (bucket end, exclusive): per-unit (errors, reference words) so far."""
    totals: dict[str, tuple[int, int]] = {}
    looks: list[tuple[FloatArray, FloatArray]] = []
    position = 0
    for end in ends:
        while position < len(scored) and scored[position].at < end:
            item = scored[position]
            errors, words = totals.get(item.unit, (0, 0))
            totals[item.unit] = (errors + item.counts.errors, words + item.counts.reference_words)
            position += 1
        values = np.array(list(totals.values()), dtype=np.float64).reshape(-1, 2)
        looks.append((values[:, 0], values[:, 1]))
    return looks


def cumulative_counts(
    outcomes: Sequence[Outcome], ends: Sequence[float], category: Category
) -> list[tuple[int, int]]:
    """Per look: (outcomes of `category`, all outcomes) so far."""
    looks: list[tuple[int, int]] = []
    hits = total = position = 0
    for end in ends:
        while position < len(outcomes) and outcomes[position].at < end:
            hits += outcomes[position].category == category
            total += 1
            position += 1
        looks.append((hits, total))
    return looks
