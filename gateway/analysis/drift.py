"""The report's drift section: does a shipped model keep its advantage over the holdout?

After a decision the shipped variant gets nearly all traffic and control keeps a small
holdout (`admin ship`, the experiment's `holdout_share`). A phase counts as shipped when a
ship opened it (the control plane's phase history records each phase's origin), or, for a
phase whose origin is unknown (the configured phase, or `analyze` without the live state),
when its shares give control a share above 0 and below one half and exactly one challenger
all the rest. The phase's outcomes are then cut into windows of `window_s` seconds, aligned
to multiples of the length (whole UTC days for a day), and in each window the
shipped-minus-holdout difference of each metric is measured on its own:

* error rate and no-match rate: ratios over units (`gateway.stats.clustered`);
* mean confidence, of the results that carry one: the ratio sum(confidence) / results over
  units (the delta-method variance of `gateway.stats.sequential.ratio_variance`);
* labelled WER: errors over reference words, per unit, the same variance;
* canary WER: the two variants' canary WER on the items both answered in the window, paired
  by item (the item is the unit: both variants hear the same audio, so the items'
  difficulty cancels); per item, errors per answered round.

Every interval is the normal-mixture always-valid interval (`gateway.stats.sequential`) at
the report's alpha, so checking a window every few minutes while it fills keeps its error
rate. A window needs `MIN_UNITS` units an arm (`MIN_CANARY_ITEMS` items for canaries);
before that its variance is unknown and the metric has too little data there.

The verdict of a metric judges the latest window with enough data (the current window, or
the one before it while the current is young) against everything before it in the phase,
pooled ("earlier"), in the metric's adverse direction (higher error, no-match and WER rates,
lower confidence):

* `reversed`: the window's own interval excludes 0: the shipped variant is worse than the
  holdout now;
* `shrunk`: not reversed, but the interval of (window - earlier), with both variances,
  excludes 0: the advantage measured before has shrunk beyond the noise of both;
* `holding`: neither;
* `too_little_data`: no window after the first has enough data, with enough before it.

With a constant effect each of the two is a one-sided test at alpha / 2 (the variance of
window - earlier adds both variances, which is conservative when units appear in both), so a
metric's verdict is wrong in at most alpha of the windows judged; the simulations in
tests/analysis/test_drift.py measure it.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from gateway.analysis.canaries import CanaryAnswer
from gateway.analysis.model import Json
from gateway.analysis.observations import PhaseObservations, VariantObservations
from gateway.analysis.timeline import boundaries
from gateway.outcomes.record import Category
from gateway.stats import clustered
from gateway.stats.sequential import DEFAULT_TAU, mixture_interval, ratio_variance

Verdict = Literal["holding", "shrunk", "reversed", "too_little_data"]
Better = Literal["lower", "higher"]
MIN_UNITS: Final = clustered.MIN_UNITS
MIN_CANARY_ITEMS: Final = 5
DEFAULT_WINDOW_S: Final = 86400
MIN_WINDOW_S: Final = 60
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# (difference, variance) of shipped - holdout over [start, end); None: an arm has no data.
Measure = Callable[[float, float], tuple[float, float] | None]


def parse_window(value: str) -> int:
    """A window length such as 1d, 12h, 30m or 900s, in whole seconds (at least a minute);
    ValueError saying what is wrong."""
    found = _DURATION.fullmatch(value.strip().lower())
    if found is None:
        raise ValueError(
            f"{value!r} is not a duration: a number and a unit, s, m, h or d (e.g. 1d, 12h)"
        )
    seconds = round(float(found.group(1)) * _UNIT_SECONDS[found.group(2)])
    if seconds < MIN_WINDOW_S:
        raise ValueError(f"{value!r} is shorter than the shortest drift window, 1 minute")
    return seconds


def shipped_variant(
    shares: Mapping[str, float], control: str, *, shipped: bool = False
) -> str | None:
    """The shipped variant of a phase split as a ship splits it (the module's doc), or None.
    `shipped`: a ship is known to have opened the phase, so a holdout of one half counts;
    without that knowledge an even split is an ordinary A/B test, not a ship."""
    holdout = shares.get(control, 0.0)
    others = [name for name, share in shares.items() if name != control and share > 0]
    largest = 0.5 if shipped else math.nextafter(0.5, 0.0)
    if not 0 < holdout <= largest or len(others) != 1:
        return None
    return others[0]


@dataclass(frozen=True, slots=True)
class _Metric:
    name: str
    better: Better
    tau: float
    measure: Measure


def drift_section(
    phase: PhaseObservations,
    canary: Sequence[CanaryAnswer],
    *,
    shipped: str,
    holdout: str,
    holdout_share: float,
    window_s: int,
    alpha: float,
) -> Json:
    """The report's `drift` object for a shipped phase (docs/analysis.md)."""
    ours = phase.variants.get(shipped)
    theirs = phase.variants.get(holdout)
    canary = [a for a in canary if a.phase == phase.phase and a.variant in (shipped, holdout)]
    times = [a.at for a in canary]
    for variant in (ours, theirs):
        if variant is not None and len(variant.table):
            times += [float(variant.table.at[0]), float(variant.table.at[-1])]
    section: Json = {
        "phase": phase.phase,
        "shipped": shipped,
        "holdout": holdout,
        "holdout_share": holdout_share,
        "window_seconds": window_s,
        "windows": [],
        "metrics": [],
    }
    if not times:
        return section
    first = min(times)
    starts = boundaries(first, max(times), window_s)
    metrics = _metrics(ours or VariantObservations(shipped), theirs or VariantObservations(holdout))
    canary_measure = _canary_measure(canary, shipped, holdout)
    if canary_measure is not None:
        metrics.append(_Metric("canary_wer", "lower", DEFAULT_TAU["wer"], canary_measure))
    units = {
        name: _units(phase.variants.get(name), starts, window_s) for name in (shipped, holdout)
    }
    section["windows"] = [
        {
            "start": _iso(start),
            "end": _iso(start + window_s),
            "units": {name: found[index] for name, found in units.items()},
        }
        for index, start in enumerate(starts)
    ]
    section["metrics"] = [_judge(metric, starts, window_s, first, alpha) for metric in metrics]
    return section


def _metrics(shipped: VariantObservations, holdout: VariantObservations) -> list[_Metric]:
    rate_tau = DEFAULT_TAU["rate"]
    found = [
        _Metric("error_rate", "lower", rate_tau, _rate_measure(shipped, holdout, "error")),
        _Metric("no_match_rate", "lower", rate_tau, _rate_measure(shipped, holdout, "no_match")),
    ]
    if all((~np.isnan(v.table.confidences)).any() for v in (shipped, holdout)):
        # Confidences are on the 0..1 scale of rates, and differ between models by points.
        found.append(
            _Metric("confidence", "higher", rate_tau, _confidence_measure(shipped, holdout))
        )
    if len(shipped.scores) and len(holdout.scores):
        found.append(_Metric("wer", "lower", DEFAULT_TAU["wer"], _wer_measure(shipped, holdout)))
    return found


def _judge(
    metric: _Metric, starts: Sequence[float], window_s: int, first: float, alpha: float
) -> Json:
    tau2 = metric.tau**2
    measured = [metric.measure(start, start + window_s) for start in starts]
    entry: Json = {
        "metric": metric.name,
        "better": metric.better,
        "windows": [None if m is None else _estimate(*m, tau2, alpha) for m in measured],
        "verdict": "too_little_data",
        "window": None,
        "latest": None,
        "earlier": None,
        "change": None,
    }
    for index in range(len(starts) - 1, 0, -1):
        latest = measured[index]
        if latest is None or not _known(latest):
            continue
        earlier = metric.measure(first, starts[index])
        if earlier is None or not _known(earlier):
            continue
        change = (latest[0] - earlier[0], latest[1] + earlier[1])
        sign = 1.0 if metric.better == "lower" else -1.0
        now_low = _adverse_low(_interval(*latest, tau2, alpha), sign)
        change_low = _adverse_low(_interval(*change, tau2, alpha), sign)
        verdict: Verdict = "reversed" if now_low > 0 else "shrunk" if change_low > 0 else "holding"
        entry.update(
            verdict=verdict,
            window=index,
            latest=_estimate(*latest, tau2, alpha),
            earlier=_estimate(*earlier, tau2, alpha),
            change=_estimate(*change, tau2, alpha),
        )
        break
    return entry


def _known(found: tuple[float, float]) -> bool:
    return math.isfinite(found[0]) and math.isfinite(found[1]) and found[1] >= 0


def _interval(difference: float, variance: float, tau2: float, alpha: float) -> tuple[float, float]:
    if variance == 0:
        # Every unit differs by exactly the same (deterministic canaries): no noise to allow.
        return difference, difference
    return mixture_interval(difference, variance, tau2=tau2, alpha=alpha)


def _adverse_low(interval: tuple[float, float], sign: float) -> float:
    """The lower bound of the interval turned so that positive is adverse."""
    low, high = interval
    return low if sign > 0 else -high


def _estimate(difference: float, variance: float, tau2: float, alpha: float) -> Json:
    ci = (
        list(_interval(difference, variance, tau2, alpha))
        if _known((difference, variance))
        else None
    )
    return {"difference": difference, "ci": ci}


# -- measures --------------------------------------------------------------------------------


def _span(times: Sequence[float], start: float, end: float) -> slice:
    return slice(bisect.bisect_left(times, start), bisect.bisect_left(times, end))


@dataclass(frozen=True, slots=True)
class _Series:
    """One arm's (time, unit, x, n) values in time order, as arrays: per-unit sums of x and
    n over any time span, for the units with values in it."""

    at: npt.NDArray[np.float64]
    units: npt.NDArray[np.intp]
    x: npt.NDArray[np.float64]
    n: npt.NDArray[np.float64]

    def sums(
        self, start: float, end: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        low, high = np.searchsorted(self.at, [start, end], side="left")
        units = self.units[low:high]
        if not units.size:
            return np.zeros(0), np.zeros(0)
        x = np.bincount(units, weights=self.x[low:high]).astype(np.float64)
        n = np.bincount(units, weights=self.n[low:high], minlength=x.size).astype(np.float64)
        seen = np.bincount(units, minlength=x.size) > 0
        return x[seen], n[seen]


def _rate_measure(
    shipped: VariantObservations, holdout: VariantObservations, category: Category
) -> Measure:
    arms = []
    for variant in (shipped, holdout):
        table = variant.table
        arms.append(_Series(table.at, table.units, table.hits(category), np.ones(len(table))))

    def measure(start: float, end: float) -> tuple[float, float] | None:
        sums = []
        for arm in arms:
            x, n = arm.sums(start, end)
            if not n.size:
                return None
            sums.append(clustered.UnitSums.of(x, n))
        ours, theirs = sums
        return ours.rate - theirs.rate, clustered.difference_variance(theirs, ours)

    return measure


def _ratio_measure(arms: Sequence[_Series], min_units: int) -> Measure:
    """shipped - holdout of sum(x) / sum(n) over (at, unit, x, n) in time order, per arm."""

    def measure(start: float, end: float) -> tuple[float, float] | None:
        ratios, variances = [], []
        for arm in arms:
            x, n = arm.sums(start, end)
            total = float(n.sum())
            if total <= 0:
                return None
            ratios.append(float(x.sum()) / total)
            variances.append(ratio_variance(x, n, min_sessions=min_units))
        return ratios[0] - ratios[1], variances[0] + variances[1]

    return measure


def _confidence_measure(shipped: VariantObservations, holdout: VariantObservations) -> Measure:
    arms = []
    for variant in (shipped, holdout):
        table = variant.table
        kept = ~np.isnan(table.confidences)
        confidences = table.confidences[kept]
        arms.append(_Series(table.at[kept], table.units[kept], confidences, np.ones(kept.sum())))
    return _ratio_measure(arms, MIN_UNITS)


def _wer_measure(shipped: VariantObservations, holdout: VariantObservations) -> Measure:
    arms = [
        _Series(s.at, s.units, s.errors.astype(np.float64), s.words.astype(np.float64))
        for s in (shipped.scores, holdout.scores)
    ]
    return _ratio_measure(arms, MIN_UNITS)


def _canary_measure(answers: Sequence[CanaryAnswer], shipped: str, holdout: str) -> Measure | None:
    """The paired canary WER difference (the module's doc); None without scored canaries
    of both variants."""
    arms = [
        [a for a in answers if a.variant == name and a.errors is not None]
        for name in (shipped, holdout)
    ]
    if not all(arms):
        return None
    times = [[a.at for a in arm] for arm in arms]

    def measure(start: float, end: float) -> tuple[float, float] | None:
        per_item: list[dict[str, tuple[float, int, int]]] = []  # item -> errors, rounds, words
        for arm, arm_times in zip(arms, times, strict=True):
            items: dict[str, tuple[float, int, int]] = {}
            for answer in arm[_span(arm_times, start, end)]:
                errors, rounds, _ = items.get(answer.item, (0.0, 0, answer.words))
                items[answer.item] = (errors + (answer.errors or 0), rounds + 1, answer.words)
            per_item.append(items)
        ours, theirs = per_item
        common = [item for item in ours if item in theirs and ours[item][2] > 0]
        if not common:
            return None
        difference = np.array(
            [ours[i][0] / ours[i][1] - theirs[i][0] / theirs[i][1] for i in common]
        )
        words = np.array([float(ours[i][2]) for i in common])
        variance = ratio_variance(difference, words, min_sessions=MIN_CANARY_ITEMS)
        return float(difference.sum() / words.sum()), variance

    return measure


def _units(
    variant: VariantObservations | None, starts: Sequence[float], window_s: int
) -> list[int]:
    """Distinct units with an outcome in each window."""
    if variant is None:
        return [0] * len(starts)
    table = variant.table
    return [table.distinct_units(table.window(start, start + window_s)) for start in starts]


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
