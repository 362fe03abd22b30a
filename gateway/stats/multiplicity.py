"""Several challengers at once: one-sided always-valid p-values and Holm's step-down.

An experiment with k challengers asks k questions ("is challenger i better than control?").
Answering each at level alpha ships *some* identical challenger with a chance of up to
k * alpha. Holm's procedure keeps the chance of any false "better" at most alpha whatever
the dependence between the tests (they share the control arm): sort the p-values, compare
the smallest with alpha / k, the next with alpha / (k - 1), ..., and stop at the first that
fails.

The p-values are those of the normal-mixture test (`gateway.stats.sequential`), so they
are always valid: each is the running minimum over looks, and the chance that it *ever*
falls to a, under its null, is at most a. Holm applied at every look therefore keeps its
guarantee however often the analysis runs: the first false rejection needs some true null's
p-value to reach alpha / k0 (k0 true nulls), which happens with probability at most alpha.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.stats.sequential import mixture_p_value


def better_p_value(looks: Iterable[tuple[float, float]], *, tau2: float, bound: float) -> float:
    """Always-valid p-value of "the difference is at least `bound`" (not better than it).

    looks are (estimate, variance) of a difference where lower is better (a WER difference,
    challenger minus control), in time order. `bound` is minus the smallest gain worth
    having (0.0: any gain). Under the null the true difference theta is >= bound; a look
    whose estimate lies below bound has mixture likelihood ratio at theta at least the
    one at bound, so 1 / Lambda(bound) bounds its evidence; a look at or above bound is no
    evidence at all. The running minimum over looks is then always valid (Ville's
    inequality for the mixture martingale at the true theta). Unusable looks (a variance
    that is not finite and positive) are skipped; with none the p-value is 1.
    """
    p_value = 1.0
    for estimate, variance in looks:
        if not (math.isfinite(estimate) and math.isfinite(variance) and variance > 0.0):
            continue
        if estimate < bound:
            p_value = min(p_value, mixture_p_value(estimate - bound, variance, tau2=tau2))
    return p_value


@dataclass(frozen=True, slots=True)
class HolmResult:
    """One hypothesis of the family: its p-value, Holm-adjusted p-value and verdict."""

    p_value: float
    adjusted: float  # the smallest family-wise level at which it would be rejected
    threshold: float  # the level its p-value was compared with (alpha / rank)
    rejected: bool


def holm(p_values: Mapping[str, float], alpha: float) -> dict[str, HolmResult]:
    """Holm's step-down procedure at family-wise level alpha, by name.

    Ties are broken by name, so the result does not depend on the mapping's order.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    for name, value in p_values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"p-value of {name!r} must be in [0, 1], got {value!r}")
    ordered = sorted(p_values.items(), key=lambda item: (item[1], item[0]))
    k = len(ordered)
    results: dict[str, HolmResult] = {}
    running = 0.0
    still_rejecting = True
    for rank, (name, value) in enumerate(ordered):
        remaining = k - rank
        running = max(running, min(1.0, remaining * value))
        threshold = alpha / remaining
        still_rejecting = still_rejecting and value <= threshold
        results[name] = HolmResult(value, running, threshold, still_rejecting)
    return results
