"""Tests for gateway.control.guardrails: latency buckets, counts fields, validation, the
one-sided mixture boundary, and simulated experiments (false trips, time to trip).

The simulations evaluate after every 10 outcomes per arm, as the gateway does after every
few, with fixed seeds; a rate measured over n runs has a standard error of
sqrt(p (1 - p) / n), and the bounds allow three. docs/statistics.md ("Guardrails") lists the
measured numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import norm

from gateway.control.guardrails import (
    LATENCY_EDGES_MS,
    RANK_TAU,
    RATE_TAU,
    ArmCounts,
    Breach,
    Guardrails,
    evaluate,
    latency_bucket,
    one_sided_margin,
)
from gateway.stats.sequential import mixture_interval

Array = Any  # numpy arrays; the tests are not type-checked strictly
ALPHA = 0.05
BUCKETS = len(LATENCY_EDGES_MS)
STEP = 10  # outcomes per arm between evaluations
HORIZON = 2000  # outcomes per arm of a simulated experiment
# A/A rates and latency: errors, cancellations and no-matches are exclusive outcomes.
RATES = {"error_rate": 0.05, "cancellation_rate": 0.02, "no_match_rate": 0.10}
MEDIAN_MS, SIGMA = 200.0, 0.5  # lognormal latency: p90 = 379 ms
LIMITS = {"error_rate": 0.02, "cancellation_rate": 0.02, "no_match_rate": 0.02, "latency": 20.0}
ALL_ON = Guardrails(
    max_error_rate_increase=LIMITS["error_rate"],
    max_cancellation_rate_increase=LIMITS["cancellation_rate"],
    max_no_match_rate_increase=LIMITS["no_match_rate"],
    max_latency_increase_ms=LIMITS["latency"],
)


def _bound(p: float, runs: int) -> float:
    """Three standard errors of a rate p measured over the given number of runs."""
    return 3 * math.sqrt(p * (1 - p) / runs)


def _histogram(latencies_ms: list[float]) -> tuple[int, ...]:
    counts = [0] * BUCKETS
    for ms in latencies_ms:
        counts[latency_bucket(ms)] += 1
    return tuple(counts)


# Latency buckets ---------------------------------------------------------------------------


def test_edges_are_log_spaced_from_1_ms_to_120_s() -> None:
    """Edges increase 5-10 % at a time from 1 ms to ~120 s, then inf; few enough buckets."""
    finite = np.array(LATENCY_EDGES_MS[:-1])
    assert LATENCY_EDGES_MS[-1] == math.inf
    assert finite[0] == 1.0
    assert 100_000 <= finite[-1] <= 130_000
    ratios = finite[1:] / finite[:-1]
    assert ratios.min() >= 1.05
    assert ratios.max() <= 1.10
    assert BUCKETS <= 160


def test_edges_are_pinned() -> None:
    """Bucket indices are stored as Redis field names, so the edges must never move."""
    assert LATENCY_EDGES_MS[:10] == (1.0, 1.08, 1.17, 1.26, 1.36, 1.47, 1.58, 1.71, 1.85, 2.0)
    assert LATENCY_EDGES_MS[30::30] == (10.0, 100.0, 1000.0, 10000.0, 100000.0)
    assert LATENCY_EDGES_MS[-2] == 117000.0
    assert BUCKETS == 154
    assert sum(LATENCY_EDGES_MS[:-1]) == pytest.approx(1578431.91, abs=0.01)


def test_latency_bucket_at_and_around_edges() -> None:
    """An edge belongs to the bucket above it, a value just below to the one below."""
    assert latency_bucket(0.0) == 0
    for index, edge in enumerate(LATENCY_EDGES_MS[:-1]):
        assert latency_bucket(edge) == index + 1
        assert latency_bucket(math.nextafter(edge, 0.0)) == index
    assert latency_bucket(1e12) == BUCKETS - 1


@given(st.floats(min_value=0.0, max_value=1e9, allow_nan=False))
def test_latency_bucket_holds_the_value(ms: float) -> None:
    """Bucket i holds edges[i - 1] <= ms < edges[i] (edges[-1] read as 0)."""
    index = latency_bucket(ms)
    low = LATENCY_EDGES_MS[index - 1] if index else 0.0
    assert low <= ms < LATENCY_EDGES_MS[index]


@pytest.mark.parametrize("ms", [-1.0, -1e-9, math.nan, math.inf])
def test_latency_bucket_rejects_impossible_latencies(ms: float) -> None:
    """A negative, NaN or infinite latency is an error rather than a bucket."""
    with pytest.raises(ValueError, match="latency must be finite"):
        latency_bucket(ms)


# Counts and their fields -------------------------------------------------------------------


def test_fields_have_stable_names_and_round_trip() -> None:
    """to_fields writes the four counts and the non-zero buckets; from_fields inverts it."""
    latency = [0] * BUCKETS
    latency[17], latency[BUCKETS - 1] = 3, 1
    counts = ArmCounts(outcomes=9, errors=2, cancellations=1, no_matches=4, latency=tuple(latency))
    fields = counts.to_fields()
    assert fields == {
        "n": 9,
        "error": 2,
        "cancel": 1,
        "nomatch": 4,
        "lat.17": 3,
        f"lat.{BUCKETS - 1}": 1,
    }
    assert ArmCounts.from_fields(fields) == counts
    no_latency = ArmCounts(5, 1, 0, 0)
    assert ArmCounts.from_fields(no_latency.to_fields()) == no_latency


def test_from_fields_reads_missing_fields_as_zero() -> None:
    """Redis creates a hash field on its first increment, so an absent field counts 0."""
    assert ArmCounts.from_fields({}) == ArmCounts(0, 0, 0, 0)
    assert ArmCounts.from_fields({"n": 3, "lat.0": 2}).latency[:2] == (2, 0)


@pytest.mark.parametrize("name", ["lat", "lat.", "lat.07", "lat.+7", f"lat.{BUCKETS}", "errors"])
def test_from_fields_rejects_unknown_fields(name: str) -> None:
    """A field that to_fields never writes is an error, not silently dropped."""
    with pytest.raises(ValueError, match="unknown counts field"):
        ArmCounts.from_fields({"n": 5, name: 1})


def test_all_zero_histogram_is_no_histogram() -> None:
    """Counts with an all-zero histogram are stored as (), so they survive a round trip."""
    counts = ArmCounts(4, 0, 0, 0, (0,) * BUCKETS)
    assert counts.latency == ()
    assert ArmCounts.from_fields(counts.to_fields()) == counts


NO_COUNTS = {"outcomes": 5, "errors": 0, "cancellations": 0, "no_matches": 0}
REST = (0,) * (BUCKETS - 1)  # the histogram after its first bucket


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outcomes": -1, "errors": 0}, "outcomes must be >= 0"),
        ({"errors": 6}, "errors must be in"),
        ({"cancellations": -1}, "cancellations must be in"),
        ({"no_matches": 9}, "no_matches must be in"),
        ({"latency": (1,)}, f"{BUCKETS} bucket counts"),
        ({"latency": (6, *REST)}, "more than outcomes"),
        ({"latency": (-1, 2, *REST[1:])}, "must be >= 0"),
    ],
)
def test_arm_counts_validation(kwargs: dict[str, Any], match: str) -> None:
    """Impossible counts are errors naming the count."""
    with pytest.raises(ValueError, match=match):
        ArmCounts(**{**NO_COUNTS, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_error_rate_increase": 0.0}, "max_error_rate_increase"),
        ({"max_cancellation_rate_increase": 1.0}, "max_cancellation_rate_increase"),
        ({"max_no_match_rate_increase": -0.1}, "max_no_match_rate_increase"),
        ({"latency_quantile": 1.0}, "latency_quantile"),
        ({"max_latency_increase_ms": 0.0}, "max_latency_increase_ms"),
        ({"max_latency_increase_ms": math.inf}, "max_latency_increase_ms"),
        ({"min_outcomes": 19}, "min_outcomes"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 0.6}, "alpha"),
    ],
)
def test_guardrails_validation(kwargs: dict[str, Any], match: str) -> None:
    """A value outside its documented range is an error naming the field."""
    with pytest.raises(ValueError, match=match):
        Guardrails(**kwargs)


# Evaluation --------------------------------------------------------------------------------


def test_nothing_is_tested_below_min_outcomes() -> None:
    """A blatant regression trips only once both arms have min_outcomes outcomes."""
    guardrails = Guardrails(max_error_rate_increase=0.05, min_outcomes=50)
    good, bad = ArmCounts(49, 0, 0, 0), ArmCounts(100, 90, 0, 0)
    assert evaluate(guardrails, good, bad) == []
    assert evaluate(guardrails, ArmCounts(100, 0, 0, 0), ArmCounts(49, 45, 0, 0)) == []
    [breach] = evaluate(guardrails, ArmCounts(50, 0, 0, 0), bad)
    assert breach.guardrail == "error_rate"
    assert breach.outcomes == (50, 100)


def test_latency_needs_min_outcomes_latencies() -> None:
    """Outcomes without a latency do not count towards the latency guardrail's minimum."""
    guardrails = Guardrails(max_latency_increase_ms=10.0, min_outcomes=50)
    fast, slow = _histogram([100.0] * 49), _histogram([5000.0] * 200)
    assert evaluate(guardrails, ArmCounts(200, 0, 0, 0, fast), ArmCounts(200, 0, 0, 0, slow)) == []
    fast = _histogram([100.0] * 200)
    [breach] = evaluate(guardrails, ArmCounts(200, 0, 0, 0, fast), ArmCounts(200, 0, 0, 0, slow))
    assert breach.guardrail == "latency"
    assert breach.control == pytest.approx(100.0, rel=0.08)
    assert breach.challenger == pytest.approx(5000.0, rel=0.08)
    # Always-valid: at least what the bucket edges around the two values allow.
    assert 10.0 < breach.lower_bound <= 5000.0 - 100.0
    assert breach.outcomes == (200, 200)
    assert breach.reason().startswith("p90 latency 4")


def test_breaches_come_in_guardrail_order_with_their_estimates() -> None:
    """Each breached guardrail reports both estimates, its bound and the limit."""
    control = ArmCounts(400, 4, 4, 4)
    challenger = ArmCounts(400, 120, 4, 120)
    breaches = evaluate(ALL_ON, control, challenger)
    assert [b.guardrail for b in breaches] == ["error_rate", "no_match_rate"]
    for breach in breaches:
        assert (breach.control, breach.challenger) == (0.01, 0.30)
        assert breach.limit == 0.02
        assert 0.02 < breach.lower_bound < 0.29
        assert breach.outcomes == (400, 400)


def test_rate_lower_bound_is_the_one_sided_mixture_bound() -> None:
    """The reported lower bound is the difference minus the one-sided margin of the
    Agresti-Caffo variance."""
    [breach] = evaluate(
        Guardrails(max_error_rate_increase=0.05), ArmCounts(64, 1, 0, 0), ArmCounts(61, 19, 0, 0)
    )
    p_a, p_b = 2 / 66, 20 / 63  # Agresti-Caffo: one success and one failure added per arm
    variance = p_a * (1 - p_a) / 66 + p_b * (1 - p_b) / 63
    expected = 19 / 61 - 1 / 64 - one_sided_margin(variance, RATE_TAU**2, ALPHA)
    assert breach.lower_bound == pytest.approx(expected, rel=1e-12)


def test_reason_reads_as_one_sentence() -> None:
    """The reason names the guardrail, both estimates, the counts, the bound and the limit."""
    breach = Breach("error_rate", 0.01, 0.31, 0.123, 0.05, (64, 61))
    assert breach.reason() == (
        "error rate 31.0 % vs control 1.0 % (61 vs 64 outcomes): the increase is at least "
        "12.3 pp with 95 % always-valid confidence, over the 5.0 pp limit"
    )
    close = Breach("no_match_rate", 0.1, 0.2, 0.05004, 0.05, (900, 800), alpha=0.01)
    assert "at least 5.004 pp with 99 % always-valid confidence, over the 5.000 pp" in (
        close.reason()
    )
    latency = Breach("latency", 390.2, 812.0, 151.0, 100.0, (560, 540), alpha=0.05, quantile=0.95)
    assert latency.reason() == (
        "p95 latency 812 ms vs control 390 ms (540 vs 560 latencies): the increase is at least "
        "151 ms with 95 % always-valid confidence, over the 100 ms limit"
    )


# The one-sided boundary --------------------------------------------------------------------


def _half_normal_mixture(z: float, variance: float, tau2: float) -> float:
    """Lambda+ from its definition: the likelihood ratio of an effect delta above the tested
    value, integrated over the half-normal density of delta."""
    tau = math.sqrt(tau2)

    def integrand(delta: float) -> float:
        ratio = math.exp(delta * z / variance - delta**2 / (2 * variance))
        return float(2 * norm.pdf(delta, scale=tau) * ratio)

    value, _ = integrate.quad(integrand, 0.0, math.inf)
    return float(value)


@pytest.mark.parametrize(
    ("variance", "tau2", "alpha"),
    [(1e-3, 0.01, 0.05), (4e-3, 0.01, 0.05), (1e-5, 0.01, 0.01), (0.09 / 300, 0.0009, 0.025)],
)
def test_margin_is_where_the_half_normal_mixture_is_one_over_alpha(
    variance: float, tau2: float, alpha: float
) -> None:
    """At the margin, Lambda+ integrated numerically is 1/alpha; the margin lies between
    the two-sided mixture half-widths at 2 alpha and alpha."""
    margin = one_sided_margin(variance, tau2, alpha)
    assert _half_normal_mixture(margin, variance, tau2) == pytest.approx(1 / alpha, rel=1e-6)
    assert mixture_interval(0.0, variance, tau2=tau2, alpha=2 * alpha)[1] <= margin
    assert margin < mixture_interval(0.0, variance, tau2=tau2, alpha=alpha)[1]


def test_one_sided_boundary_is_always_valid_for_gaussian_sums() -> None:
    """Means of standard normals checked at every n up to 2,000 ever exceed the one-sided
    margin in at most alpha of the runs."""
    runs, steps = 4000, 2000
    rng = np.random.default_rng(30)
    n = np.arange(1, steps + 1)
    margins = np.array([one_sided_margin(1 / k, 0.1**2, ALPHA) for k in n.tolist()])
    crossed = np.zeros(runs, dtype=bool)
    for block in np.array_split(np.arange(runs), 4):  # bounds memory
        means = rng.standard_normal((block.size, steps)).cumsum(axis=1) / n
        crossed[block] = (means > margins).any(axis=1)
    assert crossed.mean() <= ALPHA + _bound(ALPHA, runs)


def test_rank_band_holds_at_every_look() -> None:
    """The empirical CDF at the true p90, from 50 to 2,000 latencies, leaves its band on
    either side in at most alpha / 2 of the runs."""
    runs, steps, q = 4000, 2000, 0.9
    rng = np.random.default_rng(31)
    n = np.arange(50, steps + 1)
    spread = q * (1 - q)
    bands = np.array([one_sided_margin(spread / k, RANK_TAU**2 * spread, ALPHA / 2) for k in n])
    low = high = 0
    for _ in range(4):
        below = (rng.random((runs // 4, steps)) < q).cumsum(axis=1)[:, n - 1] / n
        low += int((below < q - bands).any(axis=1).sum())
        high += int((below > q + bands).any(axis=1).sum())
    assert low / runs <= ALPHA / 2 + _bound(ALPHA / 2, runs)
    assert high / runs <= ALPHA / 2 + _bound(ALPHA / 2, runs)


# Simulated experiments ---------------------------------------------------------------------


def _arm(
    rng: np.random.Generator, rates: dict[str, float], median_ms: float, shift_ms: float = 0.0
) -> tuple[Array, Array]:
    """Cumulative counts of one arm after every STEP outcomes: (looks, 3) of errors,
    cancellations, no-matches and (looks, BUCKETS) of latencies. Errors and cancellations
    have no final latency."""
    cut = np.cumsum([rates["error_rate"], rates["cancellation_rate"], rates["no_match_rate"]])
    kind = np.searchsorted(cut, rng.random(HORIZON), side="right")  # 0, 1, 2; 3: success
    ms = median_ms * np.exp(SIGMA * rng.standard_normal(HORIZON)) + shift_ms
    buckets = np.searchsorted(LATENCY_EDGES_MS, ms, side="right")
    look = np.arange(HORIZON) // STEP
    rates_by_look = np.stack(
        [np.bincount(look[kind == k], minlength=HORIZON // STEP) for k in (0, 1, 2)], axis=1
    )
    timed = kind >= 2
    latency = np.bincount(
        look[timed] * BUCKETS + buckets[timed], minlength=HORIZON // STEP * BUCKETS
    ).reshape(-1, BUCKETS)
    return rates_by_look.cumsum(axis=0), latency.cumsum(axis=0)


def _counts(outcomes: int, rates: Array, latency: Array) -> ArmCounts:
    errors, cancellations, no_matches = rates.tolist()
    return ArmCounts(outcomes, errors, cancellations, no_matches, tuple(latency.tolist()))


def _first_trips(
    runs: int,
    seed: int,
    guardrails: Guardrails,
    challenger_rates: dict[str, float],
    control_ms: float = MEDIAN_MS,
    challenger_ms: float = MEDIAN_MS,
    shift_ms: float = 0.0,
    control_rates: dict[str, float] = RATES,
) -> dict[str, Array]:
    """Per guardrail, the outcomes per arm at each run's first trip (inf: never tripped).
    A run stops once every guardrail that is on has tripped."""
    names = ["error_rate", "cancellation_rate", "no_match_rate", "latency"]
    first = {name: np.full(runs, math.inf) for name in names}
    rng = np.random.default_rng(seed)
    for run in range(runs):
        rates_a, latency_a = _arm(rng, control_rates, control_ms)
        rates_b, latency_b = _arm(rng, challenger_rates, challenger_ms, shift_ms)
        pending = {
            name
            for name, limit in zip(
                names,
                (
                    guardrails.max_error_rate_increase,
                    guardrails.max_cancellation_rate_increase,
                    guardrails.max_no_match_rate_increase,
                    guardrails.max_latency_increase_ms,
                ),
                strict=True,
            )
            if limit is not None
        }
        for look in range(HORIZON // STEP):
            n = (look + 1) * STEP
            if n < guardrails.min_outcomes:
                continue
            control = _counts(n, rates_a[look], latency_a[look])
            challenger = _counts(n, rates_b[look], latency_b[look])
            for breach in evaluate(guardrails, control, challenger):
                if breach.guardrail in pending:
                    first[breach.guardrail][run] = n
                    pending.discard(breach.guardrail)
            if not pending:
                break
    return first


def _trip_rates(first: dict[str, Array]) -> dict[str, float]:
    return {name: float(np.isfinite(trips).mean()) for name, trips in first.items()}


def _worse_by(fraction: float) -> dict[str, float]:
    return {name: rate + fraction * LIMITS[name] for name, rate in RATES.items()}


A_A_RUNS = 300


def test_a_a_false_trips_are_at_most_alpha() -> None:
    """Identical arms, evaluated every 10 outcomes up to 2,000: no guardrail trips in more
    than alpha of the runs."""
    rates = _trip_rates(_first_trips(A_A_RUNS, 40, ALL_ON, RATES))
    for rate in rates.values():
        assert rate <= ALPHA + _bound(ALPHA, A_A_RUNS)


def test_half_the_limit_rarely_trips() -> None:
    """A challenger worse by half of every limit (rates +1 pp, latency +10 ms) stays within
    the limits, so it trips in at most alpha of the runs."""
    first = _first_trips(A_A_RUNS, 41, ALL_ON, _worse_by(0.5), shift_ms=LIMITS["latency"] / 2)
    rates = _trip_rates(first)
    for rate in rates.values():
        assert rate <= ALPHA + _bound(ALPHA, A_A_RUNS)


def test_exactly_the_limit_trips_at_most_alpha() -> None:
    """The hardest null: a challenger worse by exactly every limit trips in at most alpha of
    the runs (the guarantee holds for the whole of H0)."""
    first = _first_trips(A_A_RUNS, 42, ALL_ON, _worse_by(1.0), shift_ms=LIMITS["latency"])
    rates = _trip_rates(first)
    for rate in rates.values():
        assert rate <= ALPHA + _bound(ALPHA, A_A_RUNS)


def test_a_fixed_horizon_bound_checked_every_10_outcomes_trips_too_often() -> None:
    """The simulations can see an invalid test: the one-sided fixed-horizon 95 % bound,
    computed with the same variance and checked at the same looks, trips at the limit in
    far more than alpha of the runs."""
    runs = 2000
    rng = np.random.default_rng(45)
    n = np.arange(50, HORIZON + 1, STEP)
    errors = [rng.binomial(1, p, (runs, HORIZON)).cumsum(axis=1)[:, n - 1] for p in (0.05, 0.07)]
    p_a, p_b = ((k + 1) / (n + 2) for k in errors)  # Agresti-Caffo, as difference_variance
    se = np.sqrt(p_a * (1 - p_a) / (n + 2) + p_b * (1 - p_b) / (n + 2))
    lower = (errors[1] - errors[0]) / n - norm.ppf(1 - ALPHA) * se
    tripped = float((lower > 0.02).any(axis=1).mean())
    assert tripped > ALPHA + _bound(ALPHA, runs)


def test_a_large_error_regression_trips_within_80_outcomes() -> None:
    """Error rate 30 % against 1 % with a 5 pp limit: every run trips, 95 % of them by 80
    outcomes per arm (min_outcomes 50, evaluations every 10)."""
    runs = 200
    guardrails = Guardrails(max_error_rate_increase=0.05)
    control = {"error_rate": 0.01, "cancellation_rate": 0.0, "no_match_rate": 0.0}
    challenger = {**control, "error_rate": 0.30}
    first = _first_trips(runs, 43, guardrails, challenger, control_rates=control)
    trips = first["error_rate"]
    assert np.isfinite(trips).all()
    assert trips.min() >= guardrails.min_outcomes
    assert np.percentile(trips, 95) <= 80


def test_twice_as_slow_trips_within_400_latencies() -> None:
    """Median 400 ms against 200 ms (p90 759 vs 379 ms) with a 100 ms limit on the p90:
    every run trips, 95 % of them by 400 outcomes per arm."""
    runs = 200
    guardrails = Guardrails(max_latency_increase_ms=100.0, latency_quantile=0.9)
    no_failures = {"error_rate": 0.0, "cancellation_rate": 0.0, "no_match_rate": 0.0}
    first = _first_trips(
        runs, 44, guardrails, no_failures, challenger_ms=400.0, control_rates=no_failures
    )
    trips = first["latency"]
    assert np.isfinite(trips).all()
    assert np.percentile(trips, 95) <= 400
