"""Always-valid inference: intervals and p-values that stay valid however often one looks.

A fixed-horizon interval is valid once, at the sample size planned in advance; checked after
every batch of traffic it excludes a true zero difference far more often than alpha (the
simulations in tests/stats/test_simulations.py measure how much). The normal-mixture
sequential probability ratio test (mSPRT; Robbins 1970, Johari et al. 2017) instead gives a
confidence sequence: with an approximately normal estimate of variance V, the mixture
likelihood ratio against theta is

    Lambda(theta) = sqrt(V / (V + tau2)) * exp(tau2 * (estimate - theta)^2 / (2 V (V + tau2)))

and {theta : Lambda(theta) < 1/alpha} covers the true theta at every look at once with
probability at least 1 - alpha, as far as the estimate is normal with a well-estimated
variance (hence `MIN_SESSIONS`) and the effect constant over time. tau2 is the variance of
the normal mixing distribution over effects; `DEFAULT_TAU` fixes it per metric in the
metric's absolute units, before any data, because a scale chosen from the data would break
the guarantee. docs/statistics.md explains the choice and its trade-off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np

from gateway.stats.bootstrap import Values, as_array

DEFAULT_TAU: Mapping[str, float] = MappingProxyType(
    {"wer": 0.03, "rate": 0.02, "latency_ms": 100.0}
)
"""Mixing scale tau per metric, in the metric's units (pass tau2 = tau ** 2)."""


MIN_SESSIONS: Final = 20
"""Sessions an arm needs before `ratio_variance` returns a finite variance (see its doc)."""


def ratio_variance(errors: Values, words: Values, *, min_sessions: int = MIN_SESSIONS) -> float:
    """Delta-method variance of sum(errors) / sum(words) over i.i.d. sessions (clusters).

    The ratio is linearised around its estimate R: its variance is that of the residuals
    errors - R * words, scaled by n / (n - 1) and divided by the squared word total. Errors
    may be negative, so the per-session difference of two arms' errors on the same audio
    gives the variance of a paired (shadow) WER difference.

    With fewer than min_sessions sessions (or no words) the variance is unknown: math.inf,
    which `always_valid` skips. The linearisation is asymptotic, and from a handful of
    sessions (several with no errors at all) it can come out far too small: in the A/A
    simulations of docs/statistics.md the always-valid test that looked from the 2nd session
    on had a false-positive rate of 0.13 instead of at most 0.05, and 0.014 from the 20th.
    """
    if min_sessions < 2:
        raise ValueError(f"min_sessions must be >= 2, got {min_sessions}")
    errors_array = as_array(errors, "errors")
    words_array = as_array(words, "words", nonnegative=True)
    if errors_array.size != words_array.size:
        raise ValueError(
            "errors and words must have one element per session, got "
            f"{errors_array.size} and {words_array.size}"
        )
    n = errors_array.size
    word_total = float(words_array.sum())
    if n < min_sessions or word_total <= 0.0:
        return math.inf
    ratio = float(errors_array.sum()) / word_total
    residuals = errors_array - ratio * words_array
    return float(n / (n - 1) * np.dot(residuals, residuals) / word_total**2)


def _check(variance: float, tau2: float) -> None:
    if not (math.isfinite(variance) and variance > 0.0):
        raise ValueError(f"variance must be finite and > 0, got {variance!r}")
    if not (math.isfinite(tau2) and tau2 > 0.0):
        raise ValueError(f"tau2 must be finite and > 0, got {tau2!r}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def mixture_interval(
    estimate: float, variance: float, *, tau2: float, alpha: float = 0.05
) -> tuple[float, float]:
    """{theta : Lambda(theta) < 1/alpha}: the estimate +- the mixture half-width."""
    _check(variance, tau2)
    _check_alpha(alpha)
    total = variance + tau2
    half = math.sqrt(
        variance * total / tau2 * (math.log(total / variance) + 2.0 * math.log(1.0 / alpha))
    )
    return estimate - half, estimate + half


def mixture_p_value(estimate: float, variance: float, *, tau2: float) -> float:
    """min(1, 1 / Lambda(0)): the always-valid p-value of "no difference" at one look."""
    _check(variance, tau2)
    total = variance + tau2
    # In logs: Lambda overflows a float for large effects, where the p-value is simply 0.0.
    log_lambda = 0.5 * math.log(variance / total) + tau2 * estimate**2 / (2.0 * variance * total)
    return math.exp(-log_lambda) if log_lambda > 0.0 else 1.0


@dataclass(frozen=True, slots=True)
class AlwaysValid:
    """The running result after the looks so far.

    looks counts the looks used (skipped ones excluded). conflicts counts looks whose own
    interval did not overlap the running one; they are left out of the intersection, and any
    conflict means the effect is probably not constant over time (a novelty effect, a change
    mid-experiment), so the interval describes no single effect and should not be reported.
    """

    interval: tuple[float, float]
    p_value: float
    looks: int
    conflicts: int = 0


def always_valid(
    looks: Sequence[tuple[float, float]], *, tau2: float, alpha: float = 0.05
) -> AlwaysValid:
    """Running intersection of the mixture intervals and running minimum of the p-values.

    looks are (estimate, variance) at successive analyses, in time order, each computed on
    all the data up to then. A look with a variance <= 0 or a non-finite value is skipped
    (not enough data yet). With no usable look the interval is (-inf, inf) and the p-value 1.
    """
    if not (math.isfinite(tau2) and tau2 > 0.0):
        raise ValueError(f"tau2 must be finite and > 0, got {tau2!r}")
    _check_alpha(alpha)
    low, high = -math.inf, math.inf
    p_value = 1.0
    used = conflicts = 0
    for estimate, variance in looks:
        if not (math.isfinite(estimate) and math.isfinite(variance) and variance > 0.0):
            continue
        used += 1
        look_low, look_high = mixture_interval(estimate, variance, tau2=tau2, alpha=alpha)
        if look_low > high or look_high < low:
            conflicts += 1
        else:
            low, high = max(low, look_low), min(high, look_high)
        p_value = min(p_value, mixture_p_value(estimate, variance, tau2=tau2))
    return AlwaysValid((low, high), p_value, used, conflicts)
