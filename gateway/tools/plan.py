"""`speech-gateway plan`: how many labelled utterances, and days, a WER gain needs.

Either from an experiment's data so far (`--experiment`: the configured outcome store, read
as `speech-gateway analyze` reads it) or from stated assumptions (`--base-wer` and the
traffic). The numbers are those of `gateway.analysis.planner`; docs/analysis.md ("Planning")
describes the options and the output.
"""

from __future__ import annotations

import argparse
import json
import sys

from gateway.analysis.evidence import wer_evidence
from gateway.analysis.model import AnalysisOptions, Json
from gateway.analysis.planner import assumed, from_phase, render_plan
from gateway.analysis.report import analyze
from gateway.config.settings import Settings
from gateway.errors import ConfigError
from gateway.outcomes.record import InvalidRecordError
from gateway.tools.analyze import experiment_info


def _check(args: argparse.Namespace) -> None:
    if not 0.5 <= args.confidence < 1:
        raise ConfigError("--confidence", f"must be in [0.5, 1), got {args.confidence}")
    if not 0 < args.power < 1:
        raise ConfigError("--power", f"must be in (0, 1), got {args.power}")
    for name in ("gain_points", "gain_relative"):
        for value in getattr(args, name) or ():
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')}", f"must be > 0, got {value}")
    if args.min_gain_points is not None and args.min_gain_points < 0:
        raise ConfigError("--min-gain-points", f"must not be negative, got {args.min_gain_points}")


def _gains(args: argparse.Namespace, control_wer: float) -> list[float]:
    if args.gain_points:
        return [g / 100 for g in args.gain_points]
    relative = args.gain_relative or [5.0, 10.0, 20.0]
    return [control_wer * r / 100 for r in relative]


def _assumed(args: argparse.Namespace) -> Json:
    if args.base_wer is None or args.units_per_day is None:
        raise ConfigError(
            "plan", "give --experiment, or the assumptions --base-wer and --units-per-day"
        )
    base = args.base_wer / 100
    checks = (
        ("--base-wer", 0 < base < 1, "a percentage in (0, 100)"),
        ("--units-per-day", args.units_per_day > 0, "> 0"),
        ("--labelled-share", 0 < args.labelled_share <= 1, "in (0, 1]"),
        ("--utterances-per-unit", args.utterances_per_unit >= 1, ">= 1"),
        ("--words-per-utterance", args.words_per_utterance > 0, "> 0"),
        ("--icc", 0 <= args.icc <= 1, "in [0, 1]"),
        ("--design-effect", args.design_effect is None or args.design_effect >= 1, ">= 1"),
        ("--challengers", args.challengers >= 1, ">= 1"),
    )
    for option, ok, what in checks:
        if not ok:
            raise ConfigError(option, f"must be {what}")
    gains = _gains(args, base)
    too_big = [g for g in gains if g >= base]
    if too_big:
        raise ConfigError("--gain-points", f"a gain of {too_big[0] * 100:g} points exceeds the WER")
    return assumed(
        base_wer=base,
        gains=gains,
        alpha=1 - args.confidence,
        power=args.power,
        min_gain=(args.min_gain_points or 0.0) / 100,
        challengers=args.challengers,
        units_per_day=args.units_per_day,
        labelled_share=args.labelled_share,
        utterances_per_unit=args.utterances_per_unit,
        words_per_utterance=args.words_per_utterance,
        icc=args.icc,
        design=args.design_effect,
    )


async def _from_data(args: argparse.Namespace, settings: Settings) -> list[Json]:
    from gateway.stores.factory import open_reader

    info = experiment_info(settings, args.experiment, args.control)
    async with open_reader(settings.outcomes, settings.redis.connection()) as reader:
        try:
            report = await analyze(reader, args.experiment, info=info, options=AnalysisOptions())
        except FileNotFoundError as exc:
            raise ConfigError("outcomes.path", f"no outcome file at {exc.filename}") from None
        except InvalidRecordError as exc:
            raise ConfigError("outcomes", f"an invalid record in the store: {exc}") from None
    if not report["phases"]:
        raise ConfigError("--experiment", f"{args.experiment!r} has no outcomes to plan from")
    phase = report["phases"][0]
    min_gain = (
        args.min_gain_points / 100
        if args.min_gain_points is not None
        else (info.min_wer_gain if info is not None else 0.0)
    )
    variants = {v["name"]: v for v in phase["variants"]}
    plans: list[Json] = []
    for comparison in phase["comparisons"]:
        name = comparison["variant"]
        if args.variant is not None and name != args.variant:
            continue
        evidence = wer_evidence(comparison, variants, min_gain)
        control_wer = (variants[comparison["control"]].get("wer") or {}).get("wer") or 0.0
        found = from_phase(
            phase,
            name,
            evidence,
            alpha=1 - args.confidence,
            power=args.power,
            min_gain=min_gain,
            gains=_gains(args, control_wer),
        )
        if found is None:
            raise ConfigError(
                "--experiment",
                f"{name}: too few scored labelled utterances to estimate the variance yet "
                "(20 units an arm); plan from assumptions instead",
            )
        plans.append(found)
    if not plans:
        raise ConfigError("--variant", f"no challenger {args.variant!r} with outcomes")
    return plans


async def run_plan(args: argparse.Namespace, settings: Settings) -> list[Json]:
    """The plans, printed (and written as JSON on request)."""
    _check(args)
    plans = await _from_data(args, settings) if args.experiment else [_assumed(args)]
    to_stdout = args.json is not None and str(args.json) == "-"
    if to_stdout:
        sys.stdout.write(json.dumps({"plans": plans}, indent=2, allow_nan=False) + "\n")
        return plans
    print("\n\n".join(render_plan(found) for found in plans))
    if args.json is not None:
        args.json.write_text(json.dumps({"plans": plans}, indent=2, allow_nan=False) + "\n")
        print(f"JSON plan: {args.json}")
    return plans
