"""Time in the analysis: buckets for the plots and the looks of the sequential tests.

A phase's span is cut into at most `max_buckets` equal buckets of a round length (1 s to a
day). The end of every bucket is one *look*: the cumulative data up to that moment, as if
someone had checked the experiment then. The always-valid intervals are intersected over
all looks, which is what makes checking every day (or every minute) safe.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

_ROUND_SECONDS: Final = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400)

FloatArray = npt.NDArray[np.float64]


def bucket_seconds(first: float, last: float, max_buckets: int) -> int:
    """The shortest round length (1 s to 1 day, then whole days) giving <= max_buckets."""
    # Aligning the first bucket to a multiple of the length adds up to one bucket, and the
    # last record opens one more: so the span may cover at most max_buckets - 2 lengths.
    span = max(last - first, 0.0)
    room = max(max_buckets - 2, 1)
    for length in _ROUND_SECONDS:
        if span / length <= room:
            return length
    return 86400 * math.ceil(span / 86400 / room)


def boundaries(first: float, last: float, length: int) -> list[float]:
    """Bucket starts, aligned to multiples of `length`, covering first..last."""
    start = math.floor(first / length) * length
    count = max(1, math.floor((last - start) / length) + 1)
    return [start + i * length for i in range(count)]
