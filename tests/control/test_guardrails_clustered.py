"""Guardrails on simulated experiments whose units differ, looked at every day.

The same one-sided always-valid test (`gateway.control.guardrails.assess`) serves the live
control plane and the analysis; here it gets clustered evidence (per-unit sums, the design
effect of latencies), as the analysis gives it, and the analysis' own `guardrails` runs on
simulated outcome records. A guardrail must trip in at most alpha (+ three Monte Carlo
standard errors) of the experiments whose true increase is at its limit, at any of the
daily looks. Figures in docs/statistics.md ("Guardrails").
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from gateway.analysis.decision import guardrail_evidence
from gateway.analysis.decision import guardrails as analysis_guardrails
from gateway.analysis.model import AnalysisOptions
from gateway.analysis.observations import Outcome, OutcomeTable, VariantObservations
from gateway.control.guardrails import (
    LATENCY_EDGES_MS,
    UNIT_FIELDS,
    ArmCounts,
    ArmEvidence,
    Guardrails,
    assess,
    evaluate,
    unit_deltas,
)
from gateway.stats.clustered import UnitSums

ALPHA = 0.05
DAYS = 14
Array = Any


def _bound(p: float, simulations: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / simulations)


def _error_looks(rng: np.random.Generator, simulations: int, units: int, rate: float) -> Array:
    """Per experiment and daily look, the unit sums (K, X, N, Sxx, Snn, Sxn) of an arm whose
    units have 1 + NegBin(2, 0.2) outcomes and an error propensity from Beta(10 rate,
    10 (1 - rate)), their outcomes spread uniformly over the days."""
    sizes = 1 + rng.negative_binomial(2, 0.2, size=(simulations, units))
    propensity = rng.beta(10 * rate, 10 * (1 - rate), size=(simulations, units))
    events = rng.binomial(sizes, propensity)
    share = np.full(DAYS, 1.0 / DAYS)
    x = np.cumsum(rng.multinomial(events, share), axis=2).astype(float)
    n = x + np.cumsum(rng.multinomial(sizes - events, share), axis=2)
    return np.stack(
        [(n > 0).sum(1), x.sum(1), n.sum(1), (x * x).sum(1), (n * n).sum(1), (x * n).sum(1)],
        axis=-1,
    )


def _evidence(row: Array) -> ArmEvidence:
    sums = UnitSums(int(row[0]), *(float(v) for v in row[1:]))
    return ArmEvidence(sums, UnitSums(), UnitSums())


def _live_counts(row: Array) -> ArmCounts:
    """The same arm as the live plane's counts with their unit sums (errors only)."""
    units, x, n, xx, nn, xn = (int(v) for v in row)
    return ArmCounts(n, x, 0, 0, unit_sums=(units, nn, xx, xn, 0, 0, 0, 0))


def _independent(row: Array) -> ArmEvidence:
    """The same counts with each outcome taken as its own unit (no unit sums)."""
    return ArmEvidence(UnitSums.independent(int(row[1]), int(row[2])), UnitSums(), UnitSums())


def test_rate_guardrail_at_its_limit_trips_at_most_alpha_under_daily_looks() -> None:
    """Error rate 5 % against 5 % + the 2-point limit, 200 units an arm, 14 daily looks:
    the clustered guardrail trips in at most alpha of 1000 experiments, and the live
    `evaluate` on counts with unit sums trips in exactly the same runs. Treating the
    outcomes as independent trips more often."""
    simulations = 1000
    rng = np.random.default_rng(150)
    control = _error_looks(rng, simulations, 200, 0.05)
    challenger = _error_looks(rng, simulations, 200, 0.07)
    tests = Guardrails(max_error_rate_increase=0.02, min_outcomes=50, alpha=ALPHA)
    tripped = naive = live = 0
    for a_looks, b_looks in zip(control, challenger, strict=True):
        tripped += any(
            check.breached
            for a, b in zip(a_looks, b_looks, strict=True)
            for check in assess(tests, _evidence(a), _evidence(b))
        )
        live += any(
            evaluate(tests, _live_counts(a), _live_counts(b))
            for a, b in zip(a_looks, b_looks, strict=True)
        )
        naive += any(
            check.breached
            for a, b in zip(a_looks, b_looks, strict=True)
            for check in assess(tests, _independent(a), _independent(b))
        )
    assert tripped / simulations <= ALPHA + _bound(ALPHA, simulations)
    assert live == tripped  # the live plane's unit sums give the analysis' test
    assert naive > tripped


def test_unit_deltas_add_up_to_the_sums_over_units() -> None:
    """Outcomes arriving one by one, units interleaved: the arm's sums grown by unit_deltas
    are the sums over units computed at the end, and ArmCounts carries them through its
    fields to the clustered evidence."""
    rng = np.random.default_rng(153)
    units = rng.integers(0, 30, size=500)
    kinds = rng.choice(["n", "error", "cancel", "nomatch"], size=500, p=[0.7, 0.1, 0.1, 0.1])
    per_unit: dict[int, dict[str, int]] = {}
    arm: Counter[str] = Counter()
    for unit, kind in zip(units.tolist(), kinds.tolist(), strict=True):
        before = per_unit.get(unit, {})
        after = dict(before)
        after["n"] = after.get("n", 0) + 1
        if kind != "n":
            after[kind] = after.get(kind, 0) + 1
        arm.update(unit_deltas(before, after))
        per_unit[unit] = after
    n = np.array([per_unit[u]["n"] for u in sorted(per_unit)], dtype=float)
    expected = {
        kind: UnitSums.of([per_unit[u].get(kind, 0) for u in sorted(per_unit)], n)
        for kind in ("error", "cancel", "nomatch")
    }
    counts = ArmCounts(
        500,
        int(expected["error"].x),
        int(expected["cancel"].x),
        int(expected["nomatch"].x),
        unit_sums=tuple(arm[name] for name in UNIT_FIELDS),
    )
    assert ArmCounts.from_fields(counts.to_fields()) == counts
    assert counts.rate_sums() == (expected["error"], expected["cancel"], expected["nomatch"])
    assert ArmEvidence.of_counts(counts).errors == expected["error"]


def test_incomplete_unit_sums_fall_back_to_independent_outcomes() -> None:
    """Unit sums that miss outcomes (a phase counted before they were kept: sum n_u^2 below
    the outcomes) are not used; every outcome is then its own unit."""
    partial = ArmCounts(100, 10, 0, 0, unit_sums=(5, 60, 8, 30, 0, 0, 0, 0))
    assert partial.rate_sums() is None
    assert ArmEvidence.of_counts(partial).errors == UnitSums.independent(10, 100)
    assert ArmCounts(100, 10, 0, 0).rate_sums() is None


def _latency_histogram(values: Array) -> tuple[int, ...]:
    edges = np.asarray(LATENCY_EDGES_MS)
    buckets = np.minimum(np.searchsorted(edges, values, side="right"), edges.size - 1)
    return tuple(int(c) for c in np.bincount(buckets, minlength=edges.size))


def _outcomes(rng: np.random.Generator, units: int, error_rate: float) -> list[Outcome]:
    """An arm's outcomes over DAYS days, in time order: each unit with its own error
    propensity and latency level, 1 + NegBin(2, 0.25) outcomes (mean 7)."""
    sizes = 1 + rng.negative_binomial(2, 0.25, size=units)
    propensity = rng.beta(10 * error_rate, 10 * (1 - error_rate), size=units)
    levels = rng.lognormal(6.0, 0.4, size=units)
    codes = np.repeat(np.arange(units), sizes)
    errors = rng.random(codes.size) < propensity[codes]
    latency = levels[codes] * rng.lognormal(0.0, 0.3, size=codes.size)
    at = np.sort(rng.uniform(0.0, DAYS * 86400.0, size=codes.size))
    order = rng.permutation(codes.size)  # units' outcomes spread over the whole span
    return [
        Outcome(
            float(at[i]),
            f"u{codes[j]}",
            "error" if errors[j] else "success",
            None,
            None if errors[j] else float(latency[j]),
        )
        for i, j in enumerate(order)
    ]


def test_latency_guardrail_on_clustered_aa_trips_at_most_alpha_under_daily_looks() -> None:
    """A/A, 150 units an arm whose levels differ, p90 compared with a 1 ms limit at 14
    daily looks, with the design effect of the units: trips in at most alpha of 300 runs."""
    simulations = 300
    rng = np.random.default_rng(151)
    tests = Guardrails(latency_quantile=0.9, max_latency_increase_ms=1.0, alpha=ALPHA)
    tripped = 0
    for _ in range(simulations):
        table_a = OutcomeTable.of(_outcomes(rng, 150, 0.05))
        table_b = OutcomeTable.of(_outcomes(rng, 150, 0.05))
        ends = [day * 86400.0 for day in range(1, DAYS + 1)]
        tripped += any(
            check.breached
            for end in ends
            for check in assess(
                tests,
                guardrail_evidence(table_a, table_a.upto(end), tests),
                guardrail_evidence(table_b, table_b.upto(end), tests),
            )
        )
    assert tripped / simulations <= ALPHA + _bound(ALPHA, simulations)


def test_analysis_guardrails_on_clustered_aa_trip_at_most_alpha_under_daily_looks() -> None:
    """The analysis as a user runs it every midnight: A/A, 150 units an arm, error rate
    5 %, guardrails on the error and cancellation rates (0.1-point margin) and the median
    latency (1 ms margin), all looks of 14 days: some guardrail regresses in at most alpha
    of 200 experiments."""
    simulations = 200
    rng = np.random.default_rng(152)
    options = AnalysisOptions(rate_margin=0.001, latency_margin_ms=1.0, latency_margin_share=0.0)
    ends = [day * 86400.0 for day in range(1, DAYS + 1)]
    regressed = 0
    for _ in range(simulations):
        control = VariantObservations.of("a", _outcomes(rng, 150, 0.05))
        challenger = VariantObservations.of("b", _outcomes(rng, 150, 0.05))
        checks = analysis_guardrails(control, challenger, ends, options)
        assert {check["metric"] for check in checks} == {
            "error_rate",
            "cancellation_rate",
            "final_latency_p50_ms",
        }
        regressed += any(check["status"] == "regressed" for check in checks)
    assert regressed / simulations <= ALPHA + _bound(ALPHA, simulations)
