"""How long must an experiment run? Sample sizes for the always-valid WER test.

The decision ships a challenger when the normal-mixture test (`gateway.stats.sequential`)
rejects "not better by the minimum gain" (`gateway.stats.multiplicity.better_p_value`):
at a look with variance V of the WER difference, when the estimate lies more than the
mixture half-width h(V) beyond the bound. With a true gain g and a minimum gain m the
estimate is normal around -g, so a look detects the gain with probability
Phi((g - m - h(V)) / sqrt(V)). The plan is the variance V* at which that probability is the
requested power, and the labelled utterances per arm that bring the variance down to V*:

    V(n) = kappa / n,  n labelled utterances per arm,

where kappa is the variance of the difference times n: measured on an experiment's data
so far (the last look's variance times its utterances per arm), or from stated
assumptions, per arm p (1 - p) / words-per-utterance times the design effect of units
(1 + (words per unit - 1) * icc, the within-unit correlation of word errors).

Judging only at the last look makes the plan conservative: every earlier look is another
chance to cross. With k challengers Holm compares the first with alpha / k, which the plan
uses. Pure functions; `speech-gateway plan` and the report call them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

# scipy.special, not scipy.stats (whose norm.ppf and norm.cdf are these): a second less to
# import for every analysis, the same values.
from scipy.special import ndtr, ndtri

from gateway.stats.sequential import DEFAULT_TAU, mixture_interval

_TAU2: Final = DEFAULT_TAU["wer"] ** 2


def half_width(variance: float, *, alpha: float, tau2: float = _TAU2) -> float:
    """The always-valid test's half-width at a look with this variance."""
    return mixture_interval(0.0, variance, tau2=tau2, alpha=alpha)[1]


def detection_variance(effect: float, *, alpha: float, power: float, tau2: float = _TAU2) -> float:
    """The largest variance at which a look detects `effect` (the true gain beyond the
    bound, > 0) with probability `power`: effect = h(V) + z_power * sqrt(V), by bisection
    (the right-hand side grows with V)."""
    _check(effect, alpha, power)
    z = float(ndtri(power))

    def short(variance: float) -> bool:
        return half_width(variance, alpha=alpha, tau2=tau2) + z * math.sqrt(variance) > effect

    low, high = 1e-16, effect**2
    while not short(high):
        high *= 4.0
    for _ in range(200):
        middle = math.sqrt(low * high)
        if short(middle):
            high = middle
        else:
            low = middle
        if high / low < 1.0 + 1e-9:
            break
    return low


def power_at(effect: float, variance: float, *, alpha: float, tau2: float = _TAU2) -> float:
    """The chance that one look at this variance detects `effect` (the inverse question)."""
    return float(
        ndtr((effect - half_width(variance, alpha=alpha, tau2=tau2)) / math.sqrt(variance))
    )


def design_effect(words_per_unit: float, icc: float) -> float:
    """1 + (m - 1) icc: how much one unit's correlated words inflate the variance."""
    if words_per_unit < 1:
        raise ValueError(f"words per unit must be at least 1, got {words_per_unit}")
    if not 0.0 <= icc <= 1.0:
        raise ValueError(f"icc must be in [0, 1], got {icc}")
    return 1.0 + (words_per_unit - 1.0) * icc


def assumed_kappa(
    base_wer: float, gain: float, *, words_per_utterance: float, design: float
) -> float:
    """kappa (variance of the difference times utterances per arm) from assumptions."""
    if not 0.0 < base_wer < 1.0:
        raise ValueError(f"base WER must be in (0, 1), got {base_wer}")
    if not 0.0 < gain < base_wer:
        raise ValueError(f"the gain must be in (0, base WER = {base_wer}), got {gain}")
    if words_per_utterance <= 0 or design < 1.0:
        raise ValueError("words per utterance must be > 0 and the design effect >= 1")
    challenger = base_wer - gain
    binomial = base_wer * (1 - base_wer) + challenger * (1 - challenger)
    return binomial * design / words_per_utterance


@dataclass(frozen=True, slots=True)
class Plan:
    """What it takes to detect `gain` (WER points as a fraction) with `power`."""

    gain: float
    min_gain: float
    alpha: float  # the level the first Holm step uses: alpha / challengers
    power: float
    variance: float  # V*: the variance of the difference at which the gain is detected
    labelled_per_arm: int

    def days(self, labelled_per_arm_per_day: float, already: float = 0.0) -> float | None:
        """Days (more, after `already` labelled utterances) at the given pace; None when
        nothing is labelled yet."""
        if labelled_per_arm_per_day <= 0:
            return None
        return max(0.0, self.labelled_per_arm - already) / labelled_per_arm_per_day


def plan(
    gain: float,
    kappa: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    min_gain: float = 0.0,
    challengers: int = 1,
    tau2: float = _TAU2,
) -> Plan | None:
    """Labelled utterances per arm to detect `gain` beyond `min_gain`; None when the gain
    does not exceed the minimum (no sample size can show what is not there)."""
    if challengers < 1:
        raise ValueError(f"challengers must be at least 1, got {challengers}")
    if not (math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa must be finite and > 0, got {kappa}")
    if min_gain < 0:
        raise ValueError(f"the minimum gain must not be negative, got {min_gain}")
    if gain <= min_gain:
        return None
    level = alpha / challengers
    variance = detection_variance(gain - min_gain, alpha=level, power=power, tau2=tau2)
    return Plan(gain, min_gain, level, power, variance, math.ceil(kappa / variance))


def _check(effect: float, alpha: float, power: float) -> None:
    if not (math.isfinite(effect) and effect > 0):
        raise ValueError(f"the effect must be > 0, got {effect}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
