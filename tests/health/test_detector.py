"""The canary change detectors: the rules one by one, then simulations of canary streams.

The simulations draw canary sets (items of 6-14 words with their own difficulty) and rounds
from fixed seeds: "flip" noise (each item's error count moves by one word in 10 % of rounds,
like a real service on identical audio), binomial noise (every round a fresh draw: far
noisier than any real service, where the pooled variance estimate rather than the floor
decides), no noise at all (the emulator's engine), and a fallback to a base model with a
WER around 25 %. Rates are compared with their nominal level plus about 2.3 Monte Carlo
standard errors (a correct detector fails by chance in about one seed in a hundred; the seeds
are fixed, so a result is reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pytest
from numpy.typing import NDArray

from gateway.health.detector import (
    ITEM_VARIANCE_FLOOR,
    DetectorSettings,
    SameAsBaseDetector,
    WerChangeDetector,
)

Round = dict[str, tuple[int, int]]
IntArray = NDArray[np.int64]


def settings(alpha: float = 0.01, baseline: int = 3, floor: float = 2.0) -> DetectorSettings:
    return DetectorSettings(alpha=alpha, baseline_rounds=baseline, min_change_points=floor)


def as_round(errors: IntArray, words: IntArray) -> Round:
    return {
        f"item-{i}": (int(e), int(w)) for i, (e, w) in enumerate(zip(errors, words, strict=True))
    }


class CanarySet:
    """A simulated canary set: word counts, and each item's errors under a model."""

    def __init__(self, rng: np.random.Generator, items: int, wer: float = 0.10) -> None:
        self.rng = rng
        self.words = rng.integers(6, 15, items)
        self.wer = wer
        self.errors = self.model(wer)

    def model(self, wer: float) -> IntArray:
        """A model's fixed errors per item: item difficulty Beta(mean wer, k = 8)."""
        p = self.rng.beta(wer * 8, (1 - wer) * 8, self.words.size)
        return self.rng.binomial(self.words, p)

    def fallback(self, wer: float = 0.25) -> IntArray:
        """Another model that errs where this one did and on more words: WER about `wer`."""
        extra = (wer - self.wer) / (1 - self.wer)
        return np.asarray(self.errors + self.rng.binomial(self.words - self.errors, extra))

    def flip(self, errors: IntArray, share: float = 0.1) -> IntArray:
        moved = self.rng.random(errors.size) < share
        signs = self.rng.choice([-1, 1], errors.size)
        return np.asarray(np.clip(errors + moved * signs, 0, self.words))

    def binomial(self) -> IntArray:
        return self.rng.binomial(self.words, np.clip(self.errors / self.words, 0.02, 0.98))


def first_alarm(detector: WerChangeDetector, rounds: Iterator[Round]) -> int | None:
    """The 1-based round at which the verdict first says "changed"; None if never."""
    for number, answers in enumerate(rounds, 1):
        if detector.observe(answers).state == "changed":
            return number
    return None


def stream(canary: CanarySet, rounds: int, noise: Callable[[], IntArray]) -> Iterator[Round]:
    for _ in range(rounds):
        yield as_round(noise(), canary.words)


def bound(alpha: float, runs: int) -> float:
    return alpha + 2.33 * math.sqrt(alpha * (1 - alpha) / runs)


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "baseline", "floor", "message"),
    [
        (0.0, 3, 2.0, "alpha"),
        (1.0, 3, 2.0, "alpha"),
        (0.01, 0, 2.0, "baseline_rounds"),
        (0.01, 3, -1.0, "min_change_points"),
        (0.01, 3, math.nan, "min_change_points"),
    ],
)
def test_settings_reject_bad_values(
    alpha: float, baseline: int, floor: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DetectorSettings(alpha=alpha, baseline_rounds=baseline, min_change_points=floor)


# -- the WER change test, rule by rule -----------------------------------------------------

WORDS = np.full(20, 10)
BASE = np.tile([0, 1, 2, 1], 5)  # 20 errors in 200 words: 10 %


def test_the_first_rounds_are_the_baseline_and_then_the_test_reports() -> None:
    detector = WerChangeDetector(settings(baseline=3))
    verdicts = [detector.observe(as_round(BASE, WORDS)) for _ in range(4)]
    assert [v.state for v in verdicts] == ["baseline", "baseline", "baseline", "stable"]
    assert [v.rounds for v in verdicts] == [1, 2, 3, 4]
    assert verdicts[0].baseline_wer == pytest.approx(0.10)
    assert verdicts[0].evidence is None
    assert verdicts[0].recent_wer is None
    last = verdicts[-1]
    assert last.recent_wer == pytest.approx(0.10)
    assert last.change_points == pytest.approx(0.0)
    assert last.threshold == pytest.approx(100.0)
    assert last.evidence is not None
    assert last.evidence < 1.0


def test_a_round_without_answers_changes_nothing() -> None:
    detector = WerChangeDetector(settings(baseline=1))
    detector.observe(as_round(BASE, WORDS))
    before = detector.observe(as_round(BASE, WORDS))
    assert detector.observe({}) == before


def test_a_noise_free_stream_never_alerts_and_its_evidence_stays_finite() -> None:
    detector = WerChangeDetector(settings(alpha=0.5, floor=0.0))
    for _ in range(300):
        verdict = detector.observe(as_round(BASE, WORDS))
    assert verdict.state == "stable"
    assert verdict.evidence is not None
    assert math.isfinite(verdict.evidence)
    assert verdict.change_points == 0.0


def test_a_large_change_is_detected_at_once_and_the_verdict_stays_changed() -> None:
    detector = WerChangeDetector(settings())
    for _ in range(5):
        assert detector.observe(as_round(BASE, WORDS)).state != "changed"
    fallback = BASE + 3  # +30 points
    verdict = detector.observe(as_round(fallback, WORDS))
    assert verdict.state == "changed"
    assert verdict.change_points == pytest.approx(30.0)
    assert verdict.recent_wer == pytest.approx(0.40)
    assert verdict.window == 1
    assert verdict.evidence is not None
    assert verdict.threshold is not None
    assert verdict.evidence >= verdict.threshold
    # Back to the old model: the stopped test does not restart by itself.
    assert detector.observe(as_round(BASE, WORDS)).state == "changed"


def test_an_improvement_is_a_change_too() -> None:
    detector = WerChangeDetector(settings())
    worse = BASE + 3
    for _ in range(4):
        detector.observe(as_round(worse, WORDS))
    verdict = detector.observe(as_round(BASE, WORDS))
    assert verdict.state == "changed"
    assert verdict.change_points == pytest.approx(-30.0)


def test_a_noise_free_change_below_the_floor_never_alerts() -> None:
    detector = WerChangeDetector(settings(alpha=0.5, floor=2.0))
    for _ in range(3):
        detector.observe(as_round(BASE, WORDS))
    smaller = BASE.copy()
    smaller[:3] += 1  # 3 words in 200: 1.5 points
    for _ in range(300):
        verdict = detector.observe(as_round(smaller, WORDS))
    assert verdict.state == "stable"
    assert verdict.change_points == pytest.approx(1.5)


def test_the_same_change_above_a_lower_floor_alerts() -> None:
    detector = WerChangeDetector(settings(floor=0.5))
    for _ in range(3):
        detector.observe(as_round(BASE, WORDS))
    larger = BASE.copy()
    larger[:12] += 1  # 6 points
    assert first_alarm(detector, (as_round(larger, WORDS) for _ in range(30))) is not None


def test_a_change_long_after_the_baseline_is_detected_quickly() -> None:
    """The recent windows find a change that the mean since the baseline would dilute."""
    detector = WerChangeDetector(settings())
    for _ in range(600):
        assert detector.observe(as_round(BASE, WORDS)).state != "changed"
    alarm = first_alarm(detector, (as_round(BASE + 2, WORDS) for _ in range(10)))
    assert alarm is not None
    assert alarm <= 2


def test_reset_starts_a_new_baseline() -> None:
    detector = WerChangeDetector(settings())
    for _ in range(3):
        detector.observe(as_round(BASE, WORDS))
    assert detector.observe(as_round(BASE + 3, WORDS)).state == "changed"
    detector.reset()
    verdicts = [detector.observe(as_round(BASE + 3, WORDS)) for _ in range(10)]
    assert verdicts[0].state == "baseline"
    assert verdicts[0].rounds == 1
    assert verdicts[0].baseline_wer == pytest.approx(0.40)
    assert verdicts[-1].state == "stable"


def test_failed_items_are_skipped_and_items_align_by_id() -> None:
    detector = WerChangeDetector(settings())
    full = as_round(BASE, WORDS)
    for _ in range(3):
        detector.observe(full)
    # Half the items failed: the rest, compared item by item, did not change.
    half = {item: answer for number, (item, answer) in enumerate(full.items()) if number % 2}
    verdict = detector.observe(half)
    assert verdict.state == "stable"
    assert verdict.change_points == pytest.approx(0.0)
    # Order does not matter, ids do.
    verdict = detector.observe(dict(reversed(list(full.items()))))
    assert verdict.state == "stable"
    assert verdict.change_points == pytest.approx(0.0)
    # An item never seen in the baseline has nothing to be compared with.
    verdict = detector.observe({**full, "new-item": (9, 10)})
    assert verdict.state == "stable"
    assert verdict.change_points == pytest.approx(0.0)


def test_the_variance_floor_bounds_the_evidence_of_a_one_word_wobble() -> None:
    """Without noise in the baseline, one item moving by one word is a small change, not
    overwhelming evidence: the floor assumes a one-word swing per item and round."""
    assert ITEM_VARIANCE_FLOOR == 0.25
    detector = WerChangeDetector(settings(floor=0.0))
    for _ in range(3):
        detector.observe(as_round(BASE, WORDS))
    wobble = BASE.copy()
    wobble[0] += 1
    verdict = detector.observe(as_round(wobble, WORDS))
    assert verdict.state == "stable"
    assert verdict.evidence is not None
    assert verdict.evidence < 1.0


def test_inconsistent_or_negative_answers_are_refused() -> None:
    detector = WerChangeDetector(settings())
    detector.observe({"a": (1, 10)})
    with pytest.raises(ValueError, match="'a' has 12 reference words, earlier 10"):
        detector.observe({"a": (1, 12)})
    with pytest.raises(ValueError, match="'b': errors and words must be >= 0"):
        detector.observe({"b": (-1, 12)})


# -- simulations ----------------------------------------------------------------------------


@pytest.mark.parametrize(("noise", "runs"), [("flip", 80), ("binomial", 80)])
def test_aa_streams_raise_false_alarms_at_most_at_alpha(noise: str, runs: int) -> None:
    """A/A over 200 rounds with noise above the variance floor (items move by a word in 60 %
    of rounds, or binomial), where the estimated variance decides; a generous alpha, so that
    the check could fail (a test without its multiplicity correction alarms in most runs)."""
    rng = np.random.default_rng(1901)
    alpha, alarms = 0.2, 0
    for _ in range(runs):
        canary = CanarySet(rng, items=int(rng.integers(5, 31)))
        draw = partial(canary.flip, canary.errors, 0.6) if noise == "flip" else canary.binomial
        detector = WerChangeDetector(settings(alpha=alpha, floor=0.0))
        alarms += first_alarm(detector, stream(canary, 200, draw)) is not None
    assert alarms / runs <= bound(alpha, runs)


def test_aa_streams_at_the_default_alpha_stay_quiet() -> None:
    rng = np.random.default_rng(1902)
    alarms = 0
    for _ in range(40):
        canary = CanarySet(rng, items=20)
        detector = WerChangeDetector(settings())
        alarms += first_alarm(detector, stream(canary, 200, canary.binomial)) is not None
    assert alarms <= 2  # expected at most 0.4


def test_zero_variance_aa_streams_never_alert() -> None:
    rng = np.random.default_rng(1903)
    for _ in range(20):
        canary = CanarySet(rng, items=int(rng.integers(5, 51)))
        detector = WerChangeDetector(settings(alpha=0.5, floor=0.0))
        assert first_alarm(detector, stream(canary, 200, partial(np.copy, canary.errors))) is None


def fallback_delay(rng: np.random.Generator, items: int, before: int, after: int) -> int | None:
    """Rounds from a fallback (10 % -> about 25 % WER, flip noise) to the alarm; None if an
    alarm came before it or none within `after` rounds."""
    canary = CanarySet(rng, items=items)
    fallback = canary.fallback(0.25)
    detector = WerChangeDetector(settings())
    if first_alarm(detector, stream(canary, before, lambda: canary.flip(canary.errors))):
        return None
    return first_alarm(detector, stream(canary, after, lambda: canary.flip(fallback)))


@pytest.mark.parametrize("before", [5, 300])
def test_a_fallback_to_the_base_model_is_detected_within_two_rounds(before: int) -> None:
    rng = np.random.default_rng(1904 + before)
    runs = 100 if before < 100 else 30
    delays = [fallback_delay(rng, items=20, before=before, after=10) for _ in range(runs)]
    within = sum(delay is not None and delay <= 2 for delay in delays)
    assert within / runs >= 0.95


def test_a_noisy_change_below_the_floor_alerts_at_most_at_alpha() -> None:
    """A 1-point shift, floor 2 points (the null itself), with noise above the variance
    floor (items move by a word in 60 % of rounds)."""
    rng = np.random.default_rng(1905)
    alpha, runs, alarms = 0.2, 100, 0
    for _ in range(runs):
        canary = CanarySet(rng, items=20)
        shifted = canary.errors.copy()
        words = int(canary.words.sum())
        shifted[rng.choice(20, max(1, words // 100), replace=False)] += 1  # about 1 point
        detector = WerChangeDetector(settings(alpha=alpha, floor=2.0))
        first_alarm(detector, stream(canary, 3, partial(canary.flip, canary.errors, 0.6)))
        later = stream(canary, 100, partial(canary.flip, shifted, 0.6))
        alarms += first_alarm(detector, later) is not None
    assert alarms / runs <= bound(alpha, runs)


# -- same as the base model ---------------------------------------------------------------

CUSTOM = {"a": "pay my card bill", "b": "transfer savings", "c": "open an account"}
BASE_TEXTS = {"a": "pay my car bill", "b": "transfer savings", "c": "open an account"}


def test_matching_the_base_for_two_rounds_after_a_differing_baseline_fires() -> None:
    detector = SameAsBaseDetector(rounds=2, baseline_rounds=3)
    assert [detector.observe(CUSTOM, BASE_TEXTS) for _ in range(3)] == [False] * 3
    assert detector.armed
    assert detector.observe(BASE_TEXTS, BASE_TEXTS) is False
    assert detector.observe(BASE_TEXTS, BASE_TEXTS) is True
    assert detector.observe(BASE_TEXTS, BASE_TEXTS) is True  # the latch makes it one alert
    assert detector.observe(CUSTOM, BASE_TEXTS) is False


def test_a_differing_round_breaks_the_run() -> None:
    detector = SameAsBaseDetector(rounds=2, baseline_rounds=1)
    detector.observe(CUSTOM, BASE_TEXTS)
    results = [detector.observe(texts, BASE_TEXTS) for texts in (BASE_TEXTS, CUSTOM, BASE_TEXTS)]
    assert results == [False, False, False]


def test_comparison_is_on_normalised_text_of_the_items_both_answered() -> None:
    detector = SameAsBaseDetector(rounds=1, baseline_rounds=1)
    detector.observe(CUSTOM, BASE_TEXTS)
    written = {"a": "Pay my car-bill.", "b": "Transfer savings!"}  # "c" failed this round
    assert detector.observe(written, BASE_TEXTS) is True


def test_a_variant_that_matched_the_base_in_its_baseline_never_fires() -> None:
    detector = SameAsBaseDetector(rounds=2, baseline_rounds=3)
    rounds = [CUSTOM, BASE_TEXTS, CUSTOM]  # one round like the base: a random difference
    for texts in rounds:
        detector.observe(texts, BASE_TEXTS)
    assert not detector.armed
    assert not any(detector.observe(BASE_TEXTS, BASE_TEXTS) for _ in range(10))
    detector.reset()
    for _ in range(3):
        detector.observe(CUSTOM, BASE_TEXTS)
    assert detector.armed


def test_rounds_without_shared_items_are_skipped() -> None:
    detector = SameAsBaseDetector(rounds=2, baseline_rounds=1)
    detector.observe(CUSTOM, BASE_TEXTS)
    assert detector.observe(BASE_TEXTS, BASE_TEXTS) is False
    assert detector.observe({}, BASE_TEXTS) is False  # skipped: the run is still 1
    assert detector.observe({"x": "y"}, BASE_TEXTS) is False
    assert detector.observe(BASE_TEXTS, BASE_TEXTS) is True


def test_same_as_base_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="rounds"):
        SameAsBaseDetector(rounds=0)
    with pytest.raises(ValueError, match="baseline_rounds"):
        SameAsBaseDetector(baseline_rounds=0)
