"""Rates over outcomes when the randomisation unit, not the outcome, is independent.

A unit (user, device) is assigned to one arm and produces several outcomes; a unit that
speaks unclearly gets several no-matches, a flaky device several errors. The rate of an arm
is then a ratio metric, sum over units of x_u (outcomes of the kind) over sum of n_u (all
outcomes), and its variance comes from the spread of units, not from the binomial formula,
which treats outcomes as independent and understates it by the design effect (about
1 + (m - 1) ICC for units of m outcomes with intra-unit correlation ICC).

`UnitSums` holds the sufficient statistics of one arm: the number of units K and the sums of
x_u, n_u, x_u^2, n_u^2 and x_u n_u. They add up outcome by outcome, so a live counter can
keep them, and every variance here is a function of them alone. The delta-method variance
of R = X / N (X = sum x_u, N = sum n_u) is

    V(R) = K / (K - 1) * sum (x_u - R n_u)^2 / N^2
         = K / (K - 1) * (Sxx - 2 R Sxn + R^2 Snn) / N^2                   (`ratio_variance`)

the cluster-robust (sandwich) variance with the usual K / (K - 1) factor; the tests check it
against statsmodels' cluster-robust OLS.

Small samples (`rate_variance`): with no failure at all in an arm (the first looks of a
good variant) every residual is 0 and so is V(R), which would make any difference look
certain. As Agresti and Caffo add one success and one failure per arm, one pseudo-unit with
x = 1, n = 2 is added to the arm, and the variance is that of the adjusted rate
p~ = (X + 1) / (N + 2), p~ (1 - p~) / (N + 2), multiplied by the design effect estimated
with the pseudo-unit and floored at 1. So the variance is positive for every sample, reduces
exactly to the Agresti-Caffo one when every unit has one outcome, and is never below it
(clustering with negative intra-unit correlation is not credited). The effective sample size
N / deff lets Wilson's score interval of one rate respect the units too (`effective`).
A quantile's interval (`quantile_interval`) inverts the same variance of the empirical CDF.

Fixed-horizon intervals use Student's t with K - 1 degrees of freedom for one arm and
K_a + K_b - 2 for a difference instead of the normal quantile: the variance is estimated
from K units, not from N outcomes. The difference's interval is the Wald one on the
adjusted variance (`difference_interval`): Newcombe's on the effective samples, which pairs
each arm's own asymmetric width with the direction of the deviation, rejected up to 13 % of
A/A experiments at 5 % when rare events concentrate on few units (docs/statistics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.stats.bootstrap import Values, as_array

MIN_UNITS: Final = 20
"""Units an arm needs before a clustered variance is used by a sequential test: from fewer,
the spread of units is too poorly estimated (`gateway.stats.sequential.MIN_SESSIONS`)."""


@dataclass(frozen=True, slots=True)
class UnitSums:
    """Sufficient statistics of a ratio over units: K and the sums of x, n, x^2, n^2, x n."""

    units: int = 0
    x: float = 0.0
    n: float = 0.0
    xx: float = 0.0
    nn: float = 0.0
    xn: float = 0.0

    def __post_init__(self) -> None:
        values = (self.x, self.n, self.xx, self.nn, self.xn)
        if self.units < 0 or not all(math.isfinite(v) and v >= 0.0 for v in values):
            raise ValueError(f"unit sums must be finite and >= 0, got {self!r}")
        if self.x > self.n:
            raise ValueError(f"x must be <= n, got x={self.x} and n={self.n}")

    @classmethod
    def of(cls, x: Values, n: Values) -> UnitSums:
        """The sums over units, one element of x (events) and n (outcomes) per unit."""
        x_array = as_array(x, "x", nonnegative=True)
        n_array = as_array(n, "n", nonnegative=True)
        if x_array.size != n_array.size:
            raise ValueError(
                f"x and n must have one element per unit, got {x_array.size} and {n_array.size}"
            )
        if (x_array > n_array).any():
            raise ValueError("x must be <= n for every unit")
        return cls(
            units=int(x_array.size),
            x=float(x_array.sum()),
            n=float(n_array.sum()),
            xx=float(np.dot(x_array, x_array)),
            nn=float(np.dot(n_array, n_array)),
            xn=float(np.dot(x_array, n_array)),
        )

    @classmethod
    def independent(cls, events: int, outcomes: int) -> UnitSums:
        """events among outcomes, each outcome its own unit (the binomial case)."""
        if not 0 <= events <= outcomes:
            raise ValueError(f"events must be in [0, outcomes={outcomes}], got {events}")
        return cls(outcomes, events, outcomes, events, outcomes, events)

    def __add__(self, other: UnitSums) -> UnitSums:
        """The sums of two disjoint sets of units."""
        return UnitSums(
            self.units + other.units,
            self.x + other.x,
            self.n + other.n,
            self.xx + other.xx,
            self.nn + other.nn,
            self.xn + other.xn,
        )

    @property
    def rate(self) -> float:
        """X / N; NaN without outcomes."""
        return self.x / self.n if self.n > 0 else math.nan

    def residual_squares(self, ratio: float) -> float:
        """sum (x_u - ratio n_u)^2, from the sums (clamped at 0 against rounding)."""
        return max(0.0, self.xx - 2.0 * ratio * self.xn + ratio * ratio * self.nn)


_PSEUDO_UNIT: Final = UnitSums(1, 1.0, 2.0, 1.0, 4.0, 2.0)


def ratio_variance(sums: UnitSums, *, small_sample: bool = True) -> float:
    """Delta-method (cluster-robust) variance of X / N (module doc); math.inf with fewer
    than 2 units or no outcomes. small_sample=False drops the K / (K - 1) factor."""
    if sums.units < 2 or sums.n <= 0.0:
        return math.inf
    factor = sums.units / (sums.units - 1) if small_sample else 1.0
    return factor * sums.residual_squares(sums.rate) / sums.n**2


def design_effect(sums: UnitSums) -> float:
    """Clustered over binomial variance of the rate, both with the pseudo-unit, floored at 1
    (module doc); 1.0 without outcomes."""
    if sums.n <= 0.0:
        return 1.0
    adjusted = sums + _PSEUDO_UNIT
    p = adjusted.rate
    binomial = p * (1.0 - p) / adjusted.n
    return max(1.0, ratio_variance(adjusted) / binomial)


def rate_variance(sums: UnitSums) -> float:
    """Variance of one arm's rate for tests: Agresti-Caffo's times the design effect
    (module doc); math.inf without outcomes."""
    if sums.n <= 0.0:
        return math.inf
    p = (sums.x + 1.0) / (sums.n + 2.0)
    return p * (1.0 - p) / (sums.n + 2.0) * design_effect(sums)


def difference_variance(
    control: UnitSums, challenger: UnitSums, *, min_units: int = MIN_UNITS
) -> float:
    """Variance of challenger rate - control rate (arms independent); math.inf while an arm
    has fewer than min_units units, which the sequential tests skip."""
    if min(control.units, challenger.units) < min_units:
        return math.inf
    return rate_variance(control) + rate_variance(challenger)


def effective(sums: UnitSums) -> tuple[float, float]:
    """(events, outcomes) divided by the design effect: the binomial sample as informative
    as the clustered one, for score intervals."""
    deff = design_effect(sums)
    return sums.x / deff, sums.n / deff


def t_quantile(confidence: float, degrees: int) -> float:
    """Two-sided Student quantile for a confidence level in (0, 1) (normal for huge df)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    # Imported here: scipy costs a third of a second to import, and the experiment model
    # (thus every CLI command, and the gateway) imports this module for its guardrails,
    # which never call this. The analysis does: in `speech-gateway analyze`, and in the
    # gateway's analysis process (`gateway.server.admin.analysis_worker`), whose start-up
    # imports it, never on the gateway's event loop. scipy.special, not scipy.stats (whose
    # `t.ppf` is this function): a second less to import, the same values.
    from scipy.special import stdtrit

    return float(stdtrit(max(degrees, 1), 0.5 + confidence / 2.0))


def difference_interval(
    control: UnitSums, challenger: UnitSums, confidence: float = 0.95
) -> tuple[float, float]:
    """challenger rate - control rate -+ t sqrt(variance), the variance of
    `difference_variance` (every unit counted), t with K_a + K_b - 2 degrees of freedom,
    clamped to [-1, 1]; (-1.0, 1.0) while an arm has no outcome or the arms fewer than 3
    units together."""
    degrees = control.units + challenger.units - 2
    if control.n <= 0.0 or challenger.n <= 0.0 or degrees < 1:
        return -1.0, 1.0
    half = t_quantile(confidence, degrees) * math.sqrt(
        rate_variance(control) + rate_variance(challenger)
    )
    difference = challenger.rate - control.rate
    return max(-1.0, difference - half), min(1.0, difference + half)


def quantile_interval(
    values: Values, units: npt.NDArray[np.intp], q: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """The q-quantile of the values and Woodruff's interval, clustered by unit.

    The empirical CDF at the estimated quantile is a ratio over units (values at most the
    estimate over all values, per unit), with the delta-method variance V of
    `ratio_variance`; the bounds are the quantiles at q -+ t sqrt(V), t with K - 1 degrees
    of freedom (Woodruff 1952). units gives each value's unit code, 0..K-1. With a single
    unit the interval is (-inf, inf). In the simulations of docs/statistics.md it covers
    95 % from 50 units on, where the percentile bootstrap over units covered 92-94 %.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    array = as_array(values, "values")
    codes = np.asarray(units, dtype=np.intp)
    if codes.shape != array.shape or (codes < 0).any():
        raise ValueError("units must give a code >= 0 for each value")
    estimate = float(np.quantile(array, q))
    n = np.bincount(codes).astype(np.float64)
    x = np.bincount(codes, weights=(array <= estimate).astype(np.float64), minlength=n.size)
    sums = UnitSums.of(x[n > 0], n[n > 0])
    if sums.units < 2:
        return estimate, -math.inf, math.inf
    half = t_quantile(confidence, sums.units - 1) * math.sqrt(ratio_variance(sums))
    low = float(np.quantile(array, max(0.0, q - half)))
    high = float(np.quantile(array, min(1.0, q + half)))
    return estimate, low, high
