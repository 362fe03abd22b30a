"""An outcome table's per-unit sums of a growing prefix (the looks), kept up to date as the
prefix grows, are exactly the sums computed from scratch, in any order of asking."""

from __future__ import annotations

import numpy as np

from gateway.analysis.observations import OutcomeTable
from gateway.outcomes.record import CATEGORIES
from gateway.stats.clustered import UnitSums


def _table(size: int, seed: int) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    return OutcomeTable(
        at=np.sort(rng.uniform(0, 1000, size)),
        units=rng.integers(0, size // 3 + 1, size).astype(np.intp),
        categories=rng.integers(0, len(CATEGORIES), size).astype(np.intp),
        latencies={
            "first_hypothesis_ms": rng.uniform(100, 500, size),
            "final_latency_ms": rng.uniform(200, 900, size),
        },
        confidences=rng.uniform(0, 1, size),
    )


def _from_scratch(table: OutcomeTable, category: str, stop: int) -> UnitSums:
    units = table.units[:stop]
    if not units.size:
        return UnitSums()
    hits = (table.categories[:stop] == CATEGORIES.index(category)).astype(np.float64)
    n = np.bincount(units).astype(np.float64)
    x = np.bincount(units, weights=hits, minlength=n.size)
    return UnitSums.of(x[n > 0], n[n > 0])


def test_prefix_sums_equal_the_sums_from_scratch() -> None:
    """Looks in time order, a look repeated, a shorter one after a longer, the whole table."""
    table = _table(5000, seed=1)
    stops = [0, 1, 17, 17, 900, 2500, 4999, 5000, 300, 301, None, 4000]
    for category in CATEGORIES:
        for stop in stops:
            expected = _from_scratch(table, category, len(table) if stop is None else stop)
            assert table.rate_sums(category, stop) == expected, (category, stop)


def test_an_empty_table_has_no_sums() -> None:
    """No outcomes: no units, zero sums."""
    assert OutcomeTable.of(()).rate_sums("success") == UnitSums()
