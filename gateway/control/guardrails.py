"""Guardrails: when to roll a challenger back, from running counts of both arms (pure).

The gateway keeps `ArmCounts` per variant of the current phase (in Redis, as the hash fields
of `ArmCounts.to_fields`) and calls `evaluate` for each challenger against the control every
few outcomes, for as long as the experiment runs; a `Breach` makes it set the challenger's
weight to 0. Because it looks again and again without end, every test here is *sequential*
and one-sided: the chance that a guardrail ever trips, at any look, although the true
increase is within its limit, is at most `Guardrails.alpha`. docs/statistics.md
("Guardrails") gives the measured false-trip rates and times to trip.

What is counted is what users saw. The Speech SDKs retry a failed connection under the same
client session, and a failure followed by a successful retry never reaches the user; counted
per attempt, a challenger failing half of its connections would show about 50 % errors
where its users see about 3 %. So a failure enters the counts only when its client did not
retry it (`gateway.control.retries`, applied by the gateway state before `ArmCounts`), and a
guardrail trips on errors users get, not on failures the SDK hid. The attempts stay visible
in the records, the metrics and the analysis' attempt failure rate.

Units. `assess` is the one implementation of the tests: the live control plane calls it
through `evaluate`, and the analysis (`gateway.analysis.decision.guardrails`) at every look
of its timeline. Outcomes of one randomisation unit are not independent, so each arm's
evidence (`ArmEvidence`) carries, per rate, its sums over units
(`gateway.stats.clustered.UnitSums`), and for latency the design effect of the units at the
tested quantile. The analysis has every record and computes both from the units. The live
counts (`ArmCounts`) carry, beside the totals, the arm's sums over units (`unit_sums`: the
number of units, sum n_u^2 and per rate sum x_u^2 and sum x_u n_u), which the control plane
grows by `unit_deltas` from per-unit counters, so the live rate tests are the clustered
ones too. Counts without them (a phase counted before they were kept) take each outcome as
its own unit. Live latencies are taken as independent (design effect 1): the design effect
at a quantile needs each unit's latencies, which the live plane does not keep, so the live
latency guardrail trips somewhat more easily than alpha says when units' latencies differ
(docs/statistics.md, "Guardrails").

Rates (errors, cancellations, no-matches over outcomes). H0: p_challenger - p_control <=
limit. The estimate d = p_b - p_a is taken as normal with the clustered Agresti-Caffo
variance V (`gateway.stats.clustered.difference_variance`, the Agresti-Caffo one when each
unit has one outcome), as in the analysis' always-valid test (`gateway.stats.sequential`),
and untested while an arm has fewer than `gateway.stats.clustered.MIN_UNITS` units; but
mixing only over effects above the tested value theta
(a half-normal of scale tau) instead of a symmetric normal:

    Lambda+(theta) = 2 sqrt(V / (V + tau2)) exp(tau2 z^2 / (2 V (V + tau2)))
                     * Phi(z tau / sqrt(V (V + tau2))),    z = d - theta

a nonnegative martingale for theta the true difference and a supermartingale for any true
difference below theta, so by Ville's inequality it ever reaches 1/alpha with probability at
most alpha. The always-valid lower bound is d - m, where m solves Lambda+ = 1/alpha, and a
guardrail trips when it exceeds the limit. m lies between the two-sided mixture half-widths
at 2 alpha and alpha: the two-sided interval at alpha would be valid too, but conservative.
`RATE_TAU` is fixed in advance, as a scale chosen from the data would void the guarantee.

Latency quantile q, from histograms over `LATENCY_EDGES_MS`. At an arm's true q-quantile x_q
the empirical CDF is a proportion of mean q and variance q (1 - q) / n, so the same boundary
at alpha / 2 (scaled by `RANK_TAU`) gives a rank band q -+ h that holds at every look
(Woodruff's interval made sequential). With clustered latencies the empirical CDF is a ratio
over units, whose variance is the design effect times q (1 - q) / n, and so is the band's.
The challenger's quantile is then at least the lower edge of the bucket holding its rank
q - h, the control's at most the upper edge of the bucket holding its rank q + h, and the
guardrail trips when the difference of the two exceeds the limit. Both bounds hold at all
looks together with probability >= 1 - alpha, and the bucket edges only widen them:
conservative and valid for any latency distribution.

The guardrails of a challenger share alpha (Bonferroni: each is tested at alpha divided by
the number enabled), so the chance that any of them ever trips while every increase is
within its limit is at most alpha per challenger. The normal approximations need counts
that are not tiny, hence `min_outcomes` (>= 20) per arm before anything is tested.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, Literal

from gateway.stats.clustered import UnitSums, difference_variance
from gateway.stats.sequential import mixture_interval

GuardrailName = Literal["error_rate", "cancellation_rate", "no_match_rate", "latency"]

RATE_TAU: Final = 0.1
"""Mixing scale of the rate tests, in absolute rate. Guardrails hunt large regressions: with
0.1 a 30 % error rate against 1 % trips at the first look (50 outcomes) in most simulated
runs, and moderate ones nearly as soon as with the best scale for each (docs/statistics.md)."""

RANK_TAU: Final = 0.1
"""Mixing scale of the latency rank bands in standard deviations of one latency's
indicator: tau = RANK_TAU * sqrt(q (1 - q)), so the band's width in standard errors does
not depend on the quantile q."""

# 30 log-spaced edges per decade (8 % apart) from 1 ms to 117 s, at 3 significant digits so
# that they read well (none is near a rounding tie, so they are the same on every platform);
# bucket 0 holds [0, 1) ms, the last one everything from 117 s on. Bucket indices are Redis
# field names: never change the edges of a running deployment.
LATENCY_EDGES_MS: Final[tuple[float, ...]] = (
    *(float(f"{10 ** (k / 30):.3g}") for k in range(153)),
    math.inf,
)

_RATE_LABELS: Final[Mapping[GuardrailName, str]] = {
    "error_rate": "error rate",
    "cancellation_rate": "cancellation rate",
    "no_match_rate": "no-match rate",
}
# Hash field names of ArmCounts (suffixes of Redis hash fields): never rename them.
_N, _ERROR, _CANCEL, _NOMATCH, _LATENCY_PREFIX = "n", "error", "cancel", "nomatch", "lat."
_SQRT2: Final = math.sqrt(2.0)
_SQRT2PI: Final = math.sqrt(2.0 * math.pi)


def latency_bucket(ms: float) -> int:
    """Index of the `LATENCY_EDGES_MS` bucket holding ms: edges[i - 1] <= ms < edges[i]."""
    if not (math.isfinite(ms) and ms >= 0.0):
        raise ValueError(f"latency must be finite and >= 0 ms, got {ms!r}")
    return bisect.bisect_right(LATENCY_EDGES_MS, ms)


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Per-experiment guardrails, validated by the config layer. A None limit: that guardrail
    is off. The checks below only keep an invalid value from existing at all."""

    max_error_rate_increase: float | None = None  # challenger - control rate, in (0, 1)
    max_cancellation_rate_increase: float | None = None
    max_no_match_rate_increase: float | None = None
    latency_quantile: float = 0.9  # in (0, 1)
    max_latency_increase_ms: float | None = None  # challenger - control quantile, ms > 0
    min_outcomes: int = 50  # per arm before any guardrail is tested, >= 20
    alpha: float = 0.05  # in (0, 0.5]: chance that any ever trips while within its limit

    def __post_init__(self) -> None:
        for name in (
            "max_error_rate_increase",
            "max_cancellation_rate_increase",
            "max_no_match_rate_increase",
        ):
            limit = getattr(self, name)
            if limit is not None and not 0.0 < limit < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {limit!r}")
        if not 0.0 < self.latency_quantile < 1.0:
            raise ValueError(f"latency_quantile must be in (0, 1), got {self.latency_quantile!r}")
        ms = self.max_latency_increase_ms
        if ms is not None and not (math.isfinite(ms) and ms > 0.0):
            raise ValueError(f"max_latency_increase_ms must be finite and > 0, got {ms!r}")
        if self.min_outcomes < 20:
            raise ValueError(f"min_outcomes must be >= 20, got {self.min_outcomes!r}")
        if not 0.0 < self.alpha <= 0.5:
            raise ValueError(f"alpha must be in (0, 0.5], got {self.alpha!r}")


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Running counts of one arm in the current phase.

    outcomes counts the primary, non-forced outcome records, less the failures that their
    client retried (module doc); errors, cancellations and no_matches are among them.
    latency counts final_latency_ms per `LATENCY_EDGES_MS` bucket
    (of the outcomes that have one): () when there are none, else one count per bucket. An
    all-zero histogram is stored as (), so that counts compare equal after `to_fields`.

    unit_sums are the sums over the arm's randomisation units that a clustered variance
    needs, in the order of `UNIT_FIELDS`: the number of units, the sum of n_u^2 (n_u a
    unit's outcomes) and, per rate, the sums of x_u^2 and x_u n_u (x_u its errors,
    cancellations, no-matches). They grow by `unit_deltas` as a unit's counts grow; () when
    none are kept (the canonical form of all zeros).
    """

    outcomes: int
    errors: int
    cancellations: int
    no_matches: int
    latency: tuple[int, ...] = ()
    unit_sums: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.outcomes < 0:
            raise ValueError(f"outcomes must be >= 0, got {self.outcomes}")
        for name in ("errors", "cancellations", "no_matches"):
            count = getattr(self, name)
            if not 0 <= count <= self.outcomes:
                raise ValueError(f"{name} must be in [0, outcomes={self.outcomes}], got {count}")
        if self.unit_sums:
            if len(self.unit_sums) != len(UNIT_FIELDS) or min(self.unit_sums) < 0:
                raise ValueError(f"unit_sums must be {len(UNIT_FIELDS)} counts >= 0")
            if not any(self.unit_sums):
                object.__setattr__(self, "unit_sums", ())
        if not self.latency:
            return
        if len(self.latency) != len(LATENCY_EDGES_MS):
            raise ValueError(
                f"latency must have {len(LATENCY_EDGES_MS)} bucket counts, got {len(self.latency)}"
            )
        if min(self.latency) < 0:
            raise ValueError("latency bucket counts must be >= 0")
        total = sum(self.latency)
        if total > self.outcomes:
            raise ValueError(
                f"latency counts {total} latencies, more than outcomes={self.outcomes}"
            )
        if total == 0:
            object.__setattr__(self, "latency", ())  # the canonical form of "no latencies"

    @classmethod
    def from_fields(cls, fields: Mapping[str, int]) -> ArmCounts:
        """The counts that `to_fields` wrote; a missing field is 0, an unknown one an error."""
        scalars = {_N: 0, _ERROR: 0, _CANCEL: 0, _NOMATCH: 0}
        latency = [0] * len(LATENCY_EDGES_MS)
        units = dict.fromkeys(UNIT_FIELDS, 0)
        for name, value in fields.items():
            if name in scalars:
                scalars[name] = value
            elif name in units:
                units[name] = value
            elif name.startswith(_LATENCY_PREFIX) and _is_index(name[len(_LATENCY_PREFIX) :]):
                latency[int(name[len(_LATENCY_PREFIX) :])] = value
            else:
                raise ValueError(f"unknown counts field {name!r}")
        return cls(
            outcomes=scalars[_N],
            errors=scalars[_ERROR],
            cancellations=scalars[_CANCEL],
            no_matches=scalars[_NOMATCH],
            latency=tuple(latency),
            unit_sums=tuple(units.values()),
        )

    def to_fields(self) -> dict[str, int]:
        """Flat field -> count: "n", "error", "cancel", "nomatch" and the non-zero "lat.<i>"."""
        fields = {
            _N: self.outcomes,
            _ERROR: self.errors,
            _CANCEL: self.cancellations,
            _NOMATCH: self.no_matches,
        }
        for index, count in enumerate(self.latency):
            if count:
                fields[f"{_LATENCY_PREFIX}{index}"] = count
        for name, total in zip(UNIT_FIELDS, self.unit_sums, strict=False):
            if total:
                fields[name] = total
        return fields

    def rate_sums(self) -> tuple[UnitSums, UnitSums, UnitSums] | None:
        """Errors, cancellations and no-matches as sums over units, if the unit sums cover
        every outcome (sum n_u^2 >= sum n_u; not so when a phase began before they were
        kept); else None."""
        if not self.unit_sums:
            return None
        units, nn, *rates = self.unit_sums
        if not 0 < units <= self.outcomes or nn < self.outcomes:
            return None
        n = float(self.outcomes)
        counts = (self.errors, self.cancellations, self.no_matches)
        return tuple(  # type: ignore[return-value]
            UnitSums(units, float(x), n, float(xx), float(nn), float(xn))
            for x, xx, xn in zip(counts, rates[0::2], rates[1::2], strict=True)
        )


UNIT_FIELDS: Final = (
    "units",
    "nn",
    "xx.error",
    "xn.error",
    "xx.cancel",
    "xn.cancel",
    "xx.nomatch",
    "xn.nomatch",
)
"""`ArmCounts.unit_sums` field names (hash fields in Redis: never rename them)."""

UNIT_COUNTS: Final = (_N, _ERROR, _CANCEL, _NOMATCH)
"""The per-unit counts whose growth `unit_deltas` turns into unit-sum deltas."""


def unit_deltas(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """How an arm's unit sums (`UNIT_FIELDS`) grow when one unit's counts (`UNIT_COUNTS`:
    outcomes, errors, cancellations, no-matches) go from before to after."""
    n0, n1 = before.get(_N, 0), after.get(_N, 0)
    deltas = {"units": int(n0 == 0 < n1), "nn": n1 * n1 - n0 * n0}
    for name in (_ERROR, _CANCEL, _NOMATCH):
        x0, x1 = before.get(name, 0), after.get(name, 0)
        deltas[f"xx.{name}"] = x1 * x1 - x0 * x0
        deltas[f"xn.{name}"] = x1 * n1 - x0 * n0
    return {name: delta for name, delta in deltas.items() if delta}


def _is_index(text: str) -> bool:
    """A bucket index as `to_fields` writes it: decimal, no sign or leading zero, in range."""
    return (
        text.isascii()
        and text.isdigit()
        and text == str(int(text))
        and int(text) < len(LATENCY_EDGES_MS)
    )


@dataclass(frozen=True, slots=True)
class Breach:
    """A guardrail that tripped. Estimates are rates (0.05 for 5 %) or latency quantiles in
    ms; outcomes are the counts tested, latencies for the latency guardrail. alpha and, for
    latency, quantile only serve `reason`."""

    guardrail: GuardrailName
    control: float
    challenger: float
    lower_bound: float  # always-valid lower confidence bound of challenger - control
    limit: float  # the configured maximum increase
    outcomes: tuple[int, int]  # (control, challenger)
    alpha: float = 0.05
    quantile: float | None = None

    def reason(self) -> str:
        """One sentence for the rollback's audit entry and the dashboard."""
        control_n, challenger_n = self.outcomes
        confidence = f"{100.0 * (1.0 - self.alpha):g} %"
        if self.guardrail == "latency":
            what = "latency" if self.quantile is None else f"p{100.0 * self.quantile:g} latency"
            at_least, limit = _distinct(self.lower_bound, self.limit, 1.0, 0)
            return (
                f"{what} {self.challenger:.0f} ms vs control {self.control:.0f} ms "
                f"({challenger_n} vs {control_n} latencies): the increase is at least "
                f"{at_least} ms with {confidence} always-valid confidence, "
                f"over the {limit} ms limit"
            )
        at_least, limit = _distinct(self.lower_bound, self.limit, 100.0, 1)
        return (
            f"{_RATE_LABELS[self.guardrail]} {100.0 * self.challenger:.1f} % vs control "
            f"{100.0 * self.control:.1f} % ({challenger_n} vs {control_n} outcomes): "
            f"the increase is at least {at_least} pp with {confidence} always-valid "
            f"confidence, over the {limit} pp limit"
        )


def _distinct(value: float, limit: float, scale: float, decimals: int) -> tuple[str, str]:
    """value and limit, scaled, with enough decimals that a value over the limit reads so."""
    for places in range(decimals, decimals + 4):
        shown, shown_limit = f"{scale * value:.{places}f}", f"{scale * limit:.{places}f}"
        if shown != shown_limit:
            break
    return shown, shown_limit


def one_sided_margin(variance: float, tau2: float, alpha: float) -> float:
    """m with Lambda+ = 1/alpha at z = m (module doc): the estimate - m is an always-valid
    lower confidence bound at level 1 - alpha (and the estimate + m an upper one)."""
    # The two-sided half-width: there Lambda+ >= 1/alpha, since 2 Phi(x) >= 1 for x >= 0.
    margin = mixture_interval(0.0, variance, tau2=tau2, alpha=alpha)[1]
    total = variance + tau2
    scale = math.sqrt(tau2 / (variance * total))  # log Lambda+ = offset + x^2/2 + log Phi(x)
    offset = math.log(2.0 * alpha) + 0.5 * math.log(variance / total)  # minus log(1/alpha)
    # log Lambda+ is convex and increasing in z, so Newton's steps from above stay above the
    # root and converge quadratically: a handful of steps.
    for _ in range(50):
        x = scale * margin
        cdf = 0.5 * math.erfc(-x / _SQRT2)
        excess = offset + 0.5 * x * x + math.log(cdf)
        step = excess / (scale * (x + math.exp(-0.5 * x * x) / _SQRT2PI / cdf))
        margin -= step
        if step <= 1e-12 * margin:
            break
    return margin


@dataclass(frozen=True, slots=True)
class ArmEvidence:
    """What the tests use of one arm: per rate, its sums over randomisation units
    (`gateway.stats.clustered.UnitSums`), and the latency histogram with the design effect
    of the units at the tested quantile (1.0: latencies independent)."""

    errors: UnitSums
    cancellations: UnitSums
    no_matches: UnitSums
    latency: tuple[int, ...] = ()
    latency_design_effect: float = 1.0

    @property
    def outcomes(self) -> int:
        return int(self.errors.n)

    @classmethod
    def of_counts(cls, counts: ArmCounts) -> ArmEvidence:
        """The live counts: clustered by unit when they carry complete unit sums, else each
        outcome taken as its own unit (module doc, "Units"); latencies as independent."""
        n = counts.outcomes
        clustered = counts.rate_sums()
        if clustered is not None:
            return cls(*clustered, counts.latency)
        return cls(
            UnitSums.independent(counts.errors, n),
            UnitSums.independent(counts.cancellations, n),
            UnitSums.independent(counts.no_matches, n),
            counts.latency,
        )


@dataclass(frozen=True, slots=True)
class Assessment:
    """One guardrail at one look: the estimates and the always-valid lower bound of
    challenger - control, None while it cannot be tested yet (too few outcomes or units)."""

    guardrail: GuardrailName
    limit: float
    control: float | None
    challenger: float | None
    lower_bound: float | None
    outcomes: tuple[int, int]
    alpha: float
    quantile: float | None = None

    @property
    def breached(self) -> bool:
        return self.lower_bound is not None and self.lower_bound > self.limit

    def breach(self) -> Breach:
        """The Breach this assessment reports; only for a breached one."""
        if not self.breached:
            raise ValueError(f"guardrail {self.guardrail} is not breached")
        assert self.control is not None
        assert self.challenger is not None
        assert self.lower_bound is not None
        return Breach(
            self.guardrail,
            self.control,
            self.challenger,
            self.lower_bound,
            self.limit,
            self.outcomes,
            self.alpha,
            self.quantile,
        )


def evaluate(guardrails: Guardrails, control: ArmCounts, challenger: ArmCounts) -> list[Breach]:
    """The guardrails the challenger breaches against the control, in the order of
    `GuardrailName`; [] while either arm has fewer than `min_outcomes` outcomes (or, for the
    latency guardrail, latencies)."""
    found = assess(guardrails, ArmEvidence.of_counts(control), ArmEvidence.of_counts(challenger))
    return [check.breach() for check in found if check.breached]


def assess(
    guardrails: Guardrails, control: ArmEvidence, challenger: ArmEvidence
) -> list[Assessment]:
    """Every configured guardrail of the challenger against the control, in the order of
    `GuardrailName`: the one test that both the live control plane and the analysis run."""
    rates: tuple[tuple[GuardrailName, float | None, UnitSums, UnitSums], ...] = (
        ("error_rate", guardrails.max_error_rate_increase, control.errors, challenger.errors),
        (
            "cancellation_rate",
            guardrails.max_cancellation_rate_increase,
            control.cancellations,
            challenger.cancellations,
        ),
        (
            "no_match_rate",
            guardrails.max_no_match_rate_increase,
            control.no_matches,
            challenger.no_matches,
        ),
    )
    latency_limit = guardrails.max_latency_increase_ms
    enabled = sum(limit is not None for _, limit, _, _ in rates) + (latency_limit is not None)
    # Bonferroni: each of the challenger's guardrails at alpha / enabled, so that the chance
    # that any of them ever trips while all are within their limits is at most alpha.
    alpha = guardrails.alpha / max(enabled, 1)
    found = [
        _rate_assessment(guardrails, alpha, name, limit, sums_a, sums_b)
        for name, limit, sums_a, sums_b in rates
        if limit is not None
    ]
    if latency_limit is not None:
        found.append(_latency_assessment(guardrails, alpha, latency_limit, control, challenger))
    return found


def _rate_assessment(
    guardrails: Guardrails,
    alpha: float,
    name: GuardrailName,
    limit: float,
    a: UnitSums,
    b: UnitSums,
) -> Assessment:
    n_a, n_b = int(a.n), int(b.n)
    p_a = a.rate if n_a else None
    p_b = b.rate if n_b else None
    lower = None
    if min(n_a, n_b) >= guardrails.min_outcomes:
        # Infinite while an arm has fewer than MIN_UNITS units: not tested yet.
        variance = difference_variance(a, b)
        if math.isfinite(variance):
            lower = b.rate - a.rate - one_sided_margin(variance, RATE_TAU**2, alpha)
    return Assessment(name, limit, p_a, p_b, lower, (n_a, n_b), alpha)


def _latency_assessment(
    guardrails: Guardrails,
    alpha: float,
    limit: float,
    control: ArmEvidence,
    challenger: ArmEvidence,
) -> Assessment:
    # Cumulative counts: below[i] latencies lie below LATENCY_EDGES_MS[i].
    below_a, below_b = list(accumulate(control.latency)), list(accumulate(challenger.latency))
    n_a = below_a[-1] if below_a else 0
    n_b = below_b[-1] if below_b else 0
    q = guardrails.latency_quantile
    value_a = _quantile(control.latency, below_a, q * n_a) if n_a else None
    value_b = _quantile(challenger.latency, below_b, q * n_b) if n_b else None
    untested = Assessment("latency", limit, value_a, value_b, None, (n_a, n_b), alpha, q)
    if min(n_a, n_b, control.outcomes, challenger.outcomes) < guardrails.min_outcomes:
        return untested
    rank_a = (q + _rank_band(q, n_a, alpha, control.latency_design_effect)) * n_a
    if rank_a >= n_a:
        # Tested, but the control's quantile has no upper bound yet: nothing can trip.
        return dataclasses.replace(untested, lower_bound=-math.inf)
    # The control's quantile is below the smallest edge with more than rank_a values below.
    upper_a = LATENCY_EDGES_MS[bisect.bisect_right(below_a, rank_a)]
    # The challenger's is above the largest edge with fewer than rank_b values below, the
    # lower edge of the bucket where the cumulative count reaches rank_b.
    rank_b = (q - _rank_band(q, n_b, alpha, challenger.latency_design_effect)) * n_b
    index_b = bisect.bisect_left(below_b, rank_b)
    lower_b = LATENCY_EDGES_MS[index_b - 1] if index_b else 0.0
    return Assessment("latency", limit, value_a, value_b, lower_b - upper_a, (n_a, n_b), alpha, q)


def _rank_band(q: float, n: int, alpha: float, design_effect: float = 1.0) -> float:
    """h: the empirical CDF at the true q-quantile stays within q -+ h (each side alone with
    probability >= 1 - alpha / 2) at every n; its variance q (1 - q) / n is multiplied by the
    design effect of clustered latencies."""
    spread = q * (1.0 - q)
    return one_sided_margin(design_effect * spread / n, RANK_TAU**2 * spread, alpha / 2.0)


def _quantile(counts: tuple[int, ...], below: list[int], rank: float) -> float:
    """The value at rank (0 < rank <= n), interpolated linearly within its bucket; the open
    last bucket gives its lower edge."""
    index = bisect.bisect_left(below, rank)
    low = LATENCY_EDGES_MS[index - 1] if index else 0.0
    high = LATENCY_EDGES_MS[index]
    if math.isinf(high):
        return low
    before = below[index - 1] if index else 0
    return low + (high - low) * (rank - before) / counts[index]
