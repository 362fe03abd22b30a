"""Validate the analysis' statistics on simulated experiments, as a user would run them.

Each simulated experiment has two arms (control `base`, challenger `custom`) whose units
(users, devices) differ: every unit has its own word error rate, its own chances of an
error, a no-match and a cancellation, its own speed (a factor on every latency) and its
own number of utterances. Records and labels are made in the documented formats
(`OutcomeRecord`, `Label`) and analysed with the analysis itself (`build_report`) once a
day, on the data up to that day's end, as a user running `speech-gateway analyze` every
midnight would. The script prints, each with a 95 % Wilson interval for its Monte Carlo
error:

* A/A (both arms the same model): the share of experiments in which each reported
  difference interval excludes zero at one look (the last day) and at any daily look,
  each guardrail regressing at any look, and "roll back" / "ship custom" at any look;
* coverage of the per-variant intervals (WER, every rate, every latency quantile) against
  the population values, which the script computes from the generative model;
* power: the share of experiments with a planted WER gain (default 2, 5, 10 and 20 %
  relative) that recommend "ship custom" at some daily look, with the coverage of the WER
  difference's intervals.

It runs for minutes (`--runs`, `--power-runs`, `--workers` trade time for Monte Carlo
precision; an experiment of the default design takes about 5 s of one core, so this takes
about 35 minutes on two cores):

    .venv/bin/python bench/validate_statistics.py --runs 200 --power-runs 50 --workers 2

`--json FILE` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from gateway.analysis.model import AnalysisOptions, ExperimentInfo
from gateway.analysis.report import build_report
from gateway.outcomes.labels import Label
from gateway.outcomes.record import Kind, OutcomeRecord, Protocol, Role, UnitSource

VOCABULARY = (
    "balance",
    "transfer",
    "savings",
    "account",
    "pay",
    "bill",
    "card",
    "statement",
    "fee",
    "loan",
    "rate",
    "open",
    "close",
    "send",
    "money",
    "check",
    "deposit",
    "credit",
    "debit",
    "limit",
    "branch",
    "hours",
)
START = datetime(2026, 11, 1, tzinfo=UTC)
CATEGORIES = ("success", "no_match", "error", "cancellation")
LATENCY = ("first_hypothesis_ms", "final_latency_ms")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
# Unit propensities: Beta(mean * k, (1 - mean) * k); a small k, strong heterogeneity.
WER_K = 8.0
RATE_MEANS = {"no_match": 0.05, "error": 0.03, "cancellation": 0.02}
RATE_K = 4.0
LATENCY_MEDIANS = {"first_hypothesis_ms": 250.0, "final_latency_ms": 400.0}
LATENCY_SIGMA = 0.4  # per utterance, log scale
SPEED_SIGMA = 0.35  # per unit, log scale


@dataclass(frozen=True)
class Design:
    """One simulated experiment's shape."""

    days: int
    units_per_day: int  # new units a day, per arm
    utterances_per_unit: float  # mean; 1 + Poisson(mean - 1)
    labelled_share: float
    base_wer: float
    resamples: int

    def options(self) -> AnalysisOptions:
        return AnalysisOptions(resamples=self.resamples)


# -- the generative model ------------------------------------------------------------------


def _beta(rng: np.random.Generator, mean: float, k: float) -> float:
    return float(rng.beta(mean * k, (1 - mean) * k))


@dataclass(frozen=True)
class Unit:
    wer: float
    rates: Mapping[str, float]
    speed: float
    utterances: int


def draw_unit(rng: np.random.Generator, design: Design) -> Unit:
    rates = {name: _beta(rng, mean, RATE_K) for name, mean in RATE_MEANS.items()}
    total = sum(rates.values())
    if total > 0.9:  # keep some successes
        rates = {name: value * 0.9 / total for name, value in rates.items()}
    return Unit(
        wer=_beta(rng, design.base_wer, WER_K),
        rates=rates,
        speed=float(rng.lognormal(0.0, SPEED_SIGMA)),
        utterances=1 + int(rng.poisson(design.utterances_per_unit - 1)),
    )


def population(design: Design, units: int = 200_000, seed: int = 12345) -> dict[str, Any]:
    """Population values of the model: rates per outcome, WER, latency quantiles."""
    rng = np.random.default_rng(seed)
    drawn = [draw_unit(rng, design) for _ in range(units)]
    counts = np.array([u.utterances for u in drawn], dtype=float)
    rates = {}
    for name in RATE_MEANS:
        rates[name] = float(np.sum(counts * [u.rates[name] for u in drawn]) / counts.sum())
    rates["success"] = 1.0 - sum(rates.values())
    speeds = np.repeat([u.speed for u in drawn], [u.utterances for u in drawn])[:1_000_000]
    latency = {}
    for metric, median in LATENCY_MEDIANS.items():
        values = speeds * rng.lognormal(math.log(median), LATENCY_SIGMA, size=speeds.size)
        latency[metric] = {q: float(np.quantile(values, p)) for q, p in QUANTILES.items()}
    return {"wer": design.base_wer, "rates": rates, "latency": latency}


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Experiment:
    """Records and labels of one simulated experiment, with each record's day."""

    def __init__(self, seed: int, design: Design, gain: float) -> None:
        self.design = design
        self.rng = np.random.default_rng(seed)
        self.words = random.Random(seed)
        self.records: list[OutcomeRecord] = []
        self.days: list[int] = []
        self.labels: dict[str, Label] = {}
        for day in range(design.days):
            for arm, factor in (("base", 1.0), ("custom", 1.0 - gain)):
                for index in range(design.units_per_day):
                    unit = draw_unit(self.rng, design)
                    self._unit(f"{arm}-{day}-{index}", arm, unit, factor, day)

    def _unit(self, name: str, arm: str, unit: Unit, factor: float, day: int) -> None:
        for number in range(unit.utterances):
            offset = float(self.rng.uniform(0, 86_399))
            at = _stamp(START + timedelta(days=day, seconds=offset))
            draw = float(self.rng.random())
            session = f"{name}-{number}"
            common: dict[str, Any] = {
                "timestamp": at,
                "experiment": "e",
                "phase": "p1",
                "variant": arm,
                "backend": "sim",
                "role": Role.PRIMARY,
                "client": "app",
                "unit": name,
                "unit_source": UnitSource.QUERY,
                "session_id": session,
                "protocol": Protocol.USP,
            }
            cancel = unit.rates["cancellation"]
            error = cancel + unit.rates["error"]
            no_match = error + unit.rates["no_match"]
            if draw < error:
                status, code = (
                    ("TooManyRequests", "upstream_http_429")
                    if draw < cancel
                    else (
                        "Error",
                        "upstream_status_Error",
                    )
                )
                self._add(
                    OutcomeRecord(
                        kind=Kind.SESSION_FAILURE, status=status, error_code=code, **common
                    ),
                    day,
                )
                continue
            latency = {
                metric: unit.speed * float(self.rng.lognormal(math.log(median), LATENCY_SIGMA))
                for metric, median in LATENCY_MEDIANS.items()
            }
            if draw < no_match:
                record = OutcomeRecord(
                    kind=Kind.UTTERANCE, status="NoMatch", utterance_index=0, **latency, **common
                )
                self._add(record, day)
                continue
            reference = [self.words.choice(VOCABULARY) for _ in range(self.words.randint(4, 12))]
            wer = unit.wer * factor
            spoken = [w if self.rng.random() >= wer else "uh" for w in reference]
            record = OutcomeRecord(
                kind=Kind.UTTERANCE,
                status="Success",
                utterance_index=0,
                text=" ".join(spoken),
                **latency,
                **common,
            )
            self._add(record, day)
            if self.rng.random() < self.design.labelled_share:
                self.labels[record.record_id] = Label(
                    record_id=record.record_id,
                    text=" ".join(reference),
                    labeller="sim",
                    source="import",
                )

    def _add(self, record: OutcomeRecord, day: int) -> None:
        self.records.append(record)
        self.days.append(day)

    def report_after(self, day: int) -> dict[str, Any]:
        """The report a user running the analysis at the end of `day` (0-based) gets."""
        records = [r for r, d in zip(self.records, self.days, strict=True) if d <= day]
        info = ExperimentInfo(control="base", phase="p1", shares={"base": 0.5, "custom": 0.5})
        return build_report("e", records, self.labels, info=info, options=self.design.options())


# -- what one experiment shows ---------------------------------------------------------------


def _excludes(ci: Sequence[float | None] | None, value: float = 0.0) -> bool:
    if not ci or ci[0] is None or ci[1] is None:
        return False
    return not ci[0] <= value <= ci[1]


def _covers(ci: Sequence[float | None] | None, value: float) -> bool | None:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return ci[0] <= value <= ci[1]


def difference_intervals(comparison: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every difference interval the report has, by a stable name."""
    for name, rate in (comparison.get("rates") or {}).items():
        if rate is None:
            continue
        yield f"rate {name} (fixed)", rate.get("ci")
        yield f"rate {name} (always-valid)", (rate.get("always_valid") or {}).get("ci")
    for metric, latency in (comparison.get("latency") or {}).items():
        if isinstance(latency, Mapping):
            yield f"latency {metric} median difference", latency.get("ci")
    wer = comparison.get("wer")
    if wer is not None:
        yield "WER difference (fixed)", wer.get("ci")
        yield "WER difference (always-valid)", (wer.get("always_valid") or {}).get("ci")
    shadow = comparison.get("shadow")
    if shadow is not None:
        yield "shadow WER difference (fixed)", shadow.get("ci")
        yield "shadow WER difference (always-valid)", (shadow.get("always_valid") or {}).get("ci")


def variant_coverage(
    variant: Mapping[str, Any], truth: Mapping[str, Any]
) -> Iterator[tuple[str, bool | None]]:
    wer = variant.get("wer")
    if wer is not None:
        yield "WER", _covers(wer.get("ci"), truth["wer"])
    for name, rate in (variant.get("rates") or {}).items():
        if name in truth["rates"]:
            yield f"rate {name}", _covers(rate.get("ci"), truth["rates"][name])
    for metric, latency in (variant.get("latency") or {}).items():
        for q, found in ((latency or {}).get("quantiles") or {}).items():
            if metric in truth["latency"] and q in truth["latency"][metric]:
                yield f"latency {metric} {q}", _covers(found.get("ci"), truth["latency"][metric][q])


def run_one(job: tuple[int, Design, float, dict[str, Any]]) -> dict[str, Any]:
    """One experiment looked at daily: what excluded zero, what covered, what was decided."""
    seed, design, gain, truth = job
    experiment = Experiment(seed, design, gain)
    ever: dict[str, bool] = {}
    final: dict[str, bool] = {}
    actions: set[str] = set()
    first_ship: int | None = None
    coverage: dict[str, bool] = {}
    for day in range(design.days):
        report = experiment.report_after(day)
        recommendation = report["recommendation"]["action"]
        actions.add(recommendation)
        if recommendation == "ship_custom" and first_ship is None:
            first_ship = day
        if not report["phases"]:
            continue
        phase = report["phases"][0]
        last = day == design.days - 1
        for comparison in phase["comparisons"]:
            for name, ci in difference_intervals(comparison):
                excluded = _excludes(ci)
                ever[name] = ever.get(name, False) or excluded
                if last:
                    final[name] = excluded
            for guardrail in comparison.get("guardrails") or ():
                name = f"guardrail {guardrail['metric']} regressed"
                ever[name] = ever.get(name, False) or guardrail["status"] == "regressed"
            if last and comparison.get("wer") is not None:
                true_difference = -gain * truth["wer"]
                for kind, ci in (
                    ("fixed", comparison["wer"].get("ci")),
                    ("always-valid", comparison["wer"]["always_valid"]["ci"]),
                ):
                    covered = _covers(ci, true_difference)
                    if covered is not None:
                        coverage[f"WER difference ({kind})"] = covered
        if last:
            for variant in phase["variants"]:
                arm_truth = {
                    **truth,
                    "wer": truth["wer"] * (1.0 - gain if variant["name"] == "custom" else 1.0),
                }
                for name, covered in variant_coverage(variant, arm_truth):
                    if covered is not None:
                        coverage[f"{name} ({variant['name']})"] = covered
    return {
        "ever": ever,
        "final": final,
        "roll_back": "roll_back" in actions,
        "ship": "ship_custom" in actions,
        "first_ship_day": first_ship,
        "coverage": coverage,
    }


# -- Monte Carlo summaries ---------------------------------------------------------------------


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def share(values: Sequence[bool]) -> dict[str, Any]:
    hits, n = sum(values), len(values)
    low, high = wilson(hits, n)
    return {"rate": hits / n if n else None, "mc_ci": [low, high], "n": n}


def _line(name: str, found: Mapping[str, Any]) -> str:
    if found["rate"] is None:
        return f"  {name:<52} {'-':>7}"
    low, high = found["mc_ci"]
    return f"  {name:<52} {found['rate']:7.3f}  [{low:.3f}, {high:.3f}]  n={found['n']}"


def _gather(results: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    names = sorted({name for r in results for name in r[key]})
    return {name: share([r[key][name] for r in results if name in r[key]]) for name in names}


def simulate(
    design: Design, gain: float, runs: int, seed: int, workers: int, truth: dict[str, Any]
) -> list[dict[str, Any]]:
    jobs = [(seed + i, design, gain, truth) for i in range(runs)]
    if workers <= 1:
        return [run_one(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(run_one, jobs, chunksize=max(1, runs // (4 * workers))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="A/A experiments (200)")
    parser.add_argument("--power-runs", type=int, default=50, help="experiments per gain (50)")
    parser.add_argument(
        "--gains",
        type=float,
        nargs="*",
        default=[2.0, 5.0, 10.0, 20.0],
        help="relative WER gains, %%",
    )
    parser.add_argument("--days", type=int, default=14, help="days, one look each (14)")
    parser.add_argument(
        "--units-per-day", type=int, default=40, help="new units a day per arm (40)"
    )
    parser.add_argument("--utterances-per-unit", type=float, default=5.0, help="mean (5)")
    parser.add_argument("--labelled-share", type=float, default=0.5, help="(0.5)")
    parser.add_argument("--base-wer", type=float, default=0.15, help="(0.15)")
    parser.add_argument("--resamples", type=int, default=400, help="bootstrap resamples (400)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="processes (1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.days < 1 or args.units_per_day < 1 or args.utterances_per_unit < 1:
        parser.error("--runs, --days, --units-per-day and --utterances-per-unit must be >= 1")
    design = Design(
        days=args.days,
        units_per_day=args.units_per_day,
        utterances_per_unit=args.utterances_per_unit,
        labelled_share=args.labelled_share,
        base_wer=args.base_wer,
        resamples=args.resamples,
    )
    started = time.monotonic()
    truth = population(design)
    print(
        f"{args.runs} A/A experiments, {args.power_runs} per planted gain: {args.days} days, "
        f"{args.units_per_day} new units a day per arm, {args.utterances_per_unit:g} utterances "
        f"a unit (mean), {args.labelled_share:.0%} of results labelled, WER {args.base_wer:.0%}; "
        "a look a day. Rates with 95 % Monte Carlo intervals.",
        flush=True,
    )
    null = simulate(design, 0.0, args.runs, args.seed, args.workers, truth)
    figures: dict[str, Any] = {
        "design": vars(args) | {"json": None},
        "aa_one_look": _gather(null, "final"),
        "aa_daily_looks": _gather(null, "ever"),
        "aa_actions": {
            "roll_back": share([r["roll_back"] for r in null]),
            "ship_custom": share([r["ship"] for r in null]),
            "roll_back_or_ship": share([r["roll_back"] or r["ship"] for r in null]),
        },
        "coverage": _gather(null, "coverage"),
        "power": {},
    }
    print("\nA/A: share of experiments whose interval excludes 0, at the last look only")
    for name, found in figures["aa_one_look"].items():
        print(_line(name, found))
    print("\nA/A: ... at any daily look (and guardrails regressing at any look)")
    for name, found in figures["aa_daily_looks"].items():
        print(_line(name, found))
    print("\nA/A: recommendation at any daily look")
    for name, found in figures["aa_actions"].items():
        print(_line(name, found))
    print("\nCoverage of the per-variant intervals (A/A, last look; nominal 0.95)")
    for name, found in figures["coverage"].items():
        print(_line(name, found))
    for index, gain in enumerate(args.gains):
        results = simulate(
            design,
            gain / 100,
            args.power_runs,
            args.seed + 100_000 * (index + 1),
            args.workers,
            truth,
        )
        days = [r["first_ship_day"] + 1 for r in results if r["first_ship_day"] is not None]
        figures["power"][f"{gain:g}%"] = {
            "ship_custom": share([r["ship"] for r in results]),
            "wer_always_valid_excludes_0": share(
                [r["final"].get("WER difference (always-valid)", False) for r in results]
            ),
            "roll_back": share([r["roll_back"] for r in results]),
            "median_days_to_ship": float(np.median(days)) if days else None,
            "coverage": {
                k: v
                for k, v in _gather(results, "coverage").items()
                if k.startswith("WER difference")
            },
        }
    print("\nPower: a planted relative WER gain, shipped at some daily look")
    for gain, found in figures["power"].items():
        print(_line(f"gain {gain}: ship custom", found["ship_custom"]))
        print(
            _line(
                f"gain {gain}: always-valid WER interval excludes 0 (last)",
                found["wer_always_valid_excludes_0"],
            )
        )
        print(_line(f"gain {gain}: roll back", found["roll_back"]))
        for name, covered in found["coverage"].items():
            print(_line(f"gain {gain}: coverage of {name}", covered))
        print(f"  gain {gain}: median days to ship: {found['median_days_to_ship']}")
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n{figures['seconds']} s")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
