"""Percentile-bootstrap intervals for quantiles, medians and ratios such as the WER.

The analysis uses these where no formula fits: latency quantiles and their differences
(`cluster_quantile_interval`, `cluster_median_difference_interval`: one unit's utterances
share its device and network, so units are resampled with all their latencies), and the
corpus WER, sum(errors) / sum(words), whose utterances are not independent because
one session's audio (speaker, microphone, topic) drives all its errors. The resampled unit
is therefore the session (cluster bootstrap): callers pass one element per session.

Every function is deterministic for its seed: resamples are drawn in fixed blocks from one
`numpy.random.Generator`, vectorised per block so that memory stays bounded.

Large inputs (from `GROUPED_FROM` units) are resampled by groups, in time that grows with
the number of distinct units' values instead of the number of units, from the same
distribution (so results agree with the unit-by-unit resampling within Monte Carlo error,
not draw for draw): drawing K units with replacement gives each group of units with equal
values (a ratio's errors and words) a Multinomial(K, group share) count, and a quantile's
resample needs unit by unit only the units with a value near the quantile; the others count
by their number of values and of values below (`_grouped_sums`,
`_grouped_cluster_quantiles`). Rules for tiny
inputs: no values raise ValueError; an arm with a single value gives an interval of
(-inf, inf), since resampling one value cannot show any spread; a ratio whose word total is
0 (in the data or in a resample) is the error total, as `gateway.stats.wer.WerCounts.wer`
defines it for an utterance without reference words, so no resample is ever NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Values: TypeAlias = Sequence[float] | npt.NDArray[Any]
FloatArray: TypeAlias = npt.NDArray[np.float64]

# Resample indices drawn at once: bounds memory (a few arrays of 2**20 elements per block)
# whatever the input size, without changing the random stream.
_BLOCK_ELEMENTS = 1 << 20
# The window of sorted values around a quantile's rank that a cluster resample's order
# statistics are looked for in first (`_resampled_cluster_quantiles`): at least this many
# values either side, and this many square roots of n (resampling moves a quantile's rank by
# a few times sqrt(n) times the design effect's root).
_WINDOW_MIN = 2048
_WINDOW_SPREAD = 40.0
# From this many units (clusters, sessions) an arm is resampled by groups (module doc); the
# grouped quantile's window is narrower (its resamples outside it are computed exactly too).
GROUPED_FROM = 5_000
_GROUPED_SPREAD = 5.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate computed on the data, and the bounds of its interval."""

    value: float
    low: float
    high: float


def as_array(values: Values, name: str, *, nonnegative: bool = False) -> FloatArray:
    """The values as a 1-D float array; ValueError when empty, not 1-D or not finite."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: an estimate needs at least one value")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    if nonnegative and (array < 0.0).any():
        raise ValueError(f"{name} must be >= 0")
    return array


def _check_options(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")


def _blocks(
    rng: np.random.Generator, n: int, resamples: int
) -> Iterator[tuple[int, int, npt.NDArray[np.int32]]]:
    """Yield (start, stop, indices) blocks of resample indices, each row one resample."""
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        # int32 indices are drawn ~4x faster than the default int64; no input comes near 2**31.
        yield start, stop, rng.integers(0, n, size=(stop - start, n), dtype=np.int32)


def _resampled_quantiles(
    rng: np.random.Generator, values: FloatArray, q: float, resamples: int
) -> FloatArray:
    """The q-quantile ('linear', as numpy) of each resample of the values.

    Indices are drawn into the sorted values, so a resample's k-th smallest value is the
    sorted value at the first index whose running count of draws exceeds k: counting is about
    three times faster than numpy.quantile on the gathered resamples.
    """
    ordered = np.sort(values)
    n = ordered.size
    position = (n - 1) * q
    below = math.floor(position)
    above = min(below + 1, n - 1)
    fraction = position - below
    out = np.empty(resamples)
    for start, stop, indices in _blocks(rng, n, resamples):
        offsets = np.arange(stop - start, dtype=np.int64)[:, None] * n
        draws = np.bincount((indices + offsets).ravel(), minlength=(stop - start) * n)
        running = np.cumsum(draws.reshape(stop - start, n), axis=1)
        low = ordered[np.argmax(running > below, axis=1)]
        high = ordered[np.argmax(running > above, axis=1)]
        out[start:stop] = low + (high - low) * fraction
    return out


def _resampled_sums(rng: np.random.Generator, columns: FloatArray, resamples: int) -> FloatArray:
    """Column sums over resampled rows: shape (columns, resamples); rows resampled jointly."""
    if columns.shape[1] >= GROUPED_FROM:
        distinct, counts = np.unique(columns, axis=1, return_counts=True)
        if distinct.shape[1] * 4 <= columns.shape[1]:
            return _grouped_sums(rng, distinct, counts, resamples)
    out = np.empty((columns.shape[0], resamples))
    for start, stop, indices in _blocks(rng, columns.shape[1], resamples):
        # Column by column: gathering all columns with one 2-D fancy index is ~8x slower.
        for row, column in enumerate(columns):
            out[row, start:stop] = column[indices].sum(axis=1)
    return out


def _grouped_sums(
    rng: np.random.Generator,
    distinct: FloatArray,
    counts: npt.NDArray[np.int64],
    resamples: int,
) -> FloatArray:
    """`_resampled_sums` of rows of which `distinct` (a column each) are the distinct ones,
    `counts` how often each occurs: each resample draws how many of its K rows are of each
    kind, Multinomial(K, counts / K), in O(distinct) instead of O(K)."""
    k = int(counts.sum())
    shares = counts / k
    out = np.empty((distinct.shape[0], resamples))
    rows = max(1, _BLOCK_ELEMENTS // distinct.shape[1])
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        drawn = rng.multinomial(k, shares, size=stop - start).astype(np.float64)
        out[:, start:stop] = (drawn @ distinct.T).T
    return out


def _ratio(errors: FloatArray | float, words: FloatArray | float) -> FloatArray:
    """errors / words, and the error total where the word total is 0 (never NaN)."""
    errors_array = np.asarray(errors, dtype=np.float64)
    words_array = np.asarray(words, dtype=np.float64)
    has_words = words_array > 0.0
    safe_words = np.where(has_words, words_array, 1.0)
    return np.where(has_words, errors_array / safe_words, errors_array)


def _percentile_estimate(
    value: float, replicates: FloatArray, confidence: float, *, degenerate: bool
) -> Estimate:
    if degenerate:
        return Estimate(value, -math.inf, math.inf)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Estimate(value, float(low), float(high))


def quantile(values: Values, q: float) -> float:
    """The q-quantile (q in [0, 1]) with numpy's default 'linear' interpolation."""
    _check_q(q)
    return float(np.quantile(as_array(values, "values"), q))


def quantile_interval(
    values: Values, q: float, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """The q-quantile with a percentile-bootstrap interval over the values."""
    _check_q(q)
    _check_options(confidence, resamples)
    array = as_array(values, "values")
    rng = np.random.default_rng(seed)
    replicates = _resampled_quantiles(rng, array, q, resamples)
    value = float(np.quantile(array, q))
    return _percentile_estimate(value, replicates, confidence, degenerate=array.size < 2)


def median_difference_interval(
    control: Values,
    challenger: Values,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """median(challenger) - median(control), each arm resampled independently."""
    _check_options(confidence, resamples)
    control_array = as_array(control, "control")
    challenger_array = as_array(challenger, "challenger")
    rng = np.random.default_rng(seed)
    replicates = _resampled_quantiles(rng, challenger_array, 0.5, resamples)
    replicates -= _resampled_quantiles(rng, control_array, 0.5, resamples)
    value = float(np.median(challenger_array) - np.median(control_array))
    degenerate = min(control_array.size, challenger_array.size) < 2
    return _percentile_estimate(value, replicates, confidence, degenerate=degenerate)


def unit_codes(
    units: Sequence[str] | npt.NDArray[Any], size: int, name: str
) -> npt.NDArray[np.intp]:
    """Each value's unit as a code 0..K-1 (K distinct units), checked to match the values."""
    if len(units) != size:
        raise ValueError(
            f"{name} units must have one element per value, got {len(units)} and {size}"
        )
    _, codes = np.unique(np.asarray(units), return_inverse=True)
    return codes.reshape(-1).astype(np.intp)


def _resampled_cluster_quantiles(
    rng: np.random.Generator,
    values: FloatArray,
    codes: npt.NDArray[np.intp],
    q: float,
    resamples: int,
) -> FloatArray:
    """The q-quantile ('linear', as numpy) of each cluster resample: K units drawn with
    replacement, each with all its values.

    Per resample, a unit drawn c times weighs c on each of its values; the running weight
    over the sorted values finds the order statistics as in `_resampled_quantiles`.

    The running weight is needed only near the quantile: it is computed over a window of
    the sorted values around rank q·n, starting from the weight below the window (one dot
    product over the units' counts there); resamples whose order statistics fall outside
    the window are computed over all values. The result is the same, at O(K + window)
    instead of O(n) per resample.
    """
    k = int(codes.max()) + 1
    if k >= GROUPED_FROM:
        return _grouped_cluster_quantiles(rng, values, codes, q, resamples)
    order = np.argsort(values, kind="stable")
    ordered, owner = values[order], codes[order]
    n = values.size
    sizes = np.bincount(owner, minlength=k).astype(np.int64)
    half = max(_WINDOW_MIN, int(_WINDOW_SPREAD * math.sqrt(n)))
    start_at = max(0, int(q * (n - 1)) - half)
    stop_at = min(n, int(q * (n - 1)) + half + 1)
    below_window = np.bincount(owner[:start_at], minlength=k).astype(np.int64)
    window_owner = owner[start_at:stop_at]
    out = np.empty(resamples)
    rows = max(1, _BLOCK_ELEMENTS // max(n, k))
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        count = stop - start
        draws = rng.integers(0, k, size=(count, k), dtype=np.int32)
        offsets = np.arange(count, dtype=np.int64)[:, None] * k
        weights = np.bincount((draws + offsets).ravel(), minlength=count * k).reshape(count, k)
        total = weights @ sizes  # every unit has a value, so each total is >= 1
        position = (total - 1) * q
        below = np.floor(position)
        above = np.minimum(below + 1, total - 1)
        base = weights @ below_window
        running = base[:, None] + np.cumsum(weights[:, window_owner], axis=1)
        inside = (base <= below) & (running[:, -1] > above)
        low = ordered[start_at + np.argmax(running > below[:, None], axis=1)]
        high = ordered[start_at + np.argmax(running > above[:, None], axis=1)]
        if not inside.all():
            outside = ~inside
            full = np.cumsum(weights[outside][:, owner], axis=1)
            low[outside] = ordered[np.argmax(full > below[outside, None], axis=1)]
            high[outside] = ordered[np.argmax(full > above[outside, None], axis=1)]
        out[start:stop] = low + (high - low) * (position - below)
    return out


def _grouped_cluster_quantiles(
    rng: np.random.Generator,
    values: FloatArray,
    codes: npt.NDArray[np.intp],
    q: float,
    resamples: int,
) -> FloatArray:
    """`_resampled_cluster_quantiles` for many units, by groups (module doc).

    Only the units with a value in a window of the sorted values around rank q·n are drawn
    one by one; how many of the K draws fall on them is Binomial(K, their share). The other
    units matter only through their number of values and of values below the window: the
    draws left are spread over those (size, below) profiles, Multinomial over the profiles'
    shares. A resample whose order statistics fall outside the window gets its profile draws
    spread over the profile's units (uniformly: the conditional law) and is computed over
    all values, as unit-by-unit resampling would.
    """
    order = np.argsort(values, kind="stable")
    ordered, owner = values[order], codes[order]
    k, n = int(codes.max()) + 1, values.size
    sizes = np.bincount(owner, minlength=k).astype(np.int64)
    half = max(_WINDOW_MIN, int(_GROUPED_SPREAD * math.sqrt(n)))
    start_at = max(0, int(q * (n - 1)) - half)
    stop_at = min(n, int(q * (n - 1)) + half + 1)
    below_window = np.bincount(owner[:start_at], minlength=k).astype(np.int64)
    near = np.zeros(k, dtype=bool)
    near[owner[start_at:stop_at]] = True
    near_units = np.flatnonzero(near)
    local = np.searchsorted(near_units, owner[start_at:stop_at])  # window value -> near unit
    far_units = np.flatnonzero(~near)
    profiles, profile_of, profile_counts = np.unique(
        np.stack([sizes[far_units], below_window[far_units]]),
        axis=1,
        return_inverse=True,
        return_counts=True,
    )
    profile_of = profile_of.reshape(-1)
    near_sizes, near_below = sizes[near_units], below_window[near_units]
    m = near_units.size
    out = np.empty(resamples)
    rows = max(1, _BLOCK_ELEMENTS // max(m + profiles.shape[1], stop_at - start_at, 1))
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        count = stop - start
        on_near = rng.binomial(k, m / k, size=count)
        resample_of = np.repeat(np.arange(count, dtype=np.int64), on_near)
        draws = rng.integers(0, max(m, 1), size=int(on_near.sum()), dtype=np.int64)
        weights = np.bincount(resample_of * m + draws, minlength=count * m).reshape(count, m)
        if profiles.shape[1]:
            shares = profile_counts / profile_counts.sum()
            far = rng.multinomial(k - on_near, shares)
        else:
            far = np.zeros((count, 0), dtype=np.int64)
        total = weights @ near_sizes + far @ profiles[0]
        base = weights @ near_below + far @ profiles[1]
        position = (total - 1) * q
        below = np.floor(position)
        above = np.minimum(below + 1, total - 1)
        running = base[:, None] + np.cumsum(weights[:, local], axis=1)
        inside = (base <= below) & (running[:, -1] > above)
        low = ordered[start_at + np.argmax(running > below[:, None], axis=1)]
        high = ordered[start_at + np.argmax(running > above[:, None], axis=1)]
        for row in np.flatnonzero(~inside):
            unit_weights = np.zeros(k, dtype=np.int64)
            unit_weights[near_units] = weights[row]
            for profile in np.flatnonzero(far[row]):
                members = far_units[profile_of == profile]
                picked = members[rng.integers(0, members.size, size=int(far[row, profile]))]
                unit_weights += np.bincount(picked, minlength=k)
            full = np.cumsum(unit_weights[owner])
            low[row] = ordered[np.argmax(full > below[row])]
            high[row] = ordered[np.argmax(full > above[row])]
        out[start:stop] = low + (high - low) * (position - below)
    return out


def cluster_quantile_interval(
    values: Values,
    units: Sequence[str] | npt.NDArray[Any],
    q: float,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """The q-quantile of the values with a percentile interval from resampling units (units
    gives each value's unit); a single unit gives (-inf, inf)."""
    _check_q(q)
    _check_options(confidence, resamples)
    array = as_array(values, "values")
    codes = unit_codes(units, array.size, "values'")
    rng = np.random.default_rng(seed)
    replicates = _resampled_cluster_quantiles(rng, array, codes, q, resamples)
    value = float(np.quantile(array, q))
    return _percentile_estimate(value, replicates, confidence, degenerate=codes.max() < 1)


def cluster_median_difference_interval(
    control: Values,
    control_units: Sequence[str] | npt.NDArray[Any],
    challenger: Values,
    challenger_units: Sequence[str] | npt.NDArray[Any],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """median(challenger) - median(control), the units of each arm resampled independently."""
    _check_options(confidence, resamples)
    control_array = as_array(control, "control")
    challenger_array = as_array(challenger, "challenger")
    control_codes = unit_codes(control_units, control_array.size, "control")
    challenger_codes = unit_codes(challenger_units, challenger_array.size, "challenger")
    rng = np.random.default_rng(seed)
    replicates = _resampled_cluster_quantiles(
        rng, challenger_array, challenger_codes, 0.5, resamples
    )
    replicates -= _resampled_cluster_quantiles(rng, control_array, control_codes, 0.5, resamples)
    value = float(np.median(challenger_array) - np.median(control_array))
    degenerate = min(control_codes.max(), challenger_codes.max()) < 1
    return _percentile_estimate(value, replicates, confidence, degenerate=degenerate)


def _sessions(errors: Values, words: Values, arm: str) -> FloatArray:
    """Errors and words of one arm as a (2, sessions) array, checked to match."""
    prefix = f"{arm} " if arm else ""
    errors_array = as_array(errors, f"{prefix}errors", nonnegative=True)
    words_array = as_array(words, f"{prefix}words", nonnegative=True)
    if errors_array.size != words_array.size:
        raise ValueError(
            f"{prefix}errors and words must have one element per session, got "
            f"{errors_array.size} and {words_array.size}"
        )
    return np.stack([errors_array, words_array])


def _resampled_ratios(rng: np.random.Generator, sessions: FloatArray, resamples: int) -> FloatArray:
    errors, words = _resampled_sums(rng, sessions, resamples)
    return _ratio(errors, words)


def _data_ratio(sessions: FloatArray) -> float:
    errors, words = sessions.sum(axis=1)
    return float(_ratio(errors, words))


def ratio_interval(
    errors: Values,
    words: Values,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """sum(errors) / sum(words) with a cluster-bootstrap interval; one element per session."""
    _check_options(confidence, resamples)
    sessions = _sessions(errors, words, "")
    rng = np.random.default_rng(seed)
    replicates = _resampled_ratios(rng, sessions, resamples)
    value = _data_ratio(sessions)
    return _percentile_estimate(value, replicates, confidence, degenerate=sessions.shape[1] < 2)


def ratio_difference_interval(
    control_errors: Values,
    control_words: Values,
    challenger_errors: Values,
    challenger_words: Values,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Challenger ratio - control ratio; sessions resampled independently within each arm."""
    _check_options(confidence, resamples)
    control = _sessions(control_errors, control_words, "control")
    challenger = _sessions(challenger_errors, challenger_words, "challenger")
    rng = np.random.default_rng(seed)
    replicates = _resampled_ratios(rng, challenger, resamples)
    replicates -= _resampled_ratios(rng, control, resamples)
    value = _data_ratio(challenger) - _data_ratio(control)
    degenerate = min(control.shape[1], challenger.shape[1]) < 2
    return _percentile_estimate(value, replicates, confidence, degenerate=degenerate)


def paired_ratio_difference_interval(
    words: Values,
    control_errors: Values,
    challenger_errors: Values,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Challenger ratio - control ratio on the same sessions (shadow pairs), resampled jointly.

    Both arms scored the same audio, so the per-session difference cancels what the session
    contributes to both (speaker, noise, topic); resampling the pairs together keeps that.
    The ratios share the word total, so the difference is (challenger - control errors) / words.
    """
    _check_options(confidence, resamples)
    control = _sessions(control_errors, words, "control")
    challenger = _sessions(challenger_errors, words, "challenger")
    columns = np.stack([control[1], control[0], challenger[0]])
    rng = np.random.default_rng(seed)
    word_sums, control_sums, challenger_sums = _resampled_sums(rng, columns, resamples)
    replicates = _ratio(challenger_sums, word_sums) - _ratio(control_sums, word_sums)
    value = _data_ratio(challenger) - _data_ratio(control)
    return _percentile_estimate(value, replicates, confidence, degenerate=columns.shape[1] < 2)
