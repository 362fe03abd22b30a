"""The always-valid paired WER comparison on shadow pairs (identical audio).

The paired difference is sum(challenger errors - control errors) / sum(words) over the
pairs, with units as clusters: per unit, the words and the difference of the two arms'
errors on the same audio. Its delta-method variance (`ratio_variance` on the per-unit error
differences) is fed, look by look, to the normal-mixture test exactly as the unpaired WER
difference is: the same confidence sequence, the same running p-value, the same conflicts.
Because the unit's own difficulty cancels in the difference, its variance is far smaller
than the unpaired one's, which is why a shadowing experiment decides on it
(`gateway.analysis.evidence`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from gateway.analysis.model import Json
from gateway.analysis.observations import ShadowPair
from gateway.stats.sequential import DEFAULT_TAU, always_valid, ratio_variance


def oriented(
    pairs: Sequence[ShadowPair], control: str, challenger: str
) -> list[tuple[float, str, int, int, int]]:
    """(at, unit, words, control errors, challenger errors) of the pairs between the two
    variants, whichever of them was served, in time order."""
    found: list[tuple[float, str, int, int, int]] = []
    for pair in pairs:
        if (pair.primary_variant, pair.shadow_variant) == (control, challenger):
            ours, theirs = pair.primary_errors, pair.shadow_errors
        elif (pair.primary_variant, pair.shadow_variant) == (challenger, control):
            ours, theirs = pair.shadow_errors, pair.primary_errors
        else:
            continue
        found.append((pair.at, pair.unit, pair.words, ours, theirs))
    found.sort(key=lambda item: item[0])
    return found


def paired_looks(
    pairs: Sequence[ShadowPair], control: str, challenger: str, ends: Sequence[float]
) -> list[tuple[float, float]]:
    """(paired difference, variance) on the pairs up to each look's end; looks with too few
    units (an infinite variance) are left out."""
    ordered = oriented(pairs, control, challenger)
    times = [item[0] for item in ordered]
    looks: list[tuple[float, float]] = []
    for end in ends:
        upto = bisect.bisect_left(times, end)
        if upto == 0:
            continue
        words: dict[str, float] = {}
        difference: dict[str, float] = {}
        for _, unit, n, ours, theirs in ordered[:upto]:
            words[unit] = words.get(unit, 0.0) + n
            difference[unit] = difference.get(unit, 0.0) + theirs - ours
        w = np.fromiter(words.values(), dtype=np.float64)
        d = np.fromiter((difference[unit] for unit in words), dtype=np.float64)
        if w.sum() <= 0:
            continue
        variance = ratio_variance(d, w)
        if math.isfinite(variance) and variance > 0:
            looks.append((float(d.sum() / w.sum()), variance))
    return looks


def with_always_valid(
    shadow: Json | None,
    pairs: Sequence[ShadowPair],
    control: str,
    challenger: str,
    ends: Sequence[float],
    alpha: float,
) -> Json | None:
    """The report's shadow comparison plus its always-valid result and looks.

    `always_valid` is null until some look has enough units (`sequential.MIN_SESSIONS`).
    """
    if shadow is None:
        return None
    # The last look covers every pair, whatever the buckets.
    looks = paired_looks(pairs, control, challenger, [*ends[:-1], math.inf])
    if not looks:
        return {**shadow, "always_valid": None, "looks": []}
    result = always_valid(looks, tau2=DEFAULT_TAU["wer"] ** 2, alpha=alpha)
    low, high = result.interval
    return {
        **shadow,
        "always_valid": {
            "ci": [_finite(low), _finite(high)],
            "p_value": result.p_value,
            "conflicts": result.conflicts,
        },
        "looks": [[d, v] for d, v in looks],
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
