"""Validate the canary change detector on simulated canary streams, as the gateway runs it.

A simulated canary set has items of 6-14 words, each with its own difficulty (its fixed
error count under a model: Binomial(words, p) with p ~ Beta(mean WER, k = 8)). A round gives
every item's error count under a noise model:

* `none`: the same errors every round (the emulator's deterministic engine);
* `flip10` / `flip60`: each item's count moves by one word in 10 % / 60 % of rounds (a real
  service on identical audio; 60 % is more than the detector's variance floor assumes);
* `binomial`: a fresh Binomial(words, p) every round (far noisier than any real service).

A change replaces the model by one that errs where the old one did and on more words, so
that the WER rises by the stated number of points on average (`+15` is a custom model
falling back to a base model, 10 % -> 25 %). Every stream goes through
`gateway.health.detector.WerChangeDetector` itself, round by round. The script prints, each
rate with a 95 % Wilson interval for its Monte Carlo error:

* false alarms: the share of A/A streams of `--rounds` rounds (default 1,000) in which the
  detector ever says "changed", at the default settings (alpha 0.01, 3 baseline rounds, a
  2-point floor) and, to measure the test itself rather than its floor, at alpha 0.1 with no
  floor;
* changes below the floor: a 1-point change with a 2-point floor (the null itself);
* detection delay: rounds from the change to the alarm, for several change sizes and set
  sizes, with the change 50 rounds after the baseline, 1,000 rounds after it, and with 10
  baseline rounds instead of 3: the share detected within 1, 2, 5 and 20 rounds, the median
  and the 95th percentile (streams that alarmed before the change are counted apart).

It takes about two minutes of CPU, a minute on two idle cores (`--runs`, `--rounds`,
`--workers` trade time for Monte Carlo precision):

    .venv/bin/python bench/validate_health.py --workers 2 [--json health.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.health.detector import DetectorSettings, WerChangeDetector
from gateway.stats.proportions import wilson_interval

IntArray = NDArray[np.int64]
BASE_WER = 0.10
DEFAULT = DetectorSettings(alpha=0.01, baseline_rounds=3, min_change_points=2.0)
SENSITIVE = DetectorSettings(alpha=0.1, baseline_rounds=3, min_change_points=0.0)
LONG_BASELINE = DetectorSettings(alpha=0.01, baseline_rounds=10, min_change_points=2.0)
WITHIN = (1, 2, 5, 20)


@dataclass(frozen=True)
class Scenario:
    """Many simulated streams of one design."""

    name: str
    items: int
    noise: str
    settings: DetectorSettings
    before: int  # rounds (baseline included) before the change; all rounds for an A/A
    after: int  # rounds after the change (0: an A/A)
    change_points: float
    runs: int
    seed: int


class Canary:
    """One simulated canary set and its rounds."""

    def __init__(self, rng: np.random.Generator, items: int) -> None:
        self.rng = rng
        self.words = rng.integers(6, 15, items)
        p = rng.beta(BASE_WER * 8, (1 - BASE_WER) * 8, items)
        self.errors: IntArray = rng.binomial(self.words, p)

    def changed(self, points: float) -> IntArray:
        """A model with `points` more WER on average, erring where this one did and more."""
        extra = points / 100 / (1 - BASE_WER)
        return np.asarray(self.errors + self.rng.binomial(self.words - self.errors, extra))

    def draw(self, errors: IntArray, noise: str) -> IntArray:
        if noise == "none":
            return errors
        if noise == "binomial":
            return self.rng.binomial(self.words, np.clip(errors / self.words, 0.02, 0.98))
        share = {"flip10": 0.1, "flip60": 0.6}[noise]
        moved = self.rng.random(errors.size) < share
        signs = self.rng.choice([-1, 1], errors.size)
        return np.asarray(np.clip(errors + moved * signs, 0, self.words))

    def answers(self, errors: IntArray) -> dict[str, tuple[int, int]]:
        pairs = zip(errors.tolist(), self.words.tolist(), strict=True)
        return {f"item-{i}": pair for i, pair in enumerate(pairs)}


def _first_alarm(
    detector: WerChangeDetector, canary: Canary, errors: IntArray, noise: str, rounds: int
) -> int | None:
    for number in range(1, rounds + 1):
        if detector.observe(canary.answers(canary.draw(errors, noise))).state == "changed":
            return number
    return None


def simulate(scenario: Scenario) -> list[int | None]:
    """Per stream: the round of the first alarm after the change (A/A: after the start);
    -1 for an alarm before the change; None for no alarm."""
    rng = np.random.default_rng(scenario.seed)
    results: list[int | None] = []
    for _ in range(scenario.runs):
        canary = Canary(rng, scenario.items)
        detector = WerChangeDetector(scenario.settings)
        early = _first_alarm(detector, canary, canary.errors, scenario.noise, scenario.before)
        if scenario.after == 0:
            results.append(early)
        elif early is not None:
            results.append(-1)
        else:
            changed = canary.changed(scenario.change_points)
            results.append(_first_alarm(detector, canary, changed, scenario.noise, scenario.after))
    return results


def scenarios(runs: int, rounds: int) -> list[Scenario]:
    found: list[Scenario] = []
    seed = 1900
    for noise in ("none", "flip10", "flip60", "binomial"):
        seed += 1
        found.append(
            Scenario(
                f"A/A {noise}, default",
                20,
                noise,
                DEFAULT,
                rounds,
                0,
                0.0,
                runs if noise != "none" else max(runs // 10, 5),
                seed,
            )
        )
    for noise in ("flip60", "binomial"):
        seed += 1
        found.append(
            Scenario(
                f"A/A {noise}, alpha 0.1 no floor", 20, noise, SENSITIVE, rounds, 0, 0.0, runs, seed
            )
        )
    seed += 1
    found.append(
        Scenario(
            "1-point change, 2-point floor, flip60", 20, "flip60", DEFAULT, 53, 200, 1.0, runs, seed
        )
    )
    for items in (5, 20, 50):
        for points in (3.0, 5.0, 10.0, 15.0):
            seed += 1
            found.append(
                Scenario(
                    f"+{points:g} points, {items} items, at round 53",
                    items,
                    "flip10",
                    DEFAULT,
                    53,
                    20,
                    points,
                    max(runs // 2, 5),
                    seed,
                )
            )
    for points in (10.0, 15.0):
        seed += 1
        name = f"+{points:g} points, 20 items, at round 1003"
        late = Scenario(name, 20, "flip10", DEFAULT, 1003, 20, points, max(runs // 4, 5), seed)
        found.append(late)
    for points in (5.0, 10.0):
        seed += 1
        name = f"+{points:g} points, 20 items, baseline 10"
        found.append(Scenario(name, 20, "flip10", LONG_BASELINE, 60, 20, points, runs // 2, seed))
    return found


def _rate(hits: int, total: int) -> dict[str, Any]:
    low, high = wilson_interval(hits, total) if total else (0.0, 1.0)
    return {"rate": hits / total if total else None, "n": total, "mc_ci": [low, high]}


def summarise(scenario: Scenario, results: Sequence[int | None]) -> dict[str, Any]:
    alarms = [r for r in results if r is not None]
    if scenario.after == 0 or scenario.change_points < scenario.settings.min_change_points:
        return {"kind": "false_alarm", "alarms": _rate(len(alarms), len(results))}
    delays = [r for r in results if r is not None and r > 0]
    valid = [r for r in results if r != -1]
    summary: dict[str, Any] = {"kind": "detection", "early_alarms": sum(r == -1 for r in results)}
    for limit in WITHIN:
        summary[f"within_{limit}"] = _rate(sum(d <= limit for d in delays), len(valid))
    summary["median"] = float(np.median(delays)) if delays else None
    summary["p95"] = (
        float(np.percentile(delays, 95)) if len(delays) == len(valid) and delays else None
    )
    return summary


def _text(rate: dict[str, Any]) -> str:
    if rate["rate"] is None:
        return "- of 0"
    low, high = rate["mc_ci"]
    return f"{rate['rate']:.4f} [{low:.4f}, {high:.4f}] of {rate['n']}"


def _share(rate: dict[str, Any]) -> str:
    return "-" if rate["rate"] is None else f"{rate['rate']:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--runs", type=int, default=200, help="A/A streams per design (detection: half)"
    )
    parser.add_argument("--rounds", type=int, default=1000, help="rounds of each A/A stream")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rounds < 4 or args.workers < 1:
        parser.error("--runs and --workers must be >= 1, --rounds >= 4")
    started = time.monotonic()
    designs = scenarios(args.runs, args.rounds)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        outcomes = list(pool.map(simulate, designs))
    figures: dict[str, Any] = {}
    print("false alarms (share of streams that ever alarm; 95 % Monte Carlo interval)")
    for scenario, results in zip(designs, outcomes, strict=True):
        summary = summarise(scenario, results)
        figures[scenario.name] = summary
        if summary["kind"] == "false_alarm":
            rounds = scenario.before + scenario.after
            print(f"  {scenario.name:<48} {rounds:>5} rounds  {_text(summary['alarms'])}")
    print("detection delay (rounds from the change to the alarm), flip10 noise, default settings")
    print(f"  {'design':<40} " + " ".join(f"<={n:<6}" for n in WITHIN) + "  median  p95")
    for scenario in designs:
        summary = figures[scenario.name]
        if summary["kind"] == "detection":
            shares = " ".join(f"{_share(summary[f'within_{n}']):<8}" for n in WITHIN)
            median = "-" if summary["median"] is None else f"{summary['median']:g}"
            p95 = "-" if summary["p95"] is None else f"{summary['p95']:g}"
            print(f"  {scenario.name:<40} {shares} {median:>6} {p95:>4}")
    elapsed = time.monotonic() - started
    print(f"({elapsed:.0f} s, {args.workers} workers)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"runs": args.runs, "rounds": args.rounds, "figures": figures}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
