"""Change detection on canary rounds: has a variant's model changed under it?

Every canary round sends the same labelled items to a variant; each answered item gives
(errors, words) against its reference. Two detectors read these rounds.

`WerChangeDetector` asks whether the variant's canary WER has moved away from its own
baseline, the first `baseline_rounds` rounds, by more than `min_change_points`:

* Items are paired. A window's estimate is, over the items answered both in the baseline and
  in the window, sum(window mean errors - baseline mean errors) / sum(words): each item is
  compared with itself, so the items' fixed difficulty cancels, and an item that failed in a
  round is simply absent from that round.
* Its variance is sigma2 * sum(1 / n_window + 1 / n_baseline) / words**2, with sigma2 the
  per-item, per-round error variance: the baseline's within-item variance pooled over its
  items (K (baseline_rounds - 1) degrees of freedom; rounds after the baseline are left out,
  as they may straddle the very change sought and inflate it), but never below
  `ITEM_VARIANCE_FLOOR` = 0.25 errors**2, the largest variance of an item whose error count
  swings by one word between rounds. The floor is what a fully deterministic recogniser
  (the emulator's, variance 0) gets, so nothing divides by zero, and a few rounds of tiny
  noise cannot make a one-word wobble look like overwhelming evidence. For K items of W words
  in all a round's WER thus has a standard deviation of at least sqrt(K / 4) / W (1.1 points
  for 20 items of 200 words): binomial-like, about a quarter of a binomial's at 10 % WER.
* The null hypothesis is "the WER moved by at most the floor": |delta| <= min_change_points.
  A window's p-value is the largest probability of its estimate under that null, attained at
  delta = +-floor: P(|N(floor, V)| >= |estimate|). So a change smaller than the floor is the
  null itself: it is alerted at most at the stated rate, and a constant, noise-free change
  below the floor never.
* Late changes matter most (a model expires months after the baseline), and a mean over
  every round since the baseline would take longer to move the later the change comes. So
  each round t after the baseline tests the windows of its last 1, 2, 4, ..., 64 rounds and
  the window of all rounds since the baseline, each at level alpha / (t (t + 1) * 8). These
  levels sum to alpha over all rounds and windows (sum of 1 / (t (t + 1)) = 1), so by the
  union bound the probability of any false alarm, ever, is at most alpha, whatever the
  dependence between the tests, as far as each window's estimate is normal with the stated
  variance (the floor only makes it larger). The price of an unlimited horizon is a
  threshold that grows slowly: at alpha = 0.01, 3.2 standard errors at the first round
  after the baseline, 5.2 at the 100th, 6.0 at the 1,000th, 7.3 at the 100,000th (a year of
  rounds every five minutes).
* What it can see: the baseline's own noise never averages away, so with the floor's
  variance and 3 baseline rounds a window's standard error stays above sqrt(K / 12) / W
  (0.65 points for 20 items of 200 words). A fallback-sized change (10 % -> 25 %) is found
  in the first round after it, early or late; a 5-point change on 20 items mostly is not;
  more baseline rounds shrink that term (bench/validate_health.py has the figures).
* Once a test rejects, the verdict stays "changed" until `reset()` (a new phase, a model
  change): a sequential test that has stopped does not restart by itself.

`evidence` is the largest level-scaled inverse p-value of the round's tests,
max(share / p) with share = 1 / (t (t + 1) * 8), and `threshold` is 1 / alpha: a test rejects
exactly when its evidence reaches the threshold.

`SameAsBaseDetector` asks whether the variant now answers exactly like the base model: an
endpoint whose custom model expired silently falls back to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from gateway.text.normalize import normalize_words

WINDOWS: Final = (1, 2, 4, 8, 16, 32, 64)
"""Lengths, in rounds, of the recent windows each round tests (plus all rounds since the
baseline)."""

TESTS_PER_ROUND: Final = len(WINDOWS) + 1
"""Tests each round spends its share of alpha on."""

ITEM_VARIANCE_FLOOR: Final = 0.25
"""Smallest per-item, per-round error variance assumed (errors squared): a one-word swing."""

_MIN_P_VALUE: Final = 1e-300  # keeps the evidence finite (and JSON-able) for huge changes

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """A canary's change test, from the experiment's `[canary]` table."""

    alpha: float  # false-alarm probability over an unlimited number of rounds
    baseline_rounds: int
    min_change_points: float  # WER points

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.baseline_rounds < 1:
            raise ValueError(f"baseline_rounds must be >= 1, got {self.baseline_rounds!r}")
        if not (math.isfinite(self.min_change_points) and self.min_change_points >= 0.0):
            raise ValueError(
                f"min_change_points must be finite and >= 0, got {self.min_change_points!r}"
            )


State = Literal["baseline", "stable", "changed"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The change test after one more round."""

    state: State
    rounds: int  # rounds seen since the baseline started (rounds with no answer not counted)
    baseline_wer: float | None
    recent_wer: float | None  # baseline_wer + change of the window with the strongest evidence
    change_points: float | None  # (recent - baseline) * 100
    evidence: float | None  # max(share / p) over the round's tests; rejects at `threshold`
    threshold: float | None  # 1 / alpha
    window: int | None = None  # rounds in the window with the strongest evidence


def _check_answers(answers: Mapping[str, tuple[int, int]]) -> None:
    for item, (errors, words) in answers.items():
        if errors < 0 or words < 0:
            raise ValueError(
                f"canary item {item!r}: errors and words must be >= 0, got {errors}, {words}"
            )


class _Columns:
    """Per-item running sums of one period (the baseline, or every round after it)."""

    def __init__(self) -> None:
        self.n: FloatArray = np.zeros(0)
        self.total: FloatArray = np.zeros(0)
        self.squares: FloatArray = np.zeros(0)

    def grow(self, size: int) -> None:
        extra = size - self.n.size
        if extra > 0:
            self.n = np.concatenate([self.n, np.zeros(extra)])
            self.total = np.concatenate([self.total, np.zeros(extra)])
            self.squares = np.concatenate([self.squares, np.zeros(extra)])

    def add(self, columns: NDArray[np.intp], errors: FloatArray) -> None:
        self.n[columns] += 1.0
        self.total[columns] += errors
        self.squares[columns] += errors * errors

    def within(self) -> tuple[float, float]:
        """(sum of squared deviations from each item's own mean, degrees of freedom)."""
        seen = self.n > 0
        n, total = self.n[seen], self.total[seen]
        deviations = float(np.sum(self.squares[seen] - total * total / n))
        return max(deviations, 0.0), float(np.sum(n - 1.0))


class WerChangeDetector:
    """One variant's canary WER against its own baseline (see the module doc)."""

    def __init__(self, settings: DetectorSettings) -> None:
        self._settings = settings
        self._floor = settings.min_change_points / 100.0
        self.reset()

    def reset(self) -> None:
        """Start a new baseline (a new phase, a model change)."""
        self._columns: dict[str, int] = {}
        self._words: FloatArray = np.zeros(0)
        self._baseline = _Columns()
        self._after = _Columns()
        # The last rounds after the baseline, newest at row (self._next - 1) % len.
        self._recent_errors: FloatArray = np.zeros((WINDOWS[-1], 0))
        self._recent_seen: FloatArray = np.zeros((WINDOWS[-1], 0))
        self._next = 0
        self._rounds = 0
        self._changed = False
        self._cached: _Baseline | None = None

    def _index(self, answers: Mapping[str, tuple[int, int]]) -> NDArray[np.intp]:
        """The answers' columns, adding new items; an item's word count must not change."""
        columns = []
        for item, (_, words) in answers.items():
            column = self._columns.get(item)
            if column is None:
                column = self._columns[item] = len(self._columns)
                self._words = np.append(self._words, float(words))
            elif self._words[column] != words:
                raise ValueError(
                    f"canary item {item!r} has {words} reference words, earlier "
                    f"{int(self._words[column])}: reset the detector when the set changes"
                )
            columns.append(column)
        size = len(self._columns)
        self._baseline.grow(size)
        self._after.grow(size)
        extra = size - self._recent_errors.shape[1]
        if extra > 0:
            pad = np.zeros((WINDOWS[-1], extra))
            self._recent_errors = np.hstack([self._recent_errors, pad])
            self._recent_seen = np.hstack([self._recent_seen, pad])
        return np.asarray(columns, dtype=np.intp)

    def observe(self, answers: Mapping[str, tuple[int, int]]) -> Verdict:
        """One round: item id -> (errors, words) of its answered items."""
        _check_answers(answers)
        if not answers:
            return self._verdict()
        columns = self._index(answers)
        errors = np.fromiter((e for e, _ in answers.values()), float, len(answers))
        self._rounds += 1
        if self._rounds <= self._settings.baseline_rounds:
            self._baseline.add(columns, errors)
            self._cached = None
        else:
            self._after.add(columns, errors)
            row = self._next % WINDOWS[-1]
            self._recent_errors[row] = 0.0
            self._recent_seen[row] = 0.0
            self._recent_errors[row, columns] = errors
            self._recent_seen[row, columns] = 1.0
            self._next += 1
        return self._verdict()

    def _summary(self) -> _Baseline | None:
        """The baseline's per-item means and variance: computed once, as it stops changing."""
        size = len(self._columns)
        if self._cached is None or self._cached.mean.size != size:
            n = self._baseline.n
            seen = n > 0
            if not np.any(seen):
                return None
            mean = np.divide(self._baseline.total, n, out=np.zeros_like(n), where=seen)
            # The baseline's rounds only: rounds after it may straddle the very change the
            # test looks for, which would inflate the variance and hide the change.
            deviations, df = self._baseline.within()
            pooled = deviations / df if df > 0 else 0.0
            self._cached = _Baseline(
                mean=mean,
                inverse_n=np.where(seen, 1.0 / np.where(seen, n, 1.0), 0.0),
                seen=seen,
                wer=float(mean.sum()) / float(self._words[seen].sum() or 1.0),
                sigma2=max(pooled, ITEM_VARIANCE_FLOOR),
            )
        return self._cached

    def _windows(self) -> tuple[list[int], FloatArray, FloatArray]:
        """(lengths, per-window per-item answer counts, per-window per-item error sums)."""
        t = self._rounds - self._settings.baseline_rounds
        kept = min(t, WINDOWS[-1])
        rows = (self._next - 1 - np.arange(kept)) % WINDOWS[-1]
        seen = np.cumsum(self._recent_seen[rows], axis=0)
        errors = np.cumsum(self._recent_errors[rows], axis=0)
        lengths = [m for m in WINDOWS if m <= kept]
        index = np.asarray(lengths) - 1
        counts, sums = seen[index], errors[index]
        if t > WINDOWS[-1] or t not in lengths:
            lengths.append(t)
            counts = np.concatenate((counts, self._after.n[np.newaxis]))
            sums = np.concatenate((sums, self._after.total[np.newaxis]))
        return lengths, counts, sums

    def _verdict(self) -> Verdict:
        threshold = 1.0 / self._settings.alpha
        base = self._summary()
        if base is None:
            return Verdict("baseline", self._rounds, None, None, None, None, threshold)
        t = self._rounds - self._settings.baseline_rounds
        if t <= 0:
            return Verdict("baseline", self._rounds, base.wer, None, None, None, threshold)
        lengths, counts, sums = self._windows()
        paired = (counts > 0) & base.seen
        words = (paired * self._words).sum(axis=1)
        usable = words > 0
        if not np.any(usable):
            # No window shares an item with the baseline: nothing to compare yet.
            state: State = "changed" if self._changed else "stable"
            return Verdict(state, self._rounds, base.wer, None, None, None, threshold)
        safe_counts = np.where(paired, counts, 1.0)
        shift = (paired * (sums / safe_counts - base.mean)).sum(axis=1)
        inverse = (paired * (1.0 / safe_counts + base.inverse_n)).sum(axis=1)
        safe_words = np.where(usable, words, 1.0)
        delta = shift / safe_words
        sd = np.sqrt(base.sigma2 * inverse) / safe_words
        size = np.abs(delta)
        # The largest P(|estimate| >= observed) under |true change| <= floor, at +-floor.
        p = ndtr((self._floor - size) / sd) + ndtr(-(self._floor + size) / sd)
        share = 1.0 / (t * (t + 1.0) * TESTS_PER_ROUND)
        evidence = np.where(usable, share / np.maximum(p, _MIN_P_VALUE), 0.0)
        best = int(np.argmax(evidence))
        if evidence[best] >= threshold:
            self._changed = True
        change = float(delta[best])
        return Verdict(
            "changed" if self._changed else "stable",
            self._rounds,
            base.wer,
            base.wer + change,
            change * 100.0,
            float(evidence[best]),
            threshold,
            lengths[best],
        )


@dataclass(frozen=True, slots=True)
class _Baseline:
    mean: FloatArray  # errors per item (0 where the item was never answered)
    inverse_n: FloatArray  # 1 / answers per item (0 where never answered)
    seen: NDArray[np.bool_]
    wer: float
    sigma2: float  # per-item, per-round error variance, floored


def _same(a: str, b: str) -> bool:
    return normalize_words(a) == normalize_words(b)


class SameAsBaseDetector:
    """Fires when a variant's canary transcripts equal the base variant's (normalised) for
    `rounds` consecutive rounds, while they differed during its baseline.

    A round compares the items both answered; a round where they share none is skipped (it
    neither extends nor breaks a run). The variant's baseline is its first `baseline_rounds`
    such rounds, and the detector is armed only when the transcripts differed on at least one
    item in every one of them: a variant that already answered like the base model (an A/A,
    or a canary set the custom model does not change) has nothing to fall back from, and a
    rare random difference must not arm it. Once armed, `observe` returns True for every
    round of a run of at least `rounds` identical rounds (`AlertLatch` makes it one alert).
    """

    def __init__(self, rounds: int = 2, baseline_rounds: int = 3) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds!r}")
        if baseline_rounds < 1:
            raise ValueError(f"baseline_rounds must be >= 1, got {baseline_rounds!r}")
        self._needed = rounds
        self._baseline_rounds = baseline_rounds
        self.reset()

    def reset(self) -> None:
        """Start a new baseline."""
        self._seen = 0
        self._armed = True
        self._run = 0

    @property
    def armed(self) -> bool:
        """Whether the baseline is over and showed a variant different from the base."""
        return self._armed and self._seen >= self._baseline_rounds

    def observe(self, variant_texts: Mapping[str, str], base_texts: Mapping[str, str]) -> bool:
        """One round: item id -> recognised text, of the variant and of the base variant."""
        shared = variant_texts.keys() & base_texts.keys()
        if not shared:
            return self.armed and self._run >= self._needed
        same = all(_same(variant_texts[item], base_texts[item]) for item in shared)
        self._seen += 1
        if self._seen <= self._baseline_rounds:
            self._armed = self._armed and not same
            return False
        self._run = self._run + 1 if same else 0
        return self.armed and self._run >= self._needed
