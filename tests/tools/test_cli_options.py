"""The analysis and replay commands' options: their defaults, checks, and a light import."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from gateway.analysis.model import AnalysisOptions
from gateway.tools.cli_options import (
    add_analyze_arguments,
    add_plan_arguments,
    add_replay_arguments,
)


def parser_of(add: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test")
    add(parser)  # type: ignore[operator]
    return parser


def test_the_analyze_defaults_are_the_analysis_defaults() -> None:
    args = parser_of(add_analyze_arguments).parse_args(["--experiment", "e"])
    defaults = AnalysisOptions()
    assert args.min_labelled == defaults.min_labelled
    assert args.drift_window == defaults.drift_window_s
    assert args.confidence == defaults.confidence


def test_values_are_checked_when_given(capsys: pytest.CaptureFixture[str]) -> None:
    parser = parser_of(add_analyze_arguments)
    args = parser.parse_args(
        ["--experiment", "e", "--since", "2026-11-01T00:00Z", "--drift-window", "12h"]
    )
    assert (args.since.isoformat(), args.drift_window) == ("2026-11-01T00:00:00+00:00", 43200)
    for bad in (["--since", "yesterday"], ["--drift-window", "1 week"], ["--alignments", "a.x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["--experiment", "e", *bad])
        assert f"argument {bad[0]}" in capsys.readouterr().err


def test_plan_and_replay_options_parse() -> None:
    plan = parser_of(add_plan_arguments).parse_args(["--base-wer", "12", "--units-per-day", "50"])
    assert (plan.base_wer, plan.power, plan.icc) == (12.0, 0.8, 0.0)
    replay = parser_of(add_replay_arguments).parse_args(["data/demo/banking"])
    assert (replay.pace, replay.concurrency, replay.unit_param) == ("fast", 4, "gw-unit")


def test_the_module_loads_neither_scipy_nor_the_speech_sdk() -> None:
    """What makes `speech-gateway --help` fast: the options import no heavy package."""
    code = (
        "import sys, gateway.tools.cli_options\n"
        "heavy = [m for m in ('scipy', 'azure.cognitiveservices.speech', 'aiohttp')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
